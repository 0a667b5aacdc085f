"""The public Python API: what ``import atflash`` gives a script.

In the manner of ``esptool.cmds``: functions and one class that take bytes
or paths and return values. Nothing here prints; progress and results go to
an ``on_event`` callback as :class:`~atflash.events.Event` records, and
every refusal is an error of atflash's one tree (:mod:`atflash.errors`),
raised before anything is written::

    import atflash

    plan = atflash.plan({"client_cert": [cert_pem], "client_key": ["dev.key"]}, chip="esp32c3")
    with atflash.connect("/dev/ttyUSB0") as board:        # or an open serial port object
        result = board.write(plan, on_event=print)         # verified; a BoardResult
    outcome = atflash.run_batch(["/dev/ttyUSB*"], plan, report="run.json")

A plan can also be made once the board is connected, from what it said
(``board.mac``, ``board.chip``, ``board.layout``): ``board.plan(...)``, and
for a batch a ``plan_for`` function called with each board's identity, in
this process, so that a CA key or an HSM session never leaves it. An
:class:`~atflash.issue.issuer.Issuer` goes where a plan goes
(``board.write(issuer)``, ``run_batch(ports, issuer)``): each board gets a
certificate issued for its MAC, as ``atflash write --issue`` gives it.

Credentials are paths or bytes (what a CA or an HSM hands over). Bytes are
checked exactly as files are, and called ``<bytes client_key[0]>`` in
messages and records; their content never appears in a repr, an error, an
event or a report.

Here: a board (:func:`connect`, :class:`Board`) and many
(:func:`run_batch`); what needs no board (:func:`plan`, the images and
bins) lives in :mod:`atflash.offline` and is re-exported from here. This
layer sits on the library's flows (:mod:`atflash.backends.base`,
:mod:`atflash.run.workers`, :mod:`atflash.issue`) and adds no logic of its own
beyond turning Python values into their inputs, and the issuing steps around
a write: read back what the board holds, keep it or issue, record the result.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from atflash.backends import registry
from atflash.backends.base import BoardTables, Session, WriteOptions, verify_board, write_board
from atflash.errors import InputError, ProfileError
from atflash.events import EventSink, ignore
from atflash.layout.choice import LayoutChoice
from atflash.layout.model import Partition, Profile
from atflash.offline import (
    Credential,
    Credentials,
    Plan,
    build,
    build_devices,
    build_images,
    candidates_of,
    generate_bin,
    parse_bin,
    patch_image,
    plan,
    unpack_bin,
)
from atflash.planning.plan import BoardIdentity, PlanOptions, WritePlan, check_readable
from atflash.results import BoardResult

if TYPE_CHECKING:
    from atflash.content.describe import InspectReport
    from atflash.issue.issuer import Issuer
    from atflash.issue.resolve import IssueResolver
    from atflash.recovery import Backup
    from atflash.run.runner import RunOutcome

PlanFor = Callable[[BoardIdentity], Plan | Sequence[WritePlan]]
Plans = Plan | WritePlan | Sequence[WritePlan]  # what a board's write or verify takes

__all__ = [
    "Board",
    "Credential",
    "Credentials",
    "Dump",
    "Plan",
    "PlanFor",
    "build_devices",
    "build_images",
    "connect",
    "generate_bin",
    "load_backups",
    "parse_bin",
    "patch_image",
    "plan",
    "restore",
    "run_batch",
    "unpack_bin",
]


# -- one board, kept connected ------------------------------------------------------------


@dataclass(frozen=True)
class Dump:
    """A partition read whole from a board (``port``), and where its own table puts it."""

    partition: Partition
    data: bytes = field(repr=False)
    port: str | None = None

    def save(
        self, path: str | os.PathLike[str], *, inputs: Sequence[str | os.PathLike[str]] = ()
    ) -> None:
        """Write the bytes to ``path``, 0600 (a partition may hold a key), all or nothing.

        ``inputs`` are files the caller read (a profile): ``path`` may not be one of them.
        """
        from atflash.output import write_private

        write_private(Path(path), self.data, inputs=[os.fspath(i) for i in inputs])

    def inspect(self, *, saved: str | os.PathLike[str] | None = None) -> InspectReport:
        """What the dump holds, item by item, as ``atflash read`` shows it.

        The bytes came from the board, so what does not read (a PKI bin cut
        short, an ``mfg_nvs`` without its ``factory_param``) is the board's
        damage: :class:`~atflash.errors.DamagedStoreError`, naming ``saved``
        (where the caller kept the bytes) if given.
        """
        from atflash.content import mfgnvs
        from atflash.content.describe import inspect_bytes
        from atflash.errors import DamagedStoreError, FormatError
        from atflash.layout.model import MFG_NVS

        part = self.partition
        source = f"{part.name} @ {part.offset:#x}"
        try:
            if part.name == MFG_NVS:  # without factory_param it is damage, as write says
                mfgnvs.read_mfg_nvs(self.data, source=source)
            return inspect_bytes(self.data, source=source)
        except FormatError as exc:
            where = f" (saved to {os.fspath(saved)})" if saved is not None else ""
            raise DamagedStoreError(
                self.port,
                part.name,
                f"{exc.what}: {exc.problem}{where}",
                hint="restore a backup of this board (atflash restore --port PORT BACKUP.bin)",
            ) from None


class Board:
    """One board, connected until :meth:`close` (or the end of its ``with`` block).

    ``mac``, ``chip`` and ``firmware`` are what the board said when it was
    reached; ``tables`` its own credential table (``partitions``, ``store``,
    ``layout``: the known layout it matches), read once then. Each of
    :meth:`write`, :meth:`verify` and :meth:`read` runs over the same
    connection, so a plan can be made in between (:meth:`plan`) from what
    the board said. Made by :func:`connect`.

    esptool's output is process-wide state, captured for the board while it
    is connected: keep one esptool board connected per process at a time
    (:func:`run_batch` gives each board its own process).
    """

    def __init__(
        self,
        backend: registry.BackendInfo,
        options: Any,
        *,
        layout: LayoutChoice,
        named: Sequence[Profile],
        on_event: EventSink,
    ) -> None:
        self.via = backend.name
        self._lists_partitions = backend.lists_partitions
        self._options = options
        self._on_event = on_event
        self._relay: EventSink = on_event  # where the session's own events go now
        self._stack = contextlib.ExitStack()
        self._session: Session | None = None
        with self._stack:
            self._session = self._stack.enter_context(backend.load().open(options, self._forward))
            info = self._session.info
            self.port: str = self._session.port
            self.mac, self.chip, self.firmware = info.mac, info.chip, info.firmware
            self._explicit = layout.explicit
            self._profiles = list(named) or layout.for_board(info.chip)
            self.tables = (
                self._session.tables(self._profiles)
                if self._profiles
                else BoardTables(None, problem=f"no known layout for chip {self.chip}")
            )
            # The first operation runs in this session: it has read the tables, and nothing
            # was written since. Each later one learns the flash afresh (Session.again).
            self._first: Session | None = self._session
            self._stack = self._stack.pop_all()  # connected: stays open past this block

    # -- what the board said --------------------------------------------------------------

    @property
    def layout(self) -> str | None:
        """The known layout (profile name) the board's own tables match; None if none does."""
        return self.tables.layout

    @property
    def partitions(self) -> tuple[Partition, ...] | None:
        """The board's own credential partitions (None: its tables could not be read)."""
        return self.tables.partitions

    @property
    def identity(self) -> BoardIdentity:
        """Port, chip and MAC: what a batch's ``plan_for`` is given for a board."""
        return BoardIdentity(self.port, chip=self.chip, mac=self.mac)

    def __repr__(self) -> str:
        state = "" if self._session is not None else ", closed"
        return f"Board({self.port!r}, chip={self.chip!r}, mac={self.mac!r}, layout={self.layout!r}{state})"

    # -- operations -----------------------------------------------------------------------

    def plan(
        self, credentials: Credentials, *, pair_check: bool = True, key_type_check: bool = True
    ) -> Plan:
        """A plan for this board: for the layout its tables match, else for its chip's layouts.

        Like :func:`plan`, and made from what the board said: per-board
        credentials (a certificate issued for ``board.mac``) go here.
        """
        options = PlanOptions(pair_check=pair_check, key_type_check=key_type_check)
        return Plan(build(self._layouts(), credentials, options), self._explicit)

    def _layouts(self) -> list[Profile]:
        """The layout the board's tables match, else its chip's; none known is refused."""
        if not self._profiles:
            raise ProfileError(
                f"{self.port}: no known layout for a {self.chip}",
                hint="connect with profile= naming your firmware's at_customize.csv or profile",
            )
        return [p for p in self._profiles if p.name == self.layout] or list(self._profiles)

    def write(
        self,
        plan: Plans | Issuer,
        *,
        on_event: EventSink | None = None,
        force: bool = False,
        backup_dir: str | os.PathLike[str] | None = None,
        skip_unchanged: bool = True,
        reissue: bool = False,
        escrow: str | os.PathLike[str] | None = None,
    ) -> BoardResult:
        """Write the plan and verify every partition; the result says what each holds now.

        Never raises for the board's failure: ``result.ok`` is true only when
        everything is verified in flash, ``result.error`` says why not, and
        each partition's status what state its flash is in. ``force`` writes
        where the board's own table says even when it matches no known
        layout; ``backup_dir`` saves what is overwritten first (0600 files).
        A whole-``mfg_nvs`` write keeps its image in the journal of the state
        folder (``ATFLASH_STATE_DIR``, as the command does) until verified, so
        the same call made again completes a write that was cut short.

        ``plan`` may be an opened :class:`~atflash.Issuer` instead, as
        ``atflash write --issue`` takes one: a valid certificate of that
        issuer for this board's MAC that the board holds is kept (written
        again as it is: unchanged, verified); otherwise a new one is issued
        (``reissue`` supersedes the live one in the ledger; ``escrow`` names
        a folder for its key, encrypted with ``$ATFLASH_ESCROW_PASSPHRASE``),
        written and verified, and the ledger records how the write ended.
        """
        from atflash.run.config import check_outputs

        if backup_dir is not None:
            check_outputs(report=None, backup=os.fspath(backup_dir))
        options = WriteOptions(
            force=force,
            explicit_layout=self._explicit or (isinstance(plan, Plan) and plan.explicit),
            skip_unchanged=skip_unchanged,
            backup_dir=Path(backup_dir) if backup_dir is not None else None,
        )
        events = self._sink(on_event)
        issuer = _issuer(plan, {"reissue": reissue, "escrow": escrow})
        if issuer is not None:
            return self._write_issued(issuer, options, events, reissue=reissue, escrow=escrow)
        return self._write(candidates_of(cast(Plans, plan)), options, events)

    def verify(self, plan: Plans, *, on_event: EventSink | None = None) -> BoardResult:
        """Compare the board with the plan, writing nothing: statuses ``match`` or ``differs``."""
        plans = candidates_of(plan)
        return verify_board(_Held(self), self._options, plans, events=self._sink(on_event))

    def restore(
        self,
        backups: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Sequence[Backup],
        *,
        force: bool = False,
        on_event: EventSink | None = None,
    ) -> BoardResult:
        """Put whole-partition backups (the ``.bin`` files ``backup_dir`` saved, each with its
        ``.bin.json`` record) back verbatim, and verify them, as ``atflash restore`` does.

        Every backup is checked against its record before the board is
        touched (:class:`~atflash.errors.InputError` otherwise), or was
        already (:func:`atflash.load_backups`, before connecting); a backup of
        another board (MAC) is refused unless ``force``. Like :meth:`write`,
        never raises for the board's own failure: see ``result.ok``.
        """
        from atflash.backends.base import restore_board

        return restore_board(
            _Held(self), self._options, _loaded(backups), force=force, events=self._sink(on_event)
        )

    def read(self, partition: str, *, on_event: EventSink | None = None) -> Dump:
        """A whole partition, where the board's own table places it, as ``atflash read`` shows
        it: a 3.1+ namespace through esptool is the whole ``mfg_nvs`` holding it, over AT its
        items as a PKI bin. Raises a :class:`~atflash.errors.DeviceError` if it cannot, and an
        :class:`~atflash.errors.InputError` before reading for a name none of the board's
        layouts has (unless the firmware lists its partitions itself: ESP-AT's)."""
        if not self._lists_partitions:
            check_readable(partition, self._profiles)
        with _Held(self).open(self._options, self._sink(on_event)) as session:
            part, data = session.read_partition(partition, self._profiles)
        return Dump(part, data, self.port)

    def read_table(
        self, *, on_event: EventSink | None = None
    ) -> tuple[str, tuple[Partition, ...] | None]:
        """The board's credential partition table as ``atflash partitions --port`` shows it: a
        title naming the board and where its table is, and the partitions (None: blank
        flash). Unlike :attr:`tables`, a table that cannot be read raises a
        :class:`~atflash.errors.DeviceError`."""
        with _Held(self).open(self._options, self._sink(on_event)) as session:
            return session.table(self._profiles)

    def close(self) -> None:
        """Release the port (an esptool board is reset as ``after`` says). Idempotent."""
        self._session = None
        self._stack.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------

    def _write(
        self, plans: Sequence[WritePlan], options: WriteOptions, events: EventSink
    ) -> BoardResult:
        return write_board(_Held(self), self._options, plans, options=options, events=events)

    def _write_issued(
        self,
        issuer: Issuer,
        options: WriteOptions,
        events: EventSink,
        *,
        reissue: bool,
        escrow: str | os.PathLike[str] | None,
    ) -> BoardResult:
        """This board's certificate from ``issuer``: the one it holds kept, or one issued,
        written and verified, and how its write ended recorded (a failed one is superseded).

        The batch's own resolver in the one write flow: what the board holds is read back
        in the session that writes, and a board that does not answer that read fails
        rather than counting as holding nothing (which would issue a second certificate).
        """
        from atflash.issue.resolve import IssueResolver

        resolver = IssueResolver.checked(issuer, self._layouts(), reissue=reissue, escrow=escrow)
        try:
            result = write_board(
                _Held(self), self._options, resolver, options=options, events=events
            )
            resolver.record(result)  # a ledger that cannot store it raises, as before
        finally:
            resolver.finish()  # a certificate whose write never ended: superseded
        return result

    def _forward(self, event: Any) -> None:
        self._relay(event)

    def _sink(self, on_event: EventSink | None) -> EventSink:
        return on_event if on_event is not None else self._on_event


