"""The write plan: every image built, checked and placed before a port opens.

``build_plan`` turns ``(partition, files)`` requests into padded images at
their partition offsets. It checks everything that can be checked offline:
the partition exists and takes PKI items, each file is readable and holds
what the partition needs, each image fits, certificates and keys pair up.
Device adapters only execute a finished plan, so a refused command writes
nothing, whichever front end called it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, cast

from atflash.content import checks, mfgnvs, nvs, pairing, pki
from atflash.content.secret import is_secret
from atflash.errors import AtflashError, ImageTooBigError, InputError, Overflow, ProfileError
from atflash.files import Source
from atflash.layout.model import MFG_NVS, Partition, Profile, pki_kind_for


@dataclass(frozen=True)
class PartitionRequest:
    """One partition and the files (already expanded and ordered) to put in it."""

    partition: str
    files: tuple[Source, ...]  # file names, or content given in memory (a Blob: certificate, key)


@dataclass(frozen=True)
class PlanOptions:
    """How strict to be while planning."""

    check_content: bool = True  # certificates parse, keys parse and are unencrypted
    pair_check: bool = True  # certificate n matches key n
    pad: bool = True  # pad each image to its partition size
    key_type_check: bool = True  # *_key items hold keys of a type ESP-AT can use


@dataclass(frozen=True)
class PartitionImage:
    """A built image for one partition."""

    partition: Partition
    bin: bytes = field(repr=False)  # the PKI bin itself, unpadded
    sources: tuple[str, ...]
    # (name, content) of each item in ID order, for pairing and inspection.
    items: tuple[tuple[str, bytes], ...] = field(repr=False, default=())
    # ESP-AT 3.1+: the namespace's values as they go into mfg_nvs (raw PEM/DER, no PKI
    # header); ``partition`` is then the namespace, placed at the mfg_nvs partition.
    values: tuple[bytes, ...] | None = field(repr=False, default=None)

    @property
    def nvs(self) -> bool:
        """An NVS namespace of ``mfg_nvs`` (ESP-AT 3.1+), not a PKI partition."""
        return self.values is not None

    @property
    def payload(self) -> int:
        """Bytes of credentials: the PKI bin, or the namespace's values."""
        return sum(map(len, self.values)) if self.values is not None else len(self.bin)

    @property
    def padded(self) -> bytes:
        """The bin followed by erased flash up to the partition's size (NVS: the values)."""
        if self.values is not None:
            return b"".join(self.values)
        return pki.pad(self.bin, self.partition.size)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.padded).hexdigest()

    @property
    def address(self) -> int:
        return self.partition.offset

    @cached_property
    def facts(self) -> tuple[dict[str, Any], ...]:
        """Each item's public facts (:func:`atflash.planning.facts.describe_image`), once."""
        from atflash.planning.facts import describe_image

        return tuple(describe_image(self))

    def __getstate__(self) -> dict[str, Any]:
        # Worked out here, where the image was built and its keys were checked (so
        # cheaply: see atflash.content.passed), before the image travels to a worker,
        # which would otherwise check every key again only to describe it.
        _ = self.facts
        return self.__dict__

    @property
    def secret(self) -> bool:
        """It holds key material: a file made of it is written readable by its owner only."""
        return is_secret(self.partition.pki, (content for _name, content in self.items))


@dataclass(frozen=True)
class WritePlan:
    """Everything to write to one board, validated."""

    profile: Profile
    images: tuple[PartitionImage, ...]
    pad: bool = True
    credential_set: str | None = None  # the pool set the images were built from, if any
    # Candidate layouts of the same request that could not take it, and why in
    # one line (too big for their partitions, a partition they lack). A board
    # whose tables turn out to be one of them is refused with that reason.
    # Text, not the exception: plans are pickled to batch workers.
    rejected: tuple[tuple[Profile, str], ...] = field(default=(), compare=False)

    def refusal(self, profile: Profile) -> str | None:
        """Why ``profile``, a candidate layout, could not take this request (None: it could)."""
        return next((why for prof, why in self.rejected if prof == profile), None)

    @property
    def nvs(self) -> bool:
        """Credentials go into ``mfg_nvs`` (ESP-AT 3.1+), one namespace per image."""
        return self.profile.store == "mfg_nvs"

    @property
    def secret(self) -> bool:
        """Some image holds key material: a file made of them is readable by its owner only."""
        return any(image.secret for image in self.images)

    def changes(self) -> dict[str, tuple[bytes, ...]]:
        """Namespace -> values, for :func:`atflash.content.mfgnvs.replace_credentials`."""
        return {img.partition.name: img.values or () for img in self.images}

    def data_for(self, image: PartitionImage) -> bytes:
        return image.padded if self.pad else image.bin

    def addr_data(self) -> list[tuple[int, bytes]]:
        """``(address, bytes)`` pairs in flash order, as esptool's write_flash takes them."""
        return [
            (img.address, self.data_for(img))
            for img in sorted(self.images, key=lambda i: i.address)
        ]


