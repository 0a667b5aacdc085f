"""A whole write (or verify) run over many boards, as a library: ports, plans, workers, report, log, exit code.

The CLI merges the command line with a bench file into a
:class:`~atflash.run.spec.RunSpec` (:func:`atflash.run.spec.merge`) and
renders; everything between is here, so a Python caller runs a bench the
same way without click::

    run = prepare(spec)                    # ports resolved, every image built and checked
    with stop_on_signals() as stop:        # Ctrl-C, SIGTERM: boards finish, report written
        outcome = execute(run, events=print, stop=stop)
    sys.exit(outcome.exit_code)

Exit codes (:attr:`RunOutcome.exit_code`): 0 when every board was written or
left alone because it has no manifest row; 3 when a board failed, and also
when every board was skipped (nothing was provisioned: the manifest is not
for the boards attached, which ``--strict`` would fail too), and when
the log, the report or the ledger failed after boards were written (their
record is incomplete: see :class:`Unwritten` and ``unrecorded``); 130 or
143 when Ctrl-C or SIGTERM stopped the run (128 + the signal, as a shell
shows it).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from atflash.errors import EXIT_DEVICE_ERROR, EXIT_MISMATCH, InputError, ManifestError
from atflash.events import EventSink, ignore
from atflash.files import is_glob
from atflash.layout.model import Profile
from atflash.offline import Plan, candidates_of
from atflash.output import refuse_shared_paths
from atflash.planning.manifest import ManifestResolver
from atflash.planning.plan import BoardIdentity, WritePlan
from atflash.ports import AUTO, PortFilter, PortInfo, is_url, port_key, resolve_ports
from atflash.results import BoardResult
from atflash.run import audit
from atflash.run.config import BenchConfig, CheckedConfig, check_config, check_outputs
from atflash.run.records import LedgerRecorder, RunRecords, Unwritten, write_run_records
from atflash.run.report import (
    build_report,
    failed_boards,
    load_report,
    merge_reports,
    unused_rows_of,
)
from atflash.run.spec import RunSpec, merge
from atflash.run.workers import BatchOptions, BoardJob, StopRequest, run_batch, run_board, warm_up


@dataclass(frozen=True)
class PreparedRun:
    """Boards found and every image checked: nothing is left that could refuse the run."""

    spec: RunSpec
    jobs: tuple[BoardJob, ...]
    sources: Sources | None  # None: nothing to do
    nothing_to_do: str | None = None  # why the run has no board to touch
    # One port named plainly and no batch option: the board runs in this process
    # (no worker to start) and is shown as one board, not as a batch.
    one_board: bool = False
    earlier: dict[str, Any] | None = None  # the --only-failed report, as loaded

    @property
    def profiles(self) -> tuple[Profile, ...]:
        """The layouts the run's plans were built for, when they were built before it."""
        checked = self.sources.checked if self.sources is not None else None
        return checked.profiles if checked is not None else ()


@dataclass(frozen=True)
class RunOutcome:
    """What a run did: every board's result, the report, and the exit code to end with."""

    results: list[BoardResult]
    seconds: float
    unused_rows: list[tuple[int, str]]
    report: dict[str, Any]  # as written to --report (merged into the earlier one, see execute)
    action: str = "write"
    stopped_by: int | None = None  # the signal that stopped the run, if one did
    records: RunRecords = field(default_factory=RunRecords)  # the log and report as written
    ledger_hold: str | None = None  # why no new board started after a ledger failure
    ledger: str | None = None  # the pool's ledger, its password masked

    @property
    def unwritten(self) -> tuple[Unwritten, ...]:
        """The log or report that could not be written (see :mod:`atflash.run.records`)."""
        return self.records.unwritten

    @property
    def unrecorded(self) -> list[BoardResult]:
        """Boards whose outcome the ledger could not store (see ``atflash ledger reconcile``)."""
        return [r for r in self.results if r.unrecorded is not None]

    @property
    def all_skipped(self) -> bool:
        """Every board was left alone (no manifest row): nothing was provisioned."""
        return bool(self.results) and all(r.skipped is not None for r in self.results)

    @property
    def exit_code(self) -> int:
        """3 a log or report could not be written, or the ledger not record a board;
        130/143 stopped by SIGINT/SIGTERM; 4 a verify that only found differences;
        3 a board failed or every board was skipped; else 0."""
        if self.unwritten or self.unrecorded:
            return EXIT_DEVICE_ERROR  # boards were written: their record is incomplete
        if self.stopped_by is not None:
            return 128 + self.stopped_by
        failed = [r for r in self.results if r.failed]
        if failed and self.action == "verify" and all(r.error is None for r in failed):
            return EXIT_MISMATCH
        if self.all_skipped or failed:
            return EXIT_DEVICE_ERROR
        return 0


