"""Backup records and the journal's test for a write cut short (atflash.recovery), pure file logic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from atflash import recovery
from atflash.errors import FileInputError, InputError

IMAGE = bytes(range(255)) * 64  # about 16 KB "image being written", no byte erased flash holds
BEFORE = b"\x5a" * len(IMAGE)  # what the board held


def record(data: bytes, **fields: object) -> recovery.BackupRecord:
    base = {"partition": "mfg_nvs", "address": 0x21000, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "time": "2026-12-07T10:00:00Z",
            "chip": "esp32", "mac": "24:0a:c4:00:00:01"}  # fmt: skip
    return recovery.BackupRecord(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize("at", [0, 1, 4095, 4096, 9000, len(IMAGE) - 1])
def test_a_prefix_then_erased_or_old_flash_is_a_cut_copy(at: int) -> None:
    rest = len(IMAGE) - at
    assert recovery.cut_copy(IMAGE[:at] + b"\xff" * rest, IMAGE, BEFORE)  # the ROM erased first
    if at:  # written over, no erase (with nothing written, it is the board as it was)
        assert recovery.cut_copy(IMAGE[:at] + BEFORE[at:], IMAGE, BEFORE)
    sector = min(len(IMAGE), (at // 4096 + 1) * 4096)  # a stub erases sector by sector
    board = IMAGE[:at] + b"\xff" * (sector - at) + BEFORE[sector:]
    assert recovery.cut_copy(board, IMAGE, BEFORE)


def test_whole_images_and_strangers_are_not_cut_copies() -> None:
    assert not recovery.cut_copy(IMAGE, IMAGE, BEFORE)  # finished
    assert not recovery.cut_copy(BEFORE, IMAGE, BEFORE)  # never started
    stranger = IMAGE[:100] + b"\x01" * (len(IMAGE) - 100)
    assert not recovery.cut_copy(stranger, IMAGE, BEFORE)
    assert not recovery.cut_copy(IMAGE[:-1], IMAGE, BEFORE)


def test_a_backup_round_trips_and_a_changed_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.bin"
    recovery.save(path, IMAGE, record(IMAGE))
    loaded = recovery.load(path)
    assert loaded.data == IMAGE and loaded.record == record(IMAGE)
    assert json.loads(recovery.record_path(path).read_text())["address"] == "0x21000"
    assert (path.stat().st_mode & 0o077) == (recovery.record_path(path).stat().st_mode & 0o077) == 0
    assert "b.bin" in repr(loaded) and "\\x" not in repr(loaded)
    path.write_bytes(IMAGE[:-1] + b"\x00")
    with pytest.raises(FileInputError, match="SHA-256 does not match"):
        recovery.load(path)
    recovery.record_path(path).write_text('{"format": "atflash-backup", "version": 1}')
    with pytest.raises(FileInputError, match="is missing or wrong"):
        recovery.load(path)


def test_load_all_wants_one_board_and_one_backup_per_partition(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "c.bin"
    recovery.save(a, IMAGE, record(IMAGE))
    recovery.save(b, IMAGE, record(IMAGE, mac="24:0a:c4:00:00:02"))
    recovery.save(c, IMAGE, record(IMAGE, time="2026-12-08T10:00:00Z"))
    with pytest.raises(InputError, match="several boards"):
        recovery.load_all([a, b])
    with pytest.raises(InputError, match="both backups of mfg_nvs"):
        recovery.load_all([a, c])


def test_newest_sound_backup_of_a_board(tmp_path: Path) -> None:
    old, new, broken = tmp_path / "1.bin", tmp_path / "2.bin", tmp_path / "3.bin"
    recovery.save(old, IMAGE, record(IMAGE, time="2026-12-01T10:00:00Z"))
    recovery.save(new, IMAGE, record(IMAGE, time="2026-12-02T10:00:00Z"))
    recovery.save(broken, IMAGE, record(IMAGE, time="2026-12-03T10:00:00Z", damaged=True))
    assert recovery.newest(tmp_path, "24:0a:c4:00:00:01", "mfg_nvs") == new
    assert recovery.newest(tmp_path, "24:0a:c4:00:00:09", "mfg_nvs") is None
    assert recovery.newest(tmp_path, "24:0a:c4:00:00:01", "client_ca") is None


def test_the_journal_keeps_both_images_until_it_ends(tmp_path: Path) -> None:
    journal = recovery.Journal(tmp_path, "24:0a:c4:00:00:01", "mfg_nvs")
    assert journal.pending() is None
    journal.begin(IMAGE, BEFORE, record(IMAGE))
    pending = journal.pending()
    assert pending is not None and pending[0].data == IMAGE and pending[1] == BEFORE
    journal.end()
    assert journal.pending() is None and list(tmp_path.iterdir()) == []


def test_library_writes_journal_where_the_command_does_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WriteOptions (what Board.write and run_batch pass) journal into the state folder."""
    from atflash.backends.base import WriteOptions

    monkeypatch.setenv("ATFLASH_STATE_DIR", str(tmp_path / "state"))
    assert WriteOptions().journal_dir == tmp_path / "state" == recovery.default_state_dir()
    assert WriteOptions(journal_dir=None).journal_dir is None
