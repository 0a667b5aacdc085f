"""What a credential partition holds: the items of a PKI bin or of an mfg_nvs namespace."""

from __future__ import annotations

from atflash.content import nvs_build, pki
from atflash.content.nvs_format import NvsItem
from atflash.content.stored import items_in


def test_the_items_of_a_pki_bin_in_id_order() -> None:
    whole = pki.build([("cert", b"A" * 1000, None), ("cert", b"B" * 10, None)])
    assert items_in("client_cert", whole + b"\xff" * 3) == (b"A" * 1000, b"B" * 10)
    assert items_in("client_cert", whole[:-8]) == ()  # a cut bin: nothing readable
    assert items_in("client_cert", b"\xff" * 64) == ()  # erased


def test_the_items_of_one_mfg_nvs_namespace() -> None:
    image = nvs_build.build(
        [
            NvsItem("client_cert", "client_cert.0", "binary", b"C" * 300),
            NvsItem("client_cert", "client_cert.1", "binary", b"D"),
            NvsItem("client_key", "client_key.0", "binary", b"K"),
        ],
        0x6000,
    )
    assert items_in("client_cert", image) == (b"C" * 300, b"D")
    assert items_in("client_key", image) == (b"K",)
    assert items_in("client_ca", image) == ()
