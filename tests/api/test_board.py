"""One board through the public API: connect, write, verify, read, a plan made after connecting.

Through the real esptool against mock boards and over the AT simulator; what
landed in flash is read from the board itself, not through atflash.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import atflash


def pki_image(items: list[tuple[str, bytes]], size: int) -> bytes:
    """The padded image a partition holds once ``items`` are written (AtPKI's bytes, erased tail)."""
    data = atflash.generate_bin(items)
    return data + b"\xff" * (size - len(data))


def test_write_verify_read_over_one_connection(esp32_board, raw: Path, flash_at, capfd) -> None:
    cert = (raw / "client_cert" / "client_cert_00.crt").read_bytes()
    key_path = raw / "client_key" / "client_key_00.key"
    plan = atflash.plan({"client_cert": [cert], "client_key": [key_path]}, chip="esp32")
    events: list[atflash.Event] = []
    writing: list[atflash.Event] = []
    with atflash.connect(esp32_board.url, on_event=events.append) as board:
        assert (board.chip, board.layout) == ("esp32", "esp32")
        assert board.mac is not None and board.mac.startswith("24:0a:c4")
        written = board.write(plan, on_event=writing.append)
        checked = board.verify(plan)
        dump = board.read("client_cert")
    assert capfd.readouterr() == ("", "")  # nothing printed: esptool's output became events
    assert written.ok, written.error
    assert [p.status for p in written.partitions] == [atflash.PartitionStatus.WRITTEN] * 2
    assert [p.status for p in checked.partitions] == [atflash.PartitionStatus.MATCH] * 2
    entry = written.partitions[0]
    expected = pki_image([("cert", cert)], entry.size)
    assert flash_at(esp32_board, entry.address, entry.size) == expected
    assert dump.data == expected and dump.partition.offset == entry.address
    assert entry.sources == ["<bytes client_cert[0]>"]  # the audit names bytes, never shows them
    assert written.partitions[1].sources == [str(key_path)]
    # connect's callback hears every operation but the one given its own.
    assert {"writing", "verified", "done"} <= {e.kind for e in writing}
    assert {"connecting", "connected", "verified"} <= {e.kind for e in events}
    assert "writing" not in {e.kind for e in events}


def test_a_second_write_on_the_same_connection_sees_the_first(esp32_board, raw: Path) -> None:
    one = atflash.plan({"client_ca": raw / "client_ca" / "client_ca_00.crt"}, chip="esp32")
    two = atflash.plan({"client_ca": raw / "client_ca" / "client_ca_01.crt"}, chip="esp32")
    with atflash.connect(esp32_board.url) as board:
        statuses = [board.write(p).partitions[0].status for p in (one, two, one, one)]
        differs = board.verify(two).partitions[0].status
    # Each operation learns the flash afresh: the third write is not taken for unchanged.
    assert statuses == ["written", "written", "written", "unchanged"]
    assert differs == atflash.PartitionStatus.DIFFERS


def test_plan_made_after_connecting_from_the_boards_mac(esp32_board, issue, flash_at) -> None:
    with atflash.connect(esp32_board.url) as board:
        cert, key = issue(board.mac)  # a certificate for this board, made while it waits
        plan = board.plan({"client_cert": cert, "client_key": key})
        result = board.write(plan)
    assert plan.layouts == ("esp32",)  # the layout the board's own tables match
    assert result.ok, result.error
    item = result.partitions[0].items[0]
    assert item["subject"] == f"CN={board.mac}"
    key_entry = result.partitions[1]
    held = flash_at(esp32_board, key_entry.address, key_entry.size)
    assert held == pki_image([("key", key)], key_entry.size)


def test_key_bytes_never_appear_in_plans_results_events_or_errors(esp32_board, issue) -> None:
    cert, key = issue("device")
    _other_cert, other_key = issue("other")
    plan = atflash.plan({"client_cert": cert, "client_key": key}, chip="esp32")
    events: list[atflash.Event] = []
    with atflash.connect(esp32_board.url, on_event=events.append) as board:
        result = board.write(plan)
    with pytest.raises(atflash.PairingError) as refused:
        atflash.plan({"client_cert": cert, "client_key": other_key}, chip="esp32")
    body = key.split(b"\n")[1].decode()  # a line of the key's base64
    shown = [repr(plan), repr(plan.candidates), str(result.to_json()), repr(events)]
    shown += [str(refused.value)]
    assert result.ok
    assert "<bytes client_key[0]>" in str(refused.value)
    assert not [text for text in shown if body in text]


def test_an_open_serial_port_is_used_and_left_open(esp32_board, open_port, raw: Path) -> None:
    link = open_port(esp32_board.url)
    plan = atflash.plan({"client_ca": raw / "client_ca" / "client_ca_00.crt"}, chip="esp32")
    with atflash.connect(link) as board:
        result = board.write(plan)
    assert result.ok, result.error
    assert board.port == esp32_board.url
    assert link.is_open  # the caller's to close


def test_a_refused_write_is_a_result_and_writes_nothing(blank_esp32, raw: Path, flash_at) -> None:
    plan = atflash.plan({"client_ca": raw / "client_ca" / "client_ca_00.crt"}, chip="esp32")
    with atflash.connect(blank_esp32.url) as board:
        assert board.partitions is None and board.layout is None
        assert "blank" in (board.tables.problem or "")
        result = board.write(plan)
    assert not result.ok and result.error is not None and "blank" in result.error
    assert result.partitions[0].status == atflash.PartitionStatus.NOT_STARTED
    assert set(flash_at(blank_esp32, 0x8000, 0x1000)) == {0xFF}


def test_a_closed_board_refuses(esp32_board, raw: Path) -> None:
    board = atflash.connect(esp32_board.url)
    board.close()
    board.close()  # idempotent
    with pytest.raises(atflash.InputError, match="closed"):
        board.read("client_ca")


def test_connect_refuses_before_opening(dead_port) -> None:
    with pytest.raises(atflash.InputError, match="--before does not apply"):
        atflash.connect(dead_port, via="at", before="no-reset")
    with pytest.raises(atflash.InputError, match="not a reset mode"):
        atflash.connect(dead_port, before="sometimes")
    with pytest.raises(atflash.PortError, match="nothing is listening"):
        atflash.connect(dead_port, connect_attempts=1)


def test_at_module_written_through_an_open_port(at_module, open_port, raw: Path) -> None:
    cert = (raw / "client_cert" / "client_cert_00.crt").read_bytes()
    key = (raw / "client_key" / "client_key_00.key").read_bytes()
    link = open_port(at_module.url)
    with atflash.connect(link, via="at") as board:
        assert (board.chip, board.layout, board.tables.store) == ("esp32", "esp32", "pki")
        result = board.write(board.plan({"client_cert": [cert], "client_key": [key]}))
        again = board.verify(board.plan({"client_cert": [cert], "client_key": [key]}))
    assert result.ok, result.error
    assert again.ok
    part = at_module.partition("client_cert")
    assert at_module.partition_bytes("client_cert") == pki_image([("cert", cert)], part.size)
    assert link.is_open


def test_at_module_3x_namespaces_from_bytes(at_module_3x, issue) -> None:
    with atflash.connect(at_module_3x.url, via="at") as board:
        assert board.tables.store == "mfg_nvs"
        cert, key = issue(board.mac)
        result = board.write(board.plan({"client_cert": cert, "client_key": key}))
        dump = board.read("client_cert")
    assert result.ok, result.error
    items = {(i.namespace, i.key): i.value for i in at_module_3x.mfg_items()}
    assert items[("client_cert", "client_cert.0")] == cert
    assert items[("client_key", "client_key.0")] == key
    assert [(i.type, i.content) for i in atflash.parse_bin(dump.data)] == [("cert", cert)]


def test_esptool_3x_board_keeps_its_other_namespaces(c3_board_3x, issue) -> None:
    with atflash.connect(c3_board_3x.url) as board:
        assert board.layout is not None and board.tables.store == "mfg_nvs"
        cert, key = issue(board.mac)
        result = board.write(board.plan({"client_cert": cert, "client_key": key}))
        checked = board.verify(
            atflash.plan({"client_cert": cert, "client_key": key}, chip="esp32c3")
        )
    assert result.ok, result.error
    assert checked.ok


def test_connect_refuses_a_board_of_another_chip(esp32_board) -> None:
    with pytest.raises(atflash.ChipMismatchError, match="board is an esp32"):
        atflash.connect(esp32_board.url, chip="esp32c3")
    with atflash.connect(esp32_board.url) as board:  # the port was released
        assert board.chip == "esp32"


def test_restore_puts_a_backup_back_over_the_same_connection(
    esp32_board, raw: Path, flash_at, tmp_path: Path
) -> None:
    one = atflash.plan({"client_ca": raw / "client_ca" / "client_ca_00.crt"}, chip="esp32")
    two = atflash.plan({"client_ca": raw / "client_ca" / "client_ca_01.crt"}, chip="esp32")
    backups = tmp_path / "backups"
    with atflash.connect(esp32_board.url) as board:
        assert board.write(one).ok
        before = board.read("client_ca").data
        assert board.write(two, backup_dir=backups).ok
        saved = sorted(backups.glob("*client_ca*.bin"))
        assert len(saved) == 1 and saved[0].with_name(saved[0].name + ".json").exists()
        assert board.read("client_ca").data != before
        restored = board.restore(saved[0])
        assert board.verify(one).partitions[0].status == atflash.PartitionStatus.MATCH
    assert restored.ok, restored.error
    entry = restored.partitions[0]
    assert flash_at(esp32_board, entry.address, entry.size) == before  # read from the mock itself


def test_restore_refuses_a_backup_without_its_record_before_the_board(
    esp32_board, tmp_path: Path
) -> None:
    stray = tmp_path / "client_ca.bin"
    stray.write_bytes(b"\xff" * 8192)
    with atflash.connect(esp32_board.url) as board, pytest.raises(atflash.InputError) as err:
        board.restore(stray)
    assert "has no backup record" in str(err.value)
