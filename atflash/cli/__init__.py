"""The ``atflash`` command line: a thin click layer over the library.

Each command parses its arguments, calls one library function and renders
the result. Errors the user can fix arrive as :class:`AtflashError` and end
as one line on stderr with a non-zero exit code (see :mod:`.app`).
"""

from __future__ import annotations

from atflash.cli.app import cli  # commands load on first use (see atflash.cli.app)


def _show_warning(message: object, category: type, *args: object, **kwargs: object) -> None:
    """Library warnings (UnprotectedFileWarning) as one atflash line on stderr."""
    import sys

    print(f"atflash: warning: {message}", file=sys.stderr)


def main() -> None:
    """Console-script entry point."""
    import warnings

    warnings.showwarning = _show_warning
    cli.main(prog_name="atflash")


__all__ = ["cli", "main"]
