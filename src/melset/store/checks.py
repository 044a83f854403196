"""Read-back validation: nothing read back from a store is trusted.

Each reader below checks what it reads and raises StoreError with one sentence that names the
file, what is wrong and what to do: the manifest (melset's format, its own checksum, typed
fields), .npy headers and sizes, classes.json, tracks.parquet, and each row's bytes against the
crc32 its journal record holds.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from melset.errors import StoreError
from melset.store.format import (
    open_regular,
    CATALOG_SHA,
    CHECKSUM,
    CHECKSUMS,
    JOURNAL_BOUND,
    FINISHED_STATES,
    FORMAT,
    OLD_FORMATS,
    STATES,
    STORE_DTYPES,
    Record,
    _is_int,
    _manifest_digest,
    _sha256,
    _short,
    catalog_digest,
)
from melset.vocab import CLASSES, LOCK, MANIFEST, STORE_FILES, TRACK_COLUMNS, TRACKS

if TYPE_CHECKING:
    import pandas as pd

CHUNK_ROWS = 64  # rows read at a time when checking mels.npy (16 MB of float16 128x1024 rows)


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
        with open_regular(path) as f:
            raw = f.read()
    except FileNotFoundError:
        if not os.path.lexists(root):
            raise StoreError(f"{root}: no such folder; give the folder `melset extract --out` made") from None
        _refuse_files_without_manifest(root)
        raise StoreError(f"{root} is not a melset store (no {MANIFEST})") from None
    except NotADirectoryError:
        raise StoreError(f"{root} is a file, not a store; give the folder `melset extract --out` made") from None
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
    store_id = manifest.get("store_id")
    if not (isinstance(store_id, str) and store_id):
        problems.append("store_id is missing")
    elif not (store_id.isascii() and store_id.isalnum() and len(store_id) <= 64):
        # melset writes uuid4().hex; it becomes .store_id's line and every journal line's owner
        problems.append(f"store_id is {_short(store_id)}, not letters and digits")
    checksums = manifest.get(CHECKSUMS, {})
    if not (isinstance(checksums, dict) and all(isinstance(v, str) for v in checksums.values())):
        problems.append(f"{CHECKSUMS} is not an object of sha256 strings")
    if not isinstance(manifest.get(CATALOG_SHA, ""), str):
        problems.append(f"{CATALOG_SHA} is {_short(manifest.get(CATALOG_SHA))}, not a sha256 string")
    if not isinstance(manifest.get(JOURNAL_BOUND, False), bool):
        problems.append(f"{JOURNAL_BOUND} is {_short(manifest.get(JOURNAL_BOUND))}, not true or false")
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
        with open_regular(path) as f:
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
    except StoreError:
        raise
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


def _not_finite(block: np.ndarray) -> np.ndarray:
    """Per row of a 2-D float block: holds a NaN or an infinity. Compares the bits (exponent
    all ones), several times faster than np.isfinite on float16."""
    if block.dtype.kind != "f":
        return np.zeros(len(block), dtype=bool)
    size = block.dtype.itemsize
    bits = np.dtype(f"u{size}")
    inf = np.array(np.inf, dtype=block.dtype).view(bits)
    if not block.size:
        return np.zeros(len(block), dtype=bool)
    return (block.view(bits) & bits.type((1 << (8 * size - 1)) - 1)).max(axis=1) >= inf


def _pread_into(fd: int, buf: memoryview, offset: int) -> int:
    """Fill `buf` from the file at `offset`; the bytes read (fewer only where the file ends)."""
    done = 0
    while done < len(buf):
        n = os.preadv(fd, [buf[done:]], offset + done)
        if n == 0:
            break
        done += n
    return done


def damaged_rows(mels: NpyFile, records: dict[int, Record]) -> list[int]:
    """Rows whose bytes in mels.npy differ from the crc32 their journal record holds, hold values
    that are not finite (a forged journal line), or are cut off by a short file. Reads CHUNK_ROWS
    rows at a time with pread: memory stays bounded whatever the store's size, and rows without a
    record are not read at all. The checks are the reader's (`RowReader`)."""
    row_bytes = int(np.prod(mels.shape[1:], dtype=np.int64)) * mels.dtype.itemsize
    bad = []
    rows = sorted(records)
    with open_regular(mels.path) as held:
        i = 0
        while i < len(rows):
            start = rows[i]
            chunk = []
            while i < len(rows) and rows[i] < start + CHUNK_ROWS:
                chunk.append(rows[i])
                i += 1
            block = np.empty((chunk[-1] - start + 1, *mels.shape[1:]), dtype=mels.dtype)
            got = _pread_into(held.fileno(), memoryview(block.reshape(-1).view(np.uint8)), mels.offset + start * row_bytes)
            not_finite = _not_finite(block.reshape(len(block), -1))
            for row in chunk:
                j = row - start
                if (
                    (j + 1) * row_bytes > got
                    or zlib.crc32(block[j]) != records[row].crc32
                    or not_finite[j]
                ):
                    bad.append(row)
    return bad


def _read_classes(root: str, manifest: dict[str, Any]) -> list[str]:
    path = os.path.join(root, CLASSES)
    try:
        with open_regular(path) as f:
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
        with open_regular(path) as f:
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
    if CATALOG_SHA in manifest and catalog_digest(table) != manifest[CATALOG_SHA]:
        raise StoreError(
            f"{path} lists other tracks than the store was made with (its track ids, paths, genres, subsets or "
            f"splits were changed after melset wrote them); {_AGAIN}"
        )
    return table


_AGAIN = "run the same `melset extract` command again to rewrite it"
_REDO = "run the same `melset extract` command again to redo the rows it lost"


def _rows_text(rows: list[int], show: int = 20) -> str:
    return ", ".join(map(str, rows[:show])) + (f" ... ({len(rows) - show} more)" if len(rows) > show else "")
