"""Train, evaluate and predict with the baseline CNN on a store.

A run is a folder:
    RUN/model.pt        the best checkpoint's state_dict (tensors only: loaded with weights_only=True)
    RUN/config.json     store manifest, recipe, classes, architecture, hyper-parameters, seed, split, versions
    RUN/metrics.json    {"epochs": [{"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}, ...], ...}
    RUN/curves.png      loss and accuracy per epoch
    RUN/confusion_matrix_<split>.png   written by evaluate
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from melset.augment import covering_crops, mask_, mixup, random_crops
from melset.dataset import MelDataset, split_rows
from melset.errors import MissingDependency, RecipeError, RunError, UsageError
from melset.model import Architecture, MelCNN, architecture, build
from melset.recipe import Recipe, feature_difference
from melset.store import Store
from melset.system import keep_freed_memory, silenced_stderr, strict_json, versions
from melset.train_config import MODELS, SCHEDULES, TrainConfig, baseline_config  # noqa: F401  (re-exported)
from melset.vocab import OK, TEST, TRACK_ID, TRAINING, VALIDATION

RUN_FILES = ("model.pt", "config.json", "metrics.json", "curves.png")
WARMUP = 0.1  # share of the steps the cosine schedule warms up over


def check_config(cfg: TrainConfig) -> None:
    """Refuse hyper-parameters that cannot train, and a device that is not there, before any work. Raises UsageError."""
    cfg.check()
    pick_device(cfg.device)


def pick_device(name: str) -> torch.device:
    """The torch device for "auto", "cpu" or "cuda". Raises UsageError for cuda without CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked, but PyTorch sees no CUDA device here; use --device cpu or auto")
    return torch.device(name)


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
        ours = [n for n in present if n in RUN_FILES or (n.startswith("confusion_matrix_") and n.endswith(".png"))]
        others = [n for n in present if n not in ours]
        if others:
            raise RunError(
                f"{run_dir} holds files that are not a run's ({', '.join(others[:4])}"
                f"{' ...' if len(others) > 4 else ''}); --overwrite only replaces a run folder: choose another --run"
            )
        for name in ours:
            os.remove(os.path.join(run_dir, name))
    os.makedirs(run_dir, exist_ok=True)


def check_training_data(store: Store, train_set: MelDataset, val_set: MelDataset) -> list[str]:
    """Refuse a training split nothing can be learnt from; warn about a thin one.

    Returns the warnings (sentences). Raises UsageError when the training split is empty or
    holds fewer than two genres.
    """
    classes = store.classes

    def counts(targets: np.ndarray) -> np.ndarray:
        """Tracks per genre (multi-hot rows in a multi-label store, class indices otherwise)."""
        if not len(targets):
            return np.zeros(len(classes), dtype=np.int64)
        if np.ndim(targets) == 2:
            return np.asarray(targets).sum(axis=0)
        return np.bincount(targets, minlength=len(classes))

    train_counts, val_counts = counts(train_set.targets), counts(val_set.targets)
    if len(train_set) == 0:
        raise UsageError(f"{store.root} has no ok, labelled rows in its training split; nothing to learn from")
    present = [c for c, n in zip(classes, train_counts) if n]
    if len(present) < 2:
        raise UsageError(
            f"{store.root}: the training split holds {len(present)} genre ({', '.join(present)}); "
            "a classifier needs at least 2"
        )
    warnings = []
    empty = [c for c, n in zip(classes, train_counts) if not n]
    if empty:
        warnings.append(f"{len(empty)} genre(s) have no training rows and cannot be learnt: {', '.join(empty)}")
    if len(val_set) == 0:
        warnings.append("the validation split is empty: the best epoch is chosen on the training loss")
    else:
        thin = [c for c, n, t in zip(classes, val_counts, train_counts) if t and not n]
        if thin:
            warnings.append(
                f"the validation split has no example of {len(thin)} genre(s) ({', '.join(thin)}): "
                "validation accuracy says nothing about them"
            )
    return warnings


def crop_probabilities(model: nn.Module, x: torch.Tensor, crop: int, multi_label: bool = False) -> torch.Tensor:
    """Probabilities averaged over the `covering_crops` of each item (the whole input when crop is 0):
    softmax over genres, or a sigmoid per genre for a multi-label model."""
    crops = covering_crops(x, crop)
    link = torch.sigmoid if multi_label else (lambda logits: torch.softmax(logits, dim=1))
    return torch.stack([link(model(c)) for c in crops]).mean(dim=0)


