"""The manifest layout: a CSV or Parquet file with columns path,label[,split]."""

from __future__ import annotations

import math
import os

import pandas as pd

from melset.catalog.table import Catalog, displayable, require_utf8, scan_audio
from melset.errors import MetadataError
from melset.location import FOLDER, Place, is_url
from melset.vocab import GENRE_TOP, PATH, SPLIT, SPLIT_ALIASES, SUBSET, TRACK_ID

LABEL = "label"  # the manifest's own column; path and split are named as in tracks.parquet


def _missing(value) -> bool:
    """An empty cell (CSV) or a null (Parquet); never a word."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip()


def catalog(path: str | os.PathLike, root: str | os.PathLike | Place | None = None, name: str | None = None) -> Catalog:
    """A CSV or Parquet file with columns path,label[,split]; paths relative to ROOT
    (default: the manifest's folder), or whole URLs (``s3://bucket/a.mp3``). track_id is the
    normalised relative path (a URL's: the URL). A path that leads outside ROOT is refused.
    ROOT may be a `Place` (a zip archive, a URL); `name` is how to call the manifest in
    messages (where it was read from), by default its path."""
    path = os.path.abspath(os.fspath(path))
    if isinstance(root, Place):
        place = root
    else:
        place = Place(FOLDER, os.path.abspath(os.fspath(root)) if root else os.path.dirname(path))
    root = str(place)
    shown = name or path
    require_utf8([path, place.root])
    try:
        if path.lower().endswith((".parquet", ".pq")):
            df = pd.read_parquet(path, use_threads=False)  # no reader threads left to abort at exit
        else:
            df = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise MetadataError(f"{shown}: no such file") from None
    except Exception as exc:  # pandas/pyarrow raise many kinds for a file that is not a table
        raise MetadataError(f"{shown}: not a readable CSV or Parquet manifest ({str(exc).splitlines()[0]})") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    for col in (PATH, LABEL):
        if col not in df.columns:
            raise MetadataError(f"{shown}: missing required column {col!r} (a manifest has columns path,label[,split])")
    is_csv = not path.lower().endswith((".parquet", ".pq"))

    def where(i: int) -> str:  # CSV: the file's line (header on line 1); Parquet: the row
        return f"line {i + 2}" if is_csv else f"row {i + 1}"

    ids, paths, first_seen = [], [], {}
    for i, p in enumerate(df[PATH].tolist()):
        if _missing(p):
            raise MetadataError(f"{shown}: {where(i)}: the path is empty; every row names one audio file")
        p = str(p)
        rel = p.replace("\\", "/").strip()
        if is_url(p.strip()):
            norm = p.strip()
            if norm in first_seen:
                raise MetadataError(f"{shown}: {where(i)}: {norm!r} is listed twice; list each file once")
            first_seen[norm] = i
            ids.append(norm)
            paths.append(p)
            continue
        if rel.startswith("/") or os.path.isabs(rel):
            raise MetadataError(f"{shown}: {where(i)}: path {p!r} must be relative to {root}")
        norm = os.path.normpath(rel).replace(os.sep, "/")
        if norm == ".." or norm.startswith("../"):
            raise MetadataError(f"{shown}: {where(i)}: path {p!r} leads outside {root}; refused")
        if norm in first_seen:
            j = first_seen[norm]
            raise MetadataError(
                f"{shown}: {where(i)}: path {p!r} is listed twice: {where(j)} already lists the file {norm!r}"
                f" (as {paths[j]!r}); list each file once"
            )
        first_seen[norm] = i
        ids.append(norm)
        paths.append(p)
    paths = [norm if is_url(norm) else place.locator(norm) for norm in ids]
    splits = [None] * len(df)
    if SPLIT in df.columns:
        for i, s in enumerate(df[SPLIT].tolist()):
            if _missing(s):
                continue
            key = str(s).strip().lower()
            if key not in SPLIT_ALIASES:
                raise MetadataError(f"{shown}: {where(i)}: split {s!r} is not training, validation or test")
            splits[i] = SPLIT_ALIASES[key]
    # only an empty cell (or a Parquet null) is missing: a label literally named None or nan is a label
    labels = [None if _missing(v) else str(v).strip() for v in df[LABEL].tolist()]
    table = pd.DataFrame({TRACK_ID: ids, PATH: paths, GENRE_TOP: labels, SUBSET: None, SPLIT: splits})
    listed = set(ids)
    local = place.is_local and os.path.isdir(place.root)
    unlisted = [displayable(p) for p in scan_audio(place.root) if p not in listed] if local else []
    return Catalog(table, {"layout": "manifest", "manifest": shown, "audio": place.url}, unlisted)
