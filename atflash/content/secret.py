"""Which outputs hold key material, and so are written readable by their owner only (0600).

One rule for every file atflash makes from credentials (a PKI bin, an
extracted item, a partition image, an ``mfg_nvs``, a patched factory
image): it is secret when it holds an item of PKI type ``key``, or
private-key material anywhere in any item (a certificate file with its key
appended, a key put where a certificate goes). The writers
(:func:`atflash.output.write_outputs` and the per-device build) take the
answer; none decides it on its own.
"""

from __future__ import annotations

from collections.abc import Iterable

from atflash.content.keys import holds_private_key


def is_secret(kind: str | None, contents: Iterable[bytes]) -> bool:
    """Whether a file holding ``contents``, items of PKI type ``kind`` (``None``: no
    type, a plain file), must be readable by its owner only."""
    return kind == "key" or any(holds_private_key(content) for content in contents)


__all__ = ["is_secret"]
