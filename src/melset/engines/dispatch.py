"""The driver's side of every engine: keep workers busy, and name what went wrong with a task.

`keep_busy` is the loop both engines share: up to `bound` tasks in flight, topped up as
each finishes, a task whose worker died submitted again when the engine says so.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from melset.engines import Done, Task

if TYPE_CHECKING:
    from melset.track import TrackResult

RETRIES_AFTER_CRASH = 1  # a track whose worker dies is tried once more, then failed with the reason
IDLE_S = 0.5  # the longest an engine waits for a result before it lets the driver do its chores


def keep_busy(
    tasks: Iterable[Task],
    bound: int,
    submit: Callable[[Task], Any],
    wait: Callable[[list], Iterable[Any]],
    outcome: Callable[[Any, Task, int], Done | None],
    on_idle: Callable[[], None] | None = None,
) -> Iterator[Done]:
    """Yield every task's result as it finishes, with at most `bound` tasks in flight.

    submit(task) -> a handle; wait(handles) -> the handles that finished (at least one, or
    none after a timeout of at most IDLE_S); outcome(handle, task, attempt) -> the result,
    or None to submit the task again (its worker died); on_idle() is called whenever a wait
    ends with nothing finished (the driver commits finished rows then, so a slow file never
    holds back the journal of fast ones).
    """
    pending, inflight = iter(tasks), {}

    def refill() -> None:
        while len(inflight) < bound:
            task = next(pending, None)
            if task is None:
                return
            inflight[submit(task)] = (task, 0)

    refill()
    while inflight:
        finished = wait(list(inflight))
        if not finished and on_idle is not None:
            on_idle()
        for handle in finished:
            task, attempt = inflight.pop(handle)
            done = outcome(handle, task, attempt)
            if done is None:
                inflight[submit(task)] = (task, attempt + 1)
            else:
                yield done
        refill()


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
    from melset.track import TrackResult

    return TrackResult.failed(reason, math.nan)


def timed_out(seconds: float) -> TrackResult:
    return failed(f"timed out: no result after {seconds:g} s (the decoder hung or the file is huge)")


def crashed(how: str, tries: int) -> TrackResult:
    return failed(f"the decoder crashed: {how} on every try ({tries})")
