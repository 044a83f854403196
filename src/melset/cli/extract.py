"""`melset extract`: the collection's options, the progress bar, SIGTERM as Ctrl-C, and the summary it prints."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from melset.cli.base import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    _fail,
    _Terminated,
    _terminated,
    err,
    other_subsets_note,
    say,
)
from melset.cli.options import _recipe, _recipe_options
from melset.engines import ENGINES
from melset.errors import MelsetError, UsageError
from melset.vocab import FAILED, GENRE_TOP, LABEL_KINDS, MISSING, OK, PENDING, TOO_SHORT


class Meter:
    """Where an extract run stands: rows done of total, and the rate of the rows this run processed.

    Fed by `melset.extract.extract`'s ``on_progress(done, total)``. The first call (the store
    open, the rows finished earlier and the missing files set aside) starts the clock; the
    rate is `melset.extract.files_per_second` of the rows done since, as the summary's, and
    once every row is done it is taken at the last row, so the last frame shows the summary's rate.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.started: float | None = None
        self.first = self.done = self.total = 0
        self.last_row = 0.0

    def update(self, done: int, total: int) -> None:
        now = self.clock()
        if self.started is None:
            self.started, self.first, self.last_row = now, done, now
        elif done != self.done:
            self.last_row = now
        self.done, self.total = done, total

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def rate(self) -> float:
        from melset.extract import files_per_second

        if self.started is None:
            return 0.0
        end = self.last_row if self.finished else self.clock()
        return files_per_second(self.done - self.first, end - self.started)

    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (0 when done, None before the first row of this run)."""
        if self.finished:
            return 0.0
        rate = self.rate()
        return (self.total - self.done) / rate if rate else None

    def elapsed_s(self) -> float:
        return 0.0 if self.started is None else (self.last_row if self.finished else self.clock()) - self.started

    def rate_text(self) -> str:
        rate = self.rate()
        return f"{rate:.1f} clips/s" if rate else "- clips/s"

    def line(self) -> str:
        """One plain line: done/total, percent, rate, elapsed and ETA."""
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"extract {self.done}/{self.total} ({percent:.0f}%), {self.rate_text()}, "
            f"{_clock(self.elapsed_s())} elapsed, eta {_clock(self.eta_s())}"
        )


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class LogLines:
    """Progress for a log file or a pipe, the way tqdm writes to one: a plain line when the
    rows are planned, then whenever STEP more of them are done and EVERY_S have passed, at
    least every AT_LEAST_S, and once at the end."""

    EVERY_S, AT_LEAST_S, STEP = 2.0, 30.0, 0.05

    def __init__(self, meter: Meter, write: Callable[[str], None]):
        self.meter, self.write = meter, write
        self.printed_at: float | None = None
        self.printed_done = 0
        self.ended = False

    def __call__(self, done: int, total: int) -> None:
        self.meter.update(done, total)
        if self.ended:
            return
        now = self.meter.clock()
        since = None if self.printed_at is None else now - self.printed_at
        if (
            since is None
            or self.meter.finished
            or since >= self.AT_LEAST_S
            or (since >= self.EVERY_S and done - self.printed_done >= self.STEP * total)
        ):
            self.write(self.meter.line())
            self.printed_at, self.printed_done, self.ended = now, done, self.meter.finished

    def close(self) -> None:
        pass


class _Rate(ProgressColumn):
    def __init__(self, meter: Meter):
        super().__init__()
        self.meter = meter

    def render(self, task) -> Text:
        return Text(self.meter.rate_text(), style="cyan")


class _Eta(ProgressColumn):
    def __init__(self, meter: Meter):
        super().__init__()
        self.meter = meter

    def render(self, task) -> Text:
        return Text(f"eta {_clock(self.meter.eta_s())}", style="progress.remaining")


class Bar:
    """The terminal's progress bar, drawn from the first ``on_progress`` call (once the store
    is open: a store refused is refused before any bar), its rate and ETA from the Meter."""

    def __init__(self, meter: Meter):
        self.meter = meter
        self.progress: Progress | None = None
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        self.meter.update(done, total)
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]extract"),
                # rich's own finished colour is a grey in a 16-colour terminal: the bar would look empty
                BarColumn(finished_style="green"),
                MofNCompleteColumn(),
                _Rate(self.meter),
                TimeElapsedColumn(),
                _Eta(self.meter),
                console=err,
            )
            self.progress.start()
            self.task = self.progress.add_task("extract", total=total, completed=done)
        else:
            self.progress.update(self.task, total=total, completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


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
@click.option(
    "--checksums",
    "checksums_file",
    default=None,
    help="A sha1sum file (paths relative to --audio) every file is checked against (default: the collection's own checksums file, as FMA's archives carry).",
)
@click.option(
    "--storage-option",
    "storage_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="An fsspec storage option for URLs (repeatable): anon=true, endpoint_url=..., a profile; credentials also come from the backend's environment (AWS_*).",
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
    checksums_file,
    storage_option,
    quiet,
    recipe_file,
    **recipe_values,
):
    """Compute log-mel spectrograms for a collection into a store (the notebook's recipe unless told)."""
    from melset.engines import make_engine
    from melset.engines.options import check_engine_options

    from melset.location import is_url, parse_storage_options
    from melset.location.remote import backend_modules

    inputs = dict(audio=audio_dir, tracks=tracks_csv, manifest=manifest_file, subset=subset, limit=limit)
    options = dict(overwrite=overwrite, retry_failed=retry_failed)
    previous = signal.signal(signal.SIGTERM, _terminated)  # like Ctrl-C: finished rows are committed
    try:
        if is_url(out_dir):
            raise UsageError(
                f"--out {out_dir}: a store is written in place, row by row, so it lives on a local disk; extract "
                "to a local --out, then `melset export STORE --format hf|webdataset --to URL` puts it in object storage"
            )
        storage_options = parse_storage_options(storage_option)
        recipe = _recipe(recipe_file, **recipe_values)
        check_engine_options(engine, workers, timeout, ray_address)
        if engine == "ray":  # joining a cluster takes seconds: the inputs are checked first
            _check_inputs(inputs, layout, recipe.decoder)
        # Local workers start before the metadata libraries are even imported: their warm-up
        # (numpy, scipy, the decoders) overlaps the driver's (pandas) and the metadata read.
        # a URL's backend (s3fs: ~0.45 s a process) imported once, in the fork server, not in every worker
        preload = tuple(backend_modules(audio_dir, tracks_csv, manifest_file))
        with make_engine(engine, workers=workers, timeout=timeout, address=ray_address, preload=preload) as eng:
            if engine != "ray":
                _check_inputs(inputs, layout, recipe.decoder)
            # layout=None: open_catalog chooses it again, and says why in the store's manifest
            more = {"layout": layout, "labels": label_kind, "storage_options": storage_options, "checksums": checksums_file}
            summary = _extract(eng, recipe, {**inputs, **more}, out_dir, options, quiet)
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
    finally:
        signal.signal(signal.SIGTERM, previous)  # called in-process (tests, notebooks): SIGTERM given back
    _print_summary(summary, quiet)
    sys.exit(summary.exit_code)


def _check_inputs(inputs: dict, layout: str | None, decoder: str) -> None:
    from melset.extract import check_options

    check_options(**inputs, layout=layout, decoder=decoder)


def _extract(engine, recipe, inputs, out_dir, options, quiet):
    from melset.catalog import open_catalog
    from melset.extract import extract as run_extract

    catalog = open_catalog(**inputs)
    if quiet:
        return run_extract(catalog, recipe, out_dir, engine=engine, **options)
    meter = Meter()
    display = Bar(meter) if err.is_terminal else LogLines(meter, lambda line: say(line, console=err))
    try:
        return run_extract(catalog, recipe, out_dir, engine=engine, on_progress=display, **options)
    finally:
        display.close()


def _print_summary(summary, quiet: bool) -> None:
    from melset.extract import reasons

    c = summary.counts
    line = (
        f"{summary.out}: {c[OK]} ok, {c[TOO_SHORT]} too short, {c[FAILED]} failed, {c[MISSING]} missing"
        f" of {sum(c.values())} tracks ({summary.processed} processed in {summary.work_s:.1f} s, {summary.rate:.1f} clips/s"
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
    left_out = src.get("limit_left_out_genres") or []
    if left_out:
        shown = ", ".join(left_out[:8]) + (f" and {len(left_out) - 8} more" if len(left_out) > 8 else "")
        say(
            (f"  --limit {src.get('limit')} left out {len(left_out)} genre(s)", "yellow"),
            f" (the first tracks by id): {shown}; a model trained on this store never sees them",
        )
    sums = src.get("checksums")
    if sums:
        bad = sum(1 for _, status, reason in summary.failures if status == FAILED and reason.startswith("checksum mismatch"))
        unchecked = sum(c.values()) - sums["tracks_listed"]
        say(
            f"  checksums: {sums['tracks_listed']} of {sum(c.values())} tracks' files checked (SHA-1) against {sums['file']}"
            f", {bad} did not match{f'; {unchecked} not listed there, not checked' if unchecked else ''}"
        )
    others = other_subsets_note(src)
    if others:
        say(f"  other subsets: {others}")
    if summary.no_genre:
        say(f"  no genre ({summary.no_genre}): tracks without a label get an all-zero label row")
        at_root = src.get("files_without_genre_folder") or []
        if at_root:
            say(f"    files directly in --audio have no genre folder: {', '.join(at_root[:5])}")
    for names in src.get("labels_differing_in_case") or []:
        say((f"  labels that differ only in case: {', '.join(names)}", "yellow"), " are separate classes")
    for note in summary.healed:
        say("  ", ("store damage undone", "yellow"), f": {note}")
    if summary.state != "complete":
        say("  ", ("incomplete", "yellow"), f": {c[PENDING]} rows pending; run the same command again to resume")
    if summary.counts[OK] == 0:
        say("  ", ("no track succeeded", "red"))
