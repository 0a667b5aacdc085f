"""A SoftHSM2 token: initialised in a temp folder, a CA key made inside it.

Used by the issuing tests and by bench/issue_bench.py.

SoftHSM reads its configuration (SOFTHSM2_CONF) once per process, when the
PKCS#11 library is first initialised, so one token serves a whole test
process (a session fixture), whatever tests use it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import utils

from tools.issuing import ca_certificate

MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
TOKEN = "atflash-test"
PIN = "123456"
SO_PIN = "654321"
OBJECT = "ca"


@dataclass(frozen=True)
class SoftHsm:
    module: str
    token: str
    pin: str
    object: str
    ca_cert_pem: bytes


def find_module() -> str | None:
    return next((m for m in MODULES if Path(m).is_file()), None)


def start(folder: Path) -> SoftHsm:
    """Initialise a token in ``folder``, make an EC P-256 CA key in it and its CA certificate."""
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

    module = find_module()
    assert module is not None and shutil.which("softhsm2-util")
    tokens = folder / "tokens"
    tokens.mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", SO_PIN],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    lib = pkcs11.lib(module)
    token = lib.get_token(token_label=TOKEN)
    with token.open(rw=True, user_pin=PIN) as session:
        params = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        public, private = params.generate_keypair(store=True, label=OBJECT)
        spki = encode_ec_public_key(public)
        ca_public = serialization.load_der_public_key(spki)

        def sign(data: bytes) -> bytes:
            raw = private.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA)  # type: ignore[attr-defined]
            half = len(raw) // 2
            return utils.encode_dss_signature(
                int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
            )

        pem = _ca_certificate(ca_public, sign)
    return SoftHsm(module, TOKEN, PIN, OBJECT, pem)


def _ca_certificate(public: object, sign: object) -> bytes:
    """A self-signed CA certificate for the token's key, signed by the token."""
    from atflash.issue.ca import Signer
    from atflash.issue.certs import sign_certificate

    signer = Signer("test token", "ec", sign_data=sign)  # type: ignore[arg-type]
    cert = ca_certificate(
        public,  # type: ignore[arg-type]
        name="atflash HSM test CA",
        sign=lambda builder: sign_certificate(builder, signer),
    )
    return cert.public_bytes(serialization.Encoding.PEM)