@dataclass(frozen=True)
class BoardIdentity:
    """What is known of a board once connected, to choose its plan (per-device credentials)."""

    port: str
    chip: str | None = None
    mac: str | None = None  # lower-case, colon-separated
    serial_number: str | None = None  # the USB bridge's serial number, when known
    # What the board holds in the partitions a resolver asked to read back first (its
    # ``reads``), items in ID order: a certificate issuer keeps a valid one on a rerun.
    held: Mapping[str, tuple[bytes, ...]] | None = field(default=None, repr=False, compare=False)


# Chooses the plan for a board once it is identified (a manifest keyed by MAC,
# say). Returns the candidate plans (one per profile, as with a fixed list);
# raises an atflash error to refuse or skip the board. Every plan it can
# return must have been built and checked before the first board is touched.
PlanResolver = Callable[[BoardIdentity], Sequence[WritePlan]]


def build_plan(
    profile: Profile,
    requests: Sequence[PartitionRequest],
    *,
    options: PlanOptions | None = None,
) -> WritePlan:
    """Build and check every image; raise an :class:`InputError` on the first problem."""
    opts = options or PlanOptions()
    _refuse_duplicates(requests)
    build = _build_namespace if profile.store == "mfg_nvs" else _build_image
    images = tuple(build(profile, req, opts) for req in requests)
    if opts.pair_check:
        check_pairs(images)
    plan = WritePlan(profile, images, pad=opts.pad)
    if plan.nvs:
        _check_nvs_fit(plan)
    return plan


def build_plans(
    profiles: Sequence[Profile],
    requests: Sequence[PartitionRequest],
    *,
    options: PlanOptions | None = None,
) -> list[WritePlan]:
    """One checked plan per candidate layout that can take ``requests``.

    A layout that lacks a requested partition, or where an image does not
    fit, is dropped: the board's own tables decide among the rest once it is
    read, and a board that turns out to have a dropped layout is refused
    with that layout's reason (each plan's ``rejected``). Only a request no
    candidate can take is refused here, with the first candidate's reason;
    bad content fails at once.
    """
    plans: list[WritePlan] = []
    first: AtflashError | None = None
    rejected: list[tuple[Profile, str]] = []
    for profile in profiles:
        try:
            plans.append(build_plan(profile, requests, options=options))
        except (ProfileError, ImageTooBigError) as exc:
            if len(profiles) == 1:
                raise
            first = first or exc
            rejected.append((profile, str(exc)))
    if not plans:
        assert first is not None
        raise first
    if rejected:
        plans = [replace(plan, rejected=tuple(rejected)) for plan in plans]
    return plans


def request_names(profiles: Sequence[Profile]) -> set[str]:
    """Names a ``PARTITION FILE...`` group may start with: partitions, or 3.1+ namespaces."""
    names = {p.name for prof in profiles for p in prof.partitions}
    if any(prof.store == "mfg_nvs" for prof in profiles):
        names |= set(mfgnvs.CREDENTIAL_NAMESPACES)
    return names


def check_readable(name: str, profiles: Sequence[Profile]) -> None:
    """Refuse a partition to read that none of ``profiles`` has (none: any name passes)."""
    known = request_names(profiles) | {p.name for prof in profiles for p in prof.primary}
    if profiles and name not in known:
        raise InputError(
            f"no partition {name!r} in the {profiles[0].chip} layouts",
            hint=f"credential partitions are: {', '.join(sorted(request_names(profiles)))}",
        )


def _refuse_duplicates(requests: Sequence[PartitionRequest]) -> None:
    seen: set[str] = set()
    for req in requests:
        if req.partition in seen:
            raise InputError(
                f"partition {req.partition} is given twice",
                hint="list all its files after one partition name",
            )
        seen.add(req.partition)


def _build_image(profile: Profile, req: PartitionRequest, opts: PlanOptions) -> PartitionImage:
    part = profile.partition(req.partition)
    if part.pki is None:
        raise InputError(
            f"partition {part.name} does not hold PKI items",
            hint="write credentials to a *_cert, *_key or *_ca partition",
        )
    if not req.files:
        raise InputError(f"partition {part.name}: no files given")
    contents = _contents(req)
    ready = [path for path, data in contents if pki.is_pki_bin(data)]
    if len(contents) == 1 and _is_erased(contents[0][1]):
        image = _blank_image(part, contents[0])
    elif ready:
        image = _prebuilt_image(part, contents, ready)
        checks.check_items(part.pki, image.items, key_type_check=opts.key_type_check)
    else:
        if opts.check_content:
            for path, data in contents:
                checks.validate_item(
                    part.pki, data, source=path, key_type_check=opts.key_type_check
                )
        built = pki.build((part.pki, data, path) for path, data in contents)
        image = PartitionImage(part, built, _names(req), tuple(contents))
    if len(image.bin) > part.size:
        raise ImageTooBigError(Overflow(part.name, len(image.bin), part.size))
    return image


