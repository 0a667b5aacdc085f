"""What the user said about a board's layout, decoded once: one profile, a chip's family, or any.

``--chip`` and ``--profile`` (and a bench file's ``chip`` and ``profile``,
and the API's ``chip=`` and ``profile=``) say four different things, and
:meth:`LayoutChoice.of` tells them apart in one place:

- ``--profile FILE`` (with ``--chip`` for an ``at_customize.csv``), or
  ``--chip <profile name>`` such as ``wrover-32``: one explicit layout,
  which a write may follow onto a blank board;
- ``--chip <chip>``: that chip's family of known layouts (2.x, 3.1+,
  qcloud variants), among which the board's own tables decide;
- ``--chip auto``, or nothing at all: every chip's known layouts, the
  board saying what it is (as esptool detects the chip).

Every path asks the choice, never the strings: :attr:`~LayoutChoice.explicit`,
:meth:`~LayoutChoice.profiles`, :meth:`~LayoutChoice.for_board` and
:meth:`~LayoutChoice.one`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from atflash import chips
from atflash.errors import InputError
from atflash.layout.model import Profile
from atflash.layout.profiles import builtin_profiles, family, load_profile

AUTO = "auto"


@dataclass(frozen=True)
class LayoutChoice:
    """The layouts a board may carry, as the user named them (see the module's docstring)."""

    kind: Literal["profile", "chip", "auto"]
    chip: str | None = None  # a chip (kind "chip"), or a CSV profile's chip (kind "profile")
    profile: str | None = None  # a profile file or built-in profile name (kind "profile")

    @classmethod
    def of(cls, chip: str | None = None, profile: str | None = None) -> LayoutChoice:
        """Decode ``--chip`` and ``--profile``; nothing named means any chip (``auto``)."""
        wanted = (chip or "").strip().lower()
        if profile:  # the file is the layout; a chip only says whose CSV it is
            return cls("profile", chip=chip if wanted not in ("", AUTO) else None, profile=profile)
        if not wanted or wanted == AUTO:
            return cls("auto")
        if wanted in chips.known_chips():
            return cls("chip", chip=wanted)
        return cls("profile", profile=chip)  # a built-in profile's name

    @property
    def explicit(self) -> bool:
        """The user named one layout (a profile file or name), not just a chip."""
        return self.kind == "profile"

    def profiles(self) -> list[Profile]:
        """The candidate layouts; the board's own tables decide among them."""
        if self.kind == "profile":
            assert self.profile is not None
            if self.chip is None:
                return [load_profile(self.profile)]
            return [load_profile(self.profile, chip=self.chip)]
        if self.kind == "chip":
            assert self.chip is not None
            return family(self.chip) or [load_profile(self.chip)]
        return sorted(builtin_profiles(), key=lambda p: (not p.default, p.chip))

    def for_board(self, found: str | None) -> list[Profile]:
        """The layouts of a board that said it is a ``found``: those named, else its chip's."""
        if self.kind == "auto" and found:
            return family(found) or self.profiles()
        return self.profiles()

    def one(self) -> Profile:
        """The one layout an offline command builds for; a choice of none is refused."""
        if self.kind == "auto":
            raise InputError(
                "no chip given", hint="pass --chip (see 'atflash profiles') or --profile FILE"
            )
        if self.kind == "chip":
            assert self.chip is not None
            return load_profile(self.chip)
        return self.profiles()[0]
