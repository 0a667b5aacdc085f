"""Certificates, key files and credential pools made on the spot for tests and benches.

:func:`certificate` is the one certificate builder: self-signed by default,
CA-signed with ``issuer``/``issuer_key``, or signed some other way (through a
token) with ``sign``. Its keywords are what the tests and benches really vary:
names, serial, validity, BasicConstraints, key usage, the SKI and extra
extensions. :func:`key_bytes` writes a private key; :func:`write_pool` a
folder pool of credential sets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import NameOID

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
PKCS8 = serialization.PrivateFormat.PKCS8
PLAIN = serialization.NoEncryption()

# What a CA key may do: sign certificates and CRLs, nothing else.
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)

# The private keys that can sign a certificate. A certificate is made for
# one (the subject's own, which signs when nothing else does) or, given
# ``issuer_key`` or ``sign``, for a public key alone.
PRIVATE_KEYS = (
    rsa.RSAPrivateKey,
    dsa.DSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def certificate(
    key: CertificateIssuerPrivateKeyTypes | CertificatePublicKeyTypes,
    *,
    common_name: str = "device",
    attributes: Sequence[x509.NameAttribute] = (),
    issuer: x509.Name | None = None,
    issuer_key: CertificateIssuerPrivateKeyTypes | None = None,
    serial: int | None = 1,
    not_before: datetime | None = None,
    days: float = 365,
    not_after: datetime | None = None,
    ca: bool | None = None,
    path_length: int | None = None,
    key_usage: x509.KeyUsage | None = None,
    subject_key_identifier: bool = False,
    extensions: Sequence[x509.ExtensionType] = (),
    sign: Callable[[x509.CertificateBuilder], x509.Certificate] | None = None,
) -> x509.Certificate:
    """A certificate for ``key`` named ``CN=common_name`` plus ``attributes``.

    Issued by ``issuer`` (default: its own subject, so self-named) and signed
    by ``issuer_key`` (default: ``key`` itself); ``sign`` replaces that
    signing step altogether (a token's key). EdDSA keys sign with no separate
    hash, the others with SHA-256.

    ``serial`` None draws a random serial. Valid from ``not_before``
    (default: a day ago) until ``not_after`` (default: ``days`` later).
    ``ca`` None leaves BasicConstraints out; otherwise it is critical, with
    ``path_length``. ``key_usage`` is critical; the SKI and ``extensions``
    (a SubjectAlternativeName, say) are not.
    """
    private = key if isinstance(key, PRIVATE_KEYS) else None
    public = private.public_key() if private is not None else key
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name), *attributes])
    start = not_before if not_before is not None else datetime.now(timezone.utc) - timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer if issuer is not None else subject)
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after if not_after is not None else start + timedelta(days=days))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_length), critical=True)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if subject_key_identifier:
        ski = x509.SubjectKeyIdentifier.from_public_key(public)  # type: ignore[arg-type]
        builder = builder.add_extension(ski, critical=False)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    if sign is not None:
        return sign(builder)
    signer = issuer_key if issuer_key is not None else private
    assert signer is not None, "a public key needs issuer_key or sign"
    eddsa = isinstance(signer, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
    return builder.sign(signer, None if eddsa else hashes.SHA256())


def key_bytes(
    key: PrivateKeyTypes,
    encoding: serialization.Encoding = PEM,
    fmt: serialization.PrivateFormat = PKCS8,
    encryption: serialization.KeySerializationEncryption = PLAIN,
) -> bytes:
    """``key`` as a key file: PKCS#8 PEM, unencrypted, unless told otherwise."""
    return key.private_bytes(encoding, fmt, encryption)


def write_pool(
    root: Path,
    count: int,
    *,
    ca_name: str,
    device_name: Callable[[int], str],
    ca_signs: bool,
    start: datetime = datetime(2024, 1, 1, tzinfo=timezone.utc),
    days: int = 3650,
) -> None:
    """``root/0001 ... root/NNNN``: each set its own EC P-256 key and certificate, plus one CA.

    The CA (serial 1) is in every set as client_ca.crt; set ``n``'s
    certificate has serial ``n + 1`` and is signed by the CA when
    ``ca_signs``, else by its own key. All valid from ``start`` for ``days``.
    """
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(ca_key, common_name=ca_name, not_before=start, days=days)
    ca_pem = ca.public_bytes(PEM)
    width = max(4, len(str(count)))
    for n in range(1, count + 1):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(
            key,
            common_name=device_name(n),
            issuer=ca.subject if ca_signs else None,
            issuer_key=ca_key if ca_signs else None,
            serial=n + 1,
            not_before=start,
            days=days,
        )
        folder = root / f"{n:0{width}d}"
        folder.mkdir(parents=True)
        (folder / "client_cert.crt").write_bytes(cert.public_bytes(PEM))
        (folder / "client_key.key").write_bytes(key_bytes(key))
        (folder / "client_ca.crt").write_bytes(ca_pem)
