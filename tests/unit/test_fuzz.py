"""Property tests of every parser: whatever the input, only an AtflashError may escape.

Each parser gets random input and structured mutations of a valid input
(bytes flipped, cut off, extended, fields rewritten), so the search reaches
the deep branches that random bytes alone never pass the magic of.
``describe_credential`` is held to more: it must never raise at all, and the
binary and CSV parsers to their own error type (FormatError, ProfileError).

Example counts are bounded so the whole file runs in a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from atflash import files
from atflash.content import describe as inspect
from atflash.content import pki
from atflash.content.certs import load_certificate
from atflash.content.checks import validate_item
from atflash.content.describe import ItemInfo, describe_credential
from atflash.content.keys import load_private_key
from atflash.content.pairing import check_pairs
from atflash.errors import AtflashError, FormatError, ProfileError
from atflash.layout import csvtable
from atflash.layout.model import Partition
from atflash.layout.parttable import ENTRY, encode_table, parse_table
from atflash.layout.profiles import find_profile, load_profile_file
from tests.support.fuzzing import examples
from tests.support.samples import RAW as FIXTURES

CERT = (FIXTURES / "client_cert" / "client_cert_00.crt").read_bytes()
KEY = (FIXTURES / "client_key" / "client_key_00.key").read_bytes()
CA = (FIXTURES / "client_ca" / "client_ca_00.crt").read_bytes()
SHIPPED = find_profile("esp32")

FAST = settings(
    max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
SLOW = settings(
    max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def only_atflash_errors(
    call: Callable[[], object], expected: type[AtflashError] = AtflashError
) -> object:
    """Run ``call``: a value or an ``expected`` error is fine, anything else fails the test."""
    try:
        return call()
    except AtflashError as exc:
        assert isinstance(exc, expected), f"{type(exc).__name__}, not {expected.__name__}: {exc}"
        text = str(exc)
        assert text and "\n" not in text, f"error is not one line: {text!r}"
        return exc


# -- mutation strategies ---------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` with a few edits: flipped bytes, overwritten words, cut or extended."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "set", "word", "cut", "extend", "insert", "delete"]))
        if not data and op not in ("extend", "insert"):
            continue
        where = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip":
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[where] = draw(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x7F, 0xF1, 0xFF]))
        elif op == "word" and where + 4 <= len(data):
            value = draw(st.sampled_from([0, 1, 3, 4, 0xFFFF, 0x10000, 0xFFFFFFFF]))
            data[where : where + 4] = struct.pack("<I", value)
        elif op == "cut":
            del data[where:]
        elif op == "extend":
            data += draw(st.binary(max_size=64) | st.just(b"\xff" * 64))
        elif op == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[where : where + draw(st.integers(1, 8))]
    return bytes(data)


pki_contents = st.lists(
    st.tuples(st.sampled_from(["ca", "cert", "key"]), st.binary(max_size=40)), max_size=5
)


@st.composite
def valid_bins(draw: st.DrawFn) -> bytes:
    """A valid PKI bin, sometimes followed by erased flash like a partition dump."""
    data = pki.build((kind, content, None) for kind, content in draw(pki_contents))
    return data + b"\xff" * draw(st.sampled_from([0, 0, 3, 64]))


# -- PKI bin ---------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=128))
def test_pki_parse_random_bytes(data: bytes) -> None:
    only_atflash_errors(lambda: pki.parse(data, source="fuzz.bin"), FormatError)


@FAST
@given(valid_bins().flatmap(mutated))
def test_pki_parse_mutated_bins(data: bytes) -> None:
    result = only_atflash_errors(lambda: pki.parse(data), FormatError)
    if isinstance(result, pki.PkiBin):
        # Whatever parses describes bytes that are really there.
        assert result.size <= len(data)
        assert all(len(item.content) <= pki.MAX_CONTENT for item in result.items)


@FAST
@given(valid_bins())
def test_pki_round_trip(data: bytes) -> None:
    parsed = pki.parse(data)
    assert pki.encode(parsed) == data[: parsed.size]


@FAST
@given(st.binary(max_size=64), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF))
def test_pki_parse_lying_header(body: bytes, count: int, length: int) -> None:
    """A header whose counts claim more (or less) than the body holds."""
    data = pki.HEADER.pack(pki.MAGIC, count, length) + body
    only_atflash_errors(lambda: pki.parse(data), FormatError)


# -- partition table -------------------------------------------------------------------

VALID_TABLES = [
    encode_table(SHIPPED.partitions) + b"\xff" * 64,
    encode_table(SHIPPED.partitions, with_md5=False) + b"\xff" * 32,
    encode_table(find_profile("esp32c3").partitions[:3]) + b"\xff" * 32,
]


@FAST
@given(st.binary(max_size=200))
def test_parse_table_random_bytes(data: bytes) -> None:
    only_atflash_errors(lambda: parse_table(data, source="fuzz"), FormatError)


@FAST
@given(st.sampled_from(VALID_TABLES).flatmap(mutated))
def test_parse_table_mutated(data: bytes) -> None:
    result = only_atflash_errors(lambda: parse_table(data), FormatError)
    if isinstance(result, tuple):
        assert all(isinstance(p, Partition) and p.name.isprintable() for p in result)


@FAST
@given(
    st.lists(
        st.tuples(
            st.binary(min_size=ENTRY.size - 16, max_size=ENTRY.size - 16),
            st.binary(max_size=16),
        ),
        max_size=4,
    )
)
def test_parse_table_entries_with_any_label(entries: list[tuple[bytes, bytes]]) -> None:
    """Well-framed entries whose numbers and labels are arbitrary."""
    data = b"".join(b"\xaa\x50" + head[2:] + label.ljust(16, b"\x00") for head, label in entries)
    only_atflash_errors(lambda: parse_table(data + b"\xff" * 32), FormatError)


# -- at_customize.csv ------------------------------------------------------------------

VALID_CSV = """\
# Name, Type, SubType, Offset, Size
ble_data, 0x40, 1, 0x21000, 12K
server_cert, 0x40, 2, 0x24000, 8K
client_cert, 0x40, 5, , 0x2000
fatfs, data, fat, 0x70000, 576K
"""
CSV_TOKENS = st.sampled_from(
    ["", " ", ",", "#", "0x", "0X1F", "08", "010", "8K", "1M", "K", "-1", "data", "app",
     "ota_3", "ota_", "fat", "0x40", '"', "\n", "\r", "\x00", "é", "99999999999999999999",
     "0x2000", "name_with_a_very_long_label"]
)  # fmt: skip


@FAST
@given(st.text(max_size=120))
def test_parse_csv_random_text(text: str) -> None:
    only_atflash_errors(lambda: csvtable.parse_csv(text, source="fuzz.csv"), ProfileError)


@FAST
@given(st.lists(CSV_TOKENS, max_size=30).map("".join))
def test_parse_csv_token_soup(text: str) -> None:
    only_atflash_errors(lambda: csvtable.parse_csv(text, source="fuzz.csv"), ProfileError)


@FAST
@given(st.integers(0, len(VALID_CSV)), st.lists(CSV_TOKENS, min_size=1, max_size=4))
def test_parse_csv_mutated(where: int, inserted: list[str]) -> None:
    text = VALID_CSV[:where] + "".join(inserted) + VALID_CSV[where:]
    only_atflash_errors(lambda: csvtable.parse_csv(text, source="fuzz.csv"), ProfileError)


@pytest.mark.parametrize("number", ["08", "010", "0009", "00K"])
def test_csv_decimals_with_leading_zeros_are_refused(number: str) -> None:
    """esp-idf refuses them too (int(x, 0)); before the fix, int() leaked ValueError."""
    with pytest.raises(ProfileError, match="is not a number"):
        csvtable.parse_number(number, what="size", where="t")


@pytest.mark.parametrize(("number", "value"), [("0", 0), ("0x0", 0), ("10", 10), ("0X1fK", 31744)])
def test_csv_numbers(number: str, value: int) -> None:
    assert csvtable.parse_number(number, what="size", where="t") == value


# -- profile TOML ----------------------------------------------------------------------

VALID_TOML = (Path(__file__).resolve().parents[2] / "profiles" / "esp32.toml").read_text()
TOML_VALUES = st.sampled_from(
    ['"x"', "0", "-1", "0x1000", "1.5", "true", "[]", "[1]", '["a"]', "{}", "{a = 1}",
     '"cert"', '"nope"', "0xFFFFFFFFFFFF", '""', '"' + "n" * 20 + '"', "[[]]", "[{}]"]
)  # fmt: skip
TOML_KEYS = st.sampled_from(
    ["name", "chip", "flash_size", "flash_mode", "flash_freq", "at_customize_offset",
     "aliases", "default", "partitions", "description"]
)  # fmt: skip
PART_KEYS = st.sampled_from(["name", "type", "subtype", "offset", "size", "pki"])


@pytest.fixture(scope="module")
def toml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("toml")


def load_toml(directory: Path, text: str) -> object:
    path = directory / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    return only_atflash_errors(lambda: load_profile_file(path))


@SLOW
@given(st.text(max_size=200))
def test_profile_random_text(toml_dir: Path, text: str) -> None:
    load_toml(toml_dir, text)


@SLOW
@given(st.lists(st.tuples(TOML_KEYS, TOML_VALUES), max_size=5))
def test_profile_top_level_fields_replaced(toml_dir: Path, edits: list[tuple[str, str]]) -> None:
    head, sep, tail = VALID_TOML.partition("[[partitions]]")
    lines = [ln for ln in head.splitlines() if ln.split("=")[0].strip() not in dict(edits)]
    text = "\n".join([*lines, *(f"{k} = {v}" for k, v in edits), sep + tail])
    load_toml(toml_dir, text)


@SLOW
@given(st.integers(0, 15), PART_KEYS, TOML_VALUES | st.just(None))
def test_profile_partition_field_replaced(
    toml_dir: Path, index: int, key: str, value: str | None
) -> None:
    """One field of one partition changed to any value, or removed."""
    chunks = VALID_TOML.split("[[partitions]]")
    assume(index < len(chunks) - 1)
    chunk = chunks[index + 1]
    kept = [ln for ln in chunk.splitlines() if ln.split("=")[0].strip() != key]
    if value is not None:
        kept.insert(1, f"{key} = {value}")
    chunks[index + 1] = "\n".join(kept) + "\n"
    load_toml(toml_dir, "[[partitions]]".join(chunks))


@pytest.mark.parametrize(
    "partitions",
    ["partitions = [1]", 'partitions = ["x"]', "partitions = [[1]]", "partitions = 5",
     'partitions = "abc"', "partitions = {a = 1}"],
)  # fmt: skip
def test_profile_partitions_of_the_wrong_shape(toml_dir: Path, partitions: str) -> None:
    head = VALID_TOML.partition("[[partitions]]")[0]
    result = load_toml(toml_dir, head + partitions + "\n")
    assert isinstance(result, AtflashError)


# -- credentials -----------------------------------------------------------------------

VALID_CREDS = [CERT, KEY, CA, CERT + KEY]


def check_creds(data: bytes) -> None:
    only_atflash_errors(lambda: load_certificate(data, source="fuzz.crt"))
    only_atflash_errors(lambda: load_private_key(data, source="fuzz.key"))
    info = describe_credential(data, source="fuzz")  # never raises
    assert isinstance(info, ItemInfo)
    for kind in ("cert", "key", "ca"):
        only_atflash_errors(lambda k=kind: validate_item(k, data, source="fuzz"))  # type: ignore[misc]


@FAST
@given(st.binary(max_size=200))
def test_creds_random_bytes(data: bytes) -> None:
    check_creds(data)


@SLOW
@given(st.sampled_from(VALID_CREDS).flatmap(mutated))
def test_creds_mutated_files(data: bytes) -> None:
    check_creds(data)


PEM_PIECES = st.sampled_from(
    [b"-----BEGIN CERTIFICATE-----\n", b"-----END CERTIFICATE-----\n",
     b"-----BEGIN PRIVATE KEY-----\n", b"-----END PRIVATE KEY-----\n",
     b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n", b"-----BEGIN RSA PRIVATE KEY-----\n",
     b"-----END RSA PRIVATE KEY-----\n", b"Proc-Type: 4,ENCRYPTED\n", b"-----BEGIN  -----\n",
     b"MIIB\n", b"AAAA\n", b"====\n", b"\x00", b"\xff\xfe", b"\n", b"-----BEGIN X509 CRL-----\n",
     b"0\x82\x01\x00", b"\x30\x80"]
)  # fmt: skip


@FAST
@given(st.lists(PEM_PIECES, max_size=10).map(b"".join))
def test_creds_pem_soup(data: bytes) -> None:
    check_creds(data)


@SLOW
@given(st.lists(st.tuples(st.sampled_from([CERT, KEY]), st.binary(max_size=6)), max_size=3))
def test_pairing_never_leaks_other_errors(pairs: list[tuple[bytes, bytes]]) -> None:
    certs = [(f"c{i}", CERT + junk) for i, (_c, junk) in enumerate(pairs)]
    keys = [(f"k{i}", content) for i, (content, _j) in enumerate(pairs)]
    only_atflash_errors(lambda: check_pairs(certs, keys))


# -- inspect ---------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=200), st.booleans())
def test_inspect_random_bytes(data: bytes, strict: bool) -> None:
    result = only_atflash_errors(lambda: inspect.inspect_bytes(data, source="fuzz", strict=strict))
    if isinstance(result, inspect.InspectReport):
        result.to_json()


@FAST
@given(mutated(CERT) | mutated(KEY) | mutated(CA))
def test_inspect_strict_mutated_credential_files(data: bytes) -> None:
    """A named file: described, or refused in one line; read (not strict) never refuses it."""
    only_atflash_errors(lambda: inspect.inspect_bytes(data, source="fuzz", strict=True))
    if not pki.is_pki_bin(data):
        inspect.inspect_bytes(data, source="fuzz")


@SLOW
@given(
    st.lists(
        st.tuples(st.sampled_from(["ca", "cert", "key"]), st.sampled_from(VALID_CREDS)), max_size=3
    )
    .map(lambda items: pki.build((k, c, None) for k, c in items))
    .flatmap(mutated)
)
def test_inspect_mutated_bins_of_real_credentials(data: bytes) -> None:
    result = only_atflash_errors(lambda: inspect.inspect_bytes(data, source="fuzz"))
    if isinstance(result, inspect.InspectReport):
        result.to_json()


# -- file patterns ---------------------------------------------------------------------


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def pattern_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("patterns")
    for name in ("a.crt", "b_2.crt", "b_10.crt", "c[1].pem", "k.key"):
        (root / name).write_text("x")
    (root / "sub").mkdir()
    (root / "sub" / "d.crt").write_text("x")
    return root


# No "/" or "..": patterns stay inside the folder instead of walking the disk.
PATTERN_TEXT = (
    st.lists(st.sampled_from([*"abck_12*?[]!-.\\ \x00é", "sub/", "**", "x" * 300]), max_size=12)
    .map("".join)
    .filter(lambda p: ".." not in p)
)


@FAST
@given(st.lists(PATTERN_TEXT, max_size=3))
def test_expand_any_pattern(pattern_dir: Path, patterns: list[str]) -> None:
    with chdir(pattern_dir):
        result = only_atflash_errors(lambda: files.expand(patterns))
    if isinstance(result, list):
        # Every pattern gave at least one name, and no directories came out of a glob.
        assert len(result) >= len(patterns)
        assert not any((pattern_dir / p).is_dir() for p in result if files.is_glob(p))
