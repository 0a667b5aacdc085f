"""The AT client's pure parts: tokenizing replies, the partition table, the MAC.

The fuzz tests feed arbitrary bytes in arbitrary pieces: the only exception
allowed out is atflash's own :class:`AtError`.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atflash.backends.at.client import AtConnectOptions
from atflash.backends.at.reply import (
    ReplyReader,
    Token,
    is_unsolicited,
    parse_mac,
    parse_partition_line,
    parse_partitions,
    quote,
)
from atflash.errors import AtError, AtflashError, InputError
from atflash.layout.model import Partition
from tests.support.fuzzing import examples


def tokens(
    data: bytes, *, pieces: list[int] | None = None, read_reply: bool = False
) -> list[Token]:
    """Every token of ``data``, fed in the given piece sizes (or byte by byte)."""
    reader = ReplyReader()
    out: list[Token] = []
    pos = 0
    sizes = iter(pieces or [])
    while pos < len(data):
        size = max(1, next(sizes, 1))
        reader.feed(data[pos : pos + size])
        pos += size
        while (token := reader.next_token(read_reply=read_reply)) is not None:
            out.append(token)
    return out


def lines(toks: list[Token]) -> list[str]:
    return [t.text for t in toks if t.kind == "line"]


# -- tokenizing -----------------------------------------------------------------------


def test_lines_echo_and_blank_lines() -> None:
    toks = tokens(b"AT+GMR\r\r\n\r\nAT version:2.4.0.0\r\nOK\r\n")
    assert lines(toks) == ["AT+GMR", "", "AT version:2.4.0.0", "OK"]


def test_prompt_ends_no_line() -> None:
    toks = tokens(b'AT+SYSFLASH=1,"client_ca",0,4\r\n\r\n>')
    assert [t.kind for t in toks] == ["line", "line", "prompt"]


def test_read_reply_keeps_line_ends_inside_data() -> None:
    data = b"ab\r\nOK\r\n\xff\x00"
    reply = b"+SYSFLASH:%d," % len(data) + data + b"\r\nOK\r\n"
    toks = tokens(reply, read_reply=True)
    assert [t.kind for t in toks] == ["data", "line", "line"]
    assert toks[0].data == data and lines(toks) == ["", "OK"]


def test_table_line_is_a_line_when_no_read_is_expected() -> None:
    toks = tokens(b'+SYSFLASH:"ble_data",64,1,0x21000,0x3000\r\n')
    assert lines(toks) == ['+SYSFLASH:"ble_data",64,1,0x21000,0x3000']


@pytest.mark.parametrize(
    "header",
    [b"+IPD,13", b"+IPD,0,13", b'+IPD,13,"192.168.1.2",8080', b'+IPD,1,13,"10.0.0.1",443'],
)
def test_ipd_payload_is_skipped_whole(header: bytes) -> None:
    toks = tokens(header + b":\r\nOK\r\nERROR\r\nOK\r\n", read_reply=True)
    assert [t.kind for t in toks] == ["ipd", "line"]
    assert toks[0].text == header.decode() and toks[0].data == b""
    assert lines(toks) == ["OK"]


def test_passive_ipd_notice_is_a_line() -> None:
    assert lines(tokens(b"+IPD,0,100\r\nOK\r\n")) == ["+IPD,0,100", "OK"]


def test_malformed_read_header_is_an_at_error() -> None:
    with pytest.raises(AtError, match="length is not a number"):
        tokens(b"+SYSFLASH:x1,abcd\r\nOK\r\n", read_reply=True)


def test_endless_line_is_an_at_error() -> None:
    with pytest.raises(AtError, match="without a line end"):
        tokens(b"x" * 5000, pieces=[5000])


def test_reader_asks_for_the_rest_of_a_payload() -> None:
    reader = ReplyReader()
    reader.feed(b"+SYSFLASH:100,abc")
    assert reader.next_token(read_reply=True) is None
    assert reader.wanted == 97


# -- unsolicited messages -----------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    ["ready", "WIFI GOT IP", "WIFI DISCONNECT", "0,CONNECT", "+IPD,0,4", '+STA_CONNECTED:"a"'],
)
def test_unsolicited(line: str) -> None:
    assert is_unsolicited(line)


@pytest.mark.parametrize("line", ["OK", "+SYSFLASH:1,2", '+CIPSTAMAC:"aa"', "AT version:2"])
def test_not_unsolicited(line: str) -> None:
    assert not is_unsolicited(line)


# -- the table and the MAC -----------------------------------------------------------------


def test_partition_line_as_the_firmware_prints_it() -> None:
    part = parse_partition_line('+SYSFLASH:"client_cert",64,5,0x2a000,0x2000')
    assert part == Partition("client_cert", 0x40, 5, 0x2A000, 0x2000, "cert")


def test_partition_line_bare_name_and_decimal() -> None:
    part = parse_partition_line("+SYSFLASH:mqtt_key, 64, 13, 233472, 8192")
    assert part == Partition("mqtt_key", 64, 13, 0x39000, 0x2000, "key")
    assert parse_partition_line("+SYSFLASH:fatfs,1,129,0x70000,0x90000").pki is None


@pytest.mark.parametrize(
    "line",
    [
        "+SYSFLASH:",
        '+SYSFLASH:"a",1,2,3',
        '+SYSFLASH:"",64,1,0,4096',
        '+SYSFLASH:"a",999,1,0,4096',
        '+SYSFLASH:"a",64,1,0x100000000,4096',
        '+SYSFLASH:"a",64,1,zz,4096',
    ],
)
def test_bad_partition_lines(line: str) -> None:
    with pytest.raises(AtError, match=r"AT\+SYSFLASH\?"):
        parse_partition_line(line)


def test_duplicate_partition_refused() -> None:
    line = '+SYSFLASH:"a",64,1,0x1000,0x1000'
    with pytest.raises(AtError, match="listed twice"):
        parse_partitions([line, line])


def test_parse_partitions_ignores_other_lines() -> None:
    table = parse_partitions(["WIFI GOT IP", '+SYSFLASH:"mfg_nvs",1,2,0x21000,0x1c000'])
    assert [p.name for p in table] == ["mfg_nvs"]
    assert not any(p.pki for p in table)


def test_mac() -> None:
    assert parse_mac(['+CIPSTAMAC:"24:0A:C4:00:01:02"']) == "24:0a:c4:00:01:02"
    assert parse_mac(["+CIPSTAMAC:24:0a:c4:00:01:02"]) == "24:0a:c4:00:01:02"
    assert parse_mac(['+CIPSTAMAC:"nonsense"']) is None


def test_quote_refuses_names_that_break_the_command() -> None:
    assert quote("client_ca") == '"client_ca"'
    for bad in ('a"b', "a,b", "", "a\r\n"):
        with pytest.raises(InputError):
            quote(bad)


def test_connect_options_validated() -> None:
    with pytest.raises(InputError, match="multiple of 4"):
        AtConnectOptions("socket://x:1", chunk_size=1022)
    with pytest.raises(InputError):
        AtConnectOptions("socket://x:1", timeout=0)


def test_errors_are_one_line_and_name_port_and_command() -> None:
    exc = AtError("/dev/ttyUSB0", "AT+GMR", "firmware answered ERROR", lines=("x", "ERROR"))
    assert str(exc) == "/dev/ttyUSB0: AT+GMR: firmware answered ERROR (last lines: x | ERROR)"


# -- fuzz ---------------------------------------------------------------------------------------


@settings(max_examples=examples(300), deadline=None)
@given(
    data=st.binary(max_size=600),
    pieces=st.lists(st.integers(1, 64), max_size=40),
    read_reply=st.booleans(),
)
def test_reader_fuzz_raises_only_atflash_errors(
    data: bytes, pieces: list[int], read_reply: bool
) -> None:
    try:
        toks = tokens(data, pieces=pieces, read_reply=read_reply)
    except AtflashError:
        return
    for token in toks:
        assert token.kind in ("line", "prompt", "data", "ipd")
        assert "\n" not in token.text


@settings(max_examples=examples(200), deadline=None)
@given(
    payload=st.binary(max_size=300),
    noise=st.sampled_from([b"", b"WIFI GOT IP\r\n", b"+IPD,0,3:\r\n>\r\n"]),
    pieces=st.lists(st.integers(1, 50), max_size=30),
)
def test_read_reply_roundtrip(payload: bytes, noise: bytes, pieces: list[int]) -> None:
    """Whatever the data holds and however it is cut, the reply gives it back exactly."""
    stream = noise + b"+SYSFLASH:%d," % len(payload) + payload + b"\r\n" + noise + b"OK\r\n"
    toks = tokens(stream, pieces=pieces, read_reply=True)
    assert [t.data for t in toks if t.kind == "data"] == [payload]
    assert lines(toks)[-1] == "OK"


@settings(max_examples=examples(300), deadline=None)
@given(st.text(max_size=80))
def test_partition_line_fuzz(text: str) -> None:
    try:
        part = parse_partition_line("+SYSFLASH:" + text)
    except AtflashError:
        return
    assert part.name and 0 <= part.offset < 1 << 32


@settings(max_examples=examples(100), deadline=None)
@given(
    name=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='",'),
        min_size=1,
        max_size=16,
    ),
    numbers=st.tuples(
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
    ),
    quoted=st.booleans(),
    hexa=st.booleans(),
)
def test_partition_line_roundtrip(
    name: str, numbers: tuple[int, int, int, int], quoted: bool, hexa: bool
) -> None:
    ptype, subtype, offset, size = numbers
    shown = f'"{name}"' if quoted else name
    fmt = (lambda n: f"{n:#x}") if hexa else str
    line = f"+SYSFLASH:{shown},{ptype},{subtype},{fmt(offset)},{fmt(size)}"
    part = parse_partition_line(line)
    assert (part.name, part.type, part.subtype, part.offset, part.size) == (
        name,
        ptype,
        subtype,
        offset,
        size,
    )


@pytest.mark.skipif(not hasattr(__import__("os"), "openpty"), reason="termios is POSIX only")
def test_a_pty_whose_peer_vanished_is_a_lost_connection_not_a_crash() -> None:
    """pyserial lets termios.error escape flush() on a dead PTY; it must become an AtError."""
    import termios

    from atflash.backends.at.client import AtClient

    class DeadPty:
        def write(self, data: bytes) -> int:
            return len(data)

        def flush(self) -> None:
            raise termios.error(5, "Input/output error")

    client = AtClient(AtConnectOptions("/dev/pts/99"))
    client._ser = DeadPty()
    with pytest.raises(AtError, match="/dev/pts/99"):
        client.command("AT")
