"""FMA metadata: tracks.csv (two-row header), genres.csv, subsets, splits and audio paths.

Reads tracks.csv the way FMA's own `utils.load` does: list columns through
`ast.literal_eval` (never `eval`), dates as datetimes, `('set', 'subset')` an ordered
category small < medium < large (so "medium" selects small + medium, as the FMA subsets
nest), `('set', 'split')` kept. Only the columns asked for are parsed, which keeps the
100k-row real file quick to load for extraction.
"""

from __future__ import annotations

import ast
import csv
import os
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from melset.catalog.labels import multi_hot
from melset.catalog.table import MAX_GENRES_BYTES, Catalog, audio_files, displayable, require_utf8, scan_audio
from melset.errors import MetadataError
from melset.location import FOLDER, Place
from melset.system import check_input_file
from melset.vocab import GENRE_TOP, GENRES, GENRES_ALL, PATH, SPLIT, SUBSET, TRACK_ID

# tracks.csv's (level 0, level 1) names of what a catalog needs
GENRE_TOP_COL, SUBSET_COL, SPLIT_COL = ("track", GENRE_TOP), ("set", SUBSET), ("set", SPLIT)
SUBSETS = ("small", "medium", "large")
SUBSET_DTYPE = pd.CategoricalDtype(categories=SUBSETS, ordered=True)

LIST_COLUMNS = [("track", "tags"), ("album", "tags"), ("artist", "tags"), ("track", "genres"), ("track", "genres_all")]
DATE_COLUMNS = [
    ("track", "date_created"),
    ("track", "date_recorded"),
    ("album", "date_created"),
    ("album", "date_released"),
    ("artist", "date_created"),
    ("artist", "active_year_begin"),
    ("artist", "active_year_end"),
]
CATEGORY_COLUMNS = [GENRE_TOP_COL, ("track", "license"), ("album", "type"), ("album", "information"), ("artist", "bio")]
REQUIRED = [GENRE_TOP_COL, SUBSET_COL]
NEEDED = [GENRE_TOP_COL, SUBSET_COL, SPLIT_COL]
INT64_MAX = 2**63 - 1


