"""Mock boards for integration tests: the real esptool against esp32-mock-bootloader.

Each test gets mock boards of its own: over TCP from a pool of running mocks,
erased whole between tests (BoardPool), over a PTY a new process, stopped.
A TCP board is seen through a strict ROM model (tools.strictrom):
``board.url`` is the model's, which refuses what the chip's ROM lacks and
erases as the ROM does; ``board.mock_url`` is the mock's own. A lease ends
with a check that nothing esptool never sends went to the board. PTY boards
are the plain mock: the model is a TCP relay, and those cases test the PTY
transport itself.
Checks of what landed in flash, and a board's prior state, go straight to
the mock over its loader protocol (tools.mockflash), never through
atflash's own read path nor esptool: one connection per check, in this
process (an esptool process per check cost half a second).
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
from collections.abc import Iterator, Mapping

import pytest
import serial

from atflash.backends.esptool.options import ROM_BAUD
from atflash.seriallink import open_link
from atflash.sim.at import AtSimulator
from atflash.sim.flash import board_flash
from atflash.sim.rom import MockBoard, start_mock
from tools.mockflash import MockFlashError, erase_flash, read_flash, write_flash
from tools.strictrom import StrictBoard, strict_board


def direct_url(board: MockBoard) -> str:
    """Where to reach ``board``'s mock itself, past any strict ROM model (for checks)."""
    return board.mock_url if isinstance(board, StrictBoard) else board.url


def flash_differs(board: MockBoard, expected: Mapping[int, bytes]) -> list[str]:
    """The addresses (hex) of ``expected`` where the board's flash holds other bytes.

    Every region is read back whole, byte for byte, whatever the chip.
    """
    regions = [(address, len(data)) for address, data in expected.items()]
    found = read_flash(direct_url(board), regions)
    return [hex(a) for (a, data), got in zip(expected.items(), found, strict=True) if got != data]


def flash_holds(board: MockBoard, address: int, data: bytes) -> bool:
    """Whether flash at ``address`` holds ``data``."""
    return not flash_differs(board, {address: data})


def preload(board: MockBoard, address: int, data: bytes) -> None:
    """Put bytes on the mock's flash (a board's prior state)."""
    write_flash(direct_url(board), [(address, data)])


def esptool_port(url: str) -> serial.SerialBase:
    """``url`` opened at the ROM loader's rate as atflash opens ports for esptool.

    For tests that drive esptool's API themselves: pyserial's own socket://
    port pauses 0.3 s on every close.
    """
    link = open_link(url)
    link.baudrate = ROM_BAUD
    link.open()
    return link


def flash_esp_at(board: MockBoard, firmware: str = "2.x", **layout: object) -> None:
    """Give ``board`` what an ESP-AT factory image writes (see atflash.sim.flash.board_flash)."""
    regions = board_flash(board.chip, firmware, **layout)  # type: ignore[arg-type]
    if isinstance(board, StrictBoard) and board.rom is not None:
        regions = board.rom.rules.stored(regions)  # ciphertext where encryption is on
    write_flash(direct_url(board), sorted(regions.items()))


