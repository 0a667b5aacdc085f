"""The ledger on SQLite and on a real PostgreSQL: rules, concurrency, the resolver, the commands.

Every rule test runs against both stores (``ledger_url``). PostgreSQL is a
throwaway server started once per session (tests/support/postgres.py);
where it cannot start the PostgreSQL cases skip, saying why, unless
``ATFLASH_TEST_POSTGRES=required`` (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from atflash.backends.esptool.flasher import ConnectOptions
from atflash.errors import EXIT_USER_ERROR, DeviceError, InputError
from atflash.factory.errors import ClaimError, LedgerError, PoolExhaustedError
from atflash.factory.ledger import open_ledger
from atflash.factory.ledger_store import SCHEMA_VERSION
from atflash.factory.pool import load_pool
from atflash.factory.resolve import PoolResolver, pool_resolver
from atflash.layout.profiles import find_profile
from atflash.planning.plan import BoardIdentity
from atflash.results import BoardResult
from atflash.run.workers import BoardJob, run_batch
from atflash.sim.flash import board_flash
from tests.support.cli import run
from tools.strictrom import start_strict

from .conftest import BoardPool, flash_esp_at, flash_holds

SETS = [f"{n:04d}" for n in range(1, 201)]
DEVICES = [f"24:0a:c4:00:{n >> 8:02x}:{n & 0xFF:02x}" for n in range(1, 201)]
MAC1, MAC2, MAC3 = DEVICES[:3]


# -- stores -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty ledger of each kind (PostgreSQL started only when a test asks for it)."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return str(request.getfixturevalue("pg_url"))


def run_sql(url: str, statement: str) -> None:
    """Change a ledger behind atflash's back, as another tool would."""
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)
        return
    with sqlite3.connect(url) as conn:
        conn.execute(statement)


# -- the rules, on both stores -----------------------------------------------------------


def test_a_device_gets_the_same_set_again_whatever_the_station(ledger_url: str) -> None:
    ledger = open_ledger(ledger_url)
    try:
        first = ledger.claim(device="24:0A:C4:00:00:01", station="bench-1", sets=SETS)
        again = ledger.claim(device="240ac4000001", station="bench-2", sets=SETS)
        assert (first.set_name, first.device, first.station, first.attempts) == (
            "0001", MAC1, "bench-1", 1,
        )  # fmt: skip
        assert (again.set_name, again.id, again.station, again.attempts) == (
            "0001",
            first.id,
            "bench-1",
            2,
        )
        assert len(ledger.claims()) == 1
    finally:
        ledger.close()


def test_sets_go_out_in_order_never_twice(ledger_url: str) -> None:
    ledger = open_ledger(ledger_url)
    try:
        got = [ledger.claim(device=mac, station="s", sets=SETS).set_name for mac in DEVICES[:3]]
        assert got == ["0001", "0002", "0003"]
        # Another pool order: the first set nobody holds, whatever others hold.
        assert (
            ledger.claim(device=DEVICES[3], station="s", sets=["0002", "0001", "0009"]).set_name
            == "0009"
        )
    finally:
        ledger.close()


def test_the_claim_is_stored_before_writing_and_a_failed_write_keeps_it(ledger_url: str) -> None:
    station = open_ledger(ledger_url)
    observer = open_ledger(ledger_url)  # another process's view
    try:
        claim = station.claim(device=MAC1, station="s", sets=SETS)
        (seen,) = observer.claims(device=MAC1)
        assert (seen.set_name, seen.result, seen.active) == ("0001", None, True)
        station.record(claim, result="failed", image_sha256={"client_key": "ab" * 32})
        assert observer.claims(device=MAC1)[0].result == "failed"
        retry = station.claim(device=MAC1, station="s", sets=SETS)
        assert retry.set_name == "0001"
        station.record(
            retry, result="ok", image_sha256={"client_key": "cd" * 32, "client_cert": "ef" * 32}
        )
        (done,) = observer.claims(device=MAC1)
        assert (done.result, done.attempts, done.image_sha256) == (
            "ok", 2, {"client_cert": "ef" * 32, "client_key": "cd" * 32},
        )  # fmt: skip
        assert done.recorded_at is not None and done.recorded_at >= done.claimed_at
    finally:
        station.close()
        observer.close()


