"""The station loop: slots wait for boards, each board is provisioned once, counted and logged.

One thread (the caller's) runs the loop: it looks at every empty slot,
starts a cycle for a board that arrived, collects finished cycles, and
watches each finished board until it goes away. A cycle is a one-board
batch (:func:`atflash.run.workers.run_batch`) run from a thread of its own: the
board gets its own worker process, its plan is made here, in this process,
by ``plan_for`` with the board's identity (a CA key or an HSM session never
leaves it), and Ctrl-C or SIGTERM wind it down as they wind down a batch.

The cycle of a slot::

    empty --board arrives--> working --> ok | failed | remove --board goes--> empty

``remove`` is a board left alone: provisioned before (its MAC is among the
boards this station has done, from this run or from the log), or refused by
``plan_for`` (no manifest row). A board left in place is never written
twice: a slot waits for its board to go before it looks for the next one.
Where the bridge stays plugged in (``persistent``), the board is asked who
it is every ``probe_interval``: no answer for ``gone_after`` seconds is a
board gone, another MAC a new board.

Every finished cycle is appended to the provisioning log at once (one JSON
line, :mod:`atflash.run.audit`, with the slot's name and this run's session),
and the report (:mod:`atflash.run.report`) is written when the station stops,
from this session's lines of the log.
"""

from __future__ import annotations

import datetime
import os
import queue
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from atflash.backends import registry
from atflash.backends.base import WriteOptions, new_result
from atflash.errors import AtflashError, BoardSkipped, InputError, one_line
from atflash.events import Event
from atflash.offline import Plan, candidates_of
from atflash.planning.plan import BoardIdentity, WritePlan
from atflash.ports import PortInfo, is_url, list_ports
from atflash.results import BoardResult, PartitionStatus
from atflash.run import audit
from atflash.run.report import report_of_records, write_report
from atflash.run.slots import SlotSpec, parse_slots
from atflash.run.workers import (
    DEFAULT_ATTEMPT_TIMEOUT,
    DEFAULT_STOP_GRACE,
    BatchOptions,
    BoardJob,
    FromParent,
    StopRequest,
    plan_seen,
    run_batch,
    warm_up,
)
from atflash.station.probe import identify
from atflash.station.slots import Slot, SlotState, short_reason
from atflash.station.tally import LOG_SLOT_KEY, Tally, restore

PlanSource = Callable[[BoardIdentity], Sequence[WritePlan]]
_MAC_IN_EVENT = re.compile(r"MAC ([0-9a-f]{2}(?::[0-9a-f]{2}){5})")
_LISTING_EVERY = 0.5  # seconds between listings of the OS's serial ports
_LOG_CONTEXT = ("format", "version", "action", "host", "atflash", "esptool")


@dataclass(frozen=True)
class StationOptions:
    """How often a station looks, and how long a missing board takes to count as gone."""

    poll: float = 0.5  # seconds between looks at the slots
    gone_after: float = 2.0  # a board missing this long is gone (a USB reset is shorter)
    probe_interval: float = 1.0  # persistent slots: seconds between questions to the board
    stop_grace: float = DEFAULT_STOP_GRACE  # after Ctrl-C: time for boards in progress
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT


@dataclass
class StationOutcome:
    """What a station's run did: its counts, the report written, and the signal that ended it."""

    counts: dict[str, Any]
    report: dict[str, Any] | None
    stopped_by: int | None
    cycles: int  # boards finished in this run

    @property
    def exit_code(self) -> int:
        """128 + the signal (130 Ctrl-C, 143 SIGTERM) when one stopped it, else 0."""
        return 128 + self.stopped_by if self.stopped_by is not None else 0


@dataclass
class _Work:
    """A thread working on a slot: a cycle (write) or a probe (who is there)."""

    kind: str
    thread: threading.Thread
    connected: bool = False  # the board answered (a cycle's "connected" event came)
    given: Sequence[WritePlan] = field(default_factory=tuple)
    statuses: dict[str, PartitionStatus] = field(default_factory=dict)  # last seen, by partition


