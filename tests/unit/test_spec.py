"""A run's settings merged once: typed, bench file, environment, defaults, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from atflash.errors import InputError
from atflash.layout.choice import LayoutChoice
from atflash.run.config import load_config
from atflash.run.spec import RunSpec, merge


def bench(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(text)
    return path


def test_typed_beats_the_bench_file_which_beats_the_environment_and_defaults(
    tmp_path: Path,
) -> None:
    config = load_config(bench(tmp_path, 'chip = "esp32"\njobs = 4\nretry = 2\nbaud = 460800\n'))
    spec = merge({"jobs": 8}, config, env={"retry": 5, "report": "env.json"}, environ={})
    assert (spec.jobs, spec.retry, spec.report) == (8, 2, "env.json")
    assert spec.link["baud"] == 460800 and spec.layout == LayoutChoice("chip", chip="esp32")
    assert spec.bench == config.source
    plain = merge({}, environ={})
    assert plain == RunSpec(link=plain.link)  # nothing given: the defaults, any chip
    assert plain.layout.kind == "auto" and plain.skip_unchanged and plain.retry == 0


def test_esptools_own_variables_are_the_last_defaults_of_the_esptool_path() -> None:
    environ = {"ESPTOOL_PORT": "/dev/ttyUSB7", "ESPTOOL_BAUD": "460800"}
    spec = merge({}, environ=environ)
    assert spec.ports == ("/dev/ttyUSB7",) and spec.link["baud"] == 460800
    assert merge({"ports": ("/dev/ttyUSB1",), "baud": 115200}, environ=environ).ports == (
        "/dev/ttyUSB1",
    )
    at = merge({"via": "at"}, environ=environ)
    assert at.ports == () and at.link["baud"] is None  # the AT path has no such variables
    with pytest.raises(InputError, match="ESPTOOL_BAUD='fast' is not a baud rate"):
        merge({}, environ={"ESPTOOL_BAUD": "fast"})


def test_an_option_foreign_to_the_backend_is_refused_when_chosen_and_dropped_from_the_environment(
    tmp_path: Path,
) -> None:
    with pytest.raises(InputError, match="--chunk-size does not apply to --via esptool"):
        merge({"chunk_size": 512}, environ={})
    with pytest.raises(InputError, match="--before does not apply to --via at"):
        merge({}, load_config(bench(tmp_path, 'via = "at"\nbefore = "no-reset"\n')), environ={})
    spec = merge({"via": "at"}, env={"before": "no-reset", "chunk_size": 256}, environ={})
    assert spec.link == {"baud": None, "connect_attempts": None, "chunk_size": 256}


def test_verify_takes_no_write_options_and_run_only_values_never_come_from_a_bench_file(
    tmp_path: Path,
) -> None:
    config = load_config(bench(tmp_path, "force = true\nskip_unchanged = false\n"))
    spec = merge({}, config, action="verify", environ={})
    assert (spec.force, spec.skip_unchanged, spec.backup) == (False, True, None)
    assert merge({}, config, environ={}).force is True
    with pytest.raises(InputError, match="--on-ledger-error goes with --pool"):
        merge({"on_ledger_error": "continue"}, environ={})
