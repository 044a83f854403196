"""Store: a store opened for reading, every file checked on opening, arrays memory-mapped."""

from __future__ import annotations

import math
import os
import zlib
from typing import Any

import numpy as np

from melset.errors import StoreError
from melset.store.checks import (
    _AGAIN,
    _REDO,
    _read_classes,
    _read_tracks,
    _rows_text,
    check_npy,
    damaged_rows,
    read_manifest,
)
from melset.store.format import CHECKSUMS, CREATING, FINISHED_STATES, _sha256, journal_owner, read_journal
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
    PENDING,
    STATUS,
    STATUSES,
    TRACK_ID,
    TRACKS,
)


class Store:
    """A store opened for reading: arrays memory-mapped, tables in pandas.

    Every file is checked on opening (manifest and its checksum, .npy headers and sizes,
    labels and classes, tracks.parquet, every journal line); a store that fails a check is
    refused with a StoreError that says what is wrong and what to do. The rows' bytes are
    checked by `verify` (all of them) and `row` (one).

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
    records : dict
        The journal's record of each finished row (status, reason, crc32 of its bytes).

    Raises
    ------
    StoreError
        The folder is not a melset store, or a file of it is damaged.

    Examples
    --------
    >>> store = Store("fma_small.melset")                       # doctest: +SKIP
    >>> x = store.mels[store.ok_rows()]                         # doctest: +SKIP
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
        with open(labels_path, "rb") as f:
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

    def row(self, row: int) -> np.ndarray:
        """One ok row's matrix, checked against its journal checksum and for non-finite values.

        Raises
        ------
        StoreError
            The row is not ok, or its bytes are damaged.
        """
        rec = self.records.get(row)
        if rec is None or rec.status != OK:
            raise StoreError(f"row {row} of {self.root} has no spectrogram ({rec.status if rec else PENDING})")
        x = np.array(self.mels[row])
        if zlib.crc32(x.tobytes()) != rec.crc32 or not np.isfinite(x).all():
            raise StoreError(
                f"row {row} of {self.root} is damaged (its bytes do not match the journal's checksum); "
                f"run `melset repair {self.root}`, then the same `melset extract` command again"
            )
        return x

    def verify(self) -> list[int]:
        """Rows whose bytes in mels.npy differ from what the journal recorded (should be none).

        Reads mels.npy in chunks of CHUNK_ROWS rows (bounded memory, whatever the store's size).
        """
        return damaged_rows(self._mels_file, self.records)

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