def _loss(logits: torch.Tensor, y: torch.Tensor, smoothing: float, multi_label: bool) -> torch.Tensor:
    """Cross-entropy (one genre) or binary cross-entropy per genre (multi-hot y), with label smoothing."""
    if multi_label:
        target = y * (1.0 - smoothing) + 0.5 * smoothing
        return nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum") / len(y)
    return nn.functional.cross_entropy(logits, y, label_smoothing=smoothing)


def _hits(scores: torch.Tensor, y: torch.Tensor, multi_label: bool) -> int:
    """Correct top guesses: the class, or (multi-label) one of the track's genres (precision at 1)."""
    top = scores.argmax(1)
    if multi_label:
        return int(y.gather(1, top[:, None]).sum())
    return int((top == y).sum())


def _train_epoch(
    model, loader, device, optimizer, scheduler, cfg: TrainConfig, gen: torch.Generator, multi_label=False
):
    """One training pass with crops, masks, mixup and label smoothing. Returns (mean loss, accuracy)."""
    model.train()
    total, correct, n = 0.0, 0, 0
    for x, y in loader:
        x = random_crops(x, cfg.crop, gen)
        if cfg.freq_mask or cfg.time_mask:
            x = mask_(x.clone(), cfg.freq_mask, cfg.time_mask, gen)
        x, y_a, y_b, lam = mixup(x, y, cfg.mixup, gen)
        x, y_a, y_b = x.to(device), y_a.to(device), y_b.to(device)
        logits = model(x)
        loss = lam * _loss(logits, y_a, cfg.label_smoothing, multi_label)
        if lam < 1.0:
            loss = loss + (1 - lam) * _loss(logits, y_b, cfg.label_smoothing, multi_label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(y_a)
        correct += _hits(logits, y_a, multi_label)
        n += len(y_a)
    return (total / n, correct / n) if n else (math.nan, math.nan)


def _eval_epoch(model, loader, device, crop: int, multi_label: bool = False) -> tuple[float, float]:
    """Loss of the crop-averaged probabilities (negative log-likelihood; binary per genre when
    multi-label) and accuracy, in eval mode."""
    model.eval()
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            probs = crop_probabilities(model, x, crop, multi_label)
            if multi_label:
                p = probs.clamp(1e-7, 1 - 1e-7)
                total += float(nn.functional.binary_cross_entropy(p, y.float(), reduction="sum"))
            else:
                total += float(nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), y, reduction="sum"))
            correct += _hits(probs, y, multi_label)
            n += len(y)
    return (total / n, correct / n) if n else (math.nan, math.nan)


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = max(1, round(WARMUP * total))
    if cfg.schedule == "constant":
        return lambda step: 1.0
    return lambda step: (
        (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    )


def recalibrate_batchnorm(
    model: nn.Module, loader: DataLoader, device: torch.device, max_batches: int = 64, crop: int = 0
) -> None:
    """Recompute BatchNorm's running statistics for the current weights ("precise BN").

    The running averages lag behind weights that are still moving, and on small data the
    model then scores far worse in eval mode than in training; a forward pass over (up to
    max_batches of) the training data with a cumulative average fixes them. With `crop`,
    the statistics are those of the covering crops the model is scored on (one per item).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= max_batches:
                break
            crops = covering_crops(x, crop)
            model(crops[i % len(crops)].to(device))  # one crop per item, taking turns along the window
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def fit(
    train_set: Dataset,
    val_set: Dataset,
    arch: Architecture,
    cfg: TrainConfig,
    on_epoch: Callable[[dict], None] | None = None,
    on_best: Callable[[nn.Module], None] | None = None,
    multi_label: bool = False,
) -> tuple[MelCNN, list[dict], int]:
    """Train a network on (x [1, n_mels, n_frames], class) items; keep the best epoch on validation.

    Every random draw (initial weights, dropout, shuffling, crops, masks, mixup) comes from
    generators seeded with ``cfg.seed``, so on the CPU the same inputs give the same weights.

    Parameters
    ----------
    train_set, val_set : torch Dataset
        Training and validation items; an empty validation set selects on training loss.
    arch : Architecture
        The network to build.
    cfg : TrainConfig
        Hyper-parameters, device and seed.
    on_epoch : callable, optional
        Called with each epoch's metrics row as it ends.
    on_best : callable, optional
        Called with the model whenever an epoch is the best so far.
    multi_label : bool
        Targets are multi-hot rows: sigmoid outputs and binary cross-entropy.

    Returns
    -------
    (model, history, best_epoch)
        The model holding the best epoch's weights, the metrics rows, the best epoch.
    """
    check_config(cfg)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = pick_device(cfg.device)
    model = build(arch).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    augment_gen = torch.Generator().manual_seed(cfg.seed + 1)
    train_loader = DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=cfg.num_workers
    )
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, len(train_loader)))

    history, best, best_key, best_state, since_best = [], 0, None, None, 0
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        train_loss, train_acc = _train_epoch(
            model, train_loader, device, optimizer, scheduler, cfg, augment_gen, multi_label
        )
        recalibrate_batchnorm(model, train_loader, device, crop=cfg.crop)
        val_loss, val_acc = (
            _eval_epoch(model, val_loader, device, cfg.crop, multi_label) if len(val_set) else (math.nan, math.nan)
        )
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "val_loss": None if math.isnan(val_loss) else val_loss,
            "val_accuracy": None if math.isnan(val_acc) else val_acc,
            "seconds": round(time.perf_counter() - start, 3),
        }
        history.append(row)
        # best: highest validation accuracy, then lowest validation loss (training loss without validation)
        key = (val_acc, -val_loss) if len(val_set) else (train_acc, -train_loss)
        if best_key is None or key > best_key:
            best_key, best, since_best = key, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if on_best:
                on_best(model)
        else:
            since_best += 1
        if on_epoch:
            on_epoch(row)
        if since_best and since_best >= cfg.patience:  # patience 0: stop at the first epoch without progress
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, history, best


def train(
    store_dir: str,
    run_dir: str,
    cfg: TrainConfig = TrainConfig(),
    on_epoch: Callable[[dict], None] | None = None,
    overwrite: bool = False,
    on_warning: Callable[[str], None] | None = None,
) -> dict:
    """Train a CNN on a store's training split; keep the best epoch on validation.

    Parameters
    ----------
    store_dir : path
        The store to learn from.
    run_dir : path
        The run folder to write: model.pt, config.json, metrics.json, curves.png.
    cfg : TrainConfig
        Hyper-parameters, device and seed.
    on_epoch : callable, optional
        Called with each epoch's metrics row as it ends.
    overwrite : bool
        Replace an earlier run in `run_dir`; without it an existing run folder is refused.
    on_warning : callable, optional
        Called with each warning about the data (a genre without training rows, ...).

    Returns
    -------
    dict
        ``{"epochs": [...], "best_epoch": int, "stopped_early": bool, "warnings": [...]}``
        (also metrics.json).

    Raises
    ------
    UsageError
        Hyper-parameters out of range, a device that is not there, a training split with
        fewer than two genres.
    RunError
        `run_dir` already holds a run (and not `overwrite`).
    """
    from melset.plots import curves_png

    check_config(cfg)
    device = pick_device(cfg.device)
    store = Store(store_dir)
    train_set = MelDataset(store, TRAINING, seed=cfg.seed)
    val_set = MelDataset(store, VALIDATION, seed=cfg.seed)
    data_warnings = check_training_data(store, train_set, val_set)
    prepare_run_dir(run_dir, overwrite)
    for w in data_warnings:
        if on_warning:
            on_warning(w)
    keep_freed_memory(None)
    multi = store.multi_label
    arch = architecture(cfg.model, len(store.classes))
    with torch.random.fork_rng(devices=[]):  # a network only to describe; fit builds its own from the seed
        described = build(arch)
    model_name = type(described).__name__

    config = {
        "store": store.root,
        "store_manifest": store.manifest,
        "recipe": store.recipe,
        "classes": store.classes,
        "labels": store.label_kind,
        "multi_label": multi,
        "model": {"name": model_name, **arch.to_dict(), "parameters": described.n_parameters()},
        "hyperparameters": asdict(cfg),
        "seed": cfg.seed,
        "device": str(device),
        "split": train_set.split.describe(),
        "versions": versions("melset", "torch", "numpy"),
    }
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write(strict_json(config))

    def save(model: nn.Module) -> None:
        torch.save(model.state_dict(), os.path.join(run_dir, "model.pt"))

    _, history, best = fit(train_set, val_set, arch, cfg, on_epoch=on_epoch, on_best=save, multi_label=multi)
    metrics = {
        "epochs": history,
        "best_epoch": best,
        "stopped_early": len(history) < cfg.epochs,
        "warnings": data_warnings,
    }
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        f.write(strict_json(metrics))
    curves_png(
        history,
        os.path.join(run_dir, "curves.png"),
        title=f"{model_name} on {os.path.basename(store.root)}",
        multi_label=multi,
    )
    return metrics


@dataclass
class Run:
    """A trained run loaded for inference."""

    root: str
    config: dict
    model: MelCNN
    device: torch.device

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    @property
    def recipe(self) -> Recipe:
        return Recipe.from_dict(self.config["recipe"])

    @property
    def multi_label(self) -> bool:
        return bool(self.config.get("multi_label", False))

    @property
    def crop(self) -> int:
        """Frames per crop the model was trained on (0: whole windows)."""
        return int(self.config.get("hyperparameters", {}).get("crop", 0))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """x: (batch, n_mels, n_frames) matrices -> (batch, n_classes) softmax (a sigmoid per genre
        when multi-label), averaged over the covering crops the model was trained on."""
        with torch.no_grad():
            t = torch.from_numpy(np.array(x, dtype=np.float32)).unsqueeze(1).to(self.device)
            return crop_probabilities(self.model, t, self.crop, self.multi_label).cpu().numpy()


def load_run(run_dir: str, device: str = "auto") -> Run:
    """A run folder written by `train`, ready for inference. Raises RunError naming what is wrong."""
    config_path = os.path.join(run_dir, "config.json")
    model_path = os.path.join(run_dir, "model.pt")
    if not os.path.isdir(run_dir):
        raise RunError(
            f"{run_dir} is not a run folder (it does not exist); train one with melset train STORE --run {run_dir}"
        )
    for path in (config_path, model_path):
        if not os.path.isfile(path):
            raise RunError(f"{run_dir} is not a complete run: {os.path.basename(path)} is missing; train it again")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        classes = config["classes"]
        recipe = Recipe.from_dict(config["recipe"])
        arch = Architecture.from_dict(config["model"])
        config["seed"] = int(config.get("seed", 0))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(
            f"{config_path} cannot be read as a run's config ({type(exc).__name__}: {exc}); train it again"
        ) from None
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise RunError(f"{config_path}: classes must be a non-empty list of genre names")
    if arch.n_classes != len(classes):
        raise RunError(f"{config_path}: the model has {arch.n_classes} outputs for {len(classes)} classes")
    dev = pick_device(device)
    model = build(arch)
    try:
        model.load_state_dict(torch.load(model_path, map_location=dev, weights_only=True))
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a damaged file
        raise RunError(f"{model_path} cannot be loaded ({type(exc).__name__}); train the run again") from exc
    model.to(dev).eval()
    config["recipe"] = recipe.to_dict()
    return Run(os.path.abspath(run_dir), config, model, dev)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix,
    as scikit-learn computes them.

    Macro-F1 is ``f1_score(average="macro")`` over the classes present in `y_true` or
    `y_pred` (scikit-learn's default labels); a class absent from both does not pull it
    down. Per-class scores of a class without predictions (or without truth) are 0, as
    scikit-learn's ``zero_division=0``. Empty input gives None scores, never a division by zero.
    """
    try:
        from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
    except ImportError as exc:
        raise MissingDependency("evaluation needs scikit-learn: pip install 'melset[train]'") from exc
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    k = len(classes)
    labels = np.arange(k)
    if len(y_true) == 0:
        return {
            "accuracy": None,
            "macro_f1": None,
            "per_class": {c: {"precision": None, "recall": None, "f1": None, "support": 0} for c in classes},
            "confusion_matrix": np.zeros((k, k), dtype=np.int64).tolist(),
            "n": 0,
        }
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n": int(len(y_true)),
    }


