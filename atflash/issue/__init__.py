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

import importlib
from typing import Any

# Loaded on first use: importing the package loads neither the issuer, its CA nor the
# ledger until one of these names is asked for.
_HOME = {
    "IssueResolver": "atflash.issue.resolve",
    "Issuer": "atflash.issue.issuer",
    "IssuerConfig": "atflash.issue.config",
    "IssuerError": "atflash.issue.config",
    "Kept": "atflash.issue.issuer",
    "check_escrow_dir": "atflash.issue.issuer",
    "load_issuer_config": "atflash.issue.config",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'atflash.issue' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
