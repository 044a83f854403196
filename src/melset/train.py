"""Train the CNN on a store: the training loop (`fit`) and a run folder written from it (`train`),
checkpointed at every epoch so that an interrupted run resumes (`train(resume=True)`) to the
weights an uninterrupted one gives.

The run folder and its files are melset.runs'; scoring a run is melset.evaluate, using one is
melset.predict. `evaluate`, `predict`, `load_run`, `pick_device` and `prepare_run_dir` stay importable from here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from melset.augment import covering_crops, mask_, mixup, random_crops
from melset.dataset import MelDataset
from melset.errors import RunError, UsageError
from melset.model import Architecture, MelCNN, architecture, build, check_input_size
from melset.predict import all_finite, crop_probabilities, pick_device
from melset.runs import (
    FULL_OR_READ_ONLY,
    SHA256_KEY,
    cannot_write,
    check_same_store,
    file_sha256,
    prepare_run_dir,
    remove_partials,
    resumable_config,
    resume_config,
    write_atomic,
    write_record,
)
from melset.store import Store
from melset.system import keep_freed_memory, versions
from melset.train_config import MODELS, SCHEDULES, TrainConfig, baseline_config  # noqa: F401  (re-exported)
from melset.vocab import RUN_CHECKPOINT, RUN_CONFIG, RUN_CURVES, RUN_METRICS, RUN_WEIGHTS, TRAINING, VALIDATION

WARMUP = 0.1  # share of the steps the cosine schedule warms up over


def check_config(cfg: TrainConfig) -> None:
    """Refuse hyper-parameters that cannot train, and a device that is not there, before any work. Raises UsageError."""
    cfg.check()
    pick_device(cfg.device)


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


CHECKPOINT_FORMAT = "melset-checkpoint/1"


@dataclass
class _Progress:
    """Where a training loop stands: the epochs' metrics so far and the best epoch's weights."""

    history: list[dict] = field(default_factory=list)
    best: int = 0
    best_key: tuple[float, float] | None = None
    best_state: dict | None = None
    since_best: int = 0

    def done(self, cfg: TrainConfig) -> bool:
        """Every epoch ran, or `patience` epochs passed without a better score (patience 0: the first)."""
        return len(self.history) >= cfg.epochs or bool(self.since_best and self.since_best >= cfg.patience)


def _random_states(generators: dict[str, torch.Generator], device: torch.device) -> dict:
    """Every random state the next epoch draws from: torch's, numpy's, Python's, the loader's and augment's."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": list(random.getstate()),
        **{key: g.get_state() for key, g in generators.items()},
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_random_states(states: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    for key, g in generators.items():
        g.set_state(states[key])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def fit(
    train_set: Dataset,
    val_set: Dataset,
    arch: Architecture,
    cfg: TrainConfig,
    on_epoch: Callable[[dict], None] | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
    multi_label: bool = False,
    resume: dict | None = None,
) -> tuple[MelCNN, list[dict], int]:
    """Train a network on (x [1, n_mels, n_frames], class) items; keep the best epoch on validation.

    Every random draw (initial weights, dropout, shuffling, crops, masks, mixup) comes from
    generators seeded with ``cfg.seed``, so on the CPU the same inputs give the same weights;
    a run resumed from a checkpoint ends with the weights of one never interrupted.

    Parameters
    ----------
    train_set, val_set : torch Dataset
        Training and validation items; an empty validation set selects on training loss.
    arch : Architecture
        The network to build.
    cfg : TrainConfig
        Hyper-parameters, device and seed.
    on_epoch : callable, optional
        Called with each epoch's metrics row as it ends (after `on_checkpoint`).
    on_checkpoint : callable, optional
        Called at the end of each epoch with the checkpoint to keep: ``{"format", "epoch", "model",
        "optimizer", "scheduler", "random", "best": {"epoch", "key", "since", "state"}, "history"}``.
    multi_label : bool
        Targets are multi-hot rows: sigmoid outputs and binary cross-entropy.
    resume : dict, optional
        A checkpoint `on_checkpoint` was given: training goes on from the epoch after it.

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
    generators = {"loader": gen, "augment": augment_gen}
    train_loader = DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=cfg.num_workers
    )
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, len(train_loader)))

    progress = _Progress()
    if resume is not None:
        progress = _restore(resume, model, optimizer, scheduler, generators)
    while not progress.done(cfg):
        epoch = len(progress.history) + 1
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
        progress.history.append(row)
        # best: highest validation accuracy, then lowest validation loss (training loss without validation)
        key = (val_acc, -val_loss) if len(val_set) else (train_acc, -train_loss)
        if progress.best_key is None or key > progress.best_key:
            progress.best_key, progress.best, progress.since_best = key, epoch, 0
            progress.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            progress.since_best += 1
        if on_checkpoint:
            on_checkpoint(
                {
                    "format": CHECKPOINT_FORMAT,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "random": _random_states(generators, device),
                    "best": {
                        "epoch": progress.best,
                        "key": list(progress.best_key),
                        "since": progress.since_best,
                        "state": progress.best_state,
                    },
                    "history": progress.history,
                }
            )
        if on_epoch:
            on_epoch(row)
    model.load_state_dict(progress.best_state)
    model.eval()
    return model, progress.history, progress.best


def _restore(checkpoint: dict, model, optimizer, scheduler, generators: dict[str, torch.Generator]) -> _Progress:
    """Put the training loop back where `checkpoint` left it. Raises RunError when it does not fit."""
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        best = checkpoint["best"]
        progress = _Progress(
            history=list(checkpoint["history"]),
            best=int(best["epoch"]),
            best_key=tuple(best["key"]),
            best_state=best["state"],
            since_best=int(best["since"]),
        )
        if len(progress.history) != checkpoint["epoch"]:
            raise ValueError(f"it holds {len(progress.history)} epochs' metrics for epoch {checkpoint['epoch']}")
        _set_random_states(checkpoint["random"], generators)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise RunError(
            f"{checkpoint.get('path', 'the checkpoint')} does not fit this run ({type(exc).__name__}: {exc}); "
            "train the run again with --overwrite"
        ) from None
    return progress


DIGEST = "sha256"  # a checkpoint's own: over its tensors' bytes, in order


def _tensor_digest(obj) -> str:
    """sha256 over the bytes of every tensor in `obj` (nested dicts and lists, in order)."""
    h = hashlib.sha256()

    def walk(v) -> None:
        if isinstance(v, torch.Tensor):
            h.update(str((v.dtype, tuple(v.shape))).encode())
            h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
        elif isinstance(v, dict):
            for k, x in v.items():
                h.update(repr(k).encode())
                walk(x)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)
        else:
            h.update(repr(v).encode())

    walk(obj)
    return h.hexdigest()


def _save_tensors(obj: dict, path: str) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getvalue())


def _load_checkpoint(run_dir: str) -> dict | None:
    """The checkpoint of an interrupted run (None: it stopped before its first epoch ended). Raises RunError."""
    path = os.path.join(run_dir, RUN_CHECKPOINT)
    if not os.path.isfile(path):
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # random states stay on the CPU
        if not (isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT):
            raise ValueError(f"not a {CHECKPOINT_FORMAT}")
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a damaged file
        raise RunError(
            f"{path} cannot be loaded ({type(exc).__name__}); train the run again with --overwrite"
        ) from None
    digest = checkpoint.pop(DIGEST, None)
    if digest != _tensor_digest(checkpoint) or not all_finite(checkpoint):
        raise RunError(
            f"{path} is damaged; its bytes are not those train saved, or it holds weights that are not finite: "
            "train the run again with --overwrite"
        )
    checkpoint["path"] = path
    return checkpoint


def checkpoint_epoch(run_dir: str) -> int | None:
    """The last epoch an interrupted run's checkpoint keeps (None: no usable checkpoint)."""
    try:
        epoch = torch.load(os.path.join(run_dir, RUN_CHECKPOINT), map_location="cpu", weights_only=True)["epoch"]
    except Exception:  # absent or damaged: nothing kept
        return None
    return epoch if isinstance(epoch, int) else None


def train(
    store_dir: str,
    run_dir: str,
    cfg: TrainConfig = TrainConfig(),
    on_epoch: Callable[[dict], None] | None = None,
    overwrite: bool = False,
    on_warning: Callable[[str], None] | None = None,
    resume: bool = False,
    on_start: Callable[[dict], None] | None = None,
) -> dict:
    """Train a CNN on a store's training split; keep the best epoch on validation.

    The run folder gets config.json first, then at every epoch its checkpoint.pt (and
    model.pt when the epoch is the best so far), and metrics.json last, when training ends;
    until then it is a run to resume, which `predict`, `evaluate` and `report` refuse.

    Parameters
    ----------
    store_dir : path
        The store to learn from.
    run_dir : path
        The run folder to write: config.json, model.pt, curves.png, metrics.json.
    cfg : TrainConfig
        Hyper-parameters, device and seed.
    on_epoch : callable, optional
        Called with each epoch's metrics row as it ends (its checkpoint is on disk by then).
    overwrite : bool
        Replace an earlier run in `run_dir`; without it an existing run folder is refused.
    on_warning : callable, optional
        Called with each warning about the data (a genre without training rows, ...).
    resume : bool
        Continue the interrupted run in `run_dir` from its checkpoint, to the weights and
        metrics an uninterrupted run gives; `cfg` and the store must be the ones it began with.
    on_start : callable, optional
        Called once the data is checked, before the first epoch, with ``{"first_epoch", "epochs",
        "train_tracks", "val_tracks", "device"}`` (first_epoch > 1 when resuming).

    Returns
    -------
    dict
        ``{"epochs": [...], "best_epoch": int, "stopped_early": bool, "warnings": [...]}``
        (also metrics.json).

    Raises
    ------
    UsageError
        Hyper-parameters out of range, a device that is not there, a training split with
        fewer than two genres, `resume` with `overwrite`.
    RunError
        `run_dir` already holds a run (and not `overwrite`); with `resume`: `run_dir` is not
        an interrupted run, or it began with another store or other hyper-parameters.
    """
    from melset.plots import curves_png

    if resume and overwrite:
        raise UsageError("--resume continues the run in --run and --overwrite replaces it: give one of them")
    check_config(cfg)
    device = pick_device(cfg.device)
    store = Store(store_dir)
    if resume:
        config = resumable_config(run_dir)
        check_same_store(run_dir, config, store.root, store.manifest)
        resume_config(run_dir, config, asdict(cfg))  # every hyper-parameter the one it began with
    train_set = MelDataset(store, TRAINING, seed=cfg.seed)
    val_set = MelDataset(store, VALIDATION, seed=cfg.seed)
    data_warnings = check_training_data(store, train_set, val_set)
    check_input_size(cfg, store.recipe, len(store.classes))
    if resume:
        remove_partials(run_dir)
        checkpoint = _load_checkpoint(run_dir)
    else:
        prepare_run_dir(run_dir, overwrite)
        checkpoint = None
    for w in data_warnings:
        if on_warning:
            on_warning(w)
    keep_freed_memory(None)
    multi = store.multi_label
    arch = architecture(cfg.model, len(store.classes))
    with torch.random.fork_rng(devices=[]):  # a network only to describe; fit builds its own from the seed
        described = build(arch)
    model_name = type(described).__name__

    if not resume:
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
        write_record(run_dir, RUN_CONFIG, config)
    weights = os.path.join(run_dir, RUN_WEIGHTS)

    def keep(checkpoint: dict) -> None:
        if checkpoint["best"]["epoch"] == checkpoint["epoch"]:
            _save_tensors(checkpoint["best"]["state"], weights)  # model.pt: the best epoch so far
        _save_tensors({**checkpoint, DIGEST: _tensor_digest(checkpoint)}, os.path.join(run_dir, RUN_CHECKPOINT))

    if on_start:
        on_start(
            {
                "first_epoch": checkpoint["epoch"] + 1 if checkpoint else 1,
                "epochs": cfg.epochs,
                "train_tracks": len(train_set),
                "val_tracks": len(val_set),
                "device": str(device),
            }
        )
    model, history, best = fit(
        train_set, val_set, arch, cfg, on_epoch=on_epoch, on_checkpoint=keep, multi_label=multi, resume=checkpoint
    )
    _save_tensors(model.state_dict(), weights)  # the best epoch's, whatever an interruption left
    metrics = {
        "epochs": history,
        "best_epoch": best,
        "stopped_early": len(history) < cfg.epochs,
        "warnings": data_warnings,
        SHA256_KEY: {name: file_sha256(os.path.join(run_dir, name)) for name in (RUN_CONFIG, RUN_WEIGHTS)},
    }
    curves = os.path.join(run_dir, RUN_CURVES)
    try:
        curves_png(history, curves, title=f"{model_name} on {os.path.basename(store.root)}", multi_label=multi)
    except OSError as exc:
        if exc.errno in FULL_OR_READ_ONLY:
            raise cannot_write(curves, exc) from None
        raise
    write_record(run_dir, RUN_METRICS, metrics)  # last: from here on the run is complete
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(run_dir, RUN_CHECKPOINT))
    return metrics
