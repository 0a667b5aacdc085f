"""Boards for issuing tests: ESP32 mocks with ESP-AT's table, each with a MAC of its own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from atflash.sim.rom import MockBoard, distinct_mac
from tests.integration.conftest import dead_port, flash_esp_at  # noqa: F401 - a fixture
from tools.softhsm import SoftHsm, find_module, start
from tools.strictrom import start_strict


def _own_mac(index: int) -> str:
    # distinct_mac() is unique per process; the last byte tells this test's boards apart.
    base = distinct_mac().rsplit(":", 1)[0]
    return f"{base}:{index:02x}"


@pytest.fixture
def four_boards() -> Iterator[list[MockBoard]]:
    """Four ESP32 mocks over TCP with ESP-AT 2.x's table, each reporting its own MAC."""
    with contextlib.ExitStack() as stack:
        boards = []
        for index in range(4):
            board = start_strict("esp32", mac=_own_mac(index))
            stack.callback(board.stop)
            flash_esp_at(board)
            boards.append(board)
        yield boards


@pytest.fixture
def one_board() -> Iterator[MockBoard]:
    board = start_strict("esp32", mac=_own_mac(0x40))
    try:
        flash_esp_at(board)
        yield board
    finally:
        board.stop()


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """One SoftHSM2 token per test process with an EC CA key ("ca") and its certificate."""
    if find_module() is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2; .ci/run does)")
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed (atflash[hsm])")
    return start(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture
def hsm_issuer(softhsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An issuer file whose CA key is the token's, the PIN in $ATFLASH_TEST_PIN."""
    monkeypatch.setenv("ATFLASH_TEST_PIN", softhsm.pin)
    (tmp_path / "hsm-ca.crt").write_bytes(softhsm.ca_cert_pem)
    issuer = tmp_path / "hsm-issuer.toml"
    issuer.write_text(
        'ca_cert = "hsm-ca.crt"\n'
        f'ca_key = "pkcs11:token={softhsm.token};object={softhsm.object}"\n'
        f'pkcs11_module = "{softhsm.module}"\n'
        'pin_env = "ATFLASH_TEST_PIN"\n'
        'subject = "CN={mac}"\n'
    )
    return issuer
