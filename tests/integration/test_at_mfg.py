"""ESP-AT 3.1+ over the AT port: credential namespaces of mfg_nvs through AT+SYSMFG, end to end.

The real client against the simulator in its 3.x mode. What landed is
checked by parsing the simulator's NVS image (``sim.mfg_items()``), never
through atflash's own read path; the commands it received show what was
written, skipped and erased.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import atflash
from atflash import recovery
from atflash.backends.at.backend import AtBackend
from atflash.backends.at.client import AtClient, AtConnectOptions
from atflash.backends.at.protocol import MFG_VALUE_MAX, PORT_BUSY_LINE
from atflash.backends.base import WriteOptions, verify_board, write_board
from atflash.content import mfgnvs, pki
from atflash.content.describe import inspect_bytes
from atflash.content.nvs import NvsItem, build_nvs
from atflash.errors import FirmwareError, InputError
from atflash.layout.profiles import find_profile
from atflash.planning.plan import (
    PartitionImage,
    PartitionRequest,
    PlanOptions,
    WritePlan,
    build_plan,
)
from atflash.sim.at import BUSY_LINE, AtSimulator
from tests.support.cli import run
from tests.support.samples import CAS, CERTS, KEYS, RAW
from tools.certs import certificate

from .conftest import serve

CREDENTIALS = ("client_cert", "client_key", "client_ca")


def plan_for(profile: str, **namespaces: tuple[Path, ...]) -> WritePlan:
    requests = [PartitionRequest(ns, tuple(map(str, files))) for ns, files in namespaces.items()]
    return build_plan(find_profile(profile), requests)


def c3_plan(**namespaces: tuple[Path, ...]) -> WritePlan:
    return plan_for("esp32c3-3x", **namespaces)


def firmware_view(sim: AtSimulator, namespace: str) -> list[bytes]:
    """What the firmware reads in ``namespace``, from the NVS image; no key it would not read."""
    items = sim.mfg_items()
    assert not mfgnvs.unreachable_keys(items, namespace), namespace
    return mfgnvs.credentials(items, namespace)


def keys_of(sim: AtSimulator, namespace: str) -> list[str]:
    return [i.key for i in sim.mfg_items() if i.namespace == namespace]


def others(sim: AtSimulator) -> list[NvsItem]:
    """Every item outside the credential namespaces (factory_param, ble_data, ...)."""
    return [i for i in sim.mfg_items() if i.namespace not in mfgnvs.CREDENTIAL_NAMESPACES]


def sysmfg_writes(sim: AtSimulator) -> list[str]:
    """The AT+SYSMFG commands that change the NVS image (write and erase)."""
    return [c for c in sim.commands if c.startswith(("AT+SYSMFG=2", "AT+SYSMFG=0"))]


@pytest.fixture
def sim() -> Iterator[AtSimulator]:
    """An ESP32-C3 running ESP-AT 3.1+: mfg_nvs and fatfs, factory_param and ble_data seeded."""
    with AtSimulator(find_profile("esp32c3"), firmware="3.x") as module:
        yield module


def preload(sim: AtSimulator, extra: list[NvsItem]) -> None:
    """Give the module an earlier mfg_nvs: its own items plus ``extra``."""
    part = sim.partition("mfg_nvs")
    sim.load("mfg_nvs", build_nvs([*sim.mfg_items(), *extra], part.size))


def big_certificate(size: int) -> bytes:
    """A real self-signed certificate (PEM) of at least ``size`` bytes."""
    names = [x509.DNSName(f"host-{n:04d}.example.com") for n in range(size // 30)]
    cert = certificate(
        ec.generate_private_key(ec.SECP256R1()),
        common_name="big",
        serial=None,
        not_before=datetime.datetime.now(datetime.timezone.utc),
        days=30,
        ca=True,
        extensions=[x509.SubjectAlternativeName(names)],
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert len(pem) >= size
    return pem


# -- writing ---------------------------------------------------------------------------------


def test_write_lands_as_nvs_items_and_keeps_the_rest(sim: AtSimulator, transport: str) -> None:
    before = others(sim)
    assert {i.namespace for i in before} == {"factory_param", "ble_data"}
    plan = c3_plan(client_cert=CERTS, client_key=KEYS, client_ca=CAS[:1])
    result = write_board(AtBackend(), AtConnectOptions(serve(sim, transport)), [plan])
    assert result.ok, result.error
    assert [p.status for p in result.partitions] == ["written"] * 3
    assert result.chip == "esp32c3" and result.profile == "esp32c3-3x"
    assert keys_of(sim, "client_cert") == ["client_cert.0", "client_cert.1"]
    assert keys_of(sim, "client_key") == ["client_key.0", "client_key.1"]
    assert keys_of(sim, "client_ca") == ["client_ca.0"]
    assert firmware_view(sim, "client_cert") == [f.read_bytes() for f in CERTS]
    assert firmware_view(sim, "client_key") == [f.read_bytes() for f in KEYS]
    assert firmware_view(sim, "client_ca") == [CAS[0].read_bytes()]
    assert others(sim) == before  # factory_param and ble_data, item for item
    entry = result.partitions[1]
    assert entry.address == sim.partition("mfg_nvs").offset
    assert entry.size == sum(len(f.read_bytes()) for f in KEYS)
    # Each item went in as one binary write of its own length.
    assert f'AT+SYSMFG=2,"client_key","client_key.1",8,{len(KEYS[1].read_bytes())}' in sim.commands
    assert not any(c.startswith("AT+SYSFLASH=") and c != "AT+SYSFLASH?" for c in sim.commands)


def test_fewer_items_remove_the_stale_ones(sim: AtSimulator) -> None:
    url = sim.start_tcp()
    first = c3_plan(client_cert=CERTS, client_key=KEYS)
    assert write_board(AtBackend(), AtConnectOptions(url), [first]).ok
    sim.commands.clear()
    # Certificate 1 alone does not pair with the board's key 0: this is about the items only.
    unpaired = WriteOptions(pair_check=False)
    plan = c3_plan(client_cert=CERTS[1:])
    result = write_board(AtBackend(), AtConnectOptions(url), [plan], options=unpaired)
    assert result.ok, result.error
    assert keys_of(sim, "client_cert") == ["client_cert.0"]
    assert firmware_view(sim, "client_cert") == [CERTS[1].read_bytes()]
    assert firmware_view(sim, "client_key") == [f.read_bytes() for f in KEYS]  # not planned
    assert sysmfg_writes(sim) == [
        'AT+SYSMFG=0,"client_cert","client_cert.1"',  # erased first: no gap meanwhile
        f'AT+SYSMFG=2,"client_cert","client_cert.0",8,{len(CERTS[1].read_bytes())}',
    ]


def test_keys_the_firmware_never_reads_are_erased(sim: AtSimulator) -> None:
    cert = CERTS[0].read_bytes()
    preload(
        sim,
        [
            NvsItem("client_cert", "client_cert", "binary", cert),  # mfg_nvs.py's bare key
            NvsItem("client_cert", "client_cert.2", "binary", cert),  # after a gap
            NvsItem("client_ca", "client_ca.0", "string", "not a binary item"),
        ],
    )
    plan = c3_plan(client_cert=CERTS[:1], client_ca=CAS[:1])
    result = write_board(AtBackend(), AtConnectOptions(sim.start_tcp()), [plan])
    assert result.ok, result.error
    assert keys_of(sim, "client_cert") == ["client_cert.0"]
    assert firmware_view(sim, "client_cert") == [cert]
    assert [(i.key, i.type) for i in sim.mfg_items() if i.namespace == "client_ca"] == [
        ("client_ca.0", "binary")
    ]
    erased = [c for c in sysmfg_writes(sim) if c.startswith("AT+SYSMFG=0")]
    assert erased == [
        'AT+SYSMFG=0,"client_cert","client_cert.2"',
        'AT+SYSMFG=0,"client_cert","client_cert"',
    ]


def test_skip_unchanged_items_and_namespaces(sim: AtSimulator) -> None:
    url = sim.start_tcp()
    plan = c3_plan(client_cert=CERTS, client_key=KEYS, client_ca=CAS)
    assert write_board(AtBackend(), AtConnectOptions(url), [plan]).ok
    sim.commands.clear()
    again = write_board(AtBackend(), AtConnectOptions(url), [plan])
    assert again.ok, again.error
    assert [p.status for p in again.partitions] == ["unchanged"] * 3
    assert sysmfg_writes(sim) == []
    # One item of a namespace differs: only that item is written.
    sim.commands.clear()
    changed = c3_plan(client_cert=(CERTS[0], CAS[1]))  # a CA as certificate 1: no pair check
    unpaired = WriteOptions(pair_check=False)
    result = write_board(AtBackend(), AtConnectOptions(url), [changed], options=unpaired)
    assert result.ok and [p.status for p in result.partitions] == ["written"]
    assert sysmfg_writes(sim) == [
        f'AT+SYSMFG=2,"client_cert","client_cert.1",8,{len(CAS[1].read_bytes())}'
    ]
    assert firmware_view(sim, "client_cert") == [CERTS[0].read_bytes(), CAS[1].read_bytes()]


# -- refusals: nothing written ------------------------------------------------------------------


def test_two_values_for_a_single_item_namespace_are_refused(sim: AtSimulator) -> None:
    files = (RAW / "mqtt_ca" / "mqtt_ca.crt", CAS[0])
    with pytest.raises(InputError, match="mqtt_ca: 2 values given, but this namespace holds one"):
        plan_for("esp32c3-3x", mqtt_ca=files)
    # A plan made by hand (a Python caller) is refused by the session, before any write.
    good = plan_for("esp32c3-3x", mqtt_ca=files[:1])
    image = good.images[0]
    two = PartitionImage(
        image.partition, b"", tuple(map(str, files)), values=tuple(f.read_bytes() for f in files)
    )
    plan = WritePlan(good.profile, (two,))
    before = bytes(sim.flash)
    result = write_board(AtBackend(), AtConnectOptions(sim.start_tcp()), [plan])
    assert result.error is not None and "this namespace holds one" in result.error
    assert result.partitions[0].status == "not-started"
    assert sysmfg_writes(sim) == [] and bytes(sim.flash) == before


def test_value_over_the_sysmfg_limit_is_refused_before_writing(
    sim: AtSimulator, tmp_path: Path
) -> None:
    big = tmp_path / "big_ca.crt"
    big.write_bytes(big_certificate(9000))
    size = len(big.read_bytes())
    assert size > MFG_VALUE_MAX
    plan = build_plan(
        find_profile("esp32c3-3x"),
        [
            PartitionRequest("client_cert", (str(CERTS[0]),)),
            PartitionRequest("client_ca", (str(big),)),
        ],
        options=PlanOptions(pair_check=False),
    )
    before = bytes(sim.flash)
    result = write_board(AtBackend(), AtConnectOptions(sim.start_tcp()), [plan])
    assert result.error is not None
    for part in ("client_ca", str(big), f"{size} bytes", "8191", "--via esptool"):
        assert part in result.error, part
    assert "\n" not in result.error
    assert [p.status for p in result.partitions] == ["not-started"] * 2
    assert sysmfg_writes(sim) == [] and bytes(sim.flash) == before


def test_module_and_plans_disagree_on_the_store() -> None:
    """A 3.1+ module offered only 2.x layouts (and the reverse): one reason, nothing written."""
    with AtSimulator(find_profile("esp32c3"), firmware="3.x") as sim:
        before = bytes(sim.flash)
        result = write_board(
            AtBackend(), AtConnectOptions(sim.start_tcp()), [plan_for("esp32c3", client_cert=CERTS)]
        )
        assert result.error is not None
        assert "keeps credentials in mfg_nvs (ESP-AT 3.1+)" in result.error
        assert "pass --chip esp32c3-3x" in result.error
        assert sysmfg_writes(sim) == [] and bytes(sim.flash) == before
    with AtSimulator(find_profile("esp32c3")) as sim2:
        before = bytes(sim2.flash)
        result = write_board(
            AtBackend(), AtConnectOptions(sim2.start_tcp()), [c3_plan(client_cert=CERTS)]
        )
        assert result.error is not None
        assert "keeps credentials in PKI partitions (ESP-AT 2.x)" in result.error
        assert "pass --chip esp32c3" in result.error
        assert bytes(sim2.flash) == before


# -- choosing the plan: the module's store and the chip AT+GMR names -------------------------


@pytest.mark.parametrize(("chip", "expected"), [("esp32c3", "esp32c3-3x"), ("esp32", "esp32-3x")])
def test_chip_and_layout_learned_from_the_module(chip: str, expected: str) -> None:
    """Without --chip, every chip's 2.x and 3.1+ layouts are candidates; the module picks."""
    candidates = [
        plan_for(name, client_cert=CERTS, client_key=KEYS)
        for name in ("esp32", "esp32c3", "esp32c2", "esp32-3x", "esp32c2-3x", "esp32c3-3x")
    ]
    with AtSimulator(find_profile(chip), firmware="3.x") as sim:
        result = write_board(AtBackend(), AtConnectOptions(sim.start_tcp()), candidates)
        assert result.ok, result.error
        assert (result.chip, result.profile) == (chip, expected)
        assert not result.warnings  # the chosen layout is the module's own
        assert firmware_view(sim, "client_key") == [f.read_bytes() for f in KEYS]
    with AtSimulator(find_profile(chip)) as sim2:  # the same chip on ESP-AT 2.x
        result = write_board(AtBackend(), AtConnectOptions(sim2.start_tcp()), candidates)
        assert result.ok, result.error
        assert (result.chip, result.profile) == (chip, chip)