class _Held:
    """The backend the library's flows see for a board kept connected.

    Its ``open`` opens nothing: it hands out the session that connected (to
    the first operation) or a new one over the board's connection
    (:meth:`~atflash.backends.base.Session.again`), with the session's own
    events routed to the operation's sink meanwhile.
    """

    def __init__(self, board: Board) -> None:
        self.board = board
        self.name = board.via

    @contextlib.contextmanager
    def open(self, _connect: Any, events: EventSink) -> Iterator[Session]:
        board = self.board
        if board._session is None:
            raise InputError(f"{board.port}: the board was closed", hint="connect to it again")
        previous, board._relay = board._relay, events
        session, board._first = board._first or board._session.again(), None
        try:
            yield session
        finally:
            board._relay = previous


def connect(
    port: str | os.PathLike[str] | Any,
    *,
    via: Literal["esptool", "at"] | str = "esptool",
    baud: int | None = None,
    before: str | None = None,
    after: str | None = None,
    connect_attempts: int | None = None,
    table_offset: int | None = None,
    chunk_size: int | None = None,
    chip: str | None = None,
    profile: str | os.PathLike[str] | None = None,
    on_event: EventSink | None = None,
) -> Board:
    """Reach a board and read its own tables; a :class:`Board` to use in a ``with`` block.

    ``port`` is a device (``/dev/ttyUSB0``, ``COM3``), a pyserial URL
    (``socket://host:port``, ``rfc2217://...``) or a serial port object
    you opened (pyserial's ``SerialBase``): that one is used as it is
    (the backend sets its baud rate and timeouts, and esptool's ``before``
    and ``after`` drive its control lines) and left open for you to close.
    ``via="esptool"`` reaches the ROM loader (``baud``, ``before``,
    ``after``, ``table_offset`` as esptool has them); ``via="at"`` a
    running ESP-AT firmware's AT port (``baud``, ``chunk_size``). ``chip`` or ``profile`` name the layouts to expect
    (default: those of the chip the board says it is). Raises a
    :class:`~atflash.errors.DeviceError` when the board cannot be reached.
    """
    backend = registry.get(via)
    options = _connect_options(
        backend, port,
        {"baud": baud, "before": before, "after": after, "connect_attempts": connect_attempts,
         "table_offset": table_offset, "chunk_size": chunk_size},
    )  # fmt: skip
    layout = LayoutChoice.of(chip, os.fspath(profile) if profile is not None else None)
    # Named layouts are loaded before the port opens: a bad chip or profile touches no board.
    named = layout.profiles() if layout.kind != "auto" else []
    return Board(backend, options, layout=layout, named=named, on_event=on_event or ignore)


