"""Plans and images: everything the public API does without a board.

:func:`plan` turns Python values (paths, or bytes a CA or an HSM handed
over) into checked write plans; :func:`build_images`, :func:`patch_image`,
:func:`generate_bin` and :func:`parse_bin` make what a chip programmer or
AtPKI.py would. Bytes are checked exactly as files are and are called
``<bytes client_key[0]>`` in messages and records; their content never
appears in a repr, an error or a report. Re-exported by :mod:`atflash.api`
(and so by ``atflash``); nothing here opens a port or prints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

from atflash.errors import InputError
from atflash.files import Blob
from atflash.layout.choice import LayoutChoice
from atflash.layout.model import Profile
from atflash.planning.plan import (
    PartitionRequest,
    PlanOptions,
    WritePlan,
    build_plans,
    request_names,
)

if TYPE_CHECKING:
    from atflash.content.pki import PkiItem
    from atflash.factory.images import PatchedImage

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
    from atflash.content.keys import holds_private_key
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
            if img.partition.pki == "key" or any(holds_private_key(c) for _n, c in img.items)
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
    requests = requests_from(credentials, request_names([factory.profile]))
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
    from atflash.content import pki
    from atflash.content.checks import check_items

    built = []
    for index, (kind, item) in enumerate(items):
        if kind not in pki.TYPE_CODES:
            raise InputError(f"unknown item type {kind!r}", hint="use ca, cert or key")
        source = source_of(kind, index, item)
        data = pki.read_input(source)
        check_items(kind, [(str(source), data)], key_type_check=key_type_check)  # type: ignore[arg-type]
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
