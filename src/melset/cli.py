"""The `melset` command: extract, recipe, info, show, export, repair, report (and train, evaluate, predict with melset[train])."""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import tempfile
import traceback
from collections import Counter

# Before numpy loads (melset's own __init__ does not load it): the command's process does no
# linear algebra worth threads, and OpenBLAS's idle threads spin after it starts them (~0.1 s
# of CPU in each process at every start, the workers' fork server included, on cores the
# workers need).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click
from click.core import ParameterSource
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

from melset import __version__
from melset.engines import ENGINES
from melset.errors import MelsetError, MissingDependency, UsageError
from melset.recipe import DECODERS, DTYPES, ON_SHORT, SCALINGS, Recipe, recipe_from_options
from melset.system import strict_json
from melset.train_config import MODELS, SCHEDULES, TrainConfig
from melset.vocab import (
    ERROR,
    FAILED,
    GENRE_TOP,
    LABEL_KINDS,
    MANIFEST,
    MELS,
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


EXIT_BUG = 70
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
_DEVICE = click.Choice(["auto", "cpu", "cuda"])


def say(*parts, console: Console = out) -> None:
    """Print one line made of `parts`, every one verbatim.

    A part is a str (data: file names, genres, paths, reasons, hints, printed exactly as
    written, never read as rich markup) or a (text, style) pair for melset's own emphasis.
    Every line a command prints goes through here.
    """
    line = Text()
    for part in parts:
        if isinstance(part, tuple):
            line.append(str(part[0]), style=part[1])
        else:
            line.append(str(part))
    console.print(line)


def _fail(message: str, code: int = 2) -> None:
    say(("melset: error: ", "bold red"), message, console=err)
    sys.exit(code)


def _save_traceback(exc: BaseException) -> str:
    """Write the traceback of a bug (and what ran) to a file of its own; returns its path."""
    fd, path = tempfile.mkstemp(prefix="melset-bug-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"melset {__version__}, Python {platform.python_version()}, {platform.platform()}\n")
        f.write(f"command: {' '.join(sys.argv)}\n\n")
        f.write("".join(traceback.format_exception(exc)))
    return path


class _Group(click.Group):
    """The `melset` group: whatever a command raises ends here, as one sentence and an exit status.

    MelsetError: its sentence, exit 2. Ctrl-C: exit 130. Anything else is a bug: one
    sentence, the path of a saved traceback, exit 70.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except MelsetError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            say(("interrupted", "yellow"), console=err)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            try:
                path = _save_traceback(exc)
            except OSError as save_error:
                path = f"(the traceback could not be saved: {save_error})"
            say(
                ("melset: internal error: ", "bold red"),
                f"{type(exc).__name__}: {exc}; this is a bug, please report it with: {path}",
                console=err,
            )
            sys.exit(EXIT_BUG)


class _NumberOrNone(click.ParamType):
    name = "number|none"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, float):
            return value
        if str(value).strip().lower() == "none":
            return None
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor none", param, ctx)


def _recipe_options(f):
    """extract's recipe flags; each defaults to the notebook's value (Recipe())."""
    d, number = Recipe(), _NumberOrNone()
    options = [
        ("--sample-rate", int, d.sample_rate, "Resample to this rate (Hz), 1,000-192,000."),
        ("--n-mels", int, d.n_mels, "Mel bands."),
        ("--n-fft", int, d.n_fft, "STFT window length (samples, Hann)."),
        ("--hop-length", int, d.hop_length, "STFT hop (samples)."),
        ("--frames", int, d.n_frames, "Frames kept from each clip's start."),
        ("--fmin", float, d.fmin, "Lowest mel frequency (Hz)."),
        ("--fmax", number, d.fmax, "Highest mel frequency (Hz); none: sample_rate / 2."),
        ("--top-db", number, d.top_db, "Floor below the clip's peak (dB); none keeps every level."),
        ("--amin", float, d.amin, "Smallest power that power_to_db takes."),
        (
            "--scaling",
            click.Choice(SCALINGS),
            d.scaling,
            "minmax-per-frame: each frame to [0, 1] (the notebook's MinMaxScaler); none: dB below the clip's peak.",
        ),
    ]
    for flag, kind, default, text in reversed(options):
        dest = "n_frames" if flag == "--frames" else flag[2:].replace("-", "_")
        f = click.option(flag, dest, type=kind, default=default, show_default=True, help=text)(f)
    return click.option(
        "--recipe",
        "recipe_file",
        type=click.Path(),
        default=None,
        help="Recipe file: JSON or TOML with the keys `melset recipe` prints; recipe flags given beside it override it.",
    )(f)


def _recipe(recipe_file, **values) -> Recipe:
    """The recipe file's recipe (or the default) with the recipe flags the user gave on top."""
    ctx = click.get_current_context()
    given = {
        k: v
        for k, v in values.items()
        if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    return recipe_from_options(recipe_file, **given)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="melset")
def main() -> None:
    """melset: audio collections (FMA and friends) -> training-ready log-mel datasets.

    Exit status of every command: 0 done, 1 nothing usable came out (extract: no track
    stored; predict: a file could not be used), 2 a usage or input error (one sentence
    names it), 70 a bug in melset (a traceback file is saved), 130 Ctrl-C, 143 SIGTERM.
    """


def run() -> None:
    """The `melset` executable: `main`, then an immediate exit with its status.

    By then every file is written and closed and every worker has ended; the interpreter's
    own tear-down of pandas, pyarrow, torch and the rest only adds a few tenths of a second
    to each command (a tenth of a short extract).
    """
    try:
        main(prog_name="melset")
        code = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`melset info | head`) or stream
            pass
    os._exit(code or 0)


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
    help="auto: libsndfile as librosa.load, stereo MP3 mixed to mono inside libmpg123 where the stream allows "
    "it exactly (decode and resample 9-10% faster, rounding apart), FFmpeg (PyAV) for what libsndfile cannot "
    "read. soundfile: librosa's samples bit for bit. av: FFmpeg for every file.",
)
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
    dtype,
    on_short,
    decoder,
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
        recipe = _recipe(recipe_file, dtype=dtype, on_short=on_short, decoder=decoder, **recipe_values)
        check_engine_options(engine, workers, timeout, ray_address)
        if engine == "ray":  # joining a cluster takes seconds: the inputs are checked first
            _check_inputs(inputs, layout, decoder)
        # Local workers start before the metadata libraries are even imported: their warm-up
        # (numpy, scipy, the decoders) overlaps the driver's (pandas) and the metadata read.
        with make_engine(engine, workers=workers, timeout=timeout, address=ray_address) as eng:
            if engine != "ray":
                _check_inputs(inputs, layout, decoder)
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


