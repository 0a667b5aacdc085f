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
this process, so that a CA key or an HSM session never leaves it.

Credentials are paths or bytes (what a CA or an HSM hands over). Bytes are
checked exactly as files are, and called ``<bytes client_key[0]>`` in
messages and records; their content never appears in a repr, an error, an
event or a report.

This layer sits on the library's flows (:mod:`atflash.backends.base`,
:mod:`atflash.batch`) and adds no logic of its own beyond turning Python
values into their inputs.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

from atflash.backends import registry
from atflash.backends.base import BoardTables, Session, WriteOptions, verify_board, write_board
from atflash.errors import InputError
from atflash.events import EventSink, ignore
from atflash.files import Blob
from atflash.layout.model import Partition, Profile
from atflash.planning.plan import (
    BoardIdentity,
    PartitionRequest,
    PlanOptions,
    WritePlan,
    build_plans,
    request_names,
)
from atflash.results import BoardResult

if TYPE_CHECKING:
    from atflash.batchrun import RunOutcome
    from atflash.content.pki import PkiItem
    from atflash.factory.images import PatchedImage

# One credential: a path, or its bytes (a Blob names them yourself).
Credential = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", Blob]
# Partition (or ESP-AT 3.1+ namespace) -> its credentials in ID order (one may stand alone).
Credentials = Mapping[str, Credential | Sequence[Credential]]
PlanFor = Callable[[BoardIdentity], Union["Plan", Sequence[WritePlan]]]

_ONE = (bytes, bytearray, memoryview, str, os.PathLike, Blob)


