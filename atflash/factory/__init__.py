"""Factory provisioning: credential pools and the ledger of which device holds which set.

- :mod:`.pool`: load a pool (folder of sets or CSV index) and check every set.
- :mod:`.ledger_store`: the :class:`~.ledger_store.Ledger` interface; :mod:`.ledger`:
  :func:`~.ledger.open_ledger`; stores in :mod:`.ledger_sqlite` and :mod:`.ledger_pg`, what
  they run alike in :mod:`.ledger_sql`.
- :mod:`.resolve`: :class:`~.resolve.PoolResolver`, what the write flow calls per board.

Pure library code: nothing here prints or imports click.
"""

from __future__ import annotations

from atflash.factory.errors import ClaimError, LedgerError, PoolError, PoolExhaustedError
from atflash.factory.ledger import open_ledger
from atflash.factory.ledger_store import Claim, Ledger
from atflash.factory.pool import CredentialSet, Pool, check_pool, load_pool, plans_for_set
from atflash.factory.resolve import PoolResolver, default_station, pool_resolver

__all__ = [
    "Claim",
    "ClaimError",
    "CredentialSet",
    "Ledger",
    "LedgerError",
    "Pool",
    "PoolError",
    "PoolExhaustedError",
    "PoolResolver",
    "check_pool",
    "default_station",
    "load_pool",
    "open_ledger",
    "plans_for_set",
    "pool_resolver",
]
