"""The ``atflash`` command line: a thin click layer over the library.

Each command parses its arguments, calls one library function and renders
the result. Errors the user can fix arrive as :class:`AtflashError` and end
as one line on stderr with a non-zero exit code (see :mod:`.app`).
"""

from __future__ import annotations

from atflash.cli import device, factory, offline, sim  # noqa: F401  (registers the commands)
from atflash.cli.app import cli


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="atflash")


__all__ = ["cli", "main"]
