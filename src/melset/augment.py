"""Training-time augmentation and test-time crops for spectrogram batches.

Every random draw takes an explicit ``torch.Generator`` so a training run is reproducible
from its seed. Batches are ``(batch, 1, n_mels, n_frames)`` tensors.

- `random_crops`: one random window of ``length`` frames per item (training);
- `covering_crops`: evenly spaced windows that together cover every frame (test time);
- `mask_`: SpecAugment-style frequency and time masks, in place;
- `mixup`: convex combinations of shuffled pairs with a Beta-distributed weight.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def random_crops(x: torch.Tensor, length: int, gen: torch.Generator) -> torch.Tensor:
    """One random window of `length` frames per item; `x` unchanged when it is not longer."""
    n_frames = x.shape[-1]
    if length <= 0 or length >= n_frames:
        return x
    starts = torch.randint(0, n_frames - length + 1, (x.shape[0],), generator=gen)
    return torch.stack([x[i, ..., s : s + length] for i, s in enumerate(starts.tolist())])


def crop_starts(n_frames: int, length: int) -> list[int]:
    """Starts of the fewest evenly spaced `length`-frame windows that cover `n_frames` frames."""
    if length <= 0 or length >= n_frames:
        return [0]
    n = math.ceil(n_frames / length)
    return [int(round(s)) for s in np.linspace(0, n_frames - length, n)]


def covering_crops(x: torch.Tensor, length: int) -> torch.Tensor:
    """(batch, ...) -> (n_crops, batch, ..., length): the `crop_starts` windows of every item."""
    if length <= 0 or length >= x.shape[-1]:
        return x[None]
    return torch.stack([x[..., s : s + length] for s in crop_starts(x.shape[-1], length)])


def mask_(x: torch.Tensor, freq: int, time: int, gen: torch.Generator, count: int = 2) -> torch.Tensor:
    """SpecAugment masks in place: `count` bands of up to `freq` mels and `count` spans of up to `time` frames.

    Masked cells take the item's mean, so a masked band looks like "no information", not silence.
    """
    b, _, n_mels, n_frames = x.shape
    fill = x.mean(dim=(1, 2, 3))
    for size, axis, extent in ((freq, 2, n_mels), (time, 3, n_frames)):
        if size <= 0:
            continue
        widths = torch.randint(0, min(size, extent) + 1, (b, count), generator=gen)
        starts = (torch.rand((b, count), generator=gen) * (extent - widths + 1)).long()
        for i in range(b):
            for w, s in zip(widths[i].tolist(), starts[i].tolist()):
                if w:
                    if axis == 2:
                        x[i, :, s : s + w, :] = fill[i]
                    else:
                        x[i, :, :, s : s + w] = fill[i]
    return x


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix each item with a shuffled partner: returns (mixed x, y, partner's y, weight of y)."""
    if alpha <= 0 or len(y) < 2:
        return x, y, y, 1.0
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)  # the first label stays the main one
    perm = torch.randperm(len(y), generator=gen)
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam
