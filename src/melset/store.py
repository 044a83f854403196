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
A new store's manifest is written first (state "creating"), so a folder holding store files
without a manifest is never melset's half-made store: it is refused, never deleted.

Nothing read back is trusted. manifest.json carries a sha256 of its own fields and of
labels.npy and tracks.parquet; .npy headers must match the manifest and the file sizes their
headers; every journal line is checked (a torn last line is a kill, any other bad line is
damage); each journal record holds the crc32 of its row's bytes. A resume reads only the
manifest, the journal and mels.npy (rows whose bytes miss their checksum are done again) and
writes the files derived from the catalog anew. `repair` marks damaged rows for re-extraction.
The store knows nothing of audio: callers hand it matrices and an identity to check.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import re
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
    TRACK_COLUMNS,
    TRACKS,
    CATALOG_COLUMNS,
    tracks_schema,
)

if TYPE_CHECKING:
    import pandas as pd

# pandas and pyarrow are imported where the tables are handled: engine workers import this
# module for RowSink alone and should not pay ~0.4 s and ~100 MB for them.

FORMAT = "melset-store/2"  # 2: sealed manifest, checksummed journal lines, identity by relative path
OLD_FORMATS = ("melset-store/1",)  # still recognised as melset's (so --overwrite may replace them), not read


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
        body = json.dumps(d, ensure_ascii=False, separators=(",", ":"))
        # the line's own checksum, over its bytes before it: an edited line cannot pass for a record
        return f"{body[:-1]}{LINE_CRC}{zlib.crc32(body[:-1].encode())}}}"


LINE_CRC = ',"line_crc32":'


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


# -- checking what is on disk ----------------------------------------------------------------------
# Nothing read back from a store is trusted: each reader below checks what it reads and raises
# StoreError with one sentence that names the file, what is wrong and what to do.

STORE_DTYPES = ("float16", "float32")
CREATING, RUNNING, INCOMPLETE, COMPLETE = "creating", "running", "incomplete", "complete"
STATES = (CREATING, RUNNING, INCOMPLETE, COMPLETE)
FINISHED_STATES = (INCOMPLETE, COMPLETE)  # tracks.parquet was written last and matches its checksum
CHECKSUM = "checksum"  # manifest.json's own sha256, over its other fields
CHECKSUMS = "checksums"  # sha256 of the files melset writes once per run (labels.npy, tracks.parquet)
CHUNK_ROWS = 64  # rows read at a time when checking mels.npy (16 MB of float16 128x1024 rows)
_TMP = re.compile(r"^(?:" + "|".join(re.escape(n) for n in STORE_FILES) + r")\.tmp\d+$")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != CHECKSUM}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())


