"""What the simulated ESP-AT command handlers share: their answers and AT parameters.

A handler gets the text after ``=`` and returns an :class:`Answer` (information
lines and a final line) or a :class:`DataPhase`: the command wants raw bytes
next, and the module takes exactly ``length`` of them, whatever they are,
before it answers. Pure: nothing here touches a port or a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"


@dataclass(frozen=True)
class Answer:
    """Information lines (or a raw read reply) and the final line."""

    body: bytes = b""
    final: bytes = OK


FAILED = Answer(final=ERROR)


@dataclass(frozen=True)
class DataPhase:
    """Send ``prompt``, take exactly ``length`` bytes, then answer with ``finish(data)``.

    The firmware waits for the bytes without any timeout: what the host sends
    next, an ``AT`` included, is data until the count is reached.
    """

    prompt: bytes
    length: int
    finish: Callable[[bytes], Answer]


Reply = Answer | DataPhase

Param = int | str


def split_params(text: str) -> list[Param] | None:
    """AT parameters: quoted strings and decimal or ``0x`` numbers; None if malformed."""
    params: list[Param] = []
    for raw in _split_outside_quotes(text):
        item = raw.strip()
        if len(item) >= 2 and item[0] == item[-1] == '"':
            params.append(item[1:-1])
            continue
        try:
            params.append(int(item, 16) if item[:2].lower() == "0x" else int(item, 10))
        except ValueError:
            return None
    return params


def _split_outside_quotes(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def ints(params: list[Param]) -> list[int] | None:
    """The parameters as numbers, or None if any is a string."""
    if not all(isinstance(p, int) for p in params):
        return None
    return [int(p) for p in params]
