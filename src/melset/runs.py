"""A training run's folder, without PyTorch: its files, preparing it, reading what `train` wrote.

A run is a folder:
    RUN/config.json     store manifest, recipe, classes, architecture, hyper-parameters, seed, split, versions
    RUN/model.pt        the best epoch's state_dict (tensors only: loaded with weights_only=True)
    RUN/checkpoint.pt   while training: the latest epoch (model, optimizer, schedule, every random state,
                        best epoch, metrics so far), what `melset train --resume` continues from
    RUN/curves.png      loss and accuracy per epoch
    RUN/metrics.json    {"epochs": [{"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}, ...], ...}
    RUN/confusion_matrix_<split>.png   drawn by `melset evaluate`

`train` writes config.json first and metrics.json last, each whole or not at all (written
beside, synced, renamed): a folder with config.json and no metrics.json is a run whose
training did not finish, and nothing but `melset train --resume` uses it.

config.json and metrics.json are read here and nowhere else, and checked key by key; a run
that cannot be used is one RunError that names the file and says what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import shlex
from typing import Any

from melset.errors import RunError, UsageError
from melset.outputs import refuse_inside_melset
from melset.recipe import Recipe
from melset.system import strict_json
from melset.train_config import TrainConfig, option_flag
from melset.vocab import (
    CONFUSION_PNG,
    MANIFEST,
    RUN_CHECKPOINT,
    RUN_CONFIG,
    RUN_FILES,
    RUN_METRICS,
    RUN_PARTIAL,
    RUN_WEIGHTS,
)

RUN_RECORDS = (RUN_CONFIG, RUN_METRICS)  # what every finished run holds: metrics.json is written last
RUN_MARKS = (RUN_CONFIG, RUN_METRICS, RUN_WEIGHTS, RUN_CHECKPOINT)  # any of them: a folder `train` wrote


def is_run(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder `melset train` wrote into, finished or not (it holds one of RUN_MARKS)."""
    return any(os.path.isfile(os.path.join(path, name)) for name in RUN_MARKS)


def is_complete(path: str | os.PathLike) -> bool:
    """Whether `path` holds a run whose training finished (config.json and metrics.json)."""
    return all(os.path.isfile(os.path.join(path, name)) for name in RUN_RECORDS)


def confusion_png_path(run_dir: str | os.PathLike, split: str | None) -> str:
    """Where `melset evaluate` draws the confusion matrix of a split (None: every usable row)."""
    return os.path.join(os.path.abspath(run_dir), CONFUSION_PNG.format(split=split or "all"))


def _is_confusion_png(name: str) -> bool:
    head, _, tail = CONFUSION_PNG.partition("{split}")
    return name.startswith(head) and name.endswith(tail)


def _is_ours(name: str) -> bool:
    """A file `train` or `evaluate` writes in a run folder (a half-written one included)."""
    whole = name[: -len(RUN_PARTIAL)] if name.endswith(RUN_PARTIAL) else name
    return whole in RUN_FILES or _is_confusion_png(whole)


def prepare_run_dir(run_dir: str, overwrite: bool = False) -> None:
    """Make `run_dir` ready for a new run: created if absent, refused if it already holds files.

    With `overwrite`, the files of an earlier run (RUN_FILES, half-written ones and confusion
    matrices) are removed; a folder that holds anything else is still refused, so no user
    data is wiped. Raises RunError, or UsageError for a folder inside a store.
    """
    refuse_inside_melset(os.path.realpath(run_dir), "--run", run_dir, itself=True, runs=False)
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunError(f"{run_dir} exists and is not a folder; choose another --run")
    if os.path.isdir(run_dir):
        present = sorted(os.listdir(run_dir))
        ours = [n for n in present if _is_ours(n)]
        others = [n for n in present if n not in ours]
        if ours and not others and not _holds_melset_run(run_dir):
            names = ", ".join(n for n in ours[:4])
            raise RunError(
                f"{run_dir} holds {names} that are not a melset run's; choose another --run or move them"
            )
        if present and not overwrite:
            what = "a run" if ours and not others else "files"
            raise RunError(
                f"{run_dir} already holds {what} ({', '.join(present[:4])}{' ...' if len(present) > 4 else ''}); "
                + ("use --overwrite to replace it, or choose another --run" if what == "a run" else "choose another --run")
            )
        if others:
            raise RunError(
                f"{run_dir} holds files that are not a run's ({', '.join(others[:4])}"
                f"{' ...' if len(others) > 4 else ''}); --overwrite only replaces a run folder: choose another --run"
            )
        for name in ours:
            os.remove(os.path.join(run_dir, name))
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as exc:
        if exc.errno in FULL_OR_READ_ONLY:
            raise RunError(f"cannot write {run_dir}: {exc.strerror}; choose another --run") from None
        raise


