"""Issuing on the other stores and paths: an ESP-AT 3.1+ board (mfg_nvs, through esptool) and
a running ESP-AT module (over its AT port). A rerun reads each back and keeps what it holds."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

import atflash
from atflash.layout.profiles import find_profile
from atflash.sim.at import AtSimulator
from atflash.sim.rom import MockBoard
from tests.integration.conftest import flash_esp_at
from tools.issuing import make_ca
from tools.strictrom import start_strict

LINK = {"before": "no-reset", "after": "no-reset"}


@pytest.fixture
def c3_3x() -> Iterator[MockBoard]:
    board = start_strict("esp32c3")
    try:
        flash_esp_at(board, "3.x")
        yield board
    finally:
        board.stop()


@pytest.fixture
def at_module() -> Iterator[AtSimulator]:
    with AtSimulator(find_profile("esp32")) as sim:
        sim.url = sim.start_tcp()  # type: ignore[attr-defined]
        yield sim


def issue_then_rerun(issuer: atflash.Issuer, connect: contextlib.AbstractContextManager) -> None:
    with connect as board:
        first = board.write(issuer)
        assert first.ok, first.error
        again = board.write(issuer)
        assert again.ok, again.error
        assert {p.status for p in again.partitions} == {"unchanged"}
        cert = board.read("client_cert")
        assert cert.data  # read back through atflash: what the rerun compared


def test_mfg_nvs_board_gets_its_certificate_and_a_rerun_keeps_it(
    c3_3x: MockBoard, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path / "ca")
    with atflash.Issuer.open(ca.issuer) as issuer:
        issue_then_rerun(issuer, atflash.connect(c3_3x.url, **LINK))
        (record,) = issuer.records()
    assert record.device == c3_3x.mac and record.result == "ok" and record.live


def test_at_module_gets_its_certificate_and_a_rerun_keeps_it(
    at_module: AtSimulator, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path / "ca")
    with atflash.Issuer.open(ca.issuer) as issuer:
        issue_then_rerun(issuer, atflash.connect(at_module.url, via="at"))  # type: ignore[attr-defined]
        (record,) = issuer.records()
    assert record.result == "ok" and record.live
    cert = x509.load_pem_x509_certificate(record.certificate.encode())
    assert cert.subject.rfc4514_string() == f"CN={record.device}"
