"""Genre classifiers over the log-mel spectrogram: the original baseline and a compact CNN.

``baseline`` (`MelCNN`): four blocks of conv 3x3 -> batch norm -> ReLU -> max pool; the
pools shrink time faster than frequency (a 128 x 1,024 input is 1:8), so after four blocks
a 128-channel map of 8 x 8 remains. Global average pooling, dropout and one linear layer
give the genre logits. ~100k parameters.

``compact`` (`CompactCNN`): the same kind of conv blocks with square pools, sized for
random crops of a few hundred frames, and a frequency-aware head: the last map is pooled
over time only (mean and max), so the classifier still sees *where* in the spectrum each
feature fired (bass, mids, highs) instead of one average over the whole picture.

Both accept any input size (the baseline pools globally, the compact head adapts over
frequency to a fixed number of bands), so a model trained on crops scores crops.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from melset.errors import UsageError
from melset.train_config import MODELS, TrainConfig


@dataclass(frozen=True)
class Architecture:
    n_classes: int
    channels: tuple[int, ...] = (16, 32, 64, 128)
    pools: tuple[tuple[int, int], ...] = ((2, 4), (2, 4), (2, 4), (2, 2))  # (frequency, time)
    dropout: float = 0.3
    kind: str = "baseline"
    bands: int = 0  # compact: frequency bands kept by the head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Architecture:
        return cls(
            d["n_classes"],
            tuple(d["channels"]),
            tuple(tuple(p) for p in d["pools"]),
            d["dropout"],
            d.get("kind", "baseline"),
            d.get("bands", 0),
        )


def architecture(name: str, n_classes: int) -> Architecture:
    """The default architecture of a model name (one of MODELS)."""
    if name == "baseline":
        return Architecture(n_classes)
    if name == "compact":
        return Architecture(
            n_classes,
            channels=(16, 32, 64, 128),
            pools=((2, 2), (2, 2), (2, 2), (2, 2)),
            dropout=0.3,
            kind="compact",
            bands=4,
        )
    raise ValueError(f"model must be one of {', '.join(MODELS)}, not {name!r}")


def _blocks(arch: Architecture) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 1
    for c_out, pool in zip(arch.channels, arch.pools):
        layers += [
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(pool),
        ]
        c_in = c_out
    return nn.Sequential(*layers)


class MelCNN(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        self.features = _blocks(arch)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(arch.dropout),
            nn.Linear(arch.channels[-1], arch.n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, 1, n_mels, n_frames) -> logits (batch, n_classes)."""
        return self.head(self.features(x))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class CompactCNN(MelCNN):
    def __init__(self, arch: Architecture):
        nn.Module.__init__(self)
        self.arch = arch
        self.features = _blocks(arch)
        c = arch.channels[-1]
        self.bands = nn.AdaptiveAvgPool1d(arch.bands)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(arch.dropout), nn.Linear(2 * c * arch.bands, arch.n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, 1, n_mels, n_frames) -> logits (batch, n_classes)."""
        h = self.features(x)  # (batch, c, f, t)
        h = torch.cat([h.mean(dim=3), h.amax(dim=3)], dim=1)  # over time only: (batch, 2c, f)
        return self.head(self.bands(h))


def build(arch: Architecture) -> MelCNN:
    """The network an architecture describes."""
    return CompactCNN(arch) if arch.kind == "compact" else MelCNN(arch)


def check_input_size(cfg: TrainConfig, recipe: dict, n_classes: int) -> None:
    """Refuse, before anything is written, an input (the store's n_mels x frames, or --crop frames)
    smaller than the model can take. Raises UsageError naming the smallest it accepts."""
    n_mels, n_frames = int(recipe["n_mels"]), int(recipe["n_frames"])
    frames = min(cfg.crop, n_frames) if cfg.crop else n_frames
    arch = architecture(cfg.model, n_classes)
    with torch.random.fork_rng(devices=[]):
        model = build(arch).eval()

    def accepts(f: int, t: int) -> bool:
        try:
            with torch.no_grad():
                model(torch.zeros(2, 1, f, t))
        except RuntimeError:
            return False
        return True

    if accepts(n_mels, frames):
        return
    min_f = min_t = 1
    for pf, pt in arch.pools:
        min_f, min_t = min_f * pf, min_t * pt
    while not accepts(min_f, max(frames, min_t)) and min_f < 1 << 16:
        min_f *= 2
    while not accepts(max(n_mels, min_f), min_t) and min_t < 1 << 16:
        min_t *= 2
    what = f"--crop {cfg.crop}" if cfg.crop else f"{n_frames} frames"
    raise UsageError(
        f"the {cfg.model} model needs inputs of at least {min_f} mel bands x {min_t} frames, and this store gives "
        f"{n_mels} mel bands x {what}; "
        + (f"use --crop {min_t} or more (at most {n_frames}), or " if cfg.crop and n_frames >= min_t else "")
        + f"extract a store with --n-mels {max(n_mels, min_f)} --frames {max(n_frames, min_t)} or more"
    )
