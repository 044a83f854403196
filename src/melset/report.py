"""One self-contained HTML page about a store or a training run (`melset report ... --html FILE`).

Everything the page shows is inside the file: pictures are matplotlib PNGs embedded as
data: URIs, the style sheet is inline, there are no scripts, fonts or links to fetch, so
the page opens offline and makes no network request. Every piece of text that comes from
data (genres, track ids, reasons, paths) goes through `html.escape`.

A store's page: counts per status, genre and split (a chart and tables), every track that is
not ok with its reason, the recipe and provenance, the distribution of durations, a grid of
example spectrograms per genre and the mean spectrogram per genre (computed in chunks, so
memory stays bounded whatever the store's size).

A run's page: its configuration, loss and accuracy curves, and its scores on a split of its
store (the confusion matrix and per-genre scores; ROC-AUC and average precision for
multi-label runs).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from melset import plots
from melset.errors import MelsetError, UsageError
from melset.outputs import output_file, replacing
from melset.runs import RUN_MARKS, is_run, read_config, read_metrics, require_complete
from melset.store import Store, now_iso
from melset.vocab import (
    DURATION_S,
    FAILED,
    GENRE_TOP,
    MANIFEST,
    MISSING,
    OK,
    PENDING,
    SPLIT,
    SPLITS,
    STATUS,
    STATUSES,
    TEST,
    TOO_SHORT,
    TRACK_ID,
)

CHUNK_BYTES = 32 * 1024 * 1024  # rows read at a time for the mean spectrograms
MAX_PROBLEMS = 2000  # rows of the failures table (melset info --json lists them all)
NO_SPLIT = "(no split)"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1150px;
       color: #1d2330; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #d8dde6; padding-bottom: 4px; margin-top: 1.8em; }
.sub { color: #5a6478; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
th, td { border: 1px solid #d8dde6; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f6; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 6px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { background: #f4f6fa; border: 1px solid #d8dde6; border-radius: 6px; padding: 8px 14px; min-width: 90px; }
.card b { display: block; font-size: 1.5em; } .good b { color: #1a7f37; } .bad b { color: #b42318; }
.note { color: #5a6478; font-style: italic; }
.scroll { max-height: 480px; overflow: auto; border: 1px solid #d8dde6; }
code { background: #f4f6fa; padding: 0 3px; }
"""


# -- small HTML helpers ------------------------------------------------------------------------------


def esc(value: Any) -> str:
    """Any value as escaped HTML text (None as an empty cell)."""
    return "" if value is None else html.escape(str(value), quote=True)


def table(header: Iterable[str], rows: Iterable[Iterable[Any]], numeric: Iterable[int] = ()) -> str:
    """An HTML table; the cells are escaped, the columns in `numeric` right-aligned."""
    numeric = set(numeric)
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=n' if i in numeric else ''}>{esc(c)}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def dict_table(d: dict) -> str:
    return table(("key", "value"), ((k, _plain(v)) for k, v in d.items()))


def _plain(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)


