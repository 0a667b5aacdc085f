"""Offline images for factories: ready ``mfg_nvs.bin`` partitions and patched whole factory images.

- :class:`FactoryParam` says where the namespaces of a fresh ESP-AT 3.1+
  ``mfg_nvs`` that are not credentials come from (``factory_param``, which
  the firmware needs to start, ``ble_data``, anything else): the module's
  defaults, a dump of a board's ``mfg_nvs``, or an NVS generator CSV.
  :func:`load_nvs_base` reads it once; :func:`build_mfg_nvs` then makes a
  partition image from it and a plan, as many times as there are devices.
- :func:`open_factory_image` reads a whole factory image (a flash image from
  0x0, as esp-at's ``build.py`` makes) through its own primary partition
  table and at_customize.bin, with the same code that reads a board
  (:func:`atflash.layout.board.discover`); :func:`patch_image` puts a plan's
  credentials into it. Only the partitions that change are touched: the
  PKI partitions given (2.x), or ``mfg_nvs`` rebuilt with its other
  namespaces kept exactly (3.1+).

Espressif's ``tools/at.py modify_bin`` is the reference for patching: it
only changes keys that already exist, fails on DER values and needs
``distutils``. Here new keys and namespaces are fine, values are bytes
whatever they hold, and the plan has checked content, pairing and fit.

Pure library code: nothing prints, every refusal is an atflash error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, cast

from atflash.content import mfgnvs, nvs, pki
from atflash.content.nvs import NvsItem
from atflash.errors import BoardTableError, FileInputError, FormatError, InputError, ProfileError
from atflash.files import read_bounded
from atflash.layout import board
from atflash.layout.model import FLASH_SIZES, MFG_NVS, Partition, Profile
from atflash.layout.parttable import DEFAULT_TABLE_OFFSET
from atflash.layout.profiles import builtin_profiles, family
from atflash.planning.plan import (
    PartitionImage,
    PartitionRequest,
    PlanOptions,
    WritePlan,
    build_plan,
    module_items,
)

FactoryParamKind = Literal["module", "dump", "csv"]
FACTORY_PARAM_KINDS: tuple[FactoryParamKind, ...] = ("module", "dump", "csv")
# A dump is one partition (148K at most on any esp-at module); far more was given by mistake.
MAX_DUMP = 4 * 1024 * 1024
# The largest flash a factory image can fill: esptool's largest flash size.
MAX_IMAGE = max(FLASH_SIZES.values())
ERASED = 0xFF


class ImageError(FileInputError):
    """A factory image or mfg_nvs source that cannot be used as one (no tables, no factory_param)."""


# -- where factory_param comes from ---------------------------------------------------


@dataclass(frozen=True)
class FactoryParam:
    """The source of a fresh mfg_nvs's non-credential namespaces: ``module``, ``dump:FILE``, ``csv:FILE``."""

    kind: FactoryParamKind = "module"
    path: str | None = None

    @classmethod
    def parse(cls, spec: str) -> FactoryParam:
        """``module``, ``dump:FILE`` or ``csv:FILE``; an :class:`InputError` otherwise."""
        kind, sep, path = spec.partition(":")
        kind = kind.strip().lower()
        if kind == "module" and not sep:
            return cls("module")
        if kind in ("dump", "csv") and sep and path:
            return cls(cast(FactoryParamKind, kind), path)
        raise InputError(
            f"--factory-param {spec!r}: say where factory_param comes from",
            hint="module (the module's defaults), dump:FILE (a dump of the board's mfg_nvs) "
            "or csv:FILE (an NVS generator CSV)",
        )

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class NvsBase:
    """The items a fresh mfg_nvs starts from: every namespace that is not a credential one.

    ``dropped`` names credential namespaces the source held: a build holds
    the credentials it was given, not those of the board the dump came from.
    """

    items: tuple[NvsItem, ...] = field(repr=False)
    source: str
    dropped: tuple[str, ...] = ()
    path: str | None = None  # the dump or CSV read (None: the module's defaults)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(item.namespace for item in self.items))


