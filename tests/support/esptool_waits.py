"""esptool's wait for a reply, capped in this process for tests whose fault is a reply that never comes.

esptool waits up to its timeout for every reply: 3 s by default, longer for
erases and writes. A test that stalls the line mid-write proves the board is
then reported failed, and waits that whole timeout for nothing. esptool's
``max_timeout`` setting (``[esptool] max_timeout`` in esptool.cfg) caps
every command's wait; it is read from the config file once, at import, but
``ESPLoader.command`` reads the module value at each call, so setting that
value is the same setting for this process.

Cap it only once the fault is armed and restore it before the retry: the
commands before the fault and the retry that repairs the board run with
esptool's own timeouts.
"""

from __future__ import annotations

from esptool import loader

_default: float | None = None  # esptool's own max_timeout while a cap is in force


def cap_reply_wait(seconds: float) -> None:
    """From now on, esptool waits at most ``seconds`` for any reply (until restored)."""
    global _default
    if _default is None:
        _default = loader.MAX_TIMEOUT
    loader.MAX_TIMEOUT = seconds


def restore_reply_wait() -> None:
    """esptool's own waits again; safe to call when nothing was capped."""
    global _default
    if _default is not None:
        loader.MAX_TIMEOUT = _default
        _default = None
