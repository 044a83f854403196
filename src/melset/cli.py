"""The `melset` command: extract, info, show, export (and train, evaluate, predict with melset[train])."""

from __future__ import annotations

import json
import sys
from collections import Counter

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from melset.errors import MelsetError
from melset.recipe import DECODERS, DTYPES, ON_SHORT, Recipe
from melset.vocab import (
    ERROR,
    FAILED,
    GENRE_TOP,
    MISSING,
    OK,
    PENDING,
    SPLITS,
    STATUS,
    STATUSES,
    TEST,
    TOO_SHORT,
    TRACK_ID,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} clips/s" if speed else "- clips/s", style="cyan")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]melset: error:[/] {message}")
    sys.exit(code)


@click.group()
@click.version_option(package_name="melset")
def main() -> None:
    """melset: audio collections (FMA and friends) -> training-ready log-mel datasets."""


@main.command()
@click.option("--tracks", "tracks_csv", type=click.Path(), help="FMA layout: FMA's fma_metadata/tracks.csv.")
@click.option(
    "--manifest",
    "manifest_file",
    type=click.Path(),
    help="Manifest layout: a CSV or Parquet file with columns path,label[,split].",
)
@click.option(
    "--layout",
    type=click.Choice(["fma", "folders", "manifest"]),
    default=None,
    help="Input layout (default: fma with --tracks, manifest with --manifest, else folders: AUDIO/<genre>/<file>).",
)
@click.option(
    "--audio",
    "audio_dir",
    type=click.Path(),
    required=True,
    help="Audio folder (FMA: fma_small/ with NNN/NNNNNN.mp3; folders: one folder per genre; manifest: the root its paths are relative to).",
)
@click.option("--out", "out_dir", type=click.Path(), required=True, help="Store folder to create or resume.")
@click.option(
    "--subset",
    type=click.Choice(["small", "medium", "large"]),
    default="small",
    show_default=True,
    help="FMA subset; they nest, so medium = small + medium.",
)
@click.option("--workers", type=int, default=None, help="Worker processes (default: all cores).")
@click.option("--limit", type=int, default=None, help="Only the first N selected tracks (by track_id).")
@click.option("--dtype", type=click.Choice(DTYPES), default="float16", show_default=True, help="Stored precision.")
@click.option(
    "--on-short",
    type=click.Choice(ON_SHORT),
    default="skip",
    show_default=True,
    help="Clips shorter than the kept frames: skip them (too_short) or pad with silence.",
)
@click.option(
    "--decoder",
    type=click.Choice(DECODERS),
    default="auto",
    show_default=True,
    help="auto: libsndfile as librosa.load, FFmpeg (PyAV) for what it cannot read.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local processes, or a Ray cluster (melset[ray]).",
)
@click.option(
    "--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray instance)."
)
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds one file may take before it is marked failed.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing store made with other parameters.")
@click.option("--retry-failed", is_flag=True, help="Also redo rows that failed in an earlier run.")
@click.option("--quiet", is_flag=True, help="No progress bar; a one-line summary.")
def extract(
    tracks_csv,
    manifest_file,
    layout,
    audio_dir,
    out_dir,
    subset,
    workers,
    limit,
    dtype,
    on_short,
    decoder,
    engine,
    ray_address,
    timeout,
    overwrite,
    retry_failed,
    quiet,
):
    """Compute the notebook's log-mel spectrograms for a collection into a store."""
    from melset.catalog import choose_layout
    from melset.engines import make_engine

    recipe = Recipe(dtype=dtype, on_short=on_short, decoder=decoder)
    inputs = dict(audio=audio_dir, tracks=tracks_csv, manifest=manifest_file, subset=subset, limit=limit)
    try:
        inputs["layout"] = choose_layout(layout, tracks_csv, manifest_file)
        # Started first: workers import and warm up while the metadata is read.
        with make_engine(engine, workers=workers, timeout=timeout, address=ray_address) as eng:
            summary = _extract(eng, recipe, inputs, out_dir, overwrite, retry_failed, quiet)
    except MelsetError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: finished rows are saved; run the same command again to resume {out_dir}")
        sys.exit(130)
    _print_summary(summary, quiet)
    sys.exit(summary.exit_code)