def restore(
    port: str | os.PathLike[str] | Any,
    backups: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Sequence[Backup],
    *,
    via: Literal["esptool", "at"] | str = "esptool",
    force: bool = False,
    baud: int | None = None,
    before: str | None = None,
    after: str | None = None,
    connect_attempts: int | None = None,
    table_offset: int | None = None,
    chunk_size: int | None = None,
    on_event: EventSink | None = None,
) -> BoardResult:
    """:meth:`Board.restore` on the board at ``port``, connected for it alone, as ``atflash
    restore`` does: the board's failure, reaching it included, is in the result, never raised.

    The backups are checked first (:func:`load_backups`), before the port opens.
    """
    from atflash.backends.base import restore_board

    backend = registry.get(via)
    options = _connect_options(
        backend, port,
        {"baud": baud, "before": before, "after": after, "connect_attempts": connect_attempts,
         "table_offset": table_offset, "chunk_size": chunk_size},
    )  # fmt: skip
    loaded = _loaded(backups)
    return restore_board(backend.load(), options, loaded, force=force, events=on_event or ignore)


def _loaded(
    backups: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Sequence[Backup],
) -> list[Backup]:
    """Backups as given, or loaded and checked from paths."""
    from atflash import recovery

    given = [backups] if isinstance(backups, (str, os.PathLike)) else list(backups)
    if given and all(isinstance(b, recovery.Backup) for b in given):
        return list(given)  # type: ignore[arg-type]
    return load_backups(given)  # type: ignore[arg-type]


