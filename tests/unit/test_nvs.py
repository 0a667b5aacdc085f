"""NVS codec: images byte-identical to Espressif's generator, the reader's cases, errors, fuzzing.

The reference is ``esp-idf-nvs-partition-gen``'s Python API, given each
item's namespace index explicitly: its CSV path files an item in the
last-created namespace when a CSV returns to an earlier one, a generator bug
``build_nvs`` does not copy (the CSV path is compared in test_mfgnvs.py).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import pytest
from esp_idf_nvs_partition_gen import nvs_partition_gen as gen
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atflash.content import nvs, nvs_build
from atflash.content.nvs import (
    ENTRY,
    ENTRY_SIZE,
    FIRST_ENTRY,
    PAGE_HEADER,
    PAGE_SIZE,
    EntryState,
    NvsItem,
    NvsType,
    PageState,
    build_nvs,
    parse_nvs,
)
from atflash.content.nvs_build import NvsTooBigError
from atflash.errors import AtflashError, FormatError, ImageTooBigError, InputError, LimitError
from tests.support.fuzzing import examples

SIZE = 0x1F000  # ESP-AT's mfg_nvs on ESP32-C3: 31 pages
FAST = settings(
    max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def reference(items: list[NvsItem], size: int, *, version: int = gen.Page.VERSION2) -> bytes:
    """What Espressif's generator makes of ``items`` (as its CLI does: one page kept free)."""
    out = io.BytesIO()
    image = gen.nvs_open(out, size - PAGE_SIZE, version)
    indices: dict[str, int] = {}
    for item in items:
        if item.namespace not in indices:
            gen.write_entry(image, item.namespace, "namespace", "", "")
            indices[item.namespace] = len(indices) + 1
        value = item.value if item.type in ("string", "binary") else str(item.value)
        gen.write_entry(image, item.key, "data", item.type, value, indices[item.namespace])
    gen.nvs_close(image)
    return out.getvalue()


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes that differ at every position (a shifted chunk would show)."""
    return bytes((i * 7 + seed + i // 251) & 0xFF for i in range(size))


def fill(count: int, namespace: str = "fill") -> list[NvsItem]:
    """``count`` one-entry items: with the namespace entry, ``count + 1`` entries."""
    return [NvsItem(namespace, f"k{i}", "u8", i & 0xFF) for i in range(count)]


PRIMITIVE_LIMITS = [
    NvsItem("prim", f"{t}_{end}", t, nvs.int_range(t)[end == "max"])
    for t in ("u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64")
    for end in ("min", "max")
]

CASES: dict[str, list[NvsItem]] = {
    "empty": [],
    "primitives at their limits": PRIMITIVE_LIMITS,
    "strings": [
        NvsItem("str", "empty", "string", ""),
        NvsItem("str", "short", "string", "CN"),
        NvsItem("str", "utf8", "string", "Grüße, 世界"),
        NvsItem("str", "commas", "string", '0,16,0x2800,2,"x"'),
        NvsItem("str", "len31", "string", "a" * 31),  # 32 bytes with the NUL: one entry
        NvsItem("str", "len32", "string", "b" * 32),  # 33: two entries
        NvsItem("str", "long", "string", "c" * 3000),
        NvsItem("str", "longest", "string", "d" * 3967),  # 3968 with NUL: the generator's limit
    ],
    "small blobs": [
        NvsItem("bin", "empty", "binary", b""),
        NvsItem("bin", "one", "binary", b"\x00"),
        NvsItem("bin", "entry", "binary", blob(32)),
        NvsItem("bin", "entry1", "binary", blob(33)),
        NvsItem("bin", "page", "binary", blob(4000)),  # exactly one page of data
    ],
    "8 KB blob": [NvsItem("bin", "b8k", "binary", blob(8 * 1024, 1))],
    "20 KB blob": [NvsItem("bin", "b20k", "binary", blob(20 * 1024, 2))],
    "several namespaces, revisited": [
        NvsItem("alpha", "a", "u8", 1),
        NvsItem("beta", "b", "binary", blob(5000, 3)),
        NvsItem("alpha", "c", "string", "back in alpha"),
        NvsItem("gamma_fifteen_c", "key_fifteen_chr", "i32", -1),
        NvsItem("beta", "d", "u16", 513),
    ],
    # Page boundaries: the generator's placement rules, one at a time.
    "u8 fills the last entry": [*fill(125), NvsItem("fill", "last", "u8", 9)],
    "string would fill the page exactly": [*fill(122), NvsItem("fill", "s", "string", "x" * 40)],
    "string fits with one entry to spare": [*fill(121), NvsItem("fill", "s", "string", "x" * 40)],
    "blob starts on the last entry (empty chunk)": [*fill(124), NvsItem("fill", "b", "binary", blob(100))],
    "empty blob on the last entry": [*fill(124), NvsItem("fill", "b", "binary", b"")],
    "blob ends exactly at the page end": [*fill(60), NvsItem("fill", "b", "binary", blob(64 * 32))],
    "blob on a full page": [*fill(125), NvsItem("fill", "b", "binary", blob(10))],
    "many pages of items": fill(700),
}  # fmt: skip


@pytest.mark.parametrize("items", CASES.values(), ids=CASES.keys())
def test_identical_to_espressif_generator(items: list[NvsItem]) -> None:
    expected = reference(items, SIZE)
    assert build_nvs(items, SIZE) == expected
    assert parse_nvs(expected) == items


@pytest.mark.parametrize("pages", [3, 4, 8])
def test_identical_at_other_sizes(pages: int) -> None:
    items = [NvsItem("n", "v", "binary", blob(3000 * (pages - 2)))]
    assert build_nvs(items, pages * PAGE_SIZE) == reference(items, pages * PAGE_SIZE)


def test_layout_facts() -> None:
    """A few bytes checked by hand, so a shared misreading of the format would show."""
    image = build_nvs([NvsItem("ns", "k", "u8", 5)], 3 * PAGE_SIZE)
    state, seq, version, _crc = PAGE_HEADER.unpack_from(image)
    assert (state, seq, version) == (PageState.ACTIVE, 0, 0xFE)
    assert image[32:34] == bytes([0b11111010, 0xFF])  # entries 0 and 1 written
    assert image[64:68] == bytes([0, 0x01, 1, 0xFF])  # namespace entry: ns 0, u8, span 1
    assert image[72:88] == b"ns".ljust(16, b"\0") and image[88] == 1  # index 1
    assert image[96:100] == bytes([1, 0x01, 1, 0xFF]) and image[120:128] == b"\x05" + b"\xff" * 7
    assert image[PAGE_SIZE:] == b"\xff" * 2 * PAGE_SIZE


def test_items_before_the_last_page_leave_it_free() -> None:
    items = [NvsItem("n", "big", "binary", blob(7000))]  # two pages of data
    image = build_nvs(items, 3 * PAGE_SIZE)
    assert [PAGE_HEADER.unpack_from(image, p * PAGE_SIZE)[0] for p in range(3)] == [
        PageState.FULL, PageState.ACTIVE, PageState.UNINITIALIZED,
    ]  # fmt: skip


def test_whole_page_string_goes_where_esp_idf_takes_it() -> None:
    """3969..4000 bytes: the generator fails on these, ESP-IDF stores them on one page."""
    items = [NvsItem("n", "a", "u8", 1), NvsItem("n", "s", "string", "z" * 3999)]
    image = build_nvs(items, 3 * PAGE_SIZE)
    assert parse_nvs(image) == items
    assert image[PAGE_SIZE + 32 : PAGE_SIZE + 64] == b"\xaa" * 31 + b"\xfa"  # all 126 written
    with pytest.raises(gen.PageFullError):
        reference(items, 3 * PAGE_SIZE)


# -- properties ------------------------------------------------------------------------

# The generator's write_entry adds Wi-Fi entries of its own for these keys.
GENERATOR_SPECIAL_KEYS = {"ap.ssid", "ap.passwd", "ap.authmode", "sta.ssid", "sta.pswd"}
names = st.text("abcxyz_.019", min_size=1, max_size=15).filter(
    lambda n: n not in GENERATOR_SPECIAL_KEYS
)


def values_for(nvs_type: NvsType) -> st.SearchStrategy[int | str | bytes]:
    if nvs_type == "string":
        return st.text(max_size=60) | st.integers(0, 3967).map(lambda n: "s" * n)
    if nvs_type == "binary":
        return st.binary(max_size=80) | st.integers(0, 9000).map(blob)
    low, high = nvs.int_range(nvs_type)
    return st.integers(low, high) | st.sampled_from([low, high, 0])


@st.composite
def item_lists(draw: st.DrawFn, max_size: int = 12) -> list[NvsItem]:
    entries = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "ns_b", "c" * 15]), names, st.sampled_from(nvs.NVS_TYPES)
            ),
            max_size=max_size,
            unique_by=lambda e: (e[0], e[1]),
        )
    )
    return [NvsItem(ns, key, t, draw(values_for(t))) for ns, key, t in entries]


@FAST
@given(item_lists(), st.sampled_from([3, 4, 6, 10]))
def test_property_same_bytes_or_same_refusal_as_generator(items: list[NvsItem], pages: int) -> None:
    size = pages * PAGE_SIZE
    try:
        expected = reference(items, size)
    except gen.InsufficientSizeError:
        with pytest.raises(NvsTooBigError):
            build_nvs(items, size)
        return
    assert build_nvs(items, size) == expected


@FAST
@given(item_lists(max_size=30))
def test_property_round_trip(items: list[NvsItem]) -> None:
    assert parse_nvs(build_nvs(items, 40 * PAGE_SIZE)) == items


# -- reader ----------------------------------------------------------------------------


def entry_offset(page: int, index: int) -> int:
    return page * PAGE_SIZE + FIRST_ENTRY + index * ENTRY_SIZE


def patch_entry(image: bytes, page: int, index: int, **changes: object) -> bytes:
    """Change fields of an entry (ns, code, span, chunk, key, data) and recompute its CRC."""
    names_ = ("ns", "code", "span", "chunk", "crc", "key", "data")
    fields = dict(zip(names_, ENTRY.unpack_from(image, entry_offset(page, index)), strict=True))
    fields.update(changes)
    raw = bytearray(ENTRY.pack(*fields.values()))
    raw[4:8] = nvs.crc32(bytes(raw[8:]), nvs.crc32(bytes(raw[:4]))).to_bytes(4, "little")
    out = bytearray(image)
    out[entry_offset(page, index) : entry_offset(page, index) + ENTRY_SIZE] = raw
    return bytes(out)


def set_entry_state(image: bytes, page: int, index: int, state: EntryState) -> bytes:
    out = bytearray(image)
    at = page * PAGE_SIZE + 32 + index // 4
    shift = 2 * (index % 4)
    out[at] = (out[at] & ~(0b11 << shift)) | (state << shift)
    return bytes(out)


def set_page_header(image: bytes, page: int, *, state: int | None = None, seq: int | None = None,
                    version: int | None = None) -> bytes:  # fmt: skip
    """Rewrite a page header (the CRC covers sequence and version, not the state)."""
    out = bytearray(image)
    base = page * PAGE_SIZE
    old_state, old_seq, old_version, _ = PAGE_HEADER.unpack_from(out, base)
    struct.pack_into("<II", out, base, old_state if state is None else state,
                     old_seq if seq is None else seq)  # fmt: skip
    out[base + 8] = old_version if version is None else version
    out[base + 28 : base + 32] = nvs.crc32(bytes(out[base + 4 : base + 28])).to_bytes(4, "little")
    return bytes(out)


def swap_pages(image: bytes, a: int, b: int) -> bytes:
    pages = [image[i : i + PAGE_SIZE] for i in range(0, len(image), PAGE_SIZE)]
    pages[a], pages[b] = pages[b], pages[a]
    return b"".join(pages)


TWO_PAGES = [NvsItem("n", "first", "u8", 1), NvsItem("n", "blob", "binary", blob(5000)),
             NvsItem("n", "last", "string", "end")]  # fmt: skip
# Its layout: page 0 holds the namespace, "first" and blob chunk 0 (3936 bytes, entries
# 2..125); page 1 chunk 1 (1064 bytes, entries 0..34), the blob index, then the string.
BLOB_INDEX_AT = (1, 35)
STRING_AT = (1, 36)


def test_erased_image_holds_nothing() -> None:
    assert parse_nvs(b"\xff" * SIZE) == []


def test_pages_are_read_in_sequence_order_not_flash_order() -> None:
    image = build_nvs(TWO_PAGES, 4 * PAGE_SIZE)
    assert parse_nvs(swap_pages(image, 0, 1)) == TWO_PAGES
    assert parse_nvs(swap_pages(image, 1, 3)) == TWO_PAGES


def test_unused_pages_marked_full_as_esp_at_tools_do() -> None:
    """at.py's bundled generator marks unused pages FULL with a header and no entries."""
    image = build_nvs(TWO_PAGES, 5 * PAGE_SIZE)
    for page in (2, 3):
        image = set_page_header(image, page, state=PageState.FULL, seq=page, version=0xFE)
    assert parse_nvs(image) == TWO_PAGES


