"""The Ray engine: the same recipe, run as Ray tasks on a cluster (or a local Ray instance).

Each track is one Ray task running the very function the local engine runs. Workers write
finished matrices straight into the store's mels.npy when they can reach it (the store on
storage every node shares, at the same path); a worker that cannot, sends the matrix back
through Ray's object store and the driver writes it. Either way only the driver commits
rows to the journal, so a Ray run is exactly as crash-safe as a local one.

Ray retries a task whose worker died once; if it dies again the track is marked failed
with the reason. A task that runs past the timeout is cancelled and marked failed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator

from melset.engines import Done, Task
from melset.engines.dispatch import IDLE_S, RETRIES_AFTER_CRASH, crashed, failed, keep_busy, timed_out
from melset.engines.worker import prepare_worker, run_task
from melset.recipe import Recipe
from melset.store.sink import RowSink

_prepared = False


def _warm_up() -> None:
    global _prepared
    if not _prepared:  # once per Ray worker process
        prepare_worker(own_process=False)
        _prepared = True


def _ray_task(path: str, recipe: Recipe, row: int, sink: RowSink | None):
    _warm_up()
    return run_task(path, recipe, row, sink)


def _single_machine(address: str | None) -> bool:
    if address is None:
        return True
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


# a --ray-address that does not answer is refused within PROBE_S + CONNECT_TIMEOUT_S, never waited on
PROBE_S, CONNECT_TIMEOUT_S = 5.0, 10.0


def check_address(address: str, timeout: float = PROBE_S) -> None:
    """Refuse a Ray address that does not accept a TCP connection within `timeout` seconds.

    "auto" and "local" are left to Ray. Raises UsageError naming the address.
    """
    import socket

    from melset.errors import UsageError

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--ray-address {address!r} is not HOST:PORT (for example 10.0.0.5:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc)).lower()
        raise UsageError(
            f"--ray-address {address}: no Ray cluster answers there ({why} within {timeout:g} s); "
            "start one with `ray start --head` or fix the address"
        ) from None


def _init_bounded(ray, kwargs: dict, address: str | None) -> None:
    """ray.init, given at most CONNECT_TIMEOUT_S to connect (a port that answers but is not
    Ray can make it wait for minutes)."""
    import threading

    from melset.errors import UsageError

    if address is None:  # a private instance started here: Ray wants its own start in the main thread
        ray.init(**kwargs)
        return
    outcome: list = []

    def connect() -> None:
        try:
            ray.init(**kwargs)
            outcome.append(None)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=connect, name="melset-ray-init", daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S)
    if not outcome:
        raise UsageError(
            f"--ray-address {address}: no Ray cluster answered within {CONNECT_TIMEOUT_S:g} s; "
            "check that the address is the head node's (ray status shows it)"
        )
    if outcome[0] is not None:
        if isinstance(outcome[0], (ConnectionError, TimeoutError, RuntimeError)):
            raise UsageError(
                f"--ray-address {address}: cannot connect to a Ray cluster there ({str(outcome[0]).splitlines()[0]})"
            ) from None
        raise outcome[0]


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, timeout: float = 120.0):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.workers = workers or 0  # 0 until connected: then the cluster's CPUs
        self.timeout = timeout
        self._started_here = False

    def __enter__(self) -> RayEngine:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
        if _single_machine(self.address):
            # A local instance, or one started with --node-ip-address 127.0.0.1: keep every
            # Ray connection on loopback (otherwise Ray swaps 127.0.0.1 for the host's own
            # address). Must be set before ray is imported; Ray reads it at import time.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError:
            from melset.errors import MissingDependency

            raise MissingDependency("the ray engine needs Ray: pip install 'melset[ray]'") from None
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            if self.address is None:
                kwargs["num_cpus"] = self.workers or None
            else:
                check_address(self.address)
                kwargs["address"] = self.address
            _init_bounded(ray, kwargs, self.address)
            self._started_here = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = min(self.workers, cpus) if self.workers else cpus
        self._remote = ray.remote(num_cpus=1, max_retries=RETRIES_AFTER_CRASH, retry_exceptions=False)(_ray_task)
        # workers import the recipe now, while the driver reads metadata
        self._warming = [ray.remote(num_cpus=1)(_warm_up).remote() for _ in range(self.workers)]
        return self

    def __exit__(self, *exc) -> None:
        if self._started_here:
            import ray

            ray.shutdown()

    def run(self, tasks: Iterable[Task], recipe: Recipe, sink: RowSink | None = None, on_idle=None) -> Iterator[Done]:
        """Yield (row, TrackResult, crc32) as Ray tasks finish; at most 2 per CPU in flight;
        on_idle() after each IDLE_S without a result."""
        import ray
        from ray.exceptions import GetTimeoutError, RayError, TaskCancelledError, WorkerCrashedError

        recipe_ref = ray.put(recipe)
        submitted: dict = {}  # ObjectRef -> when it was submitted
        cancelled: set = set()

        def submit(task: Task):
            row, path = task
            ref = self._remote.remote(path, recipe_ref, row, sink)
            submitted[ref] = time.monotonic()
            return ref

        def wait_any(refs: list) -> list:
            ready, _ = ray.wait(refs, num_returns=1, timeout=IDLE_S)
            now = time.monotonic()
            for ref in refs:
                if ref not in ready and ref not in cancelled and now - submitted[ref] > self.timeout:
                    ray.cancel(ref, force=True)
                    cancelled.add(ref)
            return ready

        def outcome(ref, task: Task, attempt: int) -> Done:
            del submitted[ref]
            crc = None
            try:
                result, crc = ray.get(ref, timeout=60)
            except TaskCancelledError:
                result = timed_out(self.timeout)
            except WorkerCrashedError:
                result = (
                    crashed("the Ray worker process died", RETRIES_AFTER_CRASH + 1)
                    if ref not in cancelled
                    else timed_out(self.timeout)
                )
            except GetTimeoutError:
                result = failed("Ray did not deliver the result")
            except RayError as exc:
                if isinstance(getattr(exc, "cause", None), OSError):  # could not write into the store
                    raise exc.cause from None
                result = (
                    timed_out(self.timeout)
                    if ref in cancelled
                    else failed(f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                )
            cancelled.discard(ref)
            return task[0], result, crc

        return keep_busy(tasks, 2 * self.workers, submit, wait_any, outcome, on_idle)
