"""A training run's folder, without PyTorch: its files, preparing it, reading what `train` wrote.

A run is a folder:
    RUN/model.pt        the best checkpoint's state_dict (tensors only: loaded with weights_only=True)
    RUN/config.json     store manifest, recipe, classes, architecture, hyper-parameters, seed, split, versions
    RUN/metrics.json    {"epochs": [{"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}, ...], ...}
    RUN/curves.png      loss and accuracy per epoch
    RUN/confusion_matrix_<split>.png   drawn by `melset evaluate`

config.json and metrics.json are read here and nowhere else; a run that cannot be used is
one RunError that names the file and says what to do.
"""

from __future__ import annotations

import json
import os
from typing import Any

from melset.errors import RunError
from melset.recipe import Recipe
from melset.system import strict_json
from melset.vocab import CONFUSION_PNG, RUN_CONFIG, RUN_FILES, RUN_METRICS

RUN_RECORDS = (RUN_CONFIG, RUN_METRICS)  # what every finished run holds: a folder with both is a run


def is_run(path: str | os.PathLike) -> bool:
    """Whether `path` holds a run's records (config.json and metrics.json)."""
    return all(os.path.isfile(os.path.join(path, name)) for name in RUN_RECORDS)


def confusion_png_path(run_dir: str | os.PathLike, split: str | None) -> str:
    """Where `melset evaluate` draws the confusion matrix of a split (None: every usable row)."""
    return os.path.join(os.path.abspath(run_dir), CONFUSION_PNG.format(split=split or "all"))


def _is_confusion_png(name: str) -> bool:
    head, _, tail = CONFUSION_PNG.partition("{split}")
    return name.startswith(head) and name.endswith(tail)


def prepare_run_dir(run_dir: str, overwrite: bool = False) -> None:
    """Make `run_dir` ready for a new run: created if absent, refused if it already holds files.

    With `overwrite`, the files of an earlier run (RUN_FILES and confusion matrices) are
    removed; a folder that holds anything else is still refused, so no user data is wiped.
    Raises RunError.
    """
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunError(f"{run_dir} exists and is not a folder; choose another --run")
    if os.path.isdir(run_dir):
        present = sorted(os.listdir(run_dir))
        if present and not overwrite:
            raise RunError(
                f"{run_dir} already holds a run ({', '.join(present[:4])}{' ...' if len(present) > 4 else ''}); "
                "use --overwrite to replace it, or choose another --run"
            )
        ours = [n for n in present if n in RUN_FILES or _is_confusion_png(n)]
        others = [n for n in present if n not in ours]
        if others:
            raise RunError(
                f"{run_dir} holds files that are not a run's ({', '.join(others[:4])}"
                f"{' ...' if len(others) > 4 else ''}); --overwrite only replaces a run folder: choose another --run"
            )
        for name in ours:
            os.remove(os.path.join(run_dir, name))
    os.makedirs(run_dir, exist_ok=True)


def write_record(run_dir: str, name: str, data: Any) -> None:
    """Write one of the run's JSON records (config.json, metrics.json) as strict JSON."""
    with open(os.path.join(run_dir, name), "w") as f:
        f.write(strict_json(data))


def require(run_dir: str, names: tuple[str, ...]) -> None:
    """Refuse a run folder that does not exist or lacks one of `names`. Raises RunError."""
    if not os.path.isdir(run_dir):
        raise RunError(
            f"{run_dir} is not a run folder (it does not exist); train one with melset train STORE --run {run_dir}"
        )
    for name in names:
        if not os.path.isfile(os.path.join(run_dir, name)):
            raise RunError(f"{run_dir} is not a complete run: {name} is missing; train it again")


def unreadable(path: str, exc: Exception, what: str = "config") -> RunError:
    """The one sentence for a run record that cannot be used as written."""
    return RunError(f"{path} cannot be read as a run's {what} ({type(exc).__name__}: {exc}); train it again")


def read_config(run_dir: str) -> dict:
    """A run's config.json, checked: a JSON object with a valid recipe, genre names and a seed.

    The recipe comes back completed as `Recipe.to_dict` writes it, the seed as an int.
    Raises RunError naming what is wrong.
    """
    require(run_dir, (RUN_CONFIG,))
    path = os.path.join(run_dir, RUN_CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        classes = config["classes"]
        recipe = Recipe.from_dict(config["recipe"])
        config["seed"] = int(config.get("seed", 0))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise unreadable(path, exc) from None
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise RunError(f"{path}: classes must be a non-empty list of genre names")
    config["recipe"] = recipe.to_dict()
    return config


def read_metrics(run_dir: str) -> dict:
    """A run's metrics.json: a JSON object whose "epochs" is a list. Raises RunError."""
    require(run_dir, (RUN_METRICS,))
    path = os.path.join(run_dir, RUN_METRICS)
    try:
        with open(path, encoding="utf-8") as f:
            metrics = json.load(f)
        if not isinstance(metrics["epochs"], list):
            raise TypeError("epochs is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise unreadable(path, exc, "metrics") from None
    return metrics


def run_recipe(run_dir: str) -> Recipe:
    """The recipe a run's model was trained on (its store's), from config.json. Raises RunError."""
    return Recipe.from_dict(read_config(run_dir)["recipe"])