def test_release_frees_the_set_and_keeps_the_history(ledger_url: str) -> None:
    ledger = open_ledger(ledger_url)
    try:
        held = ledger.claim(device=MAC1, station="s", sets=SETS[:2])
        ledger.claim(device=MAC2, station="s", sets=SETS[:2])
        released = ledger.release("0001")
        assert (released.id, released.device, released.active) == (held.id, MAC1, False)
        assert ledger.claim(device=MAC3, station="s", sets=SETS[:2]).set_name == "0001"
        with pytest.raises(PoolExhaustedError):  # the released device holds nothing now
            ledger.claim(device=MAC1, station="s", sets=SETS[:2])
        with pytest.raises(ClaimError, match=r"set 0007 is not held by any device"):
            ledger.release("0007")
        with pytest.raises(ClaimError, match=r"set 0001 is no longer held by 24:0a:c4:00:00:01"):
            ledger.record(held, result="ok", image_sha256={})
        history = [(c.set_name, c.device, c.active) for c in ledger.claims()]
        assert history == [("0001", MAC1, False), ("0002", MAC2, True), ("0001", MAC3, True)]
    finally:
        ledger.close()


def test_an_exhausted_pool_is_a_clear_error_and_holders_still_get_theirs(ledger_url: str) -> None:
    ledger = open_ledger(ledger_url)
    try:
        for mac in (MAC1, MAC2):
            ledger.claim(device=mac, station="s", sets=SETS[:2])
        with pytest.raises(PoolExhaustedError, match=r"no free credential set for 24:0a:c4:00:00:03: "
                                                     r"all 2 sets of the pool are claimed"):  # fmt: skip
            ledger.claim(device=MAC3, station="s", sets=SETS[:2])
        assert ledger.claim(device=MAC2, station="s", sets=SETS[:2]).set_name == "0002"
    finally:
        ledger.close()


def test_claims_filter_by_device_and_time(ledger_url: str) -> None:
    ledger = open_ledger(ledger_url)
    try:
        ledger.claim(device=MAC1, station="s", sets=SETS)
        ledger.claim(device=MAC2, station="s", sets=SETS)
        assert [c.device for c in ledger.claims(device="24-0A-C4-00-00-02")] == [MAC2]
        now = datetime.now(timezone.utc)
        assert len(ledger.claims(since=now - timedelta(hours=1))) == 2
        assert ledger.claims(since=now + timedelta(hours=1)) == []
    finally:
        ledger.close()


def test_bad_device_and_result_are_input_errors(ledger_url: str) -> None:
    ledger = open_ledger(ledger_url)
    try:
        with pytest.raises(InputError, match=r"'24:0a:zz' is not a MAC address"):
            ledger.claim(device="24:0a:zz", station="s", sets=SETS)
        claim = ledger.claim(device=MAC1, station="s", sets=SETS)
        with pytest.raises(InputError, match=r"unknown write result 'maybe'"):
            ledger.record(claim, result="maybe", image_sha256={})
    finally:
        ledger.close()


def test_tables_are_made_on_first_open_with_a_version_row(ledger_url: str) -> None:
    open_ledger(ledger_url).close()
    open_ledger(ledger_url).close()  # a second open finds them
    run_sql(ledger_url, "UPDATE atflash_schema SET version = 99")
    with pytest.raises(
        LedgerError, match=rf"schema version 99, this atflash knows {SCHEMA_VERSION}"
    ):
        open_ledger(ledger_url)


