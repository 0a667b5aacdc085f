"""atflash: provision ESP-AT modules with TLS credentials.

Builds AtPKI-identical PKI bins, checks them against the board's partition
layout, and writes them through esptool or over the AT command port.
"""

__version__ = "0.1.0"