def _holds_melset_run(run_dir: str) -> bool:
    """Whether `run_dir`'s config.json reads as one `melset train` wrote (a folder of half-written files only counts too)."""
    if not os.path.isfile(os.path.join(run_dir, RUN_CONFIG)):
        return all(n.endswith(RUN_PARTIAL) for n in os.listdir(run_dir) if _is_ours(n))
    try:
        read_config(run_dir)
    except (RunError, UsageError):
        return False
    return True


def remove_partials(run_dir: str) -> None:
    """Remove the half-written files a killed `train` left in `run_dir` (FILE.partial)."""
    for name in os.listdir(run_dir):
        if name.endswith(RUN_PARTIAL) and _is_ours(name):
            os.remove(os.path.join(run_dir, name))


FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG)


def cannot_write(path: str, exc: OSError) -> RunError:
    """The one sentence for a run file the disk refused (full, read-only, no permission)."""
    run_dir = os.path.dirname(os.path.abspath(path))
    if os.path.isfile(os.path.join(run_dir, RUN_CONFIG)) and not os.path.isfile(os.path.join(run_dir, RUN_METRICS)):
        then = f"free some space and resume with {resume_command(run_dir)}"
    else:
        then = "free some space, or choose another --run"
    return RunError(f"cannot write {path}: {exc.strerror or exc}; {then}")


def write_atomic(path: str, data: bytes) -> None:
    """Write `path` whole or not at all: written beside it (PATH.partial), synced, renamed over it.

    A full or read-only disk is a RunError (nothing half-written stays behind)."""
    try:
        _write_atomic(path, data)
    except OSError as exc:
        if exc.errno in FULL_OR_READ_ONLY:
            raise cannot_write(path, exc) from None
        raise


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + RUN_PARTIAL
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C and SIGTERM too: no half-written file stays behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself reaches the disk
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_record(run_dir: str, name: str, data: Any) -> None:
    """Write one of the run's JSON records (config.json, metrics.json) as strict JSON, atomically."""
    write_atomic(os.path.join(run_dir, name), strict_json(data).encode("utf-8"))


def resume_command(run_dir: str | os.PathLike, store: Any = None) -> str:
    """The command that continues the run in `run_dir` (its store from config.json when readable)."""
    if not isinstance(store, str):
        store = "STORE"
        with contextlib.suppress(OSError, ValueError, AttributeError):
            with open(os.path.join(run_dir, RUN_CONFIG), encoding="utf-8") as f:
                recorded = json.load(f).get("store")
            store = shlex.quote(recorded) if isinstance(recorded, str) else store
    else:
        store = shlex.quote(store)
    return f"melset train {store} --run {shlex.quote(os.fspath(run_dir))} --resume"


def require(run_dir: str, names: tuple[str, ...]) -> None:
    """Refuse a run folder that does not exist or lacks one of `names`. Raises RunError."""
    if not os.path.isdir(run_dir):
        raise RunError(
            f"{run_dir} is not a run folder (it does not exist); train one with melset train STORE --run {run_dir}"
        )
    if os.path.exists(os.path.join(run_dir, MANIFEST)):
        raise RunError(
            f"{run_dir} is a store, not a training run; pass a run folder made by "
            f"`melset train {shlex.quote(run_dir)} --run RUN` (the RUN folder)"
        )
    if not any(os.path.lexists(os.path.join(run_dir, n)) for n in RUN_FILES):
        raise RunError(
            f"{run_dir} is not a training run (it holds no {RUN_CONFIG}); pass a run folder made by "
            "`melset train STORE --run RUN`"
        )
    for name in names:
        if not os.path.isfile(os.path.join(run_dir, name)):
            raise RunError(f"{run_dir} is not a complete run: {name} is missing; train it again")


