"""The NVS writer: items to a partition image laid out like Espressif's generator.

Callers use :func:`atflash.content.nvs.build_nvs`; the format is described in
:mod:`atflash.content.nvs`. Placement follows ``esp-idf-nvs-partition-gen``
0.3 (version 2) so that images are byte-identical to it:

- entries fill pages in order; a namespace entry (in namespace 0) comes
  before the first item of each namespace, indices counting from 1;
- an integer goes on the current page if an entry is free, else on a new one;
- a string goes on a new page unless its entries fit *and leave one entry
  free* (the generator's test is ``>=``; ESP-IDF's own is ``>``). A string
  that needs a whole page (3969 to 4000 bytes with its NUL) goes on a fresh
  page, where ESP-IDF takes it and the generator gives up;
- a blob is cut into ``BLOB_DATA`` chunks, each filling what is left of the
  page after its header (an empty chunk when only the header fits, as the
  generator does), a new page whenever a chunk fills one, and then the
  ``BLOB_IDX`` entry (chunk start 0);
- every used page is FULL but the last, which is ACTIVE; unused pages stay
  erased, and the partition's last page always stays free.
"""

from __future__ import annotations

from collections.abc import Sequence

from atflash.content.nvs_format import (
    BLOB_INDEX,
    CHUNK_ANY,
    ENTRIES_PER_PAGE,
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
    VERSION2,
    ItemCode,
    NvsItem,
    PageState,
    crc32,
    encode_text,
    int_range,
)
from atflash.errors import ImageTooBigError, InputError, LimitError, Overflow

_ERASED_PAGE = b"\xff" * PAGE_SIZE
_FILL8 = b"\xff" * 8
_BITMAP_SIZE = FIRST_ENTRY - PAGE_HEADER.size


class NvsTooBigError(ImageTooBigError):
    """The items need more pages than the partition has."""

    def __init__(self, partition: str, pages_needed: int, partition_size: int) -> None:
        self.pages_needed = pages_needed
        self.pages_available = partition_size // PAGE_SIZE - RESERVED_PAGES
        super().__init__(
            Overflow(partition, (pages_needed + RESERVED_PAGES) * PAGE_SIZE, partition_size)
        )
        self.hint = (
            f"the items fill {pages_needed} pages of {PAGE_SIZE} bytes and ESP-IDF keeps one "
            f"more free, the partition has {self.pages_available} + 1: give fewer or smaller items"
        )


def build(items: Sequence[NvsItem], size: int, *, name: str = "mfg_nvs") -> bytes:
    """See :func:`atflash.content.nvs.build_nvs`."""
    _check_size(size, name)
    checked = _check_items(items, name)
    writer = _Writer()
    namespaces: dict[str, int] = {}
    current = None
    for item, payload in checked:
        if item.namespace != current:
            current = item.namespace
            if current not in namespaces:
                namespaces[current] = len(namespaces) + 1
                writer.primitive(
                    NS_INDEX, _name_field(current), ItemCode.U8, bytes([namespaces[current]])
                )
        ns = namespaces[current]
        key = _name_field(item.key)
        if item.type == "string":
            writer.string(ns, key, payload)
        elif item.type == "binary":
            writer.blob(ns, key, payload, name=f"{name}: {item.namespace}/{item.key}")
        else:
            writer.primitive(ns, key, PRIMITIVES[item.type][0], payload)
    return writer.image(size, name)


def _check_size(size: int, name: str) -> None:
    if not isinstance(size, int) or size % PAGE_SIZE or size < MIN_PAGES * PAGE_SIZE:
        raise InputError(
            f"{name}: an NVS partition of {size!r} bytes: it must be a multiple of {PAGE_SIZE} "
            f"and at least {MIN_PAGES * PAGE_SIZE:#x} bytes"
        )


def _check_items(items: Sequence[NvsItem], name: str) -> list[tuple[NvsItem, bytes]]:
    """Each item with its stored bytes (value without header), or InputError naming it."""
    seen: set[tuple[str, str]] = set()
    namespaces: set[str] = set()
    checked = []
    for item in items:
        if not isinstance(item, NvsItem):
            raise InputError(f"{name}: {item!r} is not an NvsItem")
        where = f"{name}: {item.namespace!r}/{item.key!r}"
        _check_name(item.namespace, "namespace", where)
        _check_name(item.key, "key", where)
        if (item.namespace, item.key) in seen:
            raise InputError(f"{where}: the key appears twice", hint="give each key once")
        seen.add((item.namespace, item.key))
        namespaces.add(item.namespace)
        if len(namespaces) > MAX_NAMESPACES:
            raise LimitError(
                f"{where}: more than {MAX_NAMESPACES} namespaces, NVS holds at most that"
            )
        checked.append((item, _payload(item, where)))
    return checked


def _check_name(text: object, what: str, where: str) -> None:
    if not isinstance(text, str) or not text:
        raise InputError(f"{where}: the {what} must be a non-empty string")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{where}: the {what} is not valid text") from None
    if b"\x00" in raw:
        raise InputError(f"{where}: the {what} contains a NUL")
    if len(raw) > MAX_NAME:
        raise InputError(
            f"{where}: the {what} {text!r} is {len(raw)} bytes long, NVS allows at most {MAX_NAME}"
        )


