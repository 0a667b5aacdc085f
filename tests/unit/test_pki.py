"""PKI bin: golden bytes from the ESP-AT docs, the AtPKI ordering rule, limits, parser errors."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atflash.content import pki
from atflash.errors import FileInputError, FormatError, LimitError
from tests.support.fuzzing import examples


def test_golden_client_cert_bin_from_esp_at_docs(raw: Path) -> None:
    files = sorted((raw / "client_cert").glob("*.crt"))
    contents = [f.read_bytes() for f in files]
    data = pki.build(("cert", c, None) for c in contents)

    assert len(data) == 2344
    assert data[:12] == bytes.fromhex("F1F1 0200 20090000 02008C04")
    assert data[12 : 12 + 1164] == contents[0]
    assert data[1176:1180] == bytes.fromhex("02018C04")
    assert data[1180:] == contents[1]


def test_keys_get_one_alignment_byte_each(raw: Path) -> None:
    keys = [f.read_bytes() for f in sorted((raw / "client_key").glob("*.key"))]
    data = pki.build(("key", k, None) for k in keys)
    assert len(keys[0]) == 1675
    # header 8 + 2 * (4 + 1675 + 1)
    assert len(data) == 8 + 2 * 1680
    assert data[8 + 4 + 1675] == 0xFF
    assert struct.unpack_from("<BBH", data, 8 + 1680) == (3, 1, 1675)


def test_items_grouped_by_type_in_order_of_first_appearance() -> None:
    data = pki.build([("cert", b"A", "a.crt"), ("key", b"K", "a.key"), ("cert", b"B", "b.crt")])
    parsed = pki.parse(data)
    assert [(i.type, i.id, i.content) for i in parsed.items] == [
        ("cert", 0, b"A"),
        ("cert", 1, b"B"),
        ("key", 0, b"K"),
    ]


def test_empty_input_gives_header_only() -> None:
    assert pki.build([]) == bytes.fromhex("F1F1 0000 00000000")


def test_parse_accepts_a_partition_dump_with_trailing_ff(raw: Path) -> None:
    cert = (raw / "client_cert" / "client_cert_00.crt").read_bytes()
    data = pki.build([("cert", cert, None)])
    parsed = pki.parse(pki.pad(data, 8192))
    assert parsed.size == len(data)
    assert parsed.items[0].content == cert


def test_item_repr_hides_content() -> None:
    item = pki.PkiItem("key", 0, b"-----BEGIN PRIVATE KEY-----SECRET")
    assert "SECRET" not in repr(item)
    assert "SECRET" not in repr(pki.PkiBin((item,)))


@pytest.mark.parametrize(
    ("data", "problem", "offset"),
    [
        (b"\xf1", "shorter than the 8-byte header", None),
        (bytes.fromhex("F2F1 0100 08000000 02000400") + b"abcd", "bad magic F2 F1", 0),
        (b"\xff" * 64, "partition is blank", 0),
        (bytes.fromhex("F1F1 0100 10000000 02000400") + b"abcd", "runs past", 4),
        (bytes.fromhex("F1F1 0200 08000000 02000400") + b"abcd", "item 1 header is truncated", 16),
        (
            bytes.fromhex("F1F1 0100 08000000 02000800") + b"abcd",
            "item 0 (8 bytes) is truncated",
            8,
        ),
        (bytes.fromhex("F1F1 0100 08000000 07000400") + b"abcd", "unknown type 0x07", 8),
        (bytes.fromhex("F1F1 0100 08000000 02000300") + b"abc\x00", "alignment byte is 0x00", 15),
        (
            bytes.fromhex("F1F1 0100 0C000000 02000400") + b"abcd" + b"xxxx",
            "bytes after the last",
            16,
        ),
    ],
)
def test_parse_rejects_bad_bins_with_what_and_where(
    data: bytes, problem: str, offset: int | None
) -> None:
    with pytest.raises(FormatError) as err:
        pki.parse(data, source="x.bin")
    assert problem in str(err.value)
    assert err.value.offset == offset
    assert str(err.value).startswith("x.bin: PKI bin:")


def test_limits() -> None:
    with pytest.raises(LimitError, match="at most 65535 bytes"):
        pki.arrange([("cert", b"x" * 65536, "big.crt")])
    with pytest.raises(LimitError, match="257 cert items"):
        pki.arrange([("cert", b"x", None)] * 257)
    assert len(pki.arrange([("cert", b"x", None)] * 256).items) == 256
    with pytest.raises(FormatError, match="unknown type"):
        pki.arrange([("foo", b"x", None)])


def test_more_than_65535_items_in_total_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # 3 types x 256 items cannot reach the u16 total; lower the per-type cap to hit it.
    monkeypatch.setattr(pki, "MAX_ITEMS_PER_TYPE", 1 << 20)
    with pytest.raises(LimitError, match="at most 65535"):
        pki.arrange([("cert", b"", None)] * 65536)


def test_read_input_errors(tmp_path: Path) -> None:
    with pytest.raises(FileInputError, match="file not found"):
        pki.read_input(tmp_path / "missing.crt")
    with pytest.raises(FileInputError, match="is a directory"):
        pki.read_input(tmp_path)
    empty = tmp_path / "empty.crt"
    empty.write_bytes(b"")
    assert pki.read_input(empty) == b""
    with pytest.raises(FileInputError, match="file is empty"):
        pki.read_input(empty, allow_empty=False)
    big = tmp_path / "big.crt"
    big.write_bytes(b"x" * 65536)
    with pytest.raises(LimitError, match="65536 bytes"):
        pki.read_input(big)


items_strategy = st.lists(
    st.tuples(st.sampled_from(["ca", "cert", "key"]), st.binary(max_size=300)), max_size=20
)


@settings(max_examples=examples(200))
@given(items_strategy)
def test_round_trip(items: list[tuple[str, bytes]]) -> None:
    data = pki.build((kind, content, None) for kind, content in items)
    assert len(data) % 4 == 0
    parsed = pki.parse(data)
    assert parsed.size == len(data)
    for kind in ("ca", "cert", "key"):
        given_contents = [c for k, c in items if k == kind]
        got = [i for i in parsed.items if i.type == kind]
        assert [i.content for i in got] == given_contents
        assert [i.id for i in got] == list(range(len(given_contents)))
    # and a partition dump parses to the same items
    assert pki.parse(pki.pad(data, len(data) + 100)).items == parsed.items


def test_the_read_back_stops_once_the_bin_is_whole_or_absent() -> None:
    whole = pki.build([("cert", b"A" * 1000, None)])
    assert not pki.holds_whole_bin(whole[:7]) and not pki.holds_whole_bin(whole[:-1])
    assert pki.holds_whole_bin(whole) and pki.holds_whole_bin(
        whole[:-1] + whole[-1:] + b"\xff" * 60
    )
    assert pki.holds_whole_bin(b"\xff" * 64)  # erased: nothing to read further
