"""The manifest layout: a CSV or Parquet file with columns path,label[,split]."""

from __future__ import annotations

import os

import pandas as pd

from melset.catalog.table import Catalog, scan_audio
from melset.errors import MetadataError
from melset.vocab import GENRE_TOP, PATH, SPLIT, SPLIT_ALIASES, SUBSET, TRACK_ID

LABEL = "label"  # the manifest's own column; path and split are named as in tracks.parquet


def catalog(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Catalog:
    """A CSV or Parquet file with columns path,label[,split]; paths relative to ROOT
    (default: the manifest's folder). track_id is the normalised relative path. A path that
    leads outside ROOT is refused."""
    path = os.path.abspath(os.fspath(path))
    root = os.path.abspath(os.fspath(root)) if root else os.path.dirname(path)
    try:
        if path.lower().endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise MetadataError(f"{path}: no such file") from None
    except Exception as exc:  # pandas/pyarrow raise many kinds for a file that is not a table
        raise MetadataError(f"{path}: not a readable CSV or Parquet manifest ({str(exc).splitlines()[0]})") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    for col in (PATH, LABEL):
        if col not in df.columns:
            raise MetadataError(f"{path}: missing required column {col!r} (a manifest has columns path,label[,split])")
    ids, paths = [], []
    for i, p in enumerate(df[PATH].astype(str).tolist()):
        rel = p.replace("\\", "/").strip()
        if not rel or rel.startswith("/") or os.path.isabs(rel):
            raise MetadataError(f"{path}: row {i + 1}: path {p!r} must be relative to {root}")
        norm = os.path.normpath(rel).replace(os.sep, "/")
        if norm == ".." or norm.startswith("../"):
            raise MetadataError(f"{path}: row {i + 1}: path {p!r} leads outside {root}; refused")
        full = os.path.join(root, norm)
        ids.append(norm)
        paths.append(full)
    dupes = pd.Series(ids)[pd.Series(ids).duplicated()].unique()
    if len(dupes):
        raise MetadataError(f"{path}: the same path is listed twice: {', '.join(dupes[:3])}")
    splits = [None] * len(df)
    if SPLIT in df.columns:
        for i, s in enumerate(df[SPLIT].astype(str).tolist()):
            key = s.strip().lower()
            if key in ("", "none", "nan"):
                continue
            if key not in SPLIT_ALIASES:
                raise MetadataError(f"{path}: row {i + 1}: split {s!r} is not training, validation or test")
            splits[i] = SPLIT_ALIASES[key]
    labels = [
        None if v is None or str(v).strip() in ("", "nan", "None") else str(v).strip() for v in df[LABEL].tolist()
    ]
    table = pd.DataFrame({TRACK_ID: ids, PATH: paths, GENRE_TOP: labels, SUBSET: None, SPLIT: splits})
    listed = set(ids)
    unlisted = [p for p in scan_audio(root) if p not in listed] if os.path.isdir(root) else []
    return Catalog(table, {"layout": "manifest", "manifest": path, "audio": root}, unlisted)