def load_nvs_base(spec: FactoryParam, profile: Profile) -> NvsBase:
    """The non-credential items ``spec`` names for ``profile``'s mfg_nvs, checked to hold factory_param."""
    if spec.kind == "module":
        if not profile.factory_param:
            raise ProfileError(
                f"profile {profile.name} has no module defaults for factory_param",
                hint="give --factory-param dump:FILE (your board's mfg_nvs) or csv:FILE",
            )
        items = module_items(profile)  # factory_param, and ble_data where the build has BLE
        named = {key: value for key, _kind, value in profile.factory_param}.get("module_name")
        module = f"{named} ({profile.module})" if named and profile.module else profile.name
        return NvsBase(tuple(items), f"the {module} module's defaults")
    assert spec.path is not None
    if spec.kind == "dump":
        data = read_bounded(spec.path, MAX_DUMP, "an mfg_nvs dump")
        items = nvs.parse_nvs(data, source=spec.path)
    else:
        from atflash.factory.nvscsv import load_nvs_csv

        items = load_nvs_csv(spec.path)
    return _base(items, str(spec.path))


def nvs_base_for(
    profile: Profile, factory_param: str | None, *, pad: bool = True
) -> NvsBase | None:
    """What a fresh mfg_nvs for ``profile`` starts from (``None``: a PKI layout, no mfg_nvs).

    ``factory_param`` is ``module`` (the default when ``None``), ``dump:FILE``
    or ``csv:FILE``; it is refused on a PKI layout, where there is no
    mfg_nvs to put it in, and an mfg_nvs image is refused unpadded.
    """
    if profile.store != MFG_NVS:
        if factory_param is not None:
            raise InputError(
                f"--factory-param: profile {profile.name} keeps credentials in PKI partitions, "
                "not in mfg_nvs",
                hint="factory_param is part of mfg_nvs on ESP-AT 3.1+ layouts only",
            )
        return None
    if not pad:
        raise InputError(
            "--no-pad: an mfg_nvs image is always the partition's size",
            hint="drop --no-pad for an ESP-AT 3.1+ layout",
        )
    return load_nvs_base(FactoryParam.parse(factory_param or "module"), profile)


def _base(items: Sequence[NvsItem], source: str) -> NvsBase:
    kept = tuple(i for i in items if i.namespace not in mfgnvs.CREDENTIAL_NAMESPACES)
    dropped = tuple(
        dict.fromkeys(i.namespace for i in items if i.namespace in mfgnvs.CREDENTIAL_NAMESPACES)
    )
    if not any(i.namespace == mfgnvs.FACTORY_PARAM for i in kept):
        raise ImageError(
            source,
            f"holds no {mfgnvs.FACTORY_PARAM} namespace, and the firmware does not start "
            "without it",
            hint="give your board's mfg_nvs dump, or --factory-param module",
        )
    return NvsBase(kept, source, dropped, source)


def build_mfg_nvs(plan: WritePlan, base: Sequence[NvsItem]) -> bytes:
    """The plan's mfg_nvs partition image: ``base`` with the plan's namespaces, partition-sized.

    Raises :class:`~atflash.errors.ImageTooBigError` (by how much) when it
    does not fit.
    """
    store = plan.profile.partition(MFG_NVS)
    return _nvs_image(mfgnvs.replace_credentials(base, plan.changes()), store)


def _nvs_image(items: list[NvsItem], store: Partition) -> bytes:
    image = nvs.build_nvs(items, store.size, name=MFG_NVS)
    # The writer and reader are separate code: an image that does not read
    # back as the items meant would be a firmware that loses factory_param.
    if nvs.parse_nvs(image, source=MFG_NVS) != items:
        raise AssertionError("the built mfg_nvs does not read back as its items")
    return image


# -- factory images -----------------------------------------------------------------------


@dataclass(frozen=True)
class FactoryImage:
    """A whole factory image and what its own tables say: the layout, as a profile.

    ``nvs_items`` holds what its mfg_nvs holds (3.1+ layouts; read once, so
    that a thousand devices patched from one image parse it once).
    ``damage`` says what a damaged mfg_nvs taken with ``force`` lost.
    """

    source: str
    data: bytes = field(repr=False)
    layout: board.BoardLayout
    profile: Profile
    nvs_items: tuple[NvsItem, ...] = field(repr=False, default=())
    damage: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def read_factory_image(
    path: str | Path,
    *,
    table_offset: int = DEFAULT_TABLE_OFFSET,
    base: Profile | None = None,
    force: bool = False,
) -> FactoryImage:
    """:func:`open_factory_image` on a file (read with a bound: at most the largest flash)."""
    data = read_bounded(path, MAX_IMAGE, "a factory image")
    return open_factory_image(
        data, source=str(path), table_offset=table_offset, base=base, force=force
    )


