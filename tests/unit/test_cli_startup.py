"""The command line starts light: listing and version load no command, no transport."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from atflash.cli.app import COMMANDS, cli

HEAVY = ("esptool", "serial", "cryptography", "rich")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_listed_help_is_the_commands_own(name: str) -> None:
    module, short = COMMANDS[name]
    importlib.import_module(f"atflash.cli.{module}")
    assert cli.commands[name].get_short_help_str(limit=200) == short


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    probe = (
        "import sys\n"
        "from atflash.cli import cli\n"
        f"try:\n    cli.main({args!r}, prog_name='atflash')\n"
        "except SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"
