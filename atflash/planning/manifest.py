"""Per-device credentials: a CSV manifest naming each board's own files.

The format, one header line then one row per board::

    # comments and blank lines are ignored
    mac,               client_cert,          client_key
    24:0a:c4:00:00:01, certs/dev1.crt,       keys/dev1.key
    24:0a:c4:00:00:02, certs/dev2.crt,       keys/dev2.key

- The first column says how boards are recognised; its header is one of
  ``mac`` (read from the chip on connect; any of ``24:0A:C4:...``,
  ``24-0a-c4-...`` or ``240ac4...``), ``serial_number`` (the USB bridge's,
  as ``atflash ports`` shows it) or ``port`` (the device path or URL,
  exactly as given to ``--port`` or found by a glob). One kind per file:
  mixing them would let two rows claim one board.
- Every other header is a partition name. A cell lists that board's files
  for the partition in PKI ID order, separated by ``;`` (paths may contain
  spaces; ``;`` does not occur in file names people choose). Relative paths
  are taken from the manifest's folder; globs are expanded in natural
  order. An empty cell leaves that partition alone on that board.
- Partitions given on the command line (``PARTITION FILE...``) are written
  to every board in addition to its row; a partition in both is an error.

Everything is validated before the first board is touched: each row's
files exist, build, fit and pair, for every candidate profile; duplicate
keys and unknown partitions are refused with the CSV line number.
:class:`ManifestResolver` then picks a board's plans once it is identified;
a board without a row is skipped (or refused when ``strict``).

One row, one board: in a batch every row is claimed by the first board that
reports its key (:class:`RowClaims`, kept by the batch parent). A second
board with the same identity (two boards sharing a MAC, a serial number
cloned by a cheap USB bridge) is refused before anything is written to it,
naming the board that has the row: two boards must never hold one key.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol, cast

from atflash.content import mfgnvs
from atflash.content.identity import Owners, set_fingerprints
from atflash.errors import (
    AtflashError,
    BoardSkipped,
    DeviceError,
    FileInputError,
    ManifestError,
    NotInManifestError,
)
from atflash.files import expand, read_bounded
from atflash.layout.model import Profile
from atflash.planning.plan import (
    BoardIdentity,
    PartitionRequest,
    PlanOptions,
    WritePlan,
    build_plans,
)
from atflash.ports import is_url, port_key

KeyKind = Literal["mac", "serial_number", "port"]
KEY_KINDS: tuple[KeyKind, ...] = ("mac", "serial_number", "port")
FILE_SEPARATOR = ";"
# A row is a few hundred bytes: 8 MiB is tens of thousands of boards, and
# keeps a wrong file (a disk image, /dev/zero) from filling the memory.
MAX_MANIFEST = 8 * 1024 * 1024
_MAC_HEX = re.compile(r"^[0-9a-f]{12}$")


@dataclass(frozen=True)
class ManifestRow:
    """One board's line: its key (normalised) and its partitions' files."""

    line: int
    key: str
    requests: tuple[PartitionRequest, ...]


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest, files expanded but not yet built."""

    source: str
    key_kind: KeyKind
    columns: tuple[str, ...]  # the partition columns, in header order
    rows: tuple[ManifestRow, ...]
    header_line: int = 1


def normalize_mac(text: str) -> str | None:
    """``24:0A:C4:00:00:01``, ``24-0a-c4-00-00-01`` or ``240ac4000001`` as ``24:0a:c4:00:00:01``."""
    digits = re.sub(r"[:\-.\s]", "", text.strip().lower())
    if not _MAC_HEX.match(digits):
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def normalize_key(kind: KeyKind, text: str) -> str | None:
    """The comparable form of a key, or None when it is not valid for its kind."""
    text = text.strip()
    if not text:
        return None
    if kind == "mac":
        return normalize_mac(text)
    if kind == "port" and not is_url(text):
        return port_key(os.path.normpath(text))  # COM3 and com3 are one port on Windows
    return text


def load_manifest(path: str | Path) -> Manifest:
    """Parse a manifest file; see the module docstring for the format."""
    path = Path(path)
    try:
        text = read_bounded(path, MAX_MANIFEST, "a manifest").decode("utf-8-sig")
    except FileInputError as exc:
        raise ManifestError(
            str(path), None, f"cannot read the manifest: {exc.problem}", hint=exc.hint
        ) from None
    except UnicodeDecodeError:
        raise ManifestError(str(path), None, "cannot read the manifest (not UTF-8 text)") from None
    return parse_manifest(text, source=str(path), base=path.parent)


