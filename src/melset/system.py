"""The process and its environment: allocator tuning for the heavy loops, library versions,
strict JSON for what melset writes, a quiet stderr around chatty C decoders, and the check
every file a user names passes before melset reads it."""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import platform
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from typing import Any

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """End this worker process as soon as the process that started it dies, so that no worker
    outlives a driver killed with kill -9 (nor keeps decoding, nor holds the store's lock).

    A multiprocessing child watches its parent's sentinel (a pipe that reads EOF when the
    driver dies, even where the fork server, not the driver, is the OS parent: the fork server
    itself stays up while any worker lives). Other processes: Linux's PR_SET_PDEATHSIG, else a
    thread polling the parent's pid.
    """
    import multiprocessing

    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is not None:

        def watch_sentinel() -> None:
            from multiprocessing.connection import wait

            wait([sentinel])
            os._exit(1)

        threading.Thread(target=watch_sentinel, name="melset-parent-watch", daemon=True).start()
        return
    ppid = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != ppid:  # the parent died before the request took hold
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch_pid() -> None:
        while os.getppid() == ppid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch_pid, name="melset-parent-watch", daemon=True).start()


def keep_freed_memory(mmap_threshold: int | None = 32 * 1024 * 1024) -> None:
    """Let glibc reuse freed big buffers instead of returning them to the kernel.

    By default every allocation over 128 KiB is mmap'ed and unmapped on free, so a loop
    that allocates the same big arrays each iteration page-faults them in afresh: measured
    ~40% of the feature time in extraction and ~35% of CPU training time. mmap_threshold=None
    keeps every allocation in the heap (training: its activations exceed glibc's 32 MiB cap
    on the threshold). A no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    if mmap_threshold is None:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    else:
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        libc.mallopt(_M_TRIM_THRESHOLD, 8 * mmap_threshold)


def versions(*dists: str) -> dict[str, str]:
    """Python's version and each installed distribution's (absent ones left out), for manifests
    and runs; "libsndfile" is the C library that soundfile bundles."""
    out = {"python": platform.python_version()}
    for dist in dists:
        if dist == "libsndfile":
            try:
                import soundfile

                out[dist] = soundfile.__libsndfile_version__
            except (ImportError, AttributeError):
                pass
            continue
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_none(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalars
        return _finite_or_none(obj.item())
    return obj


def strict_json(obj: Any, indent: int | None = 2) -> str:
    """`obj` as strict JSON (RFC 8259): NaN and infinities become null, never the invalid `NaN`.

    Examples
    --------
    >>> strict_json({"f1": float("nan"), "n": 3}, indent=None)
    '{"f1": null, "n": 3}'
    """
    return json.dumps(_finite_or_none(obj), indent=indent, allow_nan=False, default=str)


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block: C libraries (libmpg123) print
    warnings there directly, past Python, and every failure already has a reason in words."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 to begin with
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def check_input_file(path: str | os.PathLike, what: str, max_bytes: int, error: type[Exception]) -> int:
    """Refuse, before anything opens it, a file a user named that cannot be read as one: missing,
    a folder, a pipe, socket or device (opening a FIFO waits for a writer for ever; a device can
    read without end), or larger than `max_bytes`. Returns its size.

    Parameters
    ----------
    path : path
        The file, as the user gave it.
    what : str
        How to name it in the sentence, e.g. ``"--tracks"``.
    max_bytes : int
        The largest size such a file can sensibly have.
    error : type
        The MelsetError subclass to raise, with one sentence naming `what` and `path`.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise error(f"{what} {path}: cannot read it ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {path}: a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path}: not a regular file (a pipe, socket or device); give a file melset can read to its end")
    if st.st_size > max_bytes:
        raise error(
            f"{what} {path}: {_size(st.st_size)} is more than such a file can hold ({_size(max_bytes)} at most); is it the right file?"
        )
    return st.st_size
