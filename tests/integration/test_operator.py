"""The operator's terminal and the audit trail, through the real CLI against mock boards.

Terminal behaviour is checked on a real pseudo-terminal (the command in its
own process, 80 columns); piped behaviour through click's CliRunner (not a
terminal). What a run records is read back from the report and the log.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console

from atflash.cli import cli
from atflash.cli.app import COMMANDS
from atflash.cli.live import BatchView, layout_of, summary_table
from atflash.cli.render import profiles_table
from atflash.content import pki
from atflash.content.nvs import NvsItem, build_nvs
from atflash.errors import EXIT_DEVICE_ERROR, EXIT_MISMATCH, EXIT_USER_ERROR
from atflash.events import Event
from atflash.layout.profiles import builtin_profiles, find_profile
from atflash.results import BoardResult, PartitionResult, PartitionStatus
from atflash.sim.flash import board_flash, flash_image
from atflash.sim.rom import MockBoard, distinct_mac
from tests.support.cli import run
from tools.strictrom import start_strict

CONNECT = ["--before", "no-reset", "--after", "no-reset", "--connect-attempts", "1"]
TERMINAL_TIMEOUT = 90.0
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")
_COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7]|4[0-8])[;m]")


def files(raw: Path, n: str = "00") -> list[str]:
    return ["client_cert", str(raw / "client_cert" / f"client_cert_{n}.crt"),
            "client_key", str(raw / "client_key" / f"client_key_{n}.key")]  # fmt: skip


def _board(tmp_path: Path) -> MockBoard:
    """An ESP32 mock with its own MAC and ESP-AT's partition table."""
    return start_strict("esp32", mac=distinct_mac(), flash=board_flash("esp32"))


@pytest.fixture
def board(tmp_path: Path) -> Iterator[MockBoard]:
    started = _board(tmp_path)
    yield started
    started.stop()


@pytest.fixture
def two_boards(tmp_path: Path) -> Iterator[list[MockBoard]]:
    started = [_board(tmp_path), _board(tmp_path)]
    yield started
    for one in started:
        one.stop()


# -- a real terminal ----------------------------------------------------------------


def on_terminal(args: list[str], **env: str) -> tuple[int, str]:
    """Run ``atflash ARGS`` with stdout and stderr on a pseudo-terminal of 80 columns."""
    if sys.platform == "win32":  # pragma: no cover
        pytest.skip("needs a POSIX pseudo-terminal")
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    environ.update({"COLUMNS": "80", "LINES": "40", "TERM": "xterm-256color", **env})
    proc = subprocess.Popen(
        [sys.executable, "-m", "atflash", *args],
        stdin=slave, stdout=slave, stderr=slave, env=environ, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + TERMINAL_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            out += chunk
        else:
            proc.kill()
            raise AssertionError(f"atflash did not end within {TERMINAL_TIMEOUT} s")
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
    return code, out.decode("utf-8", "replace")


def visible_lines(stream: str) -> list[str]:
    """Every stretch of text the terminal shows, between line feeds and carriage returns."""
    return [line for line in re.split(r"\r\n|\n|\r", _ESCAPES.sub("", stream)) if line.strip()]


def test_one_board_on_a_terminal_gets_the_live_view_then_one_result(
    board: MockBoard, raw: Path
) -> None:
    code, stream = on_terminal(
        ["write", "--chip", "esp32", "--port", board.url, *CONNECT, *files(raw)]
    )
    assert code == 0, stream
    lines = visible_lines(stream)
    assert any(line.strip().startswith("atflash write") for line in lines), stream  # the live view
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert any(board.url in line for line in lines)  # the port whole, never cut
    assert "Writing at" not in stream and "Hash of data" not in stream  # esptool's own words
    assert _COLOUR.search(stream), "a terminal gets colour"
    # The result, once, with the numbers the steps use: credential bytes of partition bytes.
    results = [line for line in lines if line.lstrip().startswith("client_cert  0x2a000")]
    assert len(results) == 1 and re.search(r"\d+ of 8192 bytes +written", results[0]), lines
    assert lines[-1].startswith("OK in ")


def test_no_color_and_a_batch_summary_at_80_columns(two_boards: list[MockBoard], raw: Path) -> None:
    ports = [arg for b in two_boards for arg in ("--port", b.url)]
    code, stream = on_terminal(
        ["write", "--chip", "esp32", *ports, *CONNECT, *files(raw)], NO_COLOR="1"
    )
    assert code == 0, stream
    assert not _COLOUR.search(stream), "NO_COLOR: no colour"
    lines = visible_lines(stream)
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    for one in two_boards:
        assert any(one.url in line for line in lines)
        assert any(str(one.mac) in line for line in lines)
    assert "2 board(s)" in stream and "Writing at" not in stream


# -- piped, quiet, verbose -------------------------------------------------------------


def test_piped_one_board_prints_its_result_once_with_agreeing_numbers(
    board: MockBoard, raw: Path
) -> None:
    result = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, *files(raw))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # the steps would only repeat the result
    assert "\x1b[" not in result.stdout  # not a terminal: no colour, no cursor games
    as_json = json.loads(
        run("verify", "--port", board.url, *CONNECT, "--json", *files(raw)).stdout
    )  # --chip defaults to auto, as in esptool
    sizes = {p["name"]: (p["bin_size"], p["size"]) for p in as_json["partitions"]}
    for name, (payload, size) in sizes.items():
        assert re.search(rf"{name} +0x[0-9a-f]+ +{payload} of {size} bytes +written", result.stdout)


