"""Recovering ESP-AT 3.1+ boards: a whole-mfg_nvs write cut short, damaged boards, `restore`.

The real esptool against mock boards flashed with a 3.1+ factory image, and
the AT simulator. A write is cut by a line that stops moving part-way
through the image (at several points); what the board then holds is read
from the mock directly and checked with atflash's NVS reader. Then:

- the same command run again completes the write (from the journal the
  cut write left), and the board reads as meant;
- ``atflash restore`` puts the backup taken before the cut back verbatim;
- without a journal, the damaged board is refused with a device error that
  names the NVS page and entry and the command that recovers it (the
  newest backup, or ``--force``, which keeps what still reads).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from atflash import recovery
from atflash.backends.base import WriteOptions, write_board
from atflash.backends.esptool.backend import EsptoolBackend
from atflash.backends.esptool.options import ConnectOptions
from atflash.content import mfgnvs, pki
from atflash.content.nvs import PAGE_SIZE, NvsItem, parse_nvs
from atflash.events import Event
from atflash.layout.profiles import family, find_profile
from atflash.planning.plan import PartitionRequest, build_plans
from atflash.sim.at import AtSimulator
from atflash.sim.flash import board_flash
from atflash.sim.rom import MockBoard
from tests.support.cli import run
from tests.support.esptool_waits import cap_waits, restore_waits
from tools.line import UartLine
from tools.mockflash import read_flash

from . import conftest as integration
from .conftest import BoardPool, direct_url, flash_esp_at, preload

CONNECT = ["--before", "no-reset", "--after", "no-reset", "--connect-attempts", "1"]
PROFILE = find_profile("esp32-3x")
STORE = PROFILE.partition("mfg_nvs")


board = integration.esp32_board_3x  # an ESP32 flashed with ESP-AT 3.x


@pytest.fixture
def groups(raw: Path) -> list[str]:
    """Five CAs, an mqtt_ca and a certificate and key: an mfg_nvs of three pages."""
    cas = sorted((raw / "client_ca").iterdir())
    return [
        "client_cert", str(raw / "client_cert" / "client_cert_00.crt"),
        "client_key", str(raw / "client_key" / "client_key_00.key"),
        "client_ca", *[str(cas[n % 2]) for n in range(5)],
        "mqtt_ca", str(raw / "mqtt_ca" / "mqtt_ca.crt"),
    ]  # fmt: skip


def requests_of(groups: list[str]) -> list[PartitionRequest]:
    out: list[PartitionRequest] = []
    for token in groups:
        if token in mfgnvs.CREDENTIAL_NAMESPACES:
            out.append(PartitionRequest(token, ()))
        else:
            out[-1] = PartitionRequest(out[-1].partition, (*out[-1].files, token))
    return out


def on_board(board: MockBoard) -> bytes:
    """The board's whole mfg_nvs, read from the mock (neither atflash nor esptool)."""
    (image,) = read_flash(direct_url(board), [(STORE.offset, STORE.size)])
    return image


def initial() -> list[NvsItem]:
    return parse_nvs(board_flash("esp32", "3.x")[STORE.offset])


def holds(board: MockBoard, groups: list[str]) -> list[NvsItem]:
    """The board reads as sound NVS with exactly the given credentials and factory_param kept."""
    items = parse_nvs(on_board(board), source="board")
    for request in requests_of(groups):
        wanted = [Path(f).read_bytes() for f in request.files]
        assert mfgnvs.credentials(items, request.partition) == wanted, request.partition
    kept = [i for i in items if i.namespace not in mfgnvs.CREDENTIAL_NAMESPACES]
    assert kept == initial()
    return items


