"""What a credential partition holds: the items of a PKI bin or of an mfg_nvs namespace."""

from __future__ import annotations

import pytest

from atflash.backends.held import read_items
from atflash.content import nvs_build, pki
from atflash.content.nvs_format import NvsItem
from atflash.content.stored import items_in
from atflash.errors import DeviceError, InputError


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


def test_the_read_back_skips_an_absent_partition_and_fails_a_board_that_does_not_answer() -> None:
    """Taking a board that did not answer for one holding nothing would issue it a second
    live certificate: the read-back before an issuer decides (batch and API alike) fails it."""
    whole = pki.build([("cert", b"A" * 10, None)])

    class Session:
        def __init__(self, fail: Exception | None) -> None:
            self.fail = fail

        def read_credentials(self, name: str, _profiles: object, enough: object) -> object:
            if name == "client_key":
                raise InputError("no client_key in this layout")
            if self.fail is not None:
                raise self.fail
            return None, whole

    names = ("client_cert", "client_key")
    assert read_items(Session(None), names, ()) == {"client_cert": (b"A" * 10,)}  # type: ignore[arg-type]
    with pytest.raises(DeviceError, match="stopped answering"):
        read_items(Session(DeviceError("p", "stopped answering")), names, ())  # type: ignore[arg-type]
