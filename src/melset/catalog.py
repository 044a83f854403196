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


def scan_audio(root: str) -> list[str]:
    """Relative paths (with '/') of every audio file under root, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(AUDIO_EXTENSIONS):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)