def test_verbose_shows_each_step_by_partition_and_quiet_only_the_summary(
    two_boards: list[MockBoard], raw: Path
) -> None:
    one = two_boards[0]
    loud = run("write", "--port", one.url, *CONNECT, "--no-skip-unchanged", *files(raw), "-v")
    assert loud.exit_code == 0, loud.output
    steps = loud.stderr.splitlines()
    assert all(line.startswith(f"{one.url}: ") for line in steps), steps
    assert any("connecting" in line for line in steps)
    assert any("board tables match layout" in line for line in steps)
    progress = [line for line in steps if re.search(r" (writing|reading) \d+%", line)]
    assert progress and all(
        re.match(rf"{re.escape(one.url)}: \S+ (writing|reading) \d+%", line) for line in progress
    )
    assert any(re.search(r": client_\w+ writing 100%", line) for line in progress), progress
    assert "Writing at" not in loud.output  # esptool's progress text never shows
    also_before = run("-v", "write", "--port", one.url, *CONNECT, *files(raw))
    assert "connecting" in also_before.stderr
    ports = [arg for b in two_boards for arg in ("--port", b.url)]
    quiet = run("write", *ports, *CONNECT, *files(raw), "-q")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    assert "2 board(s)" in quiet.stdout


def test_quiet_one_board_is_one_line_ok_or_failed(board: MockBoard, raw: Path) -> None:
    written = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, *files(raw), "-q")
    assert written.exit_code == 0, written.output
    assert written.stderr == ""
    assert re.fullmatch(r"OK in \d+\.\d s\n", written.stdout), written.stdout
    # A mismatch has no error of its own: the one line names what differs.
    other = run("-q", "verify", "--chip", "esp32", "--port", board.url, *CONNECT, *files(raw, "01"))
    assert other.exit_code == EXIT_MISMATCH, other.output
    assert other.stderr == ""
    assert re.fullmatch(
        r"FAILED in \d+\.\d s: client_cert differs, client_key differs\n", other.stdout
    ), other.stdout


def test_quiet_batch_prints_failed_boards_and_the_count_line(
    board: MockBoard, dead_port: str, raw: Path
) -> None:
    result = run("write", "--chip", "esp32", "--port", board.url, "--port", dead_port,
                 *CONNECT, *files(raw), "-q")  # fmt: skip
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    assert result.stderr == ""
    failed, count = result.stdout.splitlines()  # no table
    assert failed.startswith(f"{dead_port}: failed: ")
    assert re.fullmatch(r"2 board\(s\) in \d+\.\d s: 1 ok, 1 failed, 0 skipped", count), count