def open_factory_image(
    data: bytes,
    *,
    source: str,
    table_offset: int = DEFAULT_TABLE_OFFSET,
    base: Profile | None = None,
    force: bool = False,
) -> FactoryImage:
    """Read an image's primary table and at_customize.bin; refuse one line if they cannot be read.

    The layout is the image's own. Chip and flash settings come from the
    built-in profile with the same tables (among ``base``'s chip's layouts
    when given), else from ``base``; with neither, the image is refused.
    A damaged or cut-short mfg_nvs is refused unless ``force``, which keeps
    what still reads and says in ``damage`` what was lost.
    """
    layout = _discover(data, source, table_offset)
    candidates = family(base.chip) if base is not None else builtin_profiles()
    known = board.match(layout, candidates)
    chosen = known or base
    if chosen is None:
        raise ImageError(
            source,
            "its tables match no built-in ESP-AT layout, so its chip is unknown",
            hint="pass --chip (or --profile) to name the chip; the partitions come from the image",
        )
    profile = _image_profile(layout, chosen, len(data), source)
    items: tuple[NvsItem, ...] = ()
    damage: tuple[str, ...] = ()
    if profile.store == "mfg_nvs":
        found = nvs_items_of(data, profile.partition(MFG_NVS), source, force=force)
        items, damage = tuple(found.items), tuple(found.dropped)
    return FactoryImage(source, data, layout, profile, items, damage)


def _discover(data: bytes, source: str, table_offset: int) -> board.BoardLayout:
    def read(offset: int, size: int, _stop: object = None) -> bytes:
        return data[offset : offset + size]

    try:
        layout = board.discover(read, table_offset=table_offset, where=source)
    except BoardTableError as exc:
        raise ImageError(
            source,
            f"{exc.table} at {exc.offset:#x}: {exc.problem}",
            hint="give a whole factory image (flash from 0x0); pass --partition-table-offset "
            "if its firmware moved the table",
        ) from None
    if layout.at_customize is None:
        raise ImageError(
            source, f"the partition table at {table_offset:#x} has no at_customize partition",
            hint="not an ESP-AT factory image",
        )  # fmt: skip
    if layout.store is None:
        raise ImageError(
            source, "its at_customize.bin lists neither credential partitions nor mfg_nvs",
            hint="this firmware keeps no credentials atflash knows of",
        )  # fmt: skip
    return layout


def _image_profile(layout: board.BoardLayout, base: Profile, size: int, source: str) -> Profile:
    """The image's tables as a profile, with a flash at least as large as the image."""
    if size > base.flash_bytes:
        bigger = min((s for s in FLASH_SIZES.items() if s[1] >= size), key=lambda s: s[1])
        base = replace(base, flash_size=bigger[0])
    try:
        profile = board.profile_from_board(layout, base)
    except ProfileError as exc:
        raise ImageError(source, f"its tables are not a valid layout: {exc}") from None
    return replace(profile, name=f"{Path(source).name}", source=source)


def nvs_items_of(
    data: bytes, store: Partition, source: str, *, force: bool = False
) -> nvs.Salvaged:
    """The items of the mfg_nvs partition inside a flash image (none when it is erased or absent).

    An image that ends inside the partition, or whose partition does not
    read (corrupt, or cut short at a page boundary) or holds items but no
    ``factory_param`` (lost: see :func:`mfgnvs.read_mfg_nvs`), is refused with an :class:`ImageError`; with ``force`` what still reads is
    taken, and ``dropped`` says what was not.
    """
    region = data[store.offset : store.end]
    cut = 0 < len(region) < store.size
    region += bytes([ERASED]) * (store.size - len(region))
    if not cut and region.count(ERASED) == len(region):
        # Not yet provisioned (esp-at builds mfg_nvs.bin apart from the apps): nothing to
        # lose, and patching it warns that factory_param is missing. A board is stricter.
        return nvs.Salvaged([], [])
    where = f"{source}: {MFG_NVS}"
    ends = f"the file ends {len(data) - store.offset} bytes into the {store.size}-byte partition"
    if not force:
        try:
            if cut:
                raise FormatError(MFG_NVS, ends, source=source)
            return nvs.Salvaged(mfgnvs.read_mfg_nvs(region, source=where), [])
        except FormatError as exc:
            raise ImageError(
                source, f"its {MFG_NVS} at {store.offset:#x} is damaged: {exc.what}: {exc.problem}",
                hint="a partition rebuilt from it would lose what it held; give an intact image, "
                "or pass --force to keep what still reads (what is dropped is listed)",
            ) from None  # fmt: skip
    found = nvs.salvage_nvs(region, source=where)
    if cut:
        found.dropped.insert(0, f"{MFG_NVS}: {ends} (the rest taken as erased)")
    lost = mfgnvs.missing_factory_param(found.items, region)
    if lost is not None:
        found.dropped.append(f"{lost[0]}: {lost[1]}")
    return found


