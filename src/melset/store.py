"""The on-disk dataset: memory-mappable arrays plus a table that says what happened to each track.

    D/manifest.json   how the store was made (recipe, inputs, versions, counts, times)
    D/tracks.parquet  one row per track: track_id, path, genre_top, subset, split, status, error, duration_s
    D/mels.npy        (rows, n_mels, n_frames) float16|float32; row i <-> row i of tracks.parquet
    D/labels.npy      (rows, n_classes) uint8 one-hot; all zeros for a track without genre
    D/classes.json    the class names, sorted (scikit-learn LabelBinarizer's order)
    D/journal.jsonl   append-only record of finished rows (what makes a killed run resumable)

Crash safety: a row's matrix is written in place, the file is synced, and only then is the
row's record appended to the journal (also synced). On resume, rows without a complete
journal record are simply done again, so no half-written row is ever counted as done.
The store knows nothing of audio: callers hand it matrices and an identity to check.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import math
import os
import shutil
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from melset.errors import StoreError
from melset.vocab import (
    CLASSES,
    DURATION_S,
    ERROR,
    GENRE_TOP,
    JOURNAL,
    LABEL_KINDS,
    LABELS,
    LOCK,
    MANIFEST,
    MELS,
    OK,
    PATH,
    PENDING,
    SPLIT,
    STATUS,
    STATUSES,
    STORE_FILES,
    STORE_ID,
    SUBSET,
    TRACK_ID,
    TRACKS,
    CATALOG_COLUMNS,
    tracks_schema,
)

if TYPE_CHECKING:
    import pandas as pd

# pandas and pyarrow are imported where the tables are handled: engine workers import this
# module for RowSink alone and should not pay ~0.4 s and ~100 MB for them.

FORMAT = "melset-store/1"


@dataclass(frozen=True)
class Record:
    """What happened to one row."""

    row: int
    status: str
    error: str
    duration_s: float
    crc32: int  # of the row's bytes in mels.npy
    decoder: str = ""  # which backend decoded the file, when one did

    def to_json(self) -> str:
        d = {
            "row": self.row,
            STATUS: self.status,
            ERROR: self.error,
            DURATION_S: _json_float(self.duration_s),
            "crc32": self.crc32,
            "decoder": self.decoder,
        }
        return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


def _json_float(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def now_iso() -> str:
    """The current UTC time as written into manifests."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: str, obj: Any) -> None:
    _write_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n").encode())


def npy_data_offset(path: str) -> int:
    """Byte offset of the data in a .npy file (after magic and header)."""
    return int(np.load(path, mmap_mode="r").offset)


