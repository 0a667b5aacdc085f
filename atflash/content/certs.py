"""Certificate files: every certificate in a PEM file, or the one in a DER file.

Every problem becomes a one-line :class:`~atflash.errors.ContentError` that
names the file and says what to do; a certificate file that carries a private key
along is refused without showing the key (see :mod:`atflash.content.keys`).
"""

from __future__ import annotations

from cryptography import x509

from atflash.content import keys, pem
from atflash.errors import ContentError

_CERT_FORM_HINT = "give the certificate in PEM (-----BEGIN CERTIFICATE-----) or DER form"


def load_certificates(data: bytes, *, source: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (in file order), or the one in a DER file.

    Text before, between and after PEM blocks is ignored, so the output of
    ``openssl x509 -text`` works. Raises :class:`ContentError` when there is
    no certificate or one of the certificate blocks cannot be decoded.
    """
    if not data:
        raise ContentError(source, "the file is empty", hint=_CERT_FORM_HINT)
    blocks = pem.blocks(data)
    if not blocks:
        return [_load_der_certificate(data, source=source)]
    cert_blocks = [b for b in blocks if b.label == pem.CERT_LABEL]
    if not cert_blocks:
        raise _not_a_certificate(source, pem.holds(blocks))
    return [load_pem_certificate(block, source=source) for block in cert_blocks]


def load_certificate(data: bytes, *, source: str) -> x509.Certificate:
    """The first certificate in ``data`` (PEM, with any text around it, or DER).

    Raises :class:`ContentError` for an empty file, a file without a
    certificate (a key, say), a damaged PEM block or binary junk.
    """
    return load_certificates(data, source=source)[0]


def _not_a_certificate(source: str, holds: str | None) -> ContentError:
    if holds == "a private key":
        return ContentError(
            source,
            "holds a private key, not a certificate",
            hint="give the certificate here and the key to the key partition",
        )
    if holds is not None:
        return ContentError(source, f"holds {holds}, not a certificate", hint=_CERT_FORM_HINT)
    return ContentError(source, "has no -----BEGIN CERTIFICATE----- block", hint=_CERT_FORM_HINT)


def load_pem_certificate(block: pem.Block, *, source: str) -> x509.Certificate:
    """The certificate in one ``CERTIFICATE`` block; :class:`ContentError` if truncated or damaged."""
    if block.text is None:
        raise ContentError(
            source,
            "the certificate is truncated (no -----END CERTIFICATE----- line)",
            hint="copy the whole certificate file again",
        )
    try:
        return x509.load_pem_x509_certificate(block.text)
    except keys.PARSE_ERRORS:
        raise ContentError(
            source,
            "the certificate block is damaged and cannot be decoded",
            hint="export the certificate again, e.g. openssl x509 -in CERT -out CERT.pem",
        ) from None


def _load_der_certificate(data: bytes, *, source: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except keys.PARSE_ERRORS:
        pass
    if keys.der_private_key_state(data) is not None:
        raise _not_a_certificate(source, "a private key") from None
    if keys.embedded_der_key(data):
        raise keys.bundle_error(source) from None
    if pem.looks_like_text(data):
        raise ContentError(
            source, "holds text with no -----BEGIN CERTIFICATE----- block", hint=_CERT_FORM_HINT
        )
    raise ContentError(source, "is neither a PEM nor a DER certificate", hint=_CERT_FORM_HINT)
