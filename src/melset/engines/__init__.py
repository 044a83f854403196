"""Engines run the recipe over many tracks: locally in processes, or on a Ray cluster.

An engine is started before the job needs it (workers import and warm up while the driver
reads metadata), then takes (row, path) tasks and yields (row, TrackResult, crc32) as they
finish, in any order. Given the store's RowSink, workers write each matrix into the store
themselves (crc32 says what they wrote); otherwise the matrix comes back and the driver
writes it. What a worker process needs before its first track is here, shared by both engines.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from melset.system import keep_freed_memory

if TYPE_CHECKING:
    from melset.config import Recipe
    from melset.recipe import TrackResult
    from melset.store import RowSink

RETRIES_AFTER_CRASH = 1  # a track whose worker dies is tried once more, then failed with the reason
Task = tuple[int, str]  # (row in the store, audio path)
Done = tuple[int, "TrackResult", "int | None"]  # (row, result, crc32 of the row when a worker wrote it)


class Engine(Protocol):
    name: str
    workers: int

    def __enter__(self) -> Engine: ...
    def __exit__(self, *exc) -> None: ...
    def run(self, tasks: Iterable[Task], recipe: Recipe, sink: RowSink | None = None) -> Iterator[Done]: ...


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def prepare_worker(own_process: bool = True) -> None:
    """Once per worker process: import the recipe and keep big buffers in the heap. In a
    process of our own (not a Ray worker, whose output and signals are Ray's) also silence
    the decoder's own prints and leave Ctrl-C to the driver."""
    import melset.recipe  # noqa: F401  (import now, while the driver is still reading metadata)

    keep_freed_memory()
    if own_process:
        # libmpg123 prints notes ("Illegal Audio-MPEG-Header ...") straight to fd 2; every
        # failure already gets a reason in words, so the noise goes.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_task(path: str, recipe: Recipe, row: int | None = None, sink: RowSink | None = None) -> tuple[TrackResult, int | None]:
    """One track in a worker. With a sink, the matrix goes straight into the store and the
    result comes back without it, with the crc32 of the row written. An unexpected
    exception becomes a failed row, not a dead run."""
    import dataclasses

    from melset.recipe import TrackResult, process

    if FAULT_ENV in os.environ:
        _inject_fault(path, os.environ[FAULT_ENV])
    try:
        result = process(path, recipe)
    except Exception as exc:  # a bug or a library failure we did not foresee
        result = TrackResult.failed(f"internal error while processing: {type(exc).__name__}: {exc}")
    if sink is None:
        return result, None
    from melset.store import SinkUnreachable

    try:
        crc = sink.write(row, result.mel if result.status == "ok" else None)
    except SinkUnreachable:  # e.g. a Ray node without the shared store: the driver writes it
        return result, None
    return dataclasses.replace(result, mel=None), crc


FAULT_ENV = "MELSET_FAULT_INJECT"


def _inject_fault(path: str, spec: str) -> None:
    """Fault injection for the durability tests, set through MELSET_FAULT_INJECT:
    "crash:TEXT" SIGKILLs the worker on every path containing TEXT; "crash-once:TEXT:MARKER"
    only while the file MARKER does not exist (it is created first); "hang:TEXT" sleeps;
    "enospc:TEXT" fails as a full disk would."""
    kind, _, rest = spec.partition(":")
    needle, _, marker = rest.partition(":")
    if not needle or needle not in path:
        return
    if kind == "crash-once":
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if kind in ("crash", "crash-once"):
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "enospc":
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if kind == "hang":
        import time

        time.sleep(3600)


def describe_exit(exitcode: int | None) -> str:
    """Words for how a worker process ended."""
    if exitcode is None:
        return "the worker process vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the worker process was killed by {name}"
    return f"the worker process exited with code {exitcode}"


def failed(reason: str) -> TrackResult:
    from melset.recipe import TrackResult

    return TrackResult.failed(reason, math.nan)


def timed_out(seconds: float) -> TrackResult:
    return failed(f"timed out: no result after {seconds:g} s (the decoder hung or the file is huge)")


def crashed(how: str, tries: int) -> TrackResult:
    return failed(f"the decoder crashed: {how} on every try ({tries})")


def make_engine(name: str, workers: int | None = None, timeout: float = 120.0, address: str | None = None) -> Engine:
    """An engine by name: "local" (processes on this machine) or "ray" (melset[ray])."""
    if name == "local":
        from melset.engines.local import LocalEngine

        return LocalEngine(workers=workers, timeout=timeout)
    if name == "ray":
        from melset.engines.ray import RayEngine

        return RayEngine(address=address, workers=workers, timeout=timeout)
    raise ValueError(f"unknown engine {name!r} (local or ray)")