def prepare(
    spec: RunSpec,
    plan_for: Plan | Callable[[BoardIdentity], Any] | None = None,
    *,
    as_keys: bool = False,
) -> PreparedRun:
    """Resolve the ports and build and check every plan, before the first board.

    The credentials come from ``spec`` (its files, manifest, pool or issuer),
    or, from a Python caller, from ``plan_for``: a :class:`~atflash.offline.Plan`
    for every board, or a function called here with each board's identity.
    ``as_keys``: a refusal names settings as keys (``report``), not options.
    """
    check_run_outputs(spec, as_keys=as_keys)
    earlier = load_report(spec.only_failed) if spec.only_failed else None
    failed_ports = [b.port for b in failed_boards(earlier)] if earlier is not None else None
    if failed_ports == []:
        return PreparedRun(spec, (), None, f"{spec.only_failed}: no failed boards: nothing to do")
    one_board = is_one_board(spec)
    if one_board:
        ports = [PortInfo(spec.ports[0])]  # one named port is taken as given, as esptool does
    else:
        ports = resolve_ports(port_specs(spec, failed_ports), filters=spec.filters)
    if failed_ports is not None and spec.ports:
        wanted = {port_key(name) for name in failed_ports}  # COM3 is com3 on Windows
        ports = [p for p in ports if port_key(p.device) in wanted]
        if not ports:
            raise InputError(
                "none of the given ports failed in the report",
                hint="drop --port to re-run them all",
            )
    if not one_board:
        warm_up(backends=[spec.via])  # the worker server starts while the plans are built
    sources = open_sources(spec) if plan_for is None else given_sources(plan_for)
    if spec.log:
        audit.check_log(audit.stamp_path(spec.log))
    options = spec.write_options
    if sources.explicit:
        options = replace(options, explicit_layout=True)
    jobs = tuple(
        BoardJob(
            port=p.device,
            connect=spec.connect_for(p.device),
            plans=sources.job_plans(in_process=one_board),
            options=options,
            serial_number=p.serial_number,
            backend=spec.via,
            locate=_locator(p, spec.filters),
            action=spec.action,
        )
        for p in ports
    )
    return PreparedRun(spec, jobs, sources, one_board=one_board and len(jobs) == 1, earlier=earlier)


def is_one_board(spec: RunSpec) -> bool:
    """One plain port (no glob, no ``auto``, no filter) and no batch option: the one-board run."""
    if len(spec.ports) != 1 or spec.filters or spec.bench is not None:
        return False
    port = spec.ports[0]
    if port == AUTO or (not is_url(port) and is_glob(port)):
        return False
    batch_only = (spec.jobs, spec.retry, spec.report, spec.only_failed, spec.manifest,
                  spec.strict, spec.pool)  # fmt: skip
    return not any(batch_only)


@dataclass(frozen=True)
class Sources:
    """Where a run's boards get their credentials, each checked before the first board.

    One of: plans made here, in this process, once a board said who it is
    (an issuer's certificate for its MAC, or a Python caller's
    ``plan_for``); a pool of sets with its ledger; or plans built from files
    (the same for every board, or per board from a manifest).
    """

    here: Any = None  # called in this process with each board's identity
    pool: Any = None  # atflash.factory.PoolResolver
    checked: CheckedConfig | None = None
    explicit: bool = False  # a caller's plan names one layout (it may be written blind)
    owns_issuer: bool = False  # the run opened the issuer of ``here``, so it closes it

    @property
    def plan_for(self) -> Any:
        """What a board asks once identified: a resolver, or the fixed plans."""
        if self.here is not None:
            return self.here
        if self.pool is not None:
            return self.pool
        assert self.checked is not None
        return self.checked.resolver or self.checked.plans

    def job_plans(self, *, in_process: bool) -> Any:
        """A job's plans: fixed, a resolver sent to the worker, or asked of the parent."""
        if self.here is None or in_process:
            return self.plan_for
        from atflash.run.workers import FromParent

        return FromParent.asking(self.here)


