"""Boards and tools for the public API's tests; the tests themselves use only ``import atflash``.

The boards are those of the integration tests (tests/integration/conftest.py):
esp32-mock-bootloader mocks reached by the real esptool, and atflash's own
ESP-AT simulator. What landed in flash is read straight from the mock or
the simulator, never through atflash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import serial
from cryptography.hazmat.primitives.asymmetric import ec

from atflash.layout.profiles import find_profile
from atflash.seriallink import open_link
from atflash.sim.at import AtSimulator
from atflash.sim.flash import board_flash
from atflash.sim.rom import MockBoard
from tests.integration import conftest as integration
from tests.integration.conftest import BoardPool, direct_url
from tools.certs import PEM, certificate, key_bytes
from tools.mockflash import read_flash

# The integration tests' boards (fixtures, found here by name).
board_pool = integration.board_pool
boards = integration.boards
c3_board_3x = integration.c3_board_3x
dead_port = integration.dead_port
esp32_board = integration.esp32_board


@pytest.fixture
def blank_esp32(board_pool: BoardPool) -> Iterator[MockBoard]:
    """An ESP32 mock with nothing flashed: no partition table."""
    with board_pool.lease("esp32") as board:
        yield board


@pytest.fixture
def at_module() -> Iterator[AtSimulator]:
    """A simulated ESP32 running ESP-AT 2.x, listening on TCP: ``at_module.url``."""
    with AtSimulator(find_profile("esp32")) as sim:
        sim.url = sim.start_tcp()  # type: ignore[attr-defined]
        yield sim


@pytest.fixture
def at_module_3x() -> Iterator[AtSimulator]:
    """A simulated ESP32-C3 running ESP-AT 3.1+ (``AT+SYSMFG``), on TCP: ``at_module_3x.url``."""
    with AtSimulator(find_profile("esp32c3"), firmware="3.x") as sim:
        sim.url = sim.start_tcp()  # type: ignore[attr-defined]
        yield sim


@pytest.fixture
def flash_at() -> Callable[[MockBoard, int, int], bytes]:
    """``flash_at(board, address, size)``: the mock's flash, read over its own loader protocol."""

    def read(board: MockBoard, address: int, size: int) -> bytes:
        return read_flash(direct_url(board), [(address, size)])[0]

    return read


@pytest.fixture
def open_port() -> Iterator[Callable[[str], serial.SerialBase]]:
    """``open_port(url)``: a serial port object the test opened, as a script would; closed after."""
    opened: list[serial.SerialBase] = []

    def opener(url: str) -> serial.SerialBase:
        link = open_link(url)
        link.baudrate = 115200
        link.open()
        opened.append(link)
        return link

    yield opener
    for link in opened:
        link.close()


@pytest.fixture
def issue() -> Callable[[str], tuple[bytes, bytes]]:
    """``issue(common_name)``: a new EC key and its certificate (PEM), as a station's CA would make."""

    def make(common_name: str) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        return certificate(key, common_name=common_name).public_bytes(PEM), key_bytes(key)

    return make


@pytest.fixture
def factory_image() -> Callable[[str, str], bytes]:
    """``factory_image(chip, firmware)``: a whole flash image as esp-at's build makes one."""

    def make(chip: str, firmware: str) -> bytes:
        regions = board_flash(chip, firmware)
        end = max(address + len(data) for address, data in regions.items())
        image = bytearray(b"\xff" * end)
        for address, data in regions.items():
            image[address : address + len(data)] = data
        return bytes(image)

    return make


@pytest.fixture
def cli() -> Callable[..., bytes]:
    """``cli(*args)``: run the ``atflash`` command (it must succeed); its standard output.

    The API's offline results are held to the command's, whose bytes the
    other suites hold to AtPKI.py's and Espressif's NVS generator's.
    """
    from click.testing import CliRunner

    from atflash.cli import cli as command

    def run(*args: object) -> bytes:
        result = CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout_bytes

    return run


@pytest.fixture
def nvs_items() -> Callable[[bytes], list[tuple[str, str, bytes]]]:
    """``nvs_items(image)``: ``(namespace, key, value)`` of an NVS image, read by atflash's reader."""
    from atflash.content.nvs import parse_nvs

    def read(image: bytes) -> list[tuple[str, str, bytes]]:
        return [(i.namespace, i.key, i.value) for i in parse_nvs(image)]  # type: ignore[misc]

    return read
