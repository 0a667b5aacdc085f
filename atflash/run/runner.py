"""A whole write (or verify) run over many boards, as a library: ports, plans, workers, report, log, exit code.

The CLI gathers :class:`WriteSettings` (command line merged with a bench
file) and renders; everything between is here, so a Python caller runs a
bench the same way without click::

    run = prepare(settings)                # ports resolved, every image built and checked
    with batch.stop_on_signals() as stop:  # Ctrl-C, SIGTERM: boards finish, report written
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from atflash.backends import registry
from atflash.backends.base import WriteOptions
from atflash.errors import EXIT_DEVICE_ERROR, EXIT_MISMATCH, InputError, ManifestError
from atflash.events import EventSink, ignore
from atflash.files import is_glob
from atflash.layout.model import Profile
from atflash.output import refuse_shared_paths
from atflash.planning.manifest import ManifestResolver
from atflash.planning.plan import BoardIdentity, PartitionRequest, PlanOptions, request_names
from atflash.ports import AUTO, PortFilter, PortInfo, is_url, port_key, resolve_ports
from atflash.recovery import default_state_dir
from atflash.results import BoardResult
from atflash.run import audit
from atflash.run.config import (
    BenchConfig,
    CheckedConfig,
    candidate_profiles,
    check_config,
    chip_for,
    is_explicit_layout,
)
from atflash.run.records import LedgerRecorder, RunRecords, Unwritten, write_run_records
from atflash.run.report import (
    build_report,
    failed_boards,
    load_report,
    merge_reports,
    unused_rows_of,
)
from atflash.run.workers import BatchOptions, BoardJob, StopRequest, run_batch, run_board, warm_up

# Link options (CLI spellings) handed to the chosen backend's connection options.
LINK_OPTIONS = ("baud", "before", "after", "connect_attempts", "chunk_size", "table_offset")


@dataclass(frozen=True)
class WriteSettings:
    """Every value a write run acts on, after merging the bench file."""

    chip: str | None
    profile: str | None
    ports: tuple[str, ...]
    filters: PortFilter
    link: dict[str, Any]  # LINK_OPTIONS -> value (None: the backend's default)
    force: bool
    backup: str | None
    skip_unchanged: bool
    pair_check: bool
    jobs: int | None
    retry: int
    report: str | None
    only_failed: str | None
    manifest: str | None
    strict: bool
    config: BenchConfig | None
    groups: tuple[str, ...]
    via: str = "esptool"  # a key of registry.BACKENDS
    key_type_check: bool = True
    pool: str | None = None  # factory: a pool of credential sets, claimed per board...
    ledger: str | None = None  # ...in this ledger (SQLite path or postgresql:// URL)
    given: frozenset[str] = field(default_factory=frozenset)  # options set by the user
    action: Literal["write", "verify"] = "write"  # verify: compare every board, write nothing
    log: str | None = None  # append one JSON line per board here (atflash.run.audit)
    station: str | None = None  # the operator's bench name: in the log, and the ledger's station
    # A ledger that fails to record a written board: "stop" starts no new board
    # (the boards running finish), "continue" goes on (each claim tries again).
    on_ledger_error: Literal["stop", "continue"] = "stop"
    issue: str | None = None  # an issuer file: each board gets a certificate issued for its MAC
    # --issue: a new certificate even if the board holds a valid one (the old one superseded);
    # --pool: write a claimed set whose files changed. Either way recorded in the ledger.
    reissue: bool = False
    escrow: str | None = None  # --issue: each key also saved here, encrypted
    force_ledger: bool = False  # --pool: use a ledger that records another pool

    def __post_init__(self) -> None:
        # An option that means nothing to the chosen backend is refused, never ignored.
        registry.get(self.via).refuse_foreign(self.given)

    @property
    def single_board(self) -> bool:
        """One plain port and no batch option: the one-board output."""
        if len(self.ports) != 1 or self.filters or self.config is not None:
            return False
        port = self.ports[0]
        if port == AUTO or (not is_url(port) and is_glob(port)):
            return False
        batch_only = (
            self.jobs,
            self.retry,
            self.report,
            self.only_failed,
            self.manifest,
            self.strict,
            self.pool,
        )
        return not any(batch_only)

    @property
    def plan_options(self) -> PlanOptions:
        return PlanOptions(pair_check=self.pair_check, key_type_check=self.key_type_check)

    @property
    def write_options(self) -> WriteOptions:
        return WriteOptions(
            force=self.force,
            skip_unchanged=self.skip_unchanged,
            backup_dir=Path(self.backup) if self.backup else None,
            explicit_layout=is_explicit_layout(self.chip, self.profile),
            journal_dir=default_state_dir(),
            pair_check=self.pair_check,
        )

    def connect_for(self, port: str) -> Any:
        """The chosen backend's connection options for one port."""
        return registry.get(self.via).connect_options(port, self.link)

    def candidate_profiles(self) -> list[Profile]:
        """The layouts a board may have (see :func:`atflash.run.config.chip_for`)."""
        return candidate_profiles(chip_for(self.chip, self.profile, self.via), self.profile)