def cut_write(board: MockBoard, groups: list[str], at: int, *, backups: Path | None) -> None:
    """Write ``groups`` and stop the line ``at`` bytes into the image: the board is damaged."""
    plans = build_plans(family("esp32"), requests_of(groups))
    port = int(board.url.rsplit(":", 1)[1])
    before = on_board(board)
    options = WriteOptions(backup_dir=backups, journal_dir=recovery.default_state_dir())
    with UartLine(("127.0.0.1", port), pacing=False) as line:
        connect = ConnectOptions(line.url, before="no-reset", after="no-reset")

        armed: list[Event] = []

        def cut(event: Event) -> None:
            if event.kind == "writing" and not armed:
                armed.append(event)
                line.stall_after(line.bytes_to_device + at, "to_device")
                cap_waits(reply=1.0)  # the reply never comes: wait 1 s for it, not 3

        try:
            first = write_board(EsptoolBackend(), connect, plans, options=options, events=cut)
        finally:
            restore_waits()
        assert line.faults_fired == 1, f"the cut did not happen once: {line.fired}"
    assert not first.ok
    damaged = on_board(board)
    # The stub erases as it writes and starts at once: what the cut leaves may be
    # torn NVS or erased pages before the old ones (the strict ROM model does both).
    assert damaged != before, "the cut came before the loader touched the partition"


# Points in the compressed image (bytes on the wire after the write began): in
# page 0, in the CAs of pages 1 and 2.
CUTS = [1500, 3000, 5000]


@pytest.mark.parametrize("at", CUTS)
def test_a_cut_write_is_completed_by_running_it_again(
    board: MockBoard, groups: list[str], at: int
) -> None:
    cut_write(board, groups, at, backups=None)
    again = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, *groups)
    assert again.exit_code == 0, again.output
    assert "completing it from its journal" in again.output
    holds(board, groups)
    assert not list((recovery.default_state_dir() / recovery.JOURNAL_FOLDER).iterdir())


@pytest.mark.parametrize("at", CUTS)
def test_a_cut_write_is_undone_by_restore(
    board: MockBoard, groups: list[str], at: int, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    before = on_board(board)
    cut_write(board, groups, at, backups=backups)
    (saved,) = backups.glob("*-mfg_nvs-*.bin")
    record = json.loads(recovery.record_path(saved).read_text())
    assert record["partition"] == "mfg_nvs" and record["address"] == f"{STORE.offset:#x}"
    assert record["mac"] == board.mac and record["chip"] == "esp32" and record["size"] == STORE.size
    # What an older README said to do: writing it as a credential is refused, naming restore
    # (docs/production.md, "Backups").
    wrong = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, "client_cert", saved)
    assert wrong.exit_code == 2 and f"atflash restore --port PORT {saved}" in wrong.output
    restored = run("restore", "--port", board.url, *CONNECT, saved)
    assert restored.exit_code == 0, restored.output
    assert on_board(board) == before == saved.read_bytes()
    assert parse_nvs(on_board(board)) == initial()


def test_without_a_journal_the_damage_is_named_with_the_way_back(
    board: MockBoard, groups: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backups = tmp_path / "backups"
    cut_write(board, groups, CUTS[1], backups=backups)
    monkeypatch.setenv("ATFLASH_STATE_DIR", str(tmp_path / "another-host"))
    (saved,) = backups.glob("*-mfg_nvs-*.bin")

    again = run("write", "--chip", "esp32", "--port", board.url, *CONNECT,
                "--backup", backups, *groups)  # fmt: skip
    assert again.exit_code == 3, again.output
    assert "mfg_nvs on the board is damaged: NVS page" in again.output
    assert f"atflash restore --port {board.url} {saved}" in again.output

    plain = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, *groups)
    assert plain.exit_code == 3, plain.output
    assert "entry" in plain.output and "--force" in plain.output
    assert "no entry defines the factory_param namespace" in plain.output
    read = run("read", "--chip", "esp32", "--port", board.url, *CONNECT, "mfg_nvs")
    assert read.exit_code == 3 and "mfg_nvs on the board is damaged" in read.output, read.output

    # --force writes the credentials and keeps what reads, but cannot bring back what
    # the cut erased: it says so loudly, and the backup is still the way back.
    forced = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, "--force", *groups)
    assert forced.exit_code == 0, forced.output
    assert "damaged (--force)" in forced.output and "still read and are kept" in forced.output
    assert "holds no factory_param" in forced.output and "will NOT start" in forced.output
    items = parse_nvs(on_board(board))
    assert mfgnvs.credentials(items, "client_cert") == [Path(groups[1]).read_bytes()]
    assert not [i for i in items if i.namespace == mfgnvs.FACTORY_PARAM]

    restored = run("restore", "--port", board.url, *CONNECT, saved)
    assert restored.exit_code == 0, restored.output
    assert on_board(board) == saved.read_bytes()
    rerun = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, *groups)
    assert rerun.exit_code == 0, rerun.output
    holds(board, groups)