# -- plans ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Every image for a board, built and checked: one candidate per layout it may have.

    The board's own tables choose among the candidates when it is written,
    so one plan serves every module of a chip. Made by :func:`plan` or
    :meth:`Board.plan`; holds no open file.
    """

    candidates: tuple[WritePlan, ...]
    # One layout was named (a profile, not a chip): --force may then write a blank board.
    explicit: bool = False

    @property
    def partitions(self) -> tuple[str, ...]:
        """The partitions (or 3.1+ namespaces) the plan writes."""
        return tuple(image.partition.name for image in self.candidates[0].images)

    @property
    def layouts(self) -> tuple[str, ...]:
        """The layouts (profile names) the plan was built for."""
        return tuple(candidate.profile.name for candidate in self.candidates)

    def __repr__(self) -> str:
        return f"Plan({', '.join(self.partitions)} for {', '.join(self.layouts)})"


def plan(
    credentials: Credentials,
    *,
    chip: str | None = "auto",
    profile: str | os.PathLike[str] | None = None,
    pair_check: bool = True,
    key_type_check: bool = True,
) -> Plan:
    """Build and check every image, before any board is touched; no port is opened.

    ``credentials`` maps a partition (``client_cert``, ...) or, on ESP-AT
    3.1+, a namespace of the same name to its items in ID order: paths, or
    bytes. ``chip`` is a chip (``esp32c3``: its every known layout), a
    layout name (``esp32c3-3x``) or ``auto`` (every chip's); ``profile`` a
    profile file or an ``at_customize.csv`` (with ``chip``). Raises an
    :class:`~atflash.errors.InputError` on the first problem (a file that
    is no certificate, a key that does not pair, an image too big).
    """
    from atflash.planning.bench import candidate_profiles, is_explicit_layout

    path = os.fspath(profile) if profile is not None else None
    if path is not None and chip == "auto":
        chip = None  # the profile file is the layout; a chip only says whose CSV it is
    profiles = candidate_profiles(chip or ("auto" if path is None else None), path)
    options = PlanOptions(pair_check=pair_check, key_type_check=key_type_check)
    return Plan(_build(profiles, credentials, options), is_explicit_layout(chip, path))


def _build(
    profiles: Sequence[Profile], credentials: Credentials, options: PlanOptions
) -> tuple[WritePlan, ...]:
    requests = _requests(credentials, request_names(profiles))
    return tuple(build_plans(profiles, requests, options=options))


def _requests(credentials: Credentials, names: set[str]) -> list[PartitionRequest]:
    """Each partition's sources: paths as given, bytes as Blobs named for messages."""
    if not credentials:
        raise InputError(
            "no credentials given",
            hint='map a partition to its items, e.g. {"client_cert": [cert_pem]}',
        )
    requests = []
    for name, given in credentials.items():
        if name not in names:
            raise InputError(
                f"no partition {name!r} in the layouts planned for",
                hint=f"credential partitions are: {', '.join(sorted(names))}",
            )
        items = [given] if isinstance(given, _ONE) else list(given)
        requests.append(
            PartitionRequest(name, tuple(_source(name, i, c) for i, c in enumerate(items)))
        )
    return requests


def _source(partition: str, index: int, item: object) -> str | Blob:
    if isinstance(item, Blob):
        return item
    if isinstance(item, (bytes, bytearray, memoryview)):
        return Blob(f"<bytes {partition}[{index}]>", bytes(item))
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    raise InputError(
        f"{partition}[{index}]: a {type(item).__name__}, not a path or bytes",
        hint="give each credential as a file path or its PEM/DER bytes",
    )


def _candidates(given: Plan | WritePlan | Sequence[WritePlan]) -> tuple[WritePlan, ...]:
    if isinstance(given, Plan):
        return given.candidates
    if isinstance(given, WritePlan):
        return (given,)
    return tuple(given)


# -- one board, kept connected ------------------------------------------------------------


@dataclass(frozen=True)
class Dump:
    """A partition read whole from a board, and where its own table puts it."""

    partition: Partition
    data: bytes = field(repr=False)


class Board:
    """One board, connected until :meth:`close` (or the end of its ``with`` block).

    ``mac``, ``chip`` and ``firmware`` are what the board said when it was
    reached; ``tables`` its own credential table (``partitions``, ``store``,
    ``layout``: the known layout it matches), read once then. Each of
    :meth:`write`, :meth:`verify` and :meth:`read` runs over the same
    connection, so a plan can be made in between (:meth:`plan`) from what
    the board said. Made by :func:`connect`.
    """

    def __init__(
        self,
        backend: registry.BackendInfo,
        options: Any,
        *,
        chip: str | None,
        profile: str | None,
        on_event: EventSink,
    ) -> None:
        from atflash.planning.bench import is_explicit_layout

        self.via = backend.name
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
            self._explicit = is_explicit_layout(chip, profile)
            self._profiles = _board_profiles(chip, profile, info.chip)
            self.tables = (
                self._session.tables(self._profiles)
                if self._profiles
                else BoardTables(None, problem=f"no known layout for chip {self.chip}")
            )
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
        known = [p for p in self._profiles if p.name == self.layout]
        options = PlanOptions(pair_check=pair_check, key_type_check=key_type_check)
        return Plan(_build(known or self._profiles, credentials, options), self._explicit)

    def write(
        self,
        plan: Plan | WritePlan | Sequence[WritePlan],
        *,
        on_event: EventSink | None = None,
        force: bool = False,
        backup_dir: str | os.PathLike[str] | None = None,
        skip_unchanged: bool = True,
    ) -> BoardResult:
        """Write the plan and verify every partition; the result says what each holds now.

        Never raises for the board's failure: ``result.ok`` is true only when
        everything is verified in flash, ``result.error`` says why not, and
        each partition's status what state its flash is in. ``force`` writes
        where the board's own table says even when it matches no known
        layout; ``backup_dir`` saves what is overwritten first (0600 files).
        """
        from atflash.planning.bench import check_outputs

        plans = _candidates(plan)
        if backup_dir is not None:
            check_outputs(report=None, backup=os.fspath(backup_dir))
        options = WriteOptions(
            force=force,
            explicit_layout=self._explicit or (isinstance(plan, Plan) and plan.explicit),
            skip_unchanged=skip_unchanged,
            backup_dir=Path(backup_dir) if backup_dir is not None else None,
        )
        held = _Held(self)
        result = write_board(
            held, self._options, plans, options=options, events=self._sink(on_event)
        )
        return _annotated(result, plans)

    def verify(
        self, plan: Plan | WritePlan | Sequence[WritePlan], *, on_event: EventSink | None = None
    ) -> BoardResult:
        """Compare the board with the plan, writing nothing: statuses ``match`` or ``differs``."""
        plans = _candidates(plan)
        result = verify_board(_Held(self), self._options, plans, events=self._sink(on_event))
        return _annotated(result, plans)

    def read(self, partition: str, *, on_event: EventSink | None = None) -> Dump:
        """A whole partition (or, on 3.1+, the ``mfg_nvs`` holding a namespace), as the board's
        table places it. Raises a :class:`~atflash.errors.DeviceError` if it cannot."""
        with _Held(self).open(self._options, self._sink(on_event)) as session:
            part, data = session.read_partition(partition, self._profiles)
        return Dump(part, data)

    def close(self) -> None:
        """Release the port (an esptool board is reset as ``after`` says). Idempotent."""
        self._session = None
        self._stack.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------

    def _forward(self, event: Any) -> None:
        self._relay(event)

    def _sink(self, on_event: EventSink | None) -> EventSink:
        return on_event if on_event is not None else self._on_event


class _Held:
    """The backend the library's flows see for a board kept connected.

    Its ``open`` opens nothing: it hands out a new session over the board's
    connection (:meth:`~atflash.backends.base.Session.again`), with the
    session's own events routed to the operation's sink meanwhile.
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
        try:
            yield board._session.again()
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
    and ``after`` drive its control lines) and left open for you to close. ``via="esptool"`` reaches the ROM loader
    (``baud``, ``before``, ``after``, ``table_offset`` as esptool has
    them); ``via="at"`` a running ESP-AT firmware's AT port (``baud``,
    ``chunk_size``). ``chip`` or ``profile`` name the layouts to expect
    (default: those of the chip the board says it is). Raises a
    :class:`~atflash.errors.DeviceError` when the board cannot be reached.
    """
    backend = registry.get(via)
    values = {
        "baud": baud,
        "before": _spelled(before, "before"),
        "after": _spelled(after, "after"),
        "connect_attempts": connect_attempts,
        "table_offset": table_offset,
        "chunk_size": chunk_size,
    }
    backend.refuse_foreign({name for name, value in values.items() if value is not None})
    name, link = _port_of(port)
    options = backend.connect_options(name, values)
    if link is not None:
        options = replace(options, link=link)
    path = os.fspath(profile) if profile is not None else None
    return Board(backend, options, chip=chip, profile=path, on_event=on_event or ignore)


def _spelled(value: str | None, option: str) -> str | None:
    """esptool's reset mode, in either spelling (``no_reset`` is ``no-reset``), or a refusal."""
    from atflash.backends.esptool.options import AFTER, BEFORE

    if value is None:
        return None
    choices: tuple[str, ...] = BEFORE if option == "before" else AFTER
    spelled = value.replace("_", "-")
    if spelled not in choices:
        raise InputError(
            f"{option}={value!r} is not a reset mode", hint=f"choose one of: {', '.join(choices)}"
        )
    return spelled


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


def _board_profiles(chip: str | None, profile: str | None, found: str | None) -> list[Profile]:
    """The layouts a connected board may have: those named, else its chip's (every one if unknown)."""
    from atflash.layout.profiles import family
    from atflash.planning.bench import candidate_profiles

    if profile is not None or chip not in (None, "auto"):
        return candidate_profiles(chip, profile)
    return family(found) if found else candidate_profiles("auto", None)


def _annotated(result: BoardResult, plans: Sequence[WritePlan] | PlanFor) -> BoardResult:
    """The result with each partition's sources and public item facts (the audit trail)."""
    from atflash import audit

    audit.annotate(result, audit.plan_of(result, plans))  # type: ignore[arg-type]
    return result


# -- many boards ------------------------------------------------------------------------


class _Recorded:
    """``plan_for``, called in this process, remembering what it gave each port (for the audit)."""

    def __init__(self, plan_for: PlanFor) -> None:
        self.plan_for = plan_for
        self.given: dict[str, tuple[WritePlan, ...]] = {}

    def __call__(self, identity: BoardIdentity) -> Sequence[WritePlan]:
        plans = _candidates(self.plan_for(identity))
        if not plans:
            raise InputError(f"{identity.port}: plan_for returned no plan")
        self.given[identity.port] = plans
        return plans


def run_batch(
    ports: str | Sequence[str],
    plan_for: Plan | PlanFor,
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
    on_event: EventSink | None = None,
) -> RunOutcome:
    """Write (or with ``verify_only`` compare) many boards at once, one worker process each.

    ``ports`` are devices, URLs, globs or ``auto`` (every known USB bridge),
    as ``--port`` takes them. ``plan_for`` is a :class:`Plan` for every
    board, or a function called here, in this process, with each board's
    :class:`BoardIdentity` (port, chip, MAC, USB serial number) once it is
    connected, returning its plan; raising ``BoardSkipped`` leaves the
    board alone, any other error fails that board only. One failing board
    never stops the others. ``report`` (JSON, 0600) and ``log`` (JSON
    lines) are checked writable before the first board. Returns the
    outcome: ``results`` (one :class:`BoardResult` per board, in port
    order), ``report`` and ``exit_code`` as the command line would end.
    """
    from atflash import audit
    from atflash.batch import BatchOptions, BoardJob, FromParent
    from atflash.batch import run_batch as run_workers
    from atflash.batchrun import RunOutcome
    from atflash.planning.bench import check_outputs
    from atflash.ports import resolve_ports
    from atflash.report import build_report, write_report

    backend = registry.get(via)
    link = {
        "baud": baud,
        "before": _spelled(before, "before"),
        "after": _spelled(after, "after"),
        "connect_attempts": connect_attempts,
        "chunk_size": chunk_size,
    }
    backend.refuse_foreign({name for name, value in link.items() if value is not None})
    check_outputs(report=_path(report), backup=_path(backup_dir))
    if log is not None:
        audit.check_log(audit.stamp_path(os.fspath(log)))
    found = resolve_ports([ports] if isinstance(ports, str) else list(ports))
    if not found:
        raise InputError("no port given", hint="give devices, URLs, globs or 'auto'")
    recorded = None if isinstance(plan_for, Plan) else _Recorded(plan_for)
    plans: Any = plan_for.candidates if isinstance(plan_for, Plan) else FromParent()
    explicit = isinstance(plan_for, Plan) and plan_for.explicit
    options = WriteOptions(
        force=force,
        explicit_layout=explicit,
        skip_unchanged=skip_unchanged,
        backup_dir=Path(backup_dir) if backup_dir is not None else None,
    )
    action: Literal["write", "verify"] = "verify" if verify_only else "write"
    board_jobs = [
        BoardJob(
            port=p.device,
            connect=backend.connect_options(p.device, link),
            plans=plans,
            options=options,
            serial_number=p.serial_number,
            backend=backend.name,
            action=action,
        )
        for p in found
    ]
    started, start = datetime.datetime.now(), time.monotonic()
    results = run_workers(
        board_jobs,
        options=BatchOptions(jobs=jobs, retries=retry, plan_for=recorded),
        events=on_event or ignore,
    )
    seconds = time.monotonic() - start
    for result in results:
        for attempt in (*result.earlier_attempts, result):
            given = recorded.given.get(attempt.port, ()) if recorded else plans
            audit.annotate(attempt, audit.plan_of(attempt, given))
    outcome_report = build_report(results, seconds=seconds, action=action)
    if log is not None:
        context = audit.LogContext.here(action, station)
        records = [audit.log_record(a, context) for r in results for a in (*r.earlier_attempts, r)]
        audit.append_log(audit.stamp_path(os.fspath(log), started), records)
    if report is not None:
        write_report(Path(audit.stamp_path(os.fspath(report), started)), outcome_report)
    return RunOutcome(results, seconds, [], outcome_report, action=action)


def _path(value: str | os.PathLike[str] | None) -> str | None:
    return os.fspath(value) if value is not None else None


# -- no board: images and bins -------------------------------------------------------------


def build_images(
    plan: Plan,
    *,
    layout: str | None = None,
    factory_param: str = "module",
    out_dir: str | os.PathLike[str] | None = None,
) -> dict[str, bytes]:
    """The images a chip programmer writes, by partition: padded PKI images (ESP-AT 2.x), or
    one whole ``mfg_nvs`` (3.1+) with ``factory_param`` from ``module`` defaults,
    ``dump:FILE`` or ``csv:FILE``.

    Built for ``layout`` (a name among ``plan.layouts``; default the first,
    the chip's usual one). With ``out_dir`` each is also written there as
    ``<partition>.bin``, all or none, those holding a key 0600.
    """
    from atflash.content import creds
    from atflash.factory import images
    from atflash.layout.model import MFG_NVS
    from atflash.output import write_outputs

    chosen = _layout_of(plan, layout)
    if chosen.nvs:
        base = images.load_nvs_base(images.FactoryParam.parse(factory_param), chosen.profile)
        built = {MFG_NVS: images.build_mfg_nvs(chosen, base.items)}
        secret = {MFG_NVS} if images.holds_private_key(chosen) else set()
    else:
        built = {img.partition.name: chosen.data_for(img) for img in chosen.images}
        secret = {
            img.partition.name
            for img in chosen.images
            if img.partition.pki == "key" or any(creds.holds_private_key(c) for _n, c in img.items)
        }
    if out_dir is not None:
        folder = Path(out_dir)
        outputs = {folder / f"{name}.bin": data for name, data in built.items()}
        inputs = [s for img in chosen.images for s in img.sources]
        write_outputs(outputs, private=lambda p: p.stem in secret, inputs=inputs)
    return built


def _layout_of(plan: Plan, layout: str | None) -> WritePlan:
    if layout is None:
        return plan.candidates[0]
    for candidate in plan.candidates:
        if candidate.profile.name == layout:
            return candidate
    raise InputError(
        f"the plan has no layout {layout!r}", hint=f"it was built for: {', '.join(plan.layouts)}"
    )


def patch_image(
    image: bytes | str | os.PathLike[str],
    credentials: Credentials,
    *,
    chip: str | None = None,
    profile: str | os.PathLike[str] | None = None,
    table_offset: int = 0x8000,
    pair_check: bool = True,
    key_type_check: bool = True,
    output: str | os.PathLike[str] | None = None,
) -> PatchedImage:
    """A whole factory image (bytes or a file) with ``credentials`` in place; nothing else changes.

    The image's own partition table and ``at_customize.bin`` say where they
    go (``chip`` or ``profile`` only when they match no known layout).
    Returns the patched ``data`` with the ``regions`` replaced and any
    ``warnings``; with ``output`` it is also written there (0600 if it
    holds a key).
    """
    from atflash.factory import images
    from atflash.layout.profiles import load_profile
    from atflash.output import write_outputs

    path = os.fspath(profile) if profile is not None else None
    base = load_profile(path or chip, chip=chip if path else None) if (chip or path) else None  # type: ignore[arg-type]
    if isinstance(image, (bytes, bytearray, memoryview)):
        factory = images.open_factory_image(
            bytes(image), source="<bytes image>", table_offset=table_offset, base=base
        )
    else:
        factory = images.read_factory_image(os.fspath(image), table_offset=table_offset, base=base)
    requests = _requests(credentials, request_names([factory.profile]))
    options = PlanOptions(pair_check=pair_check, key_type_check=key_type_check)
    planned = images.plan_for_image(factory, requests, options=options)
    patched = images.patch_image(factory, planned)
    if output is not None:
        secret = images.holds_private_key(planned)
        inputs = [factory.source, *(s for req in requests for s in req.files)]
        write_outputs({Path(output): patched.data}, private=lambda _p: secret, inputs=inputs)
    return patched


def generate_bin(
    items: Sequence[tuple[str, bytes | str | os.PathLike[str]]], *, key_type_check: bool = True
) -> bytes:
    """One PKI bin, byte for byte what ``AtPKI.py generate_bin`` makes, from ``(type, item)``
    pairs: type ``ca``, ``cert`` or ``key``, item a path or its bytes (taken as they are,
    but a certificate must carry no key and a key must be one ESP-AT can use)."""
    from atflash.content import creds, pki

    built = []
    for index, (kind, item) in enumerate(items):
        if kind not in pki.TYPE_CODES:
            raise InputError(f"unknown item type {kind!r}", hint="use ca, cert or key")
        source = _source(kind, index, item)
        data = pki.read_input(source)
        creds.check_items(kind, [(str(source), data)], key_type_check=key_type_check)  # type: ignore[arg-type]
        built.append((kind, data, str(source)))
    if not built:
        raise InputError("no items given", hint='give (type, item) pairs, e.g. [("cert", pem)]')
    return pki.build(built)


def parse_bin(data: bytes | str | os.PathLike[str]) -> list[PkiItem]:
    """Every item of a PKI bin or a partition dump (bytes or a file): ``type``, ``id``,
    ``content`` (whose repr never shows it), in the bin's order."""
    from atflash.content import pki

    if isinstance(data, (bytes, bytearray, memoryview)):
        return list(pki.parse(bytes(data), source="<bytes bin>").items)
    path = os.fspath(data)
    return list(pki.parse(pki.read_bin_file(path), source=path).items)