def test_legacy_version1_image_with_single_page_blobs() -> None:
    items = [NvsItem("old", "cfg", "binary", blob(1500)), NvsItem("old", "name", "string", "v1")]
    image = reference(items, 4 * PAGE_SIZE, version=gen.Page.VERSION1)
    assert image[8] == 0xFF and image[96 + 1] == 0x41  # page version 1, legacy blob type
    assert parse_nvs(image) == items


def test_erased_entries_are_skipped() -> None:
    items = [NvsItem("n", "a", "u8", 1), NvsItem("n", "b", "u8", 2), NvsItem("n", "c", "u8", 3)]
    image = set_entry_state(build_nvs(items, 3 * PAGE_SIZE), 0, 2, EntryState.ERASED)
    assert parse_nvs(image) == [items[0], items[2]]


def test_newer_copy_wins_and_freeing_pages_are_read() -> None:
    """An update interrupted before the old copy was erased, on a page being freed."""
    items = [*fill(125, "n"), NvsItem("n", "k0", "u8", 99)]  # k0 collides on page 1
    built = build_nvs([*fill(125, "n"), NvsItem("n", "later", "u8", 99)], 3 * PAGE_SIZE)
    image = patch_entry(built, 1, 0, key=b"k0".ljust(16, b"\0"))
    image = set_page_header(image, 0, state=PageState.FREEING)
    assert parse_nvs(image) == [*items[1:125], items[125]]