def load_backups(paths: Sequence[str | os.PathLike[str]]) -> list[Backup]:
    """Backups (the ``.bin`` files ``backup_dir`` saved) read and checked against their
    ``.bin.json`` records, with no board: one board's, one per partition.

    For refusing a bad backup before connecting; :meth:`Board.restore` takes
    the list. Raises :class:`~atflash.errors.InputError` naming the file.
    """
    from atflash import recovery

    return recovery.load_all([Path(p) for p in paths])


def _connect_options(
    backend: registry.BackendInfo, port: str | os.PathLike[str] | Any, values: dict[str, Any]
) -> Any:
    """The backend's connection options for ``port`` (a name, or a serial port object)."""
    name, link = _port_of(port)
    options = backend.connect_options(name, _link_values(backend, values))
    return replace(options, link=link) if link is not None else options


def _link_values(backend: registry.BackendInfo, values: dict[str, Any]) -> dict[str, Any]:
    """Link options as the backend takes them; one given for another backend is refused."""
    from atflash.backends.esptool.options import reset_mode

    for option in ("before", "after"):
        if values.get(option) is not None:
            values[option] = reset_mode(option, values[option])
    return backend.link(values, [name for name, value in values.items() if value is not None])


def _port_of(port: Any) -> tuple[str, Any]:
    """The port's name for messages, and the open port object when one was given."""
    if isinstance(port, (str, os.PathLike)):
        return os.fspath(port), None
    if all(hasattr(port, attr) for attr in ("read", "write", "is_open")):
        return str(getattr(port, "port", None) or "<serial port>"), port
    raise InputError(
        f"port {port!r} is neither a port name nor a serial port object",
        hint="give a device, a socket:// URL or an open serial.Serial",
    )