@dataclass(frozen=True)
class PreparedRun:
    """Boards found and every image checked: nothing is left that could refuse the run."""

    settings: WriteSettings
    jobs: tuple[BoardJob, ...]
    checked: CheckedConfig | None
    nothing_to_do: str | None = None  # why the run has no board to touch
    pool: Any = None  # the pool resolver: results are recorded in its ledger
    earlier: dict[str, Any] | None = None  # the --only-failed report, as loaded
    plan_for: Any = None  # plans made here, in this process, per board (an issuer's resolver)


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


def prepare(settings: WriteSettings, parse_groups: Any = None) -> PreparedRun:
    """Resolve the ports and build and check every plan, before the first board.

    ``parse_groups`` turns the command line's ``PARTITION FILE...`` tokens
    into requests (the CLI passes its parser; a library caller may give a
    bench file's ``[partitions]`` instead and no groups).
    """
    refuse_shared_outputs(settings)
    earlier = load_report(settings.only_failed) if settings.only_failed else None
    failed_ports = [b.port for b in failed_boards(earlier)] if earlier is not None else None
    if failed_ports == []:
        return PreparedRun(
            settings, (), None, f"{settings.only_failed}: no failed boards: nothing to do"
        )
    if settings.single_board:
        ports = [PortInfo(settings.ports[0])]  # one named port is taken as given, as esptool does
    else:
        ports = resolve_ports(port_specs(settings, failed_ports), filters=settings.filters)
    if failed_ports is not None and settings.ports:
        wanted = {port_key(name) for name in failed_ports}  # COM3 is com3 on Windows
        ports = [p for p in ports if port_key(p.device) in wanted]
        if not ports:
            raise InputError(
                "none of the given ports failed in the report",
                hint="drop --port to re-run them all",
            )
    if not settings.single_board:
        warm_up(backends=[settings.via])  # the worker server starts while the plans are built
    issuing = _issue_resolver(settings)
    pool = None if issuing is not None else _pool_resolver(settings)
    checked = None if (pool or issuing) is not None else check_plans(settings, parse_groups)
    if settings.log:
        audit.check_log(audit.stamp_path(settings.log))
    jobs = tuple(
        BoardJob(
            port=p.device,
            connect=settings.connect_for(p.device),
            plans=_plans_of(settings, issuing, pool, checked),
            options=settings.write_options,
            serial_number=p.serial_number,
            backend=settings.via,
            locate=_locator(p, settings.filters),
            action=settings.action,
        )
        for p in ports
    )
    return PreparedRun(settings, jobs, checked, pool=pool, earlier=earlier, plan_for=issuing)


def _plans_of(settings: WriteSettings, issuing: Any, pool: Any, checked: Any) -> Any:
    """A job's plans: fixed, a resolver sent to the worker, or made here (an issuer's)."""
    if issuing is None:
        return pool or (checked.resolver or checked.plans)
    if settings.single_board:
        return issuing  # the board runs in this process
    from atflash.run.workers import FromParent

    return FromParent(reads=issuing.reads, profiles=issuing.profiles)


