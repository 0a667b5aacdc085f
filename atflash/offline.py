"""Plans and images: everything the public API does without a board.

:func:`plan` turns Python values (paths, or bytes a CA or an HSM handed
over) into checked write plans; :func:`build_images`, :func:`patch_image`,
:func:`generate_bin`, :func:`parse_bin` and :func:`unpack_bin` make and
read what a chip programmer or AtPKI.py would. Bytes are checked exactly
as files are and are called ``<bytes client_key[0]>`` in messages and
records; their content never appears in a repr, an error or a report.

The offline commands (``atflash build``, ``patch-image``, ``generate-bin``,
``parse-bin``) are clients of this module: they turn their arguments into
a :class:`Layout` (:func:`layout_for`, :func:`open_image`) and requests,
and call :func:`build_for_layout` or :func:`patch_layout`, the typed
functions :func:`build_images` and :func:`patch_image` are made of.

Re-exported by :mod:`atflash.api` (and so by ``atflash``); nothing here
opens a port or prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

from atflash.errors import InputError
from atflash.files import Blob, Source
from atflash.layout.choice import LayoutChoice
from atflash.layout.model import Profile
from atflash.output import write_outputs
from atflash.planning.plan import (
    PartitionRequest,
    PlanOptions,
    WritePlan,
    build_plan,
    build_plans,
    request_names,
)

if TYPE_CHECKING:
    from atflash.content.pki import PkiItem
    from atflash.factory.device_builds import BuildSummary
    from atflash.factory.images import FactoryImage, NvsBase, PatchedImage

# One credential: a path, or its bytes (a Blob names them yourself).
Credential = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", Blob]
# Partition (or ESP-AT 3.1+ namespace) -> its credentials in ID order (one may stand alone).
Credentials = Mapping[str, Credential | Sequence[Credential]]

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
    layout = LayoutChoice.of(chip, os.fspath(profile) if profile is not None else None)
    options = PlanOptions(pair_check=pair_check, key_type_check=key_type_check)
    return Plan(build(layout.profiles(), credentials, options), layout.explicit)


def build(
    profiles: Sequence[Profile], credentials: Credentials, options: PlanOptions
) -> tuple[WritePlan, ...]:
    """One checked plan per layout among ``profiles`` that can take ``credentials``."""
    requests = requests_from(credentials, request_names(profiles))
    return tuple(build_plans(profiles, requests, options=options))


def requests_from(credentials: Credentials, names: set[str]) -> list[PartitionRequest]:
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
            PartitionRequest(name, tuple(source_of(name, i, c) for i, c in enumerate(items)))
        )
    return requests


def source_of(partition: str, index: int, item: object) -> str | Blob:
    """Item ``index`` of ``partition`` as the plan reads it: a path, or bytes named for messages."""
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


def candidates_of(given: Plan | WritePlan | Sequence[WritePlan]) -> tuple[WritePlan, ...]:
    if isinstance(given, Plan):
        return given.candidates
    if isinstance(given, WritePlan):
        return (given,)
    return tuple(given)


# -- no board: layouts and images -----------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where credentials go when no board says: a profile, or a factory image's own tables.

    Made by :func:`layout_for` or :func:`open_image`. ``inputs`` are the
    files read to know it (a profile file, the image), which no output may
    overwrite.
    """

    profile: Profile
    inputs: tuple[Source, ...] = ()
    image: FactoryImage | None = field(default=None, repr=False)

    @property
    def partition_names(self) -> set[str]:
        """What credentials may be given for: its partitions, or its 3.1+ namespaces."""
        return request_names([self.profile])


def layout_for(chip: str | None, profile: str | os.PathLike[str] | None = None) -> Layout:
    """The layout ``profile`` (a profile file, or an ``at_customize.csv`` of ``chip``) or
    ``chip`` (a chip's usual layout, or a layout name) names; one of them is needed."""
    path = os.fspath(profile) if profile is not None else None
    return Layout(LayoutChoice.of(chip, path).one(), (path,) if path else ())


