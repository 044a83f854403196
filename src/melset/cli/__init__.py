"""The `melset` command: extract, recipe, info, show, export, repair, report (and train, evaluate, predict with melset[train]).

The front door: the group and the executable. base.py holds what every command shares (the
group's error handling and exit codes, printing), options.py the options generated from
defaults, and one module per family holds its commands: extract, store (info, show, recipe,
repair), export, report, train (train, evaluate, predict).
"""

from __future__ import annotations

import os
import sys

# Before numpy loads (melset's own __init__ does not load it): the command's process does no
# linear algebra worth threads, and OpenBLAS's idle threads spin after it starts them (~0.1 s
# of CPU in each process at every start, the workers' fork server included, on cores the
# workers need).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click

from melset import __version__
from melset.cli import export, extract, report, store, train
from melset.cli.base import _Group


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="melset")
def main() -> None:
    """melset: audio collections (FMA and friends) -> training-ready log-mel datasets.

    Exit status of every command: 0 done, 1 nothing usable came out (extract: no track
    stored; predict: a file could not be used), 2 a usage or input error (one sentence
    names it), 70 a bug in melset (a traceback file is saved), 130 Ctrl-C, 143 SIGTERM.
    """


def run() -> None:
    """The `melset` executable: `main`, then an immediate exit with its status.

    By then every file is written and closed and every worker has ended; the interpreter's
    own tear-down of pandas, pyarrow, torch and the rest only adds a few tenths of a second
    to each command (a tenth of a short extract).
    """
    try:
        main(prog_name="melset")
        code = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`melset info | head`) or stream
            pass
    os._exit(code or 0)


for command in (
    extract.extract,
    store.info,
    store.show,
    store.recipe_command,
    store.repair,
    export.export,
    report.report,
    train.train,
    train.evaluate,
    train.predict,
):
    main.add_command(command)