def _build_namespace(profile: Profile, req: PartitionRequest, opts: PlanOptions) -> PartitionImage:
    """One credential namespace of ``mfg_nvs``: the files' own bytes, checked like a PKI item."""
    namespace = req.partition
    kind = pki_kind_for(namespace)
    if kind is None or namespace not in mfgnvs.CREDENTIAL_NAMESPACES:
        raise ProfileError(
            f"{namespace!r} is not an ESP-AT credential namespace",
            hint="on ESP-AT 3.1+ write to client_cert, client_key, client_ca, mqtt_cert, ...",
        )
    if not req.files:
        raise InputError(f"namespace {namespace}: no files given")
    values: list[bytes] = []
    items: list[tuple[str, bytes]] = []
    contents = _contents(req)
    if len(contents) == 1 and _is_erased(contents[0][1]):
        contents = []  # a blank partition's backup: restoring it empties the namespace
    for path, data in contents:
        if pki.is_pki_bin(data):  # a 2.x bin: its items carry over as they are
            parsed = pki.parse(data, source=path)
            got = [(f"{path}[{item.id}]", item.content) for item in parsed.items]
            checks.check_items(kind, tuple(got), key_type_check=opts.key_type_check)
        else:
            if opts.check_content:
                checks.validate_item(kind, data, source=path, key_type_check=opts.key_type_check)
            got = [(path, data)]
        items += got
        values += [content for _name, content in got]
    mfgnvs.credential_keys(namespace, len(values))  # refuses two values where one key exists
    store = profile.partition(MFG_NVS)
    part = Partition(namespace, store.type, store.subtype, store.offset, store.size, pki=kind)
    return PartitionImage(part, b"", _names(req), tuple(items), values=tuple(values))


def _contents(req: PartitionRequest) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of each source: a file read (bounded), or a Blob taken as it is."""
    return [(str(source), pki.read_input(source, allow_empty=False)) for source in req.files]


def _names(req: PartitionRequest) -> tuple[str, ...]:
    """What the sources are called in results and the audit trail: file names, Blob names."""
    return tuple(str(source) for source in req.files)


def _check_nvs_fit(plan: WritePlan) -> None:
    """The credentials fit ``mfg_nvs`` beside the module's own factory_param and ble_data
    (say by how much not)."""
    store = plan.profile.partition(MFG_NVS)
    defaults = module_items(plan.profile)
    nvs.build_nvs(mfgnvs.replace_credentials(defaults, plan.changes()), store.size, name=MFG_NVS)


def factory_items(profile: Profile) -> list[nvs.NvsItem]:
    """The ``factory_param`` namespace esp-at's build puts in this module's ``mfg_nvs``."""
    return [
        nvs.NvsItem("factory_param", key, cast(nvs.NvsType, kind), value)
        for key, kind, value in profile.factory_param
    ]


def module_items(profile: Profile) -> list[nvs.NvsItem]:
    """Everything but credentials esp-at's build puts in this module's ``mfg_nvs``:
    ``factory_param``, then ``ble_data`` on a module with BLE commands (as mfg_nvs.py orders them)."""
    return factory_items(profile) + (mfgnvs.ble_data_items() if profile.ble_data else [])


def _is_erased(data: bytes) -> bool:
    return bool(data) and data.count(pki.ERASED) == len(data)


def _blank_image(part: Partition, content: tuple[str, bytes]) -> PartitionImage:
    """Erased flash given as a file: the backup of a partition that held nothing.

    Writing it back empties the partition, so ``--backup`` can undo a write
    to a blank partition too. It must not be longer than the partition.
    """
    path, data = content
    if len(data) > part.size:
        raise ImageTooBigError(Overflow(part.name, len(data), part.size))
    return PartitionImage(part, b"", (path,), ())


def _prebuilt_image(
    part: Partition, contents: list[tuple[str, bytes]], ready: list[str]
) -> PartitionImage:
    if len(contents) > 1:
        raise InputError(
            f"partition {part.name}: {ready[0]} is a ready PKI bin and cannot be mixed with other files",
            hint="give the bin alone, or only certificate/key files",
        )
    path, data = contents[0]
    parsed = pki.parse(data, source=path)
    wrong = [item for item in parsed.items if item.type != part.pki]
    if wrong:
        raise InputError(
            f"{path}: holds {wrong[0].type} items but partition {part.name} takes {part.pki} items"
        )
    items = tuple((f"{path}[{item.id}]", item.content) for item in parsed.items)
    # A partition dump (bin + trailing 0xFF) is written as its bin only.
    return PartitionImage(part, data[: parsed.size], (path,), items)


def check_pairs(images: Sequence[PartitionImage]) -> None:
    """Certificate ID n in ``X_cert`` must match key ID n in ``X_key``."""
    by_name = {img.partition.name: img for img in images}
    for name, cert_image in by_name.items():
        if not name.endswith("_cert"):
            continue
        key_image = by_name.get(name[: -len("_cert")] + "_key")
        if key_image is not None:
            pairing.check_pairs(cert_image.items, key_image.items)
