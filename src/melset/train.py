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
from torch.utils.data import DataLoader

from melset.dataset import MelDataset, split_rows
from melset.errors import RecipeError
from melset.model import Architecture, MelCNN
from melset.recipe import Recipe, feature_difference
from melset.store import Store
from melset.system import keep_freed_memory, versions
from melset.vocab import OK, TEST, TRACK_ID, TRAINING, VALIDATION


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (recorded in its config.json)."""

    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    device: str = "auto"
    seed: int = 0
    patience: int = 10  # epochs without a better validation score before stopping
    num_workers: int = 0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked, but PyTorch sees no CUDA device")
    return torch.device(name)


def _epoch(model, loader, device, optimizer=None) -> tuple[float, float]:
    """One pass; trains when an optimizer is given. Returns (mean loss, accuracy)."""
    model.train(optimizer is not None)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, correct, n = 0.0, 0, 0
    with torch.set_grad_enabled(optimizer is not None):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = loss_fn(logits, y)
            if optimizer is not None:
                optimizer.zero_grad()
                (loss / len(y)).backward()
                optimizer.step()
            total += loss.item()
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    return (total / n, correct / n) if n else (math.nan, math.nan)


def recalibrate_batchnorm(model: nn.Module, loader: DataLoader, device: torch.device, max_batches: int = 64) -> None:
    """Recompute BatchNorm's running statistics for the current weights ("precise BN").

    The running averages lag behind weights that are still moving, and on small data the
    model then scores far worse in eval mode than in training; a forward pass over (up to
    max_batches of) the training data with a cumulative average fixes them.
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
            model(x.to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


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

    keep_freed_memory(None)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = pick_device(cfg.device)
    store = Store(store_dir)
    train_set = MelDataset(store, TRAINING, seed=cfg.seed)
    val_set = MelDataset(store, VALIDATION, seed=cfg.seed)
    if len(train_set) == 0:
        raise ValueError(f"{store.root} has no ok, labelled rows in its training split")
    arch = Architecture(n_classes=len(store.classes))
    model = MelCNN(arch).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=cfg.num_workers
    )
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers)

    os.makedirs(run_dir, exist_ok=True)
    config = {
        "store": store.root,
        "store_manifest": store.manifest,
        "recipe": store.recipe,
        "classes": store.classes,
        "model": {"name": "MelCNN", **arch.to_dict(), "parameters": model.n_parameters()},
        "hyperparameters": asdict(cfg),
        "seed": cfg.seed,
        "device": str(device),
        "split": train_set.split.describe(),
        "versions": versions("melset", "torch", "numpy"),
    }
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, default=str)

    history, best, best_key, since_best = [], None, None, 0
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        train_loss, train_acc = _epoch(model, train_loader, device, optimizer)
        recalibrate_batchnorm(model, train_loader, device)
        val_loss, val_acc = _epoch(model, val_loader, device) if len(val_set) else (math.nan, math.nan)
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
            torch.save(model.state_dict(), os.path.join(run_dir, "model.pt"))
        else:
            since_best += 1
        if on_epoch:
            on_epoch(row)
        if since_best >= cfg.patience:
            break
    metrics = {"epochs": history, "best_epoch": best, "stopped_early": len(history) < cfg.epochs}
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    curves_png(history, os.path.join(run_dir, "curves.png"), title=f"MelCNN on {os.path.basename(store.root)}")
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

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """x: (batch, n_mels, n_frames) matrices -> (batch, n_classes) softmax."""
        with torch.no_grad():
            t = torch.from_numpy(np.array(x, dtype=np.float32)).unsqueeze(1).to(self.device)
            return torch.softmax(self.model(t), dim=1).cpu().numpy()


def load_run(run_dir: str, device: str = "auto") -> Run:
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    dev = pick_device(device)
    model = MelCNN(Architecture.from_dict(config["model"]))
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
    diff = feature_difference(run.config["recipe"], store.recipe)
    if diff:
        raise RecipeError(
            f"{store.root} was made with another recipe than the one {run_dir} was trained on ({diff});"
            f" extract the store with `--recipe` from `melset recipe {run_dir}`"
        )
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
