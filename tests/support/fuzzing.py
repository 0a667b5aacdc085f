"""Example counts for property tests that set their own, scaled by the loaded Hypothesis profile.

A test's own ``settings(max_examples=N)`` overrides the profile, so the
``thorough`` profile (tests/conftest.py) would not reach it. ``examples(N)``
keeps N under the default and CI profiles (100 examples) and multiplies it
by the profile's factor under ``thorough``.
"""

from __future__ import annotations

from hypothesis import settings

DEFAULT_EXAMPLES = 100  # Hypothesis's own default, which the default and ci profiles keep


def examples(n: int) -> int:
    """``n`` times the loaded profile's example count over Hypothesis's default (never fewer)."""
    return max(n, n * settings.default.max_examples // DEFAULT_EXAMPLES)
