"""Certificates issued at the station: one per board, signed by a CA key in a file or an HSM.

- :mod:`.config`: the issuer's settings (``--issue FILE`` or a bench file's ``[issue]``).
- :mod:`.ca`: the CA certificate and a signer for its key (PEM file or PKCS#11 token).
- :mod:`.certs`: device certificates and CRLs, signed by cryptography or assembled around
  a token's signature.
- :mod:`.store`: the issued certificates in the ledger (SQLite or PostgreSQL).
- :mod:`.issuer`: :class:`Issuer`, which ties them together; :mod:`.resolve`: the write
  flow's per-board resolver; :mod:`.offline`: per-device images without a board.

Library code: nothing here prints or imports click.
"""

from __future__ import annotations

from atflash.issue.config import IssuerConfig, IssuerError, load_issuer_config
from atflash.issue.issuer import Issuer, Kept, check_escrow_dir
from atflash.issue.resolve import IssueResolver

__all__ = [
    "IssueResolver",
    "Issuer",
    "IssuerConfig",
    "IssuerError",
    "Kept",
    "check_escrow_dir",
    "load_issuer_config",
]
