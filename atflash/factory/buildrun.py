"""What ``atflash build`` is given, checked; and its per-device builds, prepared and run.

:class:`BuildOptions` holds the command's options as values and
:func:`build_mode` says which build they ask for (one layout's images, a
manifest's or pool's devices, or an issuer's), refusing options that do not
go together. :func:`prepare_devices` checks what every device shares (a layout, or a
factory image with ``--image``; the base of a 3.1+ ``mfg_nvs``) and makes
the :class:`~atflash.factory.device_builds.BuildSpec`, before any device is
read; :func:`build_listed` then builds the devices of a manifest or a pool
(:func:`atflash.factory.device_builds.build_devices`). An issuer's devices
(``build --issue``) take the same spec (:mod:`atflash.issue.offline`).
Nothing prints: what a damaged image lost comes back as ``warnings``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from atflash.content import mfgnvs
from atflash.errors import InputError
from atflash.factory import images
from atflash.factory.device_builds import (
    BuildSpec,
    BuildSummary,
    ProgressCallback,
    build_devices,
    devices_from_manifest,
    devices_from_pool,
)
from atflash.layout.choice import LayoutChoice
from atflash.layout.model import MFG_NVS
from atflash.layout.parttable import DEFAULT_TABLE_OFFSET
from atflash.planning.plan import PartitionRequest, PlanOptions, request_names

BuildMode = Literal["layout", "devices", "issued"]


@dataclass(frozen=True)
class BuildOptions:
    """What ``atflash build`` is given besides the credentials and the output folder."""

    chip: str | None = None
    profile: str | None = None  # a profile file, or an at_customize.csv (with chip)
    factory_param: str | None = None  # module, dump:FILE or csv:FILE (3.1+ layouts)
    options: PlanOptions = field(default_factory=PlanOptions)
    # Per-device builds: the devices come from a manifest, a pool or an issuer.
    manifest: str | None = None  # one device per row
    pool: str | None = None  # one device per set
    image: str | None = None  # a factory image: one whole patched image per device
    table_offset: int | None = None  # where the image's partition table is
    force: bool = False  # take an image whose mfg_nvs is damaged, keeping what reads
    issue: str | None = None  # the issuer file: a certificate issued per MAC of ``macs``
    macs: str | None = None
    reissue: bool = False
    ledger: str | None = None
    station: str | None = None


def build_mode(given: BuildOptions, *, common: bool) -> BuildMode:
    """Which build ``given`` asks for (``common``: credentials were given for every device,
    or for the one layout); an :class:`InputError` for options that do not go together."""
    if given.issue or given.macs:
        if not (given.issue and given.macs) or given.manifest or given.pool or common:
            raise InputError(
                "--issue and --macs go together, without --manifest, --pool or PARTITION FILE...",
                hint="atflash build --issue FILE --macs MACS.csv -o OUT [--image FACTORY.bin]",
            )
        return "issued"
    if given.manifest or given.pool:
        return "devices"
    if given.image or given.table_offset is not None or given.force:
        raise InputError(
            "--image, --partition-table-offset and --force are for one image per device: "
            "give --manifest or --pool",
            hint="for one factory image, use 'atflash patch-image'",
        )
    if not common:
        raise InputError(
            "nothing to do", hint="give a partition name and its files, e.g. client_cert cert.pem"
        )
    return "layout"


@dataclass(frozen=True)
class DeviceRun:
    """A per-device build checked and ready: the shared spec, the files read for it, and
    what a damaged image's ``mfg_nvs`` lost (one line each, for the whole run)."""

    given: BuildOptions
    spec: BuildSpec
    inputs: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def partition_names(self) -> set[str]:
        """What the devices' credentials may be given for."""
        return request_names([self.spec.profile])


def prepare_devices(given: BuildOptions) -> DeviceRun:
    """Check ``given`` and make the spec every device shares; no device is read yet."""
    if given.manifest and given.pool:
        raise InputError("give --manifest or --pool, not both")
    inputs = [given.profile] if given.profile else []
    if given.image:
        if given.factory_param is not None:
            raise InputError(
                "--factory-param does not go with --image: the image's own mfg_nvs is kept",
                hint="drop --factory-param",
            )
        if not given.options.pad:
            raise InputError("--no-pad does not go with --image: an image holds whole partitions")
        base = (
            LayoutChoice.of(given.chip, given.profile).one()
            if given.chip or given.profile
            else None
        )
        image = images.read_factory_image(
            given.image,
            table_offset=given.table_offset or DEFAULT_TABLE_OFFSET,
            base=base,
            force=given.force,
        )
        spec = BuildSpec(image.profile, given.options, image=image)
        return DeviceRun(given, spec, (*inputs, given.image), _damage(image))
    if given.table_offset is not None or given.force:
        raise InputError(
            "--partition-table-offset and --force are for --image: where the image's table is, "
            "and taking its damaged mfg_nvs"
        )
    profile = LayoutChoice.of(given.chip, given.profile).one()
    base_items = images.nvs_base_for(profile, given.factory_param, pad=given.options.pad)
    read = [base_items.path] if base_items is not None and base_items.path else []
    spec = BuildSpec(profile, given.options, base=base_items)
    return DeviceRun(given, spec, (*inputs, *read))


def _damage(image: images.FactoryImage) -> tuple[str, ...]:
    """What ``force`` dropped from a damaged mfg_nvs, and a missing factory_param."""
    lines = [f"{image.source}: {MFG_NVS} damaged, kept what reads: {line}" for line in image.damage]
    if image.profile.store == MFG_NVS and not any(
        item.namespace == mfgnvs.FACTORY_PARAM for item in image.nvs_items
    ):
        lines.append(
            f"{image.source}: its {MFG_NVS} holds no {mfgnvs.FACTORY_PARAM}, and nor will the "
            "images built from it: a module flashed with one will NOT start"
        )
    return tuple(lines)


def build_listed(
    run: DeviceRun,
    out_dir: str | Path,
    *,
    common: Sequence[PartitionRequest] = (),
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
) -> BuildSummary:
    """Build one folder (or image) per device of the run's manifest or pool into ``out_dir``;
    ``common`` requests go to every device. All or nothing; unchanged devices are skipped."""
    if run.given.manifest:
        from atflash.planning.manifest import load_manifest

        source = run.given.manifest
        listed = devices_from_manifest(load_manifest(source), common)
    elif run.given.pool:
        from atflash.factory.pool import load_pool

        source = run.given.pool
        listed = devices_from_pool(load_pool(source), common)
    else:
        raise ValueError("build_listed needs a manifest or a pool")
    summary = build_devices(
        listed, run.spec, out_dir, inputs=[*run.inputs, source], jobs=jobs, progress=progress
    )
    return replace(summary, warnings=run.warnings)


__all__ = [
    "BuildMode",
    "BuildOptions",
    "DeviceRun",
    "build_listed",
    "build_mode",
    "prepare_devices",
]