def open_image(
    image: bytes | str | os.PathLike[str],
    *,
    chip: str | None = None,
    profile: str | os.PathLike[str] | None = None,
    table_offset: int = 0x8000,
    force: bool = False,
) -> Layout:
    """A whole factory image (bytes or a file), read through its own partition table and
    ``at_customize.bin``; ``chip`` or ``profile`` only when they match no known layout.

    A damaged or cut-short ``mfg_nvs`` is refused unless ``force``, which
    keeps what still reads (``layout.image.damage`` says what was lost).
    """
    from atflash.factory import images

    path = os.fspath(profile) if profile is not None else None
    base = LayoutChoice.of(chip, path).one() if chip or path else None
    read: tuple[str, ...] = (path,) if path else ()
    if isinstance(image, (bytes, bytearray, memoryview)):
        factory = images.open_factory_image(
            bytes(image), source="<bytes image>", table_offset=table_offset, base=base, force=force
        )
    else:
        factory = images.read_factory_image(
            os.fspath(image), table_offset=table_offset, base=base, force=force
        )
        read = (factory.source, *read)
    return Layout(factory.profile, read, factory)


class BuiltImages(Mapping[str, bytes]):
    """The images of one layout by partition (one whole ``mfg_nvs`` on ESP-AT 3.1+).

    A mapping of partition name to bytes, which also holds the checked
    ``plan`` they were built from, the ``files`` each was written to (none
    without ``out_dir``) and, on 3.1+, the ``base`` their ``mfg_nvs``
    started from (``base.source``; ``base.dropped``: credential namespaces
    of a dump left out).
    """

    def __init__(
        self,
        plan: WritePlan,
        data: Mapping[str, bytes],
        files: Mapping[str, Path],
        base: NvsBase | None,
    ) -> None:
        self.plan, self._data, self.files, self.base = plan, dict(data), dict(files), base

    def __getitem__(self, name: str) -> bytes:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"BuiltImages({', '.join(self._data)} for {self.plan.profile.name})"