def evaluate(run_dir: str, store_dir: str, split: str | None = TEST, device: str = "auto") -> dict:
    """Scores of a trained run on a store's split.

    Parameters
    ----------
    run_dir : path
        A run folder written by `train`.
    store_dir : path
        The store to score on; it must be made with the run's recipe (dtype aside) and share
        at least one genre with the run. Tracks of genres the run does not know are left out
        (counted in ``left_out``).
    split : {"training", "validation", "test"} or None
        The split (the store's own, else the run's seeded stratified one); None scores every usable row.
    device : {"auto", "cpu", "cuda"}

    Returns
    -------
    dict
        accuracy, macro_f1, per_class precision/recall/f1/support, confusion_matrix, n,
        left_out (count and genres), predictions, and the path of the confusion-matrix
        picture (confusion_png).

    Raises
    ------
    RunError
        The run cannot be loaded, the store was made with another recipe, or it shares no
        genre with the run.
    UsageError
        The split holds no usable track.
    """
    from melset.plots import confusion_png

    run = load_run(run_dir, device)
    store = Store(store_dir)
    diff = feature_difference(run.config["recipe"], store.recipe)
    if diff:
        raise RecipeError(
            f"{store.root} was made with another recipe than the one {run_dir} was trained on ({diff});"
            f" extract the store with `--recipe` from `melset recipe {run_dir}`"
        )
    shared = [c for c in store.classes if c in run.classes]
    if not shared:
        raise RunError(
            f"{store.root} shares no genre with the run {run_dir} "
            f"(store: {', '.join(store.classes[:6])}{' ...' if len(store.classes) > 6 else ''}; "
            f"run: {', '.join(run.classes[:6])}{' ...' if len(run.classes) > 6 else ''})"
        )
    seed = run.config["seed"]
    s = split_rows(store, seed=seed)
    rows = s.select(split)
    if run.multi_label or store.multi_label:
        return evaluate_multi_label(run, store, rows, split, s)
    index = {c: i for i, c in enumerate(run.classes)}
    names = [store.classes[j] for j in np.asarray(store.labels)[rows].argmax(axis=1)]
    keep = [i for i, n in enumerate(names) if n in index]
    unknown = sorted({n for n in names if n not in index})
    rows = rows[keep]
    if len(rows) == 0:
        raise UsageError(
            f"{store.root} has no ok, labelled track of the run's genres in its {split or 'usable'} rows"
            + (f" ({len(names)} of other genres left out)" if names else "")
            + ("; try --split all" if split else "")
        )
    y_true = np.array([index[names[i]] for i in keep], dtype=np.int64)
    probs = np.concatenate([run.probabilities(store.mels[rows[i : i + 32]]) for i in range(0, len(rows), 32)])
    y_pred = probs.argmax(axis=1)
    report = classification_report(y_true, y_pred, run.classes)
    report.update(
        {
            "split": split or "all",
            "store": store.root,
            "left_out": {"tracks": len(names) - len(keep), "genres": unknown},
            "split_source": s.describe(),
        }
    )
    png = os.path.join(run.root, f"confusion_matrix_{split or 'all'}.png")
    confusion_png(
        np.array(report["confusion_matrix"]),
        run.classes,
        png,
        title=f"{split or 'all'}: accuracy {report['accuracy']:.2f}, macro-F1 {report['macro_f1']:.2f}",
    )
    report["confusion_png"] = png
    ids = store.tracks[TRACK_ID].to_numpy()[rows]
    report["predictions"] = [
        {TRACK_ID: str(t), "true": run.classes[a], "predicted": run.classes[b]} for t, a, b in zip(ids, y_true, y_pred)
    ]
    return report


