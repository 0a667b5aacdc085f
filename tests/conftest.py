"""Shared test fixtures: the ESP-AT sample credentials, a generated credential pool; Hypothesis profiles."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.postgres import PostgresServer, PostgresUnavailable, required, start_postgres
from tests.support.samples import RAW, SAMPLE

# No profile times an example: Hypothesis's 200 ms deadline and its too_slow
# health check are wall-clock thresholds, and a full parallel run on two cores
# (mocks and relays included) crosses them now and then. The test then fails
# with DeadlineExceeded, "Unreliable test timings" or FailedHealthCheck, and
# passes when run alone. Speed is shown by bench scripts, never by tests.
UNTIMED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A developer's run explores: fresh random examples each time.
settings.register_profile("dev", UNTIMED)
# On CI the property tests run the same examples every time: a red CI must be
# reproducible, and exploring for new failures is the developers' runs' and
# the nightly's job.
settings.register_profile("ci", UNTIMED, derandomize=True, database=None)
# HYPOTHESIS_PROFILE=thorough (the nightly): fresh random examples, 30 times as
# many (tests that set their own count scale it with tests.support.fuzzing.examples),
# and no per-test timeout (see pytest_collection_modifyitems).
settings.register_profile("thorough", UNTIMED, max_examples=3000, derandomize=False)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)


@pytest.fixture(scope="session")
def raw() -> Path:
    """ESP-AT's sample credentials folder (one subfolder per partition)."""
    return RAW


@pytest.fixture
def sample() -> dict[str, Path]:
    """One sample credential file per role (``tests.support.samples.SAMPLE``), a copy to change."""
    return dict(SAMPLE)


POOL_SETS = 200


@pytest.fixture(scope="session")
def credential_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder pool of sets 0001..0200, each with its own EC key and certificate.

    Every set also holds the same CA. Real, distinct credentials (about
    0.05 s for 200), made once per session: treat the folder as read-only
    and copy it to change a set.
    """
    from tools.certs import write_pool  # cryptography loads only for the tests that use the pool

    root = tmp_path_factory.mktemp("pool")
    write_pool(
        root,
        POOL_SETS,
        ca_name="atflash test CA",
        device_name=lambda n: f"device {n:04d}",
        ca_signs=False,
    )
    return root


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("atflash hardware")
    group.addoption("--hw-port", help="A real board's port: runs the tests marked 'hardware'.")
    group.addoption("--hw-chip", default="auto", help="Its chip or profile (default: auto).")
    group.addoption(
        "--hw-via", default="esptool", choices=("esptool", "at"), help="How to reach it."
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if PROFILE == "thorough":  # long property runs are the point: no per-test timeout for them
        for item in items:
            if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
                item.add_marker(pytest.mark.timeout(0))
    if config.getoption("--hw-port"):
        return
    skip = pytest.mark.skip(reason="needs a real board: pass --hw-port")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """atflash's journal of whole-mfg_nvs writes goes to a fresh folder, never the user's own."""
    folder = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("ATFLASH_STATE_DIR", str(folder))
    return folder


# -- PostgreSQL ---------------------------------------------------------------------------

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server per test process, stopped and deleted at its end
    (also on failures); skipped with the reason where none can start, unless CI requires it."""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        if required():
            pytest.fail(f"PostgreSQL is required here (ATFLASH_TEST_POSTGRES=required): {exc}")
        pytest.skip(f"PostgreSQL cannot start here: {exc}")
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    return postgres_server.create_database(f"ledger_{next(_databases)}")