def open_sources(spec: RunSpec) -> Sources:
    """The run's credential source, opened and checked (issuer, pool and ledger, or every image)."""
    issuing = _issue_resolver(spec)
    if issuing is not None:
        return Sources(here=issuing, owns_issuer=True)
    pool = _pool_resolver(spec)
    if pool is not None:
        return Sources(pool=pool)
    return Sources(checked=check_plans(spec))


def given_sources(plan_for: Plan | Callable[[BoardIdentity], Any]) -> Sources:
    """A Python caller's source: one :class:`~atflash.offline.Plan`, or a function asked per board.

    A function that also takes each board's result (``on_result``, an
    issuer's resolver) hears it as the board ends, and its ``finish`` when
    the run ends, as in a run of the command's own issuer.
    """
    if isinstance(plan_for, Plan):
        checked = CheckedConfig((), plan_for.candidates, None)
        return Sources(checked=checked, explicit=plan_for.explicit)
    if callable(getattr(plan_for, "on_result", None)):
        return Sources(here=plan_for)
    return Sources(here=_Answered(plan_for))


class _Answered:
    """A caller's ``plan_for``, its answer taken as plans (no plan at all is refused)."""

    def __init__(self, plan_for: Callable[[BoardIdentity], Any]) -> None:
        self.plan_for = plan_for
        self.reads = tuple(getattr(plan_for, "reads", ()))
        self.profiles = tuple(getattr(plan_for, "profiles", ()))

    def __call__(self, identity: BoardIdentity) -> Sequence[WritePlan]:
        plans = candidates_of(self.plan_for(identity))
        if not plans:
            raise InputError(f"{identity.port}: plan_for returned no plan")
        return plans


def _issue_resolver(spec: RunSpec) -> Any:
    """With --issue (or a bench file's [issue]): the issuer opened and checked, before any board."""
    if spec.issue is None and spec.issue_table is None:
        if spec.escrow:
            raise InputError("--escrow goes with --issue", hint="name the issuer file")
        return None  # --reissue alone: a pool's (refused below when there is none)
    _refuse_files_with_issuer(spec)
    if spec.action != "write":
        raise InputError("--issue writes: use it with atflash write")
    from atflash.issue import Issuer, IssueResolver, check_escrow_dir

    config = _issuer_config(spec)
    if spec.escrow is not None:
        check_escrow_dir(spec.escrow)  # before the issuer opens (and may create) its ledger
    issuer = Issuer.open(config, station=spec.station, ledger=spec.ledger)
    return IssueResolver.checked(
        issuer,
        spec.layout.profiles(),
        spec.plan_options,
        reissue=spec.reissue,
        escrow=spec.escrow,
    )


def _refuse_files_with_issuer(spec: RunSpec, *, as_keys: bool = False) -> None:
    """An issuer gives each board its certificate and key: files besides it are refused."""
    if spec.partitions or spec.manifest or spec.pool:
        issuer = "--issue" if spec.issue is not None else f"{spec.bench}'s [issue]"
        files = "partitions or manifest" if as_keys else "PARTITION FILE..., --manifest or --pool"
        raise InputError(
            f"{issuer} gives each board its certificate and key: no {files} with it",
            hint="keep the issuer, or the files, not both",
        )


def _issuer_config(spec: RunSpec) -> Any:
    """The issuer's settings: from --issue's file, or the bench file's [issue] table."""
    from atflash.issue import load_issuer_config
    from atflash.issue.config import bench_issuer_config

    if spec.issue is not None:
        return load_issuer_config(spec.issue)
    return bench_issuer_config(spec.issue_table or {}, spec.bench or "")


@dataclass(frozen=True)
class BenchCheck:
    """What ``atflash check`` found: a bench file checked as a run checks it, with no board.

    ``issuer`` holds the facts of an issuing bench's CA (its ``[issue]``
    table); ``plans`` every image of a bench that names its files, built and
    checked. A bench file has one or the other.
    """

    config: BenchConfig
    issuer: dict[str, str] | None = None
    plans: CheckedConfig | None = None


def check_bench(config: BenchConfig) -> BenchCheck:
    """Everything a run of ``config`` checks before its first board, refused as the run would.

    Its slots were parsed as it was loaded (:func:`~atflash.run.config.load_config`).
    An ``[issue]`` table's CA is opened and checked (key, PIN, validity,
    templates) and closed again, creating no ledger.
    """
    spec = merge({}, config)  # the file's values, as a run would take them
    check_run_outputs(spec, as_keys=True)
    if spec.issue_table is None:
        return BenchCheck(config, plans=check_plans(spec))
    from atflash.issue.issuer import check_issuer

    _refuse_files_with_issuer(spec, as_keys=True)
    return BenchCheck(config, issuer=check_issuer(_issuer_config(spec), station=spec.station))