def _read_header(path: str) -> tuple[list[tuple[str, str]], int]:
    """The (level 0, level 1) name of every column after the index, and how many lines the header takes."""
    name = os.path.basename(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = []
            for row in csv.reader(f):
                rows.append(row)
                if len(rows) == 3:
                    break
    except FileNotFoundError:
        raise MetadataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MetadataError(f"{path}: is a directory, not FMA's tracks.csv") from None
    except UnicodeDecodeError:
        raise MetadataError(f"{path}: not a CSV file (not UTF-8 text)") from None
    except csv.Error as exc:
        raise MetadataError(f"{path}: not a CSV file ({exc})") from None
    if len(rows) < 2 or len(rows[0]) < 2:
        raise MetadataError(
            f"{path}: not a CSV file with FMA's two-row header (found {len(rows)} line(s) of {len(rows[0]) if rows else 0} column(s))"
        )
    top, sub = rows[0], rows[1]
    if len(top) != len(sub):
        raise MetadataError(
            f"{path}: the two header rows have {len(top)} and {len(sub)} columns; FMA's {name} has a two-row header of equal length"
        )
    columns = list(zip(top[1:], sub[1:]))
    if not any(level0 in ("track", "set", "album", "artist") for level0, _ in columns):
        raise MetadataError(
            f"{path}: wrong header: expected FMA's two-row header ('track' over 'genre_top', 'set' over 'subset'), found {', '.join(top[:4])} ..."
        )
    n_header = 2
    if len(rows) == 3 and rows[2] and rows[2][0] == TRACK_ID and not any(rows[2][1:]):
        n_header = 3
    return columns, n_header


def load_tracks(path: str | os.PathLike, columns: Sequence[tuple[str, str]] | None = None) -> pd.DataFrame:
    """FMA's tracks.csv as a DataFrame indexed by track_id with (level 0, level 1) columns.

    columns: the columns to parse (all when None). Required columns are always checked.
    Raises MetadataError with one sentence naming the file and the problem.
    """
    path = os.fspath(path)
    header, n_header = _read_header(path)
    for col in REQUIRED:
        if col not in header:
            raise MetadataError(f"{path}: missing required column {col[0]}.{col[1]} (FMA's tracks.csv has it)")
    wanted = header if columns is None else [c for c in columns if c in header]
    positions = [header.index(c) + 1 for c in wanted]
    try:
        df = pd.read_csv(
            path,
            header=None,
            names=range(len(header) + 1),
            skiprows=n_header,
            usecols=[0, *positions],
            encoding="utf-8-sig",
            low_memory=False,
            dtype={0: str},
            # only an empty cell is missing: a genre literally named NA, None, null or nan is a genre
            keep_default_na=False,
            na_values=[""],
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise MetadataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    df = df[[0, *positions]]
    df.columns = pd.MultiIndex.from_tuples([("", TRACK_ID), *wanted])
    df.index = pd.Index(_track_ids(df[("", TRACK_ID)].tolist(), path, n_header), name=TRACK_ID)
    df = df.drop(columns=[("", TRACK_ID)])
    df.columns = pd.MultiIndex.from_tuples(wanted)
    dupes = df.index[df.index.duplicated()].unique()
    if len(dupes):
        lines = [n_header + i + 1 for i in (df.index == dupes[0]).nonzero()[0][:2]]
        raise MetadataError(
            f"{path}: duplicate track_id {', '.join(map(str, dupes[:5]))} (track {dupes[0]} on lines {lines[0]} and "
            f"{lines[1]}); each track must appear once"
        )
    _convert(df, path)
    return df


def _track_ids(raw: list, path: str, n_header: int) -> list[int]:
    """The track_id column as int64 values; the first that is not a whole number from 0 to
    2**63 - 1 is refused with its line."""
    ids = []
    for i, v in enumerate(raw):
        text = "" if not isinstance(v, str) else v.strip()
        value = int(text) if text.isascii() and text.isdigit() else -1
        if not 0 <= value <= INT64_MAX:
            found = "an empty cell" if not text else repr(text[:40])
            raise MetadataError(
                f"{path}: line {n_header + i + 1}: track_id must be a whole number from 0 to {INT64_MAX}, found {found}"
            )
        ids.append(value)
    return ids


def _convert(df: pd.DataFrame, path: str) -> None:
    for col in LIST_COLUMNS:
        if col in df.columns:
            df[col] = [_literal_list(v, path, col, tid) for tid, v in zip(df.index, df[col])]
    for col in DATE_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_datetime(df[col], errors="coerce", format="ISO8601")
    if SUBSET_COL in df.columns:
        raw = df[SUBSET_COL]
        unknown = set(raw.dropna().unique()) - set(SUBSETS)
        if unknown:
            raise MetadataError(f"{path}: set.subset has values {sorted(unknown)}; FMA's are small, medium, large")
        df[SUBSET_COL] = raw.astype(SUBSET_DTYPE)
    for col in CATEGORY_COLUMNS:
        if col in df.columns:
            df[col] = df[col].astype("category")


def _literal_list(value, path, col, tid) -> list:
    if not isinstance(value, str):
        return []
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise MetadataError(f"{path}: {col[0]}.{col[1]} of track {tid} is not a list literal: {value[:40]!r}") from None
    if not isinstance(parsed, list):
        raise MetadataError(f"{path}: {col[0]}.{col[1]} of track {tid} is not a list: {value[:40]!r}")
    return parsed


def load_genres(path: str | os.PathLike) -> pd.DataFrame:
    """FMA's genres.csv indexed by genre_id (columns #tracks, parent, title, top_level)."""
    path = os.fspath(path)
    try:
        df = pd.read_csv(path, index_col=0, encoding="utf-8-sig")
    except (FileNotFoundError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise MetadataError(f"{path}: cannot read genres ({str(exc).splitlines()[0]})") from None
    if "title" not in df.columns:
        raise MetadataError(
            f"{path}: missing column title; FMA's genres.csv has genre_id,#tracks,parent,title,top_level"
        )
    return df


def select(tracks: pd.DataFrame, subset: str = "small") -> pd.DataFrame:
    """Tracks of an FMA subset; the subsets nest, so "medium" is small + medium."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, not {subset!r}")
    return tracks[tracks[SUBSET_COL] <= subset]


def audio_path(audio_dir: str | os.PathLike, track_id: int) -> str:
    """FMA's layout: AUDIO/NNN/NNNNNN.mp3 from the zero-padded id."""
    return os.path.join(os.fspath(audio_dir), *relative_audio_path(track_id).split("/"))


def relative_audio_path(track_id: int) -> str:
    """NNN/NNNNNN.mp3: where FMA keeps a track under its audio folder, as scan_audio lists it."""
    tid = f"{int(track_id):06d}"
    return f"{tid[:3]}/{tid}.mp3"


def looks_like_fma(audio: str | os.PathLike) -> bool:
    """True when the folder holds FMA's layout: a three-digit folder with a NNNNNN.mp3 file in it."""
    try:
        with os.scandir(audio) as top:
            folders = sorted(e.path for e in top if e.is_dir() and len(e.name) == 3 and e.name.isdigit())
        for folder in folders[:20]:
            with os.scandir(folder) as files:
                for e in files:
                    stem, ext = os.path.splitext(e.name)
                    if ext.lower() == ".mp3" and len(stem) == 6 and stem.isdigit() and stem[:3] == folder[-3:]:
                        return True
    except OSError:
        pass
    return False


def _one_level_off(audio_dir: str, on_disk: list[str]) -> str | None:
    """The folder that holds FMA's layout (NNN/NNNNNN.mp3) when audio_dir itself does not: one
    inside it (FMA's parent folder was given), or its parent (one of the NNN folders was given)."""
    if looks_like_fma(audio_dir):
        return None
    name = os.path.basename(audio_dir)
    if len(name) == 3 and name.isdigit() and any(p.startswith(name) and p.endswith(".mp3") for p in on_disk):
        return os.path.dirname(audio_dir)
    try:
        with os.scandir(audio_dir) as top:
            inner = sorted(e.path for e in top if e.is_dir())
    except OSError:
        return None
    return next((p for p in inner if looks_like_fma(p)), None)


def _listed_one_level_off(place: Place, on_disk: list[str]) -> str | None:
    """The folder of an archive or a URL that holds FMA's layout when its root does not (one level down)."""
    fma_like = [p for p in on_disk if p.count("/") == 2 and _fma_name(p.split("/", 1)[1])]
    tops = sorted({p.split("/", 1)[0] for p in fma_like})
    if len(tops) != 1:
        return None
    inner = Place(place.kind, f"{place.root}/{tops[0]}" if place.root else tops[0], place.archive)
    return inner.url


def _fma_name(rel: str) -> bool:
    folder, _, name = rel.partition("/")
    stem, ext = os.path.splitext(name)
    return ext.lower() == ".mp3" and len(stem) == 6 and stem.isdigit() and stem[:3] == folder


def _other_subsets_on_disk(tracks: pd.DataFrame, subset: str, on_disk: list[str]) -> dict[str, int]:
    """How many listed tracks of each larger subset have their file on disk, though `subset` leaves them out."""
    files = set(on_disk)
    others = tracks[tracks[SUBSET_COL] > subset]
    found = Counter(str(s) for t, s in zip(others.index, others[SUBSET_COL]) if relative_audio_path(t) in files)
    return {s: found[s] for s in SUBSETS if found[s]}


def catalog(
    tracks_csv: str | os.PathLike,
    audio_dir: str | os.PathLike | Place,
    subset: str = "small",
    labels: str = GENRE_TOP,
    files: dict[str, str] | None = None,
) -> Catalog:
    """The selected tracks of an FMA subset as a catalog, with unlisted files on disk noted.

    labels: genre_top, or FMA's track.genres / track.genres_all, read in the same pass over
    tracks.csv and titled from genres.csv (the catalog then carries each track's genre list).
    audio_dir may be a `Place` (a zip archive, a URL); `files` is then its listing.
    """
    place = audio_dir if isinstance(audio_dir, Place) else Place(FOLDER, os.path.abspath(audio_dir))
    tracks_csv, audio_dir = os.path.abspath(tracks_csv), place.root
    require_utf8([tracks_csv, audio_dir])
    genres_csv = os.path.join(os.path.dirname(tracks_csv), "genres.csv")
    multi = labels in (GENRES, GENRES_ALL)
    tracks = load_tracks(tracks_csv, [*NEEDED, ("track", labels)] if multi else NEEDED)
    if place.is_local and not os.path.isdir(audio_dir):
        raise MetadataError(f"{audio_dir}: the audio folder does not exist")
    chosen = select(tracks, subset)
    split = chosen[SPLIT_COL] if SPLIT_COL in chosen.columns else pd.Series(None, index=chosen.index)
    table = pd.DataFrame(
        {
            TRACK_ID: chosen.index.astype("int64"),
            PATH: [place.locator(relative_audio_path(t)) for t in chosen.index],
            GENRE_TOP: [g if isinstance(g, str) and g else None for g in chosen[GENRE_TOP_COL]],
            SUBSET: [str(s) for s in chosen[SUBSET_COL]],
            SPLIT: [s if isinstance(s, str) and s else None for s in split],
        }
    )
    lists = genre_lists(tracks, chosen.index, labels, tracks_csv, genres_csv) if multi else None
    listed = {relative_audio_path(t) for t in tracks.index}  # the whole CSV: 106,574 rows in FMA's
    if place.is_local:
        on_disk = scan_audio(audio_dir)
        inner = None if listed.intersection(on_disk) else _one_level_off(audio_dir, on_disk)
    else:
        on_disk = audio_files(files or {})
        inner = None if listed.intersection(on_disk) else _listed_one_level_off(place, on_disk)
    if inner:
        raise MetadataError(
            f"--audio {place}: none of tracks.csv's tracks is there, but {inner} holds FMA's NNN/NNNNNN.mp3 "
            f"layout; pass --audio {inner}"
        )
    unlisted = [displayable(p) for p in on_disk if p not in listed]
    source = {
        "layout": "fma",
        "tracks": tracks_csv,
        "audio": place.url,
        SUBSET: subset,
        "genres": genres_csv if os.path.exists(genres_csv) else None,
        "tracks_in_csv": int(len(tracks)),
        "other_subsets_on_disk": _other_subsets_on_disk(tracks, subset, on_disk),
    }
    if os.path.exists(genres_csv):
        source["n_genres"] = int(len(load_genres(genres_csv)))
    return Catalog(table, source, unlisted, labels=labels, genre_lists=lists)


def write_tracks_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write tracks in FMA's tracks.csv format (two-row header, then the track_id line).

    table: indexed by track_id, columns (level 0, level 1) such as ("track", "genre_top");
    list values are written as Python literals, as FMA does. Handy for building FMA-shaped
    collections of your own (tests and benchmarks do).
    """
    out = table.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, list)).any():
            out[col] = out[col].map(repr)
    out.index.name = TRACK_ID
    out.columns = pd.MultiIndex.from_tuples(list(out.columns))
    out.to_csv(path)


def genre_titles(genres_csv: str | os.PathLike, kind: str) -> dict[int, str]:
    """genre_id -> title from FMA's genres.csv, every title present and unique.

    Raises MetadataError when genres.csv is missing, unreadable, or its titles are not usable.
    """
    genres_csv = os.fspath(genres_csv)
    if not os.path.exists(genres_csv):
        raise MetadataError(
            f"{genres_csv}: no such file; --labels {kind} turns FMA's genre ids into titles with the genres.csv "
            "that comes with tracks.csv in fma_metadata"
        )
    check_input_file(genres_csv, "genres.csv", MAX_GENRES_BYTES, MetadataError)
    genres = load_genres(genres_csv)
    titles = {}
    for gid, title in zip(genres.index, genres["title"]):
        if not isinstance(title, str) or not title.strip():
            raise MetadataError(f"{genres_csv}: genre {gid} has no title")
        titles[int(gid)] = title
    dupes = sorted({t for t in titles.values() if list(titles.values()).count(t) > 1})
    if dupes:
        raise MetadataError(f"{genres_csv}: the title {dupes[0]!r} names more than one genre id; titles must be unique")
    return titles


def genre_lists(
    table: pd.DataFrame, track_ids: Sequence[int], kind: str, tracks_csv: str, genres_csv: str
) -> dict[int, set[str]]:
    """track_id -> the titles of its genres, from a loaded tracks.csv's track.genres(_all) column.

    Raises MetadataError for an unusable genres.csv, a missing column, an unlisted track or a
    genre id genres.csv does not name.
    """
    titles = genre_titles(genres_csv, kind)
    col = ("track", kind)
    if col not in table.columns:
        raise MetadataError(f"{tracks_csv}: missing column track.{kind}, which --labels {kind} needs")
    lists = table[col]
    out: dict[int, set[str]] = {}
    for tid in track_ids:
        if int(tid) not in lists.index:
            raise MetadataError(f"{tracks_csv}: track {tid} is not listed")
        names = set()
        for gid in lists.loc[int(tid)]:
            if not isinstance(gid, int) or isinstance(gid, bool) or gid not in titles:
                raise MetadataError(
                    f"{tracks_csv}: track.{kind} of track {tid} holds genre id {gid!r}, which {genres_csv} does not list"
                )
            names.add(titles[gid])
        out[int(tid)] = names
    return out


def genre_labels(
    tracks_csv: str | os.PathLike, track_ids: Sequence[int], kind: str, genres_csv: str | os.PathLike | None = None
) -> tuple[np.ndarray, list[str]]:
    """Multi-hot labels from FMA's genre lists: (rows, classes) uint8 and the sorted class titles.

    A catalog opened with ``labels=kind`` carries the same lists from its one read of
    tracks.csv (`melset.catalog.labels.label_matrix`); this reads them for any track ids.

    Parameters
    ----------
    tracks_csv : path
        FMA's tracks.csv.
    track_ids : sequence of int
        The rows, in order (a catalog's track_id column).
    kind : {"genres", "genres_all"}
        track.genres (the genres a track was tagged with) or track.genres_all (those plus
        every parent genre).
    genres_csv : path, optional
        FMA's genres.csv (default: next to tracks.csv); ids are turned into its titles.

    Returns
    -------
    labels : numpy.ndarray
        (len(track_ids), len(classes)) uint8; a track without genres gets an all-zero row.
    classes : list of str
        The titles of the genres that the selected tracks carry, sorted (MultiLabelBinarizer's order).

    Raises
    ------
    MetadataError
        genres.csv is missing or unreadable, a track is not in tracks.csv, or an id is not in genres.csv.
    """
    if kind not in (GENRES, GENRES_ALL):
        raise ValueError(f"kind must be {GENRES!r} or {GENRES_ALL!r}, not {kind!r}")
    tracks_csv = os.fspath(tracks_csv)
    genres_csv = os.fspath(genres_csv) if genres_csv else os.path.join(os.path.dirname(tracks_csv), "genres.csv")
    genre_titles(genres_csv, kind)  # a missing genres.csv is named before tracks.csv is read
    table = load_tracks(tracks_csv, [("track", kind)])
    lists = genre_lists(table, track_ids, kind, tracks_csv, genres_csv)
    return multi_hot([lists[int(t)] for t in track_ids])