def multi_label_report(y_true: np.ndarray, scores: np.ndarray, classes: list[str]) -> dict:
    """ROC-AUC and average precision (macro and micro, scikit-learn) and AP per genre.

    Macro averages run over the genres with at least one positive and one negative track
    (a score is undefined otherwise: that genre's entry holds None); micro pools every
    (track, genre) decision.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y_true = np.asarray(y_true, dtype=np.int64)
    per_class, aps, aucs = {}, [], []
    for j, name in enumerate(classes):
        pos = int(y_true[:, j].sum()) if len(y_true) else 0
        ap = auc = None
        if 0 < pos < len(y_true):
            ap = float(average_precision_score(y_true[:, j], scores[:, j]))
            auc = float(roc_auc_score(y_true[:, j], scores[:, j]))
            aps.append(ap)
            aucs.append(auc)
        per_class[name] = {"average_precision": ap, "roc_auc": auc, "support": pos}
    flat_true, flat_score = y_true.ravel(), np.asarray(scores).ravel()
    pooled = 0 < flat_true.sum() < len(flat_true)
    return {
        "roc_auc_macro": float(np.mean(aucs)) if aucs else None,
        "roc_auc_micro": float(roc_auc_score(flat_true, flat_score)) if pooled else None,
        "average_precision_macro": float(np.mean(aps)) if aps else None,
        "average_precision_micro": float(average_precision_score(flat_true, flat_score)) if pooled else None,
        "per_class": per_class,
        "n": int(len(y_true)),
    }


def evaluate_multi_label(run: Run, store: Store, rows: np.ndarray, split: str | None, s) -> dict:
    """`evaluate` for a multi-label run: sigmoid scores against the store's multi-hot labels."""
    if not (run.multi_label and store.multi_label):
        raise ValueError(
            f"the run {run.root} is {'multi' if run.multi_label else 'single'}-label and the store {store.root} is "
            f"{'multi' if store.multi_label else 'single'}-label; evaluate a run on a store labelled the same way"
        )
    index = {c: i for i, c in enumerate(run.classes)}
    labels = np.asarray(store.labels)[rows]
    y_true = np.zeros((len(rows), len(run.classes)), dtype=np.int64)
    unknown = set()
    for j, name in enumerate(store.classes):
        if name in index:
            y_true[:, index[name]] = labels[:, j]
        elif labels[:, j].any():
            unknown.add(name)
    scores = (
        np.concatenate([run.probabilities(store.mels[rows[i : i + 32]]) for i in range(0, len(rows), 32)])
        if len(rows)
        else np.zeros((0, len(run.classes)))
    )
    report = multi_label_report(y_true, scores, run.classes)
    report.update(
        {
            "multi_label": True,
            "split": split or "all",
            "store": store.root,
            "genres_unknown_to_run": sorted(unknown),
            "split_source": s.describe(),
        }
    )
    ids = store.tracks[TRACK_ID].to_numpy()[rows]
    report["predictions"] = [
        {
            TRACK_ID: str(t),
            "true": [run.classes[j] for j in np.flatnonzero(yt)],
            "scores": {run.classes[j]: float(p[j]) for j in np.argsort(-p)[:5]},
        }
        for t, yt, p in zip(ids, y_true, scores)
    ]
    return report


