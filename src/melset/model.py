"""The baseline genre classifier: a compact 2-D CNN over the log-mel spectrogram.

Four blocks of conv 3x3 -> batch norm -> ReLU -> max pool; the pools shrink time faster
than frequency (a 128 x 1,024 input is 1:8), so after four blocks a 128-channel map of
8 x 8 remains. Global average pooling makes it independent of the exact input size,
then dropout and one linear layer give the genre logits. ~100k parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Architecture:
    n_classes: int
    channels: tuple[int, ...] = (16, 32, 64, 128)
    pools: tuple[tuple[int, int], ...] = ((2, 4), (2, 4), (2, 4), (2, 2))  # (frequency, time)
    dropout: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Architecture:
        return cls(d["n_classes"], tuple(d["channels"]), tuple(tuple(p) for p in d["pools"]), d["dropout"])


class MelCNN(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
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
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(arch.dropout), nn.Linear(c_in, arch.n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, 1, n_mels, n_frames) -> logits (batch, n_classes)."""
        return self.head(self.features(x))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
