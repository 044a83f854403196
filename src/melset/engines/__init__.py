"""Engines run the recipe over many tracks, started early: (row, path) tasks in, results out as they finish."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from melset.recipe import Recipe
    from melset.store.sink import RowSink
    from melset.track import TrackResult

Task = tuple[int, object]  # (row in the store, its audio path or a melset.location.Fetch)
Done = tuple[int, "TrackResult", "int | None"]  # (row, result, crc32 of the row when a worker wrote it)
ENGINES = ("local", "ray")
Idle = Callable[[], None]  # called while no result arrives (the driver commits finished rows then)


class Engine(Protocol):
    name: str
    workers: int

    def __enter__(self) -> Engine: ...
    def __exit__(self, *exc) -> None: ...
    def run(
        self, tasks: Iterable[Task], recipe: Recipe, sink: RowSink | None, on_idle: Idle | None
    ) -> Iterator[Done]: ...


def make_engine(name: str, workers=None, timeout: float = 120.0, address=None, preload: tuple = ()) -> Engine:
    """An engine of ENGINES: "local" (processes, whose workers first import `preload`) or "ray"."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r} (one of {ENGINES})")
    if name == "ray":
        from melset.engines.cluster import RayEngine

        return RayEngine(address=address, workers=workers, timeout=timeout)
    from melset.engines.local import LocalEngine

    return LocalEngine(workers=workers, timeout=timeout, preload=preload)
