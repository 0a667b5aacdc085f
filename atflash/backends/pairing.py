"""The board's resulting certificate/key pairs: a write never leaves a pair that does not match.

A plan's own pairs are checked while planning (:func:`atflash.planning.plan.check_pairs`).
A plan that writes ``X_cert`` without ``X_key`` (or the key alone) pairs
the new items with what the board keeps: a board given a new certificate
and left with the previous device's key would hold a pair no TLS peer
accepts. Before anything is written, the partner is read from the board
and paired item by item; a partner that is blank, or holds nothing
atflash can read as credentials, has nothing to mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from atflash.content import mfgnvs, pki
from atflash.content.nvs import parse_nvs
from atflash.content.pairing import check_pairs
from atflash.errors import AtflashError, DeviceError
from atflash.planning.plan import WritePlan


def partner_of(name: str) -> str | None:
    """``client_cert`` -> ``client_key`` and back; None for anything else."""
    for mine, other in (("_cert", "_key"), ("_key", "_cert")):
        if name.endswith(mine):
            return name[: -len(mine)] + other
    return None


def check_board_pairs(session: Any, plan: WritePlan) -> None:
    """Refuse (before writing) a lone certificate or key that would not match the board's partner."""
    written = {img.partition.name: img for img in plan.images}
    for name, image in written.items():
        partner = partner_of(name)
        if partner is None or partner in written or not image.items:
            continue
        kept = _board_items(session, partner, plan)
        if not kept:
            continue
        certs, keys = (image.items, kept) if name.endswith("_cert") else (kept, image.items)
        try:
            check_pairs(certs, keys)
        except AtflashError as exc:
            raise DeviceError(
                session.port,
                f"{name} would not match the board's {partner}: {exc.message}",
                hint=f"write {partner} too (the set's own), or pass --no-pair-check",
            ) from None


def _board_items(session: Any, partner: str, plan: WritePlan) -> Sequence[tuple[str, bytes]]:
    """What the board's ``partner`` partition (or 3.1+ namespace) holds, as items."""
    try:
        _part, data = session.read_partition(partner, [plan.profile])
    except AtflashError:
        return ()  # the board has no such partition: nothing to pair with
    label = f"{session.port}: {partner}"
    if pki.is_pki_bin(data):
        try:
            return [(f"{label}[{item.id}]", item.content) for item in pki.parse(data).items]
        except AtflashError:
            return ()
    if not data or data.count(pki.ERASED) == len(data):
        return ()
    try:
        values = mfgnvs.credentials(parse_nvs(data, source=label), partner)
    except AtflashError:
        return ()
    return [(f"{label}.{n}", value) for n, value in enumerate(values)]