def test_an_mfg_nvs_ending_at_a_page_boundary_is_refused_not_emptied(
    board: MockBoard, groups: list[str], tmp_path: Path, raw: Path
) -> None:
    """What a ROM write cut at a page boundary leaves: FULL pages, then erased flash."""
    assert run("write", "--chip", "esp32", "--port", board.url, *CONNECT, *groups).exit_code == 0
    whole = on_board(board)
    for pages in (1, 2):
        preload(
            board,
            STORE.offset,
            whole[: pages * PAGE_SIZE] + b"\xff" * (STORE.size - pages * PAGE_SIZE),
        )
        cert = raw / "client_cert" / "client_cert_01.crt"
        result = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, "client_cert", cert)
        assert result.exit_code == 3, result.output
        assert "cut short" in result.output
        assert on_board(board)[pages * PAGE_SIZE :] == b"\xff" * (STORE.size - pages * PAGE_SIZE)


def test_read_and_write_of_a_damaged_board_are_both_device_errors(
    board: MockBoard, tmp_path: Path, raw: Path
) -> None:
    image = bytearray(on_board(board))
    image[64 + 32 * 1 + 8] ^= 0x20  # entry 1's key ("version"): its CRC no longer matches
    preload(board, STORE.offset, bytes(image))
    dump = tmp_path / "dump.bin"
    read = run("read", "--chip", "esp32", "--port", board.url, *CONNECT, "-o", dump, "mfg_nvs")
    assert read.exit_code == 3, read.output
    assert "mfg_nvs on the board is damaged: NVS page 0 entry" in read.output
    assert dump.read_bytes() == bytes(image)  # the dump is kept: it is the evidence
    cert = raw / "client_cert" / "client_cert_00.crt"
    for command in ("write", "verify"):
        done = run(command, "--chip", "esp32", "--port", board.url, *CONNECT, "client_cert", cert)
        assert done.exit_code == 3, done.output
        assert "mfg_nvs on the board is damaged: NVS page 0 entry 1" in done.output


# -- restore: every store, both paths, and its refusals ------------------------------------


@pytest.mark.parametrize("firmware", ["2.x", "3.x"])
def test_the_hardware_round_trip_ends_as_it_started_on_a_mock(
    board_pool: BoardPool, raw: Path, tmp_path: Path, firmware: str
) -> None:
    """tests/hardware's sequence (write --backup, verify, restore) finds and restores its backup."""
    from tests.hardware.test_real_board import round_trip

    part = find_profile("esp32" if firmware == "2.x" else "esp32-3x").partition(
        "client_ca" if firmware == "2.x" else "mfg_nvs"
    )
    with board_pool.lease("esp32") as mock:
        flash_esp_at(mock, firmware)
        if firmware == "2.x":
            preload(mock, part.offset, pki.pad(pki.build([("ca", b"old CA", None)]), part.size))
        (before,) = read_flash(direct_url(mock), [(part.offset, part.size)])
        round_trip(["--port", mock.url, "--via", "esptool", *CONNECT], raw, tmp_path, chip="esp32")
        (after,) = read_flash(direct_url(mock), [(part.offset, part.size)])
    assert after == before


