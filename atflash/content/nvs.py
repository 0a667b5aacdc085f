"""ESP-IDF NVS partitions (page format version 2, unencrypted): the item model and the reader.

The writer is :mod:`atflash.content.nvs_build`; :func:`build_nvs` here is its
public entry point, so callers import everything from this module.

Layout (little-endian), facts from ESP-IDF's ``nvs_flash`` and Espressif's
``esp-idf-nvs-partition-gen``::

    page (4096)  header (32) | entry state bitmap (32) | 126 entries of 32 bytes
    header       state u32 | sequence number u32 | version u8 (0xFE = v2) | 19 x 0xFF
                 | CRC32 of bytes 4..28
    bitmap       2 bits per entry, entry 0 in the low bits: 11 empty, 10 written, 00 erased
    entry        namespace index u8 | type u8 | span u8 | chunk index u8 | CRC32 u32
                 | key[16] (NUL-terminated) | data[8]

The CRC of an entry covers its bytes 0..4 and 8..32. Every CRC is the
standard CRC-32 started from 0xFFFFFFFF (``zlib.crc32(data, 0xFFFFFFFF)``).
Namespace names live in namespace 0 as ``u8`` items mapping name -> index.
A primitive's value sits at the start of ``data``. Variable-length items
(string, blob data, legacy blob) put ``size u16 | 0xFFFF | CRC32 of the
value`` in ``data`` and the value in the ``span - 1`` entries that follow.
Version 2 stores a blob as ``BLOB_DATA`` chunks (chunk index = start + n, at
most one chunk per page) and a ``BLOB_IDX`` entry ``size u32 | chunk count
u8 | chunk start u8``; ESP-IDF alternates the chunk start between 0 and 128
when it rewrites a blob, so both occur.

What the reader does differently from ESP-IDF, and why: ESP-IDF silently
erases a page or entry whose CRC is wrong, or whose span is not fully
written. atflash reads a partition in order to write it back with some
namespaces changed, and a partition rebuilt from a partial read would make
the loss permanent (``factory_param`` gone means a module that no longer
starts), so the reader raises :class:`~atflash.errors.FormatError` instead.
Pages ESP-IDF itself marked corrupt are skipped: it never reads them either.
Where ESP-IDF's own bookkeeping leaves two copies of an item (an interrupted
update, a page being freed), the newer copy (higher page sequence number,
then later entry) wins; blob data chunks no index refers to are ignored.

A partition that was cut short is refused too, by what NVS itself records:
ESP-IDF always keeps one page ACTIVE (the one it writes into), and
generators leave their last page ACTIVE or initialise every page, so used
pages that end on a FULL page holding entries, with no ACTIVE page and
more than the reserved page erased, are the head of a longer partition
whose tail is missing (a write interrupted at a page boundary, a truncated
file), not a partition with an erased tail (see ``_check_complete``). :func:`salvage_nvs` reads a damaged partition anyway, keeping
what still parses and naming what it dropped, for an explicit ``--force``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from atflash.content import nvs_build
from atflash.content.nvs_format import (
    _KNOWN_CODES,
    _PRIMITIVE_BY_CODE,
    _VARLEN_CODES,
    BLOB_INDEX,
    CHUNK_ANY,
    ENTRIES_PER_PAGE,
    ENTRY,
    ENTRY_SIZE,
    FIRST_ENTRY,
    MAX_CHUNKS,
    MAX_NAME,
    MAX_NAMESPACES,
    MAX_STRING,
    MIN_PAGES,
    NS_INDEX,
    NVS_TYPES,
    PAGE_HEADER,
    PAGE_SIZE,
    PRIMITIVES,
    RESERVED16,
    RESERVED_PAGES,
    VARLEN,
    VERSION1,
    VERSION2,
    EntryState,
    ItemCode,
    NvsItem,
    NvsType,
    PageState,
    crc32,
    encode_text,
    int_range,
)
from atflash.errors import FormatError

__all__ = [
    "BLOB_INDEX",
    "CHUNK_ANY",
    "ENTRIES_PER_PAGE",
    "ENTRY",
    "ENTRY_SIZE",
    "FIRST_ENTRY",
    "MAX_CHUNKS",
    "MAX_NAME",
    "MAX_NAMESPACES",
    "MAX_STRING",
    "MIN_PAGES",
    "NS_INDEX",
    "NVS_TYPES",
    "PAGE_HEADER",
    "PAGE_SIZE",
    "PRIMITIVES",
    "RESERVED16",
    "RESERVED_PAGES",
    "VARLEN",
    "VERSION1",
    "VERSION2",
    "EntryState",
    "ItemCode",
    "NvsItem",
    "NvsType",
    "PageState",
    "build_nvs",
    "crc32",
    "encode_text",
    "int_range",
    "looks_like_nvs",
    "parse_nvs",
    "salvage_nvs",
]


def build_nvs(items: Sequence[NvsItem], size: int, *, name: str = "mfg_nvs") -> bytes:
    """A complete NVS partition image of ``size`` bytes holding ``items`` in this order.

    Byte-identical to what ``esp-idf-nvs-partition-gen`` (version 2) makes
    from the equivalent CSV (a namespace row wherever the namespace changes).
    ``name`` only labels errors. Raises :class:`~atflash.errors.InputError`
    for a bad item or size, :class:`~atflash.errors.LimitError` for a value
    NVS cannot hold and :class:`~atflash.content.nvs_build.NvsTooBigError`
    (an ``ImageTooBigError``) when the items need more pages than ``size``.
    """
    return nvs_build.build(items, size, name=name)


# -- reading -----------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """A written, CRC-checked entry: an item, a namespace name, or a blob chunk or index."""

    offset: int  # in the image, for error messages
    where: str  # "NVS page <n> entry <i>"
    ns: int
    code: ItemCode
    span: int
    chunk: int
    key: str
    data: bytes  # the 8-byte data field
    value: bytes  # the span's bytes, for variable-length types


def looks_like_nvs(image: bytes) -> bool:
    """Whether ``image`` is an NVS partition: whole pages, the first one with a valid header."""
    if len(image) < PAGE_SIZE or len(image) % PAGE_SIZE:
        return False
    state, _seq, version, crc = PAGE_HEADER.unpack_from(image, 0)
    if state == 0xFFFFFFFF:
        return False
    return crc == crc32(image[4:28]) and version in (0xFE, 0xFF)


def parse_nvs(image: bytes, *, source: str = "mfg_nvs") -> list[NvsItem]:
    """The items of an NVS partition image, in stored order.

    Namespace-name entries are not items. An erased image gives no items.
    Raises :class:`~atflash.errors.FormatError` naming ``source``, the page
    and entry and the offset, for anything malformed or cut short (see the
    module docstring for what ESP-IDF would skip instead).
    """
    return _parse(image, source, None)


@dataclass(frozen=True)
class Salvaged:
    """What :func:`salvage_nvs` could still read, and one line per thing it dropped."""

    items: list[NvsItem]
    dropped: list[str]


def salvage_nvs(image: bytes, *, source: str = "mfg_nvs") -> Salvaged:
    """The items of a damaged NVS partition that still read, and what was dropped.

    A page whose header is bad is dropped whole; an entry that is bad is
    dropped alone (the scan goes on at the next entry); an item whose value
    or namespace is lost is dropped. A cut-short partition keeps what its
    pages hold. Never raises for the content (``dropped`` says what was
    wrong); the length must still be whole pages.
    """
    dropped: list[str] = []
    return Salvaged(_parse(image, source, dropped), dropped)


def _parse(image: bytes, source: str, dropped: list[str] | None) -> list[NvsItem]:
    """Strict when ``dropped`` is None; otherwise each problem is noted there and skipped."""
    if not image or len(image) % PAGE_SIZE:
        raise FormatError(
            "NVS partition",
            f"{len(image)} bytes is not a whole number of {PAGE_SIZE}-byte pages",
            source=source,
        )
    pages: list[tuple[int, int, list[_Entry]]] = []
    erased = 0
    for number in range(len(image) // PAGE_SIZE):
        try:
            page = _read_page(image, number, source, dropped)
        except FormatError as exc:
            _note(exc, dropped, "the page dropped")
            continue
        if page is None:
            erased += 1
        else:
            pages.append(page)
    # Sorted by sequence number: ESP-IDF starts each new page at the next
    # number, so this is the order things were written in, whatever the
    # physical order. The sort is stable, so equal numbers keep flash order.
    pages.sort(key=lambda page: page[0])
    try:
        _check_complete(pages, erased, source)
    except FormatError as exc:
        _note(exc, dropped, "what the missing pages held is lost")
    return _assemble(
        [entry for _seq, _state, entries in pages for entry in entries], source, dropped
    )


def _note(exc: FormatError, dropped: list[str] | None, consequence: str) -> None:
    """Raise ``exc`` when strict; otherwise note it, and what skipping it costs."""
    if dropped is None:
        raise exc
    dropped.append(f"{exc.what}: {exc.problem} ({consequence})")


def _check_complete(pages: list[tuple[int, int, list[_Entry]]], erased: int, source: str) -> None:
    """Refuse used pages that end on a FULL page with no ACTIVE page: the image was cut short.

    ESP-IDF always has one ACTIVE page to write into; a page only becomes
    FULL once a later page exists. Generators differ: the PyPI one leaves
    its last used page ACTIVE and the rest erased; the one bundled with
    esp-at's ``at.py`` (and older ESP-IDF ones) initialise every page but
    the reserved last one, each FULL, so no page is ACTIVE but only one is
    erased, and the last pages written hold no entry. So: a last page
    (in write order) that is FULL and holds entries, no ACTIVE page, and
    more than the one reserved page erased means the pages after it are
    missing, not erased.
    """
    states = [state for _seq, state, _entries in pages]
    if PageState.CORRUPT in states:
        return  # ESP-IDF managed this partition and abandoned a page: its bookkeeping, not a cut
    if not states or PageState.ACTIVE in states or states[-1] != PageState.FULL:
        return
    if erased <= RESERVED_PAGES or not pages[-1][2]:
        return
    raise FormatError(
        "NVS",
        f"the last page written ({len(states)} used, sequence {pages[-1][0]}) is FULL and no "
        "page is ACTIVE, so the pages after it are missing: the partition was cut short",
        source=source,
        hint="an interrupted write or a truncated file; restore it from a backup",
    )


def _read_page(
    image: bytes, number: int, source: str, dropped: list[str] | None = None
) -> tuple[int, int, list[_Entry]] | None:
    """``(sequence number, state, written entries)`` of one page, or None for a page to skip."""
    base = number * PAGE_SIZE
    state, seq, version, crc = PAGE_HEADER.unpack_from(image, base)
    what = f"NVS page {number}"
    if state == PageState.UNINITIALIZED:
        if image.count(0xFF, base, base + PAGE_SIZE) != PAGE_SIZE:
            raise FormatError(what, "page marked unused holds data", offset=base, source=source)
        return None
    if state == PageState.CORRUPT:
        return seq, state, []  # ESP-IDF abandoned this page and never reads it
    if state not in (PageState.ACTIVE, PageState.FULL, PageState.FREEING):
        raise FormatError(what, f"unknown page state {state:#010x}", offset=base, source=source)
    if crc != crc32(image[base + 4 : base + 28]):
        raise FormatError(what, "page header CRC mismatch", offset=base, source=source)
    if version not in (VERSION2, VERSION1):
        raise FormatError(
            what,
            f"page format version {version:#04x} is newer than this reader knows (0xfe)",
            offset=base,
            source=source,
        )
    bitmap = int.from_bytes(image[base + PAGE_HEADER.size : base + FIRST_ENTRY], "little")
    states = [EntryState((bitmap >> (2 * i)) & 0b11) for i in range(ENTRIES_PER_PAGE)]
    entries: list[_Entry] = []
    index = 0
    # Salvaging: consecutive bad entries (a value's span read as entries) are one note.
    bad: tuple[FormatError, int] | None = None
    while index < ENTRIES_PER_PAGE:
        entry_state = states[index]
        if entry_state == EntryState.EMPTY and state == PageState.ACTIVE:
            break  # ESP-IDF writes in order: past the first empty entry is unwritten
        if entry_state in (EntryState.EMPTY, EntryState.ERASED):
            index += 1
            continue
        where = f"{what} entry {index}"
        offset = base + FIRST_ENTRY + index * ENTRY_SIZE
        try:
            if entry_state == EntryState.ILLEGAL:
                raise FormatError(where, "illegal entry state 0b01", offset=offset, source=source)
            entry = _read_entry(image, offset, where, states, index, source)
        except FormatError as exc:
            if dropped is None:
                raise
            bad = (bad[0], bad[1] + 1) if bad else (exc, 1)
            index += 1
            continue
        _note_run(bad, dropped)
        bad = None
        entries.append(entry)
        index += entry.span
    _note_run(bad, dropped)
    return seq, state, entries


def _note_run(bad: tuple[FormatError, int] | None, dropped: list[str] | None) -> None:
    """A run of dropped entries as one note: the first entry's problem, and how many followed."""
    if bad is None or dropped is None:
        return
    exc, count = bad
    after = f" and the {count - 1} after it" if count > 1 else ""
    dropped.append(f"{exc.what}: {exc.problem} (the entry{after} dropped)")


