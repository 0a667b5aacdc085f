"""Device certificates and CRLs, built with cryptography and signed by a :class:`~.ca.Signer`.

cryptography signs only with a key it holds. For a key in an HSM, the
to-be-signed part is made by cryptography (signed once with a throwaway key
of the CA's kind, which fixes the signature algorithm field), the token
signs those bytes, and the DER is assembled here: ``SEQUENCE { tbs,
algorithm, BIT STRING signature }``, the shape RFC 5280 gives both
certificates and CRLs.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from atflash.issue.ca import CA, Signer
from atflash.issue.config import (
    KEY_TYPES,
    MAX_RDN_CHARS,
    IssuerConfig,
    IssuerError,
    parse_subject,
    san_kind,
)

SERIAL_BITS = 159  # RFC 5280: at most 20 octets, positive; CA/B forum: at least 64 random bits
_ATTRIBUTE_OIDS = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
}
_EKU_OIDS = {
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
}
# The longest chip name a template may be filled with (for the 64-character check).
_LONGEST_CHIP = "esp32c61"


@dataclass(frozen=True)
class Fields:
    """What a subject or SAN template is filled with for one device."""

    mac: str  # lower-case, colon-separated
    chip: str = ""
    station: str = ""
    set_name: str = ""

    def values(self) -> dict[str, str]:
        return {
            "mac": self.mac,
            "mac_hex": self.mac.replace(":", ""),
            "chip": self.chip,
            "station": self.station,
            "set": self.set_name,
        }


@dataclass(frozen=True)
class Leaf:
    """A device's new certificate and its key (kept out of every repr)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = field(repr=False)

    @property
    def serial(self) -> str:
        return f"{self.certificate.serial_number:x}"

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The key as unencrypted PKCS#8 PEM: what the board's ``*_key`` gets."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def escrow_pem(self, passphrase: bytes) -> bytes:
        """The key as encrypted PKCS#8 PEM (best available encryption)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )


def subject_of(config: IssuerConfig, fields: Fields) -> x509.Name:
    """The subject for one device; an RDN over 64 characters or a bad value is refused."""
    values = fields.values()
    attributes = []
    for name, template in parse_subject(config.subject, config.source):
        value = template.format(**values)
        if len(value) > MAX_RDN_CHARS:
            raise IssuerError(
                config.source,
                f"subject {name}={value!r} is {len(value)} characters, over the {MAX_RDN_CHARS} an RDN may hold",
                hint="shorten the subject template",
            )
        if not value:
            raise IssuerError(config.source, f"subject {name} is empty for {fields.mac}")
        try:
            attributes.append(x509.NameAttribute(_ATTRIBUTE_OIDS[name], value))
        except ValueError as exc:
            raise IssuerError(config.source, f"subject {name}={value!r}: {exc}") from None
    return x509.Name(attributes)


def sans_of(config: IssuerConfig, fields: Fields) -> list[x509.GeneralName]:
    import ipaddress

    names: list[x509.GeneralName] = []
    for entry in config.san:
        kind, template = san_kind(entry, config.source)
        value = template.format(**fields.values())
        try:
            if kind == "DNS":
                names.append(x509.DNSName(value))
            elif kind == "URI":
                names.append(x509.UniformResourceIdentifier(value))
            elif kind == "email":
                names.append(x509.RFC822Name(value))
            else:
                names.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError as exc:
            raise IssuerError(config.source, f"san {entry!r} gives {value!r}: {exc}") from None
    return names


def check_templates(config: IssuerConfig, *, station: str) -> None:
    """Fill the templates for the longest device values: a refusal here comes before any board."""
    sample = Fields("ff:ff:ff:ff:ff:ff", _LONGEST_CHIP, station, config.set_name or "")
    subject_of(config, sample)
    sans_of(config, sample)


def new_key(key_type: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    kind, size = KEY_TYPES[key_type]
    if kind == "ec":
        curve = ec.SECP384R1() if size == "secp384r1" else ec.SECP256R1()
        return ec.generate_private_key(curve)
    return rsa.generate_private_key(public_exponent=65537, key_size=int(str(size)))


def random_serial() -> int:
    """159 random bits, never zero (a positive INTEGER of at most 20 octets)."""
    return secrets.randbits(SERIAL_BITS) or 1


def issue_leaf(
    config: IssuerConfig,
    ca: CA,
    fields: Fields,
    *,
    serial: int | None = None,
    now: datetime.datetime | None = None,
) -> Leaf:
    """A new key and its certificate for one device, signed by the CA."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    key = new_key(config.key_type)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_of(config, fields))
        .issuer_name(ca.certificate.subject)
        .public_key(public)
        .serial_number(serial or random_serial())
        .not_valid_before(now - datetime.timedelta(hours=config.backdate_hours))
        .not_valid_after(now + datetime.timedelta(days=config.validity_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(config.usages), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(_authority_key_id(ca.certificate), critical=False)
    )
    if config.extended_key_usage:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([_EKU_OIDS[n] for n in config.extended_key_usage]),
            critical=False,
        )
    sans = sans_of(config, fields)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Leaf(sign_certificate(builder, ca.signer), key)