def _payload(item: NvsItem, where: str) -> bytes:
    """What goes into the entries: a packed integer, a string with its NUL, or the blob."""
    value = item.value
    if item.type in PRIMITIVES:
        if not isinstance(value, int) or isinstance(value, bool):
            raise InputError(
                f"{where}: a {item.type} value must be an integer, not {type(value).__name__}"
            )
        low, high = int_range(item.type)
        if not low <= value <= high:
            raise InputError(f"{where}: {value} is out of range for {item.type} ({low}..{high})")
        return PRIMITIVES[item.type][1].pack(value)
    if item.type == "string":
        if not isinstance(value, str):
            raise InputError(f"{where}: a string value must be str, not {type(value).__name__}")
        try:
            raw = encode_text(value) + b"\x00"
        except UnicodeEncodeError:
            raise InputError(f"{where}: the string is not valid text") from None
        if len(raw) > MAX_STRING:
            raise LimitError(
                f"{where}: string of {len(raw)} bytes with its NUL, NVS holds at most "
                f"{MAX_STRING}, {len(raw) - MAX_STRING} too many"
            )
        return raw
    if item.type == "binary":
        if not isinstance(value, bytes | bytearray):
            raise InputError(f"{where}: a binary value must be bytes, not {type(value).__name__}")
        return bytes(value)
    raise InputError(f"{where}: unknown type {item.type!r} (one of {', '.join(NVS_TYPES)})")


def _name_field(text: str) -> bytes:
    return text.encode("utf-8").ljust(16, b"\x00")


def _entries_for(size: int) -> int:
    return -(-size // ENTRY_SIZE)


class _Writer:
    """Pages filled in order; each page a bytearray and a count of its used entries."""

    def __init__(self) -> None:
        self.pages: list[bytearray] = []
        self.used: list[int] = []
        self._new_page()

    def _new_page(self) -> None:
        self.pages.append(bytearray(_ERASED_PAGE))
        self.used.append(0)

    @property
    def _free(self) -> int:
        return ENTRIES_PER_PAGE - self.used[-1]

    def _put(
        self,
        ns: int,
        code: ItemCode,
        span: int,
        chunk: int,
        key: bytes,
        data: bytes,
        value: bytes = b"",
    ) -> None:
        head = bytes((ns, code, span, chunk))
        body = key + data
        crc = crc32(body, crc32(head))
        at = FIRST_ENTRY + self.used[-1] * ENTRY_SIZE
        page = self.pages[-1]
        page[at : at + ENTRY_SIZE] = head + crc.to_bytes(4, "little") + body
        page[at + ENTRY_SIZE : at + ENTRY_SIZE + len(value)] = value
        self.used[-1] += span

    def primitive(self, ns: int, key: bytes, code: ItemCode, packed: bytes) -> None:
        if self._free < 1:
            self._new_page()
        self._put(ns, code, 1, CHUNK_ANY, key, packed + _FILL8[len(packed) :])

    def string(self, ns: int, key: bytes, raw: bytes) -> None:
        span = 1 + _entries_for(len(raw))
        # The generator's test leaves the page's last entry free (``>=``);
        # only a string that needs a whole page fills one (see the docstring).
        if self.used[-1] and span >= self._free:
            self._new_page()
        self._put(
            ns,
            ItemCode.SZ,
            span,
            CHUNK_ANY,
            key,
            VARLEN.pack(len(raw), RESERVED16, crc32(raw)),
            raw,
        )

    def blob(self, ns: int, key: bytes, data: bytes, *, name: str) -> None:
        if self._free < 1:
            self._new_page()
        view = memoryview(data)
        offset = 0
        count = 0
        while True:
            room = (self._free - 1) * ENTRY_SIZE  # what is left after the chunk's header
            chunk = bytes(view[offset : offset + room])
            self._put(ns, ItemCode.BLOB_DATA, 1 + _entries_for(len(chunk)), count, key,
                      VARLEN.pack(len(chunk), RESERVED16, crc32(chunk)), chunk)  # fmt: skip
            offset += len(chunk)
            count += 1
            if count > MAX_CHUNKS:
                raise LimitError(
                    f"{name}: blob of {len(data)} bytes needs more than {MAX_CHUNKS} chunks "
                    "(one per page), more than NVS can index"
                )
            if offset < len(data) or self._free == 0:
                self._new_page()
            if offset >= len(data):
                break
        index = BLOB_INDEX.pack(len(data), count, 0, RESERVED16)
        self._put(ns, ItemCode.BLOB_IDX, 1, CHUNK_ANY, key, index)

    def image(self, size: int, name: str) -> bytes:
        available = size // PAGE_SIZE - RESERVED_PAGES
        if len(self.pages) > available:
            raise NvsTooBigError(name, len(self.pages), size)
        last = len(self.pages) - 1
        for number, (page, used) in enumerate(zip(self.pages, self.used, strict=True)):
            state = PageState.ACTIVE if number == last else PageState.FULL
            header = bytearray(PAGE_HEADER.pack(state, number, VERSION2, 0))
            header[9:28] = b"\xff" * 19
            header[28:32] = crc32(bytes(header[4:28])).to_bytes(4, "little")
            page[: PAGE_HEADER.size] = header
            page[PAGE_HEADER.size : FIRST_ENTRY] = _bitmap(used)
        return b"".join(self.pages) + _ERASED_PAGE * (size // PAGE_SIZE - len(self.pages))


def _bitmap(written: int) -> bytes:
    """The state bitmap of a page whose first ``written`` entries are written (0b10)."""
    whole, rest = divmod(written, 4)
    partial = b""
    if rest:
        partial = bytes([0xFF & ~sum(1 << (2 * i) for i in range(rest))])
    return (b"\xaa" * whole + partial).ljust(_BITMAP_SIZE, b"\xff")