def plan_for_image(
    image: FactoryImage,
    requests: Sequence[PartitionRequest],
    *,
    options: PlanOptions | None = None,
) -> WritePlan:
    """The checked plan for ``requests`` on the image's layout (always padded: images are whole)."""
    opts = replace(options or PlanOptions(), pad=True)
    return build_plan(image.profile, requests, options=opts)


@dataclass(frozen=True)
class Region:
    """One changed range of a patched image: the partition and its new bytes."""

    partition: Partition
    data: bytes = field(repr=False)
    covers: tuple[str, ...]  # the partitions or namespaces given for it


@dataclass(frozen=True)
class PatchedImage:
    """A factory image with a plan's credentials in place; ``grown`` bytes were appended."""

    data: bytes = field(repr=False)
    regions: tuple[Region, ...]
    grown: int = 0
    warnings: tuple[str, ...] = ()
    images: tuple[PartitionImage, ...] = field(repr=False, default=())  # the plan's, put in


def patch_regions(image: FactoryImage, plan: WritePlan) -> tuple[tuple[Region, ...], list[str]]:
    """The new bytes of each partition the plan changes, and warnings about the image."""
    if plan.profile != image.profile:
        raise ValueError("the plan was not built for this image's layout")
    warnings: list[str] = []
    if plan.nvs:
        store = image.profile.partition(MFG_NVS)
        before = list(image.nvs_items)
        warnings += [f"{image.source}: {MFG_NVS} damaged, kept what reads (--force): {line}"
                     for line in image.damage]  # fmt: skip
        if not any(item.namespace == mfgnvs.FACTORY_PARAM for item in before):
            warnings.append(
                f"{image.source}: its {MFG_NVS} holds no {mfgnvs.FACTORY_PARAM} and is patched "
                "without it (--force): a module flashed with it will NOT start"
            )
        data = _nvs_image(mfgnvs.replace_credentials(before, plan.changes()), store)
        covers = tuple(img.partition.name for img in plan.images)
        return (Region(store, data, covers),), warnings
    regions = tuple(
        Region(img.partition, pki.pad(img.bin, img.partition.size), (img.partition.name,))
        for img in sorted(plan.images, key=lambda i: i.address)
    )
    return regions, warnings


def patch_image(image: FactoryImage, plan: WritePlan) -> PatchedImage:
    """``image`` with the plan's partitions replaced; every other byte as it was.

    A partition that reaches past the image's end grows it with erased
    flash (what a chip programmer leaves there anyway).
    """
    regions, warnings = patch_regions(image, plan)
    view = memoryview(image.data)
    pieces: list[bytes | memoryview] = []
    at = 0
    for region in sorted(regions, key=lambda r: r.partition.offset):
        start = region.partition.offset
        pieces.append(view[at:start])
        gap = start - max(at, len(image.data))  # the image ends before this partition
        if gap > 0:
            pieces.append(bytes([ERASED]) * gap)
        pieces.append(region.data)
        at = region.partition.end
    pieces.append(view[at:])
    # One join, one copy: a thousand devices of a 4 MB image is 4 GB of copying.
    data = b"".join(pieces)
    return PatchedImage(data, regions, len(data) - len(image.data), tuple(warnings), plan.images)


__all__ = [
    "FACTORY_PARAM_KINDS",
    "FactoryImage",
    "FactoryParam",
    "ImageError",
    "NvsBase",
    "PatchedImage",
    "Region",
    "build_mfg_nvs",
    "load_nvs_base",
    "nvs_base_for",
    "nvs_items_of",
    "open_factory_image",
    "patch_image",
    "patch_regions",
    "plan_for_image",
    "read_factory_image",
]
