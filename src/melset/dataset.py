"""PyTorch access to a store: `MelDataset`, read from disk and checked, safe with DataLoader workers.

    from melset.dataset import MelDataset
    train = MelDataset("fma_small.melset", split="training")
    x, y = train[0]          # float32 tensor [1, 128, 1024], class index (multi-hot in a multi-label store)
    loader = DataLoader(train, batch_size=32, shuffle=True, num_workers=4)

Only rows that are `ok` and have a genre are served. `split` uses the store's own split
(FMA's training/validation/test) when every such row has one, otherwise a seeded split
stratified by genre (`split_rows`), which training records in its run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from melset.store import Store
from melset.vocab import OK, SPLIT, SPLITS, STATUS, TEST, TRAINING, VALIDATION

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Split:
    """Which split each usable row belongs to, and where that came from."""

    rows: np.ndarray  # store rows that are ok and have a genre
    names: np.ndarray  # one of SPLITS per row, aligned with rows
    source: str  # "store" (the store's own split) or "stratified"
    seed: int | None = None
    fractions: tuple[float, float, float] | None = None

    def select(self, split: str | None) -> np.ndarray:
        if split is None:
            return self.rows
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, not {split!r}")
        return self.rows[self.names == split]

    def describe(self) -> dict:
        counts = {s: int((self.names == s).sum()) for s in SPLITS}
        return {"source": self.source, "seed": self.seed, "fractions": self.fractions, "counts": counts}


def usable_rows(store: Store) -> np.ndarray:
    """Rows with a stored matrix and a label."""
    ok = store.tracks[STATUS].to_numpy() == OK
    labelled = np.asarray(store.labels).any(axis=1)
    return np.flatnonzero(ok & labelled)


def split_rows(store: Store, seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> Split:
    """The store's split if every usable row has one, else a seeded split stratified by genre."""
    rows = usable_rows(store)
    given = store.tracks[SPLIT].to_numpy()[rows]
    if len(rows) and all(isinstance(s, str) and s in SPLITS for s in given):
        return Split(rows, np.asarray(given, dtype=object), "store")
    names = np.empty(len(rows), dtype=object)
    targets = np.asarray(store.labels)[rows].argmax(axis=1)
    rng = np.random.default_rng(seed)
    for c in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == c))
        n = len(idx)
        n_val = int(round(n * fractions[1])) if n >= 3 else 0
        n_test = int(round(n * fractions[2])) if n >= 3 else 0
        if n >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        names[idx[: n - n_val - n_test]] = TRAINING
        names[idx[n - n_val - n_test : n - n_test]] = VALIDATION
        names[idx[n - n_test :]] = TEST
    return Split(rows, names, "stratified", seed, tuple(fractions))


class MelDataset(Dataset):
    """A store's ok, labelled rows as (float32 tensor [1, n_mels, n_frames], target).

    The target is the class index (an int), or in a multi-label store (``extract --labels
    genres|genres_all``) a float32 multi-hot tensor of length ``len(classes)``. The
    attributes follow torchvision's datasets. The matrices stay on disk, each item read
    (pread, the file opened lazily in each DataLoader worker) through the store's checked
    reader (`Store.reader`): its crc32 against the journal and finite values, so a damaged
    row raises StoreError and never reaches a model. Labels and row indices are small arrays
    held in memory.

    Parameters
    ----------
    store : path or Store
        The store to read.
    split : {"training", "validation", "test"}, optional
        One split (the store's own when every usable row has one, else a seeded split
        stratified by genre); None serves every usable row.
    transform : callable, optional
        Applied to each [1, n_mels, n_frames] tensor.
    target_transform : callable, optional
        Applied to each target.
    seed : int
        Seed of the stratified split (when the store has no split of its own).
    fractions : (float, float, float)
        Training, validation and test shares of the stratified split.
    verify : bool
        Check every served row once, now (crc32 of the journal and finite values, read in
        chunks), so that a damaged store is refused before a long training run rather than
        when the row comes up. Each item is checked again as it is served, whatever this says.

    Attributes
    ----------
    classes : list of str
        Class names; a target indexes into it (or is a multi-hot row over it).
    class_to_idx : dict of str to int
        Each class name's index.
    targets : numpy.ndarray
        Every item's target, in order: (n,) int64 class indices, or (n, n_classes) float32
        multi-hot rows in a multi-label store.
    multi_label : bool
        Whether a track may carry several classes.
    rows : numpy.ndarray
        The store rows served, in order.
    split_name : str or None
        The split served (None: every usable row).
    label_kind : str
        What the labels are: genre_top (one-hot), or FMA's genres / genres_all (multi-hot).

    ``repr`` prints it as torchvision prints a dataset: the number of items, the store, the
    split and where it came from, the classes.

    Raises
    ------
    ValueError
        An unknown split name.
    StoreError
        A served row is damaged (its bytes do not match the journal's checksum, or hold values
        that are not finite): on opening with `verify`, else when the item is read. Never a
        damaged matrix served.

    Examples
    --------
    >>> train = MelDataset("fma_small.melset", split="training")   # doctest: +SKIP
    >>> x, y = train[0]                                           # doctest: +SKIP
    >>> train.classes[y], train.class_to_idx["Rock"]              # doctest: +SKIP
    """

    def __init__(
        self,
        store: str | os.PathLike | Store,
        split: str | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int = 0,
        fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
        target_transform: Callable | None = None,
        verify: bool = True,
    ):
        store = store if isinstance(store, Store) else Store(store)
        self.root = store.root
        self.classes: list[str] = list(store.classes)
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(self.classes)}
        self.multi_label = store.multi_label
        self.split = split_rows(store, seed, fractions)
        self.rows = self.split.select(split)
        self.split_name = split
        self.label_kind = store.label_kind
        labels = np.asarray(store.labels)[self.rows]
        if self.multi_label:
            self.targets = labels.astype(np.float32)
        else:
            self.targets = labels.argmax(axis=1).astype(np.int64)
        self.transform = transform
        self.target_transform = target_transform
        self.recipe = store.recipe
        self._reader = store.reader(self.rows)
        if verify:
            for _ in self._reader.chunks(self.rows):
                pass

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        where = "the store's own" if self.split.source == "store" else f"stratified, seed {self.split.seed}"
        lines = [
            f"Dataset {type(self).__name__}",
            f"    Number of datapoints: {len(self)}",
            f"    Root location: {self.root}",
            f"    Split: {self.split_name or 'all'} ({where})",
            f"    Classes: {len(self.classes)} ({self.label_kind}{', multi-label' if self.multi_label else ''})",
        ]
        if self.transform is not None:
            lines.append(f"    Transform: {self.transform!r}")
        if self.target_transform is not None:
            lines.append(f"    Target transform: {self.target_transform!r}")
        return "\n".join(lines)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        x = self._reader.read([self.rows[i]])[0]  # checked: crc32 of the journal, finite values
        x = torch.from_numpy(x.astype(np.float32, copy=False)).unsqueeze(0)
        if self.transform is not None:
            x = self.transform(x)
        y = torch.from_numpy(self.targets[i].copy()) if self.multi_label else int(self.targets[i])
        if self.target_transform is not None:
            y = self.target_transform(y)
        return x, y
