"""Fault injection for the durability tests, loaded by every Python process of a test run.

Tests put this folder on PYTHONPATH and set MELSET_FAULT_INJECT (conftest.fault_env);
Python then imports this module at start-up in the driver, the fork server and every
worker (Ray's too), and it wraps the worker's task. melset itself never reads the variable.

    crash:TEXT                SIGKILL the worker on every path containing TEXT
    crash-once:TEXT:MARKER    only while the file MARKER does not exist (it is created first)
    hang:TEXT                 sleep for an hour (with MELSET_FAULT_HANGING=FILE set, first
                              append the worker's pid to FILE, so a test sees the hang begin)
    enospc:TEXT               fail as a full disk would
    slow:SECONDS              every track takes SECONDS longer (kill loops land mid-run on a fast machine)
"""

import os

FAULT_ENV = "MELSET_FAULT_INJECT"


def _inject(path: str, spec: str) -> None:
    import errno
    import signal
    import time

    kind, _, rest = spec.partition(":")
    if kind == "slow":
        time.sleep(float(rest))
        return
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
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if kind == "hang":
        if os.environ.get("MELSET_FAULT_HANGING"):
            with open(os.environ["MELSET_FAULT_HANGING"], "a") as f:
                f.write(f"{os.getpid()}\n")
        time.sleep(3600)


def _install(spec: str) -> None:
    import functools

    from melset.engines import worker

    original = worker.run_task

    @functools.wraps(original)
    def run_task(path, *args, **kwargs):
        _inject(os.fspath(path), spec)
        return original(path, *args, **kwargs)

    worker.run_task = run_task  # same module and name: pickled by reference to this wrapper


if os.environ.get(FAULT_ENV):
    _install(os.environ[FAULT_ENV])
