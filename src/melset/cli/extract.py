"""`melset extract`: the collection's options, the progress bar, SIGTERM as Ctrl-C, and the summary it prints."""

from __future__ import annotations

import signal
import sys

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from melset.cli.base import EXIT_INTERRUPTED, EXIT_TERMINATED, _fail, err, say
from melset.cli.options import _recipe, _recipe_options
from melset.engines import ENGINES
from melset.errors import MelsetError
from melset.vocab import FAILED, GENRE_TOP, LABEL_KINDS, MISSING, OK, PENDING, TOO_SHORT


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} clips/s" if speed else "- clips/s", style="cyan")


@click.command()
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
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
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
@click.option(
    "--labels",
    "label_kind",
    type=click.Choice(LABEL_KINDS),
    default=GENRE_TOP,
    show_default=True,
    help="What labels.npy encodes: one-hot genre_top, or (FMA) multi-hot track.genres / track.genres_all titled from genres.csv.",
)
@click.option("--quiet", is_flag=True, help="No progress bar; a one-line summary.")
@_recipe_options
def extract(
    tracks_csv,
    manifest_file,
    layout,
    audio_dir,
    out_dir,
    subset,
    workers,
    limit,
    engine,
    ray_address,
    timeout,
    overwrite,
    retry_failed,
    label_kind,
    quiet,
    recipe_file,
    **recipe_values,
):
    """Compute log-mel spectrograms for a collection into a store (the notebook's recipe unless told)."""
    from melset.engines import make_engine
    from melset.engines.options import check_engine_options

    inputs = dict(audio=audio_dir, tracks=tracks_csv, manifest=manifest_file, subset=subset, limit=limit)
    options = dict(overwrite=overwrite, retry_failed=retry_failed)
    signal.signal(signal.SIGTERM, _terminated)  # like Ctrl-C: finished rows are committed
    try:
        recipe = _recipe(recipe_file, **recipe_values)
        check_engine_options(engine, workers, timeout, ray_address)
        if engine == "ray":  # joining a cluster takes seconds: the inputs are checked first
            _check_inputs(inputs, layout, recipe.decoder)
        # Local workers start before the metadata libraries are even imported: their warm-up
        # (numpy, scipy, the decoders) overlaps the driver's (pandas) and the metadata read.
        with make_engine(engine, workers=workers, timeout=timeout, address=ray_address) as eng:
            if engine != "ray":
                _check_inputs(inputs, layout, recipe.decoder)
            # layout=None: open_catalog chooses it again, and says why in the store's manifest
            summary = _extract(eng, recipe, {**inputs, "layout": layout, "labels": label_kind}, out_dir, options, quiet)
    except MelsetError as exc:
        _fail(str(exc))
    except KeyboardInterrupt as exc:
        how, code = (
            ("terminated (SIGTERM)", EXIT_TERMINATED)
            if isinstance(exc, _Terminated)
            else ("interrupted", EXIT_INTERRUPTED)
        )
        say((how, "yellow"), f": finished rows are saved; run the same command again to resume {out_dir}", console=err)
        sys.exit(code)
    _print_summary(summary, quiet)
    sys.exit(summary.exit_code)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is."""


def _terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the clean-up must not be cut short
    raise _Terminated()


def _check_inputs(inputs: dict, layout: str | None, decoder: str) -> None:
    from melset.extract import check_options

    check_options(**inputs, layout=layout, decoder=decoder)


def _extract(engine, recipe, inputs, out_dir, options, quiet):
    from melset.catalog import open_catalog
    from melset.extract import extract as run_extract

    catalog = open_catalog(**inputs)
    if quiet:
        return run_extract(catalog, recipe, out_dir, engine=engine, **options)
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
            on_progress=on_progress,
            **options,
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
        say(line)
        return
    say((line, "bold"))
    src = summary.source
    if src.get("layout"):
        say(f"  layout: {src['layout']} ({src.get('layout_reason', 'as asked')})")
    groups = reasons(summary)
    for kind, n, track_id, reason in groups[:12]:
        say(f"  failed ({n}): {reason}" if n == 1 else f"  failed ({n}): {kind}, e.g. track {track_id}: {reason}")
    if len(groups) > 12:
        say(f"  ... and {len(groups) - 12} other kinds of failure; `melset info {summary.out}` lists every one")
    if c[MISSING]:
        ids = [str(t) for t, s, _ in summary.failures if s == MISSING]
        say(
            f"  missing ({len(ids)}): listed in the metadata but not on disk: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}"
        )
    if c[TOO_SHORT]:
        say(f"  too short ({c[TOO_SHORT]}): under the kept frames; --on-short pad keeps them padded with silence")
    if summary.unlisted:
        say(
            f"  unlisted ({len(summary.unlisted)}): on disk but not in the metadata: {', '.join(summary.unlisted[:5])}{' ...' if len(summary.unlisted) > 5 else ''}"
        )
    if summary.no_genre:
        say(f"  no genre ({summary.no_genre}): tracks without a label get an all-zero label row")
    for note in summary.healed:
        say("  ", ("store damage undone", "yellow"), f": {note}")
    if summary.state != "complete":
        say("  ", ("incomplete", "yellow"), f": {c[PENDING]} rows pending; run the same command again to resume")
    if summary.counts[OK] == 0:
        say("  ", ("no track succeeded", "red"))
