"""The bridge to the write flow: a board identified, its certificate issued (or kept), its plans.

:class:`IssueResolver` is a plan resolver that runs in the process holding
the issuer (the batch parent, or the one process of a single board): the CA
key or the token session never goes to a worker. Its ``reads`` tells the
flow which partitions to read back from the board first
(:func:`atflash.backends.held.read_items`), so that a rerun on a board already holding a valid
certificate of this issuer keeps it: the plan is then what the board holds,
and the write finds everything unchanged and verifies it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from atflash.errors import AtflashError, DeviceError
from atflash.issue.issuer import Issuer, check_escrow_dir
from atflash.layout.model import Profile
from atflash.offline import requests_from
from atflash.planning.plan import BoardIdentity, PlanOptions, WritePlan, build_plans, request_names
from atflash.results import BoardResult


class IssueResolver:
    """Issues a certificate for each board by MAC (or keeps the valid one it holds)."""

    def __init__(
        self,
        issuer: Issuer,
        profiles: Sequence[Profile],
        options: PlanOptions | None = None,
        *,
        reissue: bool = False,
        escrow: str | None = None,
    ) -> None:
        self.issuer = issuer
        self.profiles = tuple(profiles)
        self.options = options or PlanOptions()
        self.reissue = reissue
        self.escrow = escrow
        # --reissue replaces whatever the board holds: nothing to read back first.
        self.reads: tuple[str, ...] = () if reissue else issuer.reads
        self.pending: dict[
            str, str
        ] = {}  # MAC -> serial issued in this run, its write not recorded
        self.kept: dict[str, str] = {}  # MAC -> serial a rerun kept
        self.escrowed: dict[str, str] = {}  # MAC -> escrow file

    @classmethod
    def checked(
        cls,
        issuer: Issuer,
        profiles: Sequence[Profile],
        options: PlanOptions | None = None,
        *,
        reissue: bool = False,
        escrow: str | os.PathLike[str] | None = None,
    ) -> IssueResolver:
        """A resolver whose escrow folder and passphrase were checked: before any board, so a
        run that could not escrow a key never issues one (every way to issue comes here)."""
        if escrow is not None:
            check_escrow_dir(escrow)
        return cls(
            issuer,
            profiles,
            options,
            reissue=reissue,
            escrow=os.fspath(escrow) if escrow is not None else None,
        )

    def __call__(self, identity: BoardIdentity) -> Sequence[WritePlan]:
        mac = identity.mac
        if not mac:
            raise DeviceError(
                identity.port, "the board's MAC is unknown, and certificates are issued by MAC"
            )
        held = None if self.reissue else self.issuer.held(mac, identity.held)
        if held is not None:
            self.kept[mac] = held.serial
            credentials = self.issuer.credentials(held)
        else:
            if (
                mac in self.pending
            ):  # an earlier attempt of this run failed: supersede its certificate
                self.issuer.record(self.pending.pop(mac), ok=False)
            leaf = self.issuer.issue(mac, chip=identity.chip, reissue=self.reissue)
            self.pending[mac] = leaf.serial
            credentials = self.issuer.credentials(leaf)
            if self.escrow is not None:
                self.escrowed[mac] = str(self.issuer.escrow(leaf, self.escrow, mac))
        try:
            requests = requests_from(credentials, request_names(self.profiles))
            plans = tuple(build_plans(self.profiles, requests, options=self.options))
        except AtflashError:
            if mac in self.pending and held is None:
                self.issuer.record(self.pending.pop(mac), ok=False)
            raise
        return plans

    def on_result(self, result: BoardResult) -> None:
        """A batch's ``on_result``: the outcome stored as the board ends; a ledger that cannot
        store it marks the board ``unrecorded`` (its log and report still say what it holds)."""
        try:
            self.record(result)
        except AtflashError as exc:
            result.unrecorded = str(exc)

    def finish(self) -> list[str]:
        """Certificates issued for boards whose write never reported back (a worker lost):
        recorded as failed, so superseded and in the CRL. Returns their serials."""
        left = list(self.pending.values())
        if left:
            self.issuer.record(left, ok=False)
        self.pending.clear()
        return left

    def record(self, result: BoardResult) -> str | None:
        """Store how the write of this board's new certificate ended; returns its serial."""
        if result.mac is None:
            return None
        serial = self.pending.pop(result.mac, None)
        if serial is not None:
            self.issuer.record(serial, ok=result.ok)
        return serial