def _extract(engine, recipe, inputs, out_dir, overwrite, retry_failed, quiet):
    from melset.catalog import open_catalog
    from melset.extract import extract as run_extract

    catalog = open_catalog(**inputs)
    if quiet:
        return run_extract(catalog, recipe, out_dir, engine=engine, overwrite=overwrite, retry_failed=retry_failed)
    columns = (
        TextColumn("[bold]extract"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("extract", total=len(catalog))

        def on_progress(done: int, total: int) -> None:
            if progress.tasks[task].completed == 0 and done:
                # rows finished by earlier runs do not count towards the rate and ETA
                progress.reset(task, total=total, completed=done)
            else:
                progress.update(task, completed=done)

        return run_extract(
            catalog,
            recipe,
            out_dir,
            engine=engine,
            overwrite=overwrite,
            retry_failed=retry_failed,
            on_progress=on_progress,
        )


def _print_summary(summary, quiet: bool) -> None:
    from melset.extract import reasons

    c = summary.counts
    line = (
        f"{summary.out}: {c[OK]} ok, {c[TOO_SHORT]} too short, {c[FAILED]} failed, {c[MISSING]} missing"
        f" of {sum(c.values())} tracks ({summary.processed} processed in {summary.elapsed_s:.1f} s, {summary.rate:.1f} clips/s"
        f"{f'; {summary.already_done} already done' if summary.already_done else ''})"
    )
    if quiet:
        out.print(line)
        return
    out.print(f"[bold]{line}[/]")
    groups = reasons(summary)
    for kind, n, track_id, reason in groups[:12]:
        out.print(f"  failed ({n}): {reason}" if n == 1 else f"  failed ({n}): {kind}, e.g. track {track_id}: {reason}")
    if len(groups) > 12:
        out.print(f"  ... and {len(groups) - 12} other kinds of failure; `melset info {summary.out}` lists every one")
    if c[MISSING]:
        ids = [str(t) for t, s, _ in summary.failures if s == MISSING]
        out.print(
            f"  missing ({len(ids)}): listed in the metadata but not on disk: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}"
        )
    if c[TOO_SHORT]:
        out.print(f"  too short ({c[TOO_SHORT]}): under the kept frames; --on-short pad keeps them padded with silence")
    if summary.unlisted:
        out.print(
            f"  unlisted ({len(summary.unlisted)}): on disk but not in the metadata: {', '.join(summary.unlisted[:5])}{' ...' if len(summary.unlisted) > 5 else ''}"
        )
    if summary.no_genre:
        out.print(f"  no genre ({summary.no_genre}): tracks without genre_top get an all-zero label row")
    if summary.state != "complete":
        out.print(f"  [yellow]incomplete[/]: {c[PENDING]} rows pending; run the same command again to resume")
    if summary.counts[OK] == 0:
        out.print("  [red]no track succeeded[/]")


def _open(path: str):
    from melset.store import Store

    try:
        return Store(path)
    except MelsetError as exc:
        _fail(str(exc))


@main.command()
@click.argument("store_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--verify", is_flag=True, help="Also check every stored row against its journal checksum.")
def info(store_dir, as_json, verify):
    """Summarise a store: counts per status and genre, each failure's reason, the parameters."""
    store = _open(store_dir)
    report = store.report()
    if verify:
        report["corrupt_rows"] = store.verify()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    out.print(
        f"[bold]{report['store']}[/]  state: {report['state']}  rows: {report['rows']}  shape: {report['shape']}  dtype: {report['dtype']}"
    )
    statuses = (*STATUSES, PENDING)
    table = Table(title="tracks per genre and status")
    table.add_column("genre")
    for s in statuses:
        table.add_column(s, justify="right")
    for genre, counts in report["by_genre"].items():
        table.add_row(genre, *[str(counts.get(s, 0) or "") for s in statuses])
    table.add_row("[bold]all", *[f"[bold]{report['counts'][s]}" for s in statuses])
    out.print(table)
    if report["problems"]:
        t = Table(title="tracks not stored, and why")
        t.add_column(TRACK_ID)
        t.add_column(STATUS)
        t.add_column("reason")
        shown, hidden = Counter(), Counter()
        for p in report["problems"]:
            # every failure; missing and too-short tracks are often many and alike
            if p[STATUS] == FAILED or shown[p[STATUS]] < 20:
                t.add_row(str(p[TRACK_ID]), p[STATUS], p["reason"])
                shown[p[STATUS]] += 1
            else:
                hidden[p[STATUS]] += 1
        out.print(t)
        for status, n in hidden.items():
            out.print(f"... and {n} more {status} (melset info --json lists every one)")
    if report["unlisted_count"]:
        out.print(
            f"unlisted: {report['unlisted_count']} audio file(s) on disk that no row lists: {', '.join(report['unlisted_files'][:20])}"
        )
    if report["no_genre"]:
        out.print(f"no genre: {report['no_genre']} track(s) without genre_top (all-zero label rows)")
    out.print("classes: " + ", ".join(report["classes"]))
    out.print("recipe: " + ", ".join(f"{k}={v}" for k, v in report["recipe"].items()))
    src = report["source"]
    out.print("source: " + ", ".join(f"{k}={v}" for k, v in src.items()))
    if verify:
        bad = report["corrupt_rows"]
        out.print(
            f"verify: {'all rows match their checksums' if not bad else f'{len(bad)} corrupt row(s): {bad[:20]}'}"
        )


@main.command()
@click.argument("store_dir", type=click.Path())
@click.option("--track", required=True, help="Track id (FMA: the number, e.g. 2 or 000002).")
@click.option("--png", "png", type=click.Path(), required=True, help="Where to write the picture.")
def show(store_dir, track, png):
    """Draw one stored spectrogram with time (s) and frequency (Hz) axes."""
    from melset.plots import spectrogram_png

    store = _open(store_dir)
    try:
        row = store.row_of(track)
    except KeyError as exc:
        _fail(str(exc.args[0]))
    rec = store.tracks.iloc[row]
    if rec[STATUS] != OK:
        _fail(f"track {track} has no spectrogram: {rec[STATUS]} ({rec[ERROR]})")
    r = store.recipe
    genre = rec[GENRE_TOP] if isinstance(rec[GENRE_TOP], str) else "no genre"
    spectrogram_png(
        store.mels[row],
        png,
        r["sample_rate"],
        r["hop_length"],
        r["fmin"],
        r["fmax"],
        title=f"track {rec[TRACK_ID]} ({genre})",
    )
    out.print(f"wrote {png}")


@main.command()
@click.argument("store_dir", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["seed-pickles"]),
    required=True,
    help="seed-pickles: the reference notebook's own pickles.",
)
@click.option("--to", "to", type=click.Path(), required=True, help="Output folder.")
def export(store_dir, fmt, to):
    """Write a store in another format (the notebook's pickles: pickles/, y.pickle, classlabels.pickle)."""
    from melset.export import seed_pickles

    store = _open(store_dir)
    if store.manifest.get("state") != "complete":
        err.print("[yellow]warning[/]: the store is incomplete; exporting the rows finished so far")
    n = seed_pickles(store, to)
    out.print(f"wrote {n['pickles']} spectrogram pickles, {n['labels']} labels and {n['classes']} classes to {to}")


def _needs_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        _fail("this command needs PyTorch: pip install 'melset[train]'")


@main.command()
@click.argument("store_dir", type=click.Path())
@click.option("--run", "run_dir", type=click.Path(), required=True, help="Folder for the run (model, metrics, curves).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="AdamW learning rate.")
@click.option(
    "--patience",
    type=int,
    default=10,
    show_default=True,
    help="Stop after this many epochs without a better validation score (0 = never stop early).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option(
    "--model",
    type=click.Choice(["compact", "baseline"]),
    default="compact",
    show_default=True,
    help="compact: the CNN with a frequency-aware head; baseline: the original MelCNN.",
)
@click.option(
    "--crop",
    type=int,
    default=256,
    show_default=True,
    help="Frames per random training crop (scores average over crops covering the window); 0 = whole window.",
)
@click.option(
    "--freq-mask", type=int, default=16, show_default=True, help="SpecAugment: mels per masked band (0 = off)."
)
@click.option(
    "--time-mask", type=int, default=32, show_default=True, help="SpecAugment: frames per masked span (0 = off)."
)
@click.option("--mixup", type=float, default=0.2, show_default=True, help="Mixup Beta alpha (0 = off).")
@click.option("--label-smoothing", type=float, default=0.1, show_default=True)
@click.option("--weight-decay", type=float, default=1e-2, show_default=True, help="AdamW weight decay.")
@click.option(
    "--schedule",
    type=click.Choice(["cosine", "constant"]),
    default="cosine",
    show_default=True,
    help="Learning rate: cosine decay after a 10% warm-up, or constant.",
)
@click.option("--quiet", is_flag=True)
def train(
    store_dir,
    run_dir,
    epochs,
    batch_size,
    lr,
    patience,
    device,
    seed,
    workers,
    model,
    crop,
    freq_mask,
    time_mask,
    mixup,
    label_smoothing,
    weight_decay,
    schedule,
    quiet,
):
    """Train a genre classifier on a store (training split; best epoch on validation)."""
    _needs_torch()
    from melset.train import TrainConfig
    from melset.train import train as run_train

    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        device=device,
        seed=seed,
        num_workers=workers,
        model=model,
        crop=crop,
        freq_mask=freq_mask,
        time_mask=time_mask,
        mixup=mixup,
        label_smoothing=label_smoothing,
        schedule=schedule,
    )
    try:
        cfg.check()
    except MelsetError as exc:
        _fail(str(exc))
    store = _open(store_dir)
    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, disable=quiet) as progress:
        task = progress.add_task("", total=epochs)

        def on_epoch(row: dict) -> None:
            val = f"val {row['val_accuracy']:.2f}" if row["val_accuracy"] is not None else "no validation rows"
            progress.update(
                task, advance=1, description=f"loss {row['train_loss']:.3f} acc {row['train_accuracy']:.2f} {val}"
            )

        try:
            metrics = run_train(store.root, run_dir, cfg, on_epoch)
        except (ValueError, RuntimeError, MelsetError) as exc:
            _fail(str(exc))
    best = metrics["epochs"][metrics["best_epoch"] - 1]
    val = f", validation accuracy {best['val_accuracy']:.3f}" if best["val_accuracy"] is not None else ""
    out.print(
        f"{run_dir}: {len(metrics['epochs'])} epochs{' (stopped early)' if metrics['stopped_early'] else ''}; "
        f"best epoch {metrics['best_epoch']}: training accuracy {best['train_accuracy']:.3f}{val}"
    )


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--store", "store_dir", type=click.Path(), required=True)
@click.option("--split", type=click.Choice([*SPLITS, "all"]), default=TEST, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def evaluate(run_dir, store_dir, split, device, as_json):
    """Accuracy, macro-F1 and per-genre scores of a run on a store's split; draws the confusion matrix."""
    _needs_torch()
    from melset.train import evaluate as run_evaluate

    _open(store_dir)
    report = run_evaluate(run_dir, store_dir, None if split == "all" else split, device)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    out.print(
        f"[bold]{split}[/]: {report['n']} tracks, accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}"
    )
    t = Table()
    for col in ("genre", "precision", "recall", "f1", "support"):
        t.add_column(col, justify="left" if col == "genre" else "right")
    for genre, m in report["per_class"].items():
        t.add_row(genre, f"{m['precision']:.2f}", f"{m['recall']:.2f}", f"{m['f1']:.2f}", str(m["support"]))
    out.print(t)
    out.print(f"confusion matrix: {report['confusion_png']}")


@main.command()
@click.argument("run_dir", type=click.Path())
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option(
    "--whole-track", is_flag=True, help="Average over consecutive windows of the recipe's frames, not just the first."
)
@click.option("--top", type=int, default=3, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def predict(run_dir, files, whole_track, top, device, as_json):
    """Top genres for audio files (mp3, wav, flac, ogg, ...), with the run's own recipe."""
    _needs_torch()
    from melset.train import predict as run_predict

    results = run_predict(run_dir, list(files), whole_track=whole_track, top=top, device=device)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                out.print(f"{r['file']}: [red]cannot predict[/]: {r['error']}")
            else:
                guesses = ", ".join(f"{g['genre']} {g['probability']:.2f}" for g in r["top"])
                out.print(f"{r['file']}: {guesses}" + (f"  ({r['windows']} windows)" if whole_track else ""))
    sys.exit(1 if any("error" in r for r in results) else 0)


if __name__ == "__main__":
    main()