def _key_usage(names: Sequence[str]) -> x509.KeyUsage:
    flags = {
        name: name in names
        for name in (
            "digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment",
            "keyAgreement",
        )
    }  # fmt: skip
    return x509.KeyUsage(
        digital_signature=flags["digitalSignature"],
        content_commitment=flags["contentCommitment"],
        key_encipherment=flags["keyEncipherment"],
        data_encipherment=flags["dataEncipherment"],
        key_agreement=flags["keyAgreement"],
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]


# -- signing ------------------------------------------------------------------------


@functools.cache
def _throwaway(kind: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A key of the CA's kind: signing with it fixes the algorithm field of the to-be-signed part."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def sign_certificate(builder: x509.CertificateBuilder, signer: Signer) -> x509.Certificate:
    if signer.key is not None:
        return builder.sign(signer.key, hashes.SHA256())
    draft = builder.sign(_throwaway(signer.kind), hashes.SHA256())
    der = assemble(
        draft.public_bytes(serialization.Encoding.DER), draft.tbs_certificate_bytes, signer
    )
    return x509.load_der_x509_certificate(der)


def sign_crl(
    builder: x509.CertificateRevocationListBuilder, signer: Signer
) -> x509.CertificateRevocationList:
    if signer.key is not None:
        return builder.sign(signer.key, hashes.SHA256())
    draft = builder.sign(_throwaway(signer.kind), hashes.SHA256())
    der = assemble(draft.public_bytes(serialization.Encoding.DER), draft.tbs_certlist_bytes, signer)
    return x509.load_der_x509_crl(der)


def assemble(draft: bytes, tbs: bytes, signer: Signer) -> bytes:
    """``draft`` (signed by the throwaway key) with the CA's signature over ``tbs`` instead."""
    body_start = _header_length(draft, 0)
    if draft[body_start : body_start + len(tbs)] != tbs:
        raise ValueError("the draft does not start with its to-be-signed part")
    algorithm_start = body_start + len(tbs)
    algorithm_end = (
        algorithm_start + _header_length(draft, algorithm_start) + _length(draft, algorithm_start)
    )
    algorithm = draft[algorithm_start:algorithm_end]
    signature = signer.sign(tbs)
    bit_string = _tlv(0x03, b"\x00" + signature)
    return _tlv(0x30, tbs + algorithm + bit_string)


def _header_length(der: bytes, at: int) -> int:
    first = der[at + 1]
    return 2 if first < 0x80 else 2 + (first & 0x7F)


def _length(der: bytes, at: int) -> int:
    first = der[at + 1]
    if first < 0x80:
        return first
    count = first & 0x7F
    return int.from_bytes(der[at + 2 : at + 2 + count], "big")


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


# -- what a board holds ----------------------------------------------------------------


def issued_by(cert: x509.Certificate, ca: CA) -> bool:
    """Whether ``ca`` signed ``cert`` (its issuer name and signature)."""
    if cert.issuer != ca.certificate.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, Exception):  # InvalidSignature and friends
        return False
    return True


def public_key_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def build_crl(
    ca: CA,
    revoked: Sequence[tuple[int, datetime.datetime]],
    *,
    days: int,
    number: int,
    now: datetime.datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL listing ``(serial, when)`` as superseded, signed by the CA."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=days))
        .add_extension(_authority_key_id(ca.certificate), critical=False)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(when)
            .add_extension(x509.CRLReason(x509.ReasonFlags.superseded), critical=False)
            .build()
        )
    return sign_crl(builder, ca.signer)
