"""A catalog: the list of tracks a run will process, whatever layout they came from.

Every layout (FMA's tracks.csv, a folder per genre, a manifest file) becomes the same
table, so the engines and the store never care where the tracks came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from melset.errors import MetadataError  # noqa: F401  (re-exported)

COLUMNS = ("track_id", "path", "genre_top", "subset", "split")
AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".au", ".snd", ".aif", ".aiff", ".m4a", ".mp4", ".aac", ".opus", ".wma")


@dataclass
class Catalog:
    """Selected tracks in a stable order, plus what the manifest should say about the inputs."""

    table: pd.DataFrame  # COLUMNS; one row per selected track, sorted by track_id
    source: dict  # layout and input paths, for the manifest
    unlisted: list[str] = field(default_factory=list)  # audio files on disk that no row lists

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.table.columns]
        if missing:
            raise ValueError(f"catalog table lacks columns {missing}")
        self.table = self.table.loc[:, list(COLUMNS)].sort_values("track_id", kind="stable").reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.table)

    def limit(self, n: int | None) -> Catalog:
        """The first n tracks (in track_id order)."""
        if n is None:
            return self
        return Catalog(self.table.head(n), {**self.source, "limit": n}, self.unlisted)

    def classes(self) -> list[str]:
        """Sorted genre names present in the selection: LabelBinarizer's class order."""
        return sorted({g for g in self.table["genre_top"] if isinstance(g, str) and g})


def scan_audio(root: str, include_dirs: bool = False) -> list[str]:
    """Relative paths (with '/') of every audio file under root, sorted. Symbolic links are
    listed but not followed into (no loops); include_dirs also lists directories whose
    name ends like an audio file (so that they get a reason instead of vanishing)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        names = filenames + ([d for d in dirnames if d.lower().endswith(AUDIO_EXTENSIONS)] if include_dirs else [])
        for name in names:
            if name.lower().endswith(AUDIO_EXTENSIONS):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


SPLITS = ("training", "validation", "test")  # FMA's names, used for every layout
SPLIT_ALIASES = {**{s: s for s in SPLITS}, "train": "training", "valid": "validation", "val": "validation"}


def folders(root: str | os.PathLike) -> Catalog:
    """One folder per genre (GTZAN: ROOT/blues/blues.00000.wav).

    track_id is the file's path relative to ROOT with '/' separators ("blues/blues.00000.wav"):
    unique, stable across machines and runs, and readable. The genre is the first folder
    under ROOT; files directly in ROOT have none.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise MetadataError(f"{root}: the audio folder does not exist")
    rels = scan_audio(root, include_dirs=True)
    if not rels:
        raise MetadataError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in any genre folder")
    table = pd.DataFrame(
        {
            "track_id": rels,
            "path": [os.path.join(root, *r.split("/")) for r in rels],
            "genre_top": [r.split("/")[0] if "/" in r else None for r in rels],
            "subset": None,
            "split": None,
        }
    )
    return Catalog(table, {"layout": "folders", "audio": root})


def manifest(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Catalog:
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
    for col in ("path", "label"):
        if col not in df.columns:
            raise MetadataError(f"{path}: missing required column {col!r} (a manifest has columns path,label[,split])")
    ids, paths = [], []
    for i, p in enumerate(df["path"].astype(str).tolist()):
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
    if "split" in df.columns:
        for i, s in enumerate(df["split"].astype(str).tolist()):
            key = s.strip().lower()
            if key in ("", "none", "nan"):
                continue
            if key not in SPLIT_ALIASES:
                raise MetadataError(f"{path}: row {i + 1}: split {s!r} is not training, validation or test")
            splits[i] = SPLIT_ALIASES[key]
    labels = [None if v is None or str(v).strip() in ("", "nan", "None") else str(v).strip() for v in df["label"].tolist()]
    table = pd.DataFrame({"track_id": ids, "path": paths, "genre_top": labels, "subset": None, "split": splits})
    listed = set(ids)
    unlisted = [p for p in scan_audio(root) if p not in listed] if os.path.isdir(root) else []
    return Catalog(table, {"layout": "manifest", "manifest": path, "audio": root}, unlisted)
