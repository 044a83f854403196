"""Exports of a store to other formats, so existing code keeps working.

seed-pickles: exactly the files the reference notebook writes, so notebooks that read
`pickles/NNNNNN.pickle`, `y.pickle` and `classlabels.pickle` run unchanged. melset writes
these pickles but never reads any.

hf: a Hugging Face `datasets.DatasetDict` (`datasets.load_from_disk(DIR)`), one split per
store split, written from a generator in bounded memory.

webdataset: tar shards `DIR/<split>-NNNNNN.tar` that the `webdataset` library streams; each
sample is `<key>.npy` (the matrix, `np.save` bytes) and `<key>.json`. Same store, same bytes.

Each writes only ok rows, read checked (`Store.iter_rows`), so a damaged row refuses the export;
and each leaves `DIR/melset-export.json` so that exporting again into the same folder replaces
the earlier export (and nothing else). hf and webdataset store paths relative to the collection
root, and a dataset card (`DIR/README.md`, melset.card).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import platform
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from melset.card import WDS_LOADER, export_splits, here, relative_path, source_root, write_card
from melset.errors import MelsetError, MissingDependency, StoreError, UsageError
from melset.outputs import leftover_pid, pid_gone, refuse_inside_melset, signals_held, what_is
from melset.store import Store
from melset.store.format import CHECKSUM, _manifest_digest, _sealed
from melset.vocab import DURATION_S, GENRE_TOP, PATH, SPLIT, TRACK_ID

SEED_PICKLES, HF, WEBDATASET = "seed-pickles", "hf", "webdataset"
FORMATS = (SEED_PICKLES, HF, WEBDATASET)
MARKER = "melset-export.json"  # names the format, the store and every file an export folder holds
MARKER_MAX_BYTES = 256 * 2**20
WROTE_FOLDERS, WROTE_FILES = "folders", "files"  # the marker's lists of what the export wrote
WORK_PREFIX = ".melset-export-"  # <pid>-<random>: an export's work folder beside --to
WORK_RECORD, OUT, OLD, SCRATCH = "work.json", "out", "old", "scratch"  # inside a work folder
DEFAULT_SHARD_SIZE = 1000  # the most samples a shard holds unless --shard-size says otherwise
MIN_SHARDS = 8  # per split, when it has the rows: a DataLoader's workers each get shards to read
HF_WRITER_BATCH = 16  # rows datasets buffers before writing (a float32 row is 512 KB)
LABEL, GENRE = "label", "genre"


def seed_pickles(store: Store, to: str | os.PathLike) -> dict[str, int]:
    """Write P/pickles/NNNNNN.pickle (ok rows, float64), P/y.pickle and P/classlabels.pickle.

    As the reference notebook writes them: each pickle is ``ndarray.dump`` of one float64
    matrix; ``y.pickle`` is a dict from the file stem (``export_name``) to an int64 row of
    ``len(classes)``, and ``classlabels.pickle`` the class names as a numpy array, in that
    order. In a genre_top store ``y`` holds LabelBinarizer's one-hot row of every track with
    a genre_top, as the notebook's. In a multi-label store (``extract --labels genres|
    genres_all``) it holds the multi-hot row of labels.npy (scikit-learn MultiLabelBinarizer's
    form, one 1 per genre of the track) of every track with at least one genre.

    Every row is read checked (`Store.iter_rows`): a damaged row refuses the export, so no
    damaged matrix is ever exported. `to` is a new or empty folder, or an earlier
    seed-pickles export: it is replaced once the new export is complete, so no pickle of a
    row that is no longer ok stays behind.

    Raises
    ------
    UsageError
        `to` cannot take the export.
    StoreError
        A row is damaged (nothing is written to `to`).
    """
    with _export_folder(store, to, SEED_PICKLES) as work:
        os.mkdir(os.path.join(work, "pickles"))
        ids = store.tracks[TRACK_ID].tolist()
        n = 0
        for rows, block in store.iter_rows():
            for row, x in zip(rows.tolist(), block):
                # ndarray.dump, as the notebook calls it: pickle protocol 2 of the array
                x.astype(np.float64).dump(os.path.join(work, "pickles", f"{export_name(ids[row])}.pickle"))
                n += 1
        classes = np.array(store.classes)
        labels = np.asarray(store.labels, dtype=np.int64)
        if store.multi_label:
            labelled = labels.any(axis=1)
        else:
            labelled = np.array([isinstance(g, str) for g in store.tracks[GENRE_TOP].tolist()], dtype=bool)
        y = {export_name(ids[row]): labels[row].copy() for row in np.flatnonzero(labelled).tolist()}
        with open(os.path.join(work, "y.pickle"), "wb") as f:
            pickle.dump(y, f, protocol=pickle.HIGHEST_PROTOCOL)
        with open(os.path.join(work, "classlabels.pickle"), "wb") as f:
            pickle.dump(classes, f)
        _write_marker(work, store, SEED_PICKLES, {"all": n})
    return {"pickles": n, "labels": len(y), "classes": len(classes)}


def export_name(track_id) -> str:
    """The file stem a track is exported under: FMA's zero-padded 6-digit id, or (other layouts,
    whose ids are relative paths) the id with ``%`` and ``/`` percent-encoded, so that two
    tracks never share a name (``a/b.wav`` -> ``a%2Fb.wav``, ``a%2Fb.wav`` -> ``a%252Fb.wav``)."""
    if isinstance(track_id, (int, np.integer)):
        return f"{int(track_id):06d}"
    return str(track_id).replace("%", "%25").replace("/", "%2F")


# -- shared by hf and webdataset ------------------------------------------------------------------


def _nonempty_splits(store: Store, fmt: str) -> dict[str, np.ndarray]:
    splits = export_splits(store)
    if not splits:
        raise StoreError(f"{store.root} has no ok row, so a {fmt} export would be empty; nothing was written")
    return splits


def _record(store: Store, row: int, split: str | None = None) -> dict[str, Any]:
    """The metadata of one row as plain Python values (label: class index, -1 without one;
    a list of class indices in a multi-label store)."""
    t = store.tracks
    tid = t[TRACK_ID].iat[row]
    genre = t[GENRE_TOP].iat[row]
    duration = float(t[DURATION_S].iat[row])
    hot = np.flatnonzero(np.asarray(store.labels[row]))
    label: int | list[int] = [int(i) for i in hot] if store.multi_label else int(hot[0]) if len(hot) else -1
    rec = {
        TRACK_ID: int(tid) if isinstance(tid, (int, np.integer)) else str(tid),
        LABEL: label,
        GENRE: genre if isinstance(genre, str) else None,
        PATH: relative_path(str(t[PATH].iat[row]), source_root(store)),
        DURATION_S: None if np.isnan(duration) else duration,
    }
    if split is not None:
        rec[SPLIT] = split
    return rec


def prepare_target(to: str | os.PathLike, fmt: str, store: Store | None = None) -> str:
    """The resolved --to folder (symbolic links and '..'), checked: new, empty, or an earlier
    export of the same format that holds nothing but what that export wrote.

    Raises UsageError for a file or a special file, a place inside a store or a training run
    (`store` or any other), another format's export, a folder holding anything that is not its
    earlier export's (nothing is deleted that melset did not write), or a marker that cannot
    be trusted to say what the earlier export wrote.
    """
    given = os.fspath(to)
    to = os.path.realpath(given)
    if store is not None and (to + os.sep).startswith(os.path.realpath(store.root) + os.sep):
        raise UsageError(f"--to {given} is inside the store {store.root}; export to a folder outside it")
    refuse_inside_melset(to, "--to", given, itself=True)
    try:
        mode = os.stat(to).st_mode
    except FileNotFoundError:
        return to
    if not stat.S_ISDIR(mode):
        raise UsageError(f"--to {given} is {what_is(mode)}; give a folder (new or empty) for the {fmt} export")
    if os.listdir(to):
        _check_earlier_export(to, fmt, given)
    return to


def _check_earlier_export(folder: str, fmt: str, given: str) -> None:
    """Refuse (UsageError) `folder` unless it holds a `fmt` export and nothing else."""
    marker = _read_marker(folder, given)
    found = marker["format"]
    if found != fmt:
        raise UsageError(
            f"--to {given} holds a {found} export; choose another folder for the {fmt} export (nothing there was changed)"
        )
    foreign = _foreign_entries(folder, marker)
    if foreign:
        names = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UsageError(
            f"--to {given} holds an earlier {fmt} export and also {names}, which that export did not write; "
            "choose an empty --to or move them out (nothing there was changed)"
        )


def _read_marker(folder: str, given: str) -> dict:
    """The earlier export's marker, checked to be one melset wrote: a regular file of bounded
    size, a JSON object sealed with the checksum melset wrote over its other fields, naming a known format and every file and folder it wrote as a plain
    relative name. Anything else is not trusted to say what may be replaced."""
    path = os.path.join(folder, MARKER)

    def untrusted(why: str) -> UsageError:
        return UsageError(
            f"--to {given} holds a {MARKER} that cannot say what melset wrote there ({why}); "
            "choose an empty --to, or remove that folder's contents yourself (nothing there was changed)"
        )

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UsageError(
            f"--to {given} is not empty and holds no melset export; choose a new or empty folder (nothing there was changed)"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise untrusted(f"it is {what_is(st.st_mode)}")
    if st.st_size > MARKER_MAX_BYTES:
        raise untrusted(f"{st.st_size:,} bytes")
    try:
        with open(path, encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError) as exc:
        raise untrusted(f"not JSON: {exc}") from None
    if not isinstance(marker, dict) or marker.get(CHECKSUM) != _manifest_digest(marker):
        raise UsageError(
            f"--to {given}: {path} was changed after melset wrote it, so melset will not delete anything there; "
            "choose an empty --to or move the folder away (nothing there was changed)"
        )
    if marker.get("format") not in FORMATS:
        raise untrusted("it names no export format")
    files, folders = marker.get(WROTE_FILES), marker.get(WROTE_FOLDERS)
    if not (isinstance(files, list) and isinstance(folders, list)):
        raise untrusted("it lists no files: an export by an older melset")
    names = [*folders, *files]
    bad = next((n for n in names if not _plain_relative(n)), None)
    if bad is not None:
        raise untrusted(f"{bad!r} is not a plain relative name")
    dirs = set(folders)
    if len(set(names)) != len(names) or MARKER in files or any(_parent(n) and _parent(n) not in dirs for n in names):
        raise untrusted("its list of files is inconsistent")
    return marker


def _plain_relative(name) -> bool:
    if not isinstance(name, str) or not name or "\0" in name or name.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def _parent(name: str) -> str:
    return name.rpartition("/")[0]


def _walk(folder: str, known_folders: set[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """(folders, regular files, anything else) under `folder` as relative '/'-joined names,
    symbolic links not followed; with `known_folders`, folders outside it are not entered."""
    folders, files, others = [], [], []
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(os.path.join(folder, rel) if rel else folder) as it:
            for entry in it:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    folders.append(name)
                    if known_folders is None or name in known_folders:
                        pending.append(name)
                elif entry.is_file(follow_symlinks=False):
                    files.append(name)
                else:
                    others.append(name)
    return sorted(folders), sorted(files), sorted(others)


def _foreign_entries(folder: str, marker: dict) -> list[str]:
    """What `folder` holds that the export its marker describes did not write."""
    known_folders, known_files = set(marker[WROTE_FOLDERS]), {*marker[WROTE_FILES], MARKER}
    folders, files, others = _walk(folder, known_folders)
    return sorted([n for n in folders if n not in known_folders] + [n for n in files if n not in known_files] + others)


def _leftovers(parent: str) -> None:
    """Remove the work folders that killed exports left in `parent`; an earlier export one of
    them had moved aside is put back first. A folder is one only when its name is a work
    folder's, it holds a work.json that names that very folder, this machine and a pid that
    no longer runs (the pid in the name); anything else is a user's and is left alone (a
    folder killed before its work.json was written is removed only while it is empty)."""
    for name in os.listdir(parent):
        pid = leftover_pid(name, WORK_PREFIX)
        path = os.path.join(parent, name)
        if pid is None or not pid_gone(pid) or not stat.S_ISDIR(os.lstat(path).st_mode):
            continue
        record = _work_record(path)
        if record is None:
            with contextlib.suppress(OSError):
                _remove_unborn(path)
            continue
        if record.get("folder") != name or record.get("pid") != pid or record.get("host") != platform.node():
            continue  # another machine's, on a shared folder, or not a work folder at all
        target = record.get("target")
        old = os.path.join(path, OLD)
        if os.path.isdir(old):
            if not (isinstance(target, str) and _plain_relative(target) and "/" not in target):
                continue  # an earlier export whose place is unknown: never deleted
            if not os.path.lexists(os.path.join(parent, target)):
                os.rename(old, os.path.join(parent, target))
        shutil.rmtree(path, ignore_errors=True)


def _remove_unborn(path: str) -> None:
    """Remove a work folder killed before its work.json was written: only while it holds
    nothing, or nothing but an empty work.json (opened, not yet written)."""
    entries = os.listdir(path)
    if entries == [WORK_RECORD]:
        record_path = os.path.join(path, WORK_RECORD)
        st = os.lstat(record_path)
        if not (stat.S_ISREG(st.st_mode) and st.st_size == 0):
            return
        os.remove(record_path)
    elif entries:
        return
    os.rmdir(path)


def _work_record(path: str) -> dict | None:
    """The work.json of a work folder: a small regular file holding a JSON object, else None."""
    record_path = os.path.join(path, WORK_RECORD)
    try:
        st = os.lstat(record_path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 65536:
            return None
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _swap_in(work: str, to: str, fmt: str) -> None:
    """Replace the folder `to` (an earlier `fmt` export, or empty) by the finished export in
    `work`/out. The earlier one is moved into `work` and checked again there (nothing can be
    added to it any more) before the new one takes its place; a folder that gained foreign
    entries meanwhile is put back and refused."""
    old = os.path.join(work, OLD)
    with signals_held():
        if os.path.isdir(to):
            os.rename(to, old)
            try:
                if os.listdir(old):
                    _check_earlier_export(old, fmt, to)
            except BaseException:
                os.rename(old, to)
                raise
        os.rename(os.path.join(work, OUT), to)


def _remove_work(work: str, to: str) -> None:
    """Remove a work folder; an earlier export moved into it whose place is empty goes back.
    Done even when Ctrl-C or SIGTERM (already on its way) interrupts it: raised after."""
    stopped = None
    for _ in range(3):  # Ctrl-C and SIGTERM, each already on its way, can cut it short once
        try:
            with signals_held():
                old = os.path.join(work, OLD)
                if os.path.isdir(old) and not os.path.lexists(to):
                    os.rename(old, to)
                shutil.rmtree(work, ignore_errors=True)
            break
        except KeyboardInterrupt as exc:
            stopped = stopped or exc
    if stopped:
        raise stopped


@contextlib.contextmanager
def _export_folder(store: Store, to: str | os.PathLike, fmt: str) -> Iterator[str]:
    """A folder to write a `fmt` export into (checked by `prepare_target`): `out` inside a
    hidden work folder beside `to`, named for this process. It replaces `to` when the block
    ends without error; the work folder is removed in any case (Ctrl-C and SIGTERM included),
    and the next export into the same place removes one left by a process killed outright."""
    to = prepare_target(to, fmt, store)
    parent = os.path.dirname(to)
    if os.path.isdir(parent):
        _leftovers(parent)  # may put back an earlier export at `to`: checked again before it is replaced
    os.makedirs(parent, exist_ok=True)
    work = ""
    try:
        with signals_held():  # a signal during mkdtemp would leave the folder unnamed here
            work = tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=parent)
        record = {
            "pid": os.getpid(),
            "host": platform.node(),
            "folder": os.path.basename(work),  # a leftover is removed only when its record names it
            "target": os.path.basename(to),
            "format": fmt,
        }
        with open(os.path.join(work, WORK_RECORD), "w", encoding="utf-8") as f:
            f.write(json.dumps(record))
        out = os.path.join(work, OUT)
        os.mkdir(out)
        yield out
        _swap_in(work, to, fmt)
    finally:
        if work:
            _remove_work(work, to)


@contextlib.contextmanager
def _scratch(out: str) -> Iterator[str]:
    """A scratch folder inside the work folder of the export being written to `out`
    (removed with it, whatever happens)."""
    path = os.path.join(os.path.dirname(out), SCRATCH)
    os.mkdir(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write_marker(folder: str, store: Store, fmt: str, counts: dict[str, int], extra: dict | None = None) -> None:
    """DIR/melset-export.json: the format, the store, what was written per split, and every
    folder and file the export wrote (all that a later export into DIR may replace), sealed
    with a checksum over the rest (as a store's manifest.json): an edited marker authorises nothing."""
    folders, files, _ = _walk(folder)
    obj = {
        "format": fmt,
        "store": store.root,
        "store_id": store.manifest.get("store_id"),
        "source_root": source_root(store),  # the tracks' paths are relative to it
        "labels": store.label_kind,
        "classes": list(store.classes),
        "splits": counts,
        **(extra or {}),
        WROTE_FOLDERS: folders,
        WROTE_FILES: [n for n in files if n != MARKER],
    }
    with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as f:
        f.write(json.dumps(_sealed(obj), indent=2, ensure_ascii=False) + "\n")


# -- Hugging Face datasets --------------------------------------------------------------------------


def hf_features(store: Store):
    """The datasets.Features of an hf export of this store."""
    datasets = _import("datasets", "hf")
    id_type = "int64" if store.tracks[TRACK_ID].dtype.kind in "iu" else "string"
    label = datasets.ClassLabel(names=list(store.classes))
    shape = tuple(int(n) for n in store.manifest["shape"][1:])
    return datasets.Features(
        {
            TRACK_ID: datasets.Value(id_type),
            "mel": datasets.Array2D(shape=shape, dtype=str(store.mels.dtype)),
            LABEL: datasets.Sequence(label) if store.multi_label else label,
            GENRE: datasets.Value("string"),
            PATH: datasets.Value("string"),
            DURATION_S: datasets.Value("float64"),
        }
    )


def _hf_rows(root: str, rows: list[int]) -> Iterator[dict[str, Any]]:
    store = Store(root)
    for chunk, block in store.iter_rows(rows, HF_WRITER_BATCH):  # checked: a damaged row raises
        for row, x in zip(chunk.tolist(), block):
            rec = _record(store, row)
            rec["mel"] = x
            yield rec


def _melset_cause(exc: BaseException) -> MelsetError | None:
    """The MelsetError a library wrapped (datasets raises its own error from a generator's)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MelsetError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def hf(store: Store, to: str | os.PathLike) -> dict[str, int]:
    """Write the store's ok rows as a datasets.DatasetDict that ``datasets.load_from_disk(to)`` reads.

    Parameters
    ----------
    store : Store
    to : path
        A new or empty folder, or an earlier hf export (replaced once the new one is complete).

    Returns
    -------
    dict
        Rows written per split.

    Raises
    ------
    MissingDependency
        The datasets library is not installed (``pip install 'melset[hf]'``).
    UsageError
        `to` cannot take the export.
    StoreError
        The store has no ok row, or a row is damaged (read checked, `Store.iter_rows`: no
        damaged matrix is ever exported).
    """
    datasets = _import("datasets", "hf")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with _export_folder(store, to, HF) as out:
            features = hf_features(store)
            splits = _nonempty_splits(store, HF)
            # datasets' Arrow cache in the work folder, beside the export, not in it
            with _scratch(out) as cache:
                parts = {}
                for name, rows in splits.items():
                    try:
                        parts[name] = datasets.Dataset.from_generator(
                            _hf_rows,
                            features=features,
                            gen_kwargs={"root": store.root, "rows": [int(r) for r in rows]},
                            cache_dir=cache,
                            fingerprint=f"melset-{store.manifest.get('store_id')}-{name}",
                            writer_batch_size=HF_WRITER_BATCH,
                        )
                    except Exception as exc:
                        cause = _melset_cause(exc)
                        if cause is None:
                            raise
                        raise cause from None  # a damaged row: the export is refused with its sentence
                datasets.DatasetDict(parts).save_to_disk(out)
                counts = {name: len(ds) for name, ds in parts.items()}
                del parts
            write_card(out, store, HF, counts, f"import datasets\ndd = datasets.load_from_disk({here(to)!r})")
            _write_marker(out, store, HF, counts)
    finally:
        if bars:
            datasets.enable_progress_bars()
    return counts


# -- WebDataset ---------------------------------------------------------------------------------------

_KEY_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def sample_key(track_id) -> str:
    """A webdataset key for a track id: injective, without dots or slashes.

    FMA's ids are zero-padded to 6 digits (as the notebook names files); other ids have every
    byte outside [A-Za-z0-9_-] written as %XX, so "blues/blues.00000.wav" becomes
    "blues%2Fblues%2E00000%2Ewav".
    """
    if isinstance(track_id, (int, np.integer)):
        return f"{int(track_id):06d}"
    return "".join(chr(b) if b in _KEY_SAFE else f"%{b:02X}" for b in str(track_id).encode("utf-8"))


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def shard_rows(rows: np.ndarray, shard_size: int | None = None) -> list[np.ndarray]:
    """The rows of each shard of one split: `shard_size` each (the last fewer), or by default
    at least MIN_SHARDS shards when the split has that many rows, of at most
    DEFAULT_SHARD_SIZE rows, sizes differing by one at most."""
    if shard_size is None:
        return np.array_split(rows, max(-(-len(rows) // DEFAULT_SHARD_SIZE), min(len(rows), MIN_SHARDS)))
    return [rows[start : start + shard_size] for start in range(0, len(rows), shard_size)]


def webdataset(store: Store, to: str | os.PathLike, shard_size: int | None = None) -> dict[str, int]:
    """Write the store's ok rows as tar shards ``to/<split>-NNNNNN.tar`` that webdataset reads.

    Per sample ``<key>.npy`` (``np.save`` of the stored matrix, in the store's dtype) and
    ``<key>.json`` (track_id, label or labels, genre, split, path, duration_s). The shards
    are byte-identical for the same store: fixed order, mtime, owner and mode.

    Parameters
    ----------
    store : Store
    to : path
        A new or empty folder, or an earlier webdataset export (replaced once the new one is complete).
    shard_size : int, optional
        Samples per shard (>= 1); by default each split gets at least MIN_SHARDS shards
        (one sample each when it has fewer rows) of at most DEFAULT_SHARD_SIZE samples, so
        that a DataLoader's workers all have shards to read (see WDS_LOADER).

    Returns
    -------
    dict
        Samples written per split.

    Raises
    ------
    StoreError
        A row is damaged (read checked, `Store.iter_rows`: no damaged matrix is ever exported).
    """
    given = shard_size is not None
    if given and (isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1):
        raise UsageError(f"--shard-size must be a whole number of samples, at least 1, not {shard_size!r}")
    with _export_folder(store, to, WEBDATASET) as work:
        counts, shards = {}, {}
        names = store.classes
        for split, rows in _nonempty_splits(store, WEBDATASET).items():
            counts[split], shards[split] = len(rows), 0
            for part in shard_rows(rows, shard_size):
                path = os.path.join(work, f"{split}-{shards[split]:06d}.tar")
                with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
                    # checked: a damaged row raises, refusing the export
                    for chunk, block in store.iter_rows(part):
                        for row, x in zip(chunk.tolist(), block):
                            rec = _record(store, row, split)
                            label = rec.pop(LABEL)
                            if store.multi_label:
                                rec["labels"] = [names[i] for i in label]
                            else:
                                rec[LABEL] = names[label] if label >= 0 else None
                            rec["label_index"] = label
                            key = sample_key(rec[TRACK_ID])
                            buf = io.BytesIO()
                            np.save(buf, x, allow_pickle=False)
                            _tar_member(tar, f"{key}.npy", buf.getvalue())
                            body = json.dumps(rec, ensure_ascii=False, sort_keys=True).encode()
                            _tar_member(tar, f"{key}.json", body)
                shards[split] += 1
        write_card(work, store, WEBDATASET, counts, WDS_LOADER.format(dir=here(to)))
        _write_marker(
            work, store, WEBDATASET, counts, {"shards": shards, "shard_size": int(shard_size) if given else None}
        )
    return counts


def _import(name: str, extra: str):
    try:
        return __import__(name)
    except ImportError:
        raise MissingDependency(
            f"the {extra} export needs the {name} library, which is not installed: pip install 'melset[{extra}]'"
        ) from None