def _open(path: str):
    from melset.store import Store

    return Store(path)  # a MelsetError becomes one sentence and exit 2


def _cell(value) -> Text:
    """A table cell printed verbatim (data is never rich markup)."""
    return Text(str(value))


@main.command()
@click.argument("store_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (strict JSON).")
@click.option(
    "--verify", is_flag=True, help="Also check every stored row against its journal checksum (exit 1 on damage)."
)
def info(store_dir, as_json, verify):
    """Summarise a store: counts per status and genre, each failure's reason, the parameters."""
    store = _open(store_dir)
    report = store.describe()
    if verify:
        report["corrupt_rows"] = store.verify()
    if as_json:
        click.echo(strict_json(report))
        sys.exit(1 if verify and report["corrupt_rows"] else 0)
    say(
        (
            f"{report['store']}  state: {report['state']}  rows: {report['rows']}  shape: {report['shape']}  dtype: {report['dtype']}",
            "bold",
        )
    )
    statuses = (*STATUSES, PENDING)
    table = Table(title="tracks per genre and status")
    table.add_column("genre")
    for s in statuses:
        table.add_column(s, justify="right")
    for genre, counts in report["by_genre"].items():
        table.add_row(_cell(genre), *[_cell(counts.get(s, 0) or "") for s in statuses])
    table.add_row(Text("all", style="bold"), *[Text(str(report["counts"][s]), style="bold") for s in statuses])
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
                t.add_row(_cell(p[TRACK_ID]), _cell(p[STATUS]), _cell(p["reason"]))
                shown[p[STATUS]] += 1
            else:
                hidden[p[STATUS]] += 1
        out.print(t)
        for status, n in hidden.items():
            say(f"... and {n} more {status} (melset info --json lists every one)")
    if report["unlisted_count"]:
        say(
            f"unlisted: {report['unlisted_count']} audio file(s) on disk that no row lists: {', '.join(report['unlisted_files'][:20])}"
        )
    if report["no_genre"]:
        say(f"no genre: {report['no_genre']} track(s) without a label ({report['labels']}; all-zero label rows)")
    kind = report["labels"]
    say(f"classes ({kind}{', multi-label' if kind != GENRE_TOP else ''}): " + ", ".join(report["classes"]))
    say("recipe: " + ", ".join(f"{k}={v}" for k, v in report["recipe"].items()))
    say("source: " + ", ".join(f"{k}={v}" for k, v in report["source"].items()))
    if verify:
        bad = report["corrupt_rows"]
        say(f"verify: {'all rows match their checksums' if not bad else f'{len(bad)} corrupt row(s): {bad[:20]}'}")
        if bad:
            say(
                ("melset: damaged:", "bold red"),
                f" {len(bad)} row(s) of {report['store']} do not match their checksums; "
                f"run `melset repair {report['store']}`, then the same `melset extract` command again",
                console=err,
            )
            sys.exit(1)


