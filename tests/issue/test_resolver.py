"""The write flow's resolver without boards: a retried board's first certificate and a board
lost before its result are superseded (so in the CRL), never left live."""

from __future__ import annotations

from pathlib import Path

import atflash
from atflash.issue import IssueResolver
from atflash.layout.profiles import find_profile
from atflash.planning.plan import BoardIdentity
from atflash.results import BoardResult
from tools.issuing import make_ca

MAC = "24:0a:c4:03:00:01"


def test_a_retry_and_a_lost_board_leave_no_stray_live_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    with atflash.Issuer.open(ca.issuer, station="t") as issuer:
        resolver = IssueResolver(issuer, [find_profile("esp32")])
        board = BoardIdentity("p0", chip="esp32", mac=MAC)
        resolver(board)  # attempt 1: its worker failed before a result
        resolver(board)  # attempt 2 (a retry): attempt 1's certificate superseded
        resolver.on_result(BoardResult(port="p0", mac=MAC))  # written and verified
        resolver(BoardIdentity("p1", chip="esp32", mac="24:0a:c4:03:00:02"))  # lost
        assert len(resolver.finish()) == 1
        records = issuer.records()
    by_device = {(r.device, r.live): r for r in records}
    assert len(records) == 3
    assert by_device[(MAC, True)].result == "ok"
    assert by_device[(MAC, False)].reason == "write failed"
    lost = by_device[("24:0a:c4:03:00:02", False)]
    assert lost.result == "failed" and lost.reason == "write failed"