def test_quiet_offline_commands_print_their_one_summary_line(
    board: MockBoard, raw: Path, tmp_path: Path, credential_pool: Path
) -> None:
    cert, ca = raw / "client_cert" / "client_cert_00.crt", raw / "client_ca" / "client_ca_00.crt"
    image = tmp_path / "factory.bin"
    image.write_bytes(flash_image(board_flash("esp32"), 4 * 1024 * 1024))
    bench = tmp_path / "bench.toml"
    bench.write_text(f'chip = "esp32"\n[partitions]\nclient_cert = "{cert}"\n')
    pool = tmp_path / "pool"
    for name in ("0001", "0002", "0003"):
        shutil.copytree(credential_pool / name, pool / name)
    out = tmp_path / "out"
    commands = {
        "build": ["build", "--chip", "esp32", "-o", out, "client_cert", cert, "client_ca", ca],
        "generate-bin": ["generate-bin", "-b", out / "ca.bin", "ca", ca, "cert", cert],
        "parse-bin": ["parse-bin", "-b", out / "ca.bin", "-o", out / "items"],
        "patch-image": ["patch-image", image, "-o", out / "p.bin", "client_cert", cert,
                        "client_ca", ca],
        "check": ["check", "--config", bench],
        "pool check": ["pool", "check", pool, "--chip", "esp32"],
        "read -o": ["read", "--chip", "esp32", "--port", board.url, *CONNECT,
                    "-o", out / "dump.bin", "client_ca"],
        "build --pool": ["build", "--chip", "esp32", "--pool", pool,
                         "-o", out / "devices"],
    }  # fmt: skip
    for name, args in commands.items():
        loud = run(*map(str, args))
        quiet = run(*map(str, args), "-q")
        assert quiet.exit_code == 0 == loud.exit_code, (name, quiet.output)
        assert quiet.stderr == "", (name, quiet.stderr)
        assert len(quiet.stdout.splitlines()) == 1, (name, quiet.stdout)
        assert len(loud.output.splitlines()) > 1 or name.startswith(("generate", "pool")), name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_terminal_options_are_taken_after_every_command(name: str) -> None:
    result = run(name, "--debug", "-q", "-v", "--help")
    assert result.exit_code == 0, result.output
    assert "--quiet" in result.stdout and "--debug" in result.stdout


def test_debug_shows_a_traceback_only_for_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    user_error = CliRunner().invoke(cli, ["inspect", str(tmp_path / "absent.crt"), "--debug"])
    assert user_error.exit_code == EXIT_USER_ERROR
    assert user_error.stderr.startswith("atflash: error: ") and "Traceback" not in user_error.output

    def broken() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("atflash.cli.offline.builtin_profiles", broken)
    plain = CliRunner().invoke(cli, ["profiles"])
    assert plain.exit_code == 1 and "internal error: RuntimeError: a bug" in plain.stderr
    debug = CliRunner().invoke(cli, ["profiles", "--debug"])
    assert isinstance(debug.exception, RuntimeError)  # raised: the traceback is shown


# -- 80 columns ------------------------------------------------------------------------


def rendered(renderable: object, width: int = 80) -> list[str]:
    out = StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue().splitlines()


def test_live_view_summary_and_profiles_fit_80_columns_without_cutting_identities() -> None:
    port = "socket://127.0.0.1:44017"
    view = BatchView([port, "/dev/serial/by-path/pci-0:14.0-usb-0:1"], live=False, lines=False)
    view.layout = layout_of([find_profile("esp32")])
    view(Event("connected", port, "ESP32, MAC 24:0a:c4:00:00:01"))
    view(Event("writing", port, "8192 bytes at 0x20000", partition="at_customize",
               status=PartitionStatus.POSSIBLY_PARTIAL))  # fmt: skip
    lines = rendered(view.renderable())
    assert any(line.split()[:1] == ["board"] for line in lines)  # the narrow layout
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    for identity in (
        port,
        "/dev/serial/by-path/pci-0:14.0-usb-0:1",
        "24:0a:c4:00:00:01",
        "at_customize",
    ):
        assert identity in text, text

    parts = [PartitionResult(n, 0, 8192, 600, "x", PartitionStatus.POSSIBLY_PARTIAL)
             for n in ("client_cert", "client_key", "at_customize")]  # fmt: skip
    results = [BoardResult(port, "24:0a:c4:00:00:01", "esp32", partitions=parts, attempts=2)]
    lines = rendered(summary_table(results))
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    for identity in (port, "24:0a:c4:00:00:01", "client_cert", "at_customize", "possibly-partial"):
        assert identity in text, text

    profiles = builtin_profiles()
    lines = rendered(profiles_table(profiles))
    assert all(len(line) <= 80 for line in lines)
    words = {word for line in lines for word in line.split()}
    for profile in profiles:
        assert profile.name in words
        assert set(profile.aliases) <= words


