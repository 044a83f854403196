"""What a store's files hold, byte for byte: the format marker, the states, the journal line,
the sealed manifest, tracks.parquet's encoding, and the atomic writes every file goes through.

A journal line is one Record as compact JSON ending in its own crc32 (LINE_CRC): `Record.to_json`
writes it, `_parse_record` checks it, `scan_journal`/`read_journal` read a whole journal, and
`journal_lines`/`rewrite_journal` are how a commit and a repair write them. A store whose manifest
says JOURNAL_BOUND writes its store_id into every line (`journal_owner`), so a journal copied in
from another store (another recipe, other tracks) is refused line by line, not taken as this
store's. The manifest also holds a digest of the track list (`catalog_digest`), checked
against tracks.parquet in every state, also in a store whose run was killed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import stat
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from melset.errors import StoreError
from melset.vocab import (
    DURATION_S,
    ERROR,
    GENRE_TOP,
    MANIFEST,
    PATH,
    PENDING,
    SPLIT,
    STATUS,
    STATUSES,
    SUBSET,
    TRACK_ID,
    TRACKS,
    tracks_schema,
)

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "melset-store/2"  # 2: sealed manifest, checksummed journal lines, identity by relative path
OLD_FORMATS = ("melset-store/1",)  # still recognised as melset's (so --overwrite may replace them), not read

STORE_DTYPES = ("float16", "float32")
CREATING, RUNNING, INCOMPLETE, COMPLETE = "creating", "running", "incomplete", "complete"
STATES = (CREATING, RUNNING, INCOMPLETE, COMPLETE)
FINISHED_STATES = (INCOMPLETE, COMPLETE)  # tracks.parquet was written last and matches its checksum
CHECKSUM = "checksum"  # manifest.json's own sha256, over its other fields
CHECKSUMS = "checksums"  # sha256 of the files melset writes once per run (labels.npy, tracks.parquet)
JOURNAL_BOUND = "journal_bound"  # true: every journal line carries the store's store_id
CATALOG_SHA = "catalog_sha256"  # digest of tracks.parquet's catalog columns, which stay fixed over a run


def now_iso() -> str:
    """The current UTC time as written into manifests."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def open_regular(path: str, mode: str = "rb"):
    """Open a store file for reading, once it is known to be a regular file: a FIFO in its place
    would wait for a writer for ever, a link to /dev/zero would read without end. The check is
    on the opened descriptor (O_NONBLOCK: opening a FIFO does not wait), so nothing can swap it
    in between. FileNotFoundError as open() raises it; StoreError for anything else."""
    fd = os.open(path, (os.O_RDWR if "+" in mode else os.O_RDONLY) | os.O_NONBLOCK | os.O_NOCTTY)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        root = os.path.dirname(os.path.abspath(path))
        raise StoreError(
            f"{path} is not a regular file (a FIFO, device or socket is in its place), so melset will not read it; "
            f"put the store's own file back, or move {root} away and run extract again"
        )
    os.set_blocking(fd, True)
    return os.fdopen(fd, mode)


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: str, obj: Any) -> None:
    _write_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n").encode())


# -- the sealed manifest ---------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != CHECKSUM}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())