def parse_manifest(text: str, *, source: str, base: Path) -> Manifest:
    """Parse manifest text; relative file names are taken from ``base``."""
    lines = _data_lines(text)
    if not lines:
        raise ManifestError(
            source, None, "no header line", hint="start with e.g. mac,client_cert,client_key"
        )
    header_line, header = lines[0]
    kind, partitions = _parse_header(header, source, header_line)
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    for line, cells in lines[1:]:
        row = _parse_row(cells, kind, partitions, source, line, base)
        if row.key in seen:
            raise ManifestError(
                source, line, f"{kind} {row.key} already has a row on line {seen[row.key]}",
                hint="give each board one row",
            )  # fmt: skip
        seen[row.key] = line
        rows.append(row)
    if not rows:
        raise ManifestError(source, None, "no board rows after the header")
    return Manifest(source, kind, tuple(partitions), tuple(rows), header_line)


def _data_lines(text: str) -> list[tuple[int, list[str]]]:
    """``(line number, cells)`` of every line that is not blank or a comment."""
    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    out = []
    for cells in reader:
        stripped = [c.strip() for c in cells]
        if not any(stripped) or stripped[0].startswith("#"):
            continue
        out.append((reader.line_num, stripped))
    return out


def _parse_header(header: list[str], source: str, line: int) -> tuple[KeyKind, list[str]]:
    first = header[0].lower()
    if first not in KEY_KINDS:
        raise ManifestError(
            source, line, f"first column is {header[0]!r}",
            hint=f"name it one of {', '.join(KEY_KINDS)}: how each board is recognised",
        )  # fmt: skip
    partitions = header[1:]
    if not partitions or any(not p for p in partitions):
        raise ManifestError(source, line, "every column after the key must name a partition")
    doubled = sorted({p for p in partitions if partitions.count(p) > 1})
    if doubled:
        raise ManifestError(source, line, f"column {doubled[0]} appears twice")
    return cast(KeyKind, first), partitions


def _parse_row(
    cells: list[str], kind: KeyKind, partitions: list[str], source: str, line: int, base: Path
) -> ManifestRow:
    columns = len(partitions) + 1
    if len(cells) > columns:
        raise ManifestError(
            source, line, f"{len(cells)} cells but the header has {columns} columns",
            hint=f"separate several files in one cell with '{FILE_SEPARATOR}', not ','",
        )  # fmt: skip
    if len(cells) < columns:
        # A short row is a shifted or cut row more often than a wish to leave
        # the last partitions alone: an empty cell says that explicitly.
        raise ManifestError(
            source, line, f"{len(cells)} cells but the header has {columns} columns",
            hint="give every column a cell; leave a cell empty (',,') to skip that partition",
        )  # fmt: skip
    key = normalize_key(kind, cells[0])
    if key is None:
        raise ManifestError(source, line, f"{cells[0]!r} is not a valid {kind}")
    requests = []
    for name, cell in zip(partitions, cells[1:], strict=False):
        names = [n.strip() for n in cell.split(FILE_SEPARATOR) if n.strip()]
        if names:
            try:
                files = expand(str(base / n) for n in names)
            except AtflashError as exc:
                raise ManifestError(source, line, str(exc)) from None
            requests.append(PartitionRequest(name, tuple(files)))
    if not requests:
        raise ManifestError(
            source, line, f"no files for {key}", hint="fill in at least one partition"
        )
    return ManifestRow(line, key, tuple(requests))


# -- plans and the resolver --------------------------------------------------------


class RowClaims(Protocol):
    """Which board has taken which manifest row, across the worker processes of a batch."""

    def claim(self, key: str, port: str) -> str | None:
        """Take row ``key`` for the board at ``port``; the port of another board that has it, else None."""


class IdentityTakenError(DeviceError):
    """A board reports the identity of a row another board of the batch already took."""

    def __init__(self, port: str, kind: KeyKind, key: str, line: int, holder: str) -> None:
        self.kind = kind
        self.key = key
        self.line = line
        self.holder = holder
        super().__init__(
            port,
            f"{kind} {key} (manifest line {line}) is already used by {holder} in this batch",
            hint="two boards report one identity; nothing was written to this one",
        )


