"""Store: a store opened for reading, every file checked on opening, arrays memory-mapped."""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from melset.errors import StoreError
from melset.store.checks import (
    _AGAIN,
    CHUNK_ROWS,
    _REDO,
    _read_classes,
    _read_tracks,
    _not_finite,
    _pread_into,
    _rows_text,
    check_npy,
    read_manifest,
)
from melset.store.format import (
    CHECKSUMS,
    CREATING,
    FINISHED_STATES,
    _sha256,
    journal_owner,
    open_regular,
    read_journal,
)
from melset.vocab import (
    DURATION_S,
    ERROR,
    GENRE_TOP,
    JOURNAL,
    LABEL_KINDS,
    LABELS,
    MANIFEST,
    MELS,
    OK,
    PATH,
    PENDING,
    SPLIT,
    STATUS,
    STATUSES,
    SUBSET,
    TRACK_ID,
    TRACKS,
)

MEL, LABEL = "mel", "label"  # a row's matrix and class index(es), as the hf export names them


def _row_array(rows: Sequence[int]) -> np.ndarray:
    return np.asarray(rows if isinstance(rows, np.ndarray) else list(rows), dtype=np.int64).reshape(-1)


class RowReader:
    """The one checked way to read a store's matrices: each row read is compared with the crc32
    its journal record holds and checked to hold only finite values, so a damaged row is never
    handed on.

    Rows are read with pread (a run of consecutive rows at once), so memory stays bounded by
    the rows asked for and a file cut short after opening reads as damage, never as a crash.
    A reader pickles without its open file (each DataLoader worker opens its own). Made by
    `Store.reader`.

    Parameters
    ----------
    root : str
        The store, for the sentences.
    path, offset, row_shape, dtype
        mels.npy, where its data starts, one matrix's shape and the stored dtype.
    crcs : dict of int to int
        The journal's crc32 of each row this reader may read.
    track_ids : dict of int to object
        Each row's track id, for the sentences.
    """

    def __init__(self, root: str, path: str, offset: int, row_shape, dtype, crcs: dict, track_ids: dict):
        self.root, self.path, self.offset = root, path, int(offset)
        self.row_shape, self.dtype = tuple(int(n) for n in row_shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._crcs, self._track_ids = crcs, track_ids
        self._fd: int | None = None

    def damaged_error(self, row: int) -> StoreError:
        """The sentence for a damaged row: which row and track, and what to do."""
        return StoreError(
            f"row {row} of {self.root} (track {self._track_ids.get(row)}) is damaged (its bytes do not match the "
            f"journal's checksum, or hold values that are not finite); run `melset repair {self.root}`, "
            "then the same `melset extract` command again"
        )

    def _block(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The matrices of `rows` in order, and a bool per row: damaged."""
        unknown = [int(r) for r in rows if int(r) not in self._crcs]
        if unknown:
            raise KeyError(f"row {unknown[0]} of {self.root} is not among the rows this reader was made for")
        if self._fd is None:
            with open_regular(self.path) as f:  # mels.npy replaced by a FIFO since opening: refused, not waited on
                self._fd = os.dup(f.fileno())
        n = len(rows)
        out = np.empty((n, *self.row_shape), dtype=self.dtype)
        bad = np.zeros(n, dtype=bool)
        j = 0
        while j < n:  # one pread per run of consecutive rows
            k = j + 1
            while k < n and rows[k] == rows[k - 1] + 1:
                k += 1
            buf = memoryview(out[j:k].reshape(-1).view(np.uint8))
            got = _pread_into(self._fd, buf, self.offset + int(rows[j]) * self.row_bytes)
            bad[j + got // self.row_bytes : k] = True  # cut off by a short file
            j = k
        bad |= _not_finite(out.reshape(n, -1))
        for j in np.flatnonzero(~bad):
            bad[j] = zlib.crc32(out[j]) != self._crcs[int(rows[j])]
        return out, bad

    def read(self, rows: Sequence[int]) -> np.ndarray:
        """The matrices of `rows`, in order: (len(rows), n_mels, n_frames) in the stored dtype.

        Raises
        ------
        StoreError
            A row is damaged (the sentence names the first).
        """
        rows = _row_array(rows)
        out, bad = self._block(rows)
        if bad.any():
            raise self.damaged_error(int(rows[np.argmax(bad)]))
        return out

    def chunks(
        self, rows: Sequence[int], chunk_rows: int = CHUNK_ROWS, damaged: list[int] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`rows` read `chunk_rows` at a time, in order: yields (rows, matrices) per chunk.

        Parameters
        ----------
        rows : sequence of int
        chunk_rows : int
            Rows per chunk (memory: this many matrices).
        damaged : list, optional
            Without it a damaged row raises StoreError. With it, for a consumer that can go on
            without the row, damaged rows are left out of the chunks and appended to it.
        """
        rows = _row_array(rows)
        step = max(1, int(chunk_rows))
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            out, bad = self._block(part)
            if bad.any():
                if damaged is None:
                    raise self.damaged_error(int(part[np.argmax(bad)]))
                damaged.extend(int(r) for r in part[bad])
                part, out = part[~bad], out[~bad]
            yield part, out

    def close(self) -> None:
        """Close the file (a later read opens it again)."""
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}  # each process opens the file itself


class Store:
    """A store opened for reading: arrays memory-mapped, tables in pandas.

    Every file is checked on opening (manifest and its checksum, .npy headers and sizes,
    labels and classes, tracks.parquet, every journal line); a store that fails a check is
    refused with a StoreError that says what is wrong and what to do. Matrices are read
    checked (crc32 of the journal, finite values) through `reader`, `rows`, `iter_rows` and
    `row`; `verify` checks every row. `mels` is the raw memory map, unchecked.

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
        Unchecked: read matrices through `rows` / `iter_rows` / `row`.
    labels : numpy.memmap
        (rows, n_classes) uint8 one-hot (multi-hot in a multi-label store), aligned with `tracks`.
    classes : list of str
        The class names, sorted (scikit-learn's LabelBinarizer order).
    records : dict
        The journal's record of each finished row (status, reason, crc32 of its bytes).

    Raises
    ------
    StoreError
        The folder is not a melset store, or a file of it is damaged.

    Examples
    --------
    >>> store = Store("fma_small.melset")                       # doctest: +SKIP
    >>> x = store.rows(store.ok_rows()[:32])                    # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike):
        self.root = root = os.path.abspath(os.fspath(root))
        self.manifest = m = read_manifest(root)
        if m.get("labels", GENRE_TOP) not in LABEL_KINDS:
            raise StoreError(
                f"{root}: {MANIFEST} says labels {m.get('labels')!r}; this melset knows {', '.join(LABEL_KINDS)}"
            )
        if m["state"] == CREATING:
            raise StoreError(
                f"{root} is being created, or its creation was interrupted; run the same `melset extract` command again to finish it"
            )
        rows, shape = m["rows"], tuple(m["shape"])
        self._mels_file = mels = check_npy(os.path.join(root, MELS), shape, m["dtype"], exact_size=False)
        if mels.size != mels.expected_size:
            kind = "truncated" if mels.size < mels.expected_size else "longer than its header says"
            raise StoreError(f"{mels.path} is {kind} ({mels.size:,} bytes, {mels.expected_size:,} expected); {_REDO}")
        labels_path = os.path.join(root, LABELS)
        check_npy(labels_path, (rows, len(m["classes"])), "uint8", fix=_AGAIN)
        with open_regular(labels_path) as f:
            if _sha256(f.read()) != m.get(CHECKSUMS, {}).get(LABELS):
                raise StoreError(
                    f"{labels_path} was changed after melset wrote it (its checksum does not match); {_AGAIN}"
                )
        self.classes: list[str] = _read_classes(root, m)
        self.tracks = _read_tracks(root, m)
        self.records = read_journal(os.path.join(root, JOURNAL), rows=rows, owner=journal_owner(m))
        self._apply_journal()
        self.mels = np.load(os.path.join(root, MELS), mmap_mode="r")
        self.labels = np.load(labels_path, mmap_mode="r")

    def _apply_journal(self) -> None:
        """The outcome columns from the journal (the truth; tracks.parquet may be older while a
        run is going). A finished store's table must agree with it."""
        n = len(self.tracks)
        status = np.full(n, PENDING, dtype=object)
        error = np.full(n, "", dtype=object)
        duration = np.full(n, math.nan)
        for row, r in self.records.items():
            status[row], error[row], duration[row] = r.status, r.error, r.duration_s
        if self.manifest["state"] in FINISHED_STATES:
            differ = np.flatnonzero(self.tracks[STATUS].to_numpy(dtype=object) != status)
            if len(differ):
                raise StoreError(
                    f"{os.path.join(self.root, JOURNAL)} disagrees with {TRACKS} on {len(differ)} row(s) "
                    f"({_rows_text(differ.tolist(), 5)}); run `melset repair {self.root}` to mark them for re-extraction"
                )
        self.tracks[STATUS], self.tracks[ERROR], self.tracks[DURATION_S] = status, error, duration

    def __len__(self) -> int:
        return len(self.tracks)

    def __repr__(self) -> str:
        m = self.manifest
        counts = self.tracks[STATUS].value_counts()
        held = ", ".join(f"{s} {int(counts[s])}" for s in (*STATUSES, PENDING) if counts.get(s, 0))
        shape = "x".join(str(n) for n in m["shape"][1:])
        return (
            f"melset Store {self.root}: {m['state']}, {len(self)} rows of {shape} {m['dtype']}\n"
            f"    {held or 'no rows'}; labels {self.label_kind}, {len(self.classes)} classes"
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Row `index` (negative counts from the end) as a dict, as a Hugging Face dataset row:
        its matrix read checked, and its metadata.

        Keys: ``mel`` (n_mels, n_frames) in the stored dtype; ``label`` the class index into
        `classes` (-1 without a genre), or in a multi-label store the list of class indices, as
        the hf export has it; ``track_id``, ``path``, ``genre_top``, ``subset``, ``split``,
        ``status`` (always ok) and ``duration_s``.

        Raises
        ------
        IndexError
            `index` is outside the store's rows.
        StoreError
            The row has no matrix (it is not ok: the sentence says why), or its bytes are damaged.
        """
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(
                f"a store is indexed by one row number, not {type(index).__name__}; "
                "store.rows(list_of_rows) reads many, store.track(track_id) one track"
            )
        n = len(self)
        row = int(index) + n if index < 0 else int(index)
        if not 0 <= row < n:
            raise IndexError(f"row {index} is outside {self.root}, which has {n} rows")
        t = self.tracks
        status = t[STATUS].iat[row]
        if status != OK:
            why = t[ERROR].iat[row]
            raise StoreError(
                f"row {row} of {self.root} (track {t[TRACK_ID].iat[row]}) has no spectrogram: {status}"
                f"{f' ({why})' if why else ''}; store.ok_rows() lists the rows that have one"
            )
        return self._record(row, self.row(row))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every ok row, in order, as `store[row]` gives it (the other rows have no matrix)."""
        for rows, block in self.iter_rows():
            for row, mel in zip(rows.tolist(), block):
                yield self._record(row, mel)

    def track(self, track_id) -> dict[str, Any]:
        """A track's row, as `store[row]` gives it; KeyError for an id the store does not hold."""
        return self[self.row_of(track_id)]

    def label_of(self, row: int) -> int | list[int]:
        """A row's label as the hf export encodes it: its class index (-1 without one), or the
        list of its class indices in a multi-label store."""
        hot = np.flatnonzero(np.asarray(self.labels[row])).tolist()
        return hot if self.multi_label else hot[0] if hot else -1

    def _record(self, row: int, mel: np.ndarray) -> dict[str, Any]:
        t = self.tracks
        tid, genre, duration = t[TRACK_ID].iat[row], t[GENRE_TOP].iat[row], float(t[DURATION_S].iat[row])
        return {
            MEL: mel,
            LABEL: self.label_of(row),
            TRACK_ID: int(tid) if isinstance(tid, (int, np.integer)) else str(tid),
            PATH: str(t[PATH].iat[row]),
            GENRE_TOP: genre if isinstance(genre, str) else None,
            SUBSET: t[SUBSET].iat[row] if isinstance(t[SUBSET].iat[row], str) else None,
            SPLIT: t[SPLIT].iat[row] if isinstance(t[SPLIT].iat[row], str) else None,
            STATUS: t[STATUS].iat[row],
            DURATION_S: None if math.isnan(duration) else duration,
        }

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
        return self.manifest["identity"].get("recipe", {})

    def row_of(self, track_id) -> int:
        """Row index of a track id (int for FMA, str for other layouts)."""
        ids = self.tracks[TRACK_ID]
        try:
            key = int(track_id) if ids.dtype.kind in "iu" else str(track_id)
        except ValueError:
            raise KeyError(f"track {track_id} is not in {self.root} (its track ids are numbers)") from None
        hits = np.flatnonzero(ids.to_numpy() == key)
        if not len(hits):
            raise KeyError(f"track {track_id} is not in {self.root}")
        return int(hits[0])

    def ok_rows(self) -> np.ndarray:
        """Row indices whose status is ok."""
        return np.flatnonzero(self.tracks[STATUS].to_numpy() == OK)

    def reader(self, rows: Sequence[int] | None = None) -> RowReader:
        """A checked reader of some ok rows (all of them by default), that pickles small.

        Raises
        ------
        StoreError
            A row is not ok (it has no spectrogram).
        """
        rows = self.ok_rows() if rows is None else _row_array(rows)
        crcs = {}
        for row in rows.tolist():
            rec = self.records.get(row)
            if rec is None or rec.status != OK:
                raise StoreError(f"row {row} of {self.root} has no spectrogram ({rec.status if rec else PENDING})")
            crcs[row] = rec.crc32
        return self._reader(crcs)

    def _reader(self, crcs: dict[int, int]) -> RowReader:
        ids = self.tracks[TRACK_ID].to_numpy()
        f = self._mels_file
        return RowReader(self.root, f.path, f.offset, f.shape[1:], f.dtype, crcs, {r: ids[r] for r in crcs})

    def rows(self, rows: Sequence[int]) -> np.ndarray:
        """Ok rows' matrices, in order, each checked against its journal checksum and for
        non-finite values: (len(rows), n_mels, n_frames) in the stored dtype.

        Raises
        ------
        StoreError
            A row is not ok, or its bytes are damaged (the sentence names the row, its track,
            and says to run `melset repair`, then extract again).
        """
        rows = _row_array(rows)
        return self.reader(rows).read(rows)

    def iter_rows(
        self, rows: Sequence[int] | None = None, chunk_rows: int = CHUNK_ROWS, damaged: list[int] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Ok rows (all by default) read checked, `chunk_rows` at a time: yields (rows, matrices).

        With `damaged` (a list) a damaged row is left out and appended there, for a consumer
        that can go on without it; without it, a damaged row raises StoreError. See
        `RowReader.chunks`.
        """
        rows = self.ok_rows() if rows is None else _row_array(rows)
        return self.reader(rows).chunks(rows, chunk_rows, damaged)

    def row(self, row: int) -> np.ndarray:
        """One ok row's matrix, checked against its journal checksum and for non-finite values.

        Raises
        ------
        StoreError
            The row is not ok, or its bytes are damaged.
        """
        return self.rows([row])[0]

    def verify(self) -> list[int]:
        """Rows whose bytes in mels.npy differ from what the journal recorded, or hold values
        that are not finite (should be none).

        Reads mels.npy CHUNK_ROWS rows at a time (bounded memory, whatever the store's size).
        """
        bad: list[int] = []
        reader = self._reader({row: rec.crc32 for row, rec in self.records.items()})
        for _ in reader.chunks(sorted(self.records), damaged=bad):
            pass
        reader.close()
        return bad

    def describe(self) -> dict[str, Any]:
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