@pytest.mark.parametrize(
    "port",
    [
        "/dev/serial/by-path/pci-0000:00:14.0-usb-0:2:1.0-port0",
        "/dev/serial/by-id/usb-Silicon_Labs_CP2102N_USB_to_UART_Bridge_Controller_0001-if00-port0",
    ],
)
def test_long_port_names_fold_rather_than_being_cut(port: str) -> None:
    view = BatchView([port], live=False, lines=False)
    view(Event("connected", port, "ESP32, MAC 24:0a:c4:00:00:01"))
    parts = [PartitionResult("client_cert", 0, 8192, 600, "x", PartitionStatus.WRITTEN)]
    summary = summary_table([BoardResult(port, "24:0a:c4:00:00:01", "esp32", partitions=parts)])
    for renderable in (view.renderable(), summary):
        lines = rendered(renderable)
        assert all(len(line) <= 80 for line in lines)
        assert "…" not in "".join(lines)
        first_column = "".join(line.split()[0] for line in lines if line.strip())
        assert port in first_column  # whole, folded over lines if it must


def test_profiles_command_honours_columns() -> None:
    result = run("profiles", env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    assert "esp32c2-2mb-no-ota-g2-3x" in result.stdout


def test_esptool_progress_is_counted_in_the_partition_it_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    view = BatchView(["p"], live=False, layout=layout_of([find_profile("esp32")]))
    with view:
        for name in ("client_cert", "client_key"):  # one esptool image over both
            view(
                Event("writing", "p", "…", partition=name, status=PartitionStatus.POSSIBLY_PARTIAL)
            )
        for address in (0x2B000, 0x2C000, 0x2D000, 0x2E000):
            view(Event("progress", "p", f"Writing at {address:#010x}", done=1, total=9))
    lines = [line for line in capsys.readouterr().err.splitlines() if "%" in line]
    assert lines == [
        "p: client_cert writing 50% (4096 of 8192 bytes)",
        "p: client_cert writing 100% (8192 of 8192 bytes)",
        "p: client_key writing 50% (4096 of 8192 bytes)",
        "p: client_key writing 100% (8192 of 8192 bytes)",
    ]


# -- environment and spellings ---------------------------------------------------------


def test_environment_defaults_and_esptools_own_variables(board: MockBoard, raw: Path) -> None:
    help_text = run("write", "--help").stdout
    for name in ("ATFLASH_PORT", "ATFLASH_CHIP", "ATFLASH_BAUD", "ATFLASH_LOG"):
        assert name in help_text
    env = {"ATFLASH_PORT": board.url, "ATFLASH_CHIP": "esp32", "ATFLASH_BEFORE": "no_reset",
           "ATFLASH_AFTER": "no_reset"}  # fmt: skip
    by_env = run("write", "--json", *files(raw), env=env)
    assert by_env.exit_code == 0, by_env.output
    assert json.loads(by_env.stdout)["port"] == board.url
    esptool_env = {"ESPTOOL_PORT": board.url, "ESPTOOL_BAUD": "115200"}
    spelled = ["--before", "no_reset", "--after", "no_reset"]  # esptool's older spelling
    by_esptool = run("verify", *spelled, *files(raw), env=esptool_env)
    assert by_esptool.exit_code == 0, by_esptool.output
    bad_baud = run("verify", *spelled, *files(raw), env={**esptool_env, "ESPTOOL_BAUD": "fast"})
    assert bad_baud.exit_code == EXIT_USER_ERROR and "ESPTOOL_BAUD" in bad_baud.stderr
    typed = run("verify", "--port", board.url, *spelled, "--baud", "115200", *files(raw),
                env={"ESPTOOL_BAUD": "fast"})  # fmt: skip
    assert typed.exit_code == 0, typed.output  # an atflash value wins; ESPTOOL_BAUD is not read


# -- errors and input ------------------------------------------------------------------


def test_inspect_shows_every_good_file_and_one_line_per_bad_one(raw: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xf1\xf1\x02\x00\xff\xff\x00\x00")  # PKI magic, then nonsense
    good = [
        str(raw / "client_cert" / "client_cert_00.crt"),
        str(raw / "client_ca" / "client_ca_00.crt"),
    ]
    result = CliRunner().invoke(cli, ["inspect", good[0], str(bad), good[1]])
    assert result.exit_code == EXIT_USER_ERROR
    assert good[0] in result.stdout and good[1] in result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"atflash: error: {bad}")
    as_json = CliRunner().invoke(cli, ["inspect", "--json", good[0], str(bad), good[1]])
    shown = json.loads(as_json.stdout)
    assert [entry.get("source") for entry in shown] == [good[0], str(bad), good[1]]
    assert shown[1]["exit_code"] == EXIT_USER_ERROR and "error" in shown[1]


def _inspect_inputs(raw: Path) -> dict[str, bytes]:
    """Files inspect must refuse (malformed) and files it must show (genuinely inspectable)."""
    cert_pem = (raw / "client_cert" / "client_cert_00.crt").read_bytes()
    cert_der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    key = ec.generate_private_key(ec.SECP256R1())
    nvs_image = bytearray(build_nvs([NvsItem("client_cert", "cert.0", "binary", cert_pem)], 0x3000))
    bad_header, bad_entry = bytearray(nvs_image), bytearray(nvs_image)
    bad_header[8] ^= 1  # inside the first page header's CRC span
    bad_entry[64 + 40] ^= 1  # inside the first entry's CRC span
    bin_ = pki.build([("cert", cert_pem, None)])
    return {
        # malformed: one error line each
        "empty.crt": b"",
        "unknown-block.pem": b"-----BEGIN FOO-----\nYWJj\n-----END FOO-----\n",
        "truncated.pem": cert_pem[:600],
        "truncated.der": cert_der[:300],
        "notes.txt": b"not a certificate\n",
        "bad-header.bin": b"\xf1\xf1\x02\x00\xff\xff\x00\x00",
        "bad-header-crc.nvs": bytes(bad_header),
        "bad-entry-crc.nvs": bytes(bad_entry),
        # inspectable: shown, exit 0
        "cert.der": cert_der,
        "public.pem": key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "encrypted.key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
        "damaged-item.bin": pki.build([("cert", b"not a certificate", None)]),  # a WARNING
        "good.bin": bin_,
        "mfg_nvs.bin": bytes(nvs_image),
    }


INSPECT_MALFORMED = ["empty.crt", "unknown-block.pem", "truncated.pem", "truncated.der",
                     "notes.txt", "bad-header.bin", "bad-header-crc.nvs", "bad-entry-crc.nvs"]  # fmt: skip


@pytest.mark.parametrize("name", INSPECT_MALFORMED)
def test_inspect_refuses_a_malformed_file_and_still_shows_the_others(
    raw: Path, tmp_path: Path, name: str
) -> None:
    inputs = _inspect_inputs(raw)
    for file_name, data in inputs.items():
        (tmp_path / file_name).write_bytes(data)
    good = [str(tmp_path / n) for n in inputs if n not in INSPECT_MALFORMED]
    bad = str(tmp_path / name)
    result = run("inspect", good[0], bad, *good[1:])
    assert result.exit_code == EXIT_USER_ERROR, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"atflash: error: {bad}: ")
    assert "unknown content" not in line
    for path in good:
        assert f"{path}: " in result.stdout
    alone = run("inspect", *good)
    assert alone.exit_code == 0, alone.output
    assert alone.stderr == ""
    assert "WARNING  stored as cert but holds an unknown object" in alone.stdout


