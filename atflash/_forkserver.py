"""Imported by the batch's fork server only (it heads :data:`atflash.run.workers._PRELOAD`).

Importing this module makes the process ignore SIGINT and SIGTERM; nothing
else in atflash imports it. The fork server imports its preload modules
before it records the signal handlers its workers start with, so a worker
forked from it ignores both from its first instruction: a Ctrl-C during a
worker's start cannot raise KeyboardInterrupt there and print a traceback.
The server itself outlives a SIGTERM sent to the whole process group (a
service manager stopping atflash) while the workers finish their boards;
it still exits when the atflash process that started it does.
"""

from __future__ import annotations

import signal
import threading

if threading.current_thread() is threading.main_thread():  # only it may set handlers
    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, signal.SIG_IGN)
