"""The one way tests run the command line: ``run("write", "--port", url, ...)``.

Through click's ``CliRunner`` in this process, named ``atflash`` as on a
shell. Exceptions are not caught: atflash turns every error into a line and
an exit code itself, so one that escapes is a bug the test must show.
``env`` adds environment variables for the one call; ``refused`` runs a
command that must fail and gives its one error line.
"""

from __future__ import annotations

from collections.abc import Mapping

from click.testing import CliRunner, Result

from atflash.cli import cli
from atflash.errors import EXIT_USER_ERROR


def run(*args: object, env: Mapping[str, str | None] | None = None) -> Result:
    """``atflash ARGS`` (each argument as ``str``); its exit code, stdout and stderr apart."""
    return CliRunner().invoke(
        cli, [str(a) for a in args], env=env, prog_name="atflash", catch_exceptions=False
    )


def refused(*args: object, code: int = EXIT_USER_ERROR) -> str:
    """The one error line of a refused command (exit ``code``, no traceback)."""
    result = run(*args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("atflash: error:")]
    assert len(lines) == 1, result.output
    return lines[0]
