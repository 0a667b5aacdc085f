"""The issuer: a CA, a subject template and a ledger, issuing one certificate per device.

:meth:`Issuer.open` checks everything that can refuse (the settings, the CA
certificate and key, the PIN, the templates, the ledger) before any board.
Then, per device: :meth:`Issuer.held` says whether the board already holds
a valid certificate of this issuer for its MAC with its key (a rerun then
keeps it), :meth:`Issuer.issue` makes a key in memory, signs a certificate
and records it in the ledger (superseding the live one with ``reissue``),
:meth:`Issuer.credentials` gives the partitions' contents and
:meth:`Issuer.record` what became of the write. The key is never stored;
:meth:`Issuer.escrow` writes it encrypted when asked.

Writing boards with an issuer is the layers' above: ``board.write(issuer)``
and ``atflash.run_batch(ports, issuer)`` (:mod:`atflash.api`), and
``atflash write --issue`` (:mod:`atflash.run.runner`).
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from atflash.content.certs import load_certificate
from atflash.content.keys import load_private_key
from atflash.content.pairing import public_key_der
from atflash.errors import AtflashError, InputError
from atflash.files import Blob
from atflash.issue.ca import CA, open_ca
from atflash.issue.certs import (
    Fields,
    Leaf,
    build_crl,
    check_templates,
    fingerprint,
    issue_leaf,
    issued_by,
    public_key_sha256,
)
from atflash.issue.config import IssuerConfig, load_issuer_config
from atflash.issue.store import IssuedRecord, IssuedStore
from atflash.output import write_private
from atflash.planning.manifest import normalize_mac

ESCROW_PASSPHRASE_ENV = "ATFLASH_ESCROW_PASSPHRASE"


@dataclass(frozen=True)
class Kept:
    """A certificate the board already holds, valid and of this issuer, with its key's bytes."""

    certificate: x509.Certificate
    cert_bytes: bytes = field(repr=False)
    key_bytes: bytes = field(repr=False)

    @property
    def serial(self) -> str:
        return f"{self.certificate.serial_number:x}"


