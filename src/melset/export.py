"""Exports of a store to other formats, so existing code keeps working.

seed-pickles: exactly the files the reference notebook writes, so notebooks that read
`pickles/NNNNNN.pickle`, `y.pickle` and `classlabels.pickle` run unchanged. melset writes
these pickles but never reads any.

hf: a Hugging Face `datasets.DatasetDict` (`datasets.load_from_disk(DIR)`), one split per
store split, written from a generator in bounded memory.

webdataset: tar shards `DIR/<split>-NNNNNN.tar` that the `webdataset` library streams; each
sample is `<key>.npy` (the matrix, `np.save` bytes) and `<key>.json`. Same store, same bytes.

Each writes only ok rows, read through the store's checked reader (`Store.iter_rows`: crc32
of the journal and finite values), so a damaged row refuses the export; and each leaves `DIR/melset-export.json` so that exporting again into
the same folder replaces the earlier export (and nothing else).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from melset.errors import MelsetError, MissingDependency, StoreError, UsageError
from melset.store import Store
from melset.vocab import (
    DURATION_S,
    EXPORT_SPLITS,
    GENRE_TOP,
    PATH,
    SPLIT,
    TRACK_ID,
    UNASSIGNED,
    UNSPLIT,
)

SEED_PICKLES, HF, WEBDATASET = "seed-pickles", "hf", "webdataset"
FORMATS = (SEED_PICKLES, HF, WEBDATASET)
MARKER = "melset-export.json"  # names the format and store an export folder holds
DEFAULT_SHARD_SIZE = 1000
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


def export_splits(store: Store) -> dict[str, np.ndarray]:
    """The ok rows of each export split: FMA's training/validation/test as train/validation/test,
    everything as train when the store has no split, rows without one apart when only some have one."""
    rows = store.ok_rows()
    given = store.tracks[SPLIT].to_numpy()[rows]
    names = np.array([EXPORT_SPLITS.get(s, UNASSIGNED) if isinstance(s, str) else UNASSIGNED for s in given])
    if len(rows) and (names == UNASSIGNED).all():
        names[:] = UNSPLIT
    order = [*EXPORT_SPLITS.values(), UNASSIGNED]
    return {name: rows[names == name] for name in order if (names == name).any()}


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
        PATH: str(t[PATH].iat[row]),
        DURATION_S: None if np.isnan(duration) else duration,
    }
    if split is not None:
        rec[SPLIT] = split
    return rec


def prepare_target(to: str | os.PathLike, fmt: str, store: Store | None = None) -> str:
    """The absolute --to folder, checked: new, empty, or an earlier export of the same format.

    Raises UsageError for a file, another format's export, a folder holding other things,
    or a folder inside the store itself.
    """
    to = os.path.abspath(os.fspath(to))
    if store is not None and (to + os.sep).startswith(os.path.realpath(store.root) + os.sep):
        raise UsageError(f"--to {to} is inside the store {store.root}; export to a folder outside it")
    if os.path.lexists(to) and not os.path.isdir(to):
        raise UsageError(f"--to {to} is a file; give a folder (new or empty) for the {fmt} export")
    if os.path.isdir(to) and os.listdir(to):
        marker = os.path.join(to, MARKER)
        try:
            with open(marker, encoding="utf-8") as f:
                found = json.load(f).get("format")
        except (OSError, ValueError, AttributeError):
            found = None
        if found is None:
            raise UsageError(
                f"--to {to} is not empty and holds no melset export; choose a new or empty folder (nothing there was changed)"
            )
        if found != fmt:
            raise UsageError(
                f"--to {to} holds a {found} export; choose another folder for the {fmt} export (nothing there was changed)"
            )
    return to


def _swap_in(tmp: str, to: str) -> None:
    """Replace the folder `to` (an earlier export, or empty) by the finished `tmp`."""
    old = None
    if os.path.isdir(to):
        old = tempfile.mkdtemp(prefix=".melset-old-", dir=os.path.dirname(to))
        os.rename(to, os.path.join(old, "x"))
    os.rename(tmp, to)
    if old:
        shutil.rmtree(old)


@contextlib.contextmanager
def _export_folder(store: Store, to: str | os.PathLike, fmt: str) -> Iterator[str]:
    """A hidden folder beside `to` (checked by `prepare_target`) to write a `fmt` export into;
    it replaces `to` when the block ends without error, and is removed otherwise."""
    to = prepare_target(to, fmt, store)
    parent = os.path.dirname(to)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".melset-{fmt}-", dir=parent)
    try:
        yield work
        os.chmod(work, 0o755)  # mkdtemp made it private
        _swap_in(work, to)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_marker(folder: str, store: Store, fmt: str, counts: dict[str, int], extra: dict | None = None) -> None:
    """DIR/melset-export.json: the format, the store and what was written per split."""
    obj = {
        "format": fmt,
        "store": store.root,
        "store_id": store.manifest.get("store_id"),
        "labels": store.label_kind,
        "classes": list(store.classes),
        "splits": counts,
        **(extra or {}),
    }
    with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


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
            # datasets' Arrow cache beside the export, not in it
            with tempfile.TemporaryDirectory(prefix=".melset-hf-cache-", dir=os.path.dirname(out)) as cache:
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


def webdataset(store: Store, to: str | os.PathLike, shard_size: int = DEFAULT_SHARD_SIZE) -> dict[str, int]:
    """Write the store's ok rows as tar shards ``to/<split>-NNNNNN.tar`` that webdataset reads.

    Per sample ``<key>.npy`` (``np.save`` of the stored matrix, in the store's dtype) and
    ``<key>.json`` (track_id, label or labels, genre, split, path, duration_s). The shards
    are byte-identical for the same store: fixed order, mtime, owner and mode.

    Parameters
    ----------
    store : Store
    to : path
        A new or empty folder, or an earlier webdataset export (replaced once the new one is complete).
    shard_size : int
        Samples per shard (>= 1).

    Returns
    -------
    dict
        Samples written per split.

    Raises
    ------
    StoreError
        A row is damaged (read checked, `Store.iter_rows`: no damaged matrix is ever exported).
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise UsageError(f"--shard-size must be a whole number of samples, at least 1, not {shard_size!r}")
    with _export_folder(store, to, WEBDATASET) as work:
        counts, shards = {}, {}
        names = store.classes
        for split, rows in _nonempty_splits(store, WEBDATASET).items():
            counts[split], shards[split] = len(rows), 0
            for start in range(0, len(rows), shard_size):
                path = os.path.join(work, f"{split}-{shards[split]:06d}.tar")
                with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
                    # checked: a damaged row raises, refusing the export
                    for chunk, block in store.iter_rows(rows[start : start + shard_size]):
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
        _write_marker(work, store, WEBDATASET, counts, {"shards": shards, "shard_size": int(shard_size)})
    return counts


def _import(name: str, extra: str):
    try:
        return __import__(name)
    except ImportError:
        raise MissingDependency(
            f"the {extra} export needs the {name} library, which is not installed: pip install 'melset[{extra}]'"
        ) from None
