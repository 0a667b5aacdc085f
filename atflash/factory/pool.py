"""Credential pools: many ready-made credential sets, one per device to be.

A pool is either a folder with one subfolder per set::

    pool/0001/client_cert.crt      the file name's first part names the partition
    pool/0001/client_key.key
    pool/0001/client_ca.crt
    pool/0002/client_cert.0.crt    several files for one partition are numbered,
    pool/0002/client_cert.1.crt    in natural order (PKI IDs follow it)
    ...

or a CSV index whose paths are relative to the CSV's folder::

    set,  client_cert,     client_key,      client_ca
    0001, 0001/dev.crt,    0001/dev.key,    ca.crt
    0002, 0002/a.crt;0002/b.crt, 0002/dev.key, ca.crt

(several files in one cell separated by ``;``, as in a manifest). Sets are
kept in natural order of their names (``2`` before ``10``), which is the
order they are claimed in.

Every set holds the same partitions (one device's worth each), and a
``*_cert`` comes with its ``*_key``: a board given a new certificate and
left with the previous set's key would hold a pair that does not match.
A pool whose certificates go to boards that keep their own key says so in
``pool.toml`` (in the pool folder, or beside the CSV index)::

    cert_without_key = ["mqtt_cert"]

:func:`load_pool` only reads the layout; :func:`check_pool` builds every set
as :func:`~atflash.planning.plan.build_plan` would (content, pairing, fit),
in worker processes, and refuses a key or certificate shared by two sets.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from atflash.content.identity import Fingerprint, Owners, device_own, set_fingerprints
from atflash.errors import AtflashError, one_line
from atflash.factory.errors import PoolError
from atflash.factory.parallel import run_chunks
from atflash.files import natural_key, natural_sorted
from atflash.layout.model import Profile, pki_kind_for
from atflash.planning.plan import PartitionRequest, PlanOptions, WritePlan, build_plan

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

INDEX_SET_COLUMN = "set"
FILE_SEPARATOR = ";"  # as in a manifest: paths may hold spaces and commas, not ';'
# A CSV index of 100,000 sets is about 10 MB; anything far larger was given by mistake.
MAX_INDEX_BYTES = 64 * 1024 * 1024
SETTINGS_FILE = "pool.toml"  # what the pool says about itself (see the module docstring)
MAX_SETTINGS_BYTES = 64 * 1024

# (sets checked so far, sets in the pool); called from the checking process only.
ProgressCallback = Callable[[int, int], None]
# (partition, fingerprint) of a set's own certificates and keys (atflash.content.identity).
SetIdentities = tuple[tuple[str, Fingerprint], ...]


@dataclass(frozen=True)
class CredentialSet:
    """One device's worth of credentials: its name and each partition's files, in ID order."""

    name: str
    requests: tuple[PartitionRequest, ...]


@dataclass(frozen=True)
class Pool:
    """A loaded pool: sets in natural order, names unique, at least one set."""

    source: str
    sets: tuple[CredentialSet, ...]
    _by_name: dict[str, CredentialSet] = field(init=False, repr=False, compare=False)
    # *_cert partitions whose sets hold no key: the board keeps its own (pool.toml says so)
    cert_without_key: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.sets})

    @property
    def names(self) -> tuple[str, ...]:
        """Set names in claiming order."""
        return tuple(s.name for s in self.sets)

    @property
    def partitions(self) -> tuple[str, ...]:
        """Every partition some set writes, sorted."""
        return tuple(sorted({r.partition for s in self.sets for r in s.requests}))

    def __len__(self) -> int:
        return len(self.sets)

    def get(self, name: str) -> CredentialSet:
        """The set called ``name``; a :class:`PoolError` when the pool has none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise PoolError(
                self.source, name, "no such set in this pool",
                hint="was the ledger used with another pool?",
            ) from None  # fmt: skip


# -- loading -------------------------------------------------------------------------