def png_uri(fig) -> str:
    """A matplotlib figure as a data: URI (the figure is closed)."""
    buf = io.BytesIO()
    plots._save(fig, buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'


def page(title: str, subtitle: str, sections: list[tuple[str, str]]) -> str:
    """A whole HTML document: inline style, no scripts, no external resources."""
    body = "".join(
        f'<section id="s{i}"><h2>{esc(h)}</h2>{content}</section>' for i, (h, content) in enumerate(sections)
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f'<body><h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p>{body}</body></html>\n'
    )


GENERATOR = '<meta name="generator" content="melset">'  # how a page melset wrote is recognised
_OLDER_PAGE = b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'  # pages before GENERATOR


def _our_page(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return GENERATOR.encode() in head or head.startswith(_OLDER_PAGE)


def html_target(path: str | os.PathLike) -> str:
    """The resolved path (symbolic links and '..') of a page to write at `path`, checked.

    Raises UsageError for a place inside a store or a training run, a folder, a special file,
    or an existing file that is not a page melset wrote.
    """
    return output_file(path, "--html", _our_page, "report.html")


def write_html(path: str | os.PathLike, text: str) -> str:
    """Write the page atomically at `path`, checked by `html_target`, marked as melset's.
    Returns the resolved path."""
    real = html_target(path)
    if GENERATOR not in text:
        text = text.replace("<head>", "<head>" + GENERATOR, 1)
    with replacing(real) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return real


def kind_of(path: str | os.PathLike) -> str:
    """ "store" or "run" for a folder melset wrote ("run": `train` wrote into it, finished or not); UsageError otherwise."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return "store"
    if is_run(path):
        return "run"
    if not os.path.exists(path):
        raise UsageError(f"{path} does not exist; give a store (melset extract --out) or a run (melset train --run)")
    raise UsageError(
        f"{path} is neither a melset store (no {MANIFEST}) nor a training run (none of {', '.join(RUN_MARKS)})"
    )


# -- the store's numbers -------------------------------------------------------------------------------


def mean_spectrograms(
    store: Store, chunk_bytes: int = CHUNK_BYTES, damaged: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The mean matrix of each class over its ok rows, and how many rows each mean has.

    Reads `chunk_bytes` of matrices (as float64) at a time (at least one row) through the
    store's checked reader, and accumulates per-class sums in float64, so memory grows with
    the number of classes, never with the rows.

    Parameters
    ----------
    store : Store
    chunk_bytes : int
    damaged : list, optional
        Where to leave damaged rows out (appended here, not counted in any mean). Without it
        a damaged row raises StoreError.

    Returns
    -------
    means : numpy.ndarray
        (n_classes, n_mels, n_frames) float64; zeros for a class without ok rows.
    counts : numpy.ndarray
        (n_classes,) int64.
    """
    shape = tuple(store.mels.shape[1:])
    k = len(store.classes)
    sums = np.zeros((k, int(np.prod(shape))), dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    step = max(1, int(chunk_bytes // max(1, sums.shape[1] * 8)))  # rows per chunk, as float64
    for chunk, block in store.iter_rows(store.ok_rows(), chunk_rows=step, damaged=damaged):
        labels = np.asarray(store.labels[chunk], dtype=np.float64)  # (n, k)
        sums += labels.T @ block.astype(np.float64).reshape(len(chunk), -1)
        counts += labels.sum(axis=0).astype(np.int64)
    means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    return means.reshape(k, *shape), counts


def examples_per_class(store: Store, k: int) -> dict[str, list[int]]:
    """Up to k ok rows of each class (the first by row order)."""
    ok = store.ok_rows()
    labels = np.asarray(store.labels[ok]) if len(ok) else np.zeros((0, len(store.classes)))
    return {c: ok[np.flatnonzero(labels[:, j])[:k]].tolist() for j, c in enumerate(store.classes)}


def _counts_figure(store: Store, report: dict):
    import matplotlib.pyplot as plt

    statuses = (*STATUSES, PENDING)
    genres = list(report["by_genre"])
    colors = {OK: "#2e9e4f", TOO_SHORT: "#e0a526", FAILED: "#c83a32", MISSING: "#7d8799", PENDING: "#b9c2d3"}
    ok = store.ok_rows()
    splits = store.tracks[SPLIT].to_numpy()[ok]
    split_names = [
        s for s in (*SPLITS, NO_SPLIT) if (np.array([x if isinstance(x, str) else NO_SPLIT for x in splits]) == s).any()
    ]
    labels = np.asarray(store.labels[ok]) if len(ok) else np.zeros((0, len(store.classes)))
    height = max(3.0, 0.32 * max(len(genres), len(store.classes)) + 1.5)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, min(height, 40)), dpi=90)
    left = np.zeros(len(genres))
    for s in statuses:
        n = np.array([report["by_genre"][g].get(s, 0) for g in genres], dtype=float)
        if n.any():
            a1.barh(range(len(genres)), n, left=left, label=s, color=colors.get(s))
            left += n
    a1.set_yticks(range(len(genres)), genres, **plots.PLAIN)
    a1.invert_yaxis()
    a1.set(xlabel="tracks", title="tracks per genre_top and status")
    a1.legend(fontsize=8)
    left = np.zeros(len(store.classes))
    for s in split_names:
        mask = np.array([(x if isinstance(x, str) else NO_SPLIT) == s for x in splits], dtype=bool)
        n = labels[mask].sum(axis=0).astype(float) if mask.any() else np.zeros(len(store.classes))
        a2.barh(range(len(store.classes)), n, left=left, label=s)
        left += n
    a2.set_yticks(range(len(store.classes)), store.classes, **plots.PLAIN)
    a2.invert_yaxis()
    a2.set(xlabel="ok tracks", title=f"ok tracks per class ({store.label_kind}) and split")
    if split_names:
        a2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _duration_figure(durations: np.ndarray):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.2), dpi=90)
    ax.hist(durations, bins=min(60, max(5, len(durations) // 2)), color="#3b6fb6")
    ax.set(xlabel="duration (s)", ylabel="tracks", title=f"durations of {len(durations)} tracks")
    fig.tight_layout()
    return fig


def _thumbs_figure(mats: list[np.ndarray], titles: list[str], ncols: int, vmin=None, vmax=None):
    import matplotlib.pyplot as plt

    nrows = max(1, -(-len(mats) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 1.9 * nrows), dpi=80, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, m, t in zip(axes.ravel(), mats, titles):
        ax.imshow(np.asarray(m, dtype=np.float32), origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax)
        ax.set_title(t, fontsize=8, **plots.PLAIN)
    fig.tight_layout()
    return fig


def _damaged_note(store: Store, damaged: list[int], what: str) -> str:
    """The page's sentence for damaged rows left out of its pictures; empty when there are none."""
    if not damaged:
        return ""
    return (
        f'<p class="note bad">{len(damaged)} damaged row(s) left out of the {what} '
        f"(rows {esc(', '.join(map(str, damaged[:20])))}{' ...' if len(damaged) > 20 else ''}: their bytes do not "
        f"match the journal's checksum, or hold values that are not finite); run "
        f"<code>melset repair {esc(store.root)}</code>, then the same <code>melset extract</code> command again</p>"
    )


def store_page(store: Store, examples: int = 3, chunk_bytes: int = CHUNK_BYTES) -> str:
    """The HTML page of a store (see the module's docstring).

    Parameters
    ----------
    store : Store
    examples : int
        Example spectrograms per genre (>= 1).
    chunk_bytes : int
        Matrices read at a time for the mean spectrograms.
    """
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise UsageError(f"--examples must be a whole number, at least 1, not {examples!r}")
    report = store.describe()
    t = store.tracks
    counts = report["counts"]
    sections = []

    cards = "".join(
        f'<div class="card {"good" if s == OK else "bad" if counts[s] else ""}"><b>{counts[s]}</b>{esc(s)}</div>'
        for s in (*STATUSES, PENDING)
    )
    split_col = [s if isinstance(s, str) else NO_SPLIT for s in t[SPLIT]]
    by_split = Counter(zip(split_col, t[STATUS]))
    split_rows = [(s, *[by_split.get((s, st), 0) for st in (*STATUSES, PENDING)]) for s in sorted(set(split_col))]
    genre_rows = [(g, *[c.get(st, 0) for st in (*STATUSES, PENDING)]) for g, c in report["by_genre"].items()]
    overview = (
        f'<div class="cards"><div class="card"><b>{report["rows"]}</b>tracks</div>{cards}</div>'
        + img(png_uri(_counts_figure(store, report)), "tracks per genre and status; ok tracks per class and split")
        + "<h3>per genre_top</h3>"
        + table((GENRE_TOP, *STATUSES, PENDING), genre_rows, numeric=range(1, 6))
        + "<h3>per split</h3>"
        + table((SPLIT, *STATUSES, PENDING), split_rows, numeric=range(1, 6))
        + f"<p>classes ({esc(store.label_kind)}{', multi-label' if store.multi_label else ''}): "
        + esc(", ".join(store.classes))
        + "</p>"
    )
    sections.append(("Counts", overview))

    problems = report["problems"]
    if problems:
        shown = problems[:MAX_PROBLEMS]
        more = (
            f'<p class="note">and {len(problems) - len(shown)} more; <code>melset info --json</code> lists every one</p>'
            if len(problems) > len(shown)
            else ""
        )
        failures = (
            f"<p>{len(problems)} track(s) have no spectrogram:</p>"
            + '<div class="scroll">'
            + table((TRACK_ID, STATUS, "reason"), ((p[TRACK_ID], p[STATUS], p["reason"]) for p in shown))
            + "</div>"
            + more
        )
    else:
        failures = "<p>every track is stored.</p>"
    if report["unlisted_count"]:
        failures += (
            f"<p>{report['unlisted_count']} audio file(s) on disk that no row lists: "
            f"{esc(', '.join(report['unlisted_files'][:50]))}</p>"
        )
    sections.append(("Failures and their reasons", failures))

    durations = t[DURATION_S].to_numpy(dtype=np.float64)
    durations = durations[np.isfinite(durations)]
    sections.append(
        (
            "Durations",
            img(png_uri(_duration_figure(durations)), "histogram of durations")
            if len(durations)
            else '<p class="note">no track has a known duration</p>',
        )
    )

    # a page goes on without damaged rows (read checked, left out and counted), so that the
    # report of a damaged store still shows what is wrong with it
    ex = examples_per_class(store, examples)
    ids = t[TRACK_ID].tolist()
    grid, damaged = [], []
    for c, rows in ex.items():
        read = [(int(r), x) for chunk, block in store.iter_rows(rows, damaged=damaged) for r, x in zip(chunk, block)]
        if read:
            fig = _thumbs_figure(
                [x for _, x in read], [f"{c}: track {ids[r]}" for r, _ in read], ncols=examples, vmin=0, vmax=1
            )
            grid.append(f"<h3>{esc(c)}</h3>" + img(png_uri(fig), f"example spectrograms of {c}"))
        else:
            grid.append(f'<h3>{esc(c)}</h3><p class="note">no {"undamaged " if rows else ""}ok track of this class</p>')
    sections.append(
        (
            "Example spectrograms per class",
            _damaged_note(store, damaged, "examples") + ("".join(grid) or '<p class="note">no class</p>'),
        )
    )

    damaged = []
    means, n = mean_spectrograms(store, chunk_bytes, damaged)
    keep = [j for j in range(len(store.classes)) if n[j]]
    mean_html = (
        img(
            png_uri(
                _thumbs_figure(
                    [means[j] for j in keep], [f"{store.classes[j]} (mean of {n[j]})" for j in keep], ncols=4
                )
            ),
            "mean spectrogram per class",
        )
        if keep
        else '<p class="note">no ok track</p>'
    )
    sections.append(("Mean spectrogram per class", _damaged_note(store, damaged, "means") + mean_html))

    m = store.manifest
    prov = {k: m.get(k) for k in ("state", "store_id", "created", "started", "finished", "updated", "labels")}
    prov.update({"shape": m.get("shape"), "dtype": m.get("dtype")})
    runs = report["runs"]
    run_keys = sorted({k for r in runs for k in r})
    provenance = (
        "<h3>recipe</h3>"
        + dict_table(report["recipe"])
        + "<h3>store</h3>"
        + dict_table(prov)
        + "<h3>source</h3>"
        + dict_table(report["source"])
        + "<h3>runs</h3>"
        + (table(run_keys, ([_plain(r.get(k)) for k in run_keys] for r in runs)) if runs else "<p>none</p>")
        + "<h3>library versions</h3>"
        + dict_table(report["versions"])
    )
    sections.append(("Recipe and provenance", provenance))
    return page(
        f"melset store {os.path.basename(store.root)}",
        f"{store.root} · {report['state']} · {report['rows']} tracks · report written {now_iso()}",
        sections,
    )


# -- a training run ---------------------------------------------------------------------------------------


def _ap_figure(per_class: dict):
    import matplotlib.pyplot as plt

    names = [g for g, m in per_class.items() if m["average_precision"] is not None]
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.3 * len(names) + 1)), dpi=90)
    ax.barh(range(len(names)), [per_class[g]["average_precision"] for g in names], color="#3b6fb6")
    ax.set_yticks(range(len(names)), names, **plots.PLAIN)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="average precision", title="average precision per genre")
    fig.tight_layout()
    return fig


def run_page(
    run_dir: str | os.PathLike,
    store_dir: str | os.PathLike | None = None,
    split: str | None = TEST,
    device: str = "cpu",
) -> tuple[str, str | None]:
    """The HTML page of a training run, and why there is no evaluation when there is none.

    Parameters
    ----------
    run_dir : path
        A run folder written by `melset train`.
    store_dir : path, optional
        The store to score on (default: the run's own store, as its config.json records).
    split : {"training", "validation", "test"} or None
        The split to score (None: every usable row).
    device : {"auto", "cpu", "cuda"}
    """
    import matplotlib.pyplot as plt

    run_dir = os.path.abspath(os.fspath(run_dir))
    require_complete(run_dir)  # a run still training, or stopped, is resumed first
    config = read_config(run_dir)
    metrics = read_metrics(run_dir)
    multi = bool(config.get("multi_label"))
    epochs = metrics["epochs"]
    sections = []
    best = metrics.get("best_epoch")
    summary = {
        "store": config.get("store"),
        "labels": config.get("labels", GENRE_TOP),
        "classes": ", ".join(config.get("classes", [])),
        "epochs run": len(epochs),
        "best epoch": best,
        "stopped early": metrics.get("stopped_early"),
        "device": config.get("device"),
        "seed": config.get("seed"),
        "split": config.get("split"),
    }
    sections.append(
        (
            "Run",
            dict_table(summary)
            + "<h3>hyper-parameters</h3>"
            + dict_table(config.get("hyperparameters", {}))
            + "<h3>model</h3>"
            + dict_table(config.get("model", {})),
        )
    )
    if epochs:
        buf = io.BytesIO()
        plots.curves_png(epochs, buf, title="loss and accuracy per epoch", multi_label=multi)
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        cols = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
        rows = ([_fmt(e.get(c)) for c in cols] for e in epochs)
        sections.append(("Curves", img(uri, "training curves") + table(cols, rows, numeric=range(5))))
    else:
        sections.append(("Curves", '<p class="note">no epoch finished</p>'))

    store_dir = store_dir or config.get("store")
    why_not = None
    scores = None
    try:
        from melset.evaluate import evaluate

        if store_dir is None:
            raise UsageError("its config.json names no store: give --store")
        scores = evaluate(run_dir, os.fspath(store_dir), split, device)
    except ImportError:
        why_not = "scoring the run needs PyTorch: pip install 'melset[train]'"
    except MelsetError as exc:
        why_not = str(exc)
    except (ValueError, RuntimeError, OSError, KeyError) as exc:
        why_not = f"the run cannot be scored on {store_dir}: {exc}"
    name = split or "all"
    if scores is None:
        sections.append((f"Scores on {name}", f'<p class="note">no scores: {esc(why_not)}</p>'))
    elif scores.get("multi_label"):
        head = {k: _fmt(scores[k]) for k in ("n", "roc_auc_macro", "roc_auc_micro")}
        head.update({k: _fmt(scores[k]) for k in ("average_precision_macro", "average_precision_micro")})
        per = scores["per_class"]
        rows = ((g, _fmt(m["average_precision"]), _fmt(m["roc_auc"]), m["support"]) for g, m in per.items())
        sections.append(
            (
                f"Scores on {name} ({scores['store']})",
                dict_table(head)
                + img(png_uri(_ap_figure(per)), "average precision per genre")
                + table(("genre", "average precision", "ROC-AUC", "support"), rows, numeric=(1, 2, 3)),
            )
        )
    else:
        fig_buf = io.BytesIO()
        classes = config.get("classes", [])
        plots.confusion_png(np.array(scores["confusion_matrix"]), classes, fig_buf)
        plt.close("all")
        uri = "data:image/png;base64," + base64.b64encode(fig_buf.getvalue()).decode("ascii")
        per = scores["per_class"]
        rows = ((g, _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), m["support"]) for g, m in per.items())
        head = {"tracks": scores["n"], "accuracy": _fmt(scores["accuracy"]), "macro-F1": _fmt(scores["macro_f1"])}
        sections.append(
            (
                f"Scores on {name} ({scores['store']})",
                dict_table(head)
                + img(uri, "confusion matrix")
                + table(("genre", "precision", "recall", "f1", "support"), rows, numeric=(1, 2, 3, 4)),
            )
        )
    return (
        page(f"melset run {os.path.basename(run_dir)}", f"{run_dir} · report written {now_iso()}", sections),
        why_not,
    )


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if x != x else f"{x:.4f}"
    return str(x)
