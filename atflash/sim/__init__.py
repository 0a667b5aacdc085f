"""Stand-ins for hardware: mock boards, an ESP-AT simulator and a UART-speed line.

Used by the test suite, the benchmark and ``atflash sim``; nothing here is
needed to provision a real board.
"""
