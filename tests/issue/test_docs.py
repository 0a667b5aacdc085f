"""docs/issuing.md's Python example runs, so that it never rots.

``issuer.toml`` is a CA made in the folder it runs in; the ports it names
are mock boards, each reporting a MAC of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from atflash.sim.rom import MockBoard
from tests.api.test_docs import BLOCK
from tests.issue.test_write_cli import check_board
from tools.issuing import make_ca

DOC = Path(__file__).resolve().parents[2] / "docs" / "issuing.md"


def test_issuing_example_runs(
    four_boards: list[MockBoard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = make_ca(tmp_path)
    monkeypatch.chdir(tmp_path)
    (block,) = BLOCK.findall(DOC.read_text())
    for number, board in enumerate(four_boards[:3]):
        block = block.replace(f'"/dev/ttyUSB{number}"', repr(board.url))
    assert "/dev/tty" not in block
    namespace: dict[str, object] = {"__name__": "issuing_md"}
    exec(compile(block, "docs/issuing.md", "exec"), namespace)
    assert namespace["crl_pem"].startswith(b"-----BEGIN X509 CRL-----")  # type: ignore[attr-defined]
    for board in four_boards[:3]:
        check_board(board, ca.cert, tmp_path)  # a certificate of this CA for its MAC, verified
