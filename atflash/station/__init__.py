"""A station that runs all shift: slots wait for boards, each is provisioned once and counted.

:class:`Station` is the loop (:mod:`.loop`); :mod:`.slots` says where a slot
is and whether a board is in it; :mod:`.tally` keeps the counts;
:mod:`.terminal` and :mod:`.web` show it (the web view needs
``atflash[station]``); :mod:`.line` shares it with the other stations of a
line through a PostgreSQL ledger. The ``atflash station`` command is
:mod:`atflash.cli.station`.
"""

from __future__ import annotations

from atflash.run.slots import SlotSpec
from atflash.station.loop import Station, StationOptions, StationOutcome
from atflash.station.slots import SlotState

__all__ = ["SlotSpec", "SlotState", "Station", "StationOptions", "StationOutcome"]
