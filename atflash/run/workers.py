"""Provisioning many boards at once: one worker process per board.

esptool keeps its logger, progress bars and some settings in process-global
state, so two boards in one process would mix. Each board therefore runs in
its own worker process; at most ``jobs`` run at a time. Each worker sends
its events and its final :class:`BoardResult` to the parent over its own
pipe, synchronously (no feeder thread: what a worker sent before dying has
arrived); the parent waits on all pipes at once (a worker's end closing is
its exit), hands events to its :data:`EventSink` and collects results,
which are returned in the order the jobs were given.

A board failing never stops the others. A failed board is retried from
connect (``retries``), its result records the attempts. A worker that dies
(segfault, kill) or outlives ``attempt_timeout`` becomes a failed result;
every wait in the parent is bounded.

Plans made by the parent: a job whose plans are :class:`FromParent` asks
the parent over its pipe once its board is identified, and the parent
calls :attr:`BatchOptions.plan_for` with what the board said (the Python
API's ``plan_for``). Whatever that function holds (a CA key, an HSM
session, a database connection) stays in the parent and is never pickled.

One identity, one board: a manifest row (see
:mod:`atflash.planning.manifest`) is claimed over the worker's pipe once
its board is identified, before anything is written; the parent keeps the
claims, so a second board reporting the same MAC or serial number is refused
whatever process it runs in.

Stopping (:class:`StopRequest`, set by :func:`stop_on_signals` on Ctrl-C or
SIGTERM): no new board starts, and a running board is not cut off in the
middle of a write. Workers ignore SIGINT and SIGTERM (a terminal's Ctrl-C
reaches every process of its group, and so does a service manager's
SIGTERM); the parent waits up to ``stop_grace`` seconds for the running
boards to finish, then ends their workers. Every board still gets a result:
the finished ones their own, the others ``interrupted`` with each
partition's last status seen in their events (never started: all
``not-started``). A second request ends the running boards at once.

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
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Connection
from typing import Any, Literal

from atflash.backends import registry
from atflash.backends.base import WriteOptions, new_result, verify_board, write_board
from atflash.errors import AtflashError, BoardSkipped, DeviceError, InputError, one_line
from atflash.events import Event, EventSink, ignore
from atflash.planning.manifest import RowClaims
from atflash.planning.plan import BoardIdentity, PlanResolver, WritePlan
from atflash.ports import PortFilter, find_port
from atflash.results import BoardResult, PartitionStatus

DEFAULT_ATTEMPT_TIMEOUT = 600.0  # a stuck board, not a slow one: ESP-AT partitions are small
# After Ctrl-C or SIGTERM: time for running boards to finish. A board takes
# seconds (the AT path at 115200 baud about ten); a container runtime
# kills after 10 s by default, and the report must be written before that.
DEFAULT_STOP_GRACE = 8.0
_TICK = 0.2  # longest wait for a message before checking the timeouts
_STOP_TIMEOUT = 5.0
_CLAIM_TIMEOUT = 60.0  # the parent answers within a tick; this only bounds a parent gone wrong
_PLAN_TIMEOUT = 300.0  # plan_for may sign a certificate on an HSM; this bounds a parent gone wrong
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Imported once by the fork server for every worker, besides the atflash
# modules of the parent (see _preload). atflash._forkserver: the server and
# its workers ignore SIGINT and SIGTERM from the start (see that module).
# encodings.idna: Python imports it on a worker's first connection by host
# name (socket:// ports), about 6 ms of CPU in each worker otherwise.
_PRELOAD = ("atflash._forkserver", "__main__", "atflash.run.workers", "encodings.idna")


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
    # Set by the worker: takes manifest rows through the batch parent (see run_board).
    claims: RowClaims | None = field(default=None, compare=False)


BoardRunner = Callable[[BoardJob, EventSink], BoardResult]


@dataclass(frozen=True)
class BatchOptions:
    """How many boards at once, and how hard to try each."""

    jobs: int | None = None  # default: one per board
    retries: int = 0  # extra attempts for a failed board, each from connect
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT
    start_method: str | None = None  # default: forkserver (POSIX) or spawn (Windows)
    stop_grace: float = DEFAULT_STOP_GRACE  # after a stop request, for running boards to finish
    # Finds a board again by its USB serial number or location before a retry
    # (USB-Serial-JTAG chips re-enumerate after a reset, sometimes under a new name).
    relocate: Callable[[PortFilter], str | None] = find_port
    # Called here, in the parent, for each board whose job's plans are FromParent.
    plan_for: PlanResolver | None = None


@dataclass(frozen=True)
class FromParent:
    """A job's plans, made in the batch parent by :attr:`BatchOptions.plan_for` once the board
    is identified (the worker asks over its pipe; see :func:`run_board`)."""

    ask: PlanResolver | None = field(default=None, compare=False)  # set in the worker
    # Partitions the worker reads back before asking (BoardIdentity.held), found with these layouts.
    reads: tuple[str, ...] = ()
    profiles: tuple[Any, ...] = ()

    @classmethod
    def asking(cls, resolver: object) -> FromParent:
        """Plans that ``resolver`` makes in the parent; what it reads back first goes along."""
        return cls(
            reads=tuple(getattr(resolver, "reads", ())),
            profiles=tuple(getattr(resolver, "profiles", ())),
        )

    def with_claims(self, claims: object) -> FromParent:
        """Bound to the batch parent over the worker's pipe (what the worker's claims go over)."""
        if not isinstance(claims, _ParentClaims):
            return self
        return replace(self, ask=claims.plans)  # what to read back first goes along

    def __call__(self, identity: BoardIdentity) -> Sequence[WritePlan]:
        if self.ask is None:
            raise DeviceError(
                identity.port, "this board's plan is made by a batch parent: none runs"
            )
        return self.ask(identity)


@dataclass(frozen=True)
class WithSerialNumber:
    """A resolver that also sees the USB serial number the batch knows for the port."""

    resolver: PlanResolver
    serial_number: str | None

    def __call__(self, identity: BoardIdentity) -> Sequence[WritePlan]:
        return self.resolver(replace(identity, serial_number=self.serial_number))

    @property
    def reads(self) -> tuple[str, ...]:
        return tuple(getattr(self.resolver, "reads", ()))

    @property
    def profiles(self) -> tuple[Any, ...]:
        return tuple(getattr(self.resolver, "profiles", ()))


def run_board(job: BoardJob, events: EventSink) -> BoardResult:
    """One board through the backend its job names (the default runner): written or verified."""
    plans = job.plans
    # Bound to the batch parent: FromParent's plans, a manifest's rows and a pool's MACs
    # (each row or MAC serves one board of the batch).
    if job.claims is not None and callable(getattr(plans, "with_claims", None)):
        plans = plans.with_claims(job.claims)  # type: ignore[union-attr]
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


def _context(start_method: str | None, backends: Sequence[str] = ()) -> Any:
    """The multiprocessing context; a fork server preloads atflash and the backends' modules."""
    ctx = multiprocessing.get_context(start_method or default_start_method())
    if ctx.get_start_method() == "forkserver":
        _short_socket_folder()
        ctx.set_forkserver_preload(_preload(backends))
    return ctx


