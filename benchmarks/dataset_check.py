"""What the checked read costs `MelDataset` per item (µs), beside an unchecked read and a training step.

    python benchmarks/dataset_check.py [--store STORE] [--passes 20] [--batch-size 16]

Without --store, extracts /work/shared/data/fma_mini (or $MELSET_SHARED/data/fma_mini) into a
temporary store with the default recipe (float16, 128 x 1,024). Prints, per item:
  unchecked  the read before the check: np.array(mmap[row], float32) as a tensor
  checked    MelDataset[i]: pread, crc32 against the journal, finite values, as a tensor
  check      crc32 + the finiteness test alone on a row already in memory
and the one-off verify MelDataset does on opening (per row), and one CPU training step of
the baseline CNN (per item of a batch) to compare with. Items are warm in the page cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
import torch

from melset.dataset import MelDataset
from melset.store import Store
from melset.store.reader import _not_finite

SHARED = os.path.join(os.environ.get("MELSET_SHARED", "/work/shared"), "data", "fma_mini")


def make_store(folder: str) -> str:
    out = os.path.join(folder, "mini.melset")
    cmd = [sys.executable, "-m", "melset", "extract", "--tracks", os.path.join(SHARED, "fma_metadata", "tracks.csv")]
    cmd += ["--audio", os.path.join(SHARED, "fma_audio"), "--out", out, "--subset", "large", "--quiet"]
    subprocess.run(cmd, check=True)
    return out


def per_item_us(fn, n: int, passes: int) -> float:
    """Median over passes of the mean µs per item of fn(i) for i in range(n)."""
    times = []
    for _ in range(passes):
        t = time.perf_counter()
        for i in range(n):
            fn(i)
        times.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(times)


def train_step_us(shape: tuple[int, int], batch: int, n_classes: int) -> float:
    from torch import nn

    from melset.model import Architecture, MelCNN

    torch.manual_seed(0)
    model = MelCNN(Architecture(n_classes=n_classes))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.rand(batch, 1, *shape), torch.randint(0, n_classes, (batch,))
    loss = nn.CrossEntropyLoss()
    steps = []
    for i in range(4):
        t = time.perf_counter()
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()
        if i:  # the first step warms up
            steps.append(time.perf_counter() - t)
    return statistics.median(steps) / batch * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="a store to read (default: fma_mini extracted into a temporary folder)")
    ap.add_argument("--passes", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.store or make_store(tmp)
        store = Store(root)
        t = time.perf_counter()
        ds = MelDataset(store)  # verifies every served row once
        verify_us = (time.perf_counter() - t) / max(1, len(ds)) * 1e6
        n = len(ds)
        mels = np.load(os.path.join(store.root, "mels.npy"), mmap_mode="r")
        crcs = {r: store.records[r].crc32 for r in ds.rows.tolist()}

        def unchecked(i):
            return torch.from_numpy(np.array(mels[ds.rows[i]], dtype=np.float32)).unsqueeze(0)

        rows_in_memory = [np.array(mels[r]) for r in ds.rows]

        def check_only(i):
            x = rows_in_memory[i]
            return zlib.crc32(x) == crcs[int(ds.rows[i])] and not _not_finite(x.reshape(1, -1))[0]

        for i in range(n):  # warm the page cache
            ds[i]
        u = per_item_us(unchecked, n, args.passes)
        c = per_item_us(ds.__getitem__, n, args.passes)
        k = per_item_us(check_only, n, args.passes)
        step = train_step_us(tuple(store.manifest["shape"][1:]), args.batch_size, len(store.classes))
        print(f"store {store.root}: {n} items of {tuple(store.manifest['shape'][1:])} {store.manifest['dtype']}")
        print(f"unchecked read      {u:8.1f} µs/item")
        print(f"checked (MelDataset){c:8.1f} µs/item  (+{c - u:.1f} µs, {100 * (c - u) / max(u, 1e-9):+.0f}%)")
        print(f"check alone         {k:8.1f} µs/item")
        print(f"verify on opening   {verify_us:8.1f} µs/row, once")
        share = 100 * (c - u) / step
        print(f"training step (CPU) {step:8.1f} µs/item (batch {args.batch_size}); the check is {share:.2f}% of it")


if __name__ == "__main__":
    main()
