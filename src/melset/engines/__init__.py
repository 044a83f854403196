"""Engines run the recipe over many tracks, started early: (row, path) tasks in, results out as they finish."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from melset.recipe import Recipe
    from melset.store.sink import RowSink
    from melset.track import TrackResult

Task = tuple[int, str]  # (row in the store, audio path)
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


def make_engine(
    name: str, workers: int | None = None, timeout: float = 120.0, address: str | None = None, preload: tuple = ()
) -> Engine:
    """An engine by name, one of ENGINES: "local" (processes on this machine) or "ray" (melset[ray]).
    `preload`: modules the local workers import before their first task (a storage backend)."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r} (one of {ENGINES})")
    if name == "ray":
        from melset.engines.cluster import RayEngine

        return RayEngine(address=address, workers=workers, timeout=timeout)
    from melset.engines.local import LocalEngine

    return LocalEngine(workers=workers, timeout=timeout, preload=preload)