# A Unix socket's path fits in sockaddr_un's sun_path: 108 bytes on Linux, 104 on macOS
# and the BSDs, its NUL included. The fork server's socket is <folder>/listener-XXXXXXXX,
# in multiprocessing's folder <TMPDIR>/pymp-XXXXXXXX.
_SUN_PATH = 108 if sys.platform.startswith("linux") else 104
_SOCKET_TAIL = len("/pymp-xxxxxxxx/listener-xxxxxxxx") + 1
_SHORT_FOLDERS = ("/tmp", "/var/tmp", "/usr/tmp")  # what POSIX systems have, short


def _short_socket_folder() -> None:
    """Keep the fork server's socket path short enough, whatever ``TMPDIR`` is.

    Before Python 3.12, multiprocessing puts its folder (and the socket in
    it) under ``tempfile.gettempdir()``: a long ``TMPDIR`` (a CI runner's
    workspace, a deep home folder) made every batch end in "AF_UNIX path too
    long". Then the folder is made, once per process, under the first
    short system temporary folder instead (owner-only, removed at exit, as
    multiprocessing's own), which is what Python 3.12 does itself.
    """
    import tempfile
    from multiprocessing import util

    if len(os.fsencode(tempfile.gettempdir())) + _SOCKET_TAIL <= _SUN_PATH:
        return
    short = next((d for d in _SHORT_FOLDERS if os.access(d, os.W_OK | os.X_OK)), None)
    if short is None:
        raise InputError(
            f"TMPDIR ({tempfile.gettempdir()}) is too long for the batch's socket and no "
            f"short temporary folder ({', '.join(_SHORT_FOLDERS)}) is writable",
            hint="set TMPDIR to a shorter folder",
        )
    # multiprocessing makes its folder once, on first use, under tempfile's folder: lend it
    # the short one for that call (a no-op when the folder was made already).
    saved, tempfile.tempdir = tempfile.tempdir, short
    try:
        util.get_temp_dir()
    finally:
        tempfile.tempdir = saved