class Issuer:
    """An opened issuer; use in a ``with`` block (or :meth:`close`): it holds the CA key or a
    token session, and the ledger's connection."""

    def __init__(self, config: IssuerConfig, ca: CA, store: IssuedStore, station: str) -> None:
        self.config, self.ca, self.store, self.station = config, ca, store, station

    @classmethod
    def open(
        cls,
        issuer: str | os.PathLike[str] | IssuerConfig,
        *,
        station: str | None = None,
        ledger: str | None = None,
        issuing: bool = True,
    ) -> Issuer:
        """Load and check the issuer; every refusal comes here, before any board.

        ``issuing=False`` (for a CRL) does not refuse a CA that ends before a new leaf would.
        """
        from atflash.factory.resolve import default_station

        config = issuer if isinstance(issuer, IssuerConfig) else load_issuer_config(Path(issuer))
        who = (station or default_station()).strip() or default_station()
        check_templates(config, station=who)
        ca = open_ca(config, leaf_days=None if issuing else 0)
        try:
            store = IssuedStore(ledger or config.ledger_url)
        except BaseException:
            ca.close()
            raise
        return cls(config, ca, store, who)

    def close(self) -> None:
        self.ca.close()
        self.store.close()

    def __enter__(self) -> Issuer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- which partitions ------------------------------------------------------------

    @property
    def partitions(self) -> tuple[str, ...]:
        """Every partition this issuer fills: ``<kind>_cert``, ``<kind>_key`` (and ``<kind>_ca``)."""
        suffixes = ("cert", "key", "ca") if self.config.write_ca else ("cert", "key")
        return tuple(f"{kind}_{s}" for kind in self.config.fills for s in suffixes)

    @property
    def reads(self) -> tuple[str, ...]:
        """What a rerun reads back from a board to see whether it already holds its certificate."""
        kind = self.config.fills[0]
        return (f"{kind}_cert", f"{kind}_key")

    # -- per device ----------------------------------------------------------------

    def held(self, mac: str, items: Mapping[str, Sequence[bytes]] | None) -> Kept | None:
        """The board's certificate if it is valid, of this issuer, for ``mac``, with its key."""
        if not items:
            return None
        cert_name, key_name = self.reads
        certs, keys = items.get(cert_name) or (), items.get(key_name) or ()
        if not certs or not keys:
            return None
        try:
            cert = load_certificate(certs[0], source="board")
            key = load_private_key(keys[0], source="board")
        except AtflashError:
            return None
        now = datetime.datetime.now(datetime.timezone.utc)
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            return None
        if not issued_by(cert, self.ca):
            return None
        subject = cert.subject.rfc4514_string().lower()
        if mac not in subject and mac.replace(":", "") not in subject:
            return None
        if public_key_der(key) != public_key_der(cert):
            return None
        serial = f"{cert.serial_number:x}"
        if any(r.serial == serial and not r.live for r in self.store.records(device=mac)):
            return None  # superseded: a rerun must not keep it
        return Kept(cert, bytes(certs[0]), bytes(keys[0]))

    def issue(self, mac: str, *, chip: str | None = None, reissue: bool = False) -> Leaf:
        """A new key and certificate for ``mac``, recorded in the ledger before it is written.

        Without ``reissue``, a device whose live certificate (in the ledger)
        the board does not hold is refused; with it, that one is superseded.
        """
        device = normalize_mac(mac)
        if device is None:
            raise InputError(f"{mac!r} is not a MAC address", hint="give e.g. 24:0a:c4:00:00:01")
        fields = Fields(device, chip or "", self.station, self.config.set_name or "")
        leaf = issue_leaf(self.config, self.ca, fields)
        cert = leaf.certificate
        self.store.insert(
            {
                "issuer": self.ca.fingerprint,
                "serial": leaf.serial,
                "device": device,
                "subject": cert.subject.rfc4514_string(),
                "sha256": fingerprint(cert),
                "public_key_sha256": public_key_sha256(cert),
                "not_before": cert.not_valid_before_utc.isoformat(),
                "not_after": cert.not_valid_after_utc.isoformat(),
                "station": self.station,
                "certificate": leaf.cert_pem.decode(),
            },
            supersede=reissue,
        )
        return leaf

    def credentials(self, leaf: Leaf | Kept) -> dict[str, list[Blob]]:
        """Each partition's items for this device, as bytes named for messages (never shown)."""
        if isinstance(leaf, Leaf):
            cert, key, label = leaf.cert_pem, leaf.key_pem(), f"issued {leaf.serial}"
        else:
            cert, key, label = leaf.cert_bytes, leaf.key_bytes, f"kept {leaf.serial}"
        out: dict[str, list[Blob]] = {}
        for kind in self.config.fills:
            out[f"{kind}_cert"] = [Blob(f"<{label} certificate>", cert)]
            out[f"{kind}_key"] = [Blob(f"<{label} key>", key)]
            if self.config.write_ca:
                out[f"{kind}_ca"] = [Blob(f"<CA {self.ca.name}>", self.ca.pem())]
        return out

    def record(self, serial: str | Sequence[str], *, ok: bool) -> None:
        """The write of ``serial`` (or of several) ended; a failed one is superseded (it is in
        the CRL)."""
        self.store.set_result(serial, ok)

    def records(self) -> list[IssuedRecord]:
        """Every certificate this issuer's CA issued, as the ledger holds them."""
        return self.store.records(issuer=self.ca.fingerprint)

    def escrow(self, leaf: Leaf, directory: str | os.PathLike[str], mac: str) -> Path:
        """Write the key encrypted (PKCS#8, passphrase from the environment), mode 0600."""
        passphrase = escrow_passphrase()
        path = Path(directory) / f"{mac.replace(':', '')}-{leaf.serial}.key"
        write_private(path, leaf.escrow_pem(passphrase))
        return path

    def crl(self, *, days: int = 30) -> bytes:
        """A CRL (PEM) of every superseded serial of this CA, signed with the CA key."""
        revoked = [
            (int(r.serial, 16), datetime.datetime.fromisoformat(r.superseded_at))
            for r in self.records()
            if r.superseded_at is not None
        ]
        crl = build_crl(self.ca, revoked, days=days, number=time.time_ns() // 1000)
        return crl.public_bytes(serialization.Encoding.PEM)


def check_issuer(config: IssuerConfig, *, station: str | None = None) -> dict[str, str]:
    """Everything ``write --issue`` checks before a board, but the ledger: for ``atflash check``.

    Returns public facts: the CA's subject and validity, where its key is, the template.
    """
    from atflash.factory.resolve import default_station

    check_templates(config, station=station or default_station())
    ca = open_ca(config)
    try:
        return {
            "ca": ca.name,
            "ca_not_after": ca.certificate.not_valid_after_utc.isoformat(),
            "ca_key": "PKCS#11 token" if config.hsm else "PEM file",
            "subject": config.subject,
            "key_type": config.key_type,
            "fills": ", ".join(config.fills),
            "ledger": config.ledger_url,
        }
    finally:
        ca.close()


def escrow_passphrase() -> bytes:
    """The escrow passphrase from ``$ATFLASH_ESCROW_PASSPHRASE``; refused when unset or short."""
    value = os.environ.get(ESCROW_PASSPHRASE_ENV, "")
    if len(value) < 8:
        raise InputError(
            f"--escrow needs a passphrase of 8 characters or more in ${ESCROW_PASSPHRASE_ENV}",
            hint=f"export {ESCROW_PASSPHRASE_ENV}=... (it is never shown)",
        )
    return value.encode()


def check_escrow_dir(directory: str | os.PathLike[str]) -> None:
    """The escrow folder exists and is writable, and the passphrase is set: before any board."""
    escrow_passphrase()
    path = Path(directory)
    if not path.is_dir() or not os.access(path, os.W_OK):
        raise InputError(f"--escrow {path}: not a writable folder", hint="create it (mode 0700)")