def row_nbytes(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of one row of mels.npy."""
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


class SinkUnreachable(OSError):
    """This process cannot write into the driver's store (not on shared storage)."""


@dataclass(frozen=True)
class RowSink:
    """Writes rows straight into a store's mels.npy, from any process that can reach the file.

    Engine workers use it so that a finished matrix goes to disk once, not through the
    driver. A written row still counts only once the driver commits its record.
    """

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str
    store_id: str  # what D/.store_id must hold: proof that this path is the driver's store

    @property
    def row_bytes(self) -> int:
        return row_nbytes(self.shape, self.dtype)

    def encode(self, matrix: np.ndarray | None) -> bytes:
        """A row's bytes: the matrix in the store's dtype, or zeros when matrix is None."""
        if matrix is None:
            return bytes(self.row_bytes)
        data = np.ascontiguousarray(matrix, dtype=self.dtype)
        if data.shape != tuple(self.shape):
            raise ValueError(f"a matrix of shape {data.shape} does not fit rows of {tuple(self.shape)}")
        return data.tobytes()

    def write(self, row: int, matrix: np.ndarray | None, fd: int | None = None) -> int:
        """Write a row (zeros when matrix is None); returns the crc32 of the bytes written.

        Without fd (in a worker) it first checks that the path holds the driver's store, so a
        node that sees another file at the same path raises SinkUnreachable, not a silent loss.
        """
        buf = self.encode(matrix)
        own = fd is None
        if own:
            try:
                with open(os.path.join(os.path.dirname(self.path), STORE_ID), encoding="ascii") as f:
                    found = f.read().strip()
                # opened per row (~20 us): a cached descriptor could outlive an --overwrite
                fd = os.open(self.path, os.O_WRONLY)
            except OSError as exc:
                raise SinkUnreachable(f"cannot write into {self.path}: {exc.strerror}") from None
            if found != self.store_id:
                os.close(fd)
                raise SinkUnreachable(f"{self.path} is not the driver's store (another .store_id)")
        try:
            _pwrite_all(fd, buf, self.offset + row * len(buf))
        finally:
            if own:
                os.close(fd)
        return zlib.crc32(buf)


def _pwrite_all(fd: int, buf: bytes, offset: int) -> None:
    """pwrite every byte: a nearly full disk can take part of a row and return a short count."""
    view = memoryview(buf)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class StoreWriter:
    """Creates a store (or reopens one to resume it), writes rows, commits them, finalizes it."""

    def __init__(self, root: str):
        self.root = root
        self._lock_fd: int | None = None
        self._mels_fd: int | None = None
        self._journal_fd: int | None = None
        self._pending: list[Record] = []
        self.records: dict[int, Record] = {}
        self.manifest: dict[str, Any] = {}
        self.base: pd.DataFrame | None = None

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: str | os.PathLike,
        identity: dict[str, Any],
        tracks: pd.DataFrame,
        labels: np.ndarray,
        classes: list[str],
        shape: tuple[int, int],
        dtype: str,
        overwrite: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> StoreWriter:
        """Create the store at `root`, or resume it when its identity matches.

        identity: everything that decides the store's bytes (recipe, selected tracks); a store
        made with another identity is refused unless overwrite=True.
        tracks: the catalog's columns (vocab.CATALOG_COLUMNS), one row per row of the arrays.
        """
        root = os.path.abspath(os.fspath(root))
        os.makedirs(root, exist_ok=True)
        self = cls(root)
        self._acquire_lock()
        try:
            manifest_path = os.path.join(root, MANIFEST)
            if os.path.exists(manifest_path) and not overwrite:
                self._resume(identity, len(tracks))
            else:
                self._create(identity, tracks, labels, classes, shape, dtype, overwrite, extra or {})
        except BaseException:
            self.close()
            raise
        return self

    def _acquire_lock(self) -> None:
        path = os.path.join(self.root, LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreError(
                f"{self.root} is in use by another melset run (pid {holder}); wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _create(self, identity, tracks, labels, classes, shape, dtype, overwrite, extra) -> None:
        others = sorted(
            set(os.listdir(self.root)) - set(STORE_FILES) - {n for n in os.listdir(self.root) if ".tmp" in n}
        )
        has_manifest = os.path.exists(os.path.join(self.root, MANIFEST))
        if others and not has_manifest:
            raise StoreError(
                f"{self.root} exists and is not a melset store (it holds {', '.join(others[:3])}); choose an empty --out"
            )
        if has_manifest and not overwrite:
            raise StoreError(f"{self.root} already holds a store")
        for name in STORE_FILES:
            if name != LOCK and os.path.exists(os.path.join(self.root, name)):
                os.remove(os.path.join(self.root, name))
        _check_space(self.root, len(tracks) * row_nbytes(shape, dtype))
        import uuid

        store_id = uuid.uuid4().hex
        with open(os.path.join(self.root, STORE_ID), "w", encoding="ascii") as f:
            f.write(store_id + "\n")
        n = len(tracks)
        mels_path = os.path.join(self.root, MELS)
        # A sparse file: rows not yet written read as zeros.
        mm = np.lib.format.open_memmap(mels_path, mode="w+", dtype=np.dtype(dtype), shape=(n, *shape))
        del mm
        np.save(os.path.join(self.root, LABELS), labels.astype(np.uint8))
        _write_json(os.path.join(self.root, CLASSES), list(classes))
        self.base = tracks.reset_index(drop=True)
        self.manifest = {
            "format": FORMAT,
            "store_id": store_id,
            "state": "running",
            "identity": identity,
            "rows": n,
            "shape": [n, *shape],
            "dtype": dtype,
            "classes": list(classes),
            "created": now_iso(),
            **extra,
        }
        self._write_table()
        open(os.path.join(self.root, JOURNAL), "wb").close()
        # The manifest comes last: a store without one is not a store yet and is recreated.
        _write_json(os.path.join(self.root, MANIFEST), self.manifest)
        self._open_files()

    def _resume(self, identity, n_rows) -> None:
        self.manifest = read_manifest(self.root)
        if self.manifest.get("identity") != identity:
            diff = _first_difference(self.manifest.get("identity", {}), identity)
            raise StoreError(
                f"{self.root} holds a store made with other parameters ({diff}); use --overwrite to replace it, or choose another --out"
            )
        for name in (MELS, LABELS, CLASSES, TRACKS, JOURNAL, STORE_ID):
            if not os.path.exists(os.path.join(self.root, name)):
                raise StoreError(f"{self.root} is damaged: {name} is missing; use --overwrite to rebuild it")
        expected = tuple(self.manifest["shape"])
        mm = np.load(os.path.join(self.root, MELS), mmap_mode="r")
        if mm.shape != expected or n_rows != expected[0]:
            raise StoreError(
                f"{self.root} is damaged: {MELS} has shape {mm.shape}, the manifest says {expected}; use --overwrite"
            )
        del mm
        mels = os.stat(os.path.join(self.root, MELS))
        _check_space(self.root, mels.st_size - mels.st_blocks * 512)
        import pandas as pd

        self.base = pd.read_parquet(os.path.join(self.root, TRACKS), columns=list(CATALOG_COLUMNS))
        self.records = read_journal(os.path.join(self.root, JOURNAL), truncate=True)
        self._open_files()

    def _open_files(self) -> None:
        mels_path = os.path.join(self.root, MELS)
        shape, dtype = tuple(self.manifest["shape"][1:]), self.manifest["dtype"]
        self.sink = RowSink(mels_path, npy_data_offset(mels_path), shape, dtype, self.manifest["store_id"])
        self._mels_fd = os.open(mels_path, os.O_RDWR)
        self._journal_fd = os.open(os.path.join(self.root, JOURNAL), os.O_WRONLY | os.O_APPEND)

    # -- writing ------------------------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        return int(self.manifest["rows"])

    @property
    def uncommitted(self) -> int:
        """Rows written since the last commit()."""
        return len(self._pending)

    def done(self, row: int) -> Record | None:
        """The committed record of a row, or None if it must be (re)done."""
        return self.records.get(row)

    def write(
        self, row: int, status: str, error: str, duration_s: float, matrix: np.ndarray | None, decoder: str = ""
    ) -> None:
        """Write a row's matrix (zeros unless ok); it counts as done after the next commit()."""
        if status == OK and matrix is None:
            raise ValueError(f"row {row}: an ok row needs its matrix")
        crc = self.sink.write(row, matrix if status == OK else None, fd=self._mels_fd)
        self.record(row, status, error, duration_s, crc, decoder)

    def record(self, row: int, status: str, error: str, duration_s: float, crc32: int, decoder: str = "") -> None:
        """Note a row already written through `sink` (by a worker); it counts after the next commit()."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self._pending.append(Record(row, status, error or "", duration_s, crc32, decoder))

    def commit(self) -> int:
        """Make written rows durable, then journal them. Returns how many were committed."""
        if not self._pending:
            return 0
        os.fdatasync(self._mels_fd)
        view = memoryview("".join(r.to_json() + "\n" for r in self._pending).encode())
        while view:  # a short write on a full disk ends in an error on the next try: a torn last line
            view = view[os.write(self._journal_fd, view) :]
        os.fsync(self._journal_fd)
        for r in self._pending:
            self.records[r.row] = r
        n = len(self._pending)
        self._pending = []
        return n

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (*STATUSES, PENDING)}
        for r in self.records.values():
            out[r.status] += 1
        out[PENDING] = self.n_rows - len(self.records)
        return out

    def finalize(self, complete: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Commit, write tracks.parquet and the manifest. complete=False leaves it resumable."""
        self.commit()
        self._write_table()
        counts = self.counts()
        complete = complete and counts[PENDING] == 0
        decoders: dict[str, int] = {}
        for r in self.records.values():
            if r.decoder:
                decoders[r.decoder] = decoders.get(r.decoder, 0) + 1
        self.manifest.update(extra or {})
        self.manifest.update(
            {
                "state": "complete" if complete else "incomplete",
                "counts": counts,
                "decoders": decoders,
                "updated": now_iso(),
            }
        )
        _write_json(os.path.join(self.root, MANIFEST), self.manifest)
        return self.manifest

    def _write_table(self) -> None:
        _write_atomic(os.path.join(self.root, TRACKS), tracks_parquet_bytes(self.base, self.records))

    def close(self) -> None:
        for attr in ("_mels_fd", "_journal_fd", "_lock_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tracks_parquet_bytes(base: pd.DataFrame, records: dict[int, Record]) -> bytes:
    """tracks.parquet's bytes: the base table plus each row's status from its journal record."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(base)
    status, error, duration = [PENDING] * n, [""] * n, [math.nan] * n
    for row, r in records.items():
        status[row], error[row], duration[row] = r.status, r.error, r.duration_s
    ids = base[TRACK_ID]
    id_type = pa.int64() if pd.api.types.is_integer_dtype(ids) else pa.string()
    schema = tracks_schema(id_type)
    columns = {
        TRACK_ID: ids.tolist(),
        PATH: base[PATH].tolist(),
        GENRE_TOP: _none_for_nan(base[GENRE_TOP]),
        SUBSET: _none_for_nan(base[SUBSET]),
        SPLIT: _none_for_nan(base[SPLIT]),
        STATUS: status,
        ERROR: error,
        DURATION_S: duration,
    }
    table = pa.table({name: pa.array(columns[name], schema.field(name).type) for name in schema.names}, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _none_for_nan(col: pd.Series) -> list:
    return [v if isinstance(v, str) else None for v in col.tolist()]


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _check_space(root: str, needed: int) -> None:
    """Refuse up front when the disk cannot hold the rows still to write (mels.npy is sparse)."""
    free = shutil.disk_usage(root).free
    margin = 1024 * 1024  # journal, tables, manifest
    if needed + margin > free:
        raise StoreError(
            f"not enough disk space for {root}: the rows still to write need {_human(needed)}, {_human(free)} is free"
        )


def disk_full_message(root: str, exc: OSError) -> str:
    return f"disk full while writing the store {root} ({exc.strerror}); finished rows are saved: free some space and run the same command again to resume"


def _first_difference(old: Any, new: Any, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.') or 'value'}: stored {_short(old)}, asked {_short(new)}"


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


def read_manifest(root: str) -> dict[str, Any]:
    path = os.path.join(root, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise StoreError(f"{root} is not a melset store (no {MANIFEST})") from None
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path} is not valid JSON ({exc}); use --overwrite to rebuild the store") from None
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{root}: unknown store format {manifest.get('format')!r} (this melset reads {FORMAT})")
    return manifest


def read_journal(path: str, truncate: bool = False) -> dict[int, Record]:
    """Committed records, last one per row winning. A torn last line (a kill mid-write) is
    dropped, and with truncate=True cut off so that new records start on a clean line."""
    records: dict[int, Record] = {}
    good = 0
    with open(path, "rb") as f:
        data = f.read()
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            d = json.loads(line)
            duration = math.nan if d[DURATION_S] is None else float(d[DURATION_S])
            rec = Record(int(d["row"]), d[STATUS], d[ERROR], duration, int(d["crc32"]), d.get("decoder", ""))
        except (ValueError, KeyError, TypeError):
            break
        records[rec.row] = rec
        good += len(line)
    if truncate and good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    return records


class Store:
    """A store opened for reading: arrays memory-mapped, tables in pandas.

    Parameters
    ----------
    root : path
        The store folder that `melset.extract.extract` wrote.

    Attributes
    ----------
    manifest : dict
        How the store was made (recipe, inputs, versions, counts, runs).
    tracks : pandas.DataFrame
        One row per track: track_id, path, genre_top, subset, split, status, error, duration_s.
    mels : numpy.memmap
        (rows, n_mels, n_frames); nothing is read until indexed. Rows not ok hold zeros.
    labels : numpy.memmap
        (rows, n_classes) uint8 one-hot (multi-hot in a multi-label store), aligned with `tracks`.
    classes : list of str
        The class names, sorted (scikit-learn's LabelBinarizer order).

    Raises
    ------
    StoreError
        The folder is not a melset store, or cannot be read.

    Examples
    --------
    >>> store = Store("fma_small.melset")                       # doctest: +SKIP
    >>> x = store.mels[store.ok_rows()]                         # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike):
        self.root = os.path.abspath(os.fspath(root))
        self.manifest = read_manifest(self.root)
        import pandas as pd

        self.tracks = pd.read_parquet(os.path.join(self.root, TRACKS))
        if self.manifest.get("state") != "complete":
            # A run in progress or interrupted: the journal is newer than tracks.parquet.
            records = read_journal(os.path.join(self.root, JOURNAL))
            if records:
                rows = np.fromiter(records, dtype=np.int64, count=len(records))
                for col in (STATUS, ERROR, DURATION_S):
                    values = self.tracks[col].to_numpy(dtype=object if col != DURATION_S else np.float64, copy=True)
                    values[rows] = [getattr(records[r], col) for r in rows]
                    self.tracks[col] = values
        with open(os.path.join(self.root, CLASSES), encoding="utf-8") as f:
            self.classes: list[str] = json.load(f)
        self.mels = np.load(os.path.join(self.root, MELS), mmap_mode="r")
        self.labels = np.load(os.path.join(self.root, LABELS), mmap_mode="r")
        if self.manifest.get("labels", GENRE_TOP) not in LABEL_KINDS:
            raise StoreError(
                f"{self.root}: {MANIFEST} says labels {self.manifest.get('labels')!r}; this melset knows {', '.join(LABEL_KINDS)}"
            )
        if self.labels.shape != (len(self.tracks), len(self.classes)):
            raise StoreError(
                f"{self.root} is damaged: {LABELS} has shape {self.labels.shape}, expected {(len(self.tracks), len(self.classes))} "
                f"({len(self.tracks)} tracks, {len(self.classes)} classes); extract it again with --overwrite"
            )

    def __len__(self) -> int:
        return len(self.tracks)

    @property
    def label_kind(self) -> str:
        """What labels.npy encodes: genre_top (one-hot), or FMA's genres / genres_all (multi-hot)."""
        return self.manifest.get("labels", GENRE_TOP)

    @property
    def multi_label(self) -> bool:
        """True when a row may carry several labels (labels.npy is multi-hot)."""
        return self.label_kind != GENRE_TOP

    @property
    def recipe(self) -> dict[str, Any]:
        """The recipe the store was made with, as recorded in its manifest."""
        return self.manifest["identity"]["recipe"]

    def row_of(self, track_id) -> int:
        """Row index of a track id (int for FMA, str for other layouts)."""
        ids = self.tracks[TRACK_ID]
        key = int(track_id) if ids.dtype.kind in "iu" else str(track_id)
        hits = np.flatnonzero(ids.to_numpy() == key)
        if not len(hits):
            raise KeyError(f"track {track_id} is not in {self.root}")
        return int(hits[0])

    def ok_rows(self) -> np.ndarray:
        """Row indices whose status is ok."""
        return np.flatnonzero(self.tracks[STATUS].to_numpy() == OK)

    def verify(self) -> list[int]:
        """Rows whose bytes in mels.npy differ from what the journal recorded (should be none)."""
        records = read_journal(os.path.join(self.root, JOURNAL))
        flat = self.mels.reshape(len(self.mels), -1)
        return [row for row, r in sorted(records.items()) if zlib.crc32(flat[row].tobytes()) != r.crc32]

    def report(self) -> dict[str, Any]:
        """What the store holds, as plain data: counts per status and genre, every row that is
        not ok and why, unlisted files, the recipe and provenance (what `melset info` shows)."""
        from collections import Counter

        t = self.tracks
        status = Counter(t[STATUS])
        by_genre: dict[str, Counter] = {}
        for genre, st in zip(t[GENRE_TOP].fillna("(none)"), t[STATUS]):
            by_genre.setdefault(genre, Counter())[st] += 1
        problems = [
            {TRACK_ID: tid, STATUS: st, "reason": reason}
            for tid, st, reason in zip(t[TRACK_ID].tolist(), t[STATUS], t[ERROR])
            if st != OK
        ]
        m = self.manifest
        return {
            "store": self.root,
            "state": m.get("state"),
            "rows": len(t),
            "shape": m.get("shape"),
            "dtype": m.get("dtype"),
            "classes": self.classes,
            "labels": self.label_kind,
            "counts": {s: int(status.get(s, 0)) for s in (*STATUSES, PENDING)},
            "by_genre": {g: dict(c) for g, c in sorted(by_genre.items())},
            "problems": problems,
            "unlisted_files": m.get("unlisted_files", []),
            "unlisted_count": m.get("unlisted_count", 0),
            "no_genre": m.get("no_genre", 0),
            "recipe": self.recipe,
            "source": m.get("source", {}),
            "versions": m.get("versions", {}),
            "runs": m.get("runs", []),
        }
