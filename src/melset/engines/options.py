"""Engine options, checked before any process starts (the CLI and `extract.check_options` both ask)."""

from __future__ import annotations

import math
import os

from melset.engines import ENGINES
from melset.engines.dispatch import default_workers
from melset.errors import UsageError


def check_engine_options(engine: str, workers: int | None, timeout: float, address: str | None = None) -> None:
    """Refuse engine options that cannot work, in one sentence naming the option (UsageError),
    before any process starts; a Ray address is tried (bounded) when one is given."""
    if engine not in ENGINES:
        raise UsageError(f"--engine must be {' or '.join(ENGINES)}, not {engine!r}")
    if workers is not None:
        most = 4 * default_workers() if engine == "local" else None
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1 or (most and workers > most):
            raise UsageError(
                f"--workers must be a whole number from 1 to {most} (4 per core), not {workers!r}"
                if most
                else f"--workers must be a whole number of at least 1, not {workers!r}"
            )
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise UsageError(f"--timeout must be a finite number of seconds above 0, not {timeout!r}")
    if engine == "ray" and (address or os.environ.get("RAY_ADDRESS")):
        from melset.engines.cluster import check_address

        check_address(address or os.environ["RAY_ADDRESS"])