def test_restore_puts_a_2x_partition_back_through_esptool(
    board_pool: BoardPool, raw: Path, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    cert = raw / "client_cert" / "client_cert_00.crt"
    with board_pool.lease("esp32") as mock:
        flash_esp_at(mock, "2.x")
        part = find_profile("esp32").partition("client_cert")
        old = pki.pad(pki.build([("cert", b"old content", None)]), part.size)
        preload(mock, part.offset, old)
        wrote = run("write", "--chip", "esp32", "--port", mock.url, *CONNECT,
                    "--backup", backups, "client_cert", cert)  # fmt: skip
        assert wrote.exit_code == 0, wrote.output
        (saved,) = backups.glob("*-client_cert-*.bin")
        restored = run("restore", "--port", mock.url, *CONNECT, "--json", saved)
        assert restored.exit_code == 0, restored.output
        assert json.loads(restored.stdout)["partitions"][0]["status"] == "written"
        (now,) = read_flash(direct_url(mock), [(part.offset, part.size)])
        assert now == old
        again = run("restore", "--port", mock.url, *CONNECT, "--json", saved)
        assert json.loads(again.stdout)["partitions"][0]["status"] == "unchanged"


def test_restore_refuses_another_boards_backup_unless_forced(
    board: MockBoard, groups: list[str], tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    before = on_board(board)
    wrote = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, "--backup", backups,
                *groups)  # fmt: skip
    assert wrote.exit_code == 0, wrote.output
    (saved,) = backups.glob("*-mfg_nvs-*.bin")
    meta = recovery.record_path(saved)
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps({**record, "mac": "02:00:00:00:00:09"}))
    refused = run("restore", "--port", board.url, *CONNECT, saved)
    assert refused.exit_code == 3, refused.output
    assert (
        "is a backup of board 02:00:00:00:00:09" in refused.output and "--force" in refused.output
    )
    holds(board, groups)  # untouched
    forced = run("restore", "--port", board.url, *CONNECT, "--force", saved)
    assert forced.exit_code == 0, forced.output
    assert on_board(board) == before


def sound_backup(tmp_path: Path) -> tuple[Path, bytes]:
    """A client_ca backup of an esp32 (erased bytes) with its record, made without a board."""
    data = b"\xff" * 0x2000
    saved = tmp_path / "240ac4000001-client_ca-20261207T100000.bin"
    record = recovery.BackupRecord("client_ca", 0x3A000, len(data), hashlib.sha256(data).hexdigest(),
                                   recovery.now(), "esp32", "24:0a:c4:00:00:01")  # fmt: skip
    recovery.save(saved, data, record)
    return saved, data


def test_restore_refuses_a_backup_that_does_not_match_its_record(
    tmp_path: Path, dead_port: str
) -> None:
    saved, data = sound_backup(tmp_path)
    saved.write_bytes(b"\x00" + data[1:])
    changed = run("restore", "--port", dead_port, saved)
    assert changed.exit_code == 2, changed.output
    assert "SHA-256 does not match its record" in changed.output
    bare = tmp_path / "bare.bin"
    bare.write_bytes(data)
    missing = run("restore", "--port", dead_port, bare)
    assert missing.exit_code == 2 and "has no backup record" in missing.output


def test_restore_of_a_board_not_reached_is_a_failed_board_not_an_error(
    tmp_path: Path, dead_port: str
) -> None:
    """A sound backup, a board that does not answer: the board's result says why, exit 3."""
    saved, _data = sound_backup(tmp_path)
    failed = run("restore", "--port", dead_port, *CONNECT, "--json", saved)
    assert failed.exit_code == 3, failed.output
    shown = json.loads(failed.stdout)
    assert "nothing is listening" in shown["error"]
    assert [p["status"] for p in shown["partitions"]] == ["not-started"]