@main.command("recipe")
@click.argument("source", required=False, type=click.Path())
@click.option("--toml", "as_toml", is_flag=True, help='TOML instead of JSON (fmax / top_db None written as "none").')
def recipe_command(source, as_toml):
    """Print a recipe ready to edit and pass to `extract --recipe`: the default one, or SOURCE's.

    SOURCE is a store (the recipe it was made with), a training run (the recipe its model
    expects) or a recipe file (checked and completed with the defaults).
    """
    try:
        recipe = Recipe() if source is None else _recipe_of(source)
    except MelsetError as exc:
        _fail(str(exc))
    click.echo(recipe.to_toml() if as_toml else recipe.to_json(), nl=not as_toml)


def _recipe_of(source: str) -> Recipe:
    from melset.errors import RecipeError
    from melset.store import Store

    if not os.path.isdir(source):
        return recipe_from_options(source)
    if os.path.exists(os.path.join(source, MANIFEST)):
        return _store_recipe(Store(source))
    where = os.path.join(source, "config.json")
    if not os.path.exists(where):
        raise RecipeError(f"{source} is neither a store (no {MANIFEST}) nor a training run (no config.json)")
    try:
        with open(where, encoding="utf-8") as f:
            data = json.load(f)["recipe"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecipeError(f"{where} holds no readable recipe ({exc}); is {source} a training run?") from None
    return _recorded_recipe(where, data)


def _store_recipe(store) -> Recipe:
    """The recipe a store's manifest records, checked as any recipe and against the stored shape."""
    from melset.errors import StoreError

    where = os.path.join(store.root, MANIFEST)
    identity = store.manifest.get("identity")
    recipe = _recorded_recipe(where, identity.get("recipe") if isinstance(identity, dict) else None)
    if tuple(store.mels.shape[1:]) != recipe.shape:
        raise StoreError(
            f"{where} is damaged: its recipe makes {recipe.shape} matrices, {MELS} holds {store.mels.shape[1:]}"
        )
    return recipe


def _recorded_recipe(where: str, data) -> Recipe:
    from melset.errors import RecipeError

    if not isinstance(data, dict):
        raise RecipeError(f"{where} records no recipe; it was not written by melset, or is damaged")
    try:
        return Recipe.from_dict(data)
    except RecipeError as exc:
        raise RecipeError(f"{where}: the recorded recipe is not valid: {exc}") from None


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
    except (KeyError, ValueError):
        raise UsageError(
            f"there is no track {track!r} in {store.root}; `melset info {store.root}` lists them"
        ) from None
    rec = store.tracks.iloc[row]
    if rec[STATUS] != OK:
        raise UsageError(f"track {track} has no spectrogram: {rec[STATUS]} ({rec[ERROR]})")
    matrix = store.row(row)  # checked against its checksum: a damaged row is refused in words
    r = _store_recipe(store)
    genre = rec[GENRE_TOP] if isinstance(rec[GENRE_TOP], str) else "no genre"
    try:
        spectrogram_png(
            matrix,
            png,
            r.sample_rate,
            r.hop_length,
            r.fmin,
            r.fmax,
            title=f"track {rec[TRACK_ID]} ({genre})",
            scaled=r.scaling == SCALINGS[0],
        )
    except OSError as exc:
        raise UsageError(f"cannot write {png}: {exc.strerror or exc}") from None
    say(f"wrote {png}")


@main.command()
@click.argument("store_dir", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["seed-pickles", "hf", "webdataset"]),
    required=True,
    help="seed-pickles: the reference notebook's own pickles; hf: a Hugging Face DatasetDict (melset[hf]); "
    "webdataset: tar shards for the webdataset library.",
)
@click.option("--to", "to", type=click.Path(), required=True, help="Output folder (new, empty, or an earlier export).")
@click.option(
    "--shard-size",
    type=int,
    default=None,
    help="webdataset: samples per tar shard (default 1000).",
)
def export(store_dir, fmt, to, shard_size):
    """Write a store in another format: the notebook's pickles, a Hugging Face dataset, WebDataset shards."""
    from melset import export as exports

    store = _open(store_dir)
    if shard_size is not None and fmt != exports.WEBDATASET:
        _fail(f"--shard-size applies to --format webdataset only, not {fmt}")
    if store.manifest.get("state") != "complete":
        say(("warning", "yellow"), ": the store is incomplete; exporting the rows finished so far", console=err)
    try:
        if fmt == exports.SEED_PICKLES:
            n = exports.seed_pickles(store, to)
            say(f"wrote {n['pickles']} spectrogram pickles, {n['labels']} labels and {n['classes']} classes to {to}")
            return
        if fmt == exports.HF:
            counts = exports.hf(store, to)
            how = f"datasets.load_from_disk({to!r})"
        else:
            size = exports.DEFAULT_SHARD_SIZE if shard_size is None else shard_size
            counts = exports.webdataset(store, to, size)
            how = f"webdataset shards {to}/<split>-NNNNNN.tar"
    except MelsetError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write the {fmt} export to {to}: {exc.strerror or exc}")
    parts = ", ".join(f"{name} {n}" for name, n in counts.items())
    say(f"wrote {sum(counts.values())} ok rows ({parts}) as {how}")


