"""Bench files: keys, types, paths relative to the file, and complete offline checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from atflash.cli import cli
from atflash.errors import InputError, ManifestError, PairingError
from atflash.run.config import BenchConfig, CheckedConfig, load_config
from atflash.run.runner import check_plans
from atflash.run.spec import merge


def check_config(config: BenchConfig) -> CheckedConfig:
    """What a run of this bench file alone would build."""
    return check_plans(merge({}, config))


@pytest.fixture
def bench(tmp_path: Path, raw: Path) -> Path:
    folder = tmp_path / "bench"
    (folder / "certs").mkdir(parents=True)
    shutil.copy(raw / "client_cert" / "client_cert_00.crt", folder / "certs" / "client.crt")
    shutil.copy(raw / "client_key" / "client_key_00.key", folder / "certs" / "client.key")
    shutil.copy(raw / "client_key" / "client_key_01.key", folder / "certs" / "other.key")
    shutil.copy(raw / "client_ca" / "client_ca_00.crt", folder / "certs" / "ca.crt")
    return folder


def write(folder: Path, text: str) -> Path:
    path = folder / "bench.toml"
    path.write_text(text)
    return path


FULL = """
chip = "esp32"
baud = 460800
before = "no-reset"
ports = ["/dev/ttyUSB*", "socket://127.0.0.1:5000"]
vid_pid = "10C4:EA60"
jobs = 4
retry = 2
skip_unchanged = false
report = "out/report.json"
backup = "backups"

[partitions]
client_ca = "certs/ca.crt"
client_cert = ["certs/client.crt"]
client_key = ["certs/*.key"]
"""


def test_full_file_loads_with_paths_from_its_folder(bench: Path) -> None:
    config = load_config(write(bench, FULL.replace('"certs/*.key"', '"certs/client.key"')))
    assert config.chip == "esp32" and config.baud == 460800 and config.jobs == 4
    assert config.ports == ("/dev/ttyUSB*", "socket://127.0.0.1:5000")
    assert config.skip_unchanged is False and config.retry == 2
    assert config.report == str(bench / "out" / "report.json")
    assert [r.partition for r in config.partitions] == ["client_ca", "client_cert", "client_key"]
    assert config.partitions[2].files == (str(bench / "certs" / "client.key"),)
    checked = check_config(config)
    assert checked.profiles[0].name == "esp32"  # the chip's usual layout first, then its family
    assert {p.chip for p in checked.profiles} == {"esp32"}
    assert len(checked.plans[0].images) == 3


def test_globs_expand_in_natural_order_and_pairing_is_checked(bench: Path) -> None:
    config = load_config(write(bench, FULL))
    assert [Path(f).name for f in config.partitions[2].files] == ["client.key", "other.key"]
    mismatched = FULL.replace('"certs/*.key"', '"certs/other.key"')
    with pytest.raises(PairingError, match=r"client\.crt"):
        check_config(load_config(write(bench, mismatched)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('chp = "esp32"\n', "unknown key 'chp'"),
        ('baud = "fast"\n', "baud must be a number"),
        ("jobs = true\n", "jobs must be a number"),
        ("jobs = 0\n", "jobs = 0 is outside 1..256"),
        ('before = "reset"\n', "before = 'reset': must be one of"),
        ('vid_pid = "CP2102"\n', "not VID:PID"),
        ('ports = "tcp://x:1"\n', "unknown URL scheme"),
        ("ports = []\n", "ports must be a port name"),
        ("[partitions]\nclient_ca = 3\n", "partitions.client_ca must be a file name"),
        (
            '[partitions]\nclient_ca = "certs/none*.crt"\n',
            "partitions.client_ca: .*no file matches",
        ),
        ("chip = \n", "not valid TOML"),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_file(bench: Path, text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as caught:
        load_config(write(bench, text))
    assert str(caught.value).startswith(str(bench / "bench.toml"))
    assert "\n" not in str(caught.value)


def test_check_refuses_what_would_not_fit_or_exist(bench: Path) -> None:
    # No chip: as esptool, the board will say what it is; every chip's layouts are candidates.
    anychip = check_config(load_config(write(bench, '[partitions]\nclient_ca = "certs/ca.crt"\n')))
    assert {"esp32", "esp32c3"} <= {p.chip for p in anychip.profiles}
    with pytest.raises(InputError, match="nothing to write"):
        check_config(load_config(write(bench, 'chip = "esp32"\n')))
    with pytest.raises(InputError, match="no partition 'client_crt'"):
        check_config(
            load_config(
                write(bench, 'chip = "esp32"\n[partitions]\nclient_crt = "certs/client.crt"\n')
            )
        )
    with pytest.raises(ManifestError, match="cannot read"):
        load_config(bench / "absent.toml")


def test_manifest_in_a_bench_file_is_checked_row_by_row(bench: Path) -> None:
    (bench / "devices.csv").write_text(
        "port,client_cert,client_key\n/dev/ttyUSB0,certs/client.crt,certs/other.key\n"
    )
    config = load_config(write(bench, 'chip = "auto"\nmanifest = "devices.csv"\n'))
    with pytest.raises(ManifestError, match=r"devices.csv:2: certificate"):
        check_config(config)


def test_check_command_reports_ok_and_errors(bench: Path) -> None:
    good = write(bench, FULL.replace('"certs/*.key"', '"certs/client.key"'))
    result = CliRunner().invoke(cli, ["check", "--config", str(good)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.stdout and "client_key" in result.stdout
    bad = write(bench, 'chip = "esp32"\nretries = 2\n')
    result = CliRunner().invoke(cli, ["check", "--config", str(bad)])
    assert result.exit_code == 2
    assert "unknown key 'retries'" in result.stderr
    assert "Traceback" not in result.output


def test_a_bench_file_may_choose_the_at_path(tmp_path: Path) -> None:
    bench = tmp_path / "bench.toml"
    bench.write_text('via = "at"\nchunk_size = 1024\n')
    config = load_config(bench)
    assert (config.via, config.chunk_size) == ("at", 1024)
    bench.write_text('via = "jtag"\n')
    with pytest.raises(ManifestError, match="via"):
        load_config(bench)


def test_check_command_checks_a_stations_slots(bench: Path) -> None:
    good = FULL.replace('"certs/*.key"', '"certs/client.key"')
    slots = write(bench, 'slots = ["/dev/ttyUSB0", { location = "1-1.3", name = "B" }]\n' + good)
    assert CliRunner().invoke(cli, ["check", "--config", str(slots)]).exit_code == 0
    for bad, message in [
        ('slots = [{ port = "/dev/ttyUSB0", pot = 1 }]\n', "slot 1: unknown key 'pot'"),
        (
            'slots = ["/dev/ttyUSB0", { port = "/dev/ttyUSB1", name = "1" }]\n',
            "two slots are named '1'",
        ),
        # The slot's own rule, named with the file it is in.
        (
            'slots = [{ port = "/dev/ttyUSB0", location = "1-1" }]\n',
            f"{slots}: slot 1: give exactly one",
        ),
    ]:
        result = CliRunner().invoke(cli, ["check", "--config", str(write(bench, bad + good))])
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.splitlines()
        assert message in line and line.startswith("atflash: error: "), line
