"""The local engine: a pool of worker processes on this machine (all cores by default).

Built on pebble's ProcessPool, which knows which task each worker runs: a file that hangs
the decoder is timed out and its worker replaced, and a file that kills its worker (a
decoder crash) is tried once more, then marked failed, while the run goes on.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, wait

from pebble import ProcessExpired, ProcessPool

from melset.config import Recipe
from melset.engines import Task, default_workers, describe_exit, prepare_worker, run_task, timed_out
from melset.recipe import TrackResult

RETRIES_AFTER_CRASH = 1


def run(
    tasks: Iterable[Task],
    recipe: Recipe,
    workers: int | None = None,
    timeout: float = 120.0,
) -> Iterator[tuple[int, TrackResult]]:
    """Yield (row, result) for every task as workers finish them."""
    workers = workers or default_workers()
    # spawn: workers start clean, whatever threads the driver runs (progress bar, pebble's own)
    pool = ProcessPool(max_workers=workers, initializer=prepare_worker, context=multiprocessing.get_context("spawn"))
    pending = iter(tasks)
    inflight: dict = {}

    def submit(row: int, path: str, attempt: int) -> None:
        future = pool.schedule(run_task, args=(path, recipe), timeout=timeout)
        inflight[future] = (row, path, attempt)

    def refill() -> None:
        for row, path in pending:
            submit(row, path, 0)
            if len(inflight) >= 2 * workers:
                break

    finished = False
    try:
        refill()
        while inflight:
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for future in done:
                row, path, attempt = inflight.pop(future)
                try:
                    result = future.result()
                except TimeoutError:
                    result = timed_out(timeout)
                except ProcessExpired as exc:
                    if attempt < RETRIES_AFTER_CRASH:
                        submit(row, path, attempt + 1)
                        continue
                    result = TrackResult.failed(f"the decoder crashed: {describe_exit(exc.exitcode)} on every try ({attempt + 1})")
                except Exception as exc:  # e.g. a result that could not be sent back
                    result = TrackResult.failed(f"internal error in the worker pool: {type(exc).__name__}: {exc}")
                yield row, result
            refill()
        finished = True
    finally:
        if finished:
            pool.close()
        else:
            pool.stop()
        pool.join()
