"""What a credential partition holds, in either form a board stores it.

ESP-AT up to 3.0 keeps each credential kind in a partition of its own, as
a PKI bin; 3.1+ keeps them as namespaces of ``mfg_nvs``. Light on imports
(no ``cryptography``): a batch worker reads what a board holds before a
resolver decides (:mod:`atflash.backends.held`).
"""

from __future__ import annotations

from atflash.content import mfgnvs, pki
from atflash.content.nvs import looks_like_nvs, parse_nvs
from atflash.errors import AtflashError


def items_in(name: str, data: bytes) -> tuple[bytes, ...]:
    """The items of a PKI bin, or of namespace ``name`` in an ``mfg_nvs`` image; () if neither."""
    try:
        if pki.is_pki_bin(data):
            return tuple(item.content for item in pki.parse(data).items)
        if looks_like_nvs(data):
            return tuple(mfgnvs.credentials(parse_nvs(data), name))
    except AtflashError:
        pass
    return ()
