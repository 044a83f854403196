"""Exports of a store to other formats, so existing code keeps working.

seed-pickles: exactly the files the reference notebook writes, so notebooks that read
`pickles/NNNNNN.pickle`, `y.pickle` and `classlabels.pickle` run unchanged. melset writes
these pickles but never reads any.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from melset.store import Store
from melset.vocab import GENRE_TOP, TRACK_ID

FORMATS = ("seed-pickles",)
# Every format names its files with `export_name`, which is injective: no track overwrites another.


def seed_pickles(store: Store, to: str | os.PathLike) -> dict[str, int]:
    """Write P/pickles/NNNNNN.pickle (ok rows, float64), P/y.pickle and P/classlabels.pickle."""
    to = os.fspath(to)
    os.makedirs(os.path.join(to, "pickles"), exist_ok=True)
    ids = store.tracks[TRACK_ID].tolist()
    n = 0
    for row in store.ok_rows():
        x = store.row(row).astype(np.float64)  # checked against its checksum
        # ndarray.dump, as the notebook calls it: pickle protocol 2 of the array
        x.dump(os.path.join(to, "pickles", f"{export_name(ids[row])}.pickle"))
        n += 1
    classes = np.array(store.classes)
    y = {}
    for row, genre in enumerate(store.tracks[GENRE_TOP].tolist()):
        if isinstance(genre, str):
            y[export_name(ids[row])] = np.asarray(store.labels[row], dtype=np.int64)
    with open(os.path.join(to, "y.pickle"), "wb") as f:
        pickle.dump(y, f, protocol=pickle.HIGHEST_PROTOCOL)
    with open(os.path.join(to, "classlabels.pickle"), "wb") as f:
        pickle.dump(classes, f)
    return {"pickles": n, "labels": len(y), "classes": len(classes)}


def export_name(track_id) -> str:
    """The file stem a track is exported under: FMA's zero-padded 6-digit id, or (other layouts,
    whose ids are relative paths) the id with ``%`` and ``/`` percent-encoded, so that two
    tracks never share a name (``a/b.wav`` -> ``a%2Fb.wav``, ``a%2Fb.wav`` -> ``a%252Fb.wav``)."""
    if isinstance(track_id, (int, np.integer)):
        return f"{int(track_id):06d}"
    return str(track_id).replace("%", "%25").replace("/", "%2F")
