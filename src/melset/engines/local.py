"""The local engine: a pool of worker processes on this machine (all cores by default).

Built on pebble's ProcessPool, which knows which task each worker runs: a file that hangs
the decoder is timed out and its worker replaced, and a file that kills its worker (a
decoder crash) is tried once more, then marked failed, while the run goes on.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, wait

from pebble import ProcessExpired, ProcessPool

from melset.engines import Done, Task
from melset.engines.dispatch import (
    IDLE_S,
    RETRIES_AFTER_CRASH,
    crashed,
    default_workers,
    describe_exit,
    failed,
    keep_busy,
    timed_out,
)
from melset.engines.worker import prepare_worker, run_task
from melset.location import prefetched
from melset.recipe import Recipe
from melset.store.sink import RowSink


def _noop() -> None:
    pass


def _context(preload_more: tuple[str, ...] = ()):
    # forkserver: workers (replacements too) fork from a clean server process that has
    # imported the recipe once, so they start in milliseconds whatever threads the driver
    # runs (progress bar, pebble's own). spawn where there is no fork.
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # soundfile and soxr too: melset.audio imports them on first use, which would be once per worker
        preload = ["melset.engines.quiet_start", "melset.engines.worker", "melset.audio", "melset.features"]
        preload += ["melset.track", "soundfile", "soxr", *preload_more]
        ctx.set_forkserver_preload(preload)
        return ctx
    return multiprocessing.get_context("spawn")


class LocalEngine:
    name = "local"

    def __init__(self, workers: int | None = None, timeout: float = 120.0, preload: tuple[str, ...] = ()):
        self.workers = workers or default_workers()
        self.timeout = timeout
        self.preload = tuple(preload)  # more modules the workers import before their first task (s3fs)
        self._pool: ProcessPool | None = None

    def __enter__(self) -> LocalEngine:
        self._pool = ProcessPool(max_workers=self.workers, initializer=prepare_worker, context=_context(self.preload))
        # The first schedule starts the workers (and the fork server, which imports the recipe);
        # from a thread, so the driver reads metadata meanwhile.
        self._starter = threading.Thread(target=self._pool.schedule, args=(_noop,), daemon=True)
        self._starter.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._starter.join()
        if exc_type is None:
            self._pool.close()
        else:
            self._pool.stop()
        self._pool.join()

    def run(self, tasks: Iterable[Task], recipe: Recipe, sink: RowSink | None = None, on_idle=None) -> Iterator[Done]:
        """Yield (row, TrackResult, crc32) for every task as workers finish them; on_idle() is
        called after each IDLE_S without a result."""
        self._starter.join()
        pool = self._pool

        def submit(task: Task):
            row, path = task
            return pool.schedule(run_task, args=(path, recipe, row, sink), timeout=self.timeout)

        def wait_any(futures: list) -> set:
            return wait(futures, timeout=IDLE_S, return_when=FIRST_COMPLETED)[0]

        def outcome(future, task: Task, attempt: int) -> Done | None:
            row, crc = task[0], None
            try:
                result, crc = future.result()
            except TimeoutError:
                result = timed_out(self.timeout)
            except ProcessExpired as exc:
                if attempt < RETRIES_AFTER_CRASH:
                    return None
                result = crashed(describe_exit(exc.exitcode), attempt + 1)
            except OSError:  # the worker could not write into the store (disk full): stop the run
                raise
            except Exception as exc:  # e.g. a result that could not be sent back
                result = failed(f"internal error in the worker pool: {type(exc).__name__}: {exc}")
            return row, result, crc

        # objects at URLs are read ahead by the driver's threads while the workers decode (a GET
        # is only waiting); archive members and large objects are read by the workers themselves
        tasks = prefetched(tasks, 4 * self.workers)
        return keep_busy(tasks, 2 * self.workers, submit, wait_any, outcome, on_idle)