def test_a_chip_without_a_planned_layout_takes_another_with_a_warning() -> None:
    """Over AT the module's table places the images: a chip no layout was planned for is served."""
    s3 = dataclasses.replace(find_profile("esp32"), chip="esp32s3")  # no built-in ESP32-S3 layout
    with AtSimulator(s3, firmware="3.x") as sim:
        candidates = [plan_for(name, client_ca=CAS) for name in ("esp32c3-3x", "esp32-3x")]
        result = write_board(AtBackend(), AtConnectOptions(sim.start_tcp()), candidates)
        assert result.ok, result.error
        assert (result.chip, result.profile) == ("esp32s3", "esp32-3x")  # its table's layout
        assert result.warnings == [
            "AT+GMR names an esp32s3, but no layout for it was planned: using esp32-3x (esp32), "
            "placed by the module's own table"
        ]
        assert firmware_view(sim, "client_ca") == [f.read_bytes() for f in CAS]


# -- verify, backup, read ---------------------------------------------------------------------


def test_verify_match_then_differs(sim: AtSimulator, transport: str) -> None:
    url = serve(sim, transport)
    plan = c3_plan(client_cert=CERTS, client_key=KEYS)
    assert write_board(AtBackend(), AtConnectOptions(url), [plan]).ok
    sim.commands.clear()
    verified = verify_board(AtBackend(), AtConnectOptions(url), [plan])
    assert verified.ok and [p.status for p in verified.partitions] == ["match"] * 2
    # A stale third certificate: the firmware would read three sets.
    preload(sim, [NvsItem("client_cert", "client_cert.2", "binary", CAS[0].read_bytes())])
    again = verify_board(AtBackend(), AtConnectOptions(url), [plan])
    assert [p.status for p in again.partitions] == ["differs", "match"]
    # One byte of a key changed.
    items = [i for i in sim.mfg_items() if i.key != "client_cert.2"]
    at = next(n for n, i in enumerate(items) if i.key == "client_key.1")
    changed = KEYS[1].read_bytes()[:-1] + b"\n\n"
    items[at] = NvsItem("client_key", "client_key.1", "binary", changed)
    sim.load("mfg_nvs", build_nvs(items, sim.partition("mfg_nvs").size))
    third = verify_board(AtBackend(), AtConnectOptions(url), [plan])
    assert not third.ok and [p.status for p in third.partitions] == ["match", "differs"]
    assert sysmfg_writes(sim) == []