def require_complete(run_dir: str) -> None:
    """Refuse a folder that is not a run, and a run whose training did not finish (it says how to resume it)."""
    require(run_dir, (RUN_CONFIG,))
    if not os.path.isfile(os.path.join(run_dir, RUN_METRICS)):
        raise RunError(
            f"{run_dir} is a run whose training did not finish ({RUN_METRICS}, written when it ends, is missing); "
            f"resume it with {resume_command(run_dir)}"
        )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number strict JSON allows")


def load_strict_json(path: str) -> Any:
    """A JSON file, refusing NaN, Infinity and numbers too large for a float. Raises OSError, ValueError."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f, parse_constant=_no_constant)
    _finite(data)
    return data


def _finite(v: Any) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"a number overflows to {v}")
    if isinstance(v, dict):
        for x in v.values():
            _finite(x)
    elif isinstance(v, list):
        for x in v:
            _finite(x)


def file_sha256(path: str) -> str:
    """The sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


SHA256_KEY = "sha256"  # metrics.json: {file name: sha256} of config.json and model.pt as train wrote them


def check_sha256(run_dir: str, metrics: dict) -> None:
    """Refuse a run whose config.json or model.pt is not the file `train` wrote (metrics.json's sha256)."""
    recorded = metrics.get(SHA256_KEY)
    if recorded is None:
        return
    for name in (RUN_CONFIG, RUN_WEIGHTS):
        path = os.path.join(run_dir, name)
        try:
            same = file_sha256(path) == recorded.get(name)
        except OSError as exc:
            raise unreadable(path, exc, "file") from None
        if not same:
            raise RunError(f"{path} was changed after training wrote it; train it again")


def unreadable(path: str, exc: Exception, what: str = "config") -> RunError:
    """The one sentence for a run record that cannot be used as written."""
    return RunError(f"{path} cannot be read as a run's {what} ({type(exc).__name__}: {exc}); train it again")


def _is_number(v: Any, none: bool = False) -> bool:
    return (v is None and none) or (isinstance(v, int | float) and not isinstance(v, bool))


def _is_whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# key: (what it must be, the check); the first three every run has, the others where present
_CONFIG_KEYS: dict[str, tuple[str, Any]] = {
    "classes": (
        "a non-empty list of genre names",
        lambda v: isinstance(v, list) and v and all(isinstance(c, str) for c in v),
    ),
    "recipe": ("a recipe (a JSON object)", lambda v: isinstance(v, dict)),
    "model": ("the network's architecture (a JSON object)", lambda v: isinstance(v, dict)),
    "seed": ("a whole number", _is_whole),
    "hyperparameters": ("a JSON object of melset train's options", lambda v: isinstance(v, dict)),
    "multi_label": ("true or false", lambda v: isinstance(v, bool)),
    "store": ("the store's path", lambda v: isinstance(v, str)),
    "store_manifest": ("the store's manifest (a JSON object)", lambda v: isinstance(v, dict)),
    "labels": ("a label kind", lambda v: isinstance(v, str)),
    "device": ("a device name", lambda v: isinstance(v, str)),
}
_REQUIRED_CONFIG = ("classes", "recipe", "model")
_ARCHITECTURE_KEYS: dict[str, tuple[str, Any]] = {
    "n_classes": ("a whole number", _is_whole),
    "channels": ("a list of whole numbers", lambda v: isinstance(v, list) and v and all(map(_is_whole, v))),
    "pools": (
        "a list of [frequency, time] pairs",
        lambda v: (
            isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 and all(map(_is_whole, p)) for p in v)
        ),
    ),
    "dropout": ("a number", _is_number),
    "kind": ("a model name", lambda v: isinstance(v, str)),
    "bands": ("a whole number", _is_whole),
}
_REQUIRED_ARCHITECTURE = ("n_classes", "channels", "pools", "dropout")


