"""Label matrices: labels.npy and classes.json, built from what the catalog already read.

One-hot genre_top rows in scikit-learn LabelBinarizer's encoding, or multi-hot rows of FMA's
genre lists in MultiLabelBinarizer's; a track without a label gets an all-zero row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from melset.catalog.table import Catalog
from melset.vocab import GENRE_TOP, TRACK_ID


def one_hot(genres: Iterable, classes: list[str]) -> np.ndarray:
    """(rows, classes) uint8, LabelBinarizer's encoding; all zeros for a row without genre."""
    genres = list(genres)
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(genres), len(classes)), dtype=np.uint8)
    for row, g in enumerate(genres):
        if isinstance(g, str) and g in index:
            out[row, index[g]] = 1
    return out


def multi_hot(rows: Sequence[set[str]]) -> tuple[np.ndarray, list[str]]:
    """(rows, classes) uint8 and the sorted class names, MultiLabelBinarizer's encoding."""
    classes = sorted(set().union(*rows)) if rows else []
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(rows), len(classes)), dtype=np.uint8)
    for r, names in enumerate(rows):
        out[r, [index[n] for n in names]] = 1
    return out, classes


def label_matrix(catalog: Catalog) -> tuple[np.ndarray, list[str]]:
    """labels.npy and classes.json for a catalog, in the kind it was opened for (`Catalog.labels`).

    Returns
    -------
    labels : numpy.ndarray
        (rows, classes) uint8, aligned with ``catalog.table``.
    classes : list of str
        The class names, sorted.
    """
    if catalog.labels == GENRE_TOP:
        classes = catalog.classes()
        return one_hot(catalog.table[GENRE_TOP], classes), classes
    lists = catalog.genre_lists or {}
    return multi_hot([lists[int(t)] for t in catalog.table[TRACK_ID]])
