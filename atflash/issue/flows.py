"""Issuing through the Python API: one connected board, or a batch (``Issuer.write``/``run_batch``).

The same steps as ``atflash write --issue``: read back what the board holds,
keep a valid certificate of this issuer for its MAC (nothing is written,
everything verified) or issue a new one in memory, write and verify it, and
record in the ledger how the write ended.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from atflash.content.stored import items_in
from atflash.errors import AtflashError
from atflash.events import EventSink
from atflash.issue.resolve import IssueResolver
from atflash.layout.choice import LayoutChoice
from atflash.results import BoardResult

if TYPE_CHECKING:
    from atflash.api import Board
    from atflash.issue.issuer import Issuer
    from atflash.run.runner import RunOutcome


def write_board(
    issuer: Issuer,
    board: Board,
    *,
    reissue: bool = False,
    escrow: str | os.PathLike[str] | None = None,
    on_event: EventSink | None = None,
) -> BoardResult:
    """Give one connected board its certificate (or keep the valid one it holds), verified."""
    held: dict[str, tuple[bytes, ...]] = {}
    for name in issuer.reads:
        try:
            held[name] = items_in(name, board.read(name).data)
        except AtflashError:
            continue  # nothing readable there: nothing held
    kept = None if reissue else issuer.held(board.mac or "", held)
    if kept is not None:
        return board.write(board.plan(issuer.credentials(kept)), on_event=on_event)
    if escrow is not None:
        from atflash.issue.issuer import check_escrow_dir

        check_escrow_dir(escrow)
    if not board.mac:
        raise AtflashError(
            f"{board.port}: the board's MAC is unknown, and certificates are issued by MAC"
        )
    leaf = issuer.issue(board.mac, chip=board.chip, reissue=reissue)
    try:
        if escrow is not None:
            issuer.escrow(leaf, escrow, board.mac)
        plan = board.plan(issuer.credentials(leaf))
    except BaseException:
        issuer.record(leaf.serial, ok=False)
        raise
    result = board.write(plan, on_event=on_event)
    issuer.record(leaf.serial, ok=result.ok)
    return result


def run_batch(
    issuer: Issuer,
    ports: str | Sequence[str],
    *,
    reissue: bool = False,
    escrow: str | os.PathLike[str] | None = None,
    chip: str | None = None,
    profile: str | os.PathLike[str] | None = None,
    **options: Any,
) -> RunOutcome:
    """Many boards at once (see :func:`atflash.run_batch` for ``options``): each its own certificate."""
    from atflash.api import run_batch as run

    if escrow is not None:
        from atflash.issue.issuer import check_escrow_dir

        check_escrow_dir(escrow)
    profiles = LayoutChoice.of(chip, os.fspath(profile) if profile else None).profiles()
    resolver = IssueResolver(
        issuer, profiles, reissue=reissue, escrow=os.fspath(escrow) if escrow else None
    )
    outcome = run(ports, resolver, **options)
    for result in outcome.results:
        resolver.record(result)
    resolver.finish()
    return outcome