@main.command()
@click.argument("path", type=click.Path())
@click.option(
    "--html", "html_file", type=click.Path(), required=True, help="The page to write (one self-contained file)."
)
@click.option(
    "--examples",
    type=click.IntRange(min=1, max=100),
    default=3,
    show_default=True,
    help="Store: example spectrograms per genre.",
)
@click.option(
    "--store", "store_dir", type=click.Path(), default=None, help="Run: the store to score on (default: the run's own)."
)
@click.option(
    "--split", type=click.Choice([*SPLITS, "all"]), default=TEST, show_default=True, help="Run: the split to score."
)
@click.option("--device", type=_DEVICE, default="cpu", show_default=True)
def report(path, html_file, examples, store_dir, split, device):
    """An HTML page about a store (counts, failures, recipe, durations, spectrograms) or a training run (curves, scores)."""
    from melset import report as reports

    try:
        kind = reports.kind_of(path)
        if kind == "store":
            if store_dir is not None:
                _fail("--store applies to a run's report, not a store's")
            text = reports.store_page(_open(path), examples)
        else:
            text, why_not = reports.run_page(path, store_dir, None if split == "all" else split, device)
            if why_not:
                say(("warning", "yellow"), f": the page has no scores: {why_not}", console=err)
        written = reports.write_html(html_file, text)
    except MelsetError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write {html_file}: {exc.strerror or exc}")
    say(f"wrote {written}")


@main.command()
@click.argument("store_dir", type=click.Path())
def repair(store_dir):
    """Mark a store's damaged rows (checksum mismatch, bad journal lines) for re-extraction.

    The next `melset extract` run with the same arguments rebuilds exactly those rows.
    """
    from melset.store import repair as run_repair

    try:
        result = run_repair(store_dir)
    except MelsetError as exc:
        _fail(str(exc))
    if not result.changed:
        say(f"{result.root}: no damage found; nothing to repair")
        return
    found = []
    if result.journal_missing:
        found.append("journal.jsonl was missing (every row is done again)")
    if result.resized:
        found.append("mels.npy had the wrong size and was set back to its header's")
    if result.dropped_lines:
        lines = ", ".join(map(str, result.dropped_lines[:10]))
        found.append(f"{len(result.dropped_lines)} bad journal line(s) dropped (line {lines})")
    if result.damaged:
        rows = ", ".join(map(str, result.damaged[:20])) + (" ..." if len(result.damaged) > 20 else "")
        found.append(f"{len(result.damaged)} damaged row(s) marked for re-extraction: {rows}")
    say(f"{result.root}: " + "; ".join(found))
    say("run the same `melset extract` command again to rebuild them")


