"""The commands of melset[train]: train a model on a store, evaluate a run on a store, predict audio files' genres."""

from __future__ import annotations

import os
import signal
import sys
import time

import click
from click.core import ParameterSource
from rich.table import Table

from melset.cli.base import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    _cell,
    _fail,
    _open,
    _score,
    _Terminated,
    _terminated,
    err,
    out,
    say,
)
from melset.cli.options import _DEVICE, _train_options
from melset.errors import MissingDependency, UsageError
from melset.system import strict_json
from melset.train_config import TrainConfig
from melset.vocab import RUN_CONFIG, SPLITS, TEST


def _needs_torch() -> None:
    try:
        import torch  # noqa: F401
        import sklearn  # noqa: F401  (after torch: scikit-learn looks for torch when it is imported)
    except ImportError as exc:
        raise MissingDependency(
            f"this command needs PyTorch and scikit-learn ({exc.name} is missing): pip install 'melset[train]'"
        ) from None


@click.command()
@click.argument("store_dir", type=click.Path())
@click.option("--run", "run_dir", type=click.Path(), required=True, help="Folder for the run (model, metrics, curves).")
@_train_options
@click.option("--overwrite", is_flag=True, help="Replace the run already in --run.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the interrupted run in --run from its last epoch, with the options it began with.",
)
@click.option("--quiet", is_flag=True, help="No line per epoch.")
def train(store_dir, run_dir, overwrite, resume, quiet, **hyperparameters):
    """Train a genre classifier on a store (training split; best epoch on validation)."""
    _needs_torch()
    from melset.runs import resumable_config, resume_config
    from melset.train import check_config
    from melset.train import train as run_train

    if resume and overwrite:
        raise UsageError("--resume continues the run in --run and --overwrite replaces it: give one of them")
    if resume:  # the options it began with; those given again must be the same
        ctx = click.get_current_context()
        given = {k: v for k, v in hyperparameters.items() if ctx.get_parameter_source(k) != ParameterSource.DEFAULT}
        cfg = resume_config(run_dir, resumable_config(run_dir), given)
    else:
        cfg = TrainConfig(**hyperparameters)
    check_config(cfg)
    store = _open(store_dir)
    progress = _EpochLines(cfg.patience)  # plain lines on stdout: a terminal and a log file alike

    def on_start(plan: dict) -> None:
        if not quiet:
            progress.start(plan)

    def on_epoch(row: dict) -> None:
        if not quiet:
            progress.epoch(row)

    def on_warning(message: str) -> None:
        say(("warning", "yellow"), f": {message}", console=err)

    previous = signal.signal(signal.SIGTERM, _terminated)  # like Ctrl-C: the last finished epoch is kept
    try:
        metrics = run_train(
            store.root,
            run_dir,
            cfg,
            on_epoch,
            overwrite=overwrite,
            on_warning=on_warning,
            resume=resume,
            on_start=on_start,
        )
    except KeyboardInterrupt as exc:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the sentence below is the last thing this command does
        _stopped(store.root, run_dir, cfg.epochs, terminated=isinstance(exc, _Terminated))
    finally:
        signal.signal(signal.SIGTERM, previous)
    best = metrics["epochs"][metrics["best_epoch"] - 1]
    val = f", validation accuracy {_score(best['val_accuracy'])}" if best["val_accuracy"] is not None else ""
    say(
        f"{run_dir}: {len(metrics['epochs'])} epochs{' (stopped early)' if metrics['stopped_early'] else ''}; "
        f"best epoch {metrics['best_epoch']}: training accuracy {_score(best['train_accuracy'])}{val}"
    )