def check_run_outputs(spec: RunSpec, *, as_keys: bool = False) -> None:
    """What a run writes can be written, before any board: a run's and ``atflash check``'s rule.

    The report, log, backup folder and the files the run reads are distinct
    paths: ``--log X --report X`` would replace the log's history with the
    report. The one sharing allowed is ``--only-failed X --report X``: the
    rerun is merged into X on purpose (see :func:`execute`). ``{date}`` and
    ``{time}`` are filled in with one time for both, as a run does. Then the
    report's folder and the backup folder are checked writable
    (:func:`~atflash.run.config.check_outputs`). ``as_keys`` names them as a
    bench file does (``report``, ``the bench file``), not as options.
    """
    when = datetime.datetime.now()
    ledger = spec.ledger
    if ledger and "://" in ledger:  # only a SQLite file can be named twice
        ledger = ledger[len("sqlite:///") :] if ledger.startswith("sqlite:///") else None
    named = {
        "--report": audit.stamp_path(spec.report, when) if spec.report else None,
        "--log": audit.stamp_path(spec.log, when) if spec.log else None,
        "--backup": spec.backup,
        "--only-failed": spec.only_failed,
        "--manifest": spec.manifest,
        "--config": spec.bench,
        "--ledger": ledger,
    }
    if as_keys:
        named = {_KEYS.get(role, role[2:]): path for role, path in named.items()}
    refuse_shared_paths(named, allowed=[frozenset({"--only-failed", "--report"})])
    check_outputs(report=spec.report, backup=spec.backup)


_KEYS = {"--config": "the bench file"}


def _pool_resolver(spec: RunSpec) -> Any:
    """With --pool: every set checked and the ledger opened before the first board."""
    if spec.pool is None:
        if spec.reissue:
            raise InputError(
                "--reissue goes with --pool or --issue",
                hint="name the pool or the issuer whose credentials to write anew",
            )
        if spec.ledger is not None or spec.force_ledger:
            raise InputError(
                "--ledger and --force-ledger go with --pool or --issue",
                hint="name the pool the ledger hands out",
            )
        return None
    if spec.partitions or spec.manifest:
        raise InputError(
            "--pool gives each board its files: no PARTITION FILE... arguments, [partitions] "
            "or --manifest with it"
        )
    from atflash.factory import pool_resolver
    from atflash.factory.pool import default_ledger

    if spec.ledger is not None and not spec.ledger.strip():
        raise InputError("--ledger is empty", hint="give a file or URL, or drop it for the default")
    ledger = spec.ledger or str(default_ledger(spec.pool))
    return pool_resolver(
        spec.pool,
        ledger,
        station=spec.station,
        profiles=spec.layout.profiles(),
        options=spec.plan_options,
        reissue=spec.reissue,
        force_ledger=spec.force_ledger,
    )