_TRAIN = TrainConfig()  # the defaults each train option shows


def _needs_torch() -> None:
    try:
        import torch  # noqa: F401
        import sklearn  # noqa: F401  (after torch: scikit-learn looks for torch when it is imported)
    except ImportError as exc:
        raise MissingDependency(
            f"this command needs PyTorch and scikit-learn ({exc.name} is missing): pip install 'melset[train]'"
        ) from None


@main.command()
@click.argument("store_dir", type=click.Path())
@click.option("--run", "run_dir", type=click.Path(), required=True, help="Folder for the run (model, metrics, curves).")
@click.option("--epochs", type=int, default=_TRAIN.epochs, show_default=True, help="At least 1.")
@click.option("--batch-size", type=int, default=_TRAIN.batch_size, show_default=True, help="At least 1.")
@click.option("--lr", type=float, default=_TRAIN.lr, show_default=True, help="AdamW learning rate (> 0).")
@click.option(
    "--patience",
    type=int,
    default=_TRAIN.patience,
    show_default=True,
    help="Stop after this many epochs without a better validation score (0 or more).",
)
@click.option("--device", type=_DEVICE, default=_TRAIN.device, show_default=True)
@click.option("--seed", type=int, default=_TRAIN.seed, show_default=True)
@click.option("--workers", type=int, default=_TRAIN.num_workers, show_default=True, help="DataLoader worker processes.")
@click.option(
    "--model",
    type=click.Choice(MODELS),
    default=_TRAIN.model,
    show_default=True,
    help="compact: the CNN with a frequency-aware head; baseline: the original MelCNN.",
)
@click.option(
    "--crop",
    type=int,
    default=_TRAIN.crop,
    show_default=True,
    help="Frames per random training crop (scores average over crops covering the window); 0 = whole window.",
)
@click.option(
    "--freq-mask",
    type=int,
    default=_TRAIN.freq_mask,
    show_default=True,
    help="SpecAugment: mels per masked band (0 = off).",
)
@click.option(
    "--time-mask",
    type=int,
    default=_TRAIN.time_mask,
    show_default=True,
    help="SpecAugment: frames per masked span (0 = off).",
)
@click.option("--mixup", type=float, default=_TRAIN.mixup, show_default=True, help="Mixup Beta alpha (0 = off).")
@click.option("--label-smoothing", type=float, default=_TRAIN.label_smoothing, show_default=True)
@click.option("--weight-decay", type=float, default=_TRAIN.weight_decay, show_default=True, help="AdamW weight decay.")
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default=_TRAIN.schedule,
    show_default=True,
    help="Learning rate: cosine decay after a 10% warm-up, or constant.",
)
@click.option("--overwrite", is_flag=True, help="Replace the run already in --run.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
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
    overwrite,
    quiet,
):
    """Train a genre classifier on a store (training split; best epoch on validation)."""
    _needs_torch()
    from melset.train import check_config
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
    check_config(cfg)
    store = _open(store_dir)
    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}", markup=False),
        TimeElapsedColumn(),
    )
    # started at the first epoch, so that a refusal or a warning about the data prints on its own
    progress = Progress(*columns, console=err, disable=quiet)
    task = progress.add_task("", total=epochs)

    def on_epoch(row: dict) -> None:
        progress.start()
        val = f"val {row['val_accuracy']:.2f}" if row["val_accuracy"] is not None else "no validation rows"
        progress.update(
            task, advance=1, description=f"loss {row['train_loss']:.3f} acc {row['train_accuracy']:.2f} {val}"
        )

    def on_warning(message: str) -> None:
        say(("warning", "yellow"), f": {message}", console=err)

    try:
        metrics = run_train(store.root, run_dir, cfg, on_epoch, overwrite=overwrite, on_warning=on_warning)
    finally:
        progress.stop()
    best = metrics["epochs"][metrics["best_epoch"] - 1]
    val = f", validation accuracy {best['val_accuracy']:.3f}" if best["val_accuracy"] is not None else ""
    say(
        f"{run_dir}: {len(metrics['epochs'])} epochs{' (stopped early)' if metrics['stopped_early'] else ''}; "
        f"best epoch {metrics['best_epoch']}: training accuracy {best['train_accuracy']:.3f}{val}"
    )


