"""Provisioning many boards at once: one worker process per board.

esptool keeps its logger, progress bars and some settings in process-global
state, so two boards in one process would mix. Each board therefore runs in
its own worker process; at most ``jobs`` run at a time. Each worker sends
its events and its final :class:`BoardResult` to the parent over its own
pipe, synchronously (no feeder thread: what a worker sent before dying has
arrived); the parent waits on all pipes and process sentinels at once, hands
events to its :data:`EventSink` and collects results, which are returned in
the order the jobs were given.

A board failing never stops the others. A failed board is retried from
connect (``retries``), its result records the attempts. A worker that dies
(segfault, kill) or outlives ``attempt_timeout`` becomes a failed result;
every wait in the parent is bounded.

Start method: ``forkserver`` on POSIX (Linux and macOS), ``spawn`` on
Windows. ``fork`` would start fastest but copies a parent that may run
threads (rich's live display, test relays), which can deadlock the child
and is deprecated by Python 3.12+ in that case; ``spawn`` imports esptool
again in every worker (about 0.1 s of CPU each, 1.7 s for 16 workers on two
cores). The fork server imports atflash and esptool once and then forks
clean workers from itself: measured 0.15 s for the first worker (server
start) and 0.07 s for the next 16 together.

Every worker still runs the parent's main script again (multiprocessing
does, so that what it defines can be unpickled), and CPython before 3.14
never honours ``"__main__"`` in the preload list (python/cpython#126631).
For the ``atflash`` command that re-run imports the whole command line,
about 50 ms of CPU per worker, unless the fork server already holds it: so
the server preloads every atflash module the parent has imported.

Backends: each job names its backend (a key of
:data:`atflash.backends.registry.BACKENDS`); the worker loads it and runs
the shared flow of :mod:`atflash.backends.base`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Connection
from typing import Any, Literal

from atflash.backends import registry
from atflash.backends.base import WriteOptions, new_result, verify_board, write_board
from atflash.errors import one_line
from atflash.events import Event, EventSink, ignore
from atflash.planning.plan import BoardIdentity, PlanResolver, WritePlan
from atflash.ports import PortFilter, find_port
from atflash.results import BoardResult, PartitionStatus

DEFAULT_ATTEMPT_TIMEOUT = 600.0  # a stuck board, not a slow one: ESP-AT partitions are small
_TICK = 0.2  # longest wait for a message before checking the timeouts
_STOP_TIMEOUT = 5.0
# Imported once by the fork server for every worker, besides the atflash
# modules of the parent (see _preload). encodings.idna: Python imports it on
# a worker's first connection by host name (socket:// ports), about 6 ms of
# CPU in each worker otherwise.
_PRELOAD = ("__main__", "atflash.batch", "encodings.idna")


@dataclass(frozen=True)
class BoardJob:
    """One board to provision: where it is, how to reach it, what to write.

    ``connect`` is the backend's connection options, already naming
    ``port``. Everything here is pickled to the worker, so a resolver must
    be an instance of a module-level class, not a closure.
    """

    port: str
    connect: Any
    plans: Sequence[WritePlan] | PlanResolver
    options: WriteOptions = field(default_factory=WriteOptions)
    serial_number: str | None = None  # the USB bridge's, for manifests keyed by it
    backend: str = "esptool"  # a key of registry.BACKENDS
    locate: PortFilter | None = None  # how to find the board again if its port name changes
    action: Literal["write", "verify"] = "write"  # verify: compare only, never write


BoardRunner = Callable[[BoardJob, EventSink], BoardResult]


@dataclass(frozen=True)
class BatchOptions:
    """How many boards at once, and how hard to try each."""

    jobs: int | None = None  # default: one per board
    retries: int = 0  # extra attempts for a failed board, each from connect
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT
    start_method: str | None = None  # default: forkserver (POSIX) or spawn (Windows)
    # Finds a board again by its USB serial number or location before a retry
    # (USB-Serial-JTAG chips re-enumerate after a reset, sometimes under a new name).
    relocate: Callable[[PortFilter], str | None] = find_port


@dataclass(frozen=True)
class WithSerialNumber:
    """A resolver that also sees the USB serial number the batch knows for the port."""

    resolver: PlanResolver
    serial_number: str | None

    def __call__(self, identity: BoardIdentity) -> Sequence[WritePlan]:
        return self.resolver(replace(identity, serial_number=self.serial_number))


def run_board(job: BoardJob, events: EventSink) -> BoardResult:
    """One board through the backend its job names (the default runner): written or verified."""
    plans = job.plans
    if callable(plans) and job.serial_number:
        plans = WithSerialNumber(plans, job.serial_number)
    backend = registry.get(job.backend).load()
    if job.action == "verify":
        return verify_board(backend, job.connect, plans, events=events)
    return write_board(backend, job.connect, plans, options=job.options, events=events)


START_METHOD_ENV = "ATFLASH_START_METHOD"  # forkserver or spawn: to run Windows' way elsewhere


def default_start_method() -> str:
    """``forkserver`` on POSIX, ``spawn`` on Windows (its only method); the env var overrides."""
    chosen = os.environ.get(START_METHOD_ENV, "").strip()
    if chosen in ("forkserver", "spawn"):
        return chosen
    return "spawn" if sys.platform == "win32" else "forkserver"


def _context(start_method: str | None) -> Any:
    """The multiprocessing context; a fork server preloads atflash and esptool once."""
    ctx = multiprocessing.get_context(start_method or default_start_method())
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(_preload())
    return ctx


def warm_up(start_method: str | None = None) -> None:
    """Start the fork server now, so its imports overlap with the caller's own work.

    The command line calls this before it builds and checks every plan; the
    batch then finds the server running (about 0.2 s of a batch's start).
    Elsewhere (spawn on Windows) there is nothing to start early.
    """
    ctx = _context(start_method)
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _preload() -> list[str]:
    """What the fork server imports: ``_PRELOAD`` and every atflash module loaded here.

    A worker's re-run of the main script (see the module docstring) then
    finds what it imports already loaded instead of importing it again.
    """
    ours = sorted(name for name in sys.modules if name.split(".", 1)[0] == "atflash")
    return [*_PRELOAD, *(name for name in ours if name not in _PRELOAD)]


# -- the worker side ------------------------------------------------------------


def _worker(runner: BoardRunner, job: BoardJob, out: Connection) -> None:
    """Run one board attempt in this process; every outcome ends as a result message."""

    def sink(event: Event) -> None:
        out.send(("event", event))

    try:
        result = runner(job, sink)
    except KeyboardInterrupt:
        return  # the parent stops the batch and reports what it has
    except Exception as exc:  # a bug in a backend must still leave a result
        result = BoardResult(
            port=job.port, error=f"internal error: {type(exc).__name__}: {one_line(exc)}"
        )
    out.send(("result", result))
    out.close()


# -- the parent side ------------------------------------------------------------


@dataclass
class _Running:
    """A worker process and what the parent has seen of its attempt."""

    proc: Any
    reader: Connection
    attempt: int
    started: float
    statuses: dict[str, PartitionStatus] = field(default_factory=dict)  # last known, by partition


class _Batch:
    """The parent's scheduling loop: start workers, relay events, collect results."""

    def __init__(
        self,
        jobs: Sequence[BoardJob],
        runner: BoardRunner,
        options: BatchOptions,
        events: EventSink,
    ) -> None:
        self.jobs = list(jobs)
        self.runner = runner
        self.options = options
        self.events = events
        self.ctx: Any = _context(options.start_method)
        self.pending: deque[int] = deque(range(len(jobs)))
        self.running: dict[int, _Running] = {}
        self.attempts: dict[int, int] = dict.fromkeys(range(len(jobs)), 0)
        self.results: dict[int, BoardResult] = {}
        self.limit = max(1, options.jobs or len(jobs))

    def run(self) -> list[BoardResult]:
        try:
            while self.pending or self.running:
                while self.pending and len(self.running) < self.limit:
                    self._start(self.pending.popleft())
                self._receive()
                self._check_timeouts()
        finally:
            self._stop_all()
        return [self.results[i] for i in range(len(self.jobs))]

    def _start(self, index: int) -> None:
        self.attempts[index] += 1
        if self.attempts[index] > 1:
            self._find_again(index)
        reader, writer = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=_worker,
            args=(self.runner, self.jobs[index], writer),
            name=f"atflash-board-{index}",
            daemon=True,
        )
        proc.start()
        writer.close()  # the worker holds the only write end: its exit reads as EOF
        self.running[index] = _Running(proc, reader, self.attempts[index], time.monotonic())

    def _find_again(self, index: int) -> None:
        """Before a retry, look the board up by what selected it, not by its old port name."""
        job = self.jobs[index]
        if job.locate is None:
            return
        device = self.options.relocate(job.locate)
        if device is None or device == job.port:
            return
        self.events(Event("retrying", job.port, f"board found again at {device}"))
        self.jobs[index] = replace(job, port=device, connect=replace(job.connect, port=device))

    def _receive(self) -> None:
        """Wait (one tick at most) for messages or exits, and handle them."""
        by_handle: dict[Any, int] = {}
        for index, run in self.running.items():
            by_handle[run.reader] = index
            by_handle[run.proc.sentinel] = index
        for handle in mp_connection.wait(list(by_handle), timeout=_TICK):
            index = by_handle[handle]
            if index in self.running:
                self._drain(index)

    def _drain(self, index: int) -> None:
        """Handle what a worker has sent; an exit without a result is a lost attempt."""
        run = self.running[index]
        while run.reader.poll(0):
            try:
                kind, payload = run.reader.recv()
            except (EOFError, OSError):
                break
            if kind == "event":
                self._on_event(run, payload)
            else:
                self._finish(index, payload)
                return
        if not run.proc.is_alive() or run.reader.closed:
            run.proc.join(_STOP_TIMEOUT)
            why = f"worker process ended without a result (exit code {run.proc.exitcode})"
            self._finish(index, self._lost(index, run, why))

    def _on_event(self, run: _Running, event: Event) -> None:
        if event.partition and event.status is not None:
            run.statuses[event.partition] = event.status
        self.events(event)

    def _finish(self, index: int, result: BoardResult) -> None:
        run = self.running.pop(index)
        run.proc.join(_STOP_TIMEOUT)
        _stop(run.proc)
        run.reader.close()
        result.attempts = run.attempt
        if result.failed and run.attempt <= self.options.retries:
            self.events(
                Event(
                    "retrying",
                    result.port,
                    f"attempt {run.attempt} failed ({result.error_detail}); retrying from connect",
                )
            )
            self.pending.appendleft(index)
            return
        self.results[index] = result

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        limit = self.options.attempt_timeout
        for index, run in list(self.running.items()):
            if now - run.started > limit:
                _stop(run.proc)
                why = f"no result within {limit:.0f} s; worker stopped"
                self._finish(index, self._lost(index, run, why))

    def _lost(self, index: int, run: _Running, why: str) -> BoardResult:
        """A failed result for an attempt whose worker said nothing more, built from its events."""
        job = self.jobs[index]
        fixed = None if callable(job.plans) else job.plans
        result = new_result(job.port, fixed[0] if fixed and len(fixed) == 1 else None)
        result.mark_lost(f"{job.port}: {why}", run.statuses)
        self.events(Event("failed", job.port, why))
        return result

    def _stop_all(self) -> None:
        for run in self.running.values():
            _stop(run.proc)
            run.reader.close()
        self.running.clear()


def _stop(proc: Any) -> None:
    """End a worker: terminate, then kill; bounded either way."""
    if proc.is_alive():
        proc.terminate()
        proc.join(_STOP_TIMEOUT)
        if proc.is_alive():
            with contextlib.suppress(AttributeError):
                proc.kill()
            proc.join(_STOP_TIMEOUT)


def run_batch(
    jobs: Sequence[BoardJob],
    *,
    runner: BoardRunner = run_board,
    options: BatchOptions | None = None,
    events: EventSink = ignore,
) -> list[BoardResult]:
    """Provision every board of ``jobs``, in parallel; results in the order of ``jobs``.

    Never raises for a board's failure: each result says what happened.
    ``runner`` must be a module-level function (it is sent to the workers).
    """
    if not jobs:
        return []
    return _Batch(jobs, runner, options or BatchOptions(), events).run()