def test_a_user_error_with_json_is_a_json_object_on_stdout(raw: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.crt")
    result = CliRunner().invoke(
        cli, ["write", "--port", "socket://127.0.0.1:9", "--json", "client_cert", missing]
    )
    assert result.exit_code == EXIT_USER_ERROR
    error = json.loads(result.stdout)
    assert error["exit_code"] == EXIT_USER_ERROR and missing in error["error"]
    assert len(result.stderr.splitlines()) == 1
    usage = CliRunner().invoke(cli, ["read", "--port", "x", "--baud", "0", "--json", "client_cert"])
    assert usage.exit_code == 2 and json.loads(usage.stdout)["exit_code"] == 2


def test_a_semicolon_manifest_gets_a_delimiter_hint(raw: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "devices.csv"
    cert, key = raw / "client_cert" / "client_cert_00.crt", raw / "client_key" / "client_key_00.key"
    manifest.write_text(f"mac;client_cert;client_key\n24:0a:c4:00:00:01;{cert};{key}\n")
    result = run(
        "write", "--chip", "esp32", "--port", "socket://127.0.0.1:9", "--manifest", str(manifest)
    )
    assert result.exit_code == EXIT_USER_ERROR
    assert "separates columns with ';'" in result.stderr
    bench = tmp_path / "bench.toml"
    bench.write_text('chip = "esp32"\nmanifest = "devices.csv"\n')
    checked = run("check", "--config", str(bench))
    assert checked.exit_code == EXIT_USER_ERROR and "';'" in checked.stderr


def test_every_command_speaks_json(board: MockBoard, raw: Path, tmp_path: Path) -> None:
    cert = str(raw / "client_cert" / "client_cert_00.crt")
    bench = tmp_path / "bench.toml"
    bench.write_text(f'chip = "esp32"\nlog = "log.jsonl"\n[partitions]\nclient_cert = "{cert}"\n')
    commands = [
        ["profiles"],
        ["ports", "--all"],
        ["inspect", cert],
        ["check", "--config", str(bench)],
        ["partitions", "--chip", "esp32"],
        ["partitions", "--port", board.url, *CONNECT],
        ["read", "--port", board.url, *CONNECT, "client_ca"],
        ["build", "--chip", "esp32", "-o", str(tmp_path / "out"), "client_cert", cert],
        ["generate-bin", "-b", str(tmp_path / "pki.bin"), "cert", cert],
        ["parse-bin", "-b", str(tmp_path / "pki.bin"), "-o", str(tmp_path / "parsed")],
    ]
    for args in commands:
        result = run(*args, "--json")
        assert result.exit_code == 0, (args, result.output)
        assert json.loads(result.stdout) is not None, args
    assert json.loads(run("check", "--config", str(bench), "--json").stdout)["log"].endswith(
        "log.jsonl"
    )


# -- verify over many boards, the report and the log ----------------------------------


def test_verify_many_boards_with_the_live_view_summary_report_and_log(
    two_boards: list[MockBoard], raw: Path, tmp_path: Path
) -> None:
    ports = [arg for b in two_boards for arg in ("--port", b.url)]
    log = tmp_path / "logs" / "bench.jsonl"
    report = tmp_path / "verify-{date}.json"
    written = run("write", *ports, *CONNECT, "--log", str(log), "--station", "line-2", *files(raw))
    assert written.exit_code == 0, written.output
    same = run("verify", *ports, *CONNECT, "--log", str(log), "--report", str(report), *files(raw))
    assert same.exit_code == 0, same.output
    assert "2 board(s)" in same.stdout and "match" in same.stdout
    (saved,) = tmp_path.glob("verify-*.json")
    assert re.fullmatch(r"verify-\d{4}-\d\d-\d\d\.json", saved.name)
    data = json.loads(saved.read_text())
    assert data["action"] == "verify"
    assert {p["status"] for b in data["boards"] for p in b["partitions"]} == {"match"}
    other = run("verify", *ports, *CONNECT, *files(raw, "01"))
    assert other.exit_code == EXIT_MISMATCH, other.output
    assert "differs" in other.stdout
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["action"], r["station"]) for r in records] == [("write", "line-2")] * 2 + [
        ("verify", None)
    ] * 2
    assert log.stat().st_mode & 0o777 == 0o600


