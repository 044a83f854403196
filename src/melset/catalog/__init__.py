"""Catalogs: which tracks a run processes, with which labels, whatever layout they come in.

One module per layout, each returning the same `Catalog`:

    fma        FMA's tracks.csv + AUDIO/NNN/NNNNNN.mp3
    folders    ROOT/<genre>/<file> (GTZAN)
    manifest   a CSV or Parquet file with columns path,label[,split]

and `labels` turns a catalog into its label matrix (one-hot genre_top, or FMA's genre lists multi-hot).

`open_catalog` is the front door the command line and the Python API both use.
"""

from __future__ import annotations

import os

from melset.catalog import fma, folders, labels
from melset.catalog.fma import looks_like_fma
from melset.catalog import manifest as manifest_layout
from melset.catalog.table import AUDIO_EXTENSIONS, MAX_TABLE_BYTES, Catalog, scan_audio
from melset.errors import MetadataError, UsageError
from melset.system import check_input_file
from melset.vocab import GENRE_TOP, LABEL_KINDS

LAYOUTS = ("fma", "folders", "manifest")

__all__ = [
    "AUDIO_EXTENSIONS",
    "LAYOUTS",
    "Catalog",
    "check_limit",
    "choose_layout",
    "fma",
    "folders",
    "labels",
    "layout_reason",
    "looks_like_fma",
    "manifest_layout",
    "open_catalog",
    "scan_audio",
]


def choose_layout(
    layout: str | None,
    tracks: str | os.PathLike | None,
    manifest: str | os.PathLike | None,
    audio: str | os.PathLike | None = None,
) -> str:
    """The layout asked for, or the one the given inputs imply: fma with tracks, manifest with a manifest, else folders.

    An audio folder that looks like FMA's (NNN/NNNNNN.mp3) without tracks or an explicit
    layout is refused rather than read as folders (which would label every track "000", "001", ...).
    Raises UsageError when the layout and the inputs do not go together.
    """
    if layout is None:
        layout = "fma" if tracks else "manifest" if manifest else "folders"
        if layout == "folders" and audio is not None and looks_like_fma(audio):
            raise UsageError(
                f"{audio} looks like an FMA audio folder (NNN/NNNNNN.mp3) but no --tracks was given: pass "
                "--tracks fma_metadata/tracks.csv for FMA's genres, or --layout folders to label each track "
                "by its folder name"
            )
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if layout == "fma" and not tracks:
        raise UsageError("--layout fma needs --tracks (FMA's fma_metadata/tracks.csv)")
    if layout == "manifest" and not manifest:
        raise UsageError("--layout manifest needs --manifest (a CSV or Parquet file with columns path,label[,split])")
    return layout


def layout_reason(layout: str | None, tracks, manifest) -> str:
    """Why a run reads its collection the way it does, in words (for the manifest and the summary)."""
    if layout is not None:
        return f"--layout {layout} given"
    if tracks:
        return "--tracks given"
    if manifest:
        return "--manifest given"
    return "no --tracks or --manifest given: one folder per genre"


def check_limit(limit: int | None) -> None:
    """Refuse a --limit that is not a whole number of at least 1 (UsageError)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"--limit must be a whole number of at least 1, not {limit!r}")


def open_catalog(
    audio: str | os.PathLike,
    *,
    tracks: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    layout: str | None = None,
    subset: str = "small",
    limit: int | None = None,
    labels: str = GENRE_TOP,
) -> Catalog:
    """The tracks of a collection, in a stable order, ready for `melset.extract.extract`.

    Parameters
    ----------
    audio : path
        The audio folder: FMA's ``fma_small/`` (``NNN/NNNNNN.mp3``), a folder per genre, or
        the root a manifest's paths are relative to.
    tracks : path, optional
        FMA's ``fma_metadata/tracks.csv`` (the fma layout).
    manifest : path, optional
        A CSV or Parquet file with columns ``path,label[,split]`` (the manifest layout).
    layout : {"fma", "folders", "manifest"}, optional
        Default: fma with `tracks`, manifest with `manifest`, else folders.
    subset : {"small", "medium", "large"}
        The FMA subset; they nest, so "medium" is small + medium.
    limit : int, optional
        Only the first `limit` tracks by track_id.
    labels : {"genre_top", "genres", "genres_all"}
        What the labels are made of: one genre_top per track, or (FMA only) the genre lists
        track.genres or track.genres_all, read in the same pass over tracks.csv.

    Returns
    -------
    Catalog

    Raises
    ------
    MetadataError
        The metadata cannot be used, or selects no track; the message names the file.
    UsageError
        The layout and the inputs do not go together.
    """
    check_limit(limit)
    for option, path in (("--tracks", tracks), ("--manifest", manifest)):
        if path is not None:
            check_input_file(path, option, MAX_TABLE_BYTES, MetadataError)
    if labels not in LABEL_KINDS:
        raise UsageError(f"unknown --labels {labels!r}: choose one of {', '.join(LABEL_KINDS)}")
    reason = layout_reason(layout, tracks, manifest)
    layout = choose_layout(layout, tracks, manifest, audio)
    if labels != GENRE_TOP and layout != "fma":
        raise UsageError(
            f"--labels {labels} needs FMA's tracks.csv (its genre lists); the {layout} layout has one label per track: use --labels {GENRE_TOP}"
        )
    if layout == "fma":
        cat = fma.catalog(tracks, audio, subset, labels)
        if len(cat) == 0:
            raise MetadataError(f"{tracks}: no tracks in subset {subset}")
    elif layout == "manifest":
        cat = manifest_layout.catalog(manifest, audio)
        if len(cat) == 0:
            raise MetadataError(f"{manifest}: the manifest lists no files")
    else:
        cat = folders.catalog(audio)
    cat.source["layout_reason"] = reason
    clashes = cat.label_clashes()
    if clashes:
        cat.source["labels_differing_in_case"] = clashes
    return cat.limit(limit)
