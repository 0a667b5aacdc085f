"""The checks a credential gets before it is built into an image or written.

``validate_item`` for a file given for a PKI item (or an mfg_nvs value),
``check_items`` for the items of a ready PKI bin, whose content is
otherwise taken as it is, as the firmware would.
"""

from __future__ import annotations

from collections.abc import Sequence

from atflash.content.certs import load_certificate
from atflash.content.keys import (
    check_key_file_type,
    check_key_type,
    check_no_private_key,
    load_private_key,
)
from atflash.content.passed import digest, has_passed, remember
from atflash.layout.model import PkiKind


def validate_item(kind: PkiKind, data: bytes, *, source: str, key_type_check: bool = True) -> None:
    """Check that ``data`` is fit for a PKI item of ``kind`` before it is built or written.

    ``cert`` and ``ca`` must hold a certificate and no private key, ``key``
    an unencrypted private key of a type the firmware can use (unless
    ``key_type_check`` is off). Raises :class:`~atflash.errors.ContentError` otherwise.
    """
    check = ("item", kind, key_type_check, digest(data))
    if has_passed(check):
        return
    _validate_item(kind, data, source, key_type_check)
    remember(check)


def _validate_item(kind: PkiKind, data: bytes, source: str, key_type_check: bool) -> None:
    if kind == "key":
        key = load_private_key(data, source=source)
        if key_type_check:
            check_key_type(key, source=source)
    elif kind in ("cert", "ca"):
        load_certificate(data, source=source)
        check_no_private_key(data, source=source)
    else:
        # A caller bug, not a user error: the type says this cannot happen.
        raise ValueError(f"unknown PKI item kind {kind!r}")


def check_items(
    kind: PkiKind, items: Sequence[tuple[str, bytes]], *, key_type_check: bool = True
) -> None:
    """The checks a ready PKI bin's items get: no key in a certificate partition, usable keys.

    ``items`` are ``(name, content)`` pairs. The rest of an item's content
    is taken as it is, as the firmware would.
    """
    for name, content in items:
        if kind in ("cert", "ca"):
            check_no_private_key(content, source=name)
        elif kind == "key" and key_type_check:
            check_key_file_type(content, source=name)
