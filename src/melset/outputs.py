"""Where melset writes what a user names: an output owns only what melset wrote.

Every file or folder a command writes at a path the user gives (``export --to``,
``report --html``, ``show --png``, the pictures of ``train`` and ``evaluate``) is checked here:

* the path is resolved (symbolic links and ``..``) and refused when it lies inside a melset
  store or a training run, whose files are their own records;
* an existing file is replaced only when melset wrote it (the caller says how to recognise
  one: melset's own mark, never merely the library that drew it); a folder, a FIFO, a device,
  a symbolic link or anything else that is not a regular file is refused;
* the new bytes go to a temporary file beside the target, renamed over it once complete. A
  temporary file left by a process that was killed (its pid in the name no longer runs) is
  removed by the next write of the same target.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import stat
import threading
from collections.abc import Callable, Iterator

from melset.errors import UsageError
from melset.vocab import MANIFEST, RUN_CONFIG, RUN_METRICS, RUN_WEIGHTS, STORE_FILES

_TMP = ".melset-"  # temporary names: .<target>.melset-<pid>-<random>.tmp
_NAME_KEPT = 100  # characters of the target's name kept in its temporary name


def melset_folder(folder: str) -> str | None:
    """"store" or "training run" when `folder` holds one, else None.

    A store: its manifest.json beside another of the store's files (a web project's
    manifest.json alone is not one). A run: config.json beside metrics.json or model.pt
    (a run killed before its first metrics holds the weights already).
    """

    def has(name: str) -> bool:
        return os.path.isfile(os.path.join(folder, name))

    if has(MANIFEST) and any(has(n) for n in STORE_FILES if n != MANIFEST):
        return "store"
    if has(RUN_CONFIG) and (has(RUN_METRICS) or has(RUN_WEIGHTS)):
        return "training run"
    return None


def refuse_inside_melset(real: str, option: str, given, itself: bool = False, runs: bool = True) -> None:
    """Raise UsageError when the resolved path `real` lies inside a store (or, with `runs`, a run).

    With `itself`, `real` (a folder to be replaced) may not be a store or a run either.
    """
    folder = real if itself else os.path.dirname(real)
    while True:
        kind = melset_folder(folder)
        if kind == "store" or (kind and runs):
            where = "is" if folder == real else "is inside"
            raise UsageError(
                f"{option} {given} {where} the {kind} {folder}, whose files are melset's own records; "
                f"write it to a place outside the {kind}"
            )
        up = os.path.dirname(folder)
        if up == folder:
            return
        folder = up


def what_is(mode: int) -> str:
    """A file type in words: "a folder", "a FIFO", "a device", "a socket", "a file"."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a file" if stat.S_ISREG(mode) else "not a regular file"


def output_file(
    path, option: str, ours: Callable[[str], bool], example: str, runs: bool = True, verb: str = "written"
) -> str:
    """The resolved path of a file melset is about to write at `path`, checked.

    Parameters
    ----------
    path : path
        What the user gave.
    option : str
        The option that named it, for the sentence ("--png").
    ours : callable
        Whether an existing regular file at the resolved path was written by melset (and so
        may be replaced).
    example : str
        A file name to suggest ("report.html").
    runs : bool
        Refuse a path inside a training run too (False: the run's own pictures).
    verb : str
        What melset did to an existing file it may replace ("written", "drawn"), for the sentence.

    Raises
    ------
    UsageError
        The path lies inside a store (or run), is a symbolic link, a folder or a special file, or is a file
        melset did not write.
    """
    given = os.fspath(path)
    if not given:
        raise UsageError(f"{option} is empty; give a file name such as {example}")
    if os.path.islink(given):
        raise UsageError(
            f"{option} {given} is a symbolic link; melset does not write through one (it would write "
            f"outside the folder named); give a file name such as {example}"
        )
    real = os.path.realpath(given)
    refuse_inside_melset(real, option, given, runs=runs)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError as exc:
        raise UsageError(f"{option} {given} cannot be used ({exc.strerror}); give a file name such as {example}") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"{option} {given} is {what_is(mode)}; give a file name such as {example}")
    if not ours(real):
        raise UsageError(
            f"{option} {given} exists and was not {verb} by melset; choose another name or move it"
        )
    return real


def file_holds(path: str, needles: tuple[bytes, ...], span: int = 16384, head: bool = True, tail: bool = True) -> bool:
    """Whether one of `needles` occurs in the first (`head`) or last (`tail`) `span` bytes of the file."""
    try:
        with open(path, "rb") as f:
            first = f.read(span)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - span, 0 if not head else len(first)))
            last = f.read(span)
    except OSError:
        return False
    return any((head and n in first) or (tail and n in last) for n in needles)


def pid_gone(pid: int) -> bool:
    """Whether no process `pid` runs on this machine (this process's own pid never is)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process
        return False
    return False


def leftover_pid(name: str, prefix: str) -> int | None:
    """The pid in a temporary name `<prefix><pid>-...`, or None when the name is not one."""
    if not name.startswith(prefix):
        return None
    pid = name[len(prefix) :].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends (a rename pair must not be cut in two).

    Python runs signal handlers in the main thread whichever thread the signal reached, so
    blocking it in this thread is not enough: the handlers are swapped for ones that only note
    the signal, and a noted signal is raised again once the real handlers are back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be set from the main thread, where melset's commands run
        return
    noted: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: noted.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for s in dict.fromkeys(noted):
            signal.raise_signal(s)


@contextlib.contextmanager
def replacing(real: str) -> Iterator[str]:
    """A temporary path beside `real` to write into; renamed over `real` when the block ends
    without error, removed otherwise. Temporary files of the same target left by killed
    processes are removed first."""
    folder, name = os.path.split(real)
    os.makedirs(folder, exist_ok=True)
    prefix = f".{name[:_NAME_KEPT]}{_TMP}"
    for other in os.listdir(folder):
        pid = leftover_pid(other, prefix)
        if pid is not None and other.endswith(".tmp") and pid_gone(pid):
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(os.path.join(folder, other)).st_mode):
                    os.remove(os.path.join(folder, other))
    tmp = os.path.join(folder, f"{prefix}{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, real)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