def test_corrupt_marked_page_is_skipped() -> None:
    image = set_page_header(build_nvs(TWO_PAGES, 4 * PAGE_SIZE), 1, state=PageState.CORRUPT)
    # The blob's index and the string were on it; blob chunk 0 is left without an index.
    assert parse_nvs(image) == TWO_PAGES[:1]


def test_second_blob_version_with_chunk_start_128() -> None:
    items = [NvsItem("n", "b", "binary", blob(6000))]
    image = build_nvs(items, 4 * PAGE_SIZE)
    # entries: page 0 [ns, chunk 0 (126 - 2 entries)], page 1 [chunk 1, ..., index]
    image = patch_entry(image, 0, 1, chunk=128)
    image = patch_entry(image, 1, 0, chunk=129)
    chunk1_span = 1 + -(-(6000 - 124 * 32) // 32)
    index = struct.unpack("<IBBH", ENTRY.unpack_from(image, entry_offset(1, chunk1_span))[6])
    assert index == (6000, 2, 0, 0xFFFF)
    image = patch_entry(image, 1, chunk1_span, data=struct.pack("<IBBH", 6000, 2, 128, 0xFFFF))
    assert parse_nvs(image) == items


def test_orphan_blob_chunks_are_ignored() -> None:
    image = build_nvs([NvsItem("n", "b", "binary", b"abc")], 3 * PAGE_SIZE)
    assert parse_nvs(set_entry_state(image, 0, 3, EntryState.ERASED)) == []  # index erased


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def apply(image: bytes) -> bytes:
        out = bytearray(image)
        out[offset] ^= 0x01
        return bytes(out)

    return apply


# (what to do to a valid two-page image, the error it must give)
BAD_IMAGES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "not whole pages": (lambda im: im[:-1], "not a whole number"),
    "empty": (lambda im: b"", "not a whole number"),
    "page header CRC": (_flip(4), "page header CRC mismatch"),
    "unknown page state": (lambda im: set_page_header(im, 0, state=0x12345678), "unknown page state"),
    "all zero page": (lambda im: b"\0" * PAGE_SIZE + im[PAGE_SIZE:], "unknown page state 0x00000000"),
    "newer page format": (lambda im: set_page_header(im, 0, version=0xFD), "newer than this reader"),
    "data in an unused page": (lambda im: im[:-1] + b"\0", "page marked unused holds data"),
    "entry CRC": (_flip(entry_offset(0, 1) + 10), "entry CRC mismatch"),
    "value CRC": (_flip(entry_offset(0, 3)), "value CRC mismatch"),
    "unknown type": (lambda im: patch_entry(im, 0, 1, code=0x77), "unknown item type 0x77"),
    "span too long": (lambda im: patch_entry(im, 0, 1, span=2), "span 2 for a one-entry item"),
    "span of a string": (lambda im: patch_entry(im, *STRING_AT, span=7), r"span 7 does not fit"),
    "span past page end": (lambda im: patch_entry(im, 0, 2, data=struct.pack("<HHI", 4090, 0xFFFF, 0)),
                           "does not fit"),
    "value entry not written": (lambda im: set_entry_state(im, 0, 3, EntryState.EMPTY),
                                "value entries not all marked written"),
    "illegal entry state": (lambda im: set_entry_state(im, 0, 1, EntryState.ILLEGAL), "illegal entry state"),
    "key without NUL": (lambda im: patch_entry(im, 0, 1, key=b"k" * 16), "no NUL"),
    "empty key": (lambda im: patch_entry(im, 0, 1, key=b"\0" * 16), "empty key"),
    "key not UTF-8": (lambda im: patch_entry(im, 0, 1, key=b"\xff\xfe".ljust(16, b"\0")), "not UTF-8"),
    "unnamed namespace": (lambda im: patch_entry(im, 0, 1, ns=7), "namespace index 7"),
    "namespace not u8": (lambda im: patch_entry(im, 0, 0, code=0x02), "not u8"),
    "namespace index 0": (lambda im: patch_entry(im, 0, 0, data=b"\0" + b"\xff" * 7), "has index 0"),
    "string without NUL": (lambda im: _string_without_nul(im), "does not end with a NUL"),
    "blob size mismatch": (lambda im: patch_entry(im, *BLOB_INDEX_AT, data=struct.pack("<IBBH", 4999, 2, 0, 0xFFFF)),
                           "index says 4999 bytes"),
    "blob chunk missing": (lambda im: patch_entry(im, *BLOB_INDEX_AT, data=struct.pack("<IBBH", 5000, 3, 0, 0xFFFF)),
                           "lacks data chunk 2"),
}  # fmt: skip