def _score(x) -> str:
    return "-" if x is None else f"{x:.3f}"


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--store", "store_dir", type=click.Path(), required=True, help="A store made with the run's recipe.")
@click.option("--split", type=click.Choice([*SPLITS, "all"]), default=TEST, show_default=True)
@click.option("--device", type=_DEVICE, default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (strict JSON).")
def evaluate(run_dir, store_dir, split, device, as_json):
    """Accuracy, macro-F1 and per-genre scores of a run on a store's split; draws the confusion matrix."""
    _needs_torch()
    from melset.train import evaluate as run_evaluate
    from melset.train import pick_device

    pick_device(device)
    _open(store_dir)
    try:
        report = run_evaluate(run_dir, store_dir, None if split == "all" else split, device)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(strict_json(report))
        return
    if report.get("multi_label"):
        _print_multi_label(report, split)
        return
    say(
        (f"{split}", "bold"),
        f": {report['n']} tracks, accuracy {_score(report['accuracy'])}, macro-F1 {_score(report['macro_f1'])}",
    )
    left = report["left_out"]
    if left["tracks"]:
        say(
            ("note", "yellow"),
            f": {left['tracks']} track(s) left out: their genres are not the run's ({', '.join(left['genres'])})",
        )
    t = Table()
    for col in ("genre", "precision", "recall", "f1", "support"):
        t.add_column(col, justify="left" if col == "genre" else "right")
    for genre, m in report["per_class"].items():
        t.add_row(_cell(genre), *[_cell(_score(m[k])) for k in ("precision", "recall", "f1")], _cell(m["support"]))
    out.print(t)
    say(f"confusion matrix: {report['confusion_png']}")


def _print_multi_label(report: dict, split: str) -> None:
    def f(x):
        return "-" if x is None else f"{x:.3f}"

    say(
        (split, "bold"),
        f": {report['n']} tracks, multi-label: ROC-AUC macro {f(report['roc_auc_macro'])} "
        f"micro {f(report['roc_auc_micro'])}, average precision macro {f(report['average_precision_macro'])} "
        f"micro {f(report['average_precision_micro'])}",
    )
    t = Table()
    for col in ("genre", "average precision", "ROC-AUC", "support"):
        t.add_column(col, justify="left" if col == "genre" else "right")
    for genre, m in report["per_class"].items():
        t.add_row(_cell(genre), _cell(f(m["average_precision"])), _cell(f(m["roc_auc"])), _cell(m["support"]))
    out.print(t)
    say("- : the split has no track of that genre (or only such tracks), so the score is undefined")


@main.command()
@click.argument("run_dir", type=click.Path())
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option(
    "--whole-track", is_flag=True, help="Average over consecutive windows of the recipe's frames, not just the first."
)
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="Genres listed per file.")
@click.option("--device", type=_DEVICE, default="auto", show_default=True)
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Multi-label runs: list every genre whose sigmoid output reaches it.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (strict JSON).")
def predict(run_dir, files, whole_track, top, device, threshold, as_json):
    """Top genres for audio files (mp3, wav, flac, ogg, ...), with the run's own recipe."""
    _needs_torch()
    from melset.train import pick_device
    from melset.train import predict as run_predict

    pick_device(device)
    try:
        results = run_predict(
            run_dir, list(files), whole_track=whole_track, top=top, device=device, threshold=threshold
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if as_json:
        click.echo(strict_json(results))
    else:
        for r in results:
            if "error" in r:
                say(f"{r['file']}: ", ("cannot predict", "red"), f": {r['error']}")
            else:
                guesses = ", ".join(f"{g['genre']} {g['probability']:.2f}" for g in r["top"])
                if "genres" in r:  # multi-label: every genre at or above the threshold
                    above = ", ".join(f"{g['genre']} {g['probability']:.2f}" for g in r["genres"])
                    guesses = above or f"no genre reaches {threshold:g} (highest: {guesses})"
                say(f"{r['file']}: {guesses}" + (f"  ({r['windows']} windows)" if whole_track else ""))
    sys.exit(1 if any("error" in r for r in results) else 0)


if __name__ == "__main__":
    main()