@pytest.fixture
def dead_port() -> Iterator[str]:
    """A socket URL where nothing listens, and nothing can while the test runs.

    The port stays bound (never listening): a port merely freed could be
    taken by a mock or relay another xdist worker starts meanwhile.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"socket://127.0.0.1:{sock.getsockname()[1]}"


class BoardPool:
    """TCP mock boards reused by one test process, erased between tests.

    A TCP mock starts a new loader session with every connection and keeps
    nothing else between connections but its flash, so a board erased
    whole is as good as a new one - and starting one is a Python process
    importing esptool (a quarter of a second idle, seconds on a busy host).
    A board that does not answer the erase promptly (a connection some
    test left open still holds it) is stopped, not reused. PTY mocks keep
    one loader session across clients and are never pooled.
    """

    ERASE_TIMEOUT = 3.0

    def __init__(self) -> None:
        self.idle: dict[str, list[MockBoard]] = {}

    def take(self, chip: str) -> MockBoard:
        """A blank board of ``chip``: an idle one, or a new process."""
        idle = self.idle.setdefault(chip, [])
        while idle:
            board = idle.pop()
            if board.proc.poll() is None:
                return board
            board.stop()
        return start_mock(chip)

    @contextlib.contextmanager
    def lease(self, chip: str, **rules: object) -> Iterator[StrictBoard]:
        """A blank board of ``chip`` behind a strict ROM model (``rules``: RomRules fields).

        On a normal exit, fails the test if the board was sent a sequence
        esptool itself never sends (the model's violations).
        """
        board = self.take(chip)
        try:
            with strict_board(board, **rules) as strict:
                yield strict
                assert strict.rom is not None
                assert not strict.rom.violations, strict.rom.violations
        finally:
            self.give_back(board)

    @contextlib.contextmanager
    def lease_plain(self, chip: str) -> Iterator[MockBoard]:
        """A blank board of ``chip``, the plain mock (callers say why they need it)."""
        board = self.take(chip)
        try:
            yield board
        finally:
            self.give_back(board)

    def give_back(self, board: MockBoard) -> None:
        """Erase ``board`` for the next test, or stop it if it cannot be."""
        try:
            erase_flash(board.url, timeout=self.ERASE_TIMEOUT)
        except (MockFlashError, OSError):
            board.stop()
            return
        self.idle.setdefault(board.chip, []).append(board)

    def close(self) -> None:
        for boards in self.idle.values():
            for board in boards:
                board.stop()
        self.idle.clear()


@pytest.fixture(scope="session")
def board_pool() -> Iterator[BoardPool]:
    pool = BoardPool()
    yield pool
    pool.close()


@contextlib.contextmanager
def _board(pool: BoardPool, chip: str, transport: str) -> Iterator[MockBoard]:
    """A blank board: pooled over TCP, a process of its own over a PTY."""
    if transport == "tcp":
        with pool.lease(chip) as board:
            yield board
        return
    if sys.platform == "win32":  # pragma: no cover
        pytest.skip("PTY transport needs a Unix host")
    board = start_mock(chip, pty=True)
    try:
        yield board
    finally:
        board.stop()


BOARDS = [("esp32", "tcp"), ("esp32c3", "tcp"), ("esp32", "pty")]


@pytest.fixture(params=BOARDS, ids=lambda p: "-".join(p))
def blank_board(request: pytest.FixtureRequest, board_pool: BoardPool) -> Iterator[MockBoard]:
    """A mock board with blank flash, for each chip and transport."""
    with _board(board_pool, *request.param) as board:
        yield board


@pytest.fixture(params=BOARDS, ids=lambda p: "-".join(p))
def at_board(request: pytest.FixtureRequest, board_pool: BoardPool) -> Iterator[MockBoard]:
    """A mock board that has ESP-AT's default partition table, as a flashed module does."""
    with _board(board_pool, *request.param) as board:
        flash_esp_at(board)
        yield board


@pytest.fixture
def boards(board_pool: BoardPool) -> Iterator[list[MockBoard]]:
    """Three ESP32 mock boards over TCP with ESP-AT's table (mocks of one chip share a MAC)."""
    with contextlib.ExitStack() as leases:
        leased = [leases.enter_context(board_pool.lease("esp32")) for _ in range(3)]
        for board in leased:
            flash_esp_at(board)
        yield leased


@pytest.fixture
def esp32_board_3x(board_pool: BoardPool) -> Iterator[MockBoard]:
    """An ESP32 mock flashed with ESP-AT 3.x: mfg_nvs holds factory_param and ble_data."""
    with board_pool.lease("esp32") as board:
        flash_esp_at(board, "3.x")
        yield board


@pytest.fixture
def c3_board_3x(board_pool: BoardPool) -> Iterator[MockBoard]:
    """An ESP32-C3 mock flashed with ESP-AT 3.1+ (credentials in mfg_nvs)."""
    with board_pool.lease("esp32c3") as board:
        flash_esp_at(board, "3.x")
        yield board


@pytest.fixture
def esp32_board(board_pool: BoardPool) -> Iterator[MockBoard]:
    """One ESP32 mock board over TCP with ESP-AT's table (for single-chip cases)."""
    with _board(board_pool, "esp32", "tcp") as board:
        flash_esp_at(board)
        yield board


# -- plain sockets, for the UART line relay's own tests ---------------------------------

SOCKET_TIMEOUT = 3.0  # a scripted device's accept, an echo server's shutdown


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """A TCP echo server on a free loopback port: an upstream that answers at once."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server.server_address[:2]
    server.shutdown()
    server.server_close()
    thread.join(SOCKET_TIMEOUT)


@pytest.fixture
def device() -> Iterator[socket.socket]:
    """A listening socket the test answers by hand: a scripted device."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(SOCKET_TIMEOUT)
    yield listener
    listener.close()


# -- the AT simulator ---------------------------------------------------------------------


@pytest.fixture(params=["tcp", "pty"])
def transport(request: pytest.FixtureRequest) -> str:
    """How a test reaches an AT simulator: over TCP or a pseudo-terminal (see :func:`serve`)."""
    return str(request.param)


def serve(sim: AtSimulator, transport: str) -> str:
    """Start ``sim`` on ``transport``; the port to open."""
    if transport == "pty":
        if sys.platform == "win32":  # pragma: no cover
            pytest.skip("PTY transport needs a Unix host")
        return sim.start_pty()
    return sim.start_tcp()