def test_the_audit_trail_names_every_item_and_never_a_key(
    two_boards: list[MockBoard], raw: Path, tmp_path: Path
) -> None:
    ports = [arg for b in two_boards for arg in ("--port", b.url)]
    log, report = tmp_path / "audit.jsonl", tmp_path / "run.json"
    for _ in range(2):  # two runs append; nothing is rewritten
        result = run("write", *ports, *CONNECT, "--log", str(log), "--report", str(report),
                     "--station", "bench-7", *files(raw))  # fmt: skip
        assert result.exit_code == 0, result.output
    board = json.loads(report.read_text())["boards"][0]
    cert, key = board["partitions"]
    assert cert["sources"] == [str(raw / "client_cert" / "client_cert_00.crt")]
    (item,) = cert["items"]
    assert (item["type"], item["id"], item["kind"]) == ("cert", 0, "certificate")
    assert len(item["sha256"]) == 64 and item["subject"] and item["serial"] and item["not_after"]
    (key_item,) = key["items"]
    assert key_item["type"] == "key" and len(key_item["public_key_sha256"]) == 64
    assert key_item["public_key_sha256"] == item["public_key_sha256"]  # the pair, by fingerprint
    lines = log.read_text().splitlines()
    assert len(lines) == 4
    record = json.loads(lines[0])
    assert record["station"] == "bench-7" and record["host"] and record["atflash"]
    assert record["esptool"] and record["partitions"][0]["items"][0]["serial"] == item["serial"]
    key_text = (raw / "client_key" / "client_key_00.key").read_text()
    for body in key_text.splitlines()[1:-1]:
        assert body not in log.read_text() and body not in report.read_text()

    mac = two_boards[0].mac
    assert mac is not None
    history = run("log", "show", str(log), "--mac", mac.upper().replace(":", ""), "--json")
    assert [r["mac"] for r in json.loads(history.stdout)] == [mac, mac]
    shown = run("log", "show", str(log), "--mac", mac, env={"COLUMNS": "80"})
    assert shown.exit_code == 0 and mac in shown.stdout and "bench-7" in shown.stdout
    assert all(len(line) <= 80 for line in shown.stdout.splitlines())
    later = run("log", "show", str(log), "--since", "2999-01-01", "--json")
    assert json.loads(later.stdout) == []