def predict(
    run_dir: str,
    files: list[str],
    whole_track: bool = False,
    top: int = 3,
    device: str = "auto",
    threshold: float = 0.5,
) -> list[dict]:
    """Top genres for audio files, computed with exactly the recipe the run's store was made with.

    Parameters
    ----------
    run_dir : path
        A run folder written by `train`.
    files : list of path
        Audio files (anything `melset extract` reads).
    whole_track : bool
        Average the probabilities over consecutive windows of the whole file, not the first.
    top : int
        How many genres to list per file.
    device : {"auto", "cpu", "cuda"}
    threshold : float
        Multi-label runs: the genres whose sigmoid output reaches it are listed in "genres".

    Returns
    -------
    list of dict
        Per file: ``{"file", "windows", "top": [{"genre", "probability"}, ...]}`` (multi-label
        runs add ``"genres"``: those at or above the threshold, highest first), or
        ``{"file", "error"}`` when the file cannot be used.

    Raises
    ------
    RunError
        The run folder cannot be used.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must be between 0 and 1, not {threshold}")
    from melset.audio import AudioError
    from melset.track import process
    from melset.track import whole_track as windows

    if top < 1:
        raise UsageError(f"--top must be at least 1, not {top}")
    run = load_run(run_dir, device)
    recipe = run.recipe
    out = []
    for path in files:
        item: dict = {"file": os.fspath(path)}
        try:
            # C decoders (libmpg123) write warnings straight to fd 2; each failure has its reason
            with silenced_stderr():
                if whole_track:
                    x = windows(path, recipe)
                else:
                    result = process(path, recipe)
                    if result.status != OK:
                        raise AudioError(result.error)
                    x = result.mel[None]
        except FileNotFoundError:
            item["error"] = f"file not found: {os.fspath(path)}"
            out.append(item)
            continue
        except AudioError as exc:
            item["error"] = str(exc)
            out.append(item)
            continue
        probs = run.probabilities(x).mean(axis=0)
        order = np.argsort(-probs)[:top]
        item["windows"] = int(len(x))
        item["top"] = [{"genre": run.classes[i], "probability": float(probs[i])} for i in order]
        if run.multi_label:
            item["genres"] = [
                {"genre": run.classes[i], "probability": float(probs[i])}
                for i in np.argsort(-probs)
                if probs[i] >= threshold
            ]
        out.append(item)
    return out
