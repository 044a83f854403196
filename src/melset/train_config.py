"""A training run's hyper-parameters, without PyTorch: the command line reads its defaults here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from melset.errors import UsageError

MODELS = ("baseline", "compact")  # melset.model builds them
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (recorded in its config.json).

    The defaults are measured against the original recipe (`baseline_config`) by
    benchmarks/model_quality.py, 5-fold cross-validation on GTZAN clips; README.md has the table.
    """

    epochs: int = 60  # random crops show a quarter of each clip per epoch; 30 was measurably short
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    device: str = "auto"
    seed: int = 0
    patience: int = 20  # epochs without a better validation score before stopping; 0: at the first such epoch
    num_workers: int = 0
    model: str = "compact"  # one of melset.model.MODELS
    crop: int = 256  # frames per random training crop; 0 = the whole stored window
    freq_mask: int = 16  # SpecAugment: up to this many mels per band, two bands; 0 = off
    time_mask: int = 32  # SpecAugment: up to this many frames per span, two spans; 0 = off
    mixup: float = 0.2  # Beta(alpha, alpha) mixing weight; 0 = off
    label_smoothing: float = 0.1
    schedule: str = "cosine"  # one of SCHEDULES

    def check(self) -> None:
        """Raise UsageError naming the first option whose value cannot work."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be a whole number of at least 1, not {value!r}")
        non_negative = {
            "patience": self.patience,
            "workers": self.num_workers,
            "crop": self.crop,
            "freq_mask": self.freq_mask,
            "time_mask": self.time_mask,
        }
        for name, value in non_negative.items():
            if not isinstance(value, int) or value < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be a whole number of at least 0, not {value!r}")
        if self.crop and self.crop < 16:
            raise UsageError(f"--crop must be 0 (the whole window) or at least 16 frames, not {self.crop}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise UsageError(f"--lr must be a learning rate in (0, 1], not {self.lr}")
        if not (math.isfinite(self.weight_decay) and 0 <= self.weight_decay <= 1):
            raise UsageError(f"--weight-decay must be in [0, 1], not {self.weight_decay}")
        if not (math.isfinite(self.mixup) and 0 <= self.mixup <= 10):
            raise UsageError(f"--mixup must be a Beta alpha in [0, 10] (0 turns it off), not {self.mixup}")
        if not (math.isfinite(self.label_smoothing) and 0 <= self.label_smoothing < 1):
            raise UsageError(f"--label-smoothing must be in [0, 1), not {self.label_smoothing}")
        if self.model not in MODELS:
            raise UsageError(f"--model must be one of {', '.join(MODELS)}, not {self.model!r}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"--schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")


def baseline_config(**changes) -> TrainConfig:
    """The original recipe: the baseline CNN on whole windows, no augmentation, constant learning rate."""
    old = dict(model="baseline", crop=0, freq_mask=0, time_mask=0, mixup=0.0, label_smoothing=0.0, schedule="constant")
    return TrainConfig(**{**old, **changes})
