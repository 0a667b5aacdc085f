"""The mock board's own process: esp32-mock-bootloader's server with a chosen MAC.

:func:`atflash.sim.rom.start_mock` runs ``python -m atflash.sim.rom_main``
rather than the mock's CLI, for what that CLI cannot do:

- Set the MAC. esp32-mock-bootloader 0.3.0 derives it from the chip name
  alone (``registers.mac_bytes_for_chip``: ``24:0a:c4`` and the first three
  bytes of SHA-256 of the name), so every mock of one chip reports the same
  MAC, and a manifest keyed by MAC cannot tell them apart. Its register
  profile (the eFuse words esptool's ``read_mac`` reads) is built from that
  function on first use, so replacing the function before the server starts
  is enough.
- Wait for a read's acknowledgement as a stub does. The real flasher stub
  waits for the host's acknowledgement of a READ_FLASH stream as long as it
  takes; the mock gives up after 50 ms (its socket timeout) and stops the
  stream, so a host busy for 50 ms saw "Serial data stream stopped" three
  seconds later. Here it waits up to :data:`ACK_PATIENCE`.
- Outlive no one. A thread watches the process that started this one; when
  it is gone (killed with SIGKILL, say, so it could not stop us), the mock
  exits instead of holding its port for ever.
"""

from __future__ import annotations

import argparse
import os
import shutil
import threading
import time
from typing import Any

from atflash.sim.flash import read_regions
from atflash.sim.rom import STATE_ENV

PARENT_POLL = 0.25  # seconds between checks that the starting process still lives
ACK_PATIENCE = 10.0  # seconds the stub's read waits for the host's acknowledgement


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atflash.sim.rom_main")
    parser.add_argument("--chip", required=True)
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 for a free one")
    parser.add_argument("--pty", action="store_true")
    parser.add_argument("--endpoint-file", required=True, help="where to write the port or PTY")
    parser.add_argument("--mac", help="12 hex digits; default: the mock's own per-chip MAC")
    parser.add_argument("--parent", type=int, help="exit when this process is gone")
    parser.add_argument("--flash", help="regions to start the flash with (see write_regions)")
    args = parser.parse_args(argv)

    from esp32_mock_bootloader import registers, server

    server._recv_slip_payload = _patient_reader(server)
    if args.flash:
        flash = server.get_flash_image().data
        for offset, data in read_regions(args.flash):
            flash[offset : offset + len(data)] = data

    if args.mac:
        mac = tuple(bytes.fromhex(args.mac))
        registers.mac_bytes_for_chip = lambda _chip: mac
        registers.rom_profile.cache_clear()
    if args.parent:
        threading.Thread(target=_exit_with, args=(args.parent,), daemon=True).start()
    if args.pty:
        server.run_pty_server(None, args.endpoint_file, args.chip)
    else:
        server.run_server(args.port, None, args.chip, "127.0.0.1", port_file=args.endpoint_file)
    return 0


def _exit_with(parent: int) -> None:
    # Once the parent is gone this process is re-parented (to init or a
    # subreaper), so its parent PID changes: portable, unlike prctl.
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    # The parent could not remove the mock's private state folder: do it here.
    state = os.environ.get(STATE_ENV)
    if state:
        shutil.rmtree(state, ignore_errors=True)
    os._exit(0)


def _patient_reader(server: Any) -> Any:
    """The mock's reader of one SLIP frame from the host, waiting as a stub does (see above)."""
    consume = server._consume_slip_frame

    def read_frame(conn: Any, stop_event: threading.Event, buf: bytearray) -> bytes | None:
        deadline = time.monotonic() + ACK_PATIENCE
        while not stop_event.is_set():
            payload = consume(buf)
            if payload is not None:
                return payload
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                if time.monotonic() < deadline:
                    continue  # the connection's own timeout is short: keep waiting
                return None
            except OSError:
                return None
            if not chunk:
                return None
            buf.extend(chunk)
        return None

    return read_frame


if __name__ == "__main__":
    raise SystemExit(main())
