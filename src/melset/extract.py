"""The extract job: a catalog and a recipe in, a finished (or resumable) store out.

Plans which rows still need work, feeds them to an engine, writes each result into the
store as it arrives and commits in small batches, then writes the table and manifest.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


from melset import system
from melset.catalog import Catalog
from melset.catalog.labels import label_matrix
from melset.engines import Engine
from melset.errors import StoreError, UsageError
from melset.recipe import FLAGS, Recipe
from melset.store import DISK_FULL, StoreWriter, disk_full_message, now_iso, read_manifest
from melset.store.format import CREATING
from melset.vocab import CATALOG_COLUMNS, FAILED, GENRE_TOP, MANIFEST, MISSING, OK, PATH, SUBSET, TRACK_ID

COMMIT_EVERY_S = 0.5
COMMIT_EVERY_ROWS = 256
MAX_LISTED_UNLISTED = 1000


@dataclass
class Summary:
    """What one extract run did: counts per status, the rows that are not ok and why, timings."""

    out: str
    counts: dict[str, int]
    failures: list[tuple[Any, str, str]]  # (track_id, status, reason) for every row not ok
    unlisted: list[str]
    no_genre: int
    processed: int  # rows computed by this run
    already_done: int  # rows found finished in the store
    elapsed_s: float  # the whole call, opening and finishing the store included
    state: str
    classes: list[str] = field(default_factory=list)
    healed: list[str] = field(default_factory=list)  # damage the resume found in the store and undid
    source: dict = field(default_factory=dict)  # the layout read, why, and the input paths
    work_s: float = 0.0  # from the first task handed out to the last row processed

    @property
    def rate(self) -> float:
        """Rows this run processed per second of work: what the progress bar showed last."""
        return files_per_second(self.processed, self.work_s)

    @property
    def exit_code(self) -> int:
        return 0 if self.counts.get(OK, 0) > 0 else 1


def files_per_second(processed: int, seconds: float) -> float:
    """Rows processed per second: the rate the progress display and the summary both show.

    Counted from the moment the first task is handed out (after the rows finished earlier
    and the missing ones are set aside), over the rows this run processed: the average of
    the whole run so far, so it never spikes on a first result and ends where the summary does.
    """
    return processed / seconds if seconds > 0 and processed > 0 else 0.0


def _check_label_kind(out: str | os.PathLike, kind: str, overwrite: bool) -> None:
    """Refuse, in words, to resume a store made with another --labels."""
    if not os.path.exists(os.path.join(out, MANIFEST)):
        return  # no store there yet
    try:
        stored = read_manifest(os.fspath(out)).get("labels", GENRE_TOP)
    except StoreError:
        return  # a damaged store: StoreWriter.open says what to do with it
    if stored != kind and not overwrite:
        raise StoreError(
            f"{os.path.abspath(out)} holds a store labelled with --labels {stored}; run with --labels {stored} to resume it, "
            "--overwrite to replace it, or choose another --out"
        )


def _check_same_parameters(out: str | os.PathLike, identity: dict, source: dict, overwrite: bool) -> None:
    """Refuse to resume a store made with other parameters, naming the options whose values changed."""
    if overwrite or not os.path.exists(os.path.join(out, MANIFEST)):
        return
    try:
        old = read_manifest(os.fspath(out))
    except StoreError:
        return  # a damaged store: StoreWriter.open says what to do with it
    if old.get("state") == CREATING or old.get("identity") == identity:
        return  # recreated, or resumed
    made, asked = _changed_options(old, identity, source)
    where = os.path.abspath(out)
    if made:
        given = " ".join(m for m in made if m.startswith("-"))
        left_out = " ".join(m[len("no ") :] for m in made if m.startswith("no "))
        again = " ".join(filter(None, [given and f"with {given}", left_out and f"without {left_out}"]))
        raise StoreError(
            f"{where} holds a store made with {' '.join(made)}; this run asks {' '.join(asked)}: run {again} to "
            "resume it, --overwrite to replace it, or choose another --out"
        )
    was = old.get("identity", {})
    stored, asked_rows = was.get("rows"), identity.get("rows")
    if stored == asked_rows and was.get("tracks_sha256") == identity.get("tracks_sha256"):
        changed = (
            f"the same options now give its {stored} tracks other genre lists (tracks.csv or genres.csv changed since)"
        )
    else:
        changed = (
            f"the same options now select {asked_rows if asked_rows != stored else 'other'} tracks "
            "(the metadata or the audio folder changed since)"
        )
    raise StoreError(
        f"{where} holds a store of {stored} tracks, and {changed}: --overwrite replaces it, or choose another --out"
    )


def objects_digest(catalog: Catalog) -> str:
    """A fingerprint of what each selected file was when listed (size, and ETag, CRC-32 or
    modification time): a store resumed over changed objects would mix two versions."""
    h = hashlib.sha256()
    files = catalog.files or {}
    for path in catalog.table[PATH].tolist():
        rel = catalog.relative(path)
        h.update(repr((rel, files.get(rel))).encode())
    return h.hexdigest()


def _check_same_objects(out: str | os.PathLike, source: dict, overwrite: bool) -> None:
    """Refuse to resume a store whose archive or objects changed since it was made (their size,
    ETag, CRC-32 or modification time), naming the collection."""
    if overwrite or "objects_sha256" not in source or not os.path.exists(os.path.join(out, MANIFEST)):
        return
    try:
        old = read_manifest(os.fspath(out))
    except StoreError:
        return
    was = (old.get("source") or {}).get("objects_sha256")
    if old.get("state") != CREATING and was and was != source["objects_sha256"]:
        raise StoreError(
            f"{os.path.abspath(out)} was made from {old['source'].get('audio')}, and its files changed since "
            f"(size, ETag or modification time) in {source.get('audio')}: resuming would mix two versions; "
            "--overwrite recomputes the store, or choose another --out"
        )


def _changed_options(old: dict, identity: dict, source: dict) -> tuple[list[str], list[str]]:
    """The options (and their values) that made the stored identity and those this run asks, where they differ."""
    was, made, asked = old.get("identity", {}), [], []

    def differ(flag: str, before: Any, after: Any) -> None:
        made.append(f"no {flag}" if before is None and flag == "--limit" else f"{flag} {_option_value(before)}")
        asked.append(f"no {flag}" if after is None and flag == "--limit" else f"{flag} {_option_value(after)}")

    stored_recipe, recipe = was.get("recipe") or {}, identity.get("recipe") or {}
    for key in dict.fromkeys([*recipe, *stored_recipe]):
        if stored_recipe.get(key) != recipe.get(key):
            differ(FLAGS.get(key, f"recipe {key}"), stored_recipe.get(key), recipe.get(key))
    if was.get("labels", GENRE_TOP) != identity.get("labels", GENRE_TOP):
        differ("--labels", was.get("labels", GENRE_TOP), identity.get("labels", GENRE_TOP))
    if was.get("rows") != identity.get("rows") or was.get("tracks_sha256") != identity.get("tracks_sha256"):
        stored_source = old.get("source") or {}
        for key, flag in (("layout", "--layout"), (SUBSET, "--subset"), ("limit", "--limit")):
            # --limit is recorded only when given; the others only where a layout has them
            known = key == "limit" and bool(stored_source) or key in stored_source and key in source
            if known and stored_source.get(key) != source.get(key):
                differ(flag, stored_source.get(key), source.get(key))
        for key, flag in (("tracks", "--tracks"), ("manifest", "--manifest"), ("audio", "--audio")):
            if key in stored_source and key in source and stored_source[key] != source[key]:
                differ(flag, stored_source[key], source[key])
        if made:
            made.append(f"({was.get('rows')} tracks)")
            asked.append(f"({identity.get('rows')} tracks)")
    return made, asked


def _option_value(value: Any) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def tracks_digest(catalog: Catalog) -> str:
    """A fingerprint of the selected rows, so a store is never resumed with another selection.

    A track counts by its path relative to the collection root (with track_id, genre, subset
    and split), so a collection moved or mounted elsewhere resumes.
    """
    h = hashlib.sha256()
    for rec in catalog.table.itertuples(index=False):
        values = rec._asdict()
        values[PATH] = catalog.relative(values[PATH]) or values[PATH]
        h.update(repr(tuple(values[c] for c in CATALOG_COLUMNS)).encode())
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = system.versions(
        "melset",
        "numpy",
        "scipy",
        "ducc0",  # listed when installed: then it computes the FFTs, not scipy
        "soundfile",
        "libsndfile",
        "soxr",
        "pandas",
        "pyarrow",
        "pebble",
        "av",
        "ray",
        "librosa",
    )
    out["librosa_used"] = "no: melset's own numpy port, checked against librosa by the tests"
    return out


def check_options(
    *,
    audio: str | os.PathLike,
    tracks: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    layout: str | None = None,
    subset: str = "small",
    workers: int | None = None,
    timeout: float = 120.0,
    limit: int | None = None,
    decoder: str = "auto",
    engine: str = "local",
    ray_address: str | None = None,
) -> str:
    """Check every option of an extract run before any work starts; return the layout to read.

    Raises UsageError (a value that cannot work), MetadataError (an input path that does not
    exist) or MissingDependency (an optional package the options need), each one sentence
    naming the option.
    """
    from melset.catalog import check_limit, choose_layout
    from melset.catalog.table import MAX_TABLE_BYTES
    from melset.system import check_input_file
    from melset.catalog.fma import SUBSETS
    from melset.engines.options import check_engine_options
    from melset.errors import MetadataError, MissingDependency, UsageError

    check_engine_options(engine, workers, timeout, ray_address)
    check_limit(limit)
    if subset not in SUBSETS:
        raise UsageError(f"--subset must be one of {', '.join(SUBSETS)}, not {subset!r}")
    from melset.location import is_archive_name, is_url
    from melset.location.archive import is_zip

    for option, path, kind in (
        ("--audio", audio, "folder"),
        ("--tracks", tracks, "file"),
        ("--manifest", manifest, "file"),
    ):
        if path is None or is_url(os.fspath(path)) or is_archive_name(os.fspath(path)):
            continue  # a URL or an archive: open_catalog looks (it needs the storage options)
        if kind == "file":
            check_input_file(path, option, MAX_TABLE_BYTES, MetadataError)
        elif not os.path.exists(path):
            raise MetadataError(f"{option} {path}: no such {kind}")
        elif not os.path.isdir(path) and not (os.path.isfile(path) and is_zip(os.fspath(path))):
            raise MetadataError(f"{option} {path}: not a folder (nor a zip archive)")
    if decoder == "av":
        try:
            import av  # noqa: F401
        except ImportError:
            raise MissingDependency("--decoder av needs PyAV (FFmpeg): pip install 'melset[av]'") from None
    return choose_layout(layout, tracks, manifest, audio)


def extract(
    catalog: Catalog,
    recipe: Recipe,
    out: str | os.PathLike,
    *,
    engine: Engine | None = None,
    overwrite: bool = False,
    retry_failed: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    labels: str | None = None,
) -> Summary:
    """Run the recipe over the catalog into the store at `out`; resume a store made the same way.

    Call it under ``if __name__ == "__main__":``, as any code that starts worker processes.

    Parameters
    ----------
    catalog : Catalog
        The tracks, from `melset.open_catalog`.
    recipe : Recipe
        What to compute for each track.
    out : path
        The store folder: created, or resumed when it was made with the same recipe and tracks.
    engine : Engine, optional
        A started engine (``with make_engine("local") as e: extract(..., engine=e)``); None
        runs a local process pool over all cores.
    overwrite : bool
        Replace a store made with other parameters.
    retry_failed : bool
        Also compute again the rows that failed in an earlier run.
    on_progress : callable, optional
        ``on_progress(done, total)``: first once the store is open and the rows to do are
        planned (`done` counts the rows finished earlier and the files found missing), then
        as each row finishes, and again (same values) every half second or so while no row
        finishes, so that a display can keep time. The rate `Summary.rate` reports is
        `files_per_second` of the rows processed since that first call.
    labels : {"genre_top", "genres", "genres_all"}, optional
        What labels.npy encodes: one-hot genre_top, or (FMA only) multi-hot rows of
        track.genres or track.genres_all, titled from genres.csv. Default: what the catalog
        was opened for (``open_catalog(..., labels=...)``); another kind is refused.

    Returns
    -------
    Summary
        Counts per status, every row that is not ok and why, timings.

    Raises
    ------
    MelsetError
        The store cannot be used as asked (another recipe, in use, a full disk, ...).
    """
    if engine is None:
        from melset.engines.local import LocalEngine

        with LocalEngine() as local:
            return extract(
                catalog,
                recipe,
                out,
                engine=local,
                overwrite=overwrite,
                retry_failed=retry_failed,
                on_progress=on_progress,
                labels=labels,
            )
    labels = catalog.labels if labels is None else labels
    if labels != catalog.labels:
        raise UsageError(
            f"the catalog was opened for labels {catalog.labels}, not {labels}; "
            f"open it with open_catalog(..., labels={labels!r})"
        )
    started = time.perf_counter()
    started_at = now_iso()
    table = catalog.table
    label_rows, classes = label_matrix(catalog)
    identity = {"recipe": recipe.to_dict(), "rows": len(table), "tracks_sha256": tracks_digest(catalog)}
    if labels != GENRE_TOP:
        # only multi-label stores carry these keys, so stores made before them still resume
        identity["labels"] = labels
        identity["labels_sha256"] = hashlib.sha256(label_rows.tobytes() + repr(classes).encode()).hexdigest()
    extra = {
        "source": catalog.source,
        "unlisted_files": catalog.unlisted[:MAX_LISTED_UNLISTED],
        "unlisted_count": len(catalog.unlisted),
        "no_genre": int((~label_rows.any(axis=1)).sum()) if len(classes) else len(table),
        "labels": labels,
    }
    if catalog.files is not None:  # an archive or a URL: what each object was, to notice a change on resume
        catalog.source["objects_sha256"] = objects_digest(catalog)
    _check_label_kind(out, labels, overwrite)
    _check_same_parameters(out, identity, catalog.source, overwrite)
    _check_same_objects(out, catalog.source, overwrite)
    with StoreWriter.open(
        out, identity, table, label_rows, classes, recipe.shape, recipe.dtype, overwrite=overwrite, extra=extra
    ) as store:
        processed, total, already, complete = 0, len(table), 0, False
        last_commit = time.monotonic()
        try:
            tasks, already = _plan(store, catalog, retry_failed)
            skipped = total - len(tasks)  # finished earlier, or recorded missing just now
            work_started = last_result = time.monotonic()
            if on_progress:
                on_progress(skipped, total)

            def commit_if_due() -> None:
                nonlocal last_commit
                if store.uncommitted and (
                    time.monotonic() - last_commit > COMMIT_EVERY_S or store.uncommitted >= COMMIT_EVERY_ROWS
                ):
                    store.commit()
                    last_commit = time.monotonic()

            def idle() -> None:
                commit_if_due()
                if on_progress:
                    on_progress(skipped + processed, total)

            # results commit in batches; while no result comes (a slow file), the timer commits
            for row, result, crc in engine.run(tasks, recipe, store.sink, on_idle=idle):
                if crc is None:  # the engine sent the matrix back
                    store.write(row, result.status, result.error, result.duration_s, result.mel, result.decoder)
                else:  # a worker wrote it into mels.npy already
                    store.record(row, result.status, result.error, result.duration_s, crc, result.decoder)
                processed += 1
                commit_if_due()
                last_result = time.monotonic()  # taken as on_progress sees it: the bar ends on the summary's rate
                if on_progress:
                    on_progress(skipped + processed, total)
            complete = True
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise StoreError(disk_full_message(store.root, exc)) from exc
            raise
        finally:
            run = {
                "started": started_at,
                "finished": now_iso(),
                "engine": engine.name,
                "workers": engine.workers,
                "processed": processed,
                "seconds": round(time.perf_counter() - started, 3),
                "completed": complete,
            }
            if store.notes:
                run["healed"] = store.notes
            runs = [*store.manifest.get("runs", []), run]
            try:
                manifest = store.finalize(
                    complete, {"versions": versions(), "runs": runs, "started": started_at, "finished": run["finished"]}
                )
            except OSError as exc:
                # the journal holds every committed row; the old tables stay (atomic renames)
                if exc.errno in DISK_FULL:
                    raise StoreError(disk_full_message(store.root, exc)) from exc
                raise
        failures = _failures(store, table)
        notes = list(store.notes)
    return Summary(
        out=os.path.abspath(os.fspath(out)),
        counts=dict(manifest["counts"]),
        failures=failures,
        unlisted=catalog.unlisted,
        no_genre=extra["no_genre"],
        processed=processed,
        already_done=already,
        elapsed_s=time.perf_counter() - started,
        state=manifest["state"],
        classes=classes,
        healed=notes,
        source=dict(catalog.source),
        work_s=last_result - work_started,
    )


def _plan(store: StoreWriter, catalog: Catalog, retry_failed: bool) -> tuple[list[tuple[int, Any]], int]:
    """Rows that still need work, and how many rows earlier runs finished.

    A row recorded missing is looked at again (the file may have arrived since); with
    retry_failed, failed rows are too. Files absent now (on disk, or from an archive's or a
    URL's listing) are recorded missing at once. A task is (row, what the worker reads:
    a path, or a `melset.location.Fetch`).
    """
    tasks, already = [], 0
    for row, path in enumerate(catalog.table[PATH].tolist()):
        rec = store.done(row)
        redo = rec is None or rec.status == MISSING or (retry_failed and rec.status == FAILED)
        if not redo:
            already += 1
        elif catalog.present(path) is False:
            if rec is None:
                store.write(row, MISSING, f"file not found: {path}", math.nan, None)
            else:
                already += 1
        else:
            tasks.append((row, catalog.task(path)))
    store.commit()
    return tasks, already


def _failures(store: StoreWriter, table) -> list[tuple[Any, str, str]]:
    ids = table[TRACK_ID].tolist()
    return [(ids[row], r.status, r.error) for row, r in sorted(store.records.items()) if r.status != OK]


def reasons(summary: Summary) -> list[tuple[str, int, Any, str]]:
    """Failed rows grouped by the kind of reason (its words before the first colon), most
    common first: (kind, count, an example track_id, that track's full reason)."""
    counts: Counter = Counter()
    example: dict[str, tuple[Any, str]] = {}
    for track_id, status, reason in summary.failures:
        if status == FAILED:
            kind = reason.split(":")[0]
            counts[kind] += 1
            example.setdefault(kind, (track_id, reason))
    return [(kind, n, *example[kind]) for kind, n in counts.most_common()]