@dataclass(frozen=True)
class ManifestResolver:
    """Chooses a board's plans by its manifest row (a :data:`~atflash.planning.plan.PlanResolver`).

    A plain frozen dataclass so it can be pickled to batch workers. With
    ``claims`` (set in the worker, see :meth:`with_claims`) a row serves one
    board only: the next board with that key is refused.
    """

    source: str
    key_kind: KeyKind
    plans: dict[str, tuple[WritePlan, ...]] = field(repr=False)
    lines: dict[str, int]
    strict: bool = False
    claims: RowClaims | None = field(default=None, repr=False, compare=False)

    def with_claims(self, claims: RowClaims) -> ManifestResolver:
        """This resolver, taking each row through ``claims`` before handing out its plans."""
        return replace(self, claims=claims)

    def key_of(self, identity: BoardIdentity) -> str | None:
        value = {
            "mac": identity.mac,
            "serial_number": identity.serial_number,
            "port": identity.port,
        }[self.key_kind]
        return normalize_key(self.key_kind, value) if value else None

    def __call__(self, identity: BoardIdentity) -> Sequence[WritePlan]:
        key = self.key_of(identity)
        if key is not None and key in self.plans:
            holder = self.claims.claim(key, identity.port) if self.claims is not None else None
            if holder is not None:
                raise IdentityTakenError(identity.port, self.key_kind, key, self.lines[key], holder)
            return self.plans[key]
        shown = key or f"no {self.key_kind} known"
        reason = f"{self.key_kind} {shown} has no row in {self.source}"
        if self.strict:
            raise NotInManifestError(
                identity.port, reason, hint="add a row for it, or drop --strict"
            )
        raise BoardSkipped(identity.port, reason)

    def unused(self, identities: Iterable[BoardIdentity]) -> list[tuple[int, str]]:
        """``(line, key)`` of rows no board in ``identities`` matched, in file order."""
        used = {self.key_of(identity) for identity in identities}
        return sorted((line, key) for key, line in self.lines.items() if key not in used)


def build_resolver(
    manifest: Manifest,
    profiles: Sequence[Profile],
    *,
    common: Sequence[PartitionRequest] = (),
    options: PlanOptions | None = None,
    strict: bool = False,
) -> ManifestResolver:
    """Build and check every row's images for every candidate profile, before any board."""
    _check_columns(manifest, profiles)
    plans: dict[str, tuple[WritePlan, ...]] = {}
    owners = Owners()
    shared = {r.partition for r in common}
    for row in manifest.rows:
        _refuse_overlap(manifest, row, common)
        requests = [*common, *row.requests]
        try:
            plans[row.key] = tuple(build_plans(profiles, requests, options=options))
        except AtflashError as exc:
            raise ManifestError(manifest.source, row.line, str(exc)) from None
        paired = (options or PlanOptions()).pair_check
        _refuse_shared(manifest, row, plans[row.key][0], shared, owners, paired=paired)
    lines = {row.key: row.line for row in manifest.rows}
    return ManifestResolver(manifest.source, manifest.key_kind, plans, lines, strict)


def _refuse_shared(
    manifest: Manifest,
    row: ManifestRow,
    plan: WritePlan,
    common: set[str],
    owners: Owners,
    *,
    paired: bool,
) -> None:
    """Two rows must never name one certificate or key (by fingerprint, whatever the encoding)."""
    items = {
        img.partition.name: [data for _n, data in img.items]
        for img in plan.images
        if img.partition.name not in common
    }
    clash = owners.add(f"line {row.line}", set_fingerprints(items, paired=paired))
    if clash is not None:
        raise ManifestError(
            manifest.source, row.line, str(clash),
            hint="every board needs its own certificate and key: one identity per device",
        )  # fmt: skip


def _check_columns(manifest: Manifest, profiles: Sequence[Profile]) -> None:
    """Every column names a credential partition (or 3.1+ namespace) of some candidate layout."""
    known: set[str] = set()
    for profile in profiles:
        known |= {p.name for p in profile.pki_partitions()}
        if profile.store == "mfg_nvs":
            known |= set(mfgnvs.CREDENTIAL_NAMESPACES)  # 3.1+: a column names a namespace
    names = ", ".join(p.name for p in profiles[:3]) + (", ..." if len(profiles) > 3 else "")
    for column in manifest.columns:
        if column not in known:
            raise ManifestError(
                manifest.source, manifest.header_line,
                f"column {column!r} is not a credential partition of {names}",
                hint=f"use {', '.join(sorted(known))}",
            )  # fmt: skip


def _refuse_overlap(
    manifest: Manifest, row: ManifestRow, common: Sequence[PartitionRequest]
) -> None:
    shared = {r.partition for r in common} & {r.partition for r in row.requests}
    if shared:
        name = sorted(shared)[0]
        raise ManifestError(
            manifest.source, row.line, f"partition {name} is given both here and on the command line",
            hint="give it in one place only",
        )  # fmt: skip