def build_images(
    plan: Plan,
    *,
    layout: str | None = None,
    factory_param: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> BuiltImages:
    """The images a chip programmer writes, by partition: padded PKI images (ESP-AT 2.x), or
    one whole ``mfg_nvs`` (3.1+) with ``factory_param`` from ``module`` defaults (the
    default), ``dump:FILE`` or ``csv:FILE``.

    Built for ``layout`` (a name among ``plan.layouts``; default the first,
    the chip's usual one). With ``out_dir`` each is also written there as
    ``<partition>.bin``, all or none, those holding a key 0600.
    """
    chosen = _layout_of(plan, layout)
    inputs = [s for img in chosen.images for s in img.sources]
    return _built(chosen, _nvs_base(chosen.profile, factory_param, chosen.pad), out_dir, inputs)


def build_for_layout(
    layout: Layout,
    requests: Sequence[PartitionRequest],
    *,
    options: PlanOptions | None = None,
    factory_param: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> BuiltImages:
    """:func:`build_images` for one layout and ``requests`` (what ``atflash build`` does):
    ``factory_param`` is refused on a PKI layout, ``options.pad`` on an ``mfg_nvs`` one."""
    opts = options or PlanOptions()
    base = _nvs_base(layout.profile, factory_param, opts.pad)
    planned = build_plan(layout.profile, requests, options=opts)
    inputs = [*layout.inputs, *(f for req in requests for f in req.files)]
    return _built(planned, base, out_dir, inputs)


def _nvs_base(profile: Profile, factory_param: str | None, pad: bool) -> NvsBase | None:
    from atflash.factory.images import nvs_base_for

    return nvs_base_for(profile, factory_param, pad=pad)


def _built(
    plan: WritePlan,
    base: NvsBase | None,
    out_dir: str | os.PathLike[str] | None,
    inputs: Sequence[Source],
) -> BuiltImages:
    from atflash.factory import images
    from atflash.layout.model import MFG_NVS

    if base is not None:
        built = {MFG_NVS: images.build_mfg_nvs(plan, base.items)}
        secret = {MFG_NVS} if plan.secret else set()
    else:
        built = {img.partition.name: plan.data_for(img) for img in plan.images}
        secret = {img.partition.name for img in plan.images if img.secret}
    files: dict[str, Path] = {}
    if out_dir is not None:
        files = {name: Path(out_dir) / f"{name}.bin" for name in built}
        read = [*inputs, *([base.path] if base is not None and base.path else [])]
        outputs = {files[name]: data for name, data in built.items()}
        write_outputs(outputs, private=lambda p: p.stem in secret, inputs=read)
    return BuiltImages(plan, built, files, base)


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
    force: bool = False,
    output: str | os.PathLike[str] | None = None,
) -> PatchedImage:
    """A whole factory image (bytes or a file) with ``credentials`` in place; nothing else changes.

    The image's own partition table and ``at_customize.bin`` say where they
    go (:func:`open_image`). Returns the patched ``data`` with the
    ``regions`` replaced, the ``images`` put in and any ``warnings``; with
    ``output`` it is also written there (0600 if it holds a key).
    """
    opened = open_image(image, chip=chip, profile=profile, table_offset=table_offset, force=force)
    requests = requests_from(credentials, opened.partition_names)
    options = PlanOptions(pair_check=pair_check, key_type_check=key_type_check)
    return patch_layout(opened, requests, options=options, output=output)


def patch_layout(
    layout: Layout,
    requests: Sequence[PartitionRequest],
    *,
    options: PlanOptions | None = None,
    output: str | os.PathLike[str] | None = None,
) -> PatchedImage:
    """:func:`patch_image` for an image :func:`open_image` read and ``requests`` (what
    ``atflash patch-image`` does); written to ``output`` when given."""
    from atflash.factory import images

    if layout.image is None:
        raise ValueError("patch_layout needs a factory image's layout (open_image)")
    planned = images.plan_for_image(layout.image, requests, options=options)
    patched = images.patch_image(layout.image, planned)
    if output is not None:
        inputs = [*layout.inputs, *(f for req in requests for f in req.files)]
        secret = planned.secret
        write_outputs({Path(output): patched.data}, private=lambda _p: secret, inputs=inputs)
    return patched


def build_devices(
    out_dir: str | os.PathLike[str],
    *,
    manifest: str | os.PathLike[str] | None = None,
    pool: str | os.PathLike[str] | None = None,
    common: Credentials | None = None,
    chip: str | None = None,
    profile: str | os.PathLike[str] | None = None,
    image: str | os.PathLike[str] | None = None,
    factory_param: str | None = None,
    table_offset: int | None = None,
    force: bool = False,
    pair_check: bool = True,
    pad: bool = True,
    key_type_check: bool = True,
    jobs: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> BuildSummary:
    """One folder per device of a ``manifest`` or a ``pool`` (or, with ``image``, one whole
    patched factory image per device) in ``out_dir``, as ``atflash build --manifest`` makes
    them: ``OUT/<device>/...`` and ``OUT/index.csv``, all or nothing, keys 0600, devices
    whose inputs did not change skipped.

    ``common`` credentials go to every device. The layout is ``chip`` or
    ``profile`` (or the image's own tables); ``factory_param`` is that of
    a 3.1+ ``mfg_nvs``. ``on_progress(done, total)`` hears the devices
    built. The summary counts devices ``built``, ``skipped`` and ``kept``,
    lists the index ``rows`` and any ``warnings`` about a damaged image
    taken with ``force``.
    """
    from atflash.factory.buildrun import BuildOptions, build_listed, prepare_devices

    def text(path: str | os.PathLike[str] | None) -> str | None:
        return os.fspath(path) if path is not None else None

    options = PlanOptions(pair_check=pair_check, pad=pad, key_type_check=key_type_check)
    given = BuildOptions(
        chip=chip, profile=text(profile), factory_param=factory_param, options=options,
        manifest=text(manifest), pool=text(pool), image=text(image), table_offset=table_offset,
        force=force,
    )  # fmt: skip
    if not (given.manifest or given.pool):
        raise InputError("no devices given", hint="pass manifest= or pool=")
    run = prepare_devices(given)
    requests = requests_from(common, run.partition_names) if common else []
    return build_listed(run, Path(out_dir), common=requests, jobs=jobs, progress=on_progress)


# -- no board: PKI bins ----------------------------------------------------------------------


def item_pairs(words: Sequence[str]) -> list[tuple[str, str]]:
    """``TYPE FILE [TYPE FILE]...`` (``generate-bin``'s arguments) as pairs for
    :func:`generate_bin`; an :class:`InputError` when one has no partner."""
    if len(words) % 2:
        raise InputError(
            "arguments must come in TYPE FILE pairs", hint=f"{words[-1]!r} has no partner"
        )
    return list(zip(words[::2], words[1::2], strict=True))


def generate_bin(
    items: Sequence[tuple[str, bytes | str | os.PathLike[str]]],
    *,
    key_type_check: bool = True,
    output: str | os.PathLike[str] | None = None,
) -> bytes:
    """One PKI bin, byte for byte what ``AtPKI.py generate_bin`` makes, from ``(type, item)``
    pairs: type ``ca``, ``cert`` or ``key``, item a path or its bytes (taken as they are,
    but a certificate must carry no key and a key must be one ESP-AT can use).

    With ``output`` it is also written there, readable by its owner only
    when it holds a key.
    """
    from atflash.content import pki
    from atflash.content.checks import check_items
    from atflash.content.secret import is_secret

    built = []
    sources: list[Source] = []
    for index, (kind, item) in enumerate(items):
        if kind not in pki.TYPE_CODES:
            raise InputError(f"unknown item type {kind!r}", hint="use ca, cert or key")
        source = source_of(kind, index, item)
        data = pki.read_input(source)
        check_items(kind, [(str(source), data)], key_type_check=key_type_check)  # type: ignore[arg-type]
        built.append((kind, data, str(source)))
        sources.append(source)
    if not built:
        raise InputError("no items given", hint='give (type, item) pairs, e.g. [("cert", pem)]')
    data = pki.build(built)
    if output is not None:
        secret = any(is_secret(kind, [content]) for kind, content, _s in built)
        write_outputs({Path(output): data}, private=lambda _p: secret, inputs=sources)
    return data


def parse_bin(data: bytes | str | os.PathLike[str]) -> list[PkiItem]:
    """Every item of a PKI bin or a partition dump (bytes or a file): ``type``, ``id``,
    ``content`` (whose repr never shows it), in the bin's order."""
    return _read_bin(data)[1]


def _read_bin(data: bytes | str | os.PathLike[str]) -> tuple[str | None, list[PkiItem]]:
    """The file read (None: bytes given) and the bin's items."""
    from atflash.content import pki

    if isinstance(data, (bytes, bytearray, memoryview)):
        return None, list(pki.parse(bytes(data), source="<bytes bin>").items)
    path = os.fspath(data)
    return path, list(pki.parse(pki.read_bin_file(path), source=path).items)


@dataclass(frozen=True)
class UnpackedItem:
    """One item of a bin and the file :func:`unpack_bin` wrote it to."""

    item: PkiItem
    path: Path
    # 0: the first item of its type and ID; n: the n-th other one (its name ends -n).
    copy: int = 0


def unpack_bin(
    data: bytes | str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> list[UnpackedItem]:
    """Every item of a PKI bin or a partition dump written to ``out_dir``, all or none.

    Files are named TYPE_ID (``cert_00.crt``, ``key_00.key``, ``ca_00.crt``);
    items that share a type and ID get -1, -2... (``key_00-1.key``): AtPKI.py
    never writes such a bin, but a hand-made or damaged one must not lose an
    item to a file written twice. Items holding a key are written readable by
    their owner only.
    """
    from atflash.content.secret import is_secret

    source, items = _read_bin(data)
    unpacked = []
    seen: dict[tuple[str, int], int] = {}
    for item in items:
        copy = seen.get((item.type, item.id), 0)
        seen[(item.type, item.id)] = copy + 1
        unpacked.append(UnpackedItem(item, Path(out_dir) / _item_file_name(item, copy), copy))
    secret = {u.path for u in unpacked if is_secret(u.item.type, [u.item.content])}
    write_outputs(
        {u.path: u.item.content for u in unpacked},
        private=lambda p: p in secret,
        inputs=[source] if source else [],
    )
    return unpacked


def _item_file_name(item: PkiItem, copy: int) -> str:
    ext = "key" if item.type == "key" else "crt"
    suffix = f"-{copy}" if copy else ""
    return f"{item.type}_{item.id:02d}{suffix}.{ext}"
