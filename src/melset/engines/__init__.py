"""Engines run the recipe over many tracks: `local` processes on this machine, or `ray` on a cluster.

An engine is started before the job needs it (workers warm up while the driver reads
metadata), then takes (row, path) tasks and yields (row, TrackResult, crc32) as they finish.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from melset.recipe import Recipe
    from melset.track import TrackResult

Task = tuple[int, str]  # (row in the store, audio path)
Done = tuple[int, "TrackResult", "int | None"]  # (row, result, crc32 of the row when a worker wrote it)


class Engine(Protocol):
    name: str
    workers: int

    def __enter__(self) -> Engine: ...
    def __exit__(self, *exc) -> None: ...
    def run(self, tasks: Iterable[Task], recipe: Recipe, sink=None, on_idle=None) -> Iterator[Done]: ...


def make_engine(name: str, workers: int | None = None, timeout: float = 120.0, address: str | None = None) -> Engine:
    """An engine by name: "local" (processes on this machine) or "ray" (melset[ray])."""
    if name == "local":
        from melset.engines.local import LocalEngine

        return LocalEngine(workers=workers, timeout=timeout)
    if name != "ray":
        raise ValueError(f"unknown engine {name!r} (local or ray)")
    from melset.engines.cluster import RayEngine

    return RayEngine(address=address, workers=workers, timeout=timeout)
