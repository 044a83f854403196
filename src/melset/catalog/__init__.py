"""Catalogs: which tracks a run processes, with which labels, whatever layout they come in.

One module per layout, each returning the same `Catalog`:

    fma        FMA's tracks.csv + AUDIO/NNN/NNNNNN.mp3
    folders    ROOT/<genre>/<file> (GTZAN)
    manifest   a CSV or Parquet file with columns path,label[,split]

`open_catalog` is the front door the command line and the Python API both use.
"""

from __future__ import annotations

import os

from melset.catalog import fma, folders
from melset.catalog import manifest as manifest_layout
from melset.catalog.table import AUDIO_EXTENSIONS, Catalog, scan_audio
from melset.errors import MetadataError, UsageError

LAYOUTS = ("fma", "folders", "manifest")

__all__ = [
    "AUDIO_EXTENSIONS",
    "LAYOUTS",
    "Catalog",
    "choose_layout",
    "fma",
    "folders",
    "manifest_layout",
    "open_catalog",
    "scan_audio",
]


def choose_layout(layout: str | None, tracks: str | os.PathLike | None, manifest: str | os.PathLike | None) -> str:
    """The layout asked for, or the one the given inputs imply: fma with tracks, manifest with a manifest, else folders.

    Raises UsageError when the layout and the inputs do not go together.
    """
    if layout is None:
        layout = "fma" if tracks else "manifest" if manifest else "folders"
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if layout == "fma" and not tracks:
        raise UsageError("--layout fma needs --tracks (FMA's fma_metadata/tracks.csv)")
    if layout == "manifest" and not manifest:
        raise UsageError("--layout manifest needs --manifest (a CSV or Parquet file with columns path,label[,split])")
    return layout


def open_catalog(
    audio: str | os.PathLike,
    *,
    tracks: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    layout: str | None = None,
    subset: str = "small",
    limit: int | None = None,
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
    layout = choose_layout(layout, tracks, manifest)
    if layout == "fma":
        cat = fma.catalog(tracks, audio, subset)
        if len(cat) == 0:
            raise MetadataError(f"{tracks}: no tracks in subset {subset}")
    elif layout == "manifest":
        cat = manifest_layout.catalog(manifest, audio)
        if len(cat) == 0:
            raise MetadataError(f"{manifest}: the manifest lists no files")
    else:
        cat = folders.catalog(audio)
    return cat.limit(limit)