def _sealed(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as it will read back from disk, with its checksum."""
    plain = json.loads(json.dumps({k: v for k, v in manifest.items() if k != CHECKSUM}, default=str))
    return {**plain, CHECKSUM: _manifest_digest(plain)}


def write_manifest(root: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write manifest.json atomically, sealed with its checksum; returns it as it reads back."""
    sealed = _sealed(manifest)
    _write_json(os.path.join(root, MANIFEST), sealed)
    return sealed


# -- the journal ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What happened to one row."""

    row: int
    status: str
    error: str
    duration_s: float
    crc32: int  # of the row's bytes in mels.npy
    decoder: str = ""  # which backend decoded the file, when one did

    def to_json(self, owner: str | None = None) -> str:
        """The journal line: compact JSON, with the store_id `owner` when given, ending in its own crc32."""
        d = {
            "row": self.row,
            STATUS: self.status,
            ERROR: self.error,
            DURATION_S: _json_float(self.duration_s),
            "crc32": self.crc32,
            "decoder": self.decoder,
        }
        if owner is not None:
            d[STORE_ID_KEY] = owner
        body = json.dumps(d, ensure_ascii=False, separators=(",", ":"))
        # the line's own checksum, over its bytes before it: an edited line cannot pass for a record
        return f"{body[:-1]}{LINE_CRC}{zlib.crc32(body[:-1].encode())}}}"


LINE_CRC = ',"line_crc32":'
STORE_ID_KEY = "store_id"


def journal_owner(manifest: dict[str, Any]) -> str | None:
    """The store_id this store's journal lines carry, or None for a store written before lines did."""
    return manifest["store_id"] if manifest.get(JOURNAL_BOUND) is True else None


def _json_float(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


@dataclass(frozen=True)
class JournalScan:
    """Every line of a journal, sorted into good records and bad lines."""

    records: dict[int, Record]  # last valid record per row
    bad: list[tuple[int, int | None, str]]  # (line number, the row it names if it names one, what is wrong)
    good_bytes: int  # bytes up to the end of the last complete line
    size: int
    lines: int  # complete lines


def _parse_record(line: bytes, rows: int | None, owner: str | None = None) -> Record:
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
    if owner is not None and d.get(STORE_ID_KEY) != owner:
        raise _RowError(
            row,
            f"(row {row}) belongs to another store (store_id {_short(d.get(STORE_ID_KEY))}, this store's is "
            f"{owner}): it was copied in from elsewhere",
        )
    return Record(row, status, error, math.nan if duration is None else float(duration), crc, decoder)


class _RowError(ValueError):
    def __init__(self, row: int, message: str):
        super().__init__(message)
        self.row = row


def scan_journal(path: str, rows: int | None = None, owner: str | None = None) -> JournalScan:
    """Read every line of a journal. The last line without its newline is a write cut short by
    a kill (not damage); any other line that is not a valid record (or, with `owner`, a line of
    another store) is listed in `bad`."""
    try:
        with open_regular(path) as f:
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
            rec = _parse_record(line, rows, owner)
        except _RowError as exc:
            bad.append((number, exc.row, str(exc)))
            continue
        except ValueError as exc:
            bad.append((number, None, str(exc)))
            continue
        records[rec.row] = rec
    return JournalScan(records, bad, good, len(data), len(lines) - 1)


def read_journal(
    path: str, rows: int | None = None, truncate: bool = False, owner: str | None = None
) -> dict[int, Record]:
    """Committed records, last one per row winning, every line checked (row within `rows`).

    A torn last line (a kill mid-write) is dropped, and with truncate=True cut off so that new
    records start on a clean line. Any other bad line is damage: StoreError, which names the
    line and says to run `melset repair`.
    """
    scan = scan_journal(path, rows, owner)
    if scan.bad:
        number, _, what = scan.bad[0]
        more = f" (and {len(scan.bad) - 1} more bad line(s))" if len(scan.bad) > 1 else ""
        root = os.path.dirname(os.path.abspath(path))
        raise StoreError(
            f"{path} line {number} {what}{more}; run `melset repair {root}` to mark the rows it "
            "affects for re-extraction, or rebuild the store with --overwrite"
        )
    if truncate and scan.good_bytes < scan.size:
        with open_regular(path, "r+b") as f:
            f.truncate(scan.good_bytes)
    return scan.records


def journal_lines(records: Iterable[Record], owner: str | None = None) -> bytes:
    """The journal's lines for these records, each ending in a newline (a commit appends them)."""
    return "".join(r.to_json(owner) + "\n" for r in records).encode()


def rewrite_journal(path: str, records: Iterable[Record], owner: str | None = None) -> None:
    """Replace a journal with these records' lines, atomically (write, fsync, rename)."""
    _write_atomic(path, journal_lines(records, owner))


def status_counts(records: dict[int, Record], n_rows: int) -> dict[str, int]:
    """Rows per status in these records, and the rows without one (pending)."""
    out = {s: 0 for s in (*STATUSES, PENDING)}
    for r in records.values():
        out[r.status] += 1
    out[PENDING] = n_rows - len(records)
    return out


# -- tracks.parquet ---------------------------------------------------------------------------------


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


def catalog_digest(table: pd.DataFrame) -> str:
    """sha256 of a table's catalog columns (track_id, path, genre_top, subset, split), values as
    tracks.parquet stores them: what a run never changes, so it is checked in every state."""
    columns = [table[TRACK_ID].tolist(), table[PATH].tolist()]
    columns += [_none_for_nan(table[c]) for c in (GENRE_TOP, SUBSET, SPLIT)]
    return _sha256(json.dumps(columns, ensure_ascii=False, separators=(",", ":")).encode())


def write_table(root: str, base: pd.DataFrame, records: dict[int, Record], manifest: dict[str, Any]) -> None:
    """Write tracks.parquet atomically and put its sha256 and its catalog digest into `manifest`
    (written next). The file's sha256 is checked once the state is finished (a kill between the
    two writes leaves a newer file); the catalog digest, which no run changes, always."""
    data = tracks_parquet_bytes(base, records)
    _write_atomic(os.path.join(root, TRACKS), data)
    manifest[CHECKSUMS] = {**manifest.get(CHECKSUMS, {}), TRACKS: _sha256(data)}
    manifest[CATALOG_SHA] = catalog_digest(base)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 60 else s[:57] + "..."
