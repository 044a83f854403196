"""What every command shares: the group that turns errors into exit codes, printing, opening a store."""

from __future__ import annotations

import os
import platform
import signal
import sys
import tempfile
import traceback

import click
from rich.console import Console
from rich.text import Text

from melset import __version__
from melset.errors import MelsetError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


EXIT_BUG = 70
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def say(*parts, console: Console = out) -> None:
    """Print one line made of `parts`, every one verbatim.

    A part is a str (data: file names, genres, paths, reasons, hints, printed exactly as
    written, never read as rich markup) or a (text, style) pair for melset's own emphasis.
    Every line a command prints goes through here.
    """
    line = Text()
    for part in parts:
        if isinstance(part, tuple):
            line.append(str(part[0]), style=part[1])
        else:
            line.append(str(part))
    console.print(line)


def _fail(message: str, code: int = 2) -> None:
    say(("melset: error: ", "bold red"), message, console=err)
    sys.exit(code)


def _save_traceback(exc: BaseException) -> str:
    """Write the traceback of a bug (and what ran) to a file of its own; returns its path."""
    fd, path = tempfile.mkstemp(prefix="melset-bug-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"melset {__version__}, Python {platform.python_version()}, {platform.platform()}\n")
        f.write(f"command: {' '.join(sys.argv)}\n\n")
        f.write("".join(traceback.format_exception(exc)))
    return path


class _Group(click.Group):
    """The `melset` group: whatever a command raises ends here, as one sentence and an exit status.

    MelsetError: its sentence, exit 2. Ctrl-C: exit 130. Anything else is a bug: one
    sentence, the path of a saved traceback, exit 70.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except MelsetError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            say(("interrupted", "yellow"), console=err)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            try:
                path = _save_traceback(exc)
            except OSError as save_error:
                path = f"(the traceback could not be saved: {save_error})"
            say(
                ("melset: internal error: ", "bold red"),
                f"{type(exc).__name__}: {exc}; this is a bug, please report it with: {path}",
                console=err,
            )
            sys.exit(EXIT_BUG)


def other_subsets_note(source: dict) -> str | None:
    """The FMA tracks of larger subsets whose files are on disk though the run left them out,
    in words with the --subset that includes them (None when there are none)."""
    counts = source.get("other_subsets_on_disk") or {}
    n = sum(counts.values())
    if not n:
        return None
    each = ", ".join(f"{subset} {k}" for subset, k in counts.items())
    return (
        f"{n} track{'s' if n != 1 else ''} of other subsets ({each}) {'are' if n != 1 else 'is'} on disk and not in "
        f"this store: --subset {list(counts)[-1]} includes {'them' if n != 1 else 'it'}"
    )


def _open(path: str):
    from melset.store import Store

    return Store(path)  # a MelsetError becomes one sentence and exit 2


def _cell(value) -> Text:
    """A table cell printed verbatim (data is never rich markup)."""
    return Text(str(value))


def _score(x) -> str:
    """A score as every command prints it: three decimals, or - when it is undefined (None)."""
    return "-" if x is None else f"{x:.3f}"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is."""


def _terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the clean-up must not be cut short
    raise _Terminated()