def _duration(seconds: float) -> str:
    """4.2 s, 3 min 12 s, 2 h 05 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = round(seconds) // 60
    if minutes < 60:
        return f"{minutes} min {round(seconds) % 60} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class _EpochLines:
    """One plain line per epoch (losses, accuracies, seconds, ETA), printed as each epoch ends,
    and before the first one a line saying how many epochs will run."""

    def __init__(self, patience: int):
        self.patience = patience
        self.last = time.monotonic()
        self.took: list[float] = []
        self.first, self.epochs = 1, 0

    def start(self, plan: dict) -> None:
        self.first, self.epochs = plan["first_epoch"], plan["epochs"]
        val = f"{plan['val_tracks']} validation tracks" if plan["val_tracks"] else "no validation tracks"
        begin = f"resuming at epoch {self.first} of {self.epochs}" if self.first > 1 else f"training {self.epochs}"
        early = (
            f"; it stops early after {self.patience} epochs without a better score"
            if self.patience < self.epochs
            else ""
        )
        say(f"{begin} epochs on {plan['train_tracks']} training tracks ({val}), {plan['device']}{early}")
        self.last = time.monotonic()

    def epoch(self, row: dict) -> None:
        now = time.monotonic()
        self.took.append(now - self.last)
        self.last = now
        pace = sum(self.took) / len(self.took)
        left = self.epochs - row["epoch"]

        def pair(loss, acc) -> str:
            return f"loss {_score(loss)} acc {_score(acc)}"

        say(
            f"epoch {row['epoch']}/{self.epochs}: train {pair(row['train_loss'], row['train_accuracy'])}, "
            f"val {pair(row['val_loss'], row['val_accuracy'])}, {self.took[-1]:.1f} s, "
            f"ETA {_duration(left * pace)}"
        )
        if len(self.took) == 1 and left:
            total = pace * (self.epochs - self.first + 1)
            say(f"estimated total: {_duration(total)} for {self.epochs - self.first + 1} epochs at this pace")


def _stopped(store: str, run_dir: str, epochs: int, terminated: bool) -> None:
    """Say what an interrupted `train` kept, and exit 143 (SIGTERM) or 130 (Ctrl-C)."""
    from melset.runs import is_complete, resume_command
    from melset.train import checkpoint_epoch

    how, code = ("terminated (SIGTERM)", EXIT_TERMINATED) if terminated else ("interrupted", EXIT_INTERRUPTED)
    done = checkpoint_epoch(run_dir)
    if is_complete(run_dir):
        kept = f"training had finished: {run_dir} is complete"
    elif done is not None:
        kept = f"stopped after epoch {done} of {epochs}: the checkpoint is saved; resume with {resume_command(run_dir, store)}"
    elif os.path.isfile(os.path.join(run_dir, RUN_CONFIG)):
        kept = (
            f"stopped before the first epoch ended: nothing to keep yet; resume with {resume_command(run_dir, store)}"
        )
    else:
        kept = "stopped before training began: nothing was written"
    say((how, "yellow"), f": {kept}", console=err)
    sys.exit(code)


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--store", "store_dir", type=click.Path(), required=True, help="A store made with the run's recipe.")
@click.option("--split", type=click.Choice([*SPLITS, "all"]), default=TEST, show_default=True)
@click.option("--device", type=_DEVICE, default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (strict JSON).")
def evaluate(run_dir, store_dir, split, device, as_json):
    """Accuracy, macro-F1 and per-genre scores of a run on a store's split; draws the confusion matrix."""
    _needs_torch()
    from melset.evaluate import evaluate as run_evaluate
    from melset.predict import pick_device
    from melset.runs import confusion_png_path

    pick_device(device)
    _open(store_dir)
    chosen = None if split == "all" else split
    try:
        report = run_evaluate(run_dir, store_dir, chosen, device, confusion_png=confusion_png_path(run_dir, chosen))
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(strict_json(report))
        return
    if report.get("multi_label"):
        _print_multi_label(report, split)
        return
    say(
        (f"{split}", "bold"),
        f": {report['n']} tracks, accuracy {_score(report['accuracy'])}, macro-F1 {_score(report['macro_f1'])}",
    )
    left = report["left_out"]
    if left["tracks"]:
        say(
            ("note", "yellow"),
            f": {left['tracks']} track(s) left out: their genres are not the run's ({', '.join(left['genres'])})",
        )
    t = Table()
    for col in ("genre", "precision", "recall", "f1", "support"):
        t.add_column(col, justify="left" if col == "genre" else "right")
    for genre, m in report["per_class"].items():
        t.add_row(_cell(genre), *[_cell(_score(m[k])) for k in ("precision", "recall", "f1")], _cell(m["support"]))
    out.print(t)
    if report["confusion_png"]:
        say(f"confusion matrix: {report['confusion_png']}")
    else:
        say(("warning", "yellow"), f": {report['confusion_png_error']}; the confusion matrix was not drawn", console=err)


def _print_multi_label(report: dict, split: str) -> None:
    say(
        (split, "bold"),
        f": {report['n']} tracks, multi-label: ROC-AUC macro {_score(report['roc_auc_macro'])} "
        f"micro {_score(report['roc_auc_micro'])}, average precision macro {_score(report['average_precision_macro'])} "
        f"micro {_score(report['average_precision_micro'])}",
    )
    t = Table()
    for col in ("genre", "average precision", "ROC-AUC", "support"):
        t.add_column(col, justify="left" if col == "genre" else "right")
    for genre, m in report["per_class"].items():
        t.add_row(_cell(genre), _cell(_score(m["average_precision"])), _cell(_score(m["roc_auc"])), _cell(m["support"]))
    out.print(t)
    say("- : the split has no track of that genre (or only such tracks), so the score is undefined")


@click.command()
@click.argument("run_dir", type=click.Path())
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option(
    "--whole-track", is_flag=True, help="Average over consecutive windows of the recipe's frames, not just the first."
)
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="Genres listed per file.")
@click.option("--device", type=_DEVICE, default="auto", show_default=True)
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Multi-label runs: list every genre whose sigmoid output reaches it.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (strict JSON).")
def predict(run_dir, files, whole_track, top, device, threshold, as_json):
    """Top genres for audio files (mp3, wav, flac, ogg, ...), with the run's own recipe."""
    _needs_torch()
    from melset.predict import pick_device
    from melset.predict import predict as run_predict

    pick_device(device)
    try:
        results = run_predict(
            run_dir, list(files), whole_track=whole_track, top=top, device=device, threshold=threshold
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if as_json:
        click.echo(strict_json(results))
    else:
        for r in results:
            if "error" in r:
                say(f"{r['file']}: ", ("cannot predict", "red"), f": {r['error']}")
            else:
                guesses = ", ".join(f"{g['genre']} {g['probability']:.2f}" for g in r["top"])
                if "genres" in r:  # multi-label: every genre at or above the threshold
                    above = ", ".join(f"{g['genre']} {g['probability']:.2f}" for g in r["genres"])
                    guesses = above or f"no genre reaches {threshold:g} (highest: {guesses})"
                say(f"{r['file']}: {guesses}" + (f"  ({r['windows']} windows)" if whole_track else ""))
    sys.exit(1 if any("error" in r for r in results) else 0)
