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
from melset.errors import UsageError
from melset.model import MODELS, Architecture, MelCNN, architecture, build
from melset.recipe import Recipe
from melset.store import Store
from melset.system import keep_freed_memory, versions
from melset.vocab import OK, TEST, TRACK_ID, TRAINING, VALIDATION


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (recorded in its config.json).

    The defaults are measured against the original recipe (`baseline_config`) by
    benchmarks/model_quality.py, 5-fold cross-validation on GTZAN clips; README.md has the table.
    """

    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    device: str = "auto"
    seed: int = 0
    patience: int = 10  # epochs without a better validation score before stopping; 0 = never
    num_workers: int = 0
    model: str = "compact"  # one of melset.model.MODELS
    crop: int = 256  # frames per random training crop; 0 = the whole stored window
    freq_mask: int = 16  # SpecAugment: up to this many mels per band, two bands; 0 = off
    time_mask: int = 32  # SpecAugment: up to this many frames per span, two spans; 0 = off
    mixup: float = 0.2  # Beta(alpha, alpha) mixing weight; 0 = off
    label_smoothing: float = 0.1
    schedule: str = "cosine"  # one of SCHEDULES

    def check(self) -> None:
        """Raise UsageError naming the first option whose value cannot work."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be a whole number of at least 1, not {value!r}")
        non_negative = {
            "patience": self.patience,
            "workers": self.num_workers,
            "crop": self.crop,
            "freq_mask": self.freq_mask,
            "time_mask": self.time_mask,
        }
        for name, value in non_negative.items():
            if not isinstance(value, int) or value < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be a whole number of at least 0, not {value!r}")
        if self.crop and self.crop < 16:
            raise UsageError(f"--crop must be 0 (the whole window) or at least 16 frames, not {self.crop}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise UsageError(f"--lr must be a learning rate in (0, 1], not {self.lr}")
        if not (math.isfinite(self.weight_decay) and 0 <= self.weight_decay <= 1):
            raise UsageError(f"--weight-decay must be in [0, 1], not {self.weight_decay}")
        if not (math.isfinite(self.mixup) and 0 <= self.mixup <= 10):
            raise UsageError(f"--mixup must be a Beta alpha in [0, 10] (0 turns it off), not {self.mixup}")
        if not (math.isfinite(self.label_smoothing) and 0 <= self.label_smoothing < 1):
            raise UsageError(f"--label-smoothing must be in [0, 1), not {self.label_smoothing}")
        if self.model not in MODELS:
            raise UsageError(f"--model must be one of {', '.join(MODELS)}, not {self.model!r}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"--schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")


SCHEDULES = ("constant", "cosine")
WARMUP = 0.1  # share of the steps the cosine schedule warms up over


def baseline_config(**changes) -> TrainConfig:
    """The original recipe: the baseline CNN on whole windows, no augmentation, constant learning rate."""
    old = dict(model="baseline", crop=0, freq_mask=0, time_mask=0, mixup=0.0, label_smoothing=0.0, schedule="constant")
    return TrainConfig(**{**old, **changes})


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked, but PyTorch sees no CUDA device")
    return torch.device(name)


def crop_probabilities(model: nn.Module, x: torch.Tensor, crop: int) -> torch.Tensor:
    """Softmax averaged over the `covering_crops` of each item (the whole input when crop is 0)."""
    crops = covering_crops(x, crop)
    return torch.stack([torch.softmax(model(c), dim=1) for c in crops]).mean(dim=0)


def _train_epoch(model, loader, device, optimizer, scheduler, cfg: TrainConfig, gen: torch.Generator):
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
        loss = lam * nn.functional.cross_entropy(logits, y_a, label_smoothing=cfg.label_smoothing)
        if lam < 1.0:
            loss = loss + (1 - lam) * nn.functional.cross_entropy(logits, y_b, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(y_a)
        correct += int((logits.argmax(1) == y_a).sum())
        n += len(y_a)
    return (total / n, correct / n) if n else (math.nan, math.nan)


def _eval_epoch(model, loader, device, crop: int) -> tuple[float, float]:
    """Loss (negative log of the crop-averaged probability) and accuracy in eval mode."""
    model.eval()
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            probs = crop_probabilities(model, x, crop)
            total += float(nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), y, reduction="sum"))
            correct += int((probs.argmax(1) == y).sum())
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


MODEL_NAMES = {"baseline": "MelCNN", "compact": "CompactCNN"}


def fit(
    train_set: Dataset,
    val_set: Dataset,
    arch: Architecture,
    cfg: TrainConfig,
    on_epoch: Callable[[dict], None] | None = None,
    on_best: Callable[[nn.Module], None] | None = None,
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

    Returns
    -------
    (model, history, best_epoch)
        The model holding the best epoch's weights, the metrics rows, the best epoch.
    """
    cfg.check()
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
        train_loss, train_acc = _train_epoch(model, train_loader, device, optimizer, scheduler, cfg, augment_gen)
        recalibrate_batchnorm(model, train_loader, device, crop=cfg.crop)
        val_loss, val_acc = _eval_epoch(model, val_loader, device, cfg.crop) if len(val_set) else (math.nan, math.nan)
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
        if cfg.patience and since_best >= cfg.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, history, best


def train(
    store_dir: str, run_dir: str, cfg: TrainConfig = TrainConfig(), on_epoch: Callable[[dict], None] | None = None
) -> dict:
    """Train the baseline CNN on a store's training split; keep the best epoch on validation.

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

    Returns
    -------
    dict
        ``{"epochs": [...], "best_epoch": int, "stopped_early": bool}`` (also metrics.json).
    """
    from melset.plots import curves_png

    cfg.check()
    keep_freed_memory(None)
    device = pick_device(cfg.device)
    store = Store(store_dir)
    train_set = MelDataset(store, TRAINING, seed=cfg.seed)
    val_set = MelDataset(store, VALIDATION, seed=cfg.seed)
    if len(train_set) == 0:
        raise ValueError(f"{store.root} has no ok, labelled rows in its training split")
    arch = architecture(cfg.model, len(store.classes))
    with torch.random.fork_rng(devices=[]):
        n_parameters = build(arch).n_parameters()

    os.makedirs(run_dir, exist_ok=True)
    config = {
        "store": store.root,
        "store_manifest": store.manifest,
        "recipe": store.recipe,
        "classes": store.classes,
        "model": {"name": MODEL_NAMES[arch.kind], **arch.to_dict(), "parameters": n_parameters},
        "hyperparameters": asdict(cfg),
        "seed": cfg.seed,
        "device": str(device),
        "split": train_set.split.describe(),
        "versions": versions("melset", "torch", "numpy"),
    }
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, default=str)

    def save(model: nn.Module) -> None:
        torch.save(model.state_dict(), os.path.join(run_dir, "model.pt"))

    _, history, best = fit(train_set, val_set, arch, cfg, on_epoch=on_epoch, on_best=save)
    metrics = {"epochs": history, "best_epoch": best, "stopped_early": len(history) < cfg.epochs}
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    curves_png(
        history,
        os.path.join(run_dir, "curves.png"),
        title=f"{MODEL_NAMES[arch.kind]} on {os.path.basename(store.root)}",
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
    def crop(self) -> int:
        """Frames per crop the model was trained on (0: whole windows)."""
        return int(self.config["hyperparameters"].get("crop", 0))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """x: (batch, n_mels, n_frames) matrices -> (batch, n_classes) softmax, averaged over covering crops."""
        with torch.no_grad():
            t = torch.from_numpy(np.array(x, dtype=np.float32)).unsqueeze(1).to(self.device)
            return crop_probabilities(self.model, t, self.crop).cpu().numpy()


def load_run(run_dir: str, device: str = "auto") -> Run:
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    dev = pick_device(device)
    model = build(Architecture.from_dict(config["model"]))
    model.load_state_dict(torch.load(os.path.join(run_dir, "model.pt"), map_location=dev, weights_only=True))
    model.to(dev).eval()
    return Run(os.path.abspath(run_dir), config, model, dev)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    k = len(classes)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    per_class = {}
    f1s = []
    for i, name in enumerate(classes):
        tp = cm[i, i]
        precision = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        recall = tp / cm[i].sum() if cm[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(cm[i].sum()),
        }
        if cm[i].sum():
            f1s.append(f1)
    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else math.nan,
        "macro_f1": float(np.mean(f1s)) if f1s else math.nan,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "n": int(len(y_true)),
    }


def evaluate(run_dir: str, store_dir: str, split: str | None = TEST, device: str = "auto") -> dict:
    """Scores of a trained run on a store's split.

    Parameters
    ----------
    run_dir : path
        A run folder written by `train`.
    store_dir : path
        The store to score on (the run's own seed decides a stratified split).
    split : {"training", "validation", "test"} or None
        The split; None scores every usable row.
    device : {"auto", "cpu", "cuda"}

    Returns
    -------
    dict
        accuracy, macro_f1, per_class precision/recall/f1/support, confusion_matrix, n,
        predictions, and the path of the confusion-matrix picture (confusion_png).
    """
    from melset.plots import confusion_png

    run = load_run(run_dir, device)
    store = Store(store_dir)
    seed = run.config["seed"]
    s = split_rows(store, seed=seed)
    rows = s.select(split)
    index = {c: i for i, c in enumerate(run.classes)}
    names = [store.classes[j] for j in np.asarray(store.labels)[rows].argmax(axis=1)]
    keep = [i for i, n in enumerate(names) if n in index]
    rows = rows[keep]
    y_true = np.array([index[names[i]] for i in keep], dtype=np.int64)
    probs = (
        np.concatenate([run.probabilities(store.mels[rows[i : i + 32]]) for i in range(0, len(rows), 32)])
        if len(rows)
        else np.zeros((0, len(run.classes)))
    )
    y_pred = probs.argmax(axis=1)
    report = classification_report(y_true, y_pred, run.classes)
    report.update(
        {
            "split": split or "all",
            "store": store.root,
            "skipped_unknown_genre": len(names) - len(keep),
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


def predict(
    run_dir: str, files: list[str], whole_track: bool = False, top: int = 3, device: str = "auto"
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

    Returns
    -------
    list of dict
        Per file: ``{"file", "windows", "top": [{"genre", "probability"}, ...]}``, or
        ``{"file", "error"}`` when the file cannot be used.
    """
    from melset.audio import AudioError
    from melset.track import process
    from melset.track import whole_track as windows

    run = load_run(run_dir, device)
    recipe = run.recipe
    out = []
    for path in files:
        item: dict = {"file": path}
        try:
            if whole_track:
                x = windows(path, recipe)
            else:
                result = process(path, recipe)
                if result.status != OK:
                    raise AudioError(result.error)
                x = result.mel[None]
        except AudioError as exc:
            item["error"] = str(exc)
            out.append(item)
            continue
        probs = run.probabilities(x).mean(axis=0)
        order = np.argsort(-probs)[:top]
        item["windows"] = int(len(x))
        item["top"] = [{"genre": run.classes[i], "probability": float(probs[i])} for i in order]
        out.append(item)
    return out
