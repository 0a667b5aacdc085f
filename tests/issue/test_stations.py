"""Two stations issuing from one CA through one ledger, at the same moments: no serial twice,
never two live certificates for one MAC (PostgreSQL, and SQLite, each station its own connection)."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from pathlib import Path

import pytest

import atflash
from atflash.issue.store import LiveCertificateError
from tools.issuing import make_ca

MACS = [f"24:0a:c4:01:00:{n:02x}" for n in range(24)]
_databases = itertools.count(1)


def stations_race(issuer_file: Path, ledger: str) -> dict[str, int]:
    """Two stations issue for the same MACs at once: first without --reissue, then with it.

    Each station is a thread with its own issuer (its own connection), as a process would be.
    """
    refused = Counter[str]()
    barrier = threading.Barrier(2)

    def station(name: str) -> None:
        with atflash.Issuer.open(issuer_file, station=name, ledger=ledger) as issuer:
            barrier.wait(timeout=30)
            for mac in MACS:
                try:
                    issuer.issue(mac)
                except LiveCertificateError:
                    refused[name] += 1
            barrier.wait(timeout=30)
            for mac in MACS:
                issuer.issue(mac, reissue=True)

    threads = [threading.Thread(target=station, args=(f"st{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return dict(refused)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_two_stations_never_reuse_a_serial_nor_give_a_mac_two_live_certificates(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "postgresql":
        server = request.getfixturevalue("postgres_server")
        ledger = server.create_database(f"issued_{next(_databases)}")
    else:
        ledger = str(tmp_path / "shared.sqlite")
    ca = make_ca(tmp_path / "ca")
    refused = stations_race(ca.issuer, ledger)
    with atflash.Issuer.open(ca.issuer, ledger=ledger) as issuer:
        records = issuer.records()
    # First round: each MAC issued once, the other station refused for it.
    assert sum(refused.values()) == len(MACS)
    # Second round: every reissue superseded the live one; 3 certificates per MAC in all.
    assert len(records) == 3 * len(MACS)
    assert len({r.serial for r in records}) == len(records)
    live = Counter(r.device for r in records if r.live)
    assert live == dict.fromkeys(MACS, 1)
    assert {r.station for r in records} == {"st1", "st2"}
