"""The folders layout: one folder per genre (GTZAN: ROOT/blues/blues.00000.wav)."""

from __future__ import annotations

import os

import pandas as pd

from melset.catalog.table import AUDIO_EXTENSIONS, Catalog, require_utf8, scan_audio
from melset.errors import MetadataError
from melset.vocab import GENRE_TOP, PATH, SPLIT, SUBSET, TRACK_ID


def catalog(root: str | os.PathLike) -> Catalog:
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
    tops = {r.split("/")[0] for r in rels}
    if len(tops) == 1 and all(r.count("/") >= 2 for r in rels):
        # GTZAN's parent folder (its one subfolder genres/): one class named after a folder that is no genre
        inner = os.path.join(root, tops.pop())
        raise MetadataError(
            f"--audio {root}: every audio file is inside its one folder {os.path.basename(inner)}/, in folders "
            f"below it, so each would be labelled {os.path.basename(inner)!r}; pass --audio {inner} to label each "
            "file by the folder it is in"
        )
    paths = [os.path.join(root, *r.split("/")) for r in rels]
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
    source = {"layout": "folders", "audio": root}
    at_root = [r for r in rels if "/" not in r]
    if at_root:  # no genre folder: stored without a label
        source["files_without_genre_folder"] = at_root[:20]
    return Catalog(table, source)
