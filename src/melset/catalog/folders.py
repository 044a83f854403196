"""The folders layout: one folder per genre (GTZAN: ROOT/blues/blues.00000.wav)."""

from __future__ import annotations

import os

import pandas as pd

from melset.catalog.table import AUDIO_EXTENSIONS, Catalog, audio_files, require_utf8, scan_audio
from melset.errors import MetadataError
from melset.location import FOLDER, Place
from melset.vocab import GENRE_TOP, PATH, SPLIT, SUBSET, TRACK_ID


def catalog(root: str | os.PathLike | Place, files: dict[str, str] | None = None) -> Catalog:
    """One folder per genre (GTZAN: ROOT/blues/blues.00000.wav).

    track_id is the file's path relative to ROOT with '/' separators ("blues/blues.00000.wav"):
    unique, stable across machines and runs, and readable. The genre is the first folder
    under ROOT; files directly in ROOT have none. ROOT may be a `Place` (a zip archive, a
    URL); `files` is then its listing.
    """
    place = root if isinstance(root, Place) else Place(FOLDER, os.path.abspath(os.fspath(root)))
    root = place.root
    if place.is_local and not os.path.isdir(root):
        raise MetadataError(f"{root}: the audio folder does not exist")
    rels = scan_audio(root, include_dirs=True) if place.is_local else audio_files(files or {})
    if not rels:
        raise MetadataError(f"{place}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in any genre folder")
    tops = {r.split("/")[0] for r in rels}
    if len(tops) == 1 and all(r.count("/") >= 2 for r in rels):
        # GTZAN's parent folder (its one subfolder genres/): one class named after a folder that is no genre
        top = tops.pop()
        inner = os.path.join(root, top) if place.is_local else Place(place.kind, f"{root}/{top}".lstrip("/"), place.archive).url
        raise MetadataError(
            f"--audio {place}: every audio file is inside its one folder {top}/, in folders "
            f"below it, so each would be labelled {top!r}; pass --audio {inner} to label each "
            "file by the folder it is in"
        )
    paths = [place.locator(r) for r in rels]
    require_utf8(paths)
    table = pd.DataFrame(
        {
            TRACK_ID: rels,
            PATH: paths,
            GENRE_TOP: [r.split("/")[0] if "/" in r else None for r in rels],
            SUBSET: None,
            SPLIT: None,
        }
    )
    source = {"layout": "folders", "audio": place.url}
    at_root = [r for r in rels if "/" not in r]
    if at_root:  # no genre folder: stored without a label
        source["files_without_genre_folder"] = at_root[:20]
    return Catalog(table, source)