def warm_up(start_method: str | None = None, *, backends: Sequence[str] = ()) -> None:
    """Start the fork server now, so its imports overlap with the caller's own work.

    The command line calls this before it builds and checks every plan; the
    batch then finds the server running, with the modules of ``backends``
    (names in the registry) already imported: about 0.1 s of CPU that each
    worker would otherwise spend importing esptool. Elsewhere (spawn on
    Windows) there is nothing to start early.
    """
    ctx = _context(start_method, backends)
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _preload(backends: Sequence[str]) -> list[str]:
    """What the fork server imports: ``_PRELOAD``, the backends' and every atflash module loaded here.

    A worker's re-run of the main script (see the module docstring) then
    finds what it imports already loaded instead of importing it again. A
    backend's module is not loaded here (the parent never talks to a board)
    but every worker needs it.
    """
    ours = sorted(name for name in sys.modules if name.split(".", 1)[0] == "atflash")
    ours += sorted({registry.get(name).module for name in backends})
    return list(dict.fromkeys([*_PRELOAD, *ours]))


# -- stopping -------------------------------------------------------------------


class StopRequest:
    """Asks a running batch to stop; safe to set from a signal handler or another thread.

    ``signum`` is the first signal that asked (``SIGINT`` for Ctrl-C),
    ``count`` how many times stopping was asked: from the second request on,
    running boards are ended without waiting. :meth:`hold` only keeps new
    boards from starting.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self.held: str | None = None  # why no new board may start (see hold)

    def hold(self, why: str) -> None:
        """Start no new board, and let running boards finish as usual (not a signal's stop).

        For a caller's own reason, such as a ledger that can no longer record
        results: the boards never started are recorded as ``interrupted``
        with ``why``.
        """
        if self.held is None:
            self.held = why

    def request(self, signum: int = signal.SIGINT) -> None:
        if self.signum is None:
            self.signum = signum
        self.count += 1

    @property
    def requested(self) -> bool:
        return self.count > 0

    @property
    def name(self) -> str:
        """The signal's name, ``SIGINT`` or ``SIGTERM``, for messages."""
        try:
            return signal.Signals(self.signum).name if self.signum is not None else "no signal"
        except ValueError:
            return f"signal {self.signum}"


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest | None = None) -> Iterator[StopRequest]:
    """While inside, Ctrl-C (SIGINT) and SIGTERM ask ``stop`` to end the batch.

    Instead of ending the process where it is (mid-write, before the report
    is written), a signal only records the request; :func:`run_batch` given
    the same ``stop`` then winds the batch down. Only the main thread can
    set signal handlers: elsewhere this changes nothing.
    """
    stop = stop if stop is not None else StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: object) -> None:
        stop.request(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


# -- the worker side ------------------------------------------------------------


def _worker(runner: BoardRunner, job: BoardJob, out: Connection) -> None:
    """Run one board attempt in this process; every outcome ends as a result message."""
    # Stopping is the parent's decision: a worker finishes its board unless
    # the parent ends it (see the module docstring). Forked by the fork
    # server, it ignores both already (atflash._forkserver); spawned, from here.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)

    def sink(event: Event) -> None:
        with contextlib.suppress(OSError):  # the parent is gone: the board still finishes
            out.send(("event", event))

    try:
        result = runner(replace(job, claims=_ParentClaims(out)), sink)
    except Exception as exc:  # a bug in a backend must still leave a result
        result = BoardResult(
            port=job.port, error=f"internal error: {type(exc).__name__}: {one_line(exc)}"
        )
    try:
        out.send(("result", result))
    except OSError:
        pass  # no parent to tell
    finally:
        out.close()


class _ParentClaims:
    """Manifest rows claimed through the batch parent, over the worker's own pipe.

    The worker sends ``("claim", key)`` and waits for ``("claimed", holder)``:
    the only message a parent ever sends a worker, so nothing else can be
    read in its place.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def claim(self, key: str, port: str) -> str | None:
        reply = self._ask(("claim", key), _CLAIM_TIMEOUT)
        if reply is None:  # unconfirmed is refused: two boards must never hold one key
            raise DeviceError(
                port,
                "the batch did not confirm that no other board has this identity",
                hint="nothing was written; run the board again",
            )
        _kind, holder = reply
        return holder if isinstance(holder, str) else None

    def plans(self, identity: BoardIdentity) -> Sequence[WritePlan]:
        """The plans the parent's ``plan_for`` made for this board (see :class:`FromParent`)."""
        reply = self._ask(("plans", identity), _PLAN_TIMEOUT)
        if reply is None:
            raise DeviceError(
                identity.port,
                f"the batch made no plan for this board within {_PLAN_TIMEOUT:.0f} s",
                hint="nothing was written; run the board again",
            )
        _kind, answer = reply
        if isinstance(answer, _Refusal):
            raise answer.error(identity.port)
        return list(answer)

    def _ask(self, message: tuple[str, Any], timeout: float) -> Any:
        """Send ``message`` to the parent and wait for its answer (None: no answer)."""
        try:
            self.conn.send(message)
            return self.conn.recv() if self.conn.poll(timeout) else None
        except (OSError, EOFError):
            return None


@dataclass(frozen=True)
class _Refusal:
    """Why the parent's ``plan_for`` made no plan: sent to the worker instead of the exception
    (atflash's errors do not all pickle), raised there again as one that says the same."""

    message: str
    detail: str
    exit_code: int
    skipped: bool = False

    @classmethod
    def of(cls, exc: Exception, port: str) -> _Refusal:
        if isinstance(exc, BoardSkipped):
            return cls(exc.reason, exc.reason, exc.exit_code, skipped=True)
        if isinstance(exc, AtflashError):
            return cls(str(exc), exc.detail, exc.exit_code)
        # The caller's function failed: this board fails with what it raised, the batch goes on.
        detail = f"plan_for raised {type(exc).__name__}: {one_line(exc)}"
        return cls(f"{port}: {detail}", detail, 1)

    def error(self, port: str) -> AtflashError:
        if self.skipped:
            return BoardSkipped(port, self.message)
        return _PlanRefused(self.message, self.detail, self.exit_code)


class _PlanRefused(AtflashError):
    """The parent's ``plan_for`` refused a board: its error, as it read there."""

    def __init__(self, message: str, detail: str, exit_code: int) -> None:
        super().__init__(message)
        self._detail = detail
        self.exit_code = exit_code

    @property
    def detail(self) -> str:
        return self._detail


# -- the parent side ------------------------------------------------------------


@dataclass
class _Running:
    """A worker process and what the parent has seen of its attempt."""

    proc: Any
    conn: Connection  # the parent's end of the worker's pipe
    attempt: int
    started: float
    statuses: dict[str, PartitionStatus] = field(default_factory=dict)  # last known, by partition
    given: tuple[WritePlan, ...] = ()  # the plans the parent made for it (FromParent)
    ended_by: str | None = None  # why the parent ended the worker, if it did
    interrupted: bool = False  # ended because the batch was stopped


class _Batch:
    """The parent's scheduling loop: start workers, relay events, answer claims, collect results."""

    def __init__(
        self,
        jobs: Sequence[BoardJob],
        runner: BoardRunner,
        options: BatchOptions,
        events: EventSink,
        stop: StopRequest,
        on_result: Callable[[BoardResult], None] | None = None,
    ) -> None:
        self.jobs = list(jobs)
        self.on_result = on_result
        self.runner = runner
        self.options = options
        self.events = events
        self.stop = stop
        self.ctx: Any = _context(options.start_method, [job.backend for job in jobs])
        self.pending: deque[int] = deque(range(len(jobs)))
        self.running: dict[int, _Running] = {}
        self.attempts: dict[int, int] = dict.fromkeys(range(len(jobs)), 0)
        self.results: dict[int, BoardResult] = {}
        self.earlier: dict[int, list[BoardResult]] = {}  # failed attempts before a retry
        self.retrying: dict[int, BoardResult] = {}  # the failed attempt a retry follows
        self.claims: dict[str, int] = {}  # manifest row key -> index of the board that has it
        self.limit = max(1, options.jobs or len(jobs))
        self.deadline: float | None = None  # set once a stop is requested

    def run(self) -> list[BoardResult]:
        try:
            while self.running or (self.pending and not self._stopping):
                if self.stop.requested:
                    self._wind_down()
                elif self.stop.held is None:
                    while self.pending and len(self.running) < self.limit:
                        self._start(self.pending.popleft())
                self._receive()
                self._check_timeouts()
        finally:
            self._stop_all()
        for index in self.pending:  # only left when the batch was stopped
            self.results[index] = self.retrying.get(index) or self._not_started(index)
        return [self.results[i] for i in range(len(self.jobs))]

    @property
    def _stopping(self) -> bool:
        return self.stop.requested or self.stop.held is not None

    def _start(self, index: int) -> None:
        self.attempts[index] += 1
        if self.attempts[index] > 1:
            self._find_again(index)
        # Duplex: events and claims come up, the answer to a claim goes down.
        conn, worker_end = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=_worker,
            args=(self.runner, self.jobs[index], worker_end),
            name=f"atflash-board-{index}",
            daemon=True,
        )
        proc.start()
        worker_end.close()  # the worker holds the only other end: its exit reads as EOF
        self.running[index] = _Running(proc, conn, self.attempts[index], time.monotonic())

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
        """Wait (one tick at most) for messages or ended workers, and handle them."""
        by_conn: dict[Any, int] = {run.conn: index for index, run in self.running.items()}
        for conn in mp_connection.wait(list(by_conn), timeout=_TICK):
            index = by_conn[conn]
            if index in self.running:
                self._drain(index)

    def _drain(self, index: int) -> None:
        """Handle what a worker has sent; its pipe closing without a result is a lost attempt.

        The pipe, not the process sentinel, tells that a worker has ended:
        the worker holds the only other end. A fork server reports its
        workers' exits through the sentinels, so a server that died would
        make every running worker look ended.
        """
        run = self.running[index]
        while run.conn.poll(0):
            try:
                kind, payload = run.conn.recv()
            except (EOFError, OSError):
                run.proc.join(_STOP_TIMEOUT)
                why = run.ended_by or (
                    f"worker process ended without a result (exit code {run.proc.exitcode})"
                )
                self._finish(index, self._lost(index, run, why))
                return
            if kind == "event":
                self._on_event(run, payload)
            elif kind == "claim":
                self._on_claim(index, run, payload)
            elif kind == "plans":
                self._on_plans(run, payload)
            else:
                self._finish(index, payload)
                return

    def _on_event(self, run: _Running, event: Event) -> None:
        if event.partition and event.status is not None:
            run.statuses[event.partition] = event.status
        self.events(event)

    def _on_claim(self, index: int, run: _Running, key: str) -> None:
        """A board identified as manifest row ``key``: it is this board's unless another has it."""
        holder = self.claims.setdefault(key, index)
        with contextlib.suppress(OSError):  # a worker gone meanwhile: its exit is handled next
            run.conn.send(("claimed", None if holder == index else self.jobs[holder].port))

    def _on_plans(self, run: _Running, identity: BoardIdentity) -> None:
        """A board identified: ``plan_for`` makes its plans here (see :class:`FromParent`)."""
        answer: Sequence[WritePlan] | _Refusal
        try:
            if self.options.plan_for is None:
                raise DeviceError(
                    identity.port, "the batch has no plan_for to make this board's plan"
                )
            answer = list(self.options.plan_for(identity))
            run.given = tuple(answer)
        except Exception as exc:  # the caller's function: any failure fails this board only
            answer = _Refusal.of(exc, identity.port)
        with contextlib.suppress(OSError):  # a worker gone meanwhile: its exit is handled next
            run.conn.send(("planned", answer))

    def _finish(self, index: int, result: BoardResult) -> None:
        run = self.running.pop(index)
        run.proc.join(_STOP_TIMEOUT)
        _stop(run.proc)
        run.conn.close()
        result.attempts = run.attempt
        if result.failed and run.attempt <= self.options.retries and not self._stopping:
            self.events(
                Event(
                    "retrying",
                    result.port,
                    f"attempt {run.attempt} failed ({result.error_detail}); retrying from connect",
                )
            )
            self.retrying[index] = result
            self.earlier.setdefault(index, []).append(result)
            self.pending.appendleft(index)
            return
        result.earlier_attempts = self.earlier.pop(index, [])
        self.results[index] = result
        if self.on_result is not None:
            self.on_result(result)

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        limit = self.options.attempt_timeout
        for index, run in list(self.running.items()):
            if now - run.started > limit:
                self._end(index, f"no result within {limit:.0f} s; worker stopped")

    def _wind_down(self) -> None:
        """A stop was requested: let running boards finish, up to the grace time, then end them."""
        now = time.monotonic()
        if self.deadline is None:
            grace = self.options.stop_grace
            self.deadline = now + grace
            for index in self.running:
                message = f"{self.stop.name}: finishing this board (up to {grace:.0f} s); no new board starts"
                self.events(Event("warning", self.jobs[index].port, message))
        if self.stop.count > 1 or now >= self.deadline:
            for index in list(self.running):
                why = f"interrupted ({self.stop.name}) before the board finished; worker stopped"
                self._end(index, why, interrupted=True)

    def _end(self, index: int, why: str, *, interrupted: bool = False) -> None:
        """End a worker now; what it sent before is still handled (it may have just finished)."""
        run = self.running[index]
        run.ended_by, run.interrupted = why, interrupted
        _stop(run.proc)
        self._drain(index)  # what it sent before it ended, then its end of the pipe closing
        if index in self.running:  # not ended (yet) by the kill: given up all the same
            self._finish(index, self._lost(index, run, why))

    def _lost(self, index: int, run: _Running, why: str) -> BoardResult:
        """A failed result for an attempt whose worker said nothing more, built from its events."""
        job = self.jobs[index]
        result = new_result(job.port, _single_plan(job) or plan_seen(run.given, run.statuses))
        result.mark_lost(f"{job.port}: {why}", run.statuses)
        result.interrupted = run.interrupted or self.stop.requested
        self.events(Event("interrupted" if result.interrupted else "failed", job.port, why))
        return result

    def _not_started(self, index: int) -> BoardResult:
        """A board the stopped batch never started: interrupted, every partition untouched."""
        job = self.jobs[index]
        reason = self.stop.name if self.stop.requested else self.stop.held
        why = f"not started: the batch was stopped ({reason})"
        result = new_result(job.port, _single_plan(job))
        result.mark_lost(f"{job.port}: {why}")
        result.interrupted = True
        result.attempts = self.attempts[index]
        self.events(Event("interrupted", job.port, why))
        return result

    def _stop_all(self) -> None:
        for run in self.running.values():
            _stop(run.proc)
            run.conn.close()
        self.running.clear()


