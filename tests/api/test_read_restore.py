"""Reading a board and putting a backup back through the public API, as the commands do.

``atflash read``, ``partitions --port`` and ``restore`` are clients of these
calls; what the board holds is read from the mock itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import atflash


def test_read_table_and_a_dump_saved_and_inspected(
    esp32_board, raw: Path, flash_at, tmp_path: Path
) -> None:
    ca = raw / "client_ca" / "client_ca_00.crt"
    with atflash.connect(esp32_board.url) as board:
        assert board.write(atflash.plan({"client_ca": ca}, chip="esp32")).ok
        title, table = board.read_table()
        dump = board.read("client_ca")
    assert title.startswith(f"{esp32_board.url} (esp32, MAC {board.mac}): at_customize.bin at ")
    assert "client_ca" in [p.name for p in table or ()]
    assert dump.port == esp32_board.url
    assert dump.data == flash_at(esp32_board, dump.partition.offset, dump.partition.size)
    saved = tmp_path / "ca.bin"
    dump.save(saved)
    assert saved.read_bytes() == dump.data and saved.stat().st_mode & 0o777 == 0o600
    report = dump.inspect()
    assert [(i.type, i.id) for i in report.items] == [("ca", 0)]


def test_a_dump_that_does_not_read_is_the_boards_damage(esp32_board, raw: Path) -> None:
    with atflash.connect(esp32_board.url) as board:
        part = next(p for p in board.partitions or () if p.name == "client_ca")
    pki_bin = atflash.generate_bin([("ca", raw / "client_ca" / "client_ca_00.crt")])
    cut = atflash.Dump(part, pki_bin[:40], esp32_board.url)  # a write cut short
    with pytest.raises(
        atflash.DeviceError, match=r"client_ca on the board is damaged: .*\(saved to d\.bin\)"
    ):
        cut.inspect(saved="d.bin")


def test_read_refuses_a_partition_no_layout_has(esp32_board) -> None:
    with atflash.connect(esp32_board.url) as board, pytest.raises(atflash.InputError) as err:
        board.read("client_crt")
    assert "no partition 'client_crt' in the esp32 layouts" in str(err.value)


def test_a_named_layout_is_checked_before_the_port_opens(dead_port: str) -> None:
    # Nothing listens at dead_port: the refusal is the chip's, so no connection was tried.
    with pytest.raises(atflash.ProfileError, match="unknown chip or profile 'esp99'"):
        atflash.connect(dead_port, chip="esp99")


def test_restore_in_one_call_and_an_unreachable_board_in_the_result(
    esp32_board, raw: Path, flash_at, tmp_path: Path, dead_port: str
) -> None:
    ca = atflash.plan({"client_ca": raw / "client_ca" / "client_ca_00.crt"}, chip="esp32")
    with atflash.connect(esp32_board.url) as board:
        before = board.read("client_ca").data  # as the firmware was flashed
        assert board.write(ca, backup_dir=tmp_path).ok
    loaded = atflash.load_backups(list(tmp_path.glob("*client_ca*.bin")))  # with no board
    unreachable = atflash.restore(dead_port, loaded, connect_attempts=1)
    assert not unreachable.ok and "nothing is listening" in (unreachable.error or "")
    restored = atflash.restore(esp32_board.url, loaded)
    assert restored.ok, restored.error
    entry = restored.partitions[0]
    assert flash_at(esp32_board, entry.address, entry.size) == before


def test_load_backups_refuses_a_file_without_its_record(tmp_path: Path, dead_port: str) -> None:
    stray = tmp_path / "client_ca.bin"
    stray.write_bytes(b"\xff" * 8192)
    with pytest.raises(atflash.InputError, match="has no backup record"):
        atflash.load_backups([stray])
    with pytest.raises(atflash.InputError, match="has no backup record"):
        atflash.restore(dead_port, stray)  # before the port: a refusal, not a failed board