def _check_keys(path: str, what: str, data: dict, keys: dict, required: tuple[str, ...]) -> None:
    for key in required:
        if key not in data:
            raise RunError(f"{path} has no {what}{key!r}; train the run again")
    for key, (must, ok) in keys.items():
        if key in data and not ok(data[key]):
            raise RunError(f"{path}: {what}{key!r} must be {must}, not {_short(data[key])}; train the run again")


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _known_hyperparameters(path: str, hp: dict) -> TrainConfig:
    """The hyper-parameters config.json records, as a checked TrainConfig (unknown keys are ignored)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        cfg = TrainConfig(**{k: v for k, v in hp.items() if k in known})
        cfg.check()
    except (UsageError, TypeError, ValueError) as exc:
        raise RunError(f"{path}: its hyperparameters cannot be used ({exc}); train the run again") from None
    return cfg


def read_config(run_dir: str) -> dict:
    """A run's config.json, checked key by key: classes, recipe, architecture, hyper-parameters, seed, store.

    The recipe comes back completed as `Recipe.to_dict` writes it, the seed as an int (0 when
    absent). Raises RunError naming what is wrong.
    """
    require(run_dir, (RUN_CONFIG,))
    path = os.path.join(run_dir, RUN_CONFIG)
    try:
        config = load_strict_json(path)
    except (OSError, ValueError) as exc:
        raise unreadable(path, exc) from None
    if not isinstance(config, dict):
        raise RunError(f"{path} is not a run's config (a JSON object); train the run again")
    _check_keys(path, "", config, _CONFIG_KEYS, _REQUIRED_CONFIG)
    _check_keys(path, "model ", config["model"], _ARCHITECTURE_KEYS, _REQUIRED_ARCHITECTURE)
    if config["model"]["n_classes"] != len(config["classes"]):
        raise RunError(
            f"{path}: the model has {config['model']['n_classes']} outputs for {len(config['classes'])} classes;"
            " train the run again"
        )
    recorded = config.get("store_manifest", {}).get("classes")
    if recorded is not None and recorded != config["classes"]:
        raise RunError(f"{path}: its classes are not those of the store it was trained on; train the run again")
    try:
        recipe = Recipe.from_dict(config["recipe"])
    except (ValueError, KeyError, TypeError) as exc:
        raise unreadable(path, exc) from None
    if "hyperparameters" in config:
        _known_hyperparameters(path, config["hyperparameters"])
    config["recipe"] = recipe.to_dict()
    config["seed"] = config.get("seed", 0)
    return config


_EPOCH_KEYS = {
    "epoch": ("a whole number", _is_whole),
    **{
        k: ("a number or null", lambda v: _is_number(v, none=True))
        for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")
    },
}
_METRICS_KEYS = {
    "epochs": ("a list of epochs", lambda v: isinstance(v, list)),
    "best_epoch": ("an epoch's number", lambda v: v is None or _is_whole(v)),
    "stopped_early": ("true or false", lambda v: isinstance(v, bool)),
    "warnings": ("a list of sentences", lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v)),
    SHA256_KEY: (
        "the sha256 of config.json and model.pt",
        lambda v: isinstance(v, dict) and all(isinstance(v.get(n), str) for n in (RUN_CONFIG, RUN_WEIGHTS)),
    ),
}


def read_metrics(run_dir: str) -> dict:
    """A run's metrics.json, checked: "epochs" a list of {"epoch": int, losses and accuracies: numbers
    or null}, "best_epoch" one of them. Raises RunError (the unfinished-run sentence when it is missing)."""
    require_complete(run_dir)
    path = os.path.join(run_dir, RUN_METRICS)
    try:
        metrics = load_strict_json(path)
    except (OSError, ValueError) as exc:
        raise unreadable(path, exc, "metrics") from None
    if not isinstance(metrics, dict):
        raise RunError(f"{path} is not a run's metrics (a JSON object); train the run again")
    _check_keys(path, "", metrics, _METRICS_KEYS, ("epochs",))
    for i, epoch in enumerate(metrics["epochs"]):
        if not isinstance(epoch, dict):
            raise RunError(f"{path}: epochs[{i}] must be a JSON object, not {_short(epoch)}; train the run again")
        _check_keys(path, f"epochs[{i}] ", epoch, _EPOCH_KEYS, ("epoch",))
        if epoch["epoch"] != i + 1:
            raise RunError(f"{path}: epochs[{i}] is epoch {epoch['epoch']}, not {i + 1}; train the run again")
    if not metrics["epochs"]:
        raise RunError(f"{path} records no epoch; train the run again")
    best = metrics.get("best_epoch")
    if best is not None and best not in [e["epoch"] for e in metrics["epochs"]]:
        raise RunError(f"{path}: best_epoch {best} is none of its epochs; train the run again")
    return metrics


def run_recipe(run_dir: str) -> Recipe:
    """The recipe a run's model was trained on (its store's), from config.json. Raises RunError."""
    return Recipe.from_dict(read_config(run_dir)["recipe"])


# -- resuming an interrupted run ------------------------------------------------------------------


def resumable_config(run_dir: str) -> dict:
    """The checked config.json of a run that `melset train --resume` can continue.

    Refused (RunError): a folder `train` did not begin a run in, a finished run, and a run
    whose config.json does not record what resuming needs (its hyper-parameters and store).
    """
    if not os.path.isfile(os.path.join(run_dir, RUN_CONFIG)):
        raise RunError(
            f"{run_dir} is not a run that melset train began (it has no {RUN_CONFIG}), so there is nothing to resume;"
            " train it without --resume"
        )
    if os.path.isfile(os.path.join(run_dir, RUN_METRICS)):
        raise RunError(
            f"{run_dir} is a run whose training finished ({RUN_METRICS} is written), so there is nothing to resume;"
            " use it as it is, or train it again with --overwrite"
        )
    config = read_config(run_dir)
    for key in ("hyperparameters", "store_manifest"):
        if key not in config:
            raise RunError(
                f"{os.path.join(run_dir, RUN_CONFIG)} does not record its {key}, so the run cannot be resumed;"
                " train it again with --overwrite"
            )
    return config


def resume_config(run_dir: str, config: dict, given: dict[str, Any]) -> TrainConfig:
    """The hyper-parameters to resume with: config.json's, each option the user gave checked against it.

    Raises RunError naming the first option given with another value than the run began with.
    """
    hp = config["hyperparameters"]
    path = os.path.join(run_dir, RUN_CONFIG)
    cfg = _known_hyperparameters(path, hp)
    missing = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in hp]
    if missing:
        raise RunError(
            f"{path} does not record {option_flag(missing[0])} (a run of another melset version), "
            "so it cannot be resumed; train it again with --overwrite"
        )
    for name, value in given.items():
        recorded = getattr(cfg, name)
        if value != recorded:
            raise RunError(
                f"{run_dir} was begun with {option_flag(name)} {recorded}, not {value}: resume it with the options "
                "it was begun with (or leave them out), or train it again with --overwrite"
            )
    return cfg


def check_same_store(run_dir: str, config: dict, store_root: str, manifest: dict) -> None:
    """Refuse to resume a run on another store than the one it began on, or on that store changed since."""
    recorded = config["store_manifest"]
    now = json.loads(strict_json(manifest))
    if recorded.get("store_id") != now.get("store_id"):
        raise RunError(
            f"{store_root} is not the store {run_dir} was begun on ({config.get('store', 'see its config.json')}); "
            f"resume it with that store, or train it again with --overwrite"
        )
    if recorded != now:
        changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
        raise RunError(
            f"{store_root} has changed since {run_dir} began (its manifest differs in {', '.join(changed[:3])}); "
            "train the run again with --overwrite"
        )
