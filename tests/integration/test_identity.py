"""One identity per board, through the CLI: fingerprints, MACs, the ledger's pool and history (issue 22).

Each test stands for one way a production line gets it wrong: the same key
in another encoding, two boards with one MAC, two pools with one default
ledger, a pool edited after its sets were claimed, a set missing its key.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from cryptography.hazmat.primitives import serialization

from atflash.errors import EXIT_DEVICE_ERROR, EXIT_USER_ERROR
from atflash.factory.ledger import open_ledger
from atflash.sim.flash import board_flash
from atflash.sim.rom import MockBoard, start_mock
from tests.support.cli import refused, run
from tools.certs import certificate
from tools.strictrom import strict_board

LINK = ["--before", "no-reset", "--after", "no-reset", "--connect-attempts", "1"]


def copy_sets(credential_pool: Path, dest: Path, count: int) -> Path:
    dest.mkdir(parents=True)
    for n in range(1, count + 1):
        shutil.copytree(credential_pool / f"{n:04d}", dest / f"{n:04d}")
    return dest


def set_files(pool: Path, name: str, *files: str) -> list[Path]:
    """The paths of ``files`` in set ``name`` of a folder pool."""
    return [pool / name / file for file in files]


def write_index(index: Path, header: list[str], *rows: list[str | Path]) -> Path:
    """An index CSV at ``index``: ``header``, then one line per row."""
    index.write_text("".join(",".join(map(str, row)) + "\n" for row in (header, *rows)))
    return index


@contextlib.contextmanager
def strict_mocks(*macs: str) -> Iterator[list[MockBoard]]:
    """ESP32 boards flashed with ESP-AT 2.x reporting ``macs``, each behind a strict ROM model."""
    with contextlib.ExitStack() as stack:
        started = []
        for mac in macs:
            board = start_mock("esp32", flash=board_flash("esp32"), mac=mac)
            stack.callback(board.stop)
            strict = stack.enter_context(strict_board(board))
            started.append(strict)
        yield started
        for strict in started:  # nothing esptool itself never sends reached a board
            assert strict.rom is not None and not strict.rom.violations, strict.rom.violations


@pytest.fixture
def boards() -> Iterator[list[MockBoard]]:
    """Two ESP32 boards flashed with ESP-AT 2.x, each with its own MAC."""
    with strict_mocks("24:0a:c4:00:22:01", "24:0a:c4:00:22:02") as started:
        yield started


def write_pool(pool: Path, ledger: Path | str, boards: list[MockBoard], *extra: object) -> Result:
    args: list[object] = ["write", "--chip", "esp32", *LINK, "--pool", pool, "--ledger", ledger]
    for board in boards:
        args += ["--port", board.url]
    return run(*args, *extra)


# -- 1. identities, not bytes -------------------------------------------------------------


def crlf(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))


def der_certificate(path: Path) -> None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER))


def traditional_key(path: Path) -> None:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


def reissued_certificate(path: Path) -> None:
    """A new certificate (another serial number and name) for the key of the same set."""
    key = serialization.load_pem_private_key(path.with_name("client_key.key").read_bytes(), None)
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    cert = certificate(key, common_name="re-issued", serial=999, not_before=start)  # type: ignore[arg-type]
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize(
    ("cert_change", "key_change", "says"),
    [
        (crlf, crlf, "client_cert has the same certificate as set 0001's client_cert"),
        (der_certificate, traditional_key, "client_cert has the same certificate as set 0001's"),
        (
            reissued_certificate,
            traditional_key,
            "client_cert has the same public key as set 0001's",
        ),
    ],
)
def test_a_set_sharing_a_credential_in_another_encoding_is_refused_everywhere(
    tmp_path: Path, credential_pool: Path, cert_change: object, key_change: object, says: str
) -> None:
    pool = copy_sets(credential_pool, tmp_path / "pool", 3)
    shutil.rmtree(pool / "0003")
    shutil.copytree(pool / "0001", pool / "0003")  # set 0001 again, every file re-encoded
    key_change(pool / "0003" / "client_key.key")  # type: ignore[operator]
    cert_change(pool / "0003" / "client_cert.crt")  # type: ignore[operator]
    line = refused("pool", "check", pool, "--chip", "esp32")
    assert "set 0003" in line and says in line
    line = refused("build", "--chip", "esp32", "--pool", pool, "-o", tmp_path / "out")
    assert "set 0003" in line and "set 0001" in line
    assert not (tmp_path / "out").exists()
    # write --pool refuses before any port is opened: the port does not even exist.
    line = refused("write", "--chip", "esp32", "--port", tmp_path / "nothing", "--pool", pool)
    assert "set 0003" in line and says in line
    assert not (tmp_path / "pool.ledger.sqlite").exists()


def test_a_manifest_naming_one_key_twice_is_refused_by_write_verify_and_build(
    tmp_path: Path, credential_pool: Path
) -> None:
    one = credential_pool / "0001"
    copies = [tmp_path / "dev1-crlf.crt", tmp_path / "dev1-crlf.key"]
    for name, copy in zip(("client_cert.crt", "client_key.key"), copies, strict=True):
        shutil.copy(one / name, copy)
        crlf(copy)
    for second in (f"{one}/client_cert.crt,{one}/client_key.key", f"{copies[0]},{copies[1]}"):
        manifest = tmp_path / "devices.csv"
        manifest.write_text(
            "mac,client_cert,client_key\n"
            f"24:0a:c4:00:00:01,{one}/client_cert.crt,{one}/client_key.key\n"
            f"24:0a:c4:00:00:02,{second}\n"
        )
        for command in ("write", "verify"):
            line = refused(command, "--chip", "esp32", "--port", tmp_path / "none",
                           "--manifest", manifest)  # fmt: skip
            assert f"{manifest}:3: client_" in line and "as line 2's client_" in line
        line = refused("build", "--chip", "esp32", "--manifest", manifest, "-o", tmp_path / "o")
        assert f"{manifest}:3" in line and f"{manifest}:2" in line


# -- 8. smaller points --------------------------------------------------------------------


def test_a_pool_index_row_without_a_set_name_is_refused(
    tmp_path: Path, credential_pool: Path
) -> None:
    index = write_index(
        tmp_path / "index.csv",
        ["set", "client_cert", "client_key"],
        ["0001", *set_files(credential_pool, "0001", "client_cert.crt", "client_key.key")],
        ["", *set_files(credential_pool, "0002", "client_cert.crt", "client_key.key")],
    )
    line = refused("pool", "check", index, "--chip", "esp32")
    assert line.startswith(f"atflash: error: {index}:3: the set name is empty")


def test_a_killed_builds_staging_folders_are_removed_on_the_next_run(
    tmp_path: Path, credential_pool: Path
) -> None:
    pool = copy_sets(credential_pool, tmp_path / "pool", 2)
    out = tmp_path / "out"
    left = out / ".atflash-staging-k1ll3d"
    (left / "0001").mkdir(parents=True)
    shutil.copy(pool / "0001" / "client_key.key", left / "0001" / "client_key.bin")
    result = run("build", "--chip", "esp32", "--pool", pool, "-o", out)
    assert result.exit_code == 0, result.output
    assert (
        f"atflash: removed 1 staging folder(s) an interrupted build left in {out}" in result.stderr
    )
    assert not left.exists() and not list(out.glob(".atflash-staging-*"))
    again = run("build", "--chip", "esp32", "--pool", pool, "-o", out, "--json")
    assert json.loads(again.stdout)["stale_staging_removed"] == 0


def test_pool_check_and_ledger_export_and_release_take_json(
    tmp_path: Path, credential_pool: Path
) -> None:
    pool = copy_sets(credential_pool, tmp_path / "pool", 2)
    checked = run("pool", "check", pool, "--chip", "esp32", "--json")
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout) == {
        "pool": str(pool), "ok": True, "sets": 2, "layouts": json.loads(checked.stdout)["layouts"],
        "partitions": ["client_ca", "client_cert", "client_key"],
    }  # fmt: skip
    ledger = tmp_path / "ledger.sqlite"
    store = open_ledger(str(ledger))
    try:
        store.claim(device="24:0a:c4:00:00:01", station="s", sets=["0001", "0002"])
    finally:
        store.close()
    exported = run("ledger", "export", ledger, "-o", tmp_path / "l.csv", "--json")
    assert json.loads(exported.stdout) == {
        "output": str(tmp_path / "l.csv"),
        "format": "csv",
        "claims": 1,
    }
    released = run("ledger", "release", ledger, "0001", "--yes", "--json")
    assert released.exit_code == 0, released.output
    claim = json.loads(released.stdout)
    assert (claim["set"], claim["device"]) == ("0001", "24:0a:c4:00:00:01")
    assert claim["released_at"] is not None
    bad = run("pool", "check", tmp_path / "nowhere", "--chip", "esp32", "--json")
    assert (
        bad.exit_code == EXIT_USER_ERROR and json.loads(bad.stdout)["exit_code"] == EXIT_USER_ERROR
    )


# -- 5. every set holds one device's worth ------------------------------------------------


def test_a_set_without_its_key_is_refused_before_any_board(
    tmp_path: Path, credential_pool: Path
) -> None:
    index = write_index(
        tmp_path / "index.csv",
        ["set", "client_cert", "client_key"],
        ["0001", *set_files(credential_pool, "0001", "client_cert.crt")],
        ["0002", *set_files(credential_pool, "0002", "client_cert.crt", "client_key.key")],
    )
    line = refused("pool", "check", index, "--chip", "esp32")
    assert "set 0002: holds client_cert, client_key but set 0001 holds client_cert" in line
    line = refused("write", "--chip", "esp32", "--port", tmp_path / "none", "--pool", index)
    assert "set 0002: holds client_cert, client_key but set 0001 holds client_cert" in line
    write_index(
        index,
        ["set", "client_cert"],
        ["0001", *set_files(credential_pool, "0001", "client_cert.crt")],
        ["0002", *set_files(credential_pool, "0002", "client_cert.crt")],
    )
    line = refused("pool", "check", index, "--chip", "esp32")
    assert "the sets hold client_cert but no client_key" in line and "cert_without_key" in line
    (tmp_path / "pool.toml").write_text('cert_without_key = ["client_cert"]\n')
    assert run("pool", "check", index, "--chip", "esp32").exit_code == 0


# -- 6. ledger URLs -----------------------------------------------------------------------

SECRET = "s3cret"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("host=127.0.0.1 port=1 user=stn password=s3cret dbname=atflash", "password=***"),
        ("PostgreSQL://stn:s3cret@127.0.0.1:1/atflash", "postgresql://stn:***@127.0.0.1:1/atflash"),
        ("postgresql://stn:s3cret@[bad/atflash", 'URI: "postgresql://stn:***@[bad/atflash"'),
    ],
)
def test_a_ledger_password_is_never_shown_and_never_becomes_a_file(
    tmp_path: Path, credential_pool: Path, monkeypatch: pytest.MonkeyPatch, url: str, shown: str
) -> None:
    pytest.importorskip("psycopg")
    monkeypatch.chdir(tmp_path)
    pool = copy_sets(credential_pool, tmp_path / "pool", 2)
    write = ["write", "--chip", "esp32", "--port", "none", "--pool", pool, "--ledger", url]
    for args in (write, ["ledger", "show", url], ["ledger", "export", url, "-o", "x.csv"]):
        result = run(*args)
        assert result.exit_code == EXIT_USER_ERROR, result.output
        assert SECRET not in result.output and shown in result.stderr, result.stderr
        as_json = run(*args, "--json")
        assert SECRET not in as_json.output and shown in json.loads(as_json.stdout)["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool"]  # no SQLite file made


def test_a_sqlite_file_of_another_application_is_refused_not_extended(
    tmp_path: Path, credential_pool: Path
) -> None:
    import sqlite3

    pool = copy_sets(credential_pool, tmp_path / "pool", 2)
    other = tmp_path / "inventory.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE parts (id INTEGER PRIMARY KEY, name TEXT)")
    before = other.read_bytes()
    line = refused("write", "--chip", "esp32", "--port", "none", "--pool", pool, "--ledger", other)
    assert f"ledger {other}: holds another application's tables (parts)" in line
    assert other.read_bytes() == before
    line = refused("write", "--chip", "esp32", "--port", "none", "--pool", pool,
                   "--ledger", f"SQLITE:///{other}")  # fmt: skip
    assert "holds another application's tables (parts)" in line


# -- 2. one MAC, one claim at a time ------------------------------------------------------

CLONE = "24:0a:c4:00:22:99"


def claims_of(ledger: Path | str) -> list[dict[str, object]]:
    shown = run("ledger", "show", ledger, "--json")
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def test_two_boards_with_one_mac_in_a_pool_batch_never_both_get_a_set(
    tmp_path: Path, credential_pool: Path
) -> None:
    pool = copy_sets(credential_pool, tmp_path / "pool", 3)
    ledger = tmp_path / "ledger.sqlite"
    with strict_mocks(CLONE, CLONE) as twins:
        result = write_pool(pool, ledger, twins, "--json")
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    boards = json.loads(result.stdout)["boards"]
    assert sorted(b["result"] for b in boards) == ["failed", "ok"]
    (ok,) = [b for b in boards if b["ok"]]
    (twin,) = [b for b in boards if not b["ok"]]
    assert f"MAC {CLONE} is already used by {ok['port']} in this batch" in twin["error"]
    assert all(p["status"] == "not-started" for p in twin["partitions"])
    (claim,) = claims_of(ledger)
    assert (claim["set"], claim["device"], claim["attempts"], claim["result"]) == (
        "0001", CLONE, 1, "ok",
    )  # fmt: skip


def test_a_mac_another_station_is_writing_is_refused_until_that_write_is_recorded(
    tmp_path: Path, credential_pool: Path, boards: list[MockBoard]
) -> None:
    import subprocess
    import sys

    pool = copy_sets(credential_pool, tmp_path / "pool", 3)
    ledger = tmp_path / "ledger.sqlite"
    mac = "24:0a:c4:00:22:01"  # boards[0]'s
    ok = write_pool(pool, ledger, boards[1:])  # binds the ledger to the pool
    assert ok.exit_code == 0, ok.output
    store = open_ledger(str(ledger))
    try:  # line 2, on another host, is writing a board that reports the same MAC
        other = store.claim(device=mac, station="line2", sets=["0001", "0002", "0003"],
                            port="/dev/ttyUSB7", run="line2-pc/4242/beef")  # fmt: skip
    finally:
        store.close()
    result = write_pool(pool, ledger, boards[:1], "--json")
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    (board,) = json.loads(result.stdout)["boards"]
    error = board["error"]
    assert f"MAC {mac} is being written by /dev/ttyUSB7 on host line2-pc since " in error
    assert "nothing was written to this one" in error
    assert [c["attempts"] for c in claims_of(ledger) if c["device"] == mac] == [1]
    store = open_ledger(str(ledger))
    try:
        store.record(other, result="ok", image_sha256={}, station="line2")
    finally:
        store.close()
    ok = write_pool(pool, ledger, boards[:1])  # recorded: a re-flash is fine
    assert ok.exit_code == 0, ok.output
    # A mark left by a run on this host whose process is gone is taken over at once.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = open_ledger(str(ledger))
    try:
        store.claim(
            device=mac,
            station="s",
            sets=["0001"],
            port="p",
            run=f"{socket.gethostname()}/{dead.pid}/x",
        )
    finally:
        store.close()
    ok = write_pool(pool, ledger, boards[:1])

    # -- 3. one ledger, one pool --------------------------------------------------------------
    assert ok.exit_code == 0, ok.output


def test_dotted_pools_get_their_own_ledgers_and_a_ledger_refuses_another_pool(
    tmp_path: Path, credential_pool: Path, boards: list[MockBoard]
) -> None:
    lot_a = copy_sets(credential_pool, tmp_path / "lot.A", 2)
    lot_b = tmp_path / "lot.B"
    lot_b.mkdir()
    for n in (1, 2):  # other credentials under the same set names
        shutil.copytree(credential_pool / f"{n + 10:04d}", lot_b / f"{n:04d}")
    ok = write_pool(lot_a, "", boards[:1])  # an empty --ledger
    assert ok.exit_code == EXIT_USER_ERROR, ok.output
    args = ["write", "--chip", "esp32", *LINK, "--port", boards[0].url, "--json"]
    first = run(*args, "--pool", lot_a)
    assert first.exit_code == 0, first.output
    second = run(*args, "--pool", lot_b)
    assert second.exit_code == 0, second.output
    assert sorted(p.name for p in tmp_path.glob("*.sqlite")) == [
        "lot.A.ledger.sqlite", "lot.B.ledger.sqlite",
    ]  # fmt: skip
    (claim,) = claims_of(tmp_path / "lot.B.ledger.sqlite")
    assert claim["set"] == "0001"  # not skipped as "taken" by lot.A's claim
    shared = tmp_path / "lot.A.ledger.sqlite"
    line = refused("write", "--chip", "esp32", "--port", boards[1].url, "--pool", lot_b,
                   "--ledger", shared)  # fmt: skip
    assert f"ledger {shared}: serves pool lot.A (its set 0001 is " in line and "not lot.B" in line
    assert "--force-ledger" in line
    renamed = tmp_path / "lot.A-2026"
    shutil.copytree(lot_a, renamed)  # the same pool under another name is still that pool
    ok = write_pool(renamed, shared, boards[1:])
    # Forced, the ledger is used; the board's claim (lot.A's set 0002) is still checked.
    assert ok.exit_code == 0, ok.output
    forced = write_pool(lot_b, shared, boards[1:], "--force-ledger", "--json")
    assert forced.exit_code == EXIT_DEVICE_ERROR, forced.output
    (board,) = json.loads(forced.stdout)["boards"]
    assert "set 0002, held by 24:0a:c4:00:22:02, changed since it was claimed" in board["error"]


# -- 4. a claimed set that changed --------------------------------------------------------


def test_a_set_changed_after_its_claim_is_refused_and_reissue_keeps_the_history(
    tmp_path: Path, credential_pool: Path, boards: list[MockBoard]
) -> None:
    pool = copy_sets(credential_pool, tmp_path / "pool", 2)
    ledger = tmp_path / "ledger.sqlite"
    ok = write_pool(pool, ledger, boards[:1])
    assert ok.exit_code == 0, ok.output
    (before,) = claims_of(ledger)
    assert before["identity"]["client_cert"]["fingerprints"][0].startswith("certificate:")
    for name in ("client_cert.crt", "client_key.key"):  # the set is regenerated by mistake
        shutil.copy(credential_pool / "0100" / name, pool / "0001" / name)
    again = write_pool(pool, ledger, boards[:1], "--json")
    assert again.exit_code == EXIT_DEVICE_ERROR, again.output
    (board,) = json.loads(again.stdout)["boards"]
    assert (
        "changed since it was claimed: client_cert holds another certificate or key"
        in board["error"]
    )
    assert all(p["status"] == "not-started" for p in board["partitions"])
    (same,) = claims_of(ledger)
    assert (same["identity"], same["image_sha256"]) == (before["identity"], before["image_sha256"])
    reissued = write_pool(pool, ledger, boards[:1], "--reissue", "--json")
    assert reissued.exit_code == 0, reissued.output
    (after,) = claims_of(ledger)
    events = [e["event"] for e in after["history"]]
    assert events == ["claimed", "written", "failed", "reissued", "written"]
    reissue = after["history"][3]
    assert (reissue["before"], reissue["after"]) == (before["identity"], after["identity"])
    writes = [e["image_sha256"] for e in after["history"] if e["event"] == "written"]
    assert writes[0] == before["image_sha256"] and writes[1] == after["image_sha256"]
    assert writes[0]["client_cert"] != writes[1]["client_cert"]  # the earlier record stays
    checked = run("verify", "--chip", "esp32", *LINK, "--pool", pool, "--ledger", ledger,
                  "--port", boards[0].url)  # fmt: skip
    assert checked.exit_code == 0, checked.output
    assert [e["event"] for e in claims_of(ledger)[0]["history"]][-1] == "verified"


def test_a_lone_certificate_that_would_not_match_the_boards_key_is_refused(
    tmp_path: Path, credential_pool: Path, boards: list[MockBoard]
) -> None:
    full = copy_sets(credential_pool, tmp_path / "full", 1)
    ok = write_pool(full, tmp_path / "full.sqlite", boards[:1])
    assert ok.exit_code == 0, ok.output
    certs = tmp_path / "certs"  # a pool of certificates only: the boards keep their own key
    for n in (1, 2):
        (certs / f"{n:04d}").mkdir(parents=True)
        shutil.copy(credential_pool / f"{n + 20:04d}" / "client_cert.crt", certs / f"{n:04d}")
    (certs / "pool.toml").write_text('cert_without_key = ["client_cert"]\n')
    result = write_pool(certs, tmp_path / "certs.sqlite", boards[:1], "--json")
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    (board,) = json.loads(result.stdout)["boards"]
    assert "client_cert would not match the board's client_key: certificate " in board["error"]
    assert all(p["status"] == "not-started" for p in board["partitions"])
    # A board whose key is blank has nothing to mismatch.
    ok = write_pool(certs, tmp_path / "certs.sqlite", boards[1:])
    assert ok.exit_code == 0, ok.output