def _sealed(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as it will read back from disk, with its checksum."""
    plain = json.loads(json.dumps({k: v for k, v in manifest.items() if k != CHECKSUM}, default=str))
    return {**plain, CHECKSUM: _manifest_digest(plain)}


def _write_manifest(root: str, manifest: dict[str, Any]) -> dict[str, Any]:
    sealed = _sealed(manifest)
    _write_json(os.path.join(root, MANIFEST), sealed)
    return sealed


def _melset_files(root: str) -> list[str]:
    """Files in root that melset wrote (a store's files and its own temporary files)."""
    return sorted(n for n in os.listdir(root) if n in STORE_FILES or _TMP.match(n))


def _refuse_files_without_manifest(root: str) -> None:
    held = [n for n in STORE_FILES if n not in (MANIFEST, LOCK) and os.path.lexists(os.path.join(root, n))]
    if held:
        raise StoreError(
            f"{root} holds {', '.join(held)} but no {MANIFEST}, so it is not a usable melset store and melset "
            f"will not touch it; restore {MANIFEST}, or move the folder away and run extract again"
        )


def _load_manifest(root: str) -> dict[str, Any]:
    """manifest.json parsed and recognised as melset's (format marker), not yet checked further."""
    path = os.path.join(root, MANIFEST)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        _refuse_files_without_manifest(root)
        raise StoreError(f"{root} is not a melset store (no {MANIFEST})") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path} ({exc.strerror}); check the store folder") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(
            f"{path} is not valid JSON ({exc}), so melset cannot tell this folder is its store and will not "
            "use or replace it; move the folder away and run extract again"
        ) from None
    if not isinstance(manifest, dict):
        raise StoreError(
            f"{path} holds a JSON {type(manifest).__name__}, not melset's manifest object; move the folder away and run extract again"
        )
    if manifest.get("format") not in (FORMAT, *OLD_FORMATS):
        raise StoreError(f"{root}: unknown store format {_short(manifest.get('format'))} (this melset reads {FORMAT})")
    return manifest


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_manifest(root: str) -> dict[str, Any]:
    """A store's manifest, checked: melset's format, its own checksum, and every field typed.

    Raises
    ------
    StoreError
        No manifest, not JSON, edited after melset wrote it, or a field of the wrong type.
    """
    manifest = _load_manifest(root)
    path = os.path.join(root, MANIFEST)
    rebuild = _REBUILD
    if manifest["format"] != FORMAT:
        raise StoreError(f"{root} was written by an older melset ({manifest['format']}); {rebuild}")
    if manifest.get(CHECKSUM) != _manifest_digest(manifest):
        raise StoreError(f"{path} was changed after melset wrote it (its checksum does not match); {rebuild}")
    rows, shape = manifest.get("rows"), manifest.get("shape")
    problems = []
    if not (_is_int(rows) and rows >= 0):
        problems.append(f"rows is {_short(rows)}, not a count")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(x) and x > 0 for x in shape[1:])):
        problems.append(f"shape is {_short(shape)}, not [rows, n_mels, n_frames]")
    elif not (_is_int(shape[0]) and shape[0] == rows):
        problems.append(f"shape {_short(shape)} does not match rows {_short(rows)}")
    if manifest.get("dtype") not in STORE_DTYPES:
        problems.append(f"dtype is {_short(manifest.get('dtype'))}, not one of {', '.join(STORE_DTYPES)}")
    classes = manifest.get("classes")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        problems.append(f"classes is {_short(classes)}, not a list of names")
    if not isinstance(manifest.get("identity"), dict):
        problems.append("identity is not an object")
    if manifest.get("state") not in STATES:
        problems.append(f"state is {_short(manifest.get('state'))}, not one of {', '.join(STATES)}")
    if not (isinstance(manifest.get("store_id"), str) and manifest["store_id"]):
        problems.append("store_id is missing")
    checksums = manifest.get(CHECKSUMS, {})
    if not (isinstance(checksums, dict) and all(isinstance(v, str) for v in checksums.values())):
        problems.append(f"{CHECKSUMS} is not an object of sha256 strings")
    if problems:
        raise StoreError(f"{path} is not a valid store manifest ({'; '.join(problems)}); {rebuild}")
    return manifest


_REBUILD = "rebuild the store with the same `melset extract` command and --overwrite"