def test_backup_then_restore(sim: AtSimulator, tmp_path: Path) -> None:
    url = sim.start_tcp()
    old = c3_plan(client_cert=CERTS, client_ca=CAS[:1])
    assert write_board(AtBackend(), AtConnectOptions(url), [old]).ok
    backups = tmp_path / "backups"
    mqtt_ca = RAW / "mqtt_ca" / "mqtt_ca.crt"
    new = c3_plan(client_cert=CAS[1:], client_ca=CAS[1:], mqtt_ca=(mqtt_ca,))
    result = write_board(
        AtBackend(), AtConnectOptions(url), [new], options=WriteOptions(backup_dir=backups)
    )
    assert result.ok, result.error
    assert firmware_view(sim, "client_cert") == [CAS[1].read_bytes()]
    assert firmware_view(sim, "mqtt_ca") == [mqtt_ca.read_bytes()]
    saved = sorted(p for p in backups.iterdir() if "-mfg_nvs-" not in p.name)
    assert [p.name.split("-")[1] for p in saved] == [
        "client_ca.0",
        "client_cert.0",
        "client_cert.1",
        "mqtt_ca.empty",  # there was none: the backup of "none"
    ]
    # And once the whole mfg_nvs (through AT+SYSFLASH) with its record, for `atflash restore`.
    (whole,) = backups.glob("*-mfg_nvs-*.bin")
    assert recovery.record_path(whole).exists()
    assert sorted(result.backups) == sorted(map(str, [*saved, whole]))
    assert all(p.stat().st_mode & 0o077 == 0 for p in saved)
    assert saved[0].read_bytes() == CAS[0].read_bytes()  # raw PEM, as the module held it

    # Restored from those files, as `atflash write --via at client_cert <files>` plans it.
    def named(namespace: str) -> tuple[Path, ...]:
        return tuple(p for p in saved if f"-{namespace}." in p.name)

    restore = c3_plan(
        client_cert=named("client_cert"), client_ca=named("client_ca"), mqtt_ca=named("mqtt_ca")
    )
    assert write_board(AtBackend(), AtConnectOptions(url), [restore]).ok
    assert firmware_view(sim, "client_cert") == [f.read_bytes() for f in CERTS]
    assert firmware_view(sim, "client_ca") == [CAS[0].read_bytes()]
    assert keys_of(sim, "mqtt_ca") == []


