"""What runs inside a worker process, for every engine: warm-up, then one track per task."""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import TYPE_CHECKING

from melset.system import die_with_parent, keep_freed_memory

if TYPE_CHECKING:
    from melset.recipe import Recipe
    from melset.store.sink import RowSink
    from melset.track import TrackResult


def prepare_worker(own_process: bool = True) -> None:
    """Once per worker process: import the recipe and keep big buffers in the heap. In a
    process of our own (not a Ray worker, whose output and signals are Ray's) also silence
    the decoder's own prints and leave Ctrl-C to the driver."""
    import melset.audio, melset.features, melset.track  # noqa: F401, E401  (now, while the driver reads metadata)
    from melset.audio import mono_mix

    mono_mix.available()  # loads libmpg123 (and builds its tables) once, before the first track
    keep_freed_memory()
    if own_process:
        # a driver killed with kill -9 takes its workers along (their parent, the fork
        # server, ends when the driver does)
        die_with_parent()
        # libmpg123 prints notes ("Illegal Audio-MPEG-Header ...") straight to fd 2; every
        # failure already gets a reason in words, so the noise goes.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_task(
    path: str, recipe: Recipe, row: int | None = None, sink: RowSink | None = None
) -> tuple[TrackResult, int | None]:
    """One track in a worker. With a sink, the matrix goes straight into the store and the
    result comes back without it, with the crc32 of the row written. An unexpected
    exception becomes a failed row, not a dead run."""
    from melset.track import TrackResult, process
    from melset.vocab import OK

    try:
        result = process(path, recipe)
    except Exception as exc:  # a bug or a library failure we did not foresee
        result = TrackResult.failed(f"internal error while processing: {type(exc).__name__}: {exc}")
    if sink is None:
        return result, None
    from melset.store.sink import SinkUnreachable

    try:
        crc = sink.write(row, result.mel if result.status == OK else None)
    except SinkUnreachable:  # e.g. a Ray node without the shared store: the driver writes it
        return result, None
    return dataclasses.replace(result, mel=None), crc