@dataclass(frozen=True)
class NpyFile:
    """What a .npy header says, and how big the file is."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # where the data starts
    size: int  # bytes on disk now

    @property
    def expected_size(self) -> int:
        return self.offset + int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def read_npy_header(path: str, fix: str = "") -> NpyFile:
    """The header of a .npy file, read without mapping or loading the data.

    Raises StoreError when the file is missing or its header is not a valid .npy header;
    `fix` (what to do) ends its sentence.
    """
    fix = fix or _REBUILD
    fmt = np.lib.format
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            return NpyFile(path, tuple(shape), np.dtype(dtype), bool(fortran), f.tell(), os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        raise StoreError(f"{os.path.dirname(path)} is damaged: {name} is missing; {fix}") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path} ({exc.strerror}); {fix}") from None
    except Exception as exc:  # numpy raises ValueError, SyntaxError, EOFError, ... for a damaged header
        raise StoreError(f"{path} has no valid .npy header ({str(exc).splitlines()[0][:80]}); {fix}") from None


def check_npy(path: str, shape: tuple[int, ...], dtype: str, *, exact_size: bool = True, fix: str = "") -> NpyFile:
    """A .npy file's header checked against what the manifest says (shape, dtype, C order), and
    its size against the header: a file shorter or longer than header + data is damaged."""
    fix = fix or _REBUILD
    npy = read_npy_header(path, fix)
    want = np.dtype(dtype)
    if npy.shape != tuple(shape) or npy.dtype != want or npy.fortran:
        raise StoreError(
            f"{path} holds a {npy.dtype} array of shape {npy.shape}{' in Fortran order' if npy.fortran else ''}, "
            f"the manifest says {want} {tuple(shape)}; {fix}"
        )
    if exact_size and npy.size != npy.expected_size:
        kind = "truncated" if npy.size < npy.expected_size else "longer than its header says"
        raise StoreError(f"{path} is {kind} ({npy.size:,} bytes, {npy.expected_size:,} expected); {fix}")
    return npy


# -- the journal ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalScan:
    """Every line of a journal, sorted into good records and bad lines."""

    records: dict[int, Record]  # last valid record per row
    bad: list[tuple[int, int | None, str]]  # (line number, the row it names if it names one, what is wrong)
    good_bytes: int  # bytes up to the end of the last complete line
    size: int
    lines: int  # complete lines


def _parse_record(line: bytes, rows: int | None) -> Record:
    """One journal line as a Record; ValueError saying what is wrong otherwise."""
    try:
        d = json.loads(line)
    except ValueError:
        raise ValueError("is not JSON") from None
    if not isinstance(d, dict):
        raise ValueError("is not a JSON object")
    row = d.get("row")
    if not _is_int(row):
        raise ValueError(f"has row {_short(row)}, not a row number")
    if row < 0 or (rows is not None and row >= rows):
        raise _RowError(row, f"names row {row} but the store has {rows} rows")
    status, error, crc, duration = d.get(STATUS), d.get(ERROR), d.get("crc32"), d.get(DURATION_S)
    decoder = d.get("decoder", "")
    if status not in STATUSES:
        raise _RowError(row, f"has status {_short(status)}, not one of {', '.join(STATUSES)}")
    if not isinstance(error, str):
        raise _RowError(row, f"has error {_short(error)}, not a text")
    if not (_is_int(crc) and 0 <= crc < 2**32):
        raise _RowError(row, f"has crc32 {_short(crc)}, not a 32-bit checksum")
    if duration is not None and not (
        isinstance(duration, (int, float)) and not isinstance(duration, bool) and math.isfinite(duration)
    ):
        raise _RowError(row, f"has duration_s {_short(duration)}, not a number or null")
    if not isinstance(decoder, str):
        raise _RowError(row, f"has decoder {_short(decoder)}, not a text")
    cut = line.rfind(LINE_CRC.encode())
    if cut < 0 or d.get("line_crc32") != zlib.crc32(line[:cut]):
        raise _RowError(row, f"(row {row}) does not match its own checksum: it was changed after melset wrote it")
    return Record(row, status, error, math.nan if duration is None else float(duration), crc, decoder)


class _RowError(ValueError):
    def __init__(self, row: int, message: str):
        super().__init__(message)
        self.row = row


def scan_journal(path: str, rows: int | None = None) -> JournalScan:
    """Read every line of a journal. The last line without its newline is a write cut short by
    a kill (not damage); any other line that is not a valid record is listed in `bad`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        root = os.path.dirname(os.path.abspath(path))
        raise StoreError(
            f"{root} is damaged: {os.path.basename(path)} is missing; run `melset repair {root}` to mark every row for re-extraction"
        ) from None
    except OSError as exc:
        raise StoreError(f"cannot read {path} ({exc.strerror})") from None
    records: dict[int, Record] = {}
    bad: list[tuple[int, int | None, str]] = []
    good = 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):  # the last piece has no newline: torn or empty
        good += len(line) + 1
        try:
            rec = _parse_record(line, rows)
        except _RowError as exc:
            bad.append((number, exc.row, str(exc)))
            continue
        except ValueError as exc:
            bad.append((number, None, str(exc)))
            continue
        records[rec.row] = rec
    return JournalScan(records, bad, good, len(data), len(lines) - 1)


def read_journal(path: str, rows: int | None = None, truncate: bool = False) -> dict[int, Record]:
    """Committed records, last one per row winning, every line checked (row within `rows`).

    A torn last line (a kill mid-write) is dropped, and with truncate=True cut off so that new
    records start on a clean line. Any other bad line is damage: StoreError, which names the
    line and says to run `melset repair`.
    """
    scan = scan_journal(path, rows)
    if scan.bad:
        number, _, what = scan.bad[0]
        more = f" (and {len(scan.bad) - 1} more bad line(s))" if len(scan.bad) > 1 else ""
        root = os.path.dirname(os.path.abspath(path))
        raise StoreError(
            f"{path} line {number} {what}{more}; run `melset repair {root}` to mark the rows it "
            "affects for re-extraction, or rebuild the store with --overwrite"
        )
    if truncate and scan.good_bytes < scan.size:
        with open(path, "r+b") as f:
            f.truncate(scan.good_bytes)
    return scan.records