def test_restore_over_at_puts_a_pki_partition_back(raw: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    with AtSimulator(find_profile("esp32")) as sim:
        port = sim.start_tcp()
        old = sim.partition_bytes("client_ca")
        wrote = run("write", "--via", "at", "--port", port, "--backup", backups,
                    "client_ca", raw / "client_ca" / "client_ca_00.crt")  # fmt: skip
        assert wrote.exit_code == 0, wrote.output
        (saved,) = backups.glob("*-client_ca-*.bin")
        restored = run("restore", "--via", "at", "--port", port, saved)
        assert restored.exit_code == 0, restored.output
        assert sim.partition_bytes("client_ca") == old


def test_restore_over_at_puts_mfg_nvs_back_whole(raw: Path, tmp_path: Path) -> None:
    """AT+SYSFLASH reaches mfg_nvs: the whole partition goes back, and the firmware must restart."""
    backups = tmp_path / "backups"
    with AtSimulator(find_profile("esp32c3"), firmware="3.x") as sim:
        port = sim.start_tcp()
        old = sim.partition_bytes("mfg_nvs")
        wrote = run("write", "--via", "at", "--port", port, "--backup", backups,
                    "client_cert", raw / "client_cert" / "client_cert_00.crt")  # fmt: skip
        assert wrote.exit_code == 0, wrote.output
        assert sim.partition_bytes("mfg_nvs") != old
        (saved,) = backups.glob("*-mfg_nvs-*.bin")
        assert saved.read_bytes() == old
        restored = run("restore", "--via", "at", "--port", port, saved)
        assert restored.exit_code == 0, restored.output
        assert "restart the module" in restored.output
        assert sim.partition_bytes("mfg_nvs") == old


def test_the_journal_files_are_backups_restore_takes(board: MockBoard, groups: list[str]) -> None:
    before = on_board(board)
    cut_write(board, groups, CUTS[1], backups=None)
    journal = recovery.default_state_dir() / recovery.JOURNAL_FOLDER
    stem = board.mac.replace(":", "") if board.mac else ""
    undone = run("restore", "--port", board.url, *CONNECT, journal / f"{stem}-mfg_nvs.before.bin")
    assert undone.exit_code == 0, undone.output
    assert on_board(board) == before
    done = run("restore", "--port", board.url, *CONNECT, journal / f"{stem}-mfg_nvs.bin")
    assert done.exit_code == 0, done.output
    holds(board, groups)


def test_a_journal_that_cannot_be_kept_is_a_warning_not_a_failure(
    board: MockBoard, groups: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("ATFLASH_STATE_DIR", str(blocked))
    result = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, "--json", *groups)
    assert result.exit_code == 0, result.output
    (warning,) = [w for w in json.loads(result.stdout)["warnings"] if "no journal kept" in w]
    assert "atflash restore" in warning
    holds(board, groups)


def test_at_namespace_backups_go_back_with_write(raw: Path, tmp_path: Path) -> None:
    """The per-credential files a 3.1+ backup over AT saves: `write --via at` puts them back."""
    backups = tmp_path / "backups"
    certs = sorted((raw / "client_cert").iterdir())
    with AtSimulator(find_profile("esp32c3"), firmware="3.x") as sim:
        port = sim.start_tcp()
        first = run("write", "--via", "at", "--port", port, "client_cert", *certs)
        assert first.exit_code == 0, first.output
        second = run("write", "--via", "at", "--port", port, "--backup", backups,
                     "client_cert", raw / "client_ca" / "client_ca_00.crt")  # fmt: skip
        assert second.exit_code == 0, second.output
        saved = sorted(backups.glob("*-client_cert.*-*.bin"))
        assert len(saved) == 2 and not recovery.record_path(saved[0]).exists()
        back = run("write", "--via", "at", "--port", port, "client_cert", *saved)
        assert back.exit_code == 0, back.output
        items = sim.mfg_items()
        assert mfgnvs.credentials(items, "client_cert") == [c.read_bytes() for c in certs]
        refused = run("restore", "--via", "at", "--port", port, saved[0])
        assert refused.exit_code == 2 and "goes back with 'atflash write" in refused.output


def test_a_cut_write_as_a_real_rom_leaves_it_is_completed_too(
    board: MockBoard, groups: list[str]
) -> None:
    """A real ROM loader erases the region before writing: the cut leaves erased flash behind.

    The mock writes over old bytes without erasing, so the test erases
    what the cut did not reach, as the chip would have.
    """
    cut_write(board, groups, CUTS[1], backups=None)
    stem = board.mac.replace(":", "") if board.mac else ""
    meant = (
        recovery.default_state_dir() / recovery.JOURNAL_FOLDER / f"{stem}-mfg_nvs.bin"
    ).read_bytes()
    now = on_board(board)
    reached = next(i for i, (a, b) in enumerate(zip(now, meant, strict=True)) if a != b)
    preload(board, STORE.offset + reached, b"\xff" * (STORE.size - reached))
    again = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, *groups)
    assert again.exit_code == 0, again.output
    assert "completing it from its journal" in again.output
    holds(board, groups)