def _read_entry(
    image: bytes, offset: int, where: str, states: list[EntryState], index: int, source: str
) -> _Entry:
    ns, code, span, chunk, crc, key_field, data = ENTRY.unpack_from(image, offset)
    if crc != crc32(image[offset + 8 : offset + ENTRY_SIZE], crc32(image[offset : offset + 4])):
        raise FormatError(where, "entry CRC mismatch", offset=offset, source=source)
    if code not in _KNOWN_CODES:
        raise FormatError(where, f"unknown item type {code:#04x}", offset=offset, source=source)
    key = _decode_name(key_field, where, offset, source)
    value = b""
    if code in _VARLEN_CODES:
        size, _reserved, value_crc = VARLEN.unpack(data)
        expected_span = 1 + -(-size // ENTRY_SIZE)
        if span != expected_span or index + span > ENTRIES_PER_PAGE:
            raise FormatError(
                where,
                f"span {span} does not fit a {size}-byte value in this page",
                offset=offset,
                source=source,
            )
        if any(states[i] != EntryState.WRITTEN for i in range(index + 1, index + span)):
            raise FormatError(
                where, "value entries not all marked written", offset=offset, source=source
            )
        value = bytes(image[offset + ENTRY_SIZE : offset + ENTRY_SIZE + size])
        if crc32(value) != value_crc:
            raise FormatError(where, "value CRC mismatch", offset=offset, source=source)
    elif span != 1:
        raise FormatError(where, f"span {span} for a one-entry item", offset=offset, source=source)
    return _Entry(offset, where, ns, ItemCode(code), span, chunk, key, data, value)


def _decode_name(field: bytes, where: str, offset: int, source: str) -> str:
    end = field.find(b"\x00")
    if end < 0:
        raise FormatError(where, "key has no NUL within 16 bytes", offset=offset, source=source)
    if end == 0:
        raise FormatError(where, "empty key", offset=offset, source=source)
    try:
        return field[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(where, "key is not UTF-8 text", offset=offset, source=source) from None


def _assemble(entries: list[_Entry], source: str, dropped: list[str] | None) -> list[NvsItem]:
    """Items from the entries of all pages, in write order; newer copies win."""
    names: dict[int, str] = {}
    by_name: dict[str, int] = {}
    latest: dict[tuple[int, str], _Entry] = {}
    chunks: dict[tuple[int, str, int], _Entry] = {}
    for entry in entries:
        if entry.ns == NS_INDEX:
            try:
                _define_namespace(entry, names, by_name, source)
            except FormatError as exc:
                _note(exc, dropped, "the namespace entry dropped")
        elif entry.code == ItemCode.BLOB_DATA:
            chunks[(entry.ns, entry.key, entry.chunk)] = entry
        else:
            # ESP-IDF matches duplicates by namespace and key, whatever their
            # item type: a newer blob index replaces an older legacy blob, too.
            latest.pop((entry.ns, entry.key), None)
            latest[(entry.ns, entry.key)] = entry
    items = []
    for entry in latest.values():
        try:
            items.append(_item(entry, names, chunks, source))
        except FormatError as exc:
            _note(exc, dropped, f"item {entry.key!r} dropped")
    return items


def _item(
    entry: _Entry, names: dict[int, str], chunks: dict[tuple[int, str, int], _Entry], source: str
) -> NvsItem:
    namespace = names.get(entry.ns)
    if namespace is None:
        raise FormatError(
            entry.where,
            f"item {entry.key!r} is in namespace index {entry.ns}, which no namespace entry names",
            offset=entry.offset,
            source=source,
        )
    nvs_type, value = _value(entry, chunks, source)
    return NvsItem(namespace, entry.key, nvs_type, value)


def _define_namespace(
    entry: _Entry, names: dict[int, str], by_name: dict[str, int], source: str
) -> None:
    if entry.code != ItemCode.U8:
        raise FormatError(
            entry.where,
            f"namespace {entry.key!r} entry has type {entry.code:#04x}, not u8",
            offset=entry.offset,
            source=source,
        )
    index = entry.data[0]
    if not 0 < index <= MAX_NAMESPACES:
        raise FormatError(
            entry.where,
            f"namespace {entry.key!r} has index {index} (1..{MAX_NAMESPACES} allowed)",
            offset=entry.offset,
            source=source,
        )
    if names.get(index, entry.key) != entry.key:
        raise FormatError(
            entry.where,
            f"namespaces {names[index]!r} and {entry.key!r} share index {index}",
            offset=entry.offset,
            source=source,
        )
    old = by_name.get(entry.key)
    if old is not None:
        del names[old]  # a newer entry for the same name moves it
    names[index] = entry.key
    by_name[entry.key] = index


def _value(
    entry: _Entry, chunks: dict[tuple[int, str, int], _Entry], source: str
) -> tuple[NvsType, int | str | bytes]:
    if entry.code in _PRIMITIVE_BY_CODE:
        nvs_type, fmt = _PRIMITIVE_BY_CODE[entry.code]
        return nvs_type, fmt.unpack_from(entry.data)[0]
    if entry.code == ItemCode.SZ:
        if not entry.value.endswith(b"\x00"):
            raise FormatError(
                entry.where,
                f"string {entry.key!r} does not end with a NUL",
                offset=entry.offset,
                source=source,
            )
        return "string", entry.value[:-1].decode("utf-8", "surrogateescape")
    if entry.code == ItemCode.BLOB:
        return "binary", entry.value
    return "binary", _blob(entry, chunks, source)


def _blob(entry: _Entry, chunks: dict[tuple[int, str, int], _Entry], source: str) -> bytes:
    size, count, start, _reserved = BLOB_INDEX.unpack(entry.data)
    parts = []
    for number in range(start, start + count):
        chunk = chunks.get((entry.ns, entry.key, number))
        if chunk is None:
            raise FormatError(
                entry.where,
                f"blob {entry.key!r} lacks data chunk {number} of {start}..{start + count - 1}",
                offset=entry.offset,
                source=source,
            )
        parts.append(chunk.value)
    value = b"".join(parts)
    if len(value) != size:
        raise FormatError(
            entry.where,
            f"blob {entry.key!r} index says {size} bytes, its chunks hold {len(value)}",
            offset=entry.offset,
            source=source,
        )
    return value
