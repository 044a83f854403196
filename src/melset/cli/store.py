"""The commands that read or mend a store: info, show, recipe (of a store, a run or a file), repair."""

from __future__ import annotations

import os
import sys
from collections import Counter

import click
from rich.table import Table
from rich.text import Text

from melset.cli.base import _cell, _fail, _open, err, other_subsets_note, out, say
from melset.errors import MelsetError, UsageError
from melset.recipe import SCALINGS, Recipe, recipe_from_options
from melset.system import strict_json
from melset.vocab import (
    ERROR,
    FAILED,
    GENRE_TOP,
    MANIFEST,
    MELS,
    OK,
    PENDING,
    RUN_CONFIG,
    STATUS,
    STATUSES,
    TRACK_ID,
    TRACKS,
)


@click.command()
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
    others = other_subsets_note(report["source"])
    if others:
        say(f"other subsets: {others}")
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
                f" {len(bad)} row(s) of {report['store']} are damaged (their bytes do not match their checksums, or hold values that are not finite); "
                f"run `melset repair {report['store']}`, then the same `melset extract` command again",
                console=err,
            )
            sys.exit(1)


@click.command("recipe")
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
    from melset.runs import run_recipe
    from melset.store import Store

    if not os.path.isdir(source):
        return recipe_from_options(source)
    if os.path.exists(os.path.join(source, MANIFEST)):
        return _store_recipe(Store(source))
    if not os.path.exists(os.path.join(source, RUN_CONFIG)):
        raise RecipeError(f"{source} is neither a store (no {MANIFEST}) nor a training run (no {RUN_CONFIG})")
    return run_recipe(source)


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


@click.command()
@click.argument("store_dir", type=click.Path())
@click.option("--track", required=True, help="Track id (FMA: the number, e.g. 2 or 000002).")
@click.option("--png", "png", type=click.Path(), required=True, help="Where to write the picture.")
def show(store_dir, track, png):
    """Draw one stored spectrogram with time (s) and frequency (Hz) axes."""
    from melset.plots import picture_target, spectrogram_png

    store = _open(store_dir)
    picture_target(png, "--png", runs=True)  # before any work: never inside a store or a run, never a foreign file
    try:
        row = store.row_of(track)
    except (KeyError, ValueError):
        raise UsageError(f"there is no track {track!r} in {store.root}; {_close_ids(store, track)}") from None
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


def _close_ids(store, given: str) -> str:
    """What to try instead of a track id the store does not hold: the ids it was probably
    meant for (the same file name without its folder, FMA's number without its zeros or
    folder, close spellings), else a few of the store's ids and where all of them are."""
    import difflib

    ids = [str(t) for t in store.tracks[TRACK_ID].tolist()]
    name = given.replace("\\", "/").rsplit("/", 1)[-1]
    stem = os.path.splitext(name)[0]
    numeric = store.tracks[TRACK_ID].dtype.kind in "iu"
    key = str(int(stem)) if numeric and stem.isascii() and stem.isdigit() else None
    if numeric:
        hits = [t for t in ids if t == key]
    else:  # a folder layout's id is its path below --audio: the file name alone, with or without extension
        bases = [(t, t.rsplit("/", 1)[-1]) for t in ids]
        hits = [t for t, b in bases if name and (name == b or os.path.splitext(b)[0] in (name, stem))]
    hits = hits or difflib.get_close_matches(given, ids, n=3, cutoff=0.75)
    if hits:
        return "did you mean " + " or ".join(repr(h) for h in hits[:3]) + "?"
    every = f"every id is in the {TRACK_ID} column of {os.path.join(store.root, TRACKS)}"
    return f"its {len(ids)} track ids include {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}; {every}"


@click.command()
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
