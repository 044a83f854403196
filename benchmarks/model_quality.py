"""Held-out genre accuracy on real music: stratified k-fold cross-validation on GTZAN clips.

    python benchmarks/model_quality.py --store /tmp/gtzan.melset [--folds 5] [--seeds 0 1 2]

The store is extracted from ../shared/data/gtzan_dev/genres (70 GTZAN clips, 10 genres) when
it does not exist yet; GTZAN is for research use only and never part of this repository.
Prints one table: chance (a stratified random guess), the classical anchor (logistic
regression on per-band mean and std of the stored log-mels, standardized), today's
baseline (`baseline_config()`: MelCNN on whole windows, no augmentation) and the new
defaults (`TrainConfig()`): mean +- std over every fold of every seed of accuracy and
macro-F1, and training seconds per fold.

Each fold trains on the other folds' clips the way `melset train` does: one clip per
genre of them held out as validation to pick the best epoch, the rest for training; the
fold's own clips are only scored. `--results FILE` keeps finished folds, so an
interrupted run resumes (and `--table-only` prints what it holds); `--method NAME=key:value,...` adds a variant of the new defaults
(e.g. `--method no-mixup=mixup:0`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import TensorDataset

from melset.dataset import usable_rows
from melset.model import architecture
from melset.predict import crop_probabilities
from melset.store import Store
from melset.train import TrainConfig, baseline_config, fit

GTZAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "gtzan_dev" / "genres"


def band_statistics(mels: np.ndarray) -> np.ndarray:
    """(n, n_mels, n_frames) -> (n, 2 n_mels): each band's mean and std over time."""
    return np.concatenate([mels.mean(axis=2), mels.std(axis=2)], axis=1)


def inner_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions for training and validation: one item per class held out for validation."""
    rng = np.random.default_rng(seed)
    val = np.array([rng.choice(np.flatnonzero(y == c)) for c in np.unique(y)])
    return np.setdiff1d(np.arange(len(y)), val), val


def run_network(cfg: TrainConfig, x: torch.Tensor, y: np.ndarray, train: np.ndarray, test: np.ndarray, n_classes: int):
    inner_train, inner_val = inner_split(y[train], cfg.seed)
    tr, va = train[inner_train], train[inner_val]
    yt = torch.from_numpy(y)
    start = time.perf_counter()
    model, _, _ = fit(
        TensorDataset(x[tr], yt[tr]), TensorDataset(x[va], yt[va]), architecture(cfg.model, n_classes), cfg
    )
    seconds = time.perf_counter() - start
    with torch.no_grad():
        probs = torch.cat([crop_probabilities(model, x[test[i : i + 16]], cfg.crop) for i in range(0, len(test), 16)])
    return probs.argmax(1).numpy(), seconds


def parse_method(text: str) -> tuple[str, dict]:
    name, _, changes = text.partition("=")
    fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in filter(None, changes.split(",")):
        key, _, value = item.partition(":")
        if key not in fields:
            raise SystemExit(f"--method {text}: {key!r} is not a TrainConfig field ({', '.join(fields)})")
        kind = {"int": int, "float": float, "str": str}[str(fields[key])]
        out[key] = kind(value)
    return name, out


def ensure_store(store: Path, audio: Path) -> None:
    if store.exists():
        return
    if not audio.is_dir():
        raise SystemExit(f"skipped: no store at {store} and no GTZAN clips at {audio} (the shared data is absent)")
    cmd = [sys.executable, "-m", "melset", "extract", "--audio", str(audio), "--out", str(store)]
    subprocess.run([*cmd, "--dtype", "float32", "--quiet"], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True, help="GTZAN store (extracted from --audio when absent).")
    ap.add_argument("--audio", type=Path, default=GTZAN)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--results", type=Path, help="JSON file of finished folds (resumes).")
    ap.add_argument("--method", action="append", default=[], help="NAME=key:value,... a variant of the new defaults.")
    ap.add_argument("--skip", nargs="*", default=[], help="Methods to leave out (e.g. baseline).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only-folds", type=int, nargs="*", help="Run only these fold numbers (to split work).")
    ap.add_argument("--table-only", action="store_true", help="Print the table of --results without training.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ensure_store(args.store, args.audio)
    store = Store(str(args.store))
    rows = usable_rows(store)
    mels = np.asarray(np.load(os.path.join(store.root, "mels.npy"), mmap_mode="r")[rows], dtype=np.float32)
    y = np.asarray(store.labels)[rows].argmax(axis=1)
    n_classes = len(store.classes)
    x = torch.from_numpy(mels).unsqueeze(1)
    feats = band_statistics(mels)

    methods: dict[str, TrainConfig | str | None] = {"chance": "chance", "anchor": "anchor"}
    methods["baseline"] = baseline_config()
    methods["new defaults"] = TrainConfig()
    for text in args.method:
        name, changes = parse_method(text)
        methods[name] = dataclasses.replace(TrainConfig(), **changes)
    for name in args.skip:
        methods.pop(name, None)

    done = json.loads(args.results.read_text()) if args.results and args.results.exists() else []
    have = {(r["method"], r["seed"], r["fold"]) for r in done}
    for seed in [] if args.table_only else args.seeds:
        folds = StratifiedKFold(args.folds, shuffle=True, random_state=seed).split(feats, y)
        for fold, (train, test) in enumerate(folds):
            if args.only_folds is not None and fold not in args.only_folds:
                continue
            for name, how in methods.items():
                if (name, seed, fold) in have:
                    continue
                start = time.perf_counter()
                if how == "chance":
                    pred = DummyClassifier(strategy="stratified", random_state=seed).fit(feats[train], y[train])
                    pred, seconds = pred.predict(feats[test]), time.perf_counter() - start
                elif how == "anchor":
                    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
                    pred = clf.fit(feats[train], y[train]).predict(feats[test])
                    seconds = time.perf_counter() - start
                else:
                    pred, seconds = run_network(
                        dataclasses.replace(how, seed=seed, device="cpu"), x, y, train, test, n_classes
                    )
                row = {
                    "method": name,
                    "seed": seed,
                    "fold": fold,
                    "accuracy": float((pred == y[test]).mean()),
                    "macro_f1": float(f1_score(y[test], pred, average="macro")),
                    "seconds": seconds,
                }
                done.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if args.results:
                    args.results.write_text(json.dumps(done, indent=1))

    print(f"{len(rows)} clips, {n_classes} genres, {args.folds}-fold stratified CV x seeds {args.seeds}\n")
    print("| method | folds | accuracy | macro-F1 | training s / fold |")
    print("|---|---|---|---|---|")
    for name in methods:
        rs = [r for r in done if r["method"] == name and r["seed"] in args.seeds]
        if not rs:
            continue
        acc, f1, sec = (np.array([r[k] for r in rs]) for k in ("accuracy", "macro_f1", "seconds"))
        print(
            f"| {name} | {len(rs)} | {acc.mean():.3f} ± {acc.std():.3f} | {f1.mean():.3f} ± {f1.std():.3f} | {sec.mean():.1f} |"
        )


if __name__ == "__main__":
    main()
