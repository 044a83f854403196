"""Scores of a trained run on a store: accuracy, macro-F1 and per-genre scores (one genre per
track), ROC-AUC and average precision (multi-label), as scikit-learn computes them.

`evaluate` draws nothing unless asked: `confusion_png=PATH` writes the confusion matrix there
(`melset evaluate` asks for the run folder's `confusion_matrix_<split>.png`).
"""

from __future__ import annotations

import numpy as np

from melset.dataset import split_rows
from melset.errors import MissingDependency, RecipeError, RunError, UsageError
from melset.predict import Run, load_run
from melset.recipe import feature_difference
from melset.store import Store
from melset.vocab import TEST, TRACK_ID


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
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


def evaluate(
    run_dir: str,
    store_dir: str,
    split: str | None = TEST,
    device: str = "auto",
    confusion_png: str | None = None,
) -> dict:
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
    confusion_png : path, optional
        Draw the confusion matrix into this PNG file (single-label runs; nothing is drawn
        without it).

    Returns
    -------
    dict
        accuracy, macro_f1, per_class precision/recall/f1/support, confusion_matrix, n,
        left_out (count and genres), predictions, and the path of the confusion-matrix
        picture (confusion_png) when one was asked for.

    Raises
    ------
    RunError
        The run cannot be loaded, the store was made with another recipe, or it shares no
        genre with the run.
    UsageError
        The split holds no usable track.
    StoreError
        A row to score is damaged (its bytes do not match the journal's checksum, or hold
        values that are not finite): nothing is scored on damaged data.
    """
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
    probs = _probabilities(run, store, rows)
    y_pred = probs.argmax(axis=1)
    scores = classification_scores(y_true, y_pred, run.classes)
    scores.update(
        {
            "split": split or "all",
            "store": store.root,
            "left_out": {"tracks": len(names) - len(keep), "genres": unknown},
            "split_source": s.describe(),
        }
    )
    if confusion_png:
        from melset import plots

        try:
            plots.confusion_png(
                np.array(scores["confusion_matrix"]),
                run.classes,
                confusion_png,
                title=f"{split or 'all'}: accuracy {scores['accuracy']:.2f}, macro-F1 {scores['macro_f1']:.2f}",
            )
            scores["confusion_png"] = confusion_png
        except OSError as exc:  # a full or read-only disk: the scores stand, the picture is not drawn
            scores["confusion_png"] = None
            scores["confusion_png_error"] = f"cannot write {confusion_png}: {exc.strerror or exc}"
    ids = store.tracks[TRACK_ID].to_numpy()[rows]
    scores["predictions"] = [
        {TRACK_ID: str(t), "true": run.classes[a], "predicted": run.classes[b]} for t, a, b in zip(ids, y_true, y_pred)
    ]
    return scores


def _probabilities(run: Run, store: Store, rows: np.ndarray) -> np.ndarray:
    """The run's scores of `rows`, read 32 at a time through the store's checked reader: a
    damaged row (bytes not matching the journal's checksum, or not finite) raises StoreError
    and nothing is scored."""
    parts = [run.probabilities(block) for _, block in store.iter_rows(rows, chunk_rows=32)]
    return np.concatenate(parts) if parts else np.zeros((0, len(run.classes)))


def multi_label_scores(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
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
            ap = float(average_precision_score(y_true[:, j], probs[:, j]))
            auc = float(roc_auc_score(y_true[:, j], probs[:, j]))
            aps.append(ap)
            aucs.append(auc)
        per_class[name] = {"average_precision": ap, "roc_auc": auc, "support": pos}
    flat_true, flat_score = y_true.ravel(), np.asarray(probs).ravel()
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
    probs = _probabilities(run, store, rows)
    scores = multi_label_scores(y_true, probs, run.classes)
    scores.update(
        {
            "multi_label": True,
            "split": split or "all",
            "store": store.root,
            "genres_unknown_to_run": sorted(unknown),
            "split_source": s.describe(),
        }
    )
    ids = store.tracks[TRACK_ID].to_numpy()[rows]
    scores["predictions"] = [
        {
            TRACK_ID: str(t),
            "true": [run.classes[j] for j in np.flatnonzero(yt)],
            "scores": {run.classes[j]: float(p[j]) for j in np.argsort(-p)[:5]},
        }
        for t, yt, p in zip(ids, y_true, probs)
    ]
    return scores
