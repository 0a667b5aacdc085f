"""What a PKI bin, partition dump or credential file holds, for people.

The report names items, IDs and lengths, describes certificates (subject,
issuer, validity, key type) and keys (type, encrypted or not), and lists
the problems the firmware would trip on. It never carries key material.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from atflash.content import creds, mfgnvs, nvs, pki
from atflash.content.nvs_format import PAGE_HEADER, PAGE_SIZE, PageState
from atflash.errors import ContentError
from atflash.layout.model import pki_kind_for

_EXPECTED_KIND = {"cert": "certificate", "ca": "certificate", "key": "private key"}


@dataclass(frozen=True)
class ItemReport:
    """One item of a bin (or the whole file, for a plain credential file)."""

    type: str | None  # PKI item type, None for a plain file
    id: int | None
    length: int
    info: creds.ItemInfo
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class InspectReport:
    """Everything ``inspect`` shows for one input."""

    source: str
    kind: str  # "pki-bin" | "partition-dump" | "blank" | "file" | "nvs"
    size: int
    bin_size: int | None
    items: tuple[ItemReport, ...]
    # NVS (ESP-AT 3.1+ mfg_nvs): every entry as (namespace, key, type, shown value).
    # Credentials are described in ``items``; binary values show their length only.
    entries: tuple[tuple[str, str, str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for item in out["items"]:
            item["info"] = {k: _jsonable(v) for k, v in item["info"].items()}
        return out

    @property
    def warnings(self) -> list[str]:
        return [w for item in self.items for w in item.warnings]


def _jsonable(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def inspect_bytes(
    data: bytes,
    *,
    source: str,
    expiring_days: int = 30,
    now: datetime | None = None,
    strict: bool = False,
) -> InspectReport:
    """Describe ``data``: a PKI bin, a partition dump, blank flash or a credential file.

    A PKI bin or NVS image that breaks its format raises its
    :class:`~atflash.errors.FormatError`. ``strict`` (a file the user
    named, as ``inspect`` takes it) also refuses, with a
    :class:`~atflash.errors.ContentError`, a file that is none of these
    kinds (empty, a damaged or truncated PEM block or DER object, PEM with
    no block anything knows, text), and reads a whole-page image whose
    first page is marked in use as NVS, so that a bad header CRC is
    reported as such. Without it (a partition read from a board, whatever
    it holds) such bytes are described as unknown content. Inside a bin or
    an NVS image an item that is not what its slot needs is a warning: the
    rest of the container is still worth showing.
    """
    if data and all(b == pki.ERASED for b in data):
        return InspectReport(source, "blank", len(data), None, ())
    if nvs.looks_like_nvs(data) or (strict and _marked_as_nvs(data)):
        return _inspect_nvs(data, source=source, now=now, expiring_days=expiring_days)
    if not pki.is_pki_bin(data):
        info = creds.describe(data, source=source, now=now, expiring_days=expiring_days)
        if strict:
            _refuse_unreadable(info, source)
        item = ItemReport(None, None, len(data), info, _warnings(info, None))
        return InspectReport(source, "file", len(data), None, (item,))
    parsed = pki.parse(data, source=source)
    items = tuple(
        _item_report(item, source=source, now=now, expiring_days=expiring_days)
        for item in parsed.items
    )
    kind = "pki-bin" if parsed.size == len(data) else "partition-dump"
    return InspectReport(source, kind, len(data), parsed.size, items)


_IN_USE = (PageState.ACTIVE, PageState.FULL, PageState.FREEING)


def _marked_as_nvs(data: bytes) -> bool:
    """Whole NVS pages, the first one's state word saying it is in use (its CRC unchecked)."""
    if len(data) < PAGE_SIZE or len(data) % PAGE_SIZE:
        return False
    return PAGE_HEADER.unpack_from(data, 0)[0] in _IN_USE


def _refuse_unreadable(info: creds.ItemInfo, source: str) -> None:
    """Raise for a credential file that holds nothing inspect can describe.

    A well-formed PEM object that is not a credential (a public key, a CSR)
    is described, not refused: the file is what it says it is.
    """
    if info.kind != "unknown" or (info.encoding == "PEM" and info.note in creds.OTHER_OBJECTS):
        return
    if info.note == "empty":
        raise ContentError(source, "file is empty")
    detail = f"{info.encoding}: {info.note}" if info.encoding else info.note
    raise ContentError(source, f"not a certificate, private key, PKI bin or NVS image ({detail})")


def _inspect_nvs(
    data: bytes, *, source: str, now: datetime | None, expiring_days: int
) -> InspectReport:
    """An mfg_nvs dump: its namespaces and keys; certificates and keys described, never shown."""
    items = nvs.parse_nvs(data, source=source)
    entries = []
    reports = []
    for item in items:
        shown = f"{len(item.value)} bytes" if isinstance(item.value, bytes) else repr(item.value)
        entries.append((item.namespace, item.key, item.type, shown))
        kind = pki_kind_for(item.namespace)
        if (
            isinstance(item.value, bytes)
            and item.namespace in mfgnvs.CREDENTIAL_NAMESPACES
            and kind
        ):
            where = f"{source}[{item.namespace}/{item.key}]"
            info = creds.describe(item.value, source=where, now=now, expiring_days=expiring_days)
            reports.append(
                ItemReport(
                    f"{item.namespace}/{item.key}",
                    None,
                    len(item.value),
                    info,
                    _warnings(info, kind),
                )
            )
    return InspectReport(source, "nvs", len(data), None, tuple(reports), tuple(entries))


def _item_report(
    item: pki.PkiItem, *, source: str, now: datetime | None, expiring_days: int
) -> ItemReport:
    info = creds.describe(
        item.content,
        source=f"{source}[{item.type} {item.id}]",
        now=now,
        expiring_days=expiring_days,
    )
    return ItemReport(item.type, item.id, len(item.content), info, _warnings(info, item.type))


def _warnings(info: creds.ItemInfo, item_type: str | None) -> tuple[str, ...]:
    found = []
    expected = _EXPECTED_KIND.get(item_type or "")
    if expected and info.kind != expected:
        found.append(f"stored as {item_type} but holds {_article(info.kind)}")
    if info.holds_private_key and info.kind == "certificate":
        found.append(
            "also holds a private key (not shown): give the certificate alone, "
            "and the key to a *_key partition"
        )
    elif info.holds_private_key and info.kind == "unknown":
        found.append("holds private-key material (not shown)")
    if info.kind == "private key" and info.encrypted:
        found.append("encrypted key: the firmware cannot use it")
    if info.expired:
        found.append("certificate has expired")
    elif info.expiring_soon:
        found.append("certificate expires soon")
    return tuple(found)


def _article(kind: str) -> str:
    return "an unknown object" if kind == "unknown" else f"a {kind}"
