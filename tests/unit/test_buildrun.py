"""``atflash build``'s options checked before anything is read: one table of refusals."""

from __future__ import annotations

import pytest

from atflash.errors import InputError
from atflash.factory.buildrun import BuildOptions, build_mode, prepare_devices
from atflash.planning.plan import PlanOptions

UNPADDED = PlanOptions(pad=False)


@pytest.mark.parametrize(
    ("given", "common", "mode"),
    [
        (BuildOptions(chip="esp32"), True, "layout"),
        (BuildOptions(manifest="m.csv"), False, "devices"),
        (BuildOptions(pool="p", image="f.bin", force=True), True, "devices"),
        (BuildOptions(issue="i.toml", macs="macs.csv", image="f.bin"), False, "issued"),
    ],
)
def test_build_mode_follows_the_options(given: BuildOptions, common: bool, mode: str) -> None:
    assert build_mode(given, common=common) == mode


@pytest.mark.parametrize(
    ("given", "common", "says"),
    [
        (BuildOptions(issue="i.toml"), False, "--issue and --macs go together"),
        (BuildOptions(macs="macs.csv"), False, "--issue and --macs go together"),
        (BuildOptions(issue="i.toml", macs="m.csv", manifest="x"), False, "go together"),
        (BuildOptions(issue="i.toml", macs="m.csv"), True, "without --manifest, --pool or PART"),
        (BuildOptions(image="f.bin"), True, "--image, --partition-table-offset and --force are"),
        (BuildOptions(table_offset=0x9000), True, "give --manifest or --pool"),
        (BuildOptions(chip="esp32"), False, "nothing to do"),
    ],
)
def test_build_mode_refuses_options_that_do_not_go_together(
    given: BuildOptions, common: bool, says: str
) -> None:
    with pytest.raises(InputError, match=says):
        build_mode(given, common=common)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (BuildOptions(manifest="m", pool="p"), "give --manifest or --pool, not both"),
        (BuildOptions(manifest="m", image="f.bin", factory_param="module"),
         "--factory-param does not go with --image"),
        (BuildOptions(pool="p", image="f.bin", options=UNPADDED), "--no-pad does not go with"),
        (BuildOptions(manifest="m", chip="esp32", force=True), "are for --image"),
        (BuildOptions(manifest="m", chip="esp32", table_offset=0x9000), "are for --image"),
        (BuildOptions(manifest="m", chip="esp32", factory_param="module"), "PKI partitions"),
        (BuildOptions(manifest="m", chip="esp32c3-3x", options=UNPADDED), "--no-pad: an mfg_nvs"),
        (BuildOptions(manifest="m"), "no chip given"),
    ],
)  # fmt: skip
def test_prepare_devices_refuses_before_reading_anything(given: BuildOptions, says: str) -> None:
    with pytest.raises(InputError, match=says):
        prepare_devices(given)


def test_prepare_devices_makes_the_shared_spec() -> None:
    run = prepare_devices(BuildOptions(manifest="m", chip="esp32c3-3x"))
    assert run.spec.profile.name == "esp32c3-3x" and run.spec.base is not None
    assert "client_cert" in run.partition_names and run.inputs == () and run.warnings == ()
