"""What a PKI bin, partition dump or credential file holds, for people.

The report names items, IDs and lengths, describes certificates (subject,
issuer, validity, key type) and keys (type, encrypted or not), and lists
the problems the firmware would trip on. It never carries key material.
:func:`describe_credential` describes one credential and never raises;
:func:`inspect_bytes` describes a whole input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from atflash.content import keys, mfgnvs, nvs, pem, pki
from atflash.content.certs import load_pem_certificate
from atflash.content.nvs_format import PAGE_HEADER, PAGE_SIZE, PageState
from atflash.content.pairing import public_key_fingerprint, spki
from atflash.errors import AtflashError, ContentError
from atflash.files import expand
from atflash.layout.model import pki_kind_for

Kind = Literal["certificate", "private key", "unknown"]

_EXPECTED_KIND = {"cert": "certificate", "ca": "certificate", "key": "private key"}


@dataclass(frozen=True)
class ItemInfo:
    """What a credential file holds, for ``inspect``. Never holds key material.

    Certificate fields are None for keys and unknown content; ``key_type``
    is set for both certificates (their public key) and private keys.
    """

    kind: Kind
    encoding: Literal["PEM", "DER"] | None = None
    note: str | None = None
    subject: str | None = None
    issuer: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    expired: bool = False
    expiring_soon: bool = False
    key_type: str | None = None
    is_ca: bool | None = None
    sha256_fingerprint: str | None = None
    public_key_sha256: str | None = None
    encrypted: bool = False
    holds_private_key: bool = False  # private-key material anywhere in the file (never shown)


def describe_credential(
    data: bytes,
    *,
    source: str,
    now: datetime | None = None,
    expiring_days: int = 30,
) -> ItemInfo:
    """Describe ``data`` (a certificate, a private key or anything else); never raises.

    ``source`` names the input in the loaders' errors, which are turned into
    a short ``note`` here. Expiry is judged at ``now`` (default: the current
    time; a naive datetime is taken as UTC); ``expiring_soon`` means valid
    for ``expiring_days`` days or fewer.
    """
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    try:
        holds_key = keys.holds_private_key(data)
        info = _describe(data, source=source, now=now, expiring_days=expiring_days)
    except Exception:
        # inspect must report on anything it is given, and a corner of
        # cryptography we did not foresee must not turn into a crash.
        return ItemInfo("unknown", note="content cannot be read")
    return replace(info, holds_private_key=holds_key)


@dataclass(frozen=True)
class ItemReport:
    """One item of a bin (or the whole file, for a plain credential file)."""

    type: str | None  # PKI item type, None for a plain file
    id: int | None
    length: int
    info: ItemInfo
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
        info = describe_credential(data, source=source, now=now, expiring_days=expiring_days)
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


@dataclass(frozen=True)
class InspectFailure:
    """A file (or glob pattern) given to :func:`inspect_files` that could not be described."""

    source: str
    error: AtflashError

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "error": str(self.error), "exit_code": self.error.exit_code}


def inspect_files(
    files: Iterable[str], *, expiring_days: int = 30, now: datetime | None = None
) -> Iterator[InspectReport | InspectFailure]:
    """What ``atflash inspect`` shows: a report per file, in order, glob patterns expanded.

    A file that cannot be read or is malformed (see ``strict`` in
    :func:`inspect_bytes`) is an :class:`InspectFailure` naming what was
    given, and the files after it are still described; the rest of a
    pattern whose file failed is skipped.
    """
    for argument in files:
        try:
            for path in expand([argument]):
                data = pki.read_bin_file(path)
                yield inspect_bytes(
                    data, source=path, expiring_days=expiring_days, now=now, strict=True
                )
        except AtflashError as exc:
            yield InspectFailure(argument, exc)


_IN_USE = (PageState.ACTIVE, PageState.FULL, PageState.FREEING)


def _marked_as_nvs(data: bytes) -> bool:
    """Whole NVS pages, the first one's state word saying it is in use (its CRC unchecked)."""
    if len(data) < PAGE_SIZE or len(data) % PAGE_SIZE:
        return False
    return PAGE_HEADER.unpack_from(data, 0)[0] in _IN_USE


def _refuse_unreadable(info: ItemInfo, source: str) -> None:
    """Raise for a credential file that holds nothing inspect can describe.

    A well-formed PEM object that is not a credential (a public key, a CSR)
    is described, not refused: the file is what it says it is.
    """
    if info.kind != "unknown" or (info.encoding == "PEM" and info.note in pem.OTHER_OBJECTS):
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
            info = describe_credential(
                item.value, source=where, now=now, expiring_days=expiring_days
            )
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
    info = describe_credential(
        item.content,
        source=f"{source}[{item.type} {item.id}]",
        now=now,
        expiring_days=expiring_days,
    )
    return ItemReport(item.type, item.id, len(item.content), info, _warnings(info, item.type))


