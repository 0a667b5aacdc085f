"""Test and bench equipment: the rigs that both the tests (tests/) and the benchmarks (bench/) use.

Not part of atflash: nothing in atflash/ imports it, and the wheel does not
ship it (the sdist does, for the tests). What lives here:

- :mod:`tools.loader`: the serial loader protocol (opcodes, packet header,
  SLIP framing), spelled once for the tools below and the bench;
- :mod:`tools.line`: a TCP relay that moves bytes at a UART's speed, with a
  USB bridge's latency and faults on request (the serial line in front of a
  mock board or AT simulator);
- :mod:`tools.strictrom`: a relay that holds esp32-mock-bootloader to what a
  chip's ROM loader allows (refusals, erases, secure download, encryption);
- :mod:`tools.mockflash`: a mock board's flash read, written and erased
  straight over the loader protocol, past atflash and esptool;
- :mod:`tools.station`: station slots where mock boards are plugged in and
  pulled out;
- :mod:`tools.certs`: certificates, key files and credential pools made on
  the spot (the one certificate builder);
- :mod:`tools.issuing`: a CA on disk for issuing, and checks of what a board
  was given;
- :mod:`tools.softhsm`: a SoftHSM2 token holding a CA key.

Test-only fixtures (pytest fixtures, the CLI runner, the PostgreSQL server)
stay in tests/.
"""
