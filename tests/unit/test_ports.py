"""Port resolution: repeated --port, globs, auto with filters, URLs, dedup by real path."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from atflash.errors import InputError, PortError
from atflash.ports import PortFilter, PortInfo, parse_vid_pid, resolve_ports
from atflash.seriallink import describe_open_error

CP2102 = PortInfo("/dev/ttyUSB0", 0x10C4, 0xEA60, "0001", "1-1.1", "CP2102N")
CH340 = PortInfo("/dev/ttyUSB10", 0x1A86, 0x7523, None, "1-1.2", "USB Serial")
CH340_2 = PortInfo("/dev/ttyUSB2", 0x1A86, 0x7523, None, "1-1.3", "USB Serial")
MOUSE = PortInfo("/dev/ttyACM0", 0x046D, 0xC52B, None, "2-1", "not a bridge")
SYSTEM = PortInfo("/dev/ttyS0")


def listed(*ports: PortInfo):
    return lambda: list(ports)


def devices(ports: list[PortInfo]) -> list[str]:
    return [p.device for p in ports]


def test_bridge_names_and_vid_pid_text() -> None:
    assert CP2102.bridge == "Silicon Labs CP210x"
    assert CH340.bridge == "WCH CH340"
    assert PortInfo("x", 0x303A, 0x1001).bridge == "Espressif USB-Serial-JTAG"
    assert MOUSE.bridge is None and SYSTEM.bridge is None
    assert CP2102.vid_pid == "10C4:EA60" and SYSTEM.vid_pid == ""


def test_auto_takes_known_bridges_in_natural_order() -> None:
    found = resolve_ports(["auto"], available=listed(CH340, MOUSE, CP2102, CH340_2, SYSTEM))
    assert devices(found) == ["/dev/ttyUSB0", "/dev/ttyUSB2", "/dev/ttyUSB10"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (PortFilter(vid_pid="1a86:7523"), ["/dev/ttyUSB2", "/dev/ttyUSB10"]),
        (PortFilter(vid_pid="10C4:"), ["/dev/ttyUSB0"]),
        (PortFilter(serial_number="0001"), ["/dev/ttyUSB0"]),
        (PortFilter(location="1-1.3"), ["/dev/ttyUSB2"]),
    ],
)
def test_auto_filters(filters: PortFilter, expected: list[str]) -> None:
    found = resolve_ports(["auto"], filters=filters, available=listed(CP2102, CH340, CH340_2))
    assert devices(found) == expected


def test_auto_matching_nothing_is_a_clear_error() -> None:
    with pytest.raises(PortError, match=r"auto: no serial port.*VID:PID 0403:6001"):
        resolve_ports(["auto"], filters=PortFilter(vid_pid="0403:6001"), available=listed(CP2102))


def test_glob_expands_naturally_and_refuses_no_match(tmp_path: Path) -> None:
    for n in (10, 2, 1):
        (tmp_path / f"ttyUSB{n}").touch()
    found = resolve_ports([str(tmp_path / "ttyUSB*")], available=listed())
    assert [Path(p.device).name for p in found] == ["ttyUSB1", "ttyUSB2", "ttyUSB10"]
    with pytest.raises(PortError, match="no port matches"):
        resolve_ports([str(tmp_path / "ttyACM*")], available=listed())


def test_glob_through_links_takes_usb_facts_and_dedups_by_real_path(tmp_path: Path) -> None:
    real = tmp_path / "ttyUSB0"
    real.touch()
    by_path = tmp_path / "by-path"
    by_path.mkdir()
    (by_path / "pci-usb-0:1.1").symlink_to(real)
    dev = PortInfo(str(real), 0x10C4, 0xEA60, "0001", "1-1.1")
    found = resolve_ports([str(by_path / "*"), str(real)], available=listed(dev))
    assert len(found) == 1
    assert found[0].device == str(by_path / "pci-usb-0:1.1")
    assert found[0].serial_number == "0001"


def test_repeated_ports_and_urls_pass_through_once() -> None:
    specs = ["socket://127.0.0.1:5000", "/dev/ttyUSB7", "rfc2217://h:1", "socket://127.0.0.1:5000"]
    found = resolve_ports(specs, available=listed())
    assert devices(found) == ["socket://127.0.0.1:5000", "/dev/ttyUSB7", "rfc2217://h:1"]


def test_bad_specs_are_refused() -> None:
    with pytest.raises(InputError, match="unknown URL scheme"):
        resolve_ports(["tcp://host:1"], available=listed())
    with pytest.raises(InputError, match="empty"):
        resolve_ports([" "], available=listed())
    with pytest.raises(InputError, match="not VID:PID"):
        parse_vid_pid("CP2102")


def test_open_errors_are_named_by_errno_before_text() -> None:
    # esptool's own words name every cause at once; the OS error decides.
    wrapped = RuntimeError("Could not open socket://x:1, the port is busy or doesn't exist.")
    wrapped.__context__ = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert "nothing is listening" in str(describe_open_error("socket://x:1", wrapped))
    busy = OSError(errno.EBUSY, "Device or resource busy")
    assert "in use" in str(describe_open_error("/dev/ttyUSB0", busy))
    denied = OSError(errno.EACCES, "Permission denied")
    assert "permission denied" in str(describe_open_error("/dev/ttyUSB0", denied))


# -- macOS and Windows port names -----------------------------------------------------------


def test_macos_lists_the_callout_device_not_its_tty_twin() -> None:
    from atflash.ports import prefer_callout

    ports = [
        PortInfo("/dev/cu.usbserial-1"),
        PortInfo("/dev/tty.usbserial-1"),
        PortInfo("/dev/tty.other"),
    ]
    assert [p.device for p in prefer_callout(ports)] == ["/dev/cu.usbserial-1", "/dev/tty.other"]


def test_macos_glob_takes_callout_devices_only() -> None:
    names = [
        "/dev/cu.usbserial-1",
        "/dev/tty.usbserial-1",
        "/dev/cu.usbserial-2",
        "/dev/tty.usbserial-2",
    ]
    found = resolve_ports(["/dev/*.usbserial-*"], available=lambda: [], expand=lambda _p: names)
    assert [p.device for p in found] == ["/dev/cu.usbserial-1", "/dev/cu.usbserial-2"]


@pytest.mark.parametrize("spec", ["/dev/tty.usbserial-1", "/dev/tty.usbserial-*"])
def test_macos_tty_port_is_refused_with_the_callout_name(spec: str) -> None:
    with pytest.raises(InputError) as caught:
        resolve_ports([spec], available=lambda: [], expand=lambda _p: [])
    text = str(caught.value)
    assert "carrier detect" in text and "/dev/cu.usbserial-" in text


def test_windows_port_names_compare_without_case() -> None:
    from atflash.ports import port_key

    assert port_key("COM3", windows=True) == port_key("com3", windows=True)
    assert port_key("/dev/ttyUSB0", windows=False) != port_key("/dev/ttyusb0", windows=False)
