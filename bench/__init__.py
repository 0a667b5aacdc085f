"""The benchmark: mock boards behind modelled USB-UART lines (run bench/bench.py)."""