def _issue_resolver(settings: WriteSettings) -> Any:
    """With --issue (or a bench file's [issue]): the issuer opened and checked, before any board."""
    table = settings.config.issue if settings.config is not None else None
    if settings.issue is None and table is None:
        if settings.escrow:
            raise InputError("--escrow goes with --issue", hint="name the issuer file")
        return None  # --reissue alone: a pool's (refused below when there is none)
    if settings.groups or settings.manifest or settings.pool:
        raise InputError(
            "--issue gives each board its certificate and key: no PARTITION FILE..., "
            "--manifest or --pool with it"
        )
    if settings.action != "write":
        raise InputError("--issue writes: use it with atflash write")
    from atflash.issue import Issuer, IssueResolver, check_escrow_dir, load_issuer_config
    from atflash.issue.config import parse_issuer_config

    if settings.issue is not None:
        config = load_issuer_config(settings.issue)
    else:
        bench = Path(settings.config.source)  # type: ignore[union-attr]
        config = parse_issuer_config(
            table or {}, source=f"{bench} [issue]", base=bench.parent, stem=bench
        )
    if settings.escrow is not None:
        check_escrow_dir(settings.escrow)
    issuer = Issuer.open(config, station=settings.station, ledger=settings.ledger)
    return IssueResolver(
        issuer,
        settings.candidate_profiles(),
        settings.plan_options,
        reissue=settings.reissue,
        escrow=settings.escrow,
    )


def refuse_shared_outputs(settings: WriteSettings, when: datetime.datetime | None = None) -> None:
    """The report, log, backup folder and the files the run reads are distinct paths.

    ``--log X --report X`` would replace the log's history with the report.
    The one sharing allowed is ``--only-failed X --report X``: the rerun is
    merged into X on purpose (see :func:`execute`). ``{date}`` and ``{time}``
    are filled in with one time for both, as a run does.
    """
    when = when or datetime.datetime.now()
    ledger = settings.ledger
    if ledger and "://" in ledger:  # only a SQLite file can be named twice
        ledger = ledger[len("sqlite:///") :] if ledger.startswith("sqlite:///") else None
    refuse_shared_paths(
        {
            "--report": audit.stamp_path(settings.report, when) if settings.report else None,
            "--log": audit.stamp_path(settings.log, when) if settings.log else None,
            "--backup": settings.backup,
            "--only-failed": settings.only_failed,
            "--manifest": settings.manifest,
            "--config": settings.config.source if settings.config else None,
            "--ledger": ledger,
        },
        allowed=[frozenset({"--only-failed", "--report"})],
    )


