"""Make the demo credentials in this folder: a CA and a client certificate and key.

They exist so that a newcomer can run the whole job against a mock board
(see the README). Demo only: the private key is public. Run again to
replace them:  python examples/make_credentials.py
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).parent
VALIDITY = datetime.timedelta(days=20 * 365)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "atflash demo"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])  # fmt: skip


def main() -> None:
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("atflash demo CA"))
        .issuer_name(_name("atflash demo CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (
        x509.CertificateBuilder()
        .subject_name(_name("atflash demo device"))
        .issuer_name(ca.subject)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (HERE / "ca.crt").write_bytes(ca.public_bytes(pem))
    (HERE / "client.crt").write_bytes(client.public_bytes(pem))
    (HERE / "client.key").write_bytes(
        client_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    print(f"wrote {HERE / 'ca.crt'}, {HERE / 'client.crt'}, {HERE / 'client.key'}")


if __name__ == "__main__":
    main()
