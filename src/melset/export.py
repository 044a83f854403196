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
the earlier export (and nothing else). `to` may be an fsspec URL (s3://, gs://, az://): the
export is built locally, uploaded under a work prefix, then put in place, its record last.
hf and webdataset store paths relative to the collection
root, and a dataset card (`DIR/README.md`, melset.card).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from melset.card import export_splits, here, relative_path, source_root, wds_loader, write_card
from melset.errors import MelsetError, MissingDependency, StoreError, UsageError
from melset.exportdir import (  # noqa: F401  (MARKER and prepare_target: part of export's API)
    FORMATS,
    HF,
    MARKER,
    SEED_PICKLES,
    WEBDATASET,
    _export_folder,
    _scratch,
    _write_marker,
    prepare_target,
)
from melset.store import Store
from melset.vocab import DURATION_S, GENRE_TOP, PATH, SPLIT, TRACK_ID

DEFAULT_SHARD_SIZE = 1000  # the most samples a shard holds unless --shard-size says otherwise
MIN_SHARDS = 8  # per split, when it has the rows: a DataLoader's workers each get shards to read
HF_WRITER_BATCH = 16  # rows datasets buffers before writing (a float32 row is 512 KB)
LABEL, GENRE = "label", "genre"


def seed_pickles(store: Store, to: str | os.PathLike, storage_options: dict | None = None) -> dict[str, int]:
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
    row that is no longer ok stays behind. A URL `to` (with fsspec `storage_options`) gets
    the export built locally, then uploaded, its record last (exportdir).

    Raises
    ------
    UsageError
        `to` cannot take the export.
    StoreError
        A row is damaged (nothing is written to `to`).
    """
    with _export_folder(store, to, SEED_PICKLES, storage_options) as work:
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
    rec = {
        TRACK_ID: int(tid) if isinstance(tid, (int, np.integer)) else str(tid),
        LABEL: store.label_of(row),
        GENRE: genre if isinstance(genre, str) else None,
        PATH: relative_path(str(t[PATH].iat[row]), source_root(store)),
        DURATION_S: None if np.isnan(duration) else duration,
    }
    if split is not None:
        rec[SPLIT] = split
    return rec


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


def hf(store: Store, to: str | os.PathLike, storage_options: dict | None = None) -> dict[str, int]:
    """Write the store's ok rows as a datasets.DatasetDict that ``datasets.load_from_disk(to)`` reads.

    Parameters
    ----------
    store : Store
    to : path
        A new or empty folder, or an earlier hf export (replaced once the new one is complete);
        or an fsspec URL (s3://bucket/prefix, ...), built locally then uploaded (exportdir).
    storage_options : dict, optional
        fsspec options for a URL `to` (credentials otherwise come from the environment).

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
        with _export_folder(store, to, HF, storage_options) as out:
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


def webdataset(
    store: Store, to: str | os.PathLike, shard_size: int | None = None, storage_options: dict | None = None
) -> dict[str, int]:
    """Write the store's ok rows as tar shards ``to/<split>-NNNNNN.tar`` that webdataset reads.

    Per sample ``<key>.npy`` (``np.save`` of the stored matrix, in the store's dtype) and
    ``<key>.json`` (track_id, label or labels, genre, split, path, duration_s). The shards
    are byte-identical for the same store: fixed order, mtime, owner and mode.

    Parameters
    ----------
    store : Store
    to : path
        A new or empty folder, or an earlier webdataset export (replaced once the new one is complete);
        or an fsspec URL, as for `hf`.
    shard_size : int, optional
        Samples per shard (>= 1); by default each split gets at least MIN_SHARDS shards
        (one sample each when it has fewer rows) of at most DEFAULT_SHARD_SIZE samples, so
        that a DataLoader's workers all have shards to read (see WDS_LOADER).
    storage_options : dict, optional
        fsspec options for a URL `to`.

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
    with _export_folder(store, to, WEBDATASET, storage_options) as work:
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
        write_card(work, store, WEBDATASET, counts, wds_loader(to))
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