def load_pool(path: str | Path) -> Pool:
    """Read a pool's layout (a folder of set folders, or a CSV index); files are not opened."""
    path = Path(path)
    # os.path never raises, unlike Path.is_dir (a name too long to look up).
    if os.path.isdir(path):
        sets = _folder_sets(path)
    elif os.path.isfile(path):
        sets = _index_sets(path)
    else:
        raise PoolError(str(path), None, "no such folder or file")
    if not sets:
        raise PoolError(
            str(path), None, "the pool holds no credential sets",
            hint="give a folder with one subfolder per set, or a CSV index",
        )  # fmt: skip
    settings = path / SETTINGS_FILE if path.is_dir() else path.parent / SETTINGS_FILE
    ordered = tuple(sorted(sets, key=lambda s: natural_key(s.name)))
    pool = Pool(str(path), ordered, cert_without_key=_without_key(settings))
    _check_uniform(pool)
    return pool


def _without_key(settings: Path) -> frozenset[str]:
    """``cert_without_key`` of the pool's ``pool.toml``; empty when there is none."""
    if not settings.is_file():
        return frozenset()
    try:
        with settings.open("rb") as handle:
            data = tomllib.loads(handle.read(MAX_SETTINGS_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PoolError(str(settings), None, f"cannot read ({one_line(exc)})") from None
    unknown = sorted(set(data) - {"cert_without_key"})
    if unknown:
        raise PoolError(
            str(settings),
            None,
            f"unknown setting {unknown[0]!r}",
            hint="pool.toml takes cert_without_key",
        )
    names = data.get("cert_without_key", [])
    if not isinstance(names, list) or not all(
        isinstance(n, str) and n.endswith("_cert") and pki_kind_for(n) for n in names
    ):
        raise PoolError(
            str(settings), None, "cert_without_key must list *_cert partitions",
            hint='e.g. cert_without_key = ["mqtt_cert"]',
        )  # fmt: skip
    return frozenset(names)


def _check_uniform(pool: Pool) -> None:
    """Every set holds the same partitions, and each ``*_cert`` its ``*_key``."""
    first = pool.sets[0]
    wanted = [r.partition for r in first.requests]
    for entry in pool.sets[1:]:
        holds = [r.partition for r in entry.requests]
        if sorted(holds) != sorted(wanted):
            raise PoolError(
                pool.source, entry.name,
                f"holds {', '.join(sorted(holds))} but set {first.name} holds {', '.join(sorted(wanted))}",
                hint="every set holds the same partitions: one device's worth each",
            )  # fmt: skip
    for name in sorted(wanted):
        key = name[: -len("_cert")] + "_key"
        if name.endswith("_cert") and key not in wanted and name not in pool.cert_without_key:
            raise PoolError(
                pool.source, None, f"the sets hold {name} but no {key}",
                hint=f"add each set's {key}: a board left with another set's key holds a pair "
                f"that does not match (or, if the boards keep their own key, say so in "
                f'{SETTINGS_FILE}: cert_without_key = ["{name}"])',
            )  # fmt: skip


def _visible(entries: Sequence[os.DirEntry[str]]) -> list[os.DirEntry[str]]:
    # Dot files (.DS_Store, .git) are the file system's or a tool's, not the pool's.
    return [e for e in entries if not e.name.startswith(".")]


def _scan(folder: Path, source: str, set_name: str | None) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return _visible(list(it))
    except OSError as exc:
        raise PoolError(source, set_name, f"cannot list {folder} ({exc.strerror})") from None


def _folder_sets(root: Path) -> list[CredentialSet]:
    entries = _scan(root, str(root), None)
    folders = [e for e in entries if e.is_dir()]
    if not folders and any(e.name.lower().endswith(".csv") for e in entries):
        raise PoolError(
            str(root), None, "no set folders here",
            hint="to use a CSV index, give the CSV file itself",
        )  # fmt: skip
    return [_folder_set(root, Path(e.path), e.name) for e in folders]


def _folder_set(root: Path, folder: Path, name: str) -> CredentialSet:
    source = str(root)
    groups: dict[str, list[tuple[str | None, str]]] = {}  # partition -> [(number, file name)]
    for entry in _scan(folder, source, name):
        if entry.is_dir():
            raise PoolError(
                source, name, f"{entry.path} is a folder",
                hint="a set folder holds only its credential files",
            )  # fmt: skip
        partition, number = _split_file_name(entry.name)
        if pki_kind_for(partition) is None:
            raise PoolError(
                source, name, f"{entry.path}: not named after a PKI partition",
                hint="name files after their partition: client_cert.crt, client_key.key, ...",
            )  # fmt: skip
        groups.setdefault(partition, []).append((number, entry.name))
    if not groups:
        raise PoolError(source, name, f"{folder} holds no credential files")
    requests = [
        PartitionRequest(partition, tuple(str(folder / f) for f in _ordered(source, name, files)))
        for partition, files in sorted(groups.items())
    ]
    return CredentialSet(name, tuple(requests))


def _split_file_name(file_name: str) -> tuple[str, str | None]:
    """``client_cert.1.crt`` -> (``client_cert``, ``"1"``); ``client_cert.crt`` -> (..., None)."""
    parts = file_name.split(".")
    number = parts[1] if len(parts) > 2 and parts[1].isdigit() else None
    return parts[0], number


def _ordered(source: str, set_name: str, files: list[tuple[str | None, str]]) -> list[str]:
    """A partition's files in ID order; all numbered (distinct numbers) or a single file."""
    names = natural_sorted(f for _n, f in files)
    if len(files) == 1:
        return names
    if any(number is None for number, _f in files):
        raise PoolError(
            source, set_name, f"{' and '.join(names[:2])} are both for one partition",
            hint="number every file of a partition (client_cert.0.crt, client_cert.1.crt)",
        )  # fmt: skip
    seen: dict[int, str] = {}
    for number, file_name in files:
        index = int(number or 0)
        if index in seen:
            raise PoolError(
                source, set_name, f"{seen[index]} and {file_name} have the same number {index}"
            )
        seen[index] = file_name
    return [seen[i] for i in sorted(seen)]


def _index_sets(index: Path) -> list[CredentialSet]:
    source = str(index)
    lines = _index_lines(_read_index(index), source)
    if not lines:
        raise PoolError(source, None, "no header line", hint="start with set,client_cert,...")
    header_line, header = lines[0]
    partitions = _index_header(header, f"{source}:{header_line}")
    sets: list[CredentialSet] = []
    first_line: dict[str, int] = {}
    for line, cells in lines[1:]:
        where = f"{source}:{line}"
        entry = _index_row(cells, partitions, where, index.parent)
        if entry.name in first_line:
            raise PoolError(
                where, entry.name, f"already given on line {first_line[entry.name]}",
                hint="set names must be unique",
            )  # fmt: skip
        first_line[entry.name] = line
        sets.append(entry)
    return sets


def _read_index(index: Path) -> str:
    try:
        with index.open("rb") as handle:
            data = handle.read(MAX_INDEX_BYTES + 1)  # enough to know it is too big
    except OSError as exc:
        raise PoolError(str(index), None, f"cannot read ({exc.strerror})") from None
    if len(data) > MAX_INDEX_BYTES:
        raise PoolError(
            str(index),
            None,
            f"larger than {MAX_INDEX_BYTES // (1024 * 1024)} MiB, not a pool index",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PoolError(str(index), None, "not UTF-8 text, not a pool index") from None


def _index_lines(text: str, source: str) -> list[tuple[int, list[str]]]:
    """``(line number, cells)`` of every line that is not blank or a ``#`` comment."""
    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    out = []
    try:
        for cells in reader:
            stripped = [c.strip() for c in cells]
            if any(stripped) and not stripped[0].startswith("#"):
                out.append((reader.line_num, stripped))
    except csv.Error as exc:
        raise PoolError(f"{source}:{reader.line_num}", None, f"not valid CSV ({exc})") from None
    return out


def _index_header(header: list[str], where: str) -> list[str]:
    if header[0].lower() != INDEX_SET_COLUMN:
        raise PoolError(
            where, None, f"first column is {header[0]!r}",
            hint="name it 'set': each row is one credential set",
        )  # fmt: skip
    partitions = header[1:]
    if not partitions:
        raise PoolError(where, None, "no partition columns after 'set'")
    for name in partitions:
        if pki_kind_for(name) is None:
            raise PoolError(where, None, f"column {name!r} is not a PKI partition name")
        if partitions.count(name) > 1:
            raise PoolError(where, None, f"column {name} appears twice")
    return partitions


def _index_row(cells: list[str], partitions: list[str], where: str, base: Path) -> CredentialSet:
    name = cells[0]
    if not name:
        raise PoolError(
            where, None, "the set name is empty",
            hint="name every set in the first column: the ledger records sets by name",
        )  # fmt: skip
    if len(cells) > len(partitions) + 1:
        raise PoolError(
            where, name, f"{len(cells)} cells but the header has {len(partitions) + 1} columns",
            hint=f"separate several files in one cell with '{FILE_SEPARATOR}', not ','",
        )  # fmt: skip
    requests = []
    for partition, cell in zip(partitions, cells[1:], strict=False):
        files = [f.strip() for f in cell.split(FILE_SEPARATOR) if f.strip()]
        if files:
            requests.append(PartitionRequest(partition, tuple(str(base / f) for f in files)))
    if not requests:
        raise PoolError(where, name, "no files", hint="fill in at least one partition")
    return CredentialSet(name, tuple(requests))


# -- building and checking ------------------------------------------------------------


def plans_for_set(
    pool_source: str,
    entry: CredentialSet,
    profiles: Sequence[Profile],
    options: PlanOptions | None = None,
) -> tuple[WritePlan, ...]:
    """The set's checked plan for every candidate profile; a :class:`PoolError` names set and file.

    Every file is read through :func:`atflash.content.pki.read_input` (by
    :func:`build_plan`), so a huge file given by mistake is refused after
    reading 64 KiB and a byte.
    """
    try:
        return tuple(
            replace(build_plan(p, entry.requests, options=options), credential_set=entry.name)
            for p in profiles
        )
    except PoolError:
        raise
    except AtflashError as exc:
        raise PoolError(pool_source, entry.name, str(exc)) from None


@dataclass(frozen=True)
class _Checked:
    """One set's check, sent from a worker: its error, or the identities of its own credentials."""

    index: int
    error: PoolError | None
    identities: SetIdentities = ()


def _check_chunk(
    source: str,
    chunk: Sequence[tuple[int, CredentialSet]],
    profiles: Sequence[Profile],
    options: PlanOptions | None,
) -> list[_Checked]:
    """Check sets in order, stopping at the first bad one (the pool is refused anyway)."""
    out = []
    for index, entry in chunk:
        try:
            plans = plans_for_set(source, entry, profiles, options)
        except PoolError as exc:
            out.append(_Checked(index, exc))
            break
        paired = (options or PlanOptions()).pair_check
        out.append(_Checked(index, None, set_identities(plans[0], paired=paired)))
    return out


def identity_record(plan: WritePlan, *, paired: bool = True) -> dict[str, Any]:
    """What a claim records of its set: per own partition its fingerprints and a content hash.

    ``{"client_cert": {"fingerprints": ["certificate:ab12...", "public key:cd34..."],
    "sha256": "..."}, ...}``: the fingerprints say who the device is, the
    hash (over the items' bytes, whatever the layout) that the files are
    the very same. JSON-ready. ``paired``: as for :func:`set_identities`.
    """
    fingerprints: dict[str, list[str]] = {}
    for partition, fp in set_identities(plan, paired=paired):
        fingerprints.setdefault(partition, []).append(f"{fp.kind}:{fp.sha256}")
    out: dict[str, Any] = {}
    for img in plan.images:
        name = img.partition.name
        if not device_own(name):
            continue
        content = hashlib.sha256()
        for _item, data in img.items:
            content.update(len(data).to_bytes(4, "big") + data)
        out[name] = {"fingerprints": fingerprints.get(name, []), "sha256": content.hexdigest()}
    return out


def identity_digest(identities: SetIdentities) -> str:
    """One SHA-256 over a set's fingerprints (re-encoding a file keeps it; another key does not)."""
    listed = sorted(f"{partition}:{fp.kind}:{fp.sha256}" for partition, fp in identities)
    return hashlib.sha256("\n".join(listed).encode()).hexdigest()


def pool_name(pool: Pool) -> str:
    """How a ledger knows a pool: its folder's name, or its index's folder and file name."""
    path = Path(pool.source).resolve()
    return path.name if path.is_dir() else f"{path.parent.name}/{path.name}"


def default_ledger(pool: str | Path) -> Path:
    """``lot.A/`` -> ``lot.A.ledger.sqlite`` beside it; ``sets.csv`` -> ``sets.ledger.sqlite``.

    From the whole folder name: ``lot.A`` and ``lot.B`` must never share one.
    """
    path = Path(pool)
    if path.is_dir():
        path = path.resolve()
        return path.parent / f"{path.name}.ledger.sqlite"
    return path.with_suffix(".ledger.sqlite")


def set_identities(plan: WritePlan, *, paired: bool = True) -> SetIdentities:
    """``(partition, fingerprint)`` of every device-own certificate and key a set's plan writes.

    ``paired``: the plan was built with the pair check, so each key's
    identity is its certificate's (see :func:`atflash.content.identity.set_fingerprints`).
    """
    items = {img.partition.name: [data for _n, data in img.items] for img in plan.images}
    return set_fingerprints(items, paired=paired)


# Checking one set for one profile takes about 1 ms; starting worker processes
# about 0.5 s. Unless told how many jobs, smaller pools are checked in-process.
AUTO_PARALLEL_SETS = 500
MAX_CHUNK = 32  # sets per task: progress every few dozen sets, little pickling per set


def check_pool(
    pool: Pool,
    profiles: Sequence[Profile],
    options: PlanOptions | None = None,
    *,
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, SetIdentities]:
    """Build and check every set for every profile, in ``jobs`` worker processes.

    Raises the :class:`PoolError` of the first bad set in pool order (every
    set before it was checked), or the first set whose certificate or key
    another set already holds (compared by fingerprint, whatever the
    encoding: see :mod:`atflash.content.identity`): two devices must never
    share an identity. Returns each set's identities, by set name.
    ``progress(done, total)`` is called as sets are checked. ``jobs=None``
    checks pools of fewer than 500 sets in this process and larger ones
    with one worker per CPU; ``jobs=1`` never starts a worker.
    """
    if not profiles:
        raise ValueError("check_pool needs at least one profile")
    total = len(pool.sets)
    report = progress or (lambda _done, _total: None)
    report(0, total)
    if jobs is None:
        jobs = 1 if total * len(profiles) < AUTO_PARALLEL_SETS else (os.cpu_count() or 1)
    workers = max(1, jobs)
    indexed = list(enumerate(pool.sets))
    size = max(1, min(MAX_CHUNK, -(-total // (workers * 4))))
    chunks = [indexed[i : i + size] for i in range(0, total, size)]
    if workers == 1 or len(chunks) == 1:
        results = _check_inline(pool.source, chunks, profiles, options, report, total)
    else:
        results = _check_parallel(pool, chunks, profiles, options, report, workers)
    errors = [(r.index, r.error) for r in results if r.error is not None]
    if errors:
        raise min(errors, key=lambda e: e[0])[1]
    ordered = sorted(results, key=lambda r: r.index)
    _refuse_shared(pool, ordered)
    return {pool.sets[r.index].name: r.identities for r in ordered}


def _check_inline(
    source: str,
    chunks: list[list[tuple[int, CredentialSet]]],
    profiles: Sequence[Profile],
    options: PlanOptions | None,
    report: ProgressCallback,
    total: int,
) -> list[_Checked]:
    results: list[_Checked] = []
    for chunk in chunks:
        outcome = _check_chunk(source, chunk, profiles, options)
        results.extend(outcome)
        if outcome[-1].error is not None:
            break
        report(len(results), total)
    return results


def _check_parallel(
    pool: Pool,
    chunks: list[list[tuple[int, CredentialSet]]],
    profiles: Sequence[Profile],
    options: PlanOptions | None,
    report: ProgressCallback,
    workers: int,
) -> list[_Checked]:
    """Chunks in pool order in worker processes; the first failure cancels what has not started."""
    return run_chunks(
        functools.partial(_check_chunk, pool.source, profiles=profiles, options=options),
        chunks,
        workers=min(workers, len(chunks)),
        failed=lambda checked: checked.error is not None,
        progress=lambda done: report(done, len(pool.sets)),
    )


def _refuse_shared(pool: Pool, results: Sequence[_Checked]) -> None:
    owners = Owners()
    for result in results:
        name = pool.sets[result.index].name
        shared = owners.add(f"set {name}", result.identities)
        if shared is not None:
            raise PoolError(
                pool.source, name, str(shared),
                hint="every set needs its own certificate and key: one identity per device",
            )  # fmt: skip