def _pool_resolver(settings: WriteSettings) -> Any:
    """With --pool: every set checked and the ledger opened before the first board."""
    if settings.pool is None:
        if settings.reissue:
            raise InputError(
                "--reissue goes with --pool or --issue",
                hint="name the pool or the issuer whose credentials to write anew",
            )
        if settings.ledger is not None or settings.force_ledger:
            raise InputError(
                "--ledger and --force-ledger go with --pool or --issue",
                hint="name the pool the ledger hands out",
            )
        return None
    if settings.groups or settings.manifest:
        raise InputError(
            "--pool gives each board its files: no PARTITION FILE... arguments or --manifest with it"
        )
    from atflash.factory import pool_resolver
    from atflash.factory.pool import default_ledger

    if settings.ledger is not None and not settings.ledger.strip():
        raise InputError("--ledger is empty", hint="give a file or URL, or drop it for the default")
    ledger = settings.ledger or str(default_ledger(settings.pool))
    return pool_resolver(
        settings.pool,
        ledger,
        station=settings.station,
        profiles=settings.candidate_profiles(),
        options=settings.plan_options,
        reissue=settings.reissue,
        force_ledger=settings.force_ledger,
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
    :attr:`WriteSettings.on_ledger_error`, no new board starts), and a log
    or report that cannot be written is listed in
    :attr:`RunOutcome.unwritten`, its content saved elsewhere, while the
    other is still written (:mod:`atflash.run.records`).
    """
    settings = run.settings
    stop = stop if stop is not None else StopRequest()
    started = datetime.datetime.now()
    start = time.monotonic()
    recorder = LedgerRecorder(run.pool, settings.on_ledger_error, stop) if run.pool else None
    on_result = recorder
    if run.plan_for is not None:
        on_result = run.plan_for.on_result  # each new certificate's outcome, as its board ends
    if settings.single_board and len(run.jobs) == 1:
        results = [run_board(run.jobs[0], events)]
    else:
        results = run_batch(
            list(run.jobs),
            options=BatchOptions(jobs=settings.jobs, retries=settings.retry, plan_for=run.plan_for),
            events=events,
            stop=stop,
            on_result=on_result,
        )
    seconds = time.monotonic() - start
    if run.plan_for is not None:
        if settings.single_board and len(run.jobs) == 1:
            run.plan_for.on_result(results[0])
        run.plan_for.finish()  # a board lost before its result: its certificate superseded
        run.plan_for.issuer.close()  # the CA key or token session: not held past the boards
    for job, result in zip(run.jobs, results, strict=True):
        for attempt in (*result.earlier_attempts, result):
            given = run.plan_for if run.plan_for is not None else job.plans  # made here: asked here
            plan = audit.plan_of(attempt, given, serial_number=job.serial_number)
            audit.annotate(attempt, plan)
    resolver = run.checked.resolver if run.checked else None
    unused = unused_rows(resolver, run.jobs, results)
    if run.earlier is not None:
        # A rerun sees only the failed boards: a row the first run used is not unused.
        before = unused_rows_of(run.earlier)
        unused = [row for row in unused if row in before]
    report = build_report(results, seconds=seconds, unused_rows=unused, action=settings.action)
    records: list[dict[str, Any]] = []
    if settings.log:
        context = audit.LogContext.here(settings.action, settings.station)
        # One record per board attempt: a retried board's failed attempts come first.
        records = [
            audit.log_record(attempt, context)
            for r in results
            for attempt in (*r.earlier_attempts, r)
        ]
    report_path = None
    if settings.report:
        report_path = Path(audit.stamp_path(settings.report, started))
        if (
            run.earlier is not None
            and settings.only_failed
            and _same_file(report_path, settings.only_failed)
        ):
            report = merge_reports(run.earlier, report)
    written = write_run_records(
        log=audit.stamp_path(settings.log, started) if settings.log else None,
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
        action=settings.action,
        stopped_by=stop.signum,
        records=written,
        ledger_hold=stop.held,
        ledger=recorder.ledger if recorder is not None else None,
    )


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


def port_specs(settings: WriteSettings, failed_ports: Sequence[str] | None) -> list[str]:
    """The --port values to resolve: given ones, 'auto' when only filters are, or a report's."""
    if failed_ports is not None and not settings.ports:
        return list(failed_ports)
    if settings.ports:
        return list(settings.ports)
    if settings.filters:
        return [AUTO]
    raise InputError("no port given", hint="pass --port (a device, a glob, a URL or 'auto')")


def check_plans(settings: WriteSettings, parse_groups: Any = None) -> CheckedConfig:
    """Every image of the run built and checked, before the first board."""
    config = settings.config or BenchConfig(source="")
    # settings already hold the bench file's chip and profile where none was typed.
    chip = chip_for(settings.chip, settings.profile, settings.via)
    profiles = candidate_profiles(chip, settings.profile)
    requests: list[PartitionRequest] | None = None
    if settings.groups:
        requests = parse_groups(settings.groups, request_names(profiles))
    with delimiter_hint():
        return check_config(
            config,
            chip=chip,
            profile=settings.profile,
            partitions=requests,
            manifest=settings.manifest,
            strict=settings.strict,
            pair_check=settings.pair_check,
            key_type_check=settings.key_type_check,
            report=settings.report,
            backup=settings.backup,
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