def _pread_all(fd: int, n: int, offset: int) -> bytes:
    parts, got = [], 0
    while got < n:
        b = os.pread(fd, n - got, offset + got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def damaged_rows(mels: NpyFile, records: dict[int, Record]) -> list[int]:
    """Rows whose bytes in mels.npy differ from the crc32 their journal record holds (or are
    cut off by a short file). Reads CHUNK_ROWS rows at a time with pread: memory stays bounded
    whatever the store's size, and rows without a record are not read at all."""
    row_bytes = int(np.prod(mels.shape[1:], dtype=np.int64)) * mels.dtype.itemsize
    bad = []
    rows = sorted(records)
    fd = os.open(mels.path, os.O_RDONLY)
    try:
        i = 0
        while i < len(rows):
            start = rows[i]
            end = start + CHUNK_ROWS
            chunk = []
            while i < len(rows) and rows[i] < end:
                chunk.append(rows[i])
                i += 1
            last = chunk[-1]
            buf = memoryview(_pread_all(fd, (last - start + 1) * row_bytes, mels.offset + start * row_bytes))
            for row in chunk:
                piece = buf[(row - start) * row_bytes : (row - start + 1) * row_bytes]
                if len(piece) != row_bytes or zlib.crc32(piece) != records[row].crc32:
                    bad.append(row)
            del buf
    finally:
        os.close(fd)
    return bad


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
        self._acquire_lock()
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

    def _acquire_lock(self) -> None:
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
        self._lock_fd = fd

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
            **extra,
        }
        # The manifest comes first: a folder with melset's files but no manifest is never
        # recognised as a store (nor deleted); one in state "creating" is recreated.
        self.manifest = _write_manifest(self.root, self.manifest)
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
        records = read_journal(os.path.join(root, JOURNAL), rows=n)
        _check_space(root, mels.expected_size - _blocks(mels_path))
        # every check passed: from here on the store is healed, never refused half-changed
        read_journal(os.path.join(root, JOURNAL), rows=n, truncate=True)  # a torn last line
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
            with open(path, "rb") as f:
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
        self.manifest = _write_manifest(self.root, self.manifest)

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
        return _counts(self.records, self.n_rows)

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
        data = tracks_parquet_bytes(self.base, self.records)
        _write_atomic(os.path.join(self.root, TRACKS), data)
        # recorded in the manifest written next; checked by readers once the state is finished
        self.manifest[CHECKSUMS] = {**self.manifest.get(CHECKSUMS, {}), TRACKS: _sha256(data)}

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