def _issuer(given: object, issuing: Mapping[str, object]) -> Issuer | None:
    """``given`` if it is an :class:`~atflash.Issuer` rather than a plan or a ``plan_for``
    function; with a plan, the ``issuing`` options given (not None or False) are refused."""
    if not isinstance(given, (Plan, WritePlan, Sequence)) and not callable(given):
        from atflash.issue.issuer import Issuer  # only for what is no plan: it costs a tenth

        if isinstance(given, Issuer):
            return given
    named = [
        f"{name}=" for name, value in issuing.items() if value is not None and value is not False
    ]
    if named:
        raise InputError(
            f"{', '.join(named)} {'goes' if len(named) == 1 else 'go'} with an Issuer",
            hint="pass an opened atflash.Issuer where the plan goes",
        )
    return None


# -- many boards ------------------------------------------------------------------------


def run_batch(
    ports: str | Sequence[str],
    plan_for: Plan | PlanFor | Issuer,
    *,
    via: str = "esptool",
    jobs: int | None = None,
    retry: int = 0,
    verify_only: bool = False,
    force: bool = False,
    backup_dir: str | os.PathLike[str] | None = None,
    skip_unchanged: bool = True,
    report: str | os.PathLike[str] | None = None,
    log: str | os.PathLike[str] | None = None,
    station: str | None = None,
    baud: int | None = None,
    before: str | None = None,
    after: str | None = None,
    connect_attempts: int | None = None,
    chunk_size: int | None = None,
    chip: str | None = None,
    profile: str | os.PathLike[str] | None = None,
    reissue: bool = False,
    escrow: str | os.PathLike[str] | None = None,
    on_event: EventSink | None = None,
) -> RunOutcome:
    """Write (or with ``verify_only`` compare) many boards at once, one worker process each.

    ``ports`` are devices, URLs, globs or ``auto`` (every known USB bridge),
    as ``--port`` takes them. ``plan_for`` is a :class:`Plan` for every
    board, or a function called here, in this process, with each board's
    :class:`BoardIdentity` (port, chip, MAC, USB serial number) once it is
    connected, returning its plan; raising ``BoardSkipped`` leaves the
    board alone, any other error fails that board only. One failing board
    never stops the others.

    ``plan_for`` may also be an opened :class:`~atflash.Issuer`: each board
    then gets its certificate as :meth:`Board.write` gives it one
    (``reissue``, ``escrow``), for the layouts of ``chip`` or ``profile``
    (default: every known one), and the ledger records each board's outcome
    as it ends (a board it could not record is ``unrecorded``).

    ``report`` (JSON, 0600) and ``log`` (JSON
    lines) are checked writable before the first board. Ctrl-C or SIGTERM
    (in the main thread) stops the batch the safe way, as the command
    does: running boards finish, the rest are ``interrupted``, the report
    is written, and ``stopped_by`` names the signal. Returns the outcome:
    ``results`` (one :class:`BoardResult` per board, in port order),
    ``report`` and ``exit_code`` as the command line would end. Like
    :meth:`Board.write`, a whole-``mfg_nvs`` write is journalled in the state
    folder, so running the batch again completes a board's write cut short.
    """
    from atflash.run.runner import execute, prepare
    from atflash.run.spec import RunSpec
    from atflash.run.workers import stop_on_signals

    backend = registry.get(via)
    values = {"baud": baud, "before": before, "after": after,
              "connect_attempts": connect_attempts, "chunk_size": chunk_size}  # fmt: skip
    spec = RunSpec(
        via=backend.name,
        link=_link_values(backend, values),
        ports=(ports,) if isinstance(ports, str) else tuple(ports),
        action="verify" if verify_only else "write",
        force=force,
        backup=_path(backup_dir),
        skip_unchanged=skip_unchanged,
        jobs=jobs,
        retry=retry,
        report=_path(report),
        log=_path(log),
        station=station,
    )
    resolver = _resolver(
        plan_for, chip, profile, reissue=reissue, escrow=escrow, verify_only=verify_only
    )
    run = prepare(
        spec, cast("Plan | PlanFor", plan_for) if resolver is None else resolver, as_keys=True
    )
    with stop_on_signals() as stop:  # Ctrl-C, SIGTERM: boards finish their step, the report comes
        return execute(run, events=on_event or ignore, stop=stop)


def _resolver(
    plan_for: object,
    chip: str | None,
    profile: str | os.PathLike[str] | None,
    *,
    reissue: bool,
    escrow: str | os.PathLike[str] | None,
    verify_only: bool,
) -> IssueResolver | None:
    """For an Issuer, a batch's ``plan_for`` issuing each board's certificate, checked before
    any board; None for a plan or a ``plan_for`` function."""
    issuing = {"chip": chip, "profile": profile, "reissue": reissue, "escrow": escrow}
    issuer = _issuer(plan_for, issuing)
    if issuer is None:
        return None
    from atflash.issue.resolve import IssueResolver

    if verify_only:
        raise InputError(
            "verify_only=True with an Issuer: it issues, so it writes",
            hint="run it again without verify_only: a board holding its certificate keeps it",
        )
    profiles = LayoutChoice.of(chip, _path(profile)).profiles()
    return IssueResolver.checked(issuer, profiles, reissue=reissue, escrow=escrow)


def _path(value: str | os.PathLike[str] | None) -> str | None:
    return os.fspath(value) if value is not None else None