class Station:
    """Slots that wait for boards, provision each once, and count; see the module docstring.

    ``slots`` are port names, tables (``{"location": "1-1.2", "name": "A"}``)
    or :class:`SlotSpec`. ``plan_for`` is called in the thread that runs
    :meth:`run`, one board at a time, with each board's identity and returns
    its plans (raise :class:`~atflash.errors.BoardSkipped` to leave a board
    alone); what it holds (a ledger connection, a token session) is only ever
    used from that thread. Its ``on_result(result)`` or ``record(result)``
    (an issuer's, a pool's), if it has one, is called there with each
    board's result, and its ``finish()`` when the station stops. Callbacks,
    all optional: ``on_event(slot, event)`` for every step of a board (from
    the cycle's thread), ``on_result(slot, result)`` for each finished board
    and ``on_change(slot)`` for each change of a slot (a dict, as
    :meth:`snapshot` lists them), both from the loop's thread. ``link``
    holds the bench file's link options (``baud``, ``before``, ``after``,
    ``connect_attempts``, ``chunk_size``, ``table_offset``); ``log`` and
    ``report`` may use ``{date}`` and ``{time}``, and are checked writable
    here, before any board.
    """

    def __init__(
        self,
        slots: Sequence[str | Mapping[str, Any] | SlotSpec],
        plan_for: PlanSource | Plan,
        *,
        via: str = "esptool",
        link: Mapping[str, Any] | None = None,
        write_options: WriteOptions | None = None,
        name: str | None = None,
        log: str | os.PathLike[str] | None = None,
        report: str | os.PathLike[str] | None = None,
        options: StationOptions | None = None,
        on_event: Callable[[str, Event], None] | None = None,
        on_result: Callable[[str, BoardResult], None] | None = None,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        from atflash.factory.resolve import default_station
        from atflash.run.config import check_outputs

        self.specs = parse_slots(list(slots))
        self.backend = registry.get(via)
        self.link = dict(link or {})
        self.write_options = write_options or WriteOptions()
        if isinstance(plan_for, Plan):  # one plan for every board
            self.write_options = replace(self.write_options, explicit_layout=plan_for.explicit)
        self.plan_for: PlanSource = _fixed(plan_for) if isinstance(plan_for, Plan) else plan_for
        self.name = name or default_station()
        self.options = options or StationOptions()
        self.started = datetime.datetime.now()
        self.log = audit.stamp_path(os.fspath(log), self.started) if log is not None else None
        self.report = (
            audit.stamp_path(os.fspath(report), self.started) if report is not None else None
        )
        check_outputs(report=self.report, backup=None)
        for spec in self.specs:  # every slot's options are valid before the first board
            self.backend.connect_options(spec.port or "probe", self.link)
        self.on_event, self.on_result, self.on_change = on_event, on_result, on_change
        self.session = uuid.uuid4().hex[:12]
        self.slots = {spec.name: Slot(spec) for spec in self.specs}
        self.tally = Tally()
        self.records: list[dict[str, Any]] = []  # only without a log: the report's boards
        self.cycles = 0
        self.version = 0  # goes up with every change: views redraw when it does
        self.lock = threading.RLock()
        self.line: dict[str, Any] | None = None  # set by a line view (atflash.station.line)
        self._work: dict[str, _Work] = {}
        # Once: the same for every board, and looking versions up per board churns
        # importlib.metadata's caches (a new lookup whenever a sys.path folder changes).
        self._context = audit.LogContext.here("write", self.name)
        self._done: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        self._stop = StopRequest()
        self._listing: tuple[float, list[PortInfo]] = (0.0, [])
        if self.log is not None:
            audit.check_log(self.log)
            self._restore(self.log)

    # -- what the views read ----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole station as JSON-ready data: slots, counts, events, and the line if known."""
        with self.lock:
            return {
                "station": self.name,
                "version": self.version,
                "now": time.time(),
                "started": self.tally.started,
                "stopping": self._stop.requested,
                "slots": [slot.to_json() for slot in self.slots.values()],
                "counts": self.tally.to_json(),
                "line": self.line,
            }

    # -- the loop ---------------------------------------------------------------------

    def run(self, stop: StopRequest | None = None) -> StationOutcome:
        """Run until ``stop`` is requested (see :func:`atflash.run.workers.stop_on_signals`).

        Boards in progress then finish (or are interrupted after the grace
        time, as in a batch), their lines are logged, the report is written
        and the counts returned. A ``KeyboardInterrupt`` reaching the loop
        (Ctrl-C without ``stop_on_signals``) is a stop request too; a board
        stopped before it answered was never touched and is not logged.
        """
        self._stop = stop or StopRequest()
        warm_up(backends=[self.backend.name])
        started = time.monotonic()
        while not (self._stop.requested and not self._work):
            try:
                self._collect(self.options.poll)
                if not self._stop.requested:
                    self._look_all()
            except KeyboardInterrupt:  # no stop_on_signals around us: Ctrl-C stops the safe way
                self._stop.request(signal.SIGINT)
        finish = getattr(self.plan_for, "finish", None)
        if finish is not None:
            finish()  # an issuer: a certificate whose board never reported back is superseded
        self._changed()
        report = self._write_report(time.monotonic() - started)
        return StationOutcome(
            self.tally.to_json(), report, stopped_by=self._stop.signum, cycles=self.cycles
        )

    def _look_all(self) -> None:
        now = time.monotonic()
        listing = self._ports_now(now)
        for slot in self.slots.values():
            if slot.spec.name not in self._work:
                self._look(slot, listing, now)

    def _ports_now(self, now: float) -> list[PortInfo]:
        """The OS's serial ports, listed at most every half second, only for slots that need it."""
        if not any(spec.needs_listing or _com_name(spec.port) for spec in self.specs):
            return []
        when, listing = self._listing
        if now - when >= _LISTING_EVERY:
            listing = list_ports()
            self._listing = (now, listing)
        return listing

    def _look(self, slot: Slot, listing: list[PortInfo], now: float) -> None:
        spec = slot.spec
        if slot.state == SlotState.EMPTY:
            device = spec.find(listing)
            if device is None or (spec.persistent and now < slot.next_probe):
                return
            slot.next_probe = now + self.options.probe_interval
            if not spec.persistent:
                self._set(slot, SlotState.WORKING, "board in: provisioning")
            self._start(slot, device, "cycle")
            return
        if not slot.state.waiting_for_removal:
            return
        if spec.persistent:
            if now >= slot.next_probe:
                slot.next_probe = now + self.options.probe_interval
                device = spec.find(listing)
                if device is None:
                    self._missing(slot, now)
                else:
                    self._start(slot, device, "probe")
            return
        if spec.find(listing) is None:
            self._missing(slot, now)
        else:
            slot.absent_since = None

    def _missing(self, slot: Slot, now: float) -> None:
        """The board did not show: gone once it has been missing for ``gone_after``."""
        if slot.absent_since is None:
            slot.absent_since = now
        if now - slot.absent_since >= self.options.gone_after:
            slot.absent_since = None
            self._set(slot, SlotState.EMPTY, "")

    # -- cycles and probes, each in a thread of its own -------------------------------

    def _start(self, slot: Slot, device: str, kind: str) -> None:
        name = slot.spec.name
        serial = self._serial_of(device)
        thread = threading.Thread(
            target=self._run_one, args=(name, device, kind, serial),
            name=f"atflash-station-{kind}-{name}", daemon=True,
        )  # fmt: skip
        self._work[name] = _Work(kind, thread)
        thread.start()

    def _serial_of(self, device: str) -> str | None:
        return next((p.serial_number for p in self._listing[1] if p.device == device), None)

    def _run_one(self, name: str, device: str, kind: str, serial: str | None) -> None:
        """A one-board batch: a cycle writes through ``plan_for``, a probe only asks who is there."""
        job = BoardJob(
            port=device,
            connect=self.backend.connect_options(device, self.link),
            # An issuer reads back what the board holds first (a valid certificate is kept).
            plans=FromParent.asking(self.plan_for),
            options=self.write_options,
            serial_number=serial,
            backend=self.backend.name,
        )
        options = BatchOptions(
            plan_for=lambda identity: self._ask_plan(name, identity),
            stop_grace=self.options.stop_grace,
            attempt_timeout=self.options.attempt_timeout,
        )
        try:
            if kind == "probe":
                (result,) = run_batch([job], runner=identify, options=options, stop=self._stop)
            else:
                (result,) = run_batch(
                    [job], options=options, events=lambda e: self._relay(name, e), stop=self._stop
                )
        except Exception as exc:  # a bug must not leave the slot working for ever
            result = BoardResult(port=device, error=f"internal error: {type(exc).__name__}: {exc}")
        self._done.put((name, kind, result))

    def _ask_plan(self, name: str, identity: BoardIdentity) -> Sequence[WritePlan]:
        """From a cycle's thread: the loop's thread makes the plans (see :meth:`_plan`)."""
        answer: Future[Sequence[WritePlan]] = Future()
        self._done.put((name, "plan", (identity, answer)))
        return answer.result()  # the loop answers within a tick; the batch bounds the wait

    def _plan(self, name: str, identity: BoardIdentity) -> Sequence[WritePlan]:
        """The board's plans from ``plan_for``, unless this station has done the board already.

        Called in the loop's thread only, one board at a time, as a batch's parent asks:
        ``plan_for`` need not be thread-safe, and what it holds (a ledger's connection, a
        token session) is used in the thread that opened it.
        """
        done = self.tally.done.get(identity.mac) if identity.mac else None
        if done is not None:
            raise BoardSkipped(identity.port, f"already provisioned {done}: not written again")
        plans = candidates_of(self.plan_for(identity))
        if not plans:
            raise InputError(f"{identity.port}: plan_for returned no plan")
        work = self._work.get(name)
        if work is not None:
            work.given = plans
        return plans

    def _relay(self, name: str, event: Event) -> None:
        work = self._work.get(name)
        if work is not None and event.partition and event.status is not None:
            work.statuses[event.partition] = event.status
        if event.kind == "connected":
            self._done.put((name, "connected", event))
        if self.on_event is not None:
            self.on_event(name, event)

    def _collect(self, timeout: float) -> None:
        """Handle what the threads finished; wait up to ``timeout`` for the first of it."""
        try:
            item = self._done.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(*item)
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                return

    def _handle(self, name: str, kind: str, payload: Any) -> None:
        slot = self.slots[name]
        if kind == "plan":
            identity, answer = payload
            try:
                answer.set_result(self._plan(name, identity))
            except Exception as exc:  # the batch turns it into this board's failure or skip
                answer.set_exception(exc)
            return
        if kind == "connected":
            work = self._work.get(name)
            if work is not None:
                work.connected = True
            match = _MAC_IN_EVENT.search(payload.message)
            if slot.state != SlotState.WORKING:
                self._set(slot, SlotState.WORKING, "board answered: provisioning")
            if match:
                slot.mac = match.group(1)
            return
        work = self._work.pop(name)
        work.thread.join()
        result: BoardResult = payload
        if kind == "probe":
            self._probed(slot, result)
        else:
            self._finished(slot, result, work)

    def _probed(self, slot: Slot, result: BoardResult) -> None:
        now = time.monotonic()
        if result.mac is None:
            self._missing(slot, now)
        elif result.mac == slot.mac:
            slot.absent_since = None
        elif not self._stop.requested:  # another board behind the same bridge: a new cycle
            slot.absent_since = None
            self._set(slot, SlotState.WORKING, f"new board ({result.mac}): provisioning")
            self._start(slot, result.port, "cycle")

    def _finished(self, slot: Slot, result: BoardResult, work: _Work) -> None:
        """A cycle ended: count it, log it, show it; or, if no board answered, keep waiting."""
        unanswered = result.mac is None and not result.touched and result.skipped is None
        if unanswered and (slot.spec.persistent or (result.interrupted and not work.connected)):
            # Nothing answered behind a bridge that stays plugged in: the slot is empty.
            slot.next_probe = time.monotonic() + self.options.probe_interval
            if slot.state != SlotState.EMPTY:
                self._set(slot, SlotState.EMPTY, "")
            return
        if result.mac is None:
            result.mac = slot.mac if work.connected else None
        if not result.partitions and result.error and work.given:
            _lost_partitions(result, work)
        self._record(result)
        self._log(slot, result)
        outcome = result.outcome
        with self.lock:
            self.cycles += 1
            slot.mac, slot.result = result.mac, outcome
            message = result.error_detail or result.skipped or ""
            self.tally.count(
                outcome, slot=slot.spec.name, mac=result.mac, message=message, when=time.time()
            )
            if outcome == "ok":
                slot.ok += 1
                self._set(slot, SlotState.OK, "written and verified: take it out")
            elif outcome == "skipped":
                slot.skipped += 1
                self._set(
                    slot, SlotState.REMOVE, f"not written: {result.skipped}", short_reason(result)
                )
            else:
                slot.failed += 1
                self._set(slot, SlotState.FAILED, message or outcome, short_reason(result))
        slot.absent_since = None
        slot.next_probe = time.monotonic() + self.options.probe_interval
        if self.on_result is not None:
            self.on_result(slot.spec.name, result)

    # -- records ----------------------------------------------------------------------

    def _record(self, result: BoardResult) -> None:
        """The board's outcome to ``plan_for``'s ledger: an issuer's ``on_result``, a pool's
        ``record``; one it cannot store marks the board ``unrecorded``, as in a batch."""
        if result.mac is None or result.skipped is not None:
            return
        on_result = getattr(self.plan_for, "on_result", None)
        record = on_result or getattr(self.plan_for, "record", None)
        if record is None:
            return
        try:
            record(result)
        except Exception as exc:  # kept in the log as a batch keeps it (ledger reconcile)
            result.unrecorded = (
                one_line(exc)
                if isinstance(exc, AtflashError)
                else f"{type(exc).__name__}: {one_line(exc)}"
            )

    def _log(self, slot: Slot, result: BoardResult) -> None:
        line = audit.log_record(result, self._context)
        line[LOG_SLOT_KEY], line["session"] = slot.spec.name, self.session
        if self.log is not None:
            audit.append_log(self.log, [line])
        elif self.report is not None:
            self.records.append(line)

    def _restore(self, log: str) -> None:
        """Counts, each slot's last board and the boards done, from this station's log lines."""
        records = (r for r in audit.iter_log(log) if isinstance(r, dict))
        tally, slots = restore(records, self.name)
        self.tally = tally
        for name, seen in slots.items():
            slot = self.slots.get(name)
            if slot is None:
                continue
            slot.ok, slot.failed, slot.skipped = seen["ok"], seen["failed"], seen["skipped"]
            slot.mac, slot.result, slot.message = seen["mac"], seen["result"], seen["message"]

    def _write_report(self, seconds: float) -> dict[str, Any] | None:
        """This run's boards (its lines of the log), as a batch's report; the summary names the station."""
        if self.report is None:
            return None
        if self.log is not None:
            lines = [
                r for r in audit.iter_log(self.log)
                if isinstance(r, dict) and r.get("session") == self.session
            ]  # fmt: skip
        else:
            lines = self.records
        boards = [{k: v for k, v in r.items() if k not in _LOG_CONTEXT} for r in lines]
        report = report_of_records(boards, seconds=seconds, action="write")
        report["summary"]["station"] = self.name
        write_report(Path(self.report), report)
        return report

    def _set(self, slot: Slot, state: SlotState, message: str, short: str = "") -> None:
        with self.lock:
            slot.set(state, message, short)
        self._changed(slot)

    def _changed(self, slot: Slot | None = None) -> None:
        with self.lock:
            self.version += 1
        if slot is not None and self.on_change is not None:
            self.on_change(slot.to_json())


def _lost_partitions(result: BoardResult, work: _Work) -> None:
    """A board whose worker ended without a result (interrupted, killed): its partitions
    from the plan it was given, each in the last state its events showed (as a batch does
    for a board whose one plan it knows)."""
    plan = plan_seen(work.given, work.statuses)
    if plan is not None and result.error is not None:
        result.partitions = new_result(result.port, plan).partitions
        result.mark_lost(result.error, work.statuses)


def _fixed(plan: Plan) -> PlanSource:
    """``plan_for`` for one plan for every board."""

    def plan_for(_identity: BoardIdentity) -> Sequence[WritePlan]:
        return plan.candidates

    return plan_for


def _com_name(port: str | None) -> bool:
    """A Windows port name (``COM3``): found in the listing, not as a file."""
    return port is not None and os.name == "nt" and not is_url(port)