def _counts(records: dict[int, Record], n_rows: int) -> dict[str, int]:
    out = {s: 0 for s in (*STATUSES, PENDING)}
    for r in records.values():
        out[r.status] += 1
    out[PENDING] = n_rows - len(records)
    return out


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _blocks(path: str) -> int:
    """Bytes a file takes on disk (a sparse file takes less than its size)."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def _rows_text(rows: list[int], show: int = 20) -> str:
    return ", ".join(map(str, rows[:show])) + (f" ... ({len(rows) - show} more)" if len(rows) > show else "")


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


def _check_space(root: str, needed: int, reclaimable: int = 0) -> None:
    """Refuse up front when the disk cannot hold the rows still to write (mels.npy is sparse).
    reclaimable: bytes that files about to be replaced free."""
    free = shutil.disk_usage(root).free + reclaimable
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


def _read_classes(root: str, manifest: dict[str, Any]) -> list[str]:
    path = os.path.join(root, CLASSES)
    try:
        with open(path, "rb") as f:
            classes = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{root} is damaged: {CLASSES} is missing; {_AGAIN}") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path} ({exc}); {_AGAIN}") from None
    if classes != manifest["classes"]:
        raise StoreError(
            f"{path} does not list the classes the manifest names ({_short(manifest['classes'])}); {_AGAIN}"
        )
    return classes


def _read_tracks(root: str, manifest: dict[str, Any]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.path.join(root, TRACKS)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise StoreError(f"{root} is damaged: {TRACKS} is missing; {_AGAIN}") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path} ({exc.strerror})") from None
    if manifest["state"] in FINISHED_STATES and manifest.get(CHECKSUMS, {}).get(TRACKS) != _sha256(data):
        raise StoreError(f"{path} was changed after melset wrote it (its checksum does not match); {_AGAIN}")
    try:
        # an Arrow buffer, one thread: pyarrow's reader threads reading a Python file object
        # can abort or hang the interpreter at exit (apache/arrow#34314, #50482)
        table = pq.read_table(pa.BufferReader(data), use_threads=False).to_pandas()
    except Exception as exc:  # pyarrow raises many kinds for a damaged file
        raise StoreError(f"{path} is not a readable Parquet file ({str(exc).splitlines()[0][:80]}); {_AGAIN}") from None
    if list(table.columns) != list(TRACK_COLUMNS) or len(table) != manifest["rows"]:
        raise StoreError(
            f"{path} has {len(table)} rows with columns {list(table.columns)}, the store needs {manifest['rows']} rows "
            f"with {list(TRACK_COLUMNS)}; {_AGAIN}"
        )
    return table


_AGAIN = "run the same `melset extract` command again to rewrite it"
_REDO = "run the same `melset extract` command again to redo the rows it lost"


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
        self.records = read_journal(os.path.join(root, JOURNAL), rows=rows)
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


@dataclass(frozen=True)
class Repair:
    """What `repair` found and did."""

    root: str
    damaged: list[int]  # rows marked for re-extraction (bytes not matching their record, or named by a bad line)
    dropped_lines: list[int]  # journal lines that failed validation (line numbers)
    resized: bool  # mels.npy had the wrong size and was set to its header's
    journal_missing: bool  # journal.jsonl was missing: every row is done again

    @property
    def changed(self) -> bool:
        return bool(self.damaged or self.dropped_lines or self.resized or self.journal_missing)


def repair(root: str | os.PathLike) -> Repair:
    """Mark a store's damaged rows for re-extraction; the next `melset extract` run with the same
    arguments rebuilds exactly those.

    Damaged: rows whose bytes in mels.npy do not match their journal checksum (including rows
    cut off by a short mels.npy, which is set back to its size) and rows named by a journal
    line that fails validation. The journal is rewritten atomically (write, fsync, rename)
    with the last record of every sound row; damaged rows get none, so they are pending. The
    manifest says "running" before the journal changes, so a crash at any point leaves a store
    that the next extract run completes.

    Raises
    ------
    StoreError
        The manifest or mels.npy's header are damaged (nothing to repair from: rebuild the
        store), or another run holds the store.
    """
    root = os.path.abspath(os.fspath(root))
    manifest = read_manifest(root)
    w = StoreWriter(root)
    w._acquire_lock()
    try:
        if manifest["state"] == CREATING:
            raise StoreError(
                f"{root} is being created, or its creation was interrupted; run the same `melset extract` command again to finish it"
            )
        n = manifest["rows"]
        mels_path = os.path.join(root, MELS)
        mels = check_npy(mels_path, tuple(manifest["shape"]), manifest["dtype"], exact_size=False)
        journal = os.path.join(root, JOURNAL)
        missing = not os.path.lexists(journal)
        scan = JournalScan({}, [], 0, 0, 0) if missing else scan_journal(journal, rows=n)
        resized = mels.size != mels.expected_size
        if resized:
            os.truncate(mels_path, mels.expected_size)  # lost rows read as zeros: their checksums tell
            mels = read_npy_header(mels_path)
        named = {row for _, row, _ in scan.bad if row is not None}
        # a row named by a bad line loses its record: that line may have been its latest
        damaged = sorted(set(damaged_rows(mels, scan.records)) | named)
        result = Repair(root, damaged, [line for line, _, _ in scan.bad], resized, missing)
        if not result.changed:
            if scan.good_bytes < scan.size:
                read_journal(journal, rows=n, truncate=True)  # a torn last line only
            return result
        keep = {row: r for row, r in scan.records.items() if row not in set(damaged)}
        was_complete = manifest["state"] == COMPLETE
        manifest["state"] = RUNNING
        manifest = _write_manifest(root, manifest)
        _write_atomic(journal, "".join(keep[row].to_json() + "\n" for row in sorted(keep)).encode())
        try:
            import pandas as pd

            base = pd.read_parquet(os.path.join(root, TRACKS), columns=list(CATALOG_COLUMNS), use_threads=False)
        except Exception:  # pyarrow raises many kinds; the next extract writes it again from the catalog
            base = None
        if base is not None and len(base) == n:
            table = tracks_parquet_bytes(base, keep)
            _write_atomic(os.path.join(root, TRACKS), table)
            manifest[CHECKSUMS] = {**manifest.get(CHECKSUMS, {}), TRACKS: _sha256(table)}
            manifest["state"] = COMPLETE if was_complete and len(keep) == n else INCOMPLETE
        manifest["counts"] = _counts(keep, n)
        manifest["repairs"] = [*manifest.get("repairs", []), {"at": now_iso(), "rows": damaged}]
        _write_manifest(root, manifest)
        return result
    finally:
        w.close()
