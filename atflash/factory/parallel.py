"""Independent chunks of factory work in worker processes, in order, stopping at the first failure.

The pool check and the per-device build both split their work into chunks
that each stop at their first bad item. The chunks go to a process pool in
order; once a chunk reports a failure the chunks not started yet are
cancelled. An executor starts tasks in submission order, so every chunk
before a failing one has started and is waited for: the earliest failure
found is the earliest of the run.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

C = TypeVar("C")
R = TypeVar("R")


def worker_context() -> Any:
    """Worker processes as the batch makes them: a fork server on POSIX, spawn on Windows.

    ``fork`` would copy a parent that may run threads (rich's progress
    bar); the fork server imports atflash once and forks clean workers. It
    preloads every atflash module loaded here, as :mod:`atflash.run.workers` does,
    so a batch started later in this process finds what it needs.
    """
    if sys.platform == "win32":
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ours = sorted(name for name in sys.modules if name.split(".", 1)[0] == "atflash")
    ctx.set_forkserver_preload(ours)
    return ctx


def run_chunks(
    task: Callable[[C], list[R]],
    chunks: Sequence[C],
    *,
    workers: int,
    failed: Callable[[R], bool],
    progress: Callable[[int], None],
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> list[R]:
    """Every chunk's results, in completion order; cancelled past the first chunk that failed.

    ``task`` (picklable: a module-level function or a partial of one) runs
    one chunk and returns its results, the last of them failed when the
    chunk stopped early. ``progress`` hears the count of results so far.
    """
    results: list[R] = []
    with cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=worker_context(),
        initializer=initializer,
        initargs=initargs,
    ) as executor:
        futures = [executor.submit(task, chunk) for chunk in chunks]
        try:
            for future in cf.as_completed(futures):
                if future.cancelled():
                    continue
                outcome = future.result()
                results.extend(outcome)
                progress(len(results))
                if outcome and failed(outcome[-1]):
                    for other in futures:
                        other.cancel()
        except BaseException:
            for other in futures:  # Ctrl-C or a bug: do not wait for the whole run
                other.cancel()
            raise
    return results