def execute(
    run: PreparedRun, *, events: EventSink = ignore, stop: StopRequest | None = None
) -> RunOutcome:
    """Provision (or verify) every board of a prepared run; write the report and log if asked.

    One board without batch options runs in this process: no worker to
    start, and esptool's process-global state serves one board anyway.
    ``stop`` (see :func:`atflash.run.workers.stop_on_signals`) ends a batch early:
    boards not finished are recorded as ``interrupted`` and the report is
    still written. A rerun of ``--only-failed X`` that reports to X again
    is folded into X (:func:`atflash.run.report.merge_reports`); reported
    anywhere else, it holds only the boards it ran.

    Nothing that fails once boards were written loses what they hold: a
    board the ledger could not record is marked ``unrecorded`` (and, by
    :attr:`RunSpec.on_ledger_error`, no new board starts), and a log
    or report that cannot be written is listed in
    :attr:`RunOutcome.unwritten`, its content saved elsewhere, while the
    other is still written (:mod:`atflash.run.records`).
    """
    spec = run.spec
    stop = stop if stop is not None else StopRequest()
    started = datetime.datetime.now()
    start = time.monotonic()
    assert run.sources is not None, "a run with nothing to do is not executed"
    sources = run.sources
    recorder = LedgerRecorder(sources.pool, spec.on_ledger_error, stop) if sources.pool else None
    # Each board's outcome as it ends: a pool's ledger, or an issuer's record of its certificate.
    on_result = recorder if recorder is not None else getattr(sources.here, "on_result", None)
    try:
        if run.one_board:
            results = [run_board(run.jobs[0], events)]
            if on_result is not None:
                on_result(results[0])
        else:
            results = run_batch(
                list(run.jobs),
                options=BatchOptions(jobs=spec.jobs, retries=spec.retry, plan_for=sources.here),
                events=events,
                stop=stop,
                on_result=on_result,
            )
    finally:
        _close(sources)
    seconds = time.monotonic() - start
    resolver = sources.checked.resolver if sources.checked else None
    unused = unused_rows(resolver, run.jobs, results)
    if run.earlier is not None:
        # A rerun sees only the failed boards: a row the first run used is not unused.
        before = unused_rows_of(run.earlier)
        unused = [row for row in unused if row in before]
    report = build_report(results, seconds=seconds, unused_rows=unused, action=spec.action)
    records: list[dict[str, Any]] = []
    if spec.log:
        context = audit.LogContext.here(spec.action, spec.station)
        # One record per board attempt: a retried board's failed attempts come first.
        records = [
            audit.log_record(attempt, context)
            for r in results
            for attempt in (*r.earlier_attempts, r)
        ]
    report_path = None
    if spec.report:
        report_path = Path(audit.stamp_path(spec.report, started))
        if (
            run.earlier is not None
            and spec.only_failed
            and _same_file(report_path, spec.only_failed)
        ):
            report = merge_reports(run.earlier, report)
    written = write_run_records(
        log=audit.stamp_path(spec.log, started) if spec.log else None,
        log_records=records,
        report=report_path,
        report_data=report,
        when=started,
    )
    return RunOutcome(
        results,
        seconds,
        unused,
        report,
        action=spec.action,
        stopped_by=stop.signum,
        records=written,
        ledger_hold=stop.held,
        ledger=recorder.ledger if recorder is not None else None,
    )


def _close(sources: Sources) -> None:
    """An issuer's end of run: boards lost before their result superseded; the CA key let go
    when the run opened the issuer (a Python caller's stays open for the caller to close)."""
    finish = getattr(sources.here, "finish", None)
    if finish is not None:
        finish()
    if sources.owns_issuer:
        sources.here.issuer.close()  # the CA key or token session: not held past the boards


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _locator(port: PortInfo, filters: PortFilter) -> PortFilter | None:
    """What finds this board again after a re-enumeration: its USB serial number, else location."""
    if port.serial_number:
        return PortFilter(serial_number=port.serial_number)
    if filters.location and port.location:
        return PortFilter(location=port.location)
    return None


def port_specs(spec: RunSpec, failed_ports: Sequence[str] | None) -> list[str]:
    """The --port values to resolve: given ones, 'auto' when only filters are, or a report's."""
    if failed_ports is not None and not spec.ports:
        return list(failed_ports)
    if spec.ports:
        return list(spec.ports)
    if spec.filters:
        return [AUTO]
    raise InputError("no port given", hint="pass --port (a device, a glob, a URL or 'auto')")


def check_plans(spec: RunSpec) -> CheckedConfig:
    """Every image of the run built and checked, before the first board."""
    with delimiter_hint():
        return check_config(
            spec.layout,
            partitions=spec.partitions,
            manifest=spec.manifest,
            strict=spec.strict,
            options=spec.plan_options,
            source=spec.bench or "",
        )


@contextlib.contextmanager
def delimiter_hint() -> Iterator[None]:
    """A manifest whose header reads as one column holding ';': say it is not comma-separated.

    Spreadsheets in many locales save "CSV" with semicolons; the parser
    then sees one unknown first column and can only say that.
    """
    try:
        yield
    except ManifestError as exc:
        if exc.problem.startswith("first column is") and ";" in exc.problem:
            raise ManifestError(
                exc.source, exc.line, exc.problem,
                hint="the manifest separates columns with ';': atflash reads comma-separated "
                "values (export it as CSV with ',' between columns)",
            ) from None  # fmt: skip
        raise


def unused_rows(
    resolver: ManifestResolver | None, jobs: Sequence[BoardJob], results: Sequence[BoardResult]
) -> list[tuple[int, str]]:
    """Manifest rows no board of the run used (line, key)."""
    if resolver is None:
        return []
    seen = [
        BoardIdentity(r.port, chip=r.chip, mac=r.mac, serial_number=j.serial_number)
        for j, r in zip(jobs, results, strict=True)
    ]
    return resolver.unused(seen)