def test_read_and_table(sim: AtSimulator) -> None:
    url = sim.start_tcp()
    assert write_board(AtBackend(), AtConnectOptions(url), [c3_plan(client_cert=CERTS)]).ok
    with atflash.connect(url, via="at") as board:
        title, table = board.read_table()
        assert "AT version:3." in title
        assert [p.name for p in table or ()] == ["mfg_nvs", "fatfs"]
        dump = board.read("client_cert")
        part, data = dump.partition, dump.data
        assert (part.name, part.offset, part.size) == ("client_cert", 0x1F000, len(data))
        assert [i.content for i in pki.parse(data).items] == [f.read_bytes() for f in CERTS]
        shown = inspect_bytes(data, source=part.name)
        assert [(i.type, i.id) for i in shown.items] == [("cert", 0), ("cert", 1)]
        assert pki.parse(board.read("mqtt_ca").data).items == ()
        raw = board.read("mfg_nvs").data
        assert raw == sim.partition_bytes("mfg_nvs")  # a listed partition reads raw, as on 2.x
        with pytest.raises(FirmwareError, match="factory_param is neither a partition nor"):
            board.read("factory_param")


# -- one host at a time ---------------------------------------------------------------------------


def test_second_host_gets_port_busy(sim: AtSimulator, transport: str) -> None:
    assert PORT_BUSY_LINE.encode() + b"\r\n" == BUSY_LINE  # the client knows the simulator's line
    url = serve(sim, transport)
    with AtClient(AtConnectOptions(url)) as first:
        first.handshake()
        result = write_board(AtBackend(), AtConnectOptions(url), [c3_plan(client_cert=CERTS)])
        assert result.error == (
            f"{url}: the port is in use: another program (a second atflash, a serial monitor) "
            "has it open; close it first"
        )
        assert first.partitions()  # the first host keeps working
    assert sysmfg_writes(sim) == []
    assert write_board(AtBackend(), AtConnectOptions(url), [c3_plan(client_cert=CERTS)]).ok


# -- through the command line ---------------------------------------------------------------------


def test_cli_read_and_partitions(sim: AtSimulator) -> None:
    url = sim.start_tcp()
    assert write_board(AtBackend(), AtConnectOptions(url), [c3_plan(client_key=KEYS)]).ok
    shown = run("read", "--via", "at", "--port", url, "client_key")
    assert shown.exit_code == 0, shown.output
    assert "PKI bin, 2 item(s)" in shown.stdout
    table = run("partitions", "--via", "at", "--port", url)
    assert table.exit_code == 0 and "mfg_nvs" in table.stdout


def test_cli_write_via_at_to_esp_at_3(sim: AtSimulator) -> None:
    url = sim.start_tcp()
    result = run("write", "--via", "at", "--port", url, "--json",
                 "client_cert", str(CERTS[0]), "client_key", str(KEYS[0]))  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(p["name"], p["status"]) for p in report["partitions"]] == [
        ("client_cert", "written"),
        ("client_key", "written"),
    ]
    assert firmware_view(sim, "client_cert") == [CERTS[0].read_bytes()]
