"""A catalog: the list of tracks a run will process, whatever layout they came from.

Every layout (FMA's tracks.csv, a folder per genre, a manifest file) becomes the same
table, so the engines and the store never care where the tracks came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from melset.errors import MetadataError
from melset.location import FOLDER, Checksums, Fetch, Place, is_url, size_of
from melset.vocab import CATALOG_COLUMNS, GENRE_TOP, TRACK_ID

MAX_TABLE_BYTES = 4 * 10**9  # tracks.csv (FMA's full one is ~0.3 GB) or a manifest of millions of files
MAX_GENRES_BYTES = 16 * 10**6  # genres.csv (FMA's is 9 KB)

AUDIO_EXTENSIONS = (
    ".mp3",
    ".wav",
    ".flac",
    ".ogg",
    ".oga",
    ".au",
    ".snd",
    ".aif",
    ".aiff",
    ".m4a",
    ".mp4",
    ".aac",
    ".opus",
    ".wma",
)


@dataclass
class Catalog:
    """Selected tracks in a stable order, plus what the manifest should say about the inputs."""

    table: pd.DataFrame  # CATALOG_COLUMNS; one row per selected track, sorted by track_id
    source: dict  # layout and input paths, for the manifest
    unlisted: list[str] = field(default_factory=list)  # audio files on disk that no row lists
    labels: str = GENRE_TOP  # what the labels are made of (vocab.LABEL_KINDS)
    genre_lists: dict[int, set[str]] | None = None  # track_id -> genre titles, for FMA's genres / genres_all
    place: Place | None = None  # where the audio lives (None: paths are local files)
    files: dict[str, str] | None = None  # an archive's or a URL's listing: relative path -> version
    checksums: Checksums | None = None  # expected SHA-1s by relative path
    options: dict = field(default_factory=dict, repr=False)  # storage options: to the workers, never written

    def __post_init__(self) -> None:
        missing = [c for c in CATALOG_COLUMNS if c not in self.table.columns]
        if missing:
            raise ValueError(f"catalog table lacks columns {missing}")
        self.table = (
            self.table.loc[:, list(CATALOG_COLUMNS)].sort_values(TRACK_ID, kind="stable").reset_index(drop=True)
        )
        audio = self.source.get("audio")
        if self.place is None and isinstance(audio, str) and audio and not is_url(audio):
            self.place = Place(FOLDER, audio)  # a local collection's root: what a track's path is relative to

    def __len__(self) -> int:
        return len(self.table)

    def limit(self, n: int | None) -> Catalog:
        """The first n tracks (in track_id order)."""
        if n is None:
            return self
        kept = self.table.head(n)
        source = {**self.source, "limit": n}
        left_out = sorted(set(self.classes()) - {g for g in kept[GENRE_TOP] if isinstance(g, str) and g})
        if left_out:  # the first tracks by id: a folder collection's first genres only
            source["limit_left_out_genres"] = left_out
        return Catalog(
            kept, source, self.unlisted, self.labels, self.genre_lists, self.place, self.files, self.checksums, self.options
        )

    def relative(self, locator: str) -> str | None:
        """A track's path relative to the collection's root (its identity wherever the collection lives)."""
        return self.place.relative(locator) if self.place is not None else None

    def task(self, locator: str) -> str | Fetch:
        """What a worker gets for the file at `locator`: the path itself for a local file
        without a checksum (decoded in place), else a `Fetch` it reads into memory first."""
        local = not is_url(locator)
        if local and self.checksums is None:
            return locator
        rel = self.relative(locator)
        sha1 = self.checksums.sha1.get(rel) if self.checksums is not None and rel is not None else None
        if local and sha1 is None:
            return locator
        size = size_of(self.files.get(rel)) if self.files is not None and rel is not None else None
        return Fetch(locator, self.options, sha1, self.checksums.source if sha1 else "", size)

    def present(self, locator: str) -> bool | None:
        """Whether the file is there: known for local files and listed places, None (ask the worker) else."""
        if not is_url(locator):
            return os.path.lexists(locator)
        rel = self.relative(locator)
        if self.files is not None and rel is not None:
            return rel in self.files
        return None

    def label_clashes(self) -> list[list[str]]:
        """Genre names that differ only in case ("Jazz" and "jazz"): each becomes its own class."""
        groups: dict[str, set[str]] = {}
        for g in self.classes():
            groups.setdefault(g.casefold(), set()).add(g)
        return [sorted(names) for names in groups.values() if len(names) > 1]

    def classes(self) -> list[str]:
        """Sorted genre names present in the selection: LabelBinarizer's class order."""
        return sorted({g for g in self.table[GENRE_TOP] if isinstance(g, str) and g})


def scan_audio(root: str, include_dirs: bool = False) -> list[str]:
    """Relative paths (with '/') of every audio file under root, sorted. Symbolic links are
    listed but not followed into (no loops); include_dirs also lists directories whose
    name ends like an audio file (so that they get a reason instead of vanishing). Hidden
    names (a leading dot: `.DS_Store`, macOS's `._song.mp3` companions, `.git/`) are skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        filenames = [f for f in filenames if not f.startswith(".")]
        names = filenames + ([d for d in dirnames if d.lower().endswith(AUDIO_EXTENSIONS)] if include_dirs else [])
        folder = os.path.relpath(dirpath, root).replace(os.sep, "/")
        prefix = "" if folder == "." else folder + "/"
        found += [prefix + name for name in names if name.lower().endswith(AUDIO_EXTENSIONS)]
    return sorted(found)


def audio_files(files: dict[str, str] | list[str]) -> list[str]:
    """The audio files (by extension) of a listing of relative paths, sorted."""
    return sorted(p for p in files if p.lower().endswith(AUDIO_EXTENSIONS))


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, which Python keeps as surrogates
        return False
    return True


def displayable(name: str) -> str:
    """A file name as text, with bytes that are not UTF-8 shown as \\xNN escapes."""
    return name if _is_utf8(name) else os.fsencode(name).decode("utf-8", "backslashreplace")


def require_utf8(paths: list[str]) -> None:
    """Refuse a path that is not UTF-8 (a name in Latin-1, say): the store's tables, the
    manifest and every export hold names as UTF-8 text."""
    for path in paths:
        if not _is_utf8(path):
            raise MetadataError(
                f"{displayable(path)}: the name is not UTF-8, and melset stores names as UTF-8 text; "
                "rename it (convmv -f latin1 -t utf8 --notest -r FOLDER renames Latin-1 names)"
            )