def _warnings(info: ItemInfo, item_type: str | None) -> tuple[str, ...]:
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


# -- one credential ---------------------------------------------------------------------


def _describe(data: bytes, *, source: str, now: datetime, expiring_days: int) -> ItemInfo:
    if not data:
        return ItemInfo("unknown", note="empty")
    blocks = pem.blocks(data)
    if not blocks:
        return _describe_der(data, source=source, now=now, expiring_days=expiring_days)
    holds = pem.holds(blocks)
    if holds == "a certificate":
        cert_blocks = [b for b in blocks if b.label == pem.CERT_LABEL]
        try:
            cert = load_pem_certificate(cert_blocks[0], source=source)
        except ContentError:
            return ItemInfo("unknown", "PEM", note="damaged certificate block")
        note = f"first of {len(cert_blocks)} certificates" if len(cert_blocks) > 1 else None
        return _describe_certificate(cert, "PEM", now, expiring_days, note)
    if holds == "a private key":
        block = pem.first_key_block(blocks)
        assert block is not None  # pem.holds found one
        if block.encrypted:
            return ItemInfo(
                "private key", "PEM", key_type=_label_key_type(block.label), encrypted=True
            )
        try:
            key = keys.load_private_key(data, source=source)
        except ContentError:
            return ItemInfo("unknown", "PEM", note="damaged or unsupported private key block")
        return _describe_private_key(key, "PEM")
    return ItemInfo("unknown", "PEM", note=holds or "no certificate or private key")


def _describe_der(data: bytes, *, source: str, now: datetime, expiring_days: int) -> ItemInfo:
    try:
        cert = x509.load_der_x509_certificate(data)
    except keys.PARSE_ERRORS:
        pass
    else:
        return _describe_certificate(cert, "DER", now, expiring_days, None)
    first = _leading_der_certificate(data)
    if first is not None:
        cert, rest = first
        note = f"followed by {rest} more bytes"
        return _describe_certificate(cert, "DER", now, expiring_days, note)
    state = keys.der_private_key_state(data)
    if state == "encrypted":
        return ItemInfo("private key", "DER", encrypted=True)
    if state == "plain":
        try:
            key = keys.load_private_key(data, source=source)
        except ContentError:
            return ItemInfo("unknown", "DER", note="damaged or unsupported private key")
        return _describe_private_key(key, "DER")
    note = "text, not PEM" if pem.looks_like_text(data) else "neither PEM nor DER"
    return ItemInfo("unknown", note=note)


def _leading_der_certificate(data: bytes) -> tuple[x509.Certificate, int] | None:
    """A DER certificate at the start of ``data`` and the count of bytes after it, or None."""
    end = keys.der_end(data, 0) if data[:1] == b"\x30" else None
    if end is None or end == len(data):
        return None
    try:
        return x509.load_der_x509_certificate(data[:end]), len(data) - end
    except keys.PARSE_ERRORS:
        return None


def _describe_certificate(
    cert: x509.Certificate,
    encoding: Literal["PEM", "DER"],
    now: datetime,
    expiring_days: int,
    note: str | None,
) -> ItemInfo:
    not_after = cert.not_valid_after_utc
    expired = now > not_after
    try:
        public = cert.public_key()
    except UnsupportedAlgorithm:
        key_type, public_sha = "unsupported key type", None
    else:
        key_type, public_sha = keys.key_type(public), hashlib.sha256(spki(public)).hexdigest()
    return ItemInfo(
        "certificate",
        encoding,
        note=note,
        subject=_name(cert.subject),
        issuer=_name(cert.issuer),
        not_before=cert.not_valid_before_utc,
        not_after=not_after,
        expired=expired,
        expiring_soon=not expired and not_after - now <= timedelta(days=expiring_days),
        key_type=key_type,
        is_ca=_is_ca(cert),
        sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        public_key_sha256=public_sha,
    )


def _describe_private_key(key: PrivateKeyTypes, encoding: Literal["PEM", "DER"]) -> ItemInfo:
    return ItemInfo(
        "private key",
        encoding,
        key_type=keys.key_type(key.public_key()),
        public_key_sha256=public_key_fingerprint(key),
    )


def _name(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except ValueError:
        return "(unreadable name)"


def _is_ca(cert: x509.Certificate) -> bool | None:
    """The BasicConstraints CA flag; None when the extension is absent or unreadable."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return None


def _label_key_type(label: str) -> str | None:
    """The key type a legacy PEM label names (PKCS#8 labels do not say)."""
    return {"RSA PRIVATE KEY": "RSA", "EC PRIVATE KEY": "EC", "DSA PRIVATE KEY": "DSA"}.get(label)
