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
import tempfile

from melset.catalog import fma, folders, labels
from melset.catalog.fma import looks_like_fma
from melset.catalog import manifest as manifest_layout
from melset.catalog.table import AUDIO_EXTENSIONS, MAX_GENRES_BYTES, MAX_TABLE_BYTES, Catalog, scan_audio
from melset.errors import MetadataError, UsageError
from melset.location import Checksums, Place, is_url, open_place, read_bytes, read_checksums, read_table, sibling
from melset.location.checksums import MAX_BYTES as MAX_CHECKSUMS_BYTES
from melset.location.checksums import NAME as CHECKSUMS_NAME
from melset.location.remote import FetchError
from melset.system import check_input_file
from melset.vocab import GENRE_TOP, LABEL_KINDS, PATH

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
    storage_options: dict | None = None,
    checksums: str | os.PathLike | None = None,
) -> Catalog:
    """The tracks of a collection, in a stable order, ready for `melset.extract.extract`.

    Parameters
    ----------
    audio : path or URL
        The audio folder: FMA's ``fma_small/`` (``NNN/NNNNNN.mp3``), a folder per genre, or
        the root a manifest's paths are relative to. A zip archive (FMA's ``fma_small.zip``,
        read in place) or an fsspec URL (``s3://bucket/fma_small``, ``zip://…::…``) as well.
    tracks : path or URL, optional
        FMA's ``fma_metadata/tracks.csv`` (the fma layout), or ``fma_metadata.zip``.
    manifest : path or URL, optional
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
    storage_options : dict, optional
        fsspec storage options for URLs (``{"anon": True}``, ``{"endpoint_url": ...}``);
        credentials also come from each backend's environment. Never written to the store.
    checksums : path or URL, optional
        A sha1sum file (paths relative to `audio`). By default the collection's own
        ``checksums`` file is used when it has one (FMA's archives do).

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
    options = dict(storage_options or {})
    for option, path in (("--tracks", tracks), ("--manifest", manifest)):
        if path is not None and not _elsewhere(path):
            check_input_file(path, option, MAX_TABLE_BYTES, MetadataError)
    if labels not in LABEL_KINDS:
        raise UsageError(f"unknown --labels {labels!r}: choose one of {', '.join(LABEL_KINDS)}")
    reason = layout_reason(layout, tracks, manifest)
    place = open_place(audio, options)
    layout = choose_layout(layout, tracks, manifest, audio if place.is_local else None)
    if labels != GENRE_TOP and layout != "fma":
        raise UsageError(
            f"--labels {labels} needs FMA's tracks.csv (its genre lists); the {layout} layout has one label per track: use --labels {GENRE_TOP}"
        )
    files = None if place.is_local else place.files(options)
    with tempfile.TemporaryDirectory(prefix="melset-tables-") as tmp:
        if layout == "fma":
            tracks_path, found = _local_table(tracks, "--tracks", options, "tracks.csv", tmp, ("genres.csv",))
            try:
                cat = fma.catalog(tracks_path, place, subset, labels, files)
            except MetadataError as exc:  # a copy read from an archive or a URL: named as the user gave it
                raise MetadataError(str(exc).replace(tracks_path, found.get("tracks.csv", str(tracks)))) from None
            if tracks_path != os.path.abspath(os.fspath(tracks)):  # read from an archive or a URL
                cat.source["tracks"] = found["tracks.csv"]
                cat.source["genres"] = found.get("genres.csv")
            if len(cat) == 0:
                raise MetadataError(f"{tracks}: no tracks in subset {subset}")
        elif layout == "manifest":
            name = os.path.basename(str(manifest).rstrip("/").split("::")[0]) or "manifest.csv"
            manifest_path, found = _local_table(manifest, "--manifest", options, name, tmp)
            cat = manifest_layout.catalog(manifest_path, place, name=found.get(name) or os.path.abspath(manifest))
            if len(cat) == 0:
                raise MetadataError(f"{manifest}: the manifest lists no files")
        else:
            cat = folders.catalog(place, files)
    cat.place, cat.files, cat.options = place, files, options
    cat.checksums = _checksums(checksums, place, files, options)
    if cat.checksums is not None:
        listed = sum(cat.relative(p) in cat.checksums.sha1 for p in cat.table[PATH].tolist())
        if checksums is not None and listed == 0:
            raise MetadataError(
                f"--checksums {checksums} lists none of the {len(cat)} selected tracks' files: its paths must be "
                f"relative to --audio {place} (as in FMA's checksums: 000/000002.mp3)"
            )
        cat.source["checksums"] = {"file": cat.checksums.source, "lines": len(cat.checksums), "tracks_listed": listed}
    cat.source["layout_reason"] = reason
    clashes = cat.label_clashes()
    if clashes:
        cat.source["labels_differing_in_case"] = clashes
    return cat.limit(limit)


def _elsewhere(path) -> bool:
    """A table read from a URL or a zip archive rather than a local file."""
    text = os.fspath(path)
    return is_url(text) or text.lower().endswith(".zip")


def _local_table(spec, option: str, options: dict, name: str, tmp: str, siblings: tuple[str, ...] = ()):
    """(a local path to read `spec` from, {file name: where it was read}): the file itself when
    local, else a copy in `tmp` of it (from a URL, or the member `name` of a zip archive) and
    of the `siblings` beside it that exist (genres.csv next to tracks.csv)."""
    if not _elsewhere(spec):
        return os.path.abspath(os.fspath(spec)), {}
    locator, data = read_table(spec, options, option, name, MAX_TABLE_BYTES)
    found = {name: locator}
    with open(os.path.join(tmp, name), "wb") as f:
        f.write(data)
    for other in siblings:
        where = sibling(locator, other)
        try:
            extra = read_bytes(where, options, MAX_GENRES_BYTES)
        except (FileNotFoundError, FetchError):
            continue
        if len(extra) <= MAX_GENRES_BYTES:
            with open(os.path.join(tmp, other), "wb") as f:
                f.write(extra)
            found[other] = where
    return os.path.join(tmp, name), found


def _checksums(given, place: Place, files: dict | None, options: dict) -> Checksums | None:
    """The sha1sum file named by --checksums, else the collection's own ``checksums``, else None."""
    if given is not None:
        text = os.fspath(given)
        if _elsewhere(text):
            locator, data = read_table(text, options, "--checksums", CHECKSUMS_NAME, MAX_CHECKSUMS_BYTES)
            return read_checksums(data, locator)
        check_input_file(text, "--checksums", MAX_CHECKSUMS_BYTES, MetadataError)
        with open(text, "rb") as f:
            return read_checksums(f.read(), os.path.abspath(text))
    if place.is_local:
        own = os.path.join(place.root, CHECKSUMS_NAME)
        if not os.path.isfile(own):
            return None
        check_input_file(own, "the collection's", MAX_CHECKSUMS_BYTES, MetadataError)
        with open(own, "rb") as f:
            return read_checksums(f.read(), own)
    if CHECKSUMS_NAME not in (files or {}):
        return None
    try:
        data = place.read(CHECKSUMS_NAME, options, MAX_CHECKSUMS_BYTES)
    except (FileNotFoundError, FetchError) as exc:
        raise MetadataError(f"{place.locator(CHECKSUMS_NAME)}: cannot read it ({exc})") from None
    if len(data) > MAX_CHECKSUMS_BYTES:
        raise MetadataError(f"{place.locator(CHECKSUMS_NAME)}: too large for a checksums file")
    return read_checksums(data, place.locator(CHECKSUMS_NAME))
