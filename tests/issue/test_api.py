"""Issuing through the Python API: ``atflash.Issuer`` with a batch and with a connected board."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography import x509

import atflash
from atflash.sim.rom import MockBoard
from tests.issue.test_write_cli import check_board, held
from tools.issuing import make_ca, openssl_verify

LINK = {"before": "no-reset", "after": "no-reset"}


def test_batch_of_four_then_one_board_kept_then_reissued(
    four_boards: list[MockBoard], tmp_path: Path
) -> None:
    ca = make_ca(tmp_path / "ca")
    with atflash.Issuer.open(ca.issuer, station="api-bench") as issuer:
        outcome = atflash.run_batch([b.url for b in four_boards], issuer, **LINK)
        assert outcome.exit_code == 0, [r.error for r in outcome.results]
        first = {b.mac: check_board(b, ca.cert, tmp_path) for b in four_boards}
        assert len({c.serial_number for c in first.values()}) == 4
        assert {r.result for r in issuer.records()} == {"ok"}

        board = four_boards[0]
        with atflash.connect(board.url, **LINK) as connected:
            kept = connected.write(issuer)
            assert kept.ok and {p.status for p in kept.partitions} == {"unchanged"}
            renewed = connected.write(issuer, reissue=True)
            assert renewed.ok, renewed.error
        cert = check_board(board, ca.cert, tmp_path)
        assert cert.serial_number != first[board.mac].serial_number
        live = [r for r in issuer.records() if r.device == board.mac and r.live]
        assert [r.serial for r in live] == [f"{cert.serial_number:x}"]
        crl = x509.load_pem_x509_crl(issuer.crl())
        assert [r.serial_number for r in crl] == [first[board.mac].serial_number]
        assert crl.is_signature_valid(ca.certificate().public_key())
    assert "OK" in openssl_verify(ca.cert, held(board)["client_cert"][0], tmp_path)


def test_one_board_with_escrow_then_a_verify_only_batch_refused(
    one_board: MockBoard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = make_ca(tmp_path / "ca")
    escrow = tmp_path / "escrow"
    escrow.mkdir()
    monkeypatch.setenv("ATFLASH_ESCROW_PASSPHRASE", "correct horse battery")
    with atflash.Issuer.open(ca.issuer) as issuer:
        with atflash.connect(one_board.url, **LINK) as board:
            result = board.write(issuer, escrow=escrow)
        assert result.ok, result.error
        (record,) = issuer.records()
        assert [p.name for p in escrow.iterdir()] == [
            f"{one_board.mac.replace(':', '')}-{record.serial}.key"
        ]
        with pytest.raises(atflash.InputError, match="verify_only=True with an Issuer"):
            atflash.run_batch([one_board.url], issuer, verify_only=True, **LINK)
        assert len(issuer.records()) == 1  # refused before any board: nothing issued
    assert record.result == "ok" and record.live


def test_a_ledger_that_cannot_record_the_write_marks_the_board_unrecorded(
    one_board: MockBoard, tmp_path: Path
) -> None:
    """The board is written and its outcome returned; only the ledger's record is missing."""
    ca = make_ca(tmp_path / "ca")
    ledger = tmp_path / "issued.sqlite"
    with atflash.Issuer.open(ca.issuer, ledger=str(ledger)) as issuer:
        with sqlite3.connect(ledger) as db:  # a fault in the database itself, not in atflash
            db.execute(
                "CREATE TRIGGER cut BEFORE UPDATE OF result ON atflash_issued "
                "BEGIN SELECT RAISE(ABORT, 'recording is switched off'); END"
            )
        outcome = atflash.run_batch([one_board.url], issuer, **LINK)
        (result,) = outcome.results
        assert result.ok, result.error
        assert "cannot record the result (recording is switched off)" in (result.unrecorded or "")
        assert outcome.exit_code == 3
        (record,) = issuer.records()
    assert record.result is None and record.live  # issued and written; its outcome not stored
    check_board(one_board, ca.cert, tmp_path)
