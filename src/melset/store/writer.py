"""StoreWriter: create a store (or reopen one to resume it), write rows, commit them, finalize it;
and StoreLock, which keeps a second process from writing the same store."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from melset.errors import StoreError
from melset.store.checks import (
    _load_manifest,
    _refuse_files_without_manifest,
    _rows_text,
    check_npy,
    damaged_rows,
    read_manifest,
    read_npy_header,
)
from melset.store.format import (
    CHECKSUMS,
    COMPLETE,
    CREATING,
    FORMAT,
    INCOMPLETE,
    RUNNING,
    STORE_DTYPES,
    Record,
    _sha256,
    _short,
    _write_atomic,
    _write_json,
    JOURNAL_BOUND,
    journal_lines,
    journal_owner,
    open_regular,
    now_iso,
    read_journal,
    status_counts,
    write_manifest,
    write_table,
)
from melset.store.sink import RowSink, row_nbytes
from melset.store.space import _blocks, _check_space
from melset.vocab import (
    CLASSES,
    JOURNAL,
    LABELS,
    LOCK,
    MANIFEST,
    MELS,
    OK,
    PENDING,
    STATUSES,
    STORE_FILES,
    STORE_ID,
)

if TYPE_CHECKING:
    import pandas as pd

_TMP = re.compile(r"^(?:" + "|".join(re.escape(n) for n in STORE_FILES) + r")\.tmp\d+$")


def _melset_files(root: str) -> list[str]:
    """Files in root that melset wrote (a store's files and its own temporary files)."""
    return sorted(n for n in os.listdir(root) if n in STORE_FILES or _TMP.match(n))


class StoreLock:
    """The store's lock file, held while one process writes the store (extract, repair).

    A second process is refused with a StoreError that names the holder's pid. Use it as a
    context manager, or call `acquire` and `release`.
    """

    def __init__(self, root: str):
        self.root = root
        self.fd: int | None = None

    def acquire(self) -> StoreLock:
        path = os.path.join(self.root, LOCK)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open {path} ({exc.strerror}); check the store folder's permissions") from None
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
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class StoreWriter:
    """Creates a store (or reopens one to resume it), writes rows, commits them, finalizes it."""

    def __init__(self, root: str):
        self.root = root
        self._lock = StoreLock(root)
        self._mels_fd: int | None = None
        self._journal_fd: int | None = None
        self._pending: list[Record] = []
        self.records: dict[int, Record] = {}
        self.manifest: dict[str, Any] = {}
        self.base: pd.DataFrame | None = None
        self.notes: list[str] = []  # damage found on resume and healed (rows done again, files rewritten)

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

        A folder is replaced (overwrite=True) only when its manifest.json is melset's, and then
        only melset's own files are removed, after the free-space check has passed. Files that
        melset did not write are never removed.
        """
        if dtype not in STORE_DTYPES:
            raise ValueError(f"dtype must be one of {STORE_DTYPES}, not {dtype!r}")
        root = os.path.abspath(os.fspath(root))
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store folder {root} ({exc.strerror})") from None
        if not os.path.isdir(root):
            raise StoreError(f"{root} is not a folder; choose another --out")
        self = cls(root)
        self._lock.acquire()
        try:
            self._open(identity, tracks, labels, classes, shape, dtype, overwrite, extra or {})
        except BaseException:
            self.close()
            raise
        return self

    def _open(self, identity, tracks, labels, classes, shape, dtype, overwrite, extra) -> None:
        root = self.root
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        if not os.path.lexists(os.path.join(root, MANIFEST)):
            others = sorted(set(os.listdir(root)) - set(_melset_files(root)))
            if others:
                raise StoreError(
                    f"{root} exists and is not a melset store (it holds {', '.join(others[:3])}); choose an empty --out"
                )
            _refuse_files_without_manifest(root)
        else:
            old = _load_manifest(root)  # refuses what melset cannot recognise as its own store
            if old.get("state") != CREATING and not overwrite:
                self._resume(identity, tracks, labels, classes, shape, dtype, extra)
                return
        needed = len(tracks) * row_nbytes(shape, dtype)
        # what an overwrite frees counts as free: checked before anything is removed
        _check_space(root, needed, reclaimable=sum(_blocks(os.path.join(root, n)) for n in _melset_files(root)))
        for name in _melset_files(root):
            if name != LOCK:
                os.remove(os.path.join(root, name))
        self._create(identity, tracks, labels, classes, shape, dtype, extra)

    def _create(self, identity, tracks, labels, classes, shape, dtype, extra) -> None:
        import uuid

        n = len(tracks)
        store_id = uuid.uuid4().hex
        self.manifest = {
            "format": FORMAT,
            "store_id": store_id,
            "state": CREATING,
            "identity": identity,
            "rows": n,
            "shape": [n, *shape],
            "dtype": dtype,
            "classes": list(classes),
            "created": now_iso(),
            JOURNAL_BOUND: True,
            **extra,
        }
        # The manifest comes first: a folder with melset's files but no manifest is never
        # recognised as a store (nor deleted); one in state "creating" is recreated.
        self.manifest = write_manifest(self.root, self.manifest)
        _write_atomic(os.path.join(self.root, STORE_ID), (store_id + "\n").encode("ascii"))
        # A sparse file: rows not yet written read as zeros and take no disk space.
        mm = np.lib.format.open_memmap(
            os.path.join(self.root, MELS), mode="w+", dtype=np.dtype(dtype), shape=(n, *shape)
        )
        del mm
        labels_bytes = _npy_bytes(labels)
        _write_atomic(os.path.join(self.root, LABELS), labels_bytes)
        _write_json(os.path.join(self.root, CLASSES), list(classes))
        self.base = tracks.reset_index(drop=True)
        self.manifest[CHECKSUMS] = {LABELS: _sha256(labels_bytes)}
        self._write_table()
        open(os.path.join(self.root, JOURNAL), "wb").close()
        self.manifest["state"] = RUNNING
        self._save_manifest()
        self._open_files()

    def _resume(self, identity, tracks, labels, classes, shape, dtype, extra) -> None:
        """Reopen a store made with the same identity. Only the manifest, the journal and
        mels.npy are read back (each checked); the files derived from the catalog (labels,
        classes, tracks.parquet, .store_id) are written again from it, which also follows a
        collection that moved."""
        root = self.root
        self.manifest = read_manifest(root)
        if self.manifest["identity"] != identity:
            diff = _first_difference(self.manifest["identity"], identity)
            raise StoreError(
                f"{root} holds a store made with other parameters ({diff}); use --overwrite to replace it, or choose another --out"
            )
        n = self.manifest["rows"]
        if (
            n != len(tracks)
            or self.manifest["shape"][1:] != list(shape)
            or self.manifest["dtype"] != dtype
            or self.manifest["classes"] != list(classes)
        ):
            raise StoreError(
                f"{root} does not match this run ({n} rows of {self.manifest['shape'][1:]} {self.manifest['dtype']}, "
                f"asked {len(tracks)} of {list(shape)} {dtype}); use --overwrite to replace it, or choose another --out"
            )
        mels_path = os.path.join(root, MELS)
        mels = check_npy(mels_path, (n, *shape), dtype, exact_size=False)
        owner = journal_owner(self.manifest)
        records = read_journal(os.path.join(root, JOURNAL), rows=n, owner=owner)
        _check_space(root, mels.expected_size - _blocks(mels_path))
        # every check passed: from here on the store is healed, never refused half-changed
        read_journal(os.path.join(root, JOURNAL), rows=n, truncate=True, owner=owner)  # a torn last line
        if mels.size != mels.expected_size:
            self.notes.append(
                f"{MELS} was {mels.size:,} bytes, {mels.expected_size:,} expected: set to its size, rows it lost are done again"
            )
            os.truncate(mels_path, mels.expected_size)
            mels = read_npy_header(mels_path)
        bad = damaged_rows(mels, records)
        if bad:
            self.notes.append(
                f"{len(bad)} row(s) did not match their journal checksum and are done again: {_rows_text(bad)}"
            )
            for row in bad:
                del records[row]
        self.records = records
        store_id = self.manifest["store_id"]
        self._heal(STORE_ID, (store_id + "\n").encode("ascii"))
        labels_bytes = _npy_bytes(labels)
        self._heal(LABELS, labels_bytes)
        self._heal(CLASSES, (json.dumps(list(classes), indent=2, ensure_ascii=False) + "\n").encode())
        self.base = tracks.reset_index(drop=True)
        self.manifest.update(extra)
        self.manifest[CHECKSUMS] = {**self.manifest.get(CHECKSUMS, {}), LABELS: _sha256(labels_bytes)}
        self.manifest["state"] = RUNNING
        self._write_table()
        self._save_manifest()
        self._open_files()

    def _heal(self, name: str, data: bytes) -> None:
        """Write a file derived from the catalog again when what is on disk differs."""
        path = os.path.join(self.root, name)
        try:
            with open_regular(path) as f:
                same = f.read() == data
        except FileNotFoundError:
            same = False
            self.notes.append(f"{name} was missing and is written again")
        else:
            if not same:
                self.notes.append(f"{name} was damaged and is written again")
        if not same:
            _write_atomic(path, data)

    def _open_files(self) -> None:
        mels_path = os.path.join(self.root, MELS)
        shape, dtype = tuple(self.manifest["shape"][1:]), self.manifest["dtype"]
        offset = read_npy_header(mels_path).offset
        self.sink = RowSink(mels_path, offset, shape, dtype, self.manifest["store_id"])
        self._mels_fd = os.open(mels_path, os.O_RDWR)
        self._journal_fd = os.open(os.path.join(self.root, JOURNAL), os.O_WRONLY | os.O_APPEND)

    def _save_manifest(self) -> None:
        self.manifest = write_manifest(self.root, self.manifest)

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
        view = memoryview(journal_lines(self._pending, journal_owner(self.manifest)))
        while view:  # a short write on a full disk ends in an error on the next try: a torn last line
            view = view[os.write(self._journal_fd, view) :]
        os.fsync(self._journal_fd)
        for r in self._pending:
            self.records[r.row] = r
        n = len(self._pending)
        self._pending = []
        return n

    def counts(self) -> dict[str, int]:
        return status_counts(self.records, self.n_rows)

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
                "state": COMPLETE if complete else INCOMPLETE,
                "counts": counts,
                "decoders": decoders,
                "updated": now_iso(),
            }
        )
        self._save_manifest()
        return self.manifest

    def _write_table(self) -> None:
        write_table(self.root, self.base, self.records, self.manifest)

    def close(self) -> None:
        for attr in ("_mels_fd", "_journal_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
        self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _first_difference(old: Any, new: Any, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.') or 'value'}: stored {_short(old)}, asked {_short(new)}"
