"""The public facts of a planned image, item by item: what an auditor asks of a write.

:func:`describe_image` names every item by type and ID with the public
facts (certificate fingerprint, subject, issuer, serial number, validity; a
key's type and public-key fingerprint), never key bytes. A board's result
carries them from the moment its plan is chosen (see
:func:`atflash.backends.base.new_result`), so ``--json``, the report and the
provisioning log all show the same facts, made where the plan was.
"""

from __future__ import annotations

import datetime
from typing import Any

from atflash.content import pki
from atflash.content.certs import load_certificate
from atflash.content.describe import describe_credential
from atflash.errors import AtflashError, FormatError
from atflash.planning.plan import PartitionImage


def describe_image(image: PartitionImage) -> list[dict[str, Any]]:
    """One dict per item of ``image``, in ID order: type, ID, source and public facts.

    Certificates: ``sha256`` (of the DER certificate), ``subject``,
    ``issuer``, ``serial`` (hex), ``not_before``/``not_after``. Keys:
    ``key_type`` and ``public_key_sha256``. Content that cannot be read is
    described as ``unknown``. Never raises; never carries key material.
    """
    kind: str = image.partition.pki or "?"
    typed: list[tuple[str, int | None, bytes]]
    if image.values is not None:  # an mfg_nvs namespace: one value per item, in key order
        typed = [(kind, index, content) for index, (_n, content) in enumerate(image.items)]
    elif image.bin:
        try:
            typed = [(i.type, i.id, i.content) for i in pki.parse(image.bin).items]
        except FormatError:  # the plan checked it; a bin that fails here says so
            return [{"type": kind, "id": None, "kind": "unknown", "note": "unreadable bin"}]
    else:
        typed = []  # erased flash given as a file (the backup of an empty partition)
    names = [name for name, _content in image.items]
    out = []
    for index, (item_type, item_id, content) in enumerate(typed):
        source = names[index] if index < len(names) else None
        out.append(describe_item(item_type, item_id, content, source=source))
    return out


def describe_item(
    item_type: str, item_id: int | None, content: bytes, *, source: str | None
) -> dict[str, Any]:
    """The public facts of one PKI item (see :func:`describe_image`)."""
    info = describe_credential(content, source=source or f"{item_type} {item_id}")
    entry: dict[str, Any] = {
        "type": item_type,
        "id": item_id,
        "source": source,
        "kind": info.kind,
        "size": len(content),
    }
    if info.kind == "certificate":
        entry.update(
            subject=info.subject,
            issuer=info.issuer,
            serial=_serial(content, source),
            not_before=_iso(info.not_before),
            not_after=_iso(info.not_after),
            sha256=info.sha256_fingerprint,
            key_type=info.key_type,
            public_key_sha256=info.public_key_sha256,
        )
    elif info.kind == "private key":
        entry.update(
            key_type=info.key_type,
            encrypted=info.encrypted,
            public_key_sha256=info.public_key_sha256,
        )
    elif info.note:
        entry["note"] = info.note
    return entry


def _serial(content: bytes, source: str | None) -> str | None:
    try:
        number = load_certificate(content, source=source or "item").serial_number
    except AtflashError:
        return None
    return f"{number:x}"


def _iso(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
