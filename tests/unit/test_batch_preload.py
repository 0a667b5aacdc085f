"""The batch's fork server imports what every worker needs, once, before the boards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def preload_in_fresh_process(backends: list[str]) -> list[str]:
    """``batch._preload`` as the command line's process sees it (nothing else imported)."""
    code = (
        "import json, sys; from atflash.run import workers as batch; "
        f"print(json.dumps(batch._preload({backends!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return list(json.loads(out.stdout))


@pytest.mark.parametrize(
    ("via", "module", "never"),
    [("esptool", "atflash.backends.esptool.backend", None),
     ("at", "atflash.backends.at.backend", "atflash.backends.esptool")],
)  # fmt: skip
def test_the_fork_server_preloads_the_backend_of_the_batch(
    via: str, module: str, never: str | None
) -> None:
    # The parent never talks to a board, so it has not imported the backend:
    # without this every worker would import esptool (~0.1 s CPU) itself.
    modules = preload_in_fresh_process([via])
    assert module in modules
    assert modules[0] == "atflash._forkserver"  # its signal handling comes first
    assert len(modules) == len(set(modules))
    if never is not None:
        assert not any(m.startswith(never) for m in modules)