def _single_plan(job: BoardJob) -> WritePlan | None:
    """The job's plan when it has exactly one (a result can then list its partitions)."""
    fixed = None if callable(job.plans) else job.plans
    return fixed[0] if fixed else None  # the chip's usual layout: names the partitions


def plan_seen(plans: Sequence[WritePlan], statuses: Mapping[str, Any]) -> WritePlan | None:
    """Among the plans a board was given, the one its events name partitions of (its partitions
    can then be listed in the last state seen, when the worker ended without a result)."""
    seen = set(statuses)
    return next((p for p in plans if seen <= {i.partition.name for i in p.images}), None)


def _stop(proc: Any) -> None:
    """End a worker at once; bounded. Workers ignore SIGTERM, so this kills."""
    if proc.is_alive():
        with contextlib.suppress(OSError):
            proc.kill()
        proc.join(_STOP_TIMEOUT)


def run_batch(
    jobs: Sequence[BoardJob],
    *,
    runner: BoardRunner = run_board,
    options: BatchOptions | None = None,
    events: EventSink = ignore,
    stop: StopRequest | None = None,
    on_result: Callable[[BoardResult], None] | None = None,
) -> list[BoardResult]:
    """Provision every board of ``jobs``, in parallel; results in the order of ``jobs``.

    Never raises for a board's failure: each result says what happened.
    ``runner`` must be a module-level function (it is sent to the workers).
    ``stop`` (see :func:`stop_on_signals`) winds the batch down when
    requested: the results then include ``interrupted`` boards.
    ``on_result`` is called in this process with each board's final result
    as soon as it is known (while other boards still run): what it does
    may ask ``stop`` to hold the batch.
    """
    if not jobs:
        return []
    batch = _Batch(
        jobs, runner, options or BatchOptions(), events, stop or StopRequest(), on_result
    )
    return batch.run()
