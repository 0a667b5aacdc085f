"""The CA an issuer signs with: its certificate and chain, and a signer for its key.

The key lives in a PEM file (plain or encrypted; refused when group- or
world-readable, as ssh refuses a private key) or in a PKCS#11 token named by
an RFC 7512 URI (``pkcs11:token=line;object=ca``), reached through
python-pkcs11 (the ``hsm`` extra). Either way the CA is checked when it is
opened, before any board: the certificate is a CA and valid now, and the key
pairs with it (a challenge signed with the key verifies with the
certificate's public key). The PIN or passphrase comes from an environment
variable or a file, is never echoed, and never appears in a message.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from atflash.content.certs import load_certificates
from atflash.content.keys import is_encrypted_key
from atflash.errors import AtflashError, one_line
from atflash.issue.config import IssuerConfig, IssuerError

MAX_KEY_FILE = 64 * 1024


@dataclass
class Signer:
    """Signs SHA-256 digests of data with the CA key, as X.509 wants the signature.

    ``key`` is the private key when cryptography holds it (a file); an HSM
    signer has ``sign_data`` instead. ``kind`` is ``ec`` or ``rsa``.
    """

    name: str  # the key file or the URI, for messages
    kind: str
    key: Any = field(default=None, repr=False)
    sign_data: Callable[[bytes], bytes] | None = field(default=None, repr=False)
    close: Callable[[], None] = lambda: None

    def sign(self, data: bytes) -> bytes:
        if self.sign_data is not None:
            return self.sign_data(data)
        if self.kind == "ec":
            return bytes(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
        return bytes(self.key.sign(data, padding.PKCS1v15(), hashes.SHA256()))


@dataclass
class CA:
    """An opened CA: certificate, chain (above it) and signer."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    signer: Signer
    source: str

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate (hex): how the ledger names the issuer."""
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    @property
    def name(self) -> str:
        return self.certificate.subject.rfc4514_string()

    def pem(self) -> bytes:
        """The CA certificate and its chain, PEM: what goes into ``client_ca``."""
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (self.certificate, *self.chain)
        )

    def close(self) -> None:
        self.signer.close()


def open_ca(config: IssuerConfig, *, leaf_days: int | None = None) -> CA:
    """Load and check the CA; every refusal is one line, and nothing is touched yet."""
    certs = _load_certs(config)
    certificate, chain = certs[0], tuple(certs[1:])
    _check_validity(
        config, certificate, leaf_days if leaf_days is not None else config.validity_days
    )
    signer = _pkcs11_signer(config) if config.hsm else _file_signer(config)
    try:
        _check_pair(config, certificate, signer)
    except BaseException:
        signer.close()
        raise
    return CA(certificate, chain, signer, config.source)


def _load_certs(config: IssuerConfig) -> list[x509.Certificate]:
    paths = [config.ca_cert, *config.chain]
    certs: list[x509.Certificate] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IssuerError(
                config.source, f"ca_cert {path}: cannot read ({exc.strerror})"
            ) from None
        certs += load_certificates(data, source=str(path))
    constraints = _basic_constraints(certs[0])
    if constraints is None or not constraints.ca:
        raise IssuerError(
            config.source, f"ca_cert {config.ca_cert} is not a CA certificate (no CA:TRUE)",
            hint="name the certificate of the CA that signs the devices",
        )  # fmt: skip
    return certs


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _check_validity(config: IssuerConfig, cert: x509.Certificate, leaf_days: int) -> None:
    now = datetime.now(timezone.utc)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if end <= now:
        raise IssuerError(
            config.source, f"the CA certificate expired on {end:%Y-%m-%d}",
            hint="renew the CA certificate",
        )  # fmt: skip
    if start > now:
        raise IssuerError(config.source, f"the CA certificate is not valid before {start:%Y-%m-%d}")
    leaf_end = now.timestamp() + leaf_days * 86400
    if leaf_end > end.timestamp():
        left = int((end - now).total_seconds() // 86400)
        raise IssuerError(
            config.source,
            f"the CA certificate ends on {end:%Y-%m-%d}, before a leaf valid for {leaf_days} days would",
            hint=f"set validity_days to at most {left}, or renew the CA",
        )


def _check_private(path: Path, what: str, source: str) -> None:
    """Refuse a secret file that others can read, as ssh does (POSIX modes only)."""
    if sys.platform == "win32":  # pragma: no cover - no POSIX modes
        return
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise IssuerError(source, f"{what} {path}: cannot read ({exc.strerror})") from None
    if stat.S_IMODE(mode) & 0o077:
        raise IssuerError(
            source,
            f"{what} {path} is readable by others (mode {stat.S_IMODE(mode):04o})",
            hint=f"chmod 600 {path}",
        )


def read_pin(config: IssuerConfig, *, what: str) -> bytes | None:
    """The PIN (or passphrase) from pin_env or pin_file; None if neither is set."""
    if config.pin_env:
        value = os.environ.get(config.pin_env)
        if not value:
            raise IssuerError(
                config.source, f"the {what} is to come from ${config.pin_env}, which is not set",
                hint=f"export {config.pin_env}=... (it is never shown)",
            )  # fmt: skip
        return value.encode()
    if config.pin_file:
        _check_private(config.pin_file, "pin_file", config.source)
        try:
            return config.pin_file.read_bytes().strip()
        except OSError as exc:
            raise IssuerError(config.source, f"pin_file: cannot read ({exc.strerror})") from None
    return None


def _file_signer(config: IssuerConfig) -> Signer:
    path = Path(config.ca_key)
    _check_private(path, "ca_key", config.source)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise IssuerError(config.source, f"ca_key {path}: cannot read ({exc.strerror})") from None
    password = read_pin(config, what="CA key's passphrase") if is_encrypted_key(data) else None
    if is_encrypted_key(data) and password is None:
        raise IssuerError(
            config.source, f"ca_key {path} is encrypted",
            hint="give its passphrase through pin_env or pin_file",
        )  # fmt: skip
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError):
        why = "wrong passphrase, or not a PEM private key" if password else "not a PEM private key"
        raise IssuerError(config.source, f"ca_key {path}: {why}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return Signer(str(path), "ec", key=key)
    if isinstance(key, rsa.RSAPrivateKey):
        return Signer(str(path), "rsa", key=key)
    raise IssuerError(config.source, f"ca_key {path}: only EC and RSA CA keys are supported")


def _check_pair(config: IssuerConfig, cert: x509.Certificate, signer: Signer) -> None:
    challenge = b"atflash CA pairing check " + os.urandom(16)
    signature = signer.sign(challenge)
    public = cert.public_key()
    try:
        if isinstance(public, ec.EllipticCurvePublicKey) and signer.kind == "ec":
            public.verify(signature, challenge, ec.ECDSA(hashes.SHA256()))
            return
        if isinstance(public, rsa.RSAPublicKey) and signer.kind == "rsa":
            public.verify(signature, challenge, padding.PKCS1v15(), hashes.SHA256())
            return
    except InvalidSignature:
        pass
    raise IssuerError(
        config.source,
        f"the CA certificate {config.ca_cert} and the CA key {signer.name} do not pair",
        hint="name the key the CA certificate was made for",
    )


# -- PKCS#11 -----------------------------------------------------------------------


def parse_pkcs11_uri(uri: str, source: str) -> dict[str, str]:
    """The path attributes of an RFC 7512 URI (``token``, ``object``, ``id``, ...), decoded.

    A PIN inside the URI (``pin-value``) is refused: it would end up in
    files, shell history and messages.
    """
    body = uri[len("pkcs11:") :]
    path, _sep, query = body.partition("?")
    attributes: dict[str, str] = {}
    for part in [p for p in path.split(";") if p]:
        name, sep, value = part.partition("=")
        if not sep:
            raise IssuerError(source, f"ca_key: {part!r} in the pkcs11: URI is not name=value")
        attributes[name] = unquote(value)
    for part in [p for p in query.split("&") if p]:
        name, _sep, _value = part.partition("=")
        if name == "pin-value":
            raise IssuerError(
                source, "ca_key: a PIN in the pkcs11: URI is refused",
                hint="give it through pin_env or pin_file",
            )  # fmt: skip
    if "token" not in attributes or not ("object" in attributes or "id" in attributes):
        raise IssuerError(
            source, "ca_key: the pkcs11: URI needs token= and object= (or id=)",
            hint="e.g. pkcs11:token=line;object=ca",
        )  # fmt: skip
    return attributes


def _pkcs11_signer(config: IssuerConfig) -> Signer:
    try:
        import pkcs11
        from pkcs11 import KeyType, Mechanism, ObjectClass
        from pkcs11 import exceptions as p11
    except ImportError:
        raise IssuerError(
            config.source, "a pkcs11: CA key needs python-pkcs11, which is not installed",
            hint="pip install 'atflash[hsm]'",
        ) from None  # fmt: skip
    uri = parse_pkcs11_uri(config.ca_key, config.source)
    pin = read_pin(config, what="PKCS#11 PIN")
    if pin is None:
        raise IssuerError(
            config.source, "no PIN for the PKCS#11 token", hint="set pin_env or pin_file"
        )
    module = str(config.pkcs11_module)
    if not Path(module).is_file():
        raise IssuerError(config.source, f"pkcs11_module {module}: no such file")
    where = f"token {uri['token']!r}"
    try:
        lib = pkcs11.lib(module)
    except Exception as exc:  # the library's loader: any failure is the module's
        raise IssuerError(
            config.source, f"pkcs11_module {module}: cannot load ({one_line(exc)})"
        ) from None
    try:
        token = lib.get_token(token_label=uri["token"])
    except p11.NoSuchToken:
        raise IssuerError(
            config.source, f"no PKCS#11 {where} in {module}",
            hint="check the token's label (softhsm2-util --show-slots)",
        ) from None  # fmt: skip
    except p11.MultipleTokensReturned:
        raise IssuerError(
            config.source, f"several PKCS#11 tokens are labelled {uri['token']!r}"
        ) from None
    try:
        session = token.open(user_pin=pin.decode())
    except p11.PinIncorrect:
        raise IssuerError(config.source, f"wrong PIN for PKCS#11 {where}") from None
    except p11.PinLocked:
        raise IssuerError(config.source, f"the PIN of PKCS#11 {where} is locked") from None
    except p11.PKCS11Error as exc:
        raise IssuerError(
            config.source, f"cannot log in to PKCS#11 {where} ({type(exc).__name__})"
        ) from None
    query: dict[str, Any] = {"object_class": ObjectClass.PRIVATE_KEY}
    if "object" in uri:
        query["label"] = uri["object"]
    if "id" in uri:
        query["id"] = uri["id"].encode("latin-1")
    try:
        key = session.get_key(**query)
    except p11.NoSuchKey:
        session.close()
        what = uri.get("object") or uri.get("id")
        raise IssuerError(
            config.source, f"no private key object {what!r} in PKCS#11 {where}",
            hint="check object= in ca_key (p11tool or pkcs11-tool --list-objects)",
        ) from None  # fmt: skip
    except p11.MultipleObjectsReturned:
        session.close()
        raise IssuerError(config.source, f"several private keys match {config.ca_key}") from None
    if key.key_type == KeyType.EC:
        kind = "ec"
    elif key.key_type == KeyType.RSA:
        kind = "rsa"
    else:
        session.close()
        raise IssuerError(config.source, f"{config.ca_key}: only EC and RSA CA keys are supported")

    def sign_data(data: bytes) -> bytes:
        try:
            if kind == "ec":
                raw = key.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA)  # type: ignore[attr-defined]
                half = len(raw) // 2
                r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
                return bytes(utils.encode_dss_signature(r, s))
            return bytes(key.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS))  # type: ignore[attr-defined]
        except p11.PKCS11Error as exc:
            raise HsmError(
                config.source, f"the token refused to sign ({type(exc).__name__})"
            ) from None

    return Signer(config.ca_key, kind, sign_data=sign_data, close=session.close)


class HsmError(AtflashError):
    """The HSM failed while signing (after it was opened and checked)."""

    exit_code = 3

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
