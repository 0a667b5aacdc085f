"""The one way tests run the command line: ``run("write", "--port", url, ...)``.

Through click's ``CliRunner`` in this process, named ``atflash`` as on a
shell. Exceptions are not caught: atflash turns every error into a line and
an exit code itself, so one that escapes is a bug the test must show.
``env`` adds environment variables for the one call.
"""

from __future__ import annotations

from collections.abc import Mapping

from click.testing import CliRunner, Result

from atflash.cli import cli


def run(*args: object, env: Mapping[str, str | None] | None = None) -> Result:
    """``atflash ARGS`` (each argument as ``str``); its exit code, stdout and stderr apart."""
    return CliRunner().invoke(
        cli, [str(a) for a in args], env=env, prog_name="atflash", catch_exceptions=False
    )