# A version 1 ledger, as atflash made it before identities and the history.
V1_SCHEMA = {
    "sqlite": ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT", "'2024-01-01T00:00:00.000000+00:00'"),
    "postgresql": ("bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "timestamptz", "now()"),
}


def test_a_version_1_ledger_is_upgraded_and_keeps_its_claims(ledger_url: str) -> None:
    kind = "postgresql" if ledger_url.startswith("postgresql://") else "sqlite"
    key, time, now = V1_SCHEMA[kind]
    for statement in (
        "CREATE TABLE atflash_schema (version integer NOT NULL)",
        "INSERT INTO atflash_schema (version) VALUES (1)",
        f"CREATE TABLE atflash_claims (id {key}, set_name text NOT NULL, device text NOT NULL, "
        f"station text NOT NULL, claimed_at {time} NOT NULL, attempts integer NOT NULL DEFAULT 1, "
        f"result text, recorded_at {time}, image_sha256 text, released_at {time})",
        "INSERT INTO atflash_claims (set_name, device, station, claimed_at, result) "
        f"VALUES ('0001', '{MAC1}', 'old', {now}, 'ok')",
    ):
        run_sql(ledger_url, statement)
    ledger = open_ledger(ledger_url)
    try:
        (old,) = ledger.claims()
        assert (old.set_name, old.device, old.result, old.identity, old.history) == (
            "0001", MAC1, "ok", None, (),
        )  # fmt: skip
        again = ledger.claim(device=MAC1, station="new", sets=SETS, port="p", run="h/1/t")
        assert (again.id, again.attempts, again.busy_port) == (old.id, 2, "p")
        ledger.record(again, result="ok", image_sha256={"client_key": "ab" * 32}, station="new")
        assert [e.event for e in ledger.claims()[0].history] == ["written"]
    finally:
        ledger.close()
    open_ledger(ledger_url).close()  # upgraded once: a second open finds version 2


def test_the_database_refuses_a_second_holder_even_without_atflash(ledger_url: str) -> None:
    ledger = open_ledger(ledger_url)
    ledger.claim(device=MAC1, station="s", sets=SETS)
    ledger.close()
    sneaky = "INSERT INTO atflash_claims (set_name, device, station, claimed_at) VALUES ('0001', 'x', 's', '2024-01-01')"
    with pytest.raises(Exception, match=r"(?i)unique"):
        run_sql(ledger_url, sneaky)


# -- opening ------------------------------------------------------------------------------


def test_ledger_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    open_ledger("sqlite:///rel.db").close()
    open_ledger(f"sqlite:///{tmp_path}/abs.db").close()  # sqlite:////tmp/... : absolute
    assert (tmp_path / "rel.db").is_file() and (tmp_path / "abs.db").is_file()
    cases = [
        ("mysql://h/db", r"unknown ledger kind 'mysql'"),
        ("sqlite://rel.db", r"a SQLite URL is sqlite:///relative/path"),
        (str(tmp_path / "no" / "l.db"), r"folder .*no does not exist"),
        (str(tmp_path), r"is a folder"),
    ]
    (tmp_path / "pool.csv").write_text("set,client_cert\n" * 200)
    cases.append((str(tmp_path / "pool.csv"), r"cannot read \(file is not a database\)"))
    for url, message in cases:
        with pytest.raises(LedgerError, match=message):
            open_ledger(url)


def test_a_libpq_keyword_string_and_any_scheme_case_reach_postgresql(pg_url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    keywords = (
        f"host={parts.hostname} port={parts.port} user={parts.username} dbname={parts.path[1:]}"
    )
    for url in (keywords, "PostgreSQL" + pg_url[len("postgresql") :]):
        ledger = open_ledger(url)
        try:
            ledger.claim(device=MAC1, station="s", sets=SETS)
            assert type(ledger).__name__ == "PostgresLedger"
        finally:
            ledger.close()
    (claim,) = _claims(pg_url)
    assert (claim.set_name, claim.attempts) == ("0001", 2)


def _claims(url: str) -> list:  # type: ignore[type-arg]
    ledger = open_ledger(url)
    try:
        return ledger.claims()
    finally:
        ledger.close()


def test_postgres_without_the_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    with pytest.raises(
        LedgerError, match=r"psycopg 3\) is not installed: pip install 'atflash\[postgres\]'"
    ):
        open_ledger("postgresql://ledger-host/atflash")


def test_a_postgres_error_never_shows_the_password() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(LedgerError) as caught:
        open_ledger("postgresql://line1:s3cret@127.0.0.1:1/atflash")  # nothing listens on port 1
    assert "s3cret" not in str(caught.value)
    assert str(caught.value).startswith(
        "ledger postgresql://line1:***@127.0.0.1:1/atflash: cannot connect"
    )


# -- concurrency: stations as separate processes ------------------------------------------

# One station: imports, says ready, then per job (one a line, all sent at once so that the
# stations claim together) opens the ledger, claims and answers, until its input ends.
STATION = r"""
import json, sys
from atflash.factory.errors import DeviceBusyError
from atflash.factory.ledger import open_ledger
print("ready", flush=True)
def claim(ledger, job, device):
    # With "runs", each station is a run of its own writing the device ("busy" if another is).
    run = f"{job['station']}-host/1/t" if job.get("runs") else None
    try:
        return ledger.claim(device=device, station=job["station"], sets=job["sets"], port=job["station"], run=run).set_name
    except DeviceBusyError:
        return "busy"
for line in sys.stdin:
    job = json.loads(line)
    ledger = open_ledger(job["url"])
    got = {d: claim(ledger, job, d) for d in job["devices"]}
    ledger.close()
    print(json.dumps(got), flush=True)
"""
STATION_TIMEOUT = 60  # seconds for a station to start, or to answer one job


def run_stations(
    url: str, rounds: list[list[list[str]]], sets: list[str], *, runs: bool = False
) -> list[list[dict[str, str]]]:
    """Per round, station ``n`` claims the ``n``-th list of devices, all at once; each one's device -> set.

    The same processes serve every round (station-0 stays station-0): a new
    Python process per station and round only cost imports.
    """
    procs = [
        subprocess.Popen([sys.executable, "-c", STATION], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in rounds[0]
    ]  # fmt: skip
    answers = [_lines_of(proc) for proc in procs]
    try:
        for proc, lines in zip(procs, answers, strict=True):
            assert _next_line(proc, lines) == "ready\n"
        results = []
        for work in rounds:
            for n, (proc, devices) in enumerate(zip(procs, work, strict=True)):
                job = {"url": url, "station": f"station-{n}", "devices": devices, "sets": sets,
                       "runs": runs}  # fmt: skip
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(job) + "\n")
                proc.stdin.flush()
            answered = zip(procs, answers, strict=True)
            results.append([json.loads(_next_line(proc, lines)) for proc, lines in answered])
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()  # no more jobs: the station ends
        for proc in procs:
            assert proc.wait(timeout=STATION_TIMEOUT) == 0, _errors_of(proc)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return results


def _lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The lines ``proc`` prints, as they come ("" once its output ends)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


@contextlib.contextmanager
def _stopped_inside_claim(script: str, url: str) -> Iterator[Callable[[], None]]:
    """A station (``script``) claiming one of sets 0001-0003 for MAC1, stopped inside its claim.

    Yields ``resume``: let it go on, and check it ends with set 0001. Killed
    on the way out, whatever happened.
    """
    stopped = subprocess.Popen(
        [sys.executable, "-c", script, url, MAC1, *SETS[:3]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines = _lines_of(stopped)

    def resume() -> None:
        stopped.send_signal(signal.SIGCONT)
        assert stopped.stdin is not None
        stopped.stdin.write("\n")
        stopped.stdin.flush()
        assert _next_line(stopped, lines) == "0001\n"  # its claim is not lost
        assert stopped.wait(timeout=STATION_TIMEOUT) == 0

    try:
        assert _next_line(stopped, lines) == "inside\n"
        stopped.send_signal(signal.SIGSTOP)
        yield resume
    finally:
        stopped.send_signal(signal.SIGCONT)
        stopped.kill()
        stopped.wait()


def _ends_in_bound(station: Callable[[], None]) -> None:
    """Run another ``station`` in a thread: it must end within STATION_TIMEOUT, stopped one or not."""
    worker = threading.Thread(target=station, daemon=True)
    worker.start()
    worker.join(timeout=STATION_TIMEOUT)
    assert not worker.is_alive(), "a station waited without bound for a stopped one"


def _next_line(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> str:
    """The next line of a station, waited for with a bound; its errors if it ended instead."""
    try:
        line = lines.get(timeout=STATION_TIMEOUT)
    except queue.Empty:
        raise AssertionError(f"a station said nothing for {STATION_TIMEOUT} s") from None
    if not line:
        proc.kill()
        proc.wait()
        raise AssertionError(f"a station ended: {_errors_of(proc)}")
    return line


def _errors_of(proc: subprocess.Popen[str]) -> str:
    """What an ended station wrote to stderr."""
    assert proc.stderr is not None
    return proc.stderr.read()


def merged(results: list[dict[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for result in results:
        for device, set_name in result.items():
            assert out.setdefault(device, set_name) == set_name, f"{device} got two sets"
    return out


@pytest.mark.parametrize("ledger_url", ["sqlite", "postgresql"], indirect=True)
def test_concurrent_stations_give_every_device_one_set_and_no_set_twice(ledger_url: str) -> None:
    # SQLite: 8 processes on one host; PostgreSQL: 4 stations against one server.
    n = 8 if ledger_url.endswith(".db") else 4
    # Every claim again in a second round, each device now from another station.
    rounds = [[DEVICES[k::n] for k in range(n)], [DEVICES[(k + 1) % n :: n] for k in range(n)]]
    first, again = (merged(results) for results in run_stations(ledger_url, rounds, SETS))
    assert sorted(first) == DEVICES
    assert sorted(first.values()) == SETS  # 200 devices, 200 sets: each set exactly once
    assert again == first  # nothing moves
    ledger = open_ledger(ledger_url)
    try:
        claims = ledger.claims()
    finally:
        ledger.close()
    assert len(claims) == 200 and {c.attempts for c in claims} == {2}
    assert {c.device: c.set_name for c in claims} == first


@pytest.mark.parametrize("ledger_url", ["sqlite", "postgresql"], indirect=True)
def test_one_device_claimed_by_every_station_at_once_gets_one_set(ledger_url: str) -> None:
    n = 8 if ledger_url.endswith(".db") else 4
    (results,) = run_stations(ledger_url, [[[MAC1]] * n], SETS)
    assert {r[MAC1] for r in results} == {"0001"}
    ledger = open_ledger(ledger_url)
    try:
        (claim,) = ledger.claims()
    finally:
        ledger.close()
    assert claim.attempts == n


# A station that stops inside its claim: the claim's INSERT is done, its transaction is
# open (holding the new row's locks) when the test stops the process with SIGSTOP.
STOPPABLE = r"""
import sys
from atflash.factory import ledger_pg
from atflash.factory.ledger import open_ledger
original = ledger_pg.PostgresLedger._claim_once
def held_open(self, *args, **kwargs):
    claim = original(self, *args, **kwargs)
    print("inside", flush=True)
    sys.stdin.readline()  # stopped here by the test, before the transaction commits
    return claim
ledger_pg.PostgresLedger._claim_once = held_open
ledger = open_ledger(sys.argv[1])
claim = ledger.claim(device=sys.argv[2], station="stopped", sets=sys.argv[3:], port="p", run="h/1/t")
print(claim.set_name, flush=True)
"""


def test_postgres_lock_waits_are_bounded_by_default_and_a_urls_own_bound_is_kept(
    pg_url: str,
) -> None:
    from atflash.factory.ledger_pg import LOCK_TIMEOUT, PostgresLedger

    for url, bound in ((pg_url, LOCK_TIMEOUT), (f"{pg_url}?options=-c%20lock_timeout%3D7s", "7s")):
        ledger = open_ledger(url)
        try:
            assert (
                isinstance(ledger, PostgresLedger)
                and ledger.lock_timeout
                == bound
                == (ledger._db.execute("SHOW lock_timeout").fetchone() or [""])[0]
            )
        finally:
            ledger.close()
    assert LOCK_TIMEOUT == "30s"  # the order of SQLite's busy timeout


LOCK_BOUND = 1  # seconds: the test ledger's lock_timeout, given in its URL as a user would


def test_a_station_stopped_inside_its_claim_holds_no_one_up_beyond_the_lock_timeout(
    pg_url: str,
) -> None:

    bounded = f"{pg_url}?options=-c%20lock_timeout%3D{LOCK_BOUND}s"
    open_ledger(bounded).close()  # tables made
    with _stopped_inside_claim(STOPPABLE, pg_url) as resume:
        outcome: dict[str, object] = {}

        def others() -> None:
            ledger = open_ledger(bounded)
            try:  # another device: waits once for set 0001, skips it, goes on with 0002
                outcome["other"] = ledger.claim(device=MAC2, station="s2", sets=SETS[:3]).set_name
                try:  # the stopped station's own device: fails, clearly, after the bound
                    ledger.claim(device=MAC1, station="s3", sets=SETS[:3])
                except LedgerError as exc:
                    outcome["same"] = str(exc)
            finally:
                ledger.close()

        _ends_in_bound(others)  # three lock waits of 1 s, and a margin
        assert outcome["other"] == "0002"
        assert "waited 1s for another station's claim of the same set or of " in str(
            outcome["same"]
        )
        assert "a station is stopped inside a claim" in str(outcome["same"])
        resume()
    assert {c.device: c.set_name for c in _claims(pg_url)} == {MAC1: "0001", MAC2: "0002"}


@pytest.mark.parametrize("ledger_url", ["sqlite", "postgresql"], indirect=True)
def test_one_mac_written_by_every_station_at_once_is_one_stations_and_the_others_are_refused(
    ledger_url: str,
) -> None:
    n = 8 if ledger_url.endswith(".db") else 4
    (results,) = run_stations(ledger_url, [[[MAC1]] * n], SETS, runs=True)
    got = sorted(r[MAC1] for r in results)
    assert got == ["0001"] + ["busy"] * (n - 1), got
    (claim,) = _claims(ledger_url)
    assert (claim.attempts, claim.busy_port) == (1, claim.station)


# The same stop on SQLite: inside BEGIN IMMEDIATE, the write lock held.
STOPPABLE_SQLITE = r"""
import sys
from atflash.factory import ledger_sql
from atflash.factory.ledger import open_ledger
original = ledger_sql.first_free  # the claim's logic, SqlLedger's, looks it up there
def held_open(sets, taken):
    print("inside", flush=True)
    sys.stdin.readline()  # stopped here by the test, holding the file's write lock
    return original(sets, taken)
ledger_sql.first_free = held_open
ledger = open_ledger(sys.argv[1])
claim = ledger.claim(device=sys.argv[2], station="stopped", sets=sys.argv[3:])
print(claim.set_name, flush=True)
"""


def test_a_station_stopped_inside_its_sqlite_claim_makes_the_others_fail_clearly_in_the_bound(
    tmp_path: Path,
) -> None:

    from atflash.factory.ledger_sqlite import BUSY_TIMEOUT, SqliteLedger

    path = tmp_path / "ledger.db"
    open_ledger(str(path)).close()
    with _stopped_inside_claim(STOPPABLE_SQLITE, str(path)) as resume:
        outcome: dict[str, str] = {}

        def other() -> None:  # the bound is BUSY_TIMEOUT (30 s); this station's is 1 s
            ledger = SqliteLedger(path, busy_timeout=LOCK_BOUND)
            try:
                ledger.claim(device=MAC2, station="s2", sets=SETS[:3])
            except LedgerError as exc:
                outcome["error"] = str(exc)
            finally:
                ledger.close()

        _ends_in_bound(other)
        assert outcome["error"] == (
            f"ledger {path}: cannot claim (database is locked): another process holds the "
            "ledger locked; is a station stuck?"
        )
        resume()
    assert {c.device: c.set_name for c in _claims(str(path))} == {MAC1: "0001"}
    assert BUSY_TIMEOUT == 30.0


# -- the resolver the write flow uses -----------------------------------------------------


def test_pool_resolver_claims_by_mac_and_returns_the_sets_plans(
    credential_pool: Path, ledger_url: str
) -> None:
    import pickle

    esp32 = find_profile("esp32")
    resolver = pool_resolver(credential_pool, ledger_url, station="bench-1", profiles=[esp32])
    resolver = pickle.loads(pickle.dumps(resolver))  # as a batch worker receives it
    (plan,) = resolver(BoardIdentity("socket://a", chip="esp32", mac=MAC1))
    keys = {img.partition.name: img.sources for img in plan.images}["client_key"]
    assert keys == (str(credential_pool / "0001" / "client_key.key"),)
    (again,) = resolver(BoardIdentity("socket://b", chip="esp32", mac="24:0A:C4:00:00:01"))
    assert [i.sha256 for i in again.images] == [i.sha256 for i in plan.images]
    with pytest.raises(DeviceError, match=r"socket://c: the board's MAC is unknown"):
        resolver(BoardIdentity("socket://c", chip="esp32"))


def test_pool_resolver_in_a_batch_one_set_per_board_recorded_and_kept_on_reflash(
    credential_pool: Path, ledger_url: str, board_pool: BoardPool
) -> None:
    # Mock boards of one chip share a MAC; an ESP32 and an ESP32-C3 differ.
    with board_pool.lease("esp32") as esp32, board_pool.lease("esp32c3") as esp32c3:
        boards = [esp32, esp32c3]
        for board in boards:
            flash_esp_at(board)
        profiles = [find_profile("esp32"), find_profile("esp32c3")]
        resolver = pool_resolver(credential_pool, ledger_url, station="bench-1", profiles=profiles)
        jobs = [
            BoardJob(
                b.url,
                ConnectOptions(b.url, before="no-reset", after="no-reset", connect_attempts=1),
                resolver,
            )
            for b in boards
        ]
        for _run in range(2):  # the second run is a re-flash: same sets, none burnt
            results = run_batch(jobs)
            assert [r.outcome for r in results] == ["ok", "ok"], [r.error for r in results]
            for result in results:
                assert resolver.record(result) is not None
        ledger = open_ledger(ledger_url)
        try:
            claims = {c.device: c for c in ledger.claims()}
        finally:
            ledger.close()
        assert sorted(c.set_name for c in claims.values()) == ["0001", "0002"]
        for board, result in zip(boards, results, strict=True):
            assert result.mac is not None
            claim = claims[result.mac]
            assert (claim.result, claim.attempts, claim.station) == ("ok", 2, "bench-1")
            assert claim.image_sha256 == {p.name: p.sha256 for p in result.partitions}
            profile = find_profile(board.chip)
            (plan,) = [
                p
                for p in resolver(BoardIdentity(board.url, mac=result.mac))
                if p.profile == profile
            ]
            key = next(i for i in plan.images if i.partition.name == "client_key")
            assert key.sources == (str(credential_pool / claim.set_name / "client_key.key"),)
            assert flash_holds(board, key.address, key.padded)


def test_a_resolver_records_nothing_for_a_board_without_a_claim(
    credential_pool: Path, tmp_path: Path
) -> None:
    resolver = PoolResolver(
        pool=load_pool(credential_pool),
        ledger_url=str(tmp_path / "l.db"), station="s", profiles=(find_profile("esp32"),),
    )  # fmt: skip
    assert resolver.record(BoardResult(port="p", mac=MAC1, error="boom")) is None
    assert resolver.record(BoardResult(port="p", mac=None, error="no answer")) is None


# -- the commands -------------------------------------------------------------------------


def test_ledger_show_export_and_release_commands(ledger_url: str, tmp_path: Path) -> None:
    ledger = open_ledger(ledger_url)
    try:
        first = ledger.claim(device=MAC1, station="bench-1", sets=SETS)
        ledger.record(first, result="ok", image_sha256={"client_key": "ab" * 32})
        ledger.claim(device=MAC2, station="bench-2", sets=SETS)
    finally:
        ledger.close()

    shown = run("ledger", "show", ledger_url)
    assert shown.exit_code == 0, shown.output
    header, *rows = shown.stdout.splitlines()
    assert header.split() == [
        "set",
        "device",
        "station",
        "claimed",
        "(UTC)",
        "tries",
        "result",
        "released",
        "(UTC)",
    ]
    assert [r.split()[:3] + r.split()[5:] for r in rows] == [
        ["0001", MAC1, "bench-1", "1", "ok", "-"], ["0002", MAC2, "bench-2", "1", "-", "-"],
    ]  # fmt: skip
    one = run("ledger", "show", ledger_url, "--device", "24-0A-C4-00-00-02", "--json")
    assert [c["set"] for c in json.loads(one.stdout)] == ["0002"]
    assert run("ledger", "show", ledger_url, "--since", "2999-01-01").stdout == "no claims\n"
    bad = run("ledger", "show", ledger_url, "--since", "yesterday")
    assert (bad.exit_code, bad.stderr) == (
        EXIT_USER_ERROR,
        "atflash: error: --since 'yesterday' is not a date: give YYYY-MM-DD or YYYY-MM-DDTHH:MM\n",
    )

    out = tmp_path / "ledger.csv"
    assert run("ledger", "export", ledger_url, "-o", str(out)).stdout == f"{out}: 2 claims\n"
    lines = out.read_text().splitlines()
    assert (
        lines[0]
        == "set,device,station,claimed_at,attempts,result,recorded_at,released_at,image_sha256"
    )
    assert lines[1].startswith(f"0001,{MAC1},bench-1,") and lines[1].endswith(
        f",ok,{lines[1].split(',')[6]},,client_key={'ab' * 32}"
    )
    as_json = tmp_path / "ledger.json"
    run("ledger", "export", ledger_url, "-o", str(as_json))
    assert [c["image_sha256"] for c in json.loads(as_json.read_text())] == [
        {"client_key": "ab" * 32},
        {},
    ]
    assert (
        run("ledger", "export", ledger_url, "-o", str(tmp_path / "x.txt")).exit_code
        == EXIT_USER_ERROR
    )

    refused = run("ledger", "release", ledger_url, "0001")
    assert refused.exit_code == EXIT_USER_ERROR
    assert "not releasing set 0001" in refused.stderr and "--yes" in refused.stderr
    assert json.loads(run("ledger", "show", ledger_url, "--json").stdout)[0]["released_at"] is None
    released = run("ledger", "release", ledger_url, "0001", "--yes")
    assert released.exit_code == 0, released.output
    assert released.stdout.startswith(f"set 0001 released (held by {MAC1} since ")
    assert (
        json.loads(run("ledger", "show", ledger_url, "--json").stdout)[0]["released_at"] is not None
    )
    again = run("ledger", "release", ledger_url, "0001", "--yes")
    assert (
        again.exit_code == EXIT_USER_ERROR and "set 0001 is not held by any device" in again.stderr
    )


def test_reading_commands_never_create_a_ledger(ledger_url: str) -> None:
    # A mistyped path or database must not become a new, empty ledger.
    for args in (["show", ledger_url], ["release", ledger_url, "0001", "--yes"]):
        result = run("ledger", *args)
        assert result.exit_code == EXIT_USER_ERROR
        assert re.search(r"no such ledger file|no atflash ledger in this database", result.stderr)
        assert "a station creates the ledger on its first claim" in result.stderr
    assert not Path(ledger_url).exists() or ledger_url.startswith("postgresql://")
    with pytest.raises(LedgerError):
        open_ledger(ledger_url, create=False)


def test_write_with_a_pool_through_the_cli_claims_one_set_per_board(
    credential_pool: Path, tmp_path: Path
) -> None:
    """`atflash write --pool POOL --ledger FILE`: each board claims a set, a re-run keeps it."""
    from click.testing import CliRunner

    from atflash.cli import cli

    ledger = tmp_path / "ledger.sqlite"
    boards = [
        start_strict("esp32", flash=board_flash("esp32"), mac=f"24:0a:c4:00:10:0{n}")
        for n in (1, 2)
    ]
    try:
        args = ["write", "--chip", "esp32", "--before", "no-reset", "--after", "no-reset",
                "--pool", str(credential_pool), "--ledger", str(ledger), "--station", "line-1",
                "--report", str(tmp_path / "run.json")]  # fmt: skip
        for board in boards:
            args += ["--port", board.url]
        for _run in range(2):
            result = CliRunner().invoke(cli, args, catch_exceptions=False)
            assert result.exit_code == 0, result.output
        store = open_ledger(str(ledger))
        try:
            claims = {c.device: c for c in store.claims()}
        finally:
            store.close()
        assert set(claims) == {"24:0a:c4:00:10:01", "24:0a:c4:00:10:02"}
        assert sorted(c.set_name for c in claims.values()) == ["0001", "0002"]
        assert {(c.result, c.attempts, c.station) for c in claims.values()} == {("ok", 2, "line-1")}
    finally:
        for board in boards:
            board.stop()
