"""docs/scripting.md's examples run, in order, so that they never rot.

The ports they name are mock boards (``/dev/ttyUSB0``, ``/dev/ttyUSB2``)
and a simulated ESP-AT module (``/dev/ttyUSB1``); they run in a folder
holding a copy of ``examples/`` and a factory image.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "scripting.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_the_doc_has_examples() -> None:
    assert len(BLOCK.findall(DOC.read_text())) >= 6


def test_scripting_examples_run(
    boards, at_module, factory_image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / "factory.bin").write_bytes(factory_image("esp32", "2.x"))
    monkeypatch.chdir(tmp_path)
    ports = {"/dev/ttyUSB0": boards[0].url, "/dev/ttyUSB1": at_module.url,
             "/dev/ttyUSB2": boards[1].url}  # fmt: skip
    namespace: dict[str, object] = {"__name__": "scripting_md"}
    for number, block in enumerate(BLOCK.findall(DOC.read_text()), 1):
        for name, url in ports.items():
            block = block.replace(f'"{name}"', repr(url))
        code = compile(block, f"docs/scripting.md, example {number}", "exec")
        exec(code, namespace)
    assert (tmp_path / "run.json").stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "client_ca.bin",
        "client_cert.bin",
        "client_key.bin",
    ]