def _string_without_nul(image: bytes) -> bytes:
    out = bytearray(image)
    at = entry_offset(STRING_AT[0], STRING_AT[1] + 1)
    assert out[at : at + 4] == b"end\0"
    out[at + 3] = ord("!")
    return patch_entry(
        bytes(out), *STRING_AT, data=struct.pack("<HHI", 4, 0xFFFF, nvs.crc32(b"end!"))
    )


@pytest.mark.parametrize(("damage", "message"), BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_malformed_images_give_one_line_format_errors(
    damage: Callable[[bytes], bytes], message: str
) -> None:
    image = build_nvs(TWO_PAGES, 4 * PAGE_SIZE)
    # The fixture's layout, which the cases above rely on.
    assert [parse_nvs(image)] == [TWO_PAGES]
    assert ENTRY.unpack_from(image, entry_offset(*BLOB_INDEX_AT))[1] == nvs.ItemCode.BLOB_IDX
    assert ENTRY.unpack_from(image, entry_offset(*STRING_AT))[1] == nvs.ItemCode.SZ
    with pytest.raises(FormatError, match=message) as caught:
        parse_nvs(damage(image))
    text = str(caught.value)
    assert text.startswith("mfg_nvs: ")
    assert "\n" not in text


def test_format_error_names_source_page_entry_and_offset() -> None:
    image = _flip(entry_offset(*BLOB_INDEX_AT) + 10)(build_nvs(TWO_PAGES, 4 * PAGE_SIZE))
    with pytest.raises(FormatError) as caught:
        parse_nvs(image, source="board.bin")
    assert (
        str(caught.value) == "board.bin: NVS page 1 entry 35: entry CRC mismatch at offset 0x14a0"
    )


# -- writer errors ---------------------------------------------------------------------

BAD_ITEMS: dict[str, tuple[list[NvsItem], type[AtflashError], str]] = {
    "key too long": ([NvsItem("n", "k" * 16, "u8", 1)], InputError, "'kkkkkkkkkkkkkkkk' is 16 bytes long, NVS allows at most 15"),
    "namespace too long": ([NvsItem("client_cert_extra", "k", "u8", 1)], InputError, "namespace 'client_cert_extra' is 17 bytes"),
    "multi-byte key too long": ([NvsItem("n", "é" * 8, "u8", 1)], InputError, "16 bytes long"),
    "empty key": ([NvsItem("n", "", "u8", 1)], InputError, "non-empty"),
    "NUL in key": ([NvsItem("n", "a\0b", "u8", 1)], InputError, "contains a NUL"),
    "duplicate": ([NvsItem("n", "k", "u8", 1), NvsItem("n", "k", "string", "x")], InputError, "'n'/'k': the key appears twice"),
    "u8 too big": ([NvsItem("n", "k", "u8", 256)], InputError, r"256 is out of range for u8 \(0..255\)"),
    "i8 too small": ([NvsItem("n", "k", "i8", -129)], InputError, "out of range for i8"),
    "bool": ([NvsItem("n", "k", "u8", True)], InputError, "must be an integer, not bool"),
    "str for int": ([NvsItem("n", "k", "u32", "5")], InputError, "must be an integer, not str"),
    "bytes for string": ([NvsItem("n", "k", "string", b"x")], InputError, "must be str"),
    "str for binary": ([NvsItem("n", "k", "binary", "x")], InputError, "must be bytes"),
    "unknown type": ([NvsItem("n", "k", "float", 1)], InputError, "unknown type 'float'"),  # type: ignore[arg-type]
    "lone surrogate": ([NvsItem("n", "k", "string", "\ud800")], InputError, "not valid text"),
    "string too long": ([NvsItem("n", "k", "string", "x" * 4000)], LimitError, "4001 bytes with its NUL, NVS holds at most 4000, 1 too many"),
    "not an item": ([("n", "k", "u8", 1)], InputError, "is not an NvsItem"),  # type: ignore[list-item]
}  # fmt: skip


@pytest.mark.parametrize(("items", "error", "message"), BAD_ITEMS.values(), ids=BAD_ITEMS.keys())
def test_bad_items_are_refused_by_name(
    items: list[NvsItem], error: type[AtflashError], message: str
) -> None:
    with pytest.raises(error, match=message) as caught:
        build_nvs(items, SIZE)
    assert str(caught.value).startswith("mfg_nvs: ") and "\n" not in str(caught.value)


@pytest.mark.parametrize("size", [0, 2 * PAGE_SIZE, 3 * PAGE_SIZE + 1, 0x1F000 + 512, -PAGE_SIZE])
def test_bad_sizes(size: int) -> None:
    with pytest.raises(InputError, match="multiple of 4096 and at least 0x3000"):
        build_nvs([], size)


def test_too_big_says_by_how_much() -> None:
    items = [NvsItem("n", f"b{i}", "binary", blob(3900)) for i in range(4)]  # a page each
    assert len(build_nvs(items, 5 * PAGE_SIZE)) == 5 * PAGE_SIZE
    with pytest.raises(ImageTooBigError) as caught:
        build_nvs(items, 4 * PAGE_SIZE, name="ble_nvs")
    error = caught.value
    assert isinstance(error, NvsTooBigError) and isinstance(error, InputError)
    assert (error.pages_needed, error.pages_available) == (4, 3)
    assert error.overflow.excess == PAGE_SIZE
    assert str(error) == (
        "ble_nvs: image is 20480 bytes but the partition holds 16384, 4096 bytes too many: "
        "the items fill 4 pages of 4096 bytes and ESP-IDF keeps one more free, the partition "
        "has 3 + 1: give fewer or smaller items"
    )


def test_repr_never_shows_values() -> None:
    secret = b"-----BEGIN PRIVATE KEY-----MIIE"
    item = NvsItem("client_key", "client_key.0", "binary", secret)
    assert repr(item) == "NvsItem('client_key', 'client_key.0', 'binary', <31 bytes>)"
    assert "PRIVATE" not in repr([item, NvsItem("n", "s", "string", "secret")])


# -- fuzzing ---------------------------------------------------------------------------


def fix_crcs(image: bytes) -> bytes:
    """Make the CRCs of page headers, written entries and their values right again.

    Mutations then get past the CRC checks to the structure checks behind them.
    """
    out = bytearray(image)
    for base in range(0, len(out) - len(out) % PAGE_SIZE, PAGE_SIZE):
        if out[base : base + 4] == b"\xff" * 4:
            continue  # an erased page: leave it erased
        out[base + 28 : base + 32] = nvs.crc32(bytes(out[base + 4 : base + 28])).to_bytes(
            4, "little"
        )
        index = 0
        while index < nvs.ENTRIES_PER_PAGE:
            at = base + FIRST_ENTRY + index * ENTRY_SIZE
            if (out[base + 32 + index // 4] >> (2 * (index % 4))) & 0b11 != EntryState.WRITTEN:
                index += 1
                continue
            size = int.from_bytes(out[at + 24 : at + 26], "little")
            if out[at + 1] in (0x21, 0x41, 0x42) and at + ENTRY_SIZE + size <= base + PAGE_SIZE:
                value = bytes(out[at + ENTRY_SIZE : at + ENTRY_SIZE + size])
                out[at + 28 : at + 32] = nvs.crc32(value).to_bytes(4, "little")
            crc = nvs.crc32(bytes(out[at + 8 : at + 32]), nvs.crc32(bytes(out[at : at + 4])))
            out[at + 4 : at + 8] = crc.to_bytes(4, "little")
            index += max(1, out[at + 2])
    return bytes(out)


VALID = [
    build_nvs(TWO_PAGES, 4 * PAGE_SIZE),
    build_nvs([*fill(20), NvsItem("x", "b", "binary", blob(9000)), NvsItem("x", "s", "string", "s")], 5 * PAGE_SIZE),
    reference([NvsItem("old", "b", "binary", blob(300))], 3 * PAGE_SIZE, version=gen.Page.VERSION1),
]  # fmt: skip


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    image = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        # Mostly pages in use: an erased page only ever gives "page marked unused holds data".
        used = [p for p in range(len(image) // PAGE_SIZE) if image[p * PAGE_SIZE] != 0xFF]
        any_page = st.integers(0, len(image) // PAGE_SIZE - 1)
        page = draw(st.sampled_from(used) | any_page if used else any_page)
        # Aim at the interesting bytes: headers, bitmaps, entry headers.
        where = page * PAGE_SIZE + draw(
            st.integers(0, 63)  # header and bitmap
            | st.integers(0, 125).map(lambda i: FIRST_ENTRY + ENTRY_SIZE * i + i % 8)
            | st.integers(0, PAGE_SIZE - 1)
        )
        image[where] = draw(
            st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0xFE, 0xFF, 0x41, 0x42, 0x48])
        )
    if draw(st.booleans()):
        image = bytearray(fix_crcs(bytes(image)))
    if draw(st.integers(0, 9)) == 0:
        image = image[: draw(st.integers(0, len(image)))]
    return bytes(image)


def only_format_errors(image: bytes) -> None:
    """The reader raises only FormatError; salvage never raises on whole pages, and agrees."""
    salvaged = None
    if image and not len(image) % PAGE_SIZE:
        salvaged = nvs.salvage_nvs(image, source="fuzz")
        assert all(isinstance(i, NvsItem) for i in salvaged.items)
        assert all("\n" not in line for line in salvaged.dropped)
    try:
        items = parse_nvs(image, source="fuzz")
    except FormatError as exc:
        assert str(exc).startswith("fuzz: ") and "\n" not in str(exc)
        assert salvaged is None or salvaged.dropped, "salvage found nothing wrong"
        return
    assert all(isinstance(i, NvsItem) for i in items)
    assert salvaged == nvs.Salvaged(items, [])


@FAST
@given(mutated_images())
def test_fuzz_mutated_images_raise_only_format_errors(image: bytes) -> None:
    only_format_errors(image)


@FAST
@given(st.binary(max_size=64) | st.binary(min_size=PAGE_SIZE, max_size=PAGE_SIZE))
def test_fuzz_random_bytes_raise_only_format_errors(data: bytes) -> None:
    only_format_errors(data)


random_entries = st.builds(
    lambda ns, code, span, chunk, key, data: (
        bytes((ns, code, span, chunk)) + b"\0" * 4 + key + data
    ),
    st.sampled_from([0, 1, 2, 255]),
    st.sampled_from([*nvs.ItemCode, 0x00, 0x77, 0xFF]),
    st.integers(0, 4) | st.sampled_from([126, 200, 255]),
    st.sampled_from([0, 1, 128, 0xFF]),
    st.sampled_from([b"ns".ljust(16, b"\0"), b"k".ljust(16, b"\0"), b"\0" * 16, b"x" * 16]),
    st.binary(min_size=8, max_size=8) | st.sampled_from([b"\x01" + b"\xff" * 7, bytes(8)]),
)


@FAST
@given(st.lists(random_entries, max_size=126), st.integers(0, 126), st.binary(max_size=32))
def test_fuzz_random_entries_under_a_valid_header(
    entries: list[bytes], written: int, bitmap_tail: bytes
) -> None:
    """A valid ACTIVE page with arbitrary entries and bitmap, all CRCs made right."""
    page = bytearray(build_nvs([], 3 * PAGE_SIZE)[:PAGE_SIZE])
    bitmap = nvs_build._bitmap(written)
    page[32:64] = bitmap[: 32 - len(bitmap_tail)] + bitmap_tail
    body = b"".join(entries)
    page[64 : 64 + len(body)] = body
    only_format_errors(fix_crcs(bytes(page) + b"\xff" * 2 * PAGE_SIZE))


# -- cut short, and salvaged ------------------------------------------------------------

FOUR_PAGES = [
    NvsItem("factory_param", "version", "i8", 4),
    *[NvsItem("client_ca", f"client_ca.{n}", "binary", blob(3000, n)) for n in range(4)],
    NvsItem("mqtt_ca", "mqtt_ca", "binary", blob(900, 9)),
]


def test_an_image_cut_at_any_page_boundary_is_refused_and_salvaged() -> None:
    """Erased flash after a FULL page, with no ACTIVE page: the tail is missing, not erased."""
    image = build_nvs(FOUR_PAGES, 8 * PAGE_SIZE)
    used = sum(PAGE_HEADER.unpack_from(image, p * PAGE_SIZE)[0] != PageState.UNINITIALIZED
               for p in range(8))  # fmt: skip
    assert used == 4
    for pages in range(1, used):
        cut = image[: pages * PAGE_SIZE] + b"\xff" * (8 - pages) * PAGE_SIZE
        with pytest.raises(FormatError, match=r"no page is ACTIVE.*cut short"):
            parse_nvs(cut)
        saved = nvs.salvage_nvs(cut)
        assert FOUR_PAGES[0] in saved.items and FOUR_PAGES[-1] not in saved.items
        assert len(saved.dropped) == 1 and "cut short" in saved.dropped[0]
    assert parse_nvs(image[: used * PAGE_SIZE] + b"\xff" * 4 * PAGE_SIZE) == FOUR_PAGES


def test_a_mid_page_cut_names_page_and_entry_and_salvage_keeps_the_rest() -> None:
    image = build_nvs(FOUR_PAGES, 8 * PAGE_SIZE)
    at = PAGE_SIZE + 1000  # inside page 1: entries written in the bitmap, erased in flash
    cut = image[:at] + b"\xff" * (len(image) - at)
    with pytest.raises(FormatError, match=r"NVS page 1 entry \d+: (value|entry) CRC mismatch"):
        parse_nvs(cut)
    saved = nvs.salvage_nvs(cut)
    assert saved.items[0] == FOUR_PAGES[0]
    assert [line for line in saved.dropped if "after it dropped" in line]  # one note per run
    assert len(saved.dropped) <= 4


def test_at_py_images_with_every_page_full_are_not_cut() -> None:
    """esp-at's at.py generator: every page but the reserved last one initialised FULL, none ACTIVE."""
    image = build_nvs(FOUR_PAGES, 8 * PAGE_SIZE)
    image = set_page_header(image, 3, state=PageState.FULL, seq=3, version=0xFE)
    for page in range(4, 7):
        image = set_page_header(image, page, state=PageState.FULL, seq=page, version=0xFE)
    assert parse_nvs(image) == FOUR_PAGES
    for pages in range(5, 8):  # cut inside its empty FULL pages: nothing lost, and it shows
        assert parse_nvs(image[: pages * PAGE_SIZE] + b"\xff" * (8 - pages) * PAGE_SIZE)
    # Cut right after its last entries, it looks as a cut does (and is taken as one).
    with pytest.raises(FormatError, match="cut short"):
        parse_nvs(image[: 2 * PAGE_SIZE] + b"\xff" * 6 * PAGE_SIZE)


def test_salvage_of_an_intact_image_drops_nothing() -> None:
    image = build_nvs(FOUR_PAGES, 8 * PAGE_SIZE)
    assert nvs.salvage_nvs(image) == nvs.Salvaged(FOUR_PAGES, [])
