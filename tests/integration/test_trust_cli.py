"""Keys where they belong, through the real command line.

- A certificate file (or a ready bin's cert/ca item) that carries a private
  key is refused, naming the file; ``inspect`` says so without showing it.
- Bins and files holding key bytes are 0600, and no command writes over one
  of its own inputs.
- ``parse-bin`` keeps every item, also those sharing a type and ID.
- A short manifest row is refused with its line.
- Every input is read with a bound: ``/dev/zero``, FIFOs and huge files are
  one-line errors, never a hang or an exhausted host (run as subprocesses
  with a timeout, so a regression fails instead of hanging the suite).
- Key types ESP-AT cannot use are refused unless ``--no-key-type-check``.
- ``sim rom``: a MAC per mock (or the one given), one-line errors for a bad
  MAC or a busy port, and no mock left running after SIGTERM or SIGKILL.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import selectors
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from atflash.content import pki
from atflash.errors import EXIT_USER_ERROR
from tests.support.cli import run
from tests.support.procs import children, outliving
from tools.certs import DER, PEM, certificate, key_bytes

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="needs a Unix host")
linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
COMMAND_TIMEOUT = 60  # a refused input answers in well under a second; a hang hits this
SIM_TIMEOUT = 30


def atflash(*args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, bounded: a blocked read fails the test instead of hanging it."""
    return subprocess.run(
        [sys.executable, "-m", "atflash", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_error_line(stdout: str, stderr: str) -> str:
    assert stdout == ""
    assert "Traceback" not in stderr and "internal error" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("atflash: error: ")
    return lines[0]


def cert_of(key: PrivateKeyTypes, encoding: serialization.Encoding = PEM) -> bytes:
    return certificate(key, common_name="device 3", serial=3).public_bytes(encoding)


def secret_lines(key: PrivateKeyTypes) -> list[bytes]:
    """The base64 lines of a PEM key and 16-byte windows of its DER: none may be shown."""
    body = [ln for ln in key_bytes(key).splitlines() if ln and not ln.startswith(b"-----")]
    der = key_bytes(key, DER)
    return body[1:-1] + [der[i : i + 16].hex().encode() for i in range(40, len(der) - 16, 16)]


def assert_no_key(texts: list[str | bytes], key: PrivateKeyTypes) -> None:
    for text in texts:
        raw = text.encode() if isinstance(text, str) else text
        for secret in secret_lines(key):
            assert secret not in raw and secret not in raw.lower(), "key material shown"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def files(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    """A folder of certificate files that carry their key, and good ones."""
    ed = ed25519.Ed25519PrivateKey.generate()
    bundle = cert_of(key) + key_bytes(key)
    content = {
        "combo.pem": bundle,
        "combo_der.crt": cert_of(key, DER) + key_bytes(key, DER),
        "cert_then_der_key.pem": cert_of(key) + key_bytes(key, DER),
        "cert.pem": cert_of(key),
        "key.pem": key_bytes(key),
        "ed25519.key": key_bytes(ed),
        "ed25519.crt": cert_of(ed),
        "ed25519.bin": pki.build([("key", key_bytes(ed), None)]),
        "combo_ca.bin": pki.build([("ca", cert_of(key), None), ("ca", bundle, None)]),
        "combo_cert.bin": pki.build([("cert", bundle, None)]),
    }
    for name, data in content.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


# -- 1. a certificate file carrying a key -------------------------------------------------


def build_refused(files: Path, partition: str, name: str) -> tuple[Result, str]:
    """``atflash build`` of ``partition`` from ``files/name``, refused in one line, nothing written."""
    out = files / "out"
    result = run("build", "--chip", "esp32", "-o", str(out), partition, str(files / name))
    assert result.exit_code == EXIT_USER_ERROR, result.output
    line = one_error_line(result.stdout, result.stderr)
    assert not out.exists()
    return result, line


@pytest.mark.parametrize("partition", ["client_cert", "client_ca", "mqtt_ca", "server_cert"])
@pytest.mark.parametrize("name", ["combo.pem", "combo_der.crt", "cert_then_der_key.pem"])
def test_build_refuses_a_certificate_file_holding_a_key(
    files: Path, key: ec.EllipticCurvePrivateKey, partition: str, name: str
) -> None:
    result, line = build_refused(files, partition, name)
    assert f"{files / name}: holds a private key; give the certificate alone" in line
    assert_no_key([result.stdout, result.stderr], key)


@pytest.mark.parametrize(
    ("partition", "name"), [("client_ca", "combo_ca.bin"), ("client_cert", "combo_cert.bin")]
)
def test_build_refuses_a_ready_bin_whose_certificate_item_holds_a_key(
    files: Path, key: ec.EllipticCurvePrivateKey, partition: str, name: str
) -> None:
    result, line = build_refused(files, partition, name)
    assert str(files / name) in line and "holds a private key" in line
    assert_no_key([result.stderr], key)


def test_generate_bin_refuses_a_certificate_holding_a_key(files: Path) -> None:
    out = files / "PKI.bin"
    result = run("generate-bin", "-b", str(out), "cert", str(files / "combo.pem"))
    assert result.exit_code == EXIT_USER_ERROR
    assert "combo.pem: holds a private key; give the certificate alone" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("name", ["combo.pem", "combo_der.crt", "combo_cert.bin"])
def test_inspect_says_a_certificate_file_also_holds_a_key(
    files: Path, key: ec.EllipticCurvePrivateKey, name: str, as_json: bool
) -> None:
    result = run("inspect", *(["--json"] if as_json else []), str(files / name))
    assert result.exit_code == 0, result.output
    if as_json:
        (report,) = json.loads(result.stdout)
        assert any(item["info"]["holds_private_key"] for item in report["items"])
        assert any("also holds a private key" in w for i in report["items"] for w in i["warnings"])
    else:
        assert "WARNING  also holds a private key (not shown)" in result.stdout
    assert_no_key([result.stdout, result.stderr], key)
    plain = run("inspect", str(files / "cert.pem"))
    assert "private key" not in plain.stdout


# -- 2. owner-only key bins, inputs never overwritten --------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_bin_writes_bins_holding_keys_owner_only(files: Path) -> None:
    key_bin, cert_bin = files / "key.bin", files / "cert.bin"
    assert run("generate-bin", "-b", str(key_bin), "key", str(files / "key.pem")).exit_code == 0
    mixed = files / "mixed.bin"
    args = ["-b", str(mixed), "cert", str(files / "cert.pem"), "key", str(files / "key.pem")]
    assert run("generate-bin", *args).exit_code == 0
    assert run("generate-bin", "-b", str(cert_bin), "cert", str(files / "cert.pem")).exit_code == 0
    assert mode(key_bin) == 0o600
    assert mode(mixed) == 0o600
    assert mode(cert_bin) & 0o044, "a bin of certificates only is public"


def test_build_key_images_are_owner_only_whatever_the_partition_name(files: Path) -> None:
    profile = Path(__file__).resolve().parents[2] / "profiles" / "esp32.toml"
    text = profile.read_text().replace('name = "client_key"', 'name = "device_secret"')
    custom = files / "custom.toml"
    custom.write_text(text)
    out = files / "out"
    result = run("build", "--profile", str(custom), "-o", str(out),
                 "device_secret", str(files / "key.pem"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert mode(out / "device_secret.bin") == 0o600


def _ready_key_bin(files: Path, name: str) -> Path:
    path = files / name
    path.write_bytes(pki.build([("key", key_bytes(ec.generate_private_key(ec.SECP256R1())), None)]))
    return path


OVERWRITES = {
    "generate-bin-onto-its-key": ["generate-bin", "-b", "{my.key}", "key", "{my.key}"],
    "generate-bin-onto-its-cert": ["generate-bin", "-b", "{cert.pem}", "cert", "{cert.pem}"],
    "generate-bin-through-a-symlink": ["generate-bin", "-b", "{link.key}", "key", "{my.key}"],
    "build-onto-its-ready-bin": ["build", "--chip", "esp32", "-o", "{dir}", "client_key", "{client_key.bin}"],
    "parse-bin-onto-its-bin": ["parse-bin", "-b", "{key_00.key}", "-o", "{dir}"],
}  # fmt: skip


@pytest.mark.parametrize("args", list(OVERWRITES.values()), ids=list(OVERWRITES))
def test_no_command_overwrites_its_own_input(files: Path, args: list[str]) -> None:
    (files / "my.key").write_bytes(key_bytes(ec.generate_private_key(ec.SECP256R1())))
    (files / "link.key").symlink_to(files / "my.key")
    _ready_key_bin(files, "client_key.bin")
    _ready_key_bin(files, "key_00.key")  # a bin whose name is what parse-bin would write
    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    by_name = {p.name: str(p) for p in files.iterdir()}
    placed = [by_name.get(a.strip("{}"), a).replace("{dir}", str(files)) for a in args]
    result = run(*placed)
    assert result.exit_code == EXIT_USER_ERROR, result.output
    line = one_error_line(result.stdout, result.stderr)
    assert "is also an input of this command" in line
    assert {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()} == before


# -- 3. parse-bin keeps every item ----------------------------------------------------------


def test_parse_bin_extracts_items_that_share_an_id(
    files: Path, key: ec.EllipticCurvePrivateKey
) -> None:
    second = key_bytes(ec.generate_private_key(ec.SECP256R1()))
    cert = cert_of(key)
    bundle = cert + key_bytes(key)
    items = (
        pki.PkiItem("key", 0, key_bytes(key)),
        pki.PkiItem("key", 0, second),
        pki.PkiItem("cert", 0, cert),
        pki.PkiItem("cert", 0, bundle),
        pki.PkiItem("key", 0, b"third"),
    )
    source = files / "clash.bin"
    source.write_bytes(pki.encode(pki.PkiBin(items)))
    out = files / "parsed"
    result = run("parse-bin", "-b", str(source), "-o", str(out))
    assert result.exit_code == 0, result.output
    got = {p.name: p.read_bytes() for p in out.iterdir()}
    assert got == {
        "key_00.key": key_bytes(key),
        "key_00-1.key": second,
        "key_00-2.key": b"third",
        "cert_00.crt": cert,
        "cert_00-1.crt": bundle,
    }
    assert "key_00-1.key" in result.stderr and "key_00-2.key" in result.stderr
    assert "cert_00-1.crt" in result.stderr
    for name in ("key_00.key", "key_00-1.key", "key_00-2.key", "cert_00-1.crt"):
        assert mode(out / name) == 0o600, name
    assert mode(out / "cert_00.crt") & 0o044
    assert_no_key([result.stdout, result.stderr], key)


# -- 4. manifests ---------------------------------------------------------------------------


def test_a_manifest_row_shorter_than_the_header_is_refused_with_its_line(
    files: Path, raw: Path
) -> None:
    cert, key = raw / "client_cert" / "client_cert_00.crt", raw / "client_key" / "client_key_00.key"
    (files / "devices.csv").write_text(
        f"mac,client_cert,client_key\n24:0a:c4:00:00:01,{cert},{key}\n24:0a:c4:00:00:02,{cert}\n"
    )
    (files / "bench.toml").write_text('chip = "esp32"\nmanifest = "devices.csv"\n')
    result = run("check", "--config", str(files / "bench.toml"))
    assert result.exit_code == EXIT_USER_ERROR, result.output
    line = one_error_line(result.stdout, result.stderr)
    assert "devices.csv:3: 2 cells but the header has 3 columns" in line


# -- 5. every input read with a bound ---------------------------------------------------


def _sparse(path: Path, size: int) -> str:
    with path.open("wb") as handle:
        handle.truncate(size)
    return str(path)


BOUNDED = {
    # what, command line ({f}: the input under test), message
    "bench": (["check", "--config", "{f}"], "bench file"),
    "profile": (
        ["build", "--profile", "{f}.toml", "-o", "{out}", "client_cert", "{cert}"],
        "profile",
    ),
    "at-customize-csv": (
        [
            "build",
            "--chip",
            "esp32",
            "--profile",
            "{f}.csv",
            "-o",
            "{out}",
            "client_cert",
            "{cert}",
        ],
        "{f}.csv: cannot read",
    ),
    "credential": (["build", "--chip", "esp32", "-o", "{out}", "client_cert", "{f}"], "{f}"),
    "generate-bin-item": (["generate-bin", "-b", "{out}/o.bin", "cert", "{f}"], "{f}"),
    "parse-bin": (["parse-bin", "-b", "{f}", "-o", "{out}"], "{f}"),
    "inspect": (["inspect", "{f}"], "{f}"),
    "manifest-via-bench": (["check", "--config", "{bench}"], "cannot read the manifest"),
}


def _bounded_case(tmp_path: Path, raw: Path, case: str, make: str) -> tuple[list[str], str, Path]:
    args, message = BOUNDED[case]
    base = tmp_path / "input"
    suffix = {"profile": ".toml", "at-customize-csv": ".csv"}.get(case, "")
    target = Path(str(base) + suffix)
    if make == "fifo":
        os.mkfifo(target)
    else:
        _sparse(target, 64 * 1024**3)  # 64 GiB of nothing: reading it would never end in time
    bench = tmp_path / "bench.toml"
    bench.write_text(f'chip = "esp32"\nmanifest = "{target.name}"\n')
    places = {"f": str(base), "out": str(tmp_path / "out"), "bench": str(bench),
              "cert": str(raw / "client_cert" / "client_cert_00.crt")}  # fmt: skip
    return [a.format(**places) for a in args], message.format(**places), target


@posix_only
@pytest.mark.parametrize("make", ["fifo", "huge"])
@pytest.mark.parametrize("case", list(BOUNDED))
def test_inputs_are_read_with_a_bound(tmp_path: Path, raw: Path, case: str, make: str) -> None:
    args, message, _target = _bounded_case(tmp_path, raw, case, make)
    started = time.monotonic()
    proc = atflash(*args)
    assert time.monotonic() - started < COMMAND_TIMEOUT
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr
    line = one_error_line(proc.stdout, proc.stderr)
    assert message in line, line
    expected = "is a pipe (FIFO), not a regular file" if make == "fifo" else "holds at most"
    assert expected in line, line
    assert not (tmp_path / "out").exists()


@posix_only
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_check_config_of_a_device_is_a_one_line_error(device: str) -> None:
    if not Path(device).exists():
        pytest.skip(f"no {device}")
    proc = atflash("check", "--config", device)
    assert proc.returncode == EXIT_USER_ERROR
    line = one_error_line(proc.stdout, proc.stderr)
    assert f"{device}: cannot read the bench file: is a character device" in line


@posix_only
def test_a_credential_fifo_with_a_writer_is_refused_too(tmp_path: Path, raw: Path) -> None:
    """Process substitution (``<(cat cert.pem)``) gives a pipe: refused, with what to do."""
    fifo = tmp_path / "cert.pipe"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer that never writes
    try:
        proc = atflash("build", "--chip", "esp32", "-o", str(tmp_path / "out"),
                       "client_cert", str(fifo))  # fmt: skip
    finally:
        os.close(writer)
    line = one_error_line(proc.stdout, proc.stderr)
    assert "save its content to a file and give that file" in line


# -- 6. key types ------------------------------------------------------------------------


def test_build_refuses_a_key_type_esp_at_cannot_use(files: Path) -> None:
    out = files / "out"
    result = run(
        "build", "--chip", "esp32", "-o", str(out), "client_key", str(files / "ed25519.key")
    )
    assert result.exit_code == EXIT_USER_ERROR, result.output
    line = one_error_line(result.stdout, result.stderr)
    assert f"{files / 'ed25519.key'}: holds an Ed25519 key, which ESP-AT cannot use" in line
    assert "ESP-AT takes RSA keys of 1024 to 4096 bits and EC keys on P-256, P-384" in line
    assert not out.exists()
    allowed = run("build", "--chip", "esp32", "-o", str(out), "--no-key-type-check",
                  "client_cert", str(files / "ed25519.crt"), "client_key", str(files / "ed25519.key"))  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    assert mode(out / "client_key.bin") == 0o600


def test_build_refuses_a_ready_bin_holding_such_a_key(files: Path) -> None:
    out = files / "out"
    result = run(
        "build", "--chip", "esp32", "-o", str(out), "client_key", str(files / "ed25519.bin")
    )
    assert result.exit_code == EXIT_USER_ERROR
    assert "ed25519.bin[0]: holds an Ed25519 key" in result.stderr
    allowed = run("build", "--chip", "esp32", "-o", str(out), "--no-key-type-check",
                  "client_key", str(files / "ed25519.bin"))  # fmt: skip
    assert allowed.exit_code == 0, allowed.output


def test_generate_bin_refuses_a_key_type_esp_at_cannot_use(files: Path) -> None:
    out = files / "PKI.bin"
    result = run("generate-bin", "-b", str(out), "key", str(files / "ed25519.key"))
    assert result.exit_code == EXIT_USER_ERROR
    assert "holds an Ed25519 key, which ESP-AT cannot use" in result.stderr
    assert not out.exists()
    allowed = run("generate-bin", "-b", str(out), "--no-key-type-check",
                  "key", str(files / "ed25519.key"))  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    assert mode(out) == 0o600


# -- 7. sim rom -------------------------------------------------------------------------------


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line of ``proc``, waited for at most ``timeout`` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError("sim rom printed nothing in time")
        return proc.stdout.readline()


@pytest.fixture
def sims() -> Iterator[list[subprocess.Popen[str]]]:
    """``atflash sim rom`` processes started by a test, always ended."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=SIM_TIMEOUT)


def start_sim(
    sims: list[subprocess.Popen[str]], *args: str
) -> tuple[subprocess.Popen[str], str, str]:
    return sim_started(launch_sim(sims, *args))


def launch_sim(sims: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    """``atflash sim rom`` started, not yet waited for (several start at once)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "atflash", "sim", "rom", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    sims.append(proc)
    return proc


def sim_started(proc: subprocess.Popen[str]) -> tuple[subprocess.Popen[str], str, str]:
    """The sim's first line, waited for with a bound: the process, its URL and its MAC."""
    line = _read_line(proc, SIM_TIMEOUT)
    assert "--port socket://" in line, line
    mac = line.split("(MAC ", 1)[1].split(")", 1)[0]
    return proc, line.rsplit("--port ", 1)[1].strip(), mac


def read_mac(url: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "esptool", "--chip", "esp32", "--port", url, "--before", "no-reset",
         "--after", "no-reset", "--no-stub", "read-mac"],
        capture_output=True, text=True, timeout=SIM_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return next(ln.split()[-1] for ln in proc.stdout.splitlines() if ln.startswith("MAC:"))


@posix_only
def test_each_sim_rom_reports_its_own_mac_or_the_one_given(
    sims: list[subprocess.Popen[str]],
) -> None:
    # Three sims and their three esptool reads at once: each is a process of its own.
    launched = [launch_sim(sims), launch_sim(sims), launch_sim(sims, "--mac", "02-00-00-00-00-07")]
    (_p1, url1, mac1), (_p2, url2, mac2), (_p3, url3, mac3) = map(sim_started, launched)
    assert mac1 != mac2
    assert mac3 == "02:00:00:00:00:07"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        assert list(pool.map(read_mac, (url1, url2, url3))) == [mac1, mac2, mac3]


@pytest.mark.parametrize("mac", ["zz", "01:00:00:00:00:01", "24:0a:c4:00:00"])
def test_a_bad_mac_is_a_one_line_error(mac: str) -> None:
    result = run("sim", "rom", "--mac", mac)
    assert result.exit_code == EXIT_USER_ERROR
    line = one_error_line(result.stdout, result.stderr)
    assert repr(mac) in line


@posix_only
def test_a_busy_tcp_port_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = atflash("sim", "rom", "--tcp-port", str(port), timeout=SIM_TIMEOUT)
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr
    line = one_error_line(proc.stdout, proc.stderr)
    assert f"TCP port {port} is already in use" in line


@linux_only
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name
)
def test_stopping_sim_rom_leaves_no_mock_running(
    sims: list[subprocess.Popen[str]], sig: signal.Signals
) -> None:
    proc, _url, _mac = start_sim(sims)
    (mock,) = children(proc.pid)
    environ = Path(f"/proc/{mock}/environ").read_bytes().split(b"\0")
    state = next(
        v.split(b"=", 1)[1] for v in environ if v.startswith(b"ESP32_MOCK_BOOTLOADER_STATE_DIR=")
    )
    proc.send_signal(sig)
    code = proc.wait(timeout=SIM_TIMEOUT)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
    assert not outliving({mock}, 10), "the mock outlived atflash sim rom"
    assert not Path(state.decode()).exists(), "the mock's state folder was left behind"