def test_a_bench_file_names_the_log_and_station_with_the_date(
    board: MockBoard, raw: Path, tmp_path: Path
) -> None:
    cert = raw / "client_ca" / "client_ca_00.crt"
    bench = tmp_path / "bench.toml"
    bench.write_text(
        f'chip = "esp32"\nports = ["{board.url}"]\nbefore = "no_reset"\nafter = "no_reset"\n'
        f'log = "logs/{{date}}.jsonl"\nstation = "line-9"\n[partitions]\nclient_ca = "{cert}"\n'
    )
    result = run("write", "--config", str(bench))
    assert result.exit_code == 0, result.output
    (log,) = (tmp_path / "logs").glob("*.jsonl")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d\.jsonl", log.name)
    assert json.loads(log.read_text())["station"] == "line-9"


def test_a_log_that_cannot_be_written_refuses_the_run_before_any_board(
    board: MockBoard, raw: Path, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    result = run("write", "--port", board.url, *CONNECT, "--log", str(tmp_path / "file" / "log.jsonl"),
                 "--json", *files(raw))  # fmt: skip
    assert result.exit_code == EXIT_USER_ERROR
    assert "cannot open the log" in json.loads(result.stdout)["error"]
    verify = run("verify", "--port", board.url, *CONNECT, *files(raw))
    assert verify.exit_code == EXIT_MISMATCH  # nothing was written


def test_an_unreachable_board_is_logged_too(raw: Path, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    result = run("write", "--chip", "esp32", "--port", "socket://127.0.0.1:9", *CONNECT,
                 "--log", str(log), *files(raw))  # fmt: skip
    assert result.exit_code == EXIT_DEVICE_ERROR
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["result"] == "failed" and record["error"]
