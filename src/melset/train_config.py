"""A training run's hyper-parameters, without PyTorch: each field is also a `melset train` option.

A field declares its option once, beside its default: the help text, the flag where it is
not the field's name, the choices where there are some (`option`). The command line
generates its options from the fields, in their order, and builds the config from them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from melset.errors import UsageError

MODELS = ("baseline", "compact")  # melset.model builds them
SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")


def option(default, help: str | None = None, *, flag: str | None = None, choices: tuple[str, ...] | None = None):
    """A TrainConfig field with its `melset train` option: help text, flag (default: --field-name), choices."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


def option_flag(name: str) -> str:
    """The `melset train` option that sets the field `name` (num_workers: --workers)."""
    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
    return field.metadata.get("flag") or f"--{name.replace('_', '-')}"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (recorded in its config.json).

    The defaults are measured against the original recipe (`baseline_config`) by
    benchmarks/model_quality.py, 5-fold cross-validation on GTZAN clips; docs/training.md has the table.
    Every field is a `melset train` option, listed by `--help` in the fields' order.
    """

    epochs: int = option(60, "At least 1.")  # random crops show a quarter of each clip per epoch; 30 was measurably short
    batch_size: int = option(16, "At least 1.")
    lr: float = option(1e-3, "AdamW learning rate (> 0).")
    # 0: stop at the first epoch without a better validation score
    patience: int = option(20, "Stop after this many epochs without a better validation score (0 or more).")
    device: str = option("auto", choices=DEVICES)
    seed: int = option(0)
    num_workers: int = option(0, "DataLoader worker processes.", flag="--workers")
    model: str = option(
        "compact", "compact: the CNN with a frequency-aware head; baseline: the original MelCNN.", choices=MODELS
    )
    crop: int = option(
        256, "Frames per random training crop (scores average over crops covering the window); 0 = whole window."
    )
    freq_mask: int = option(16, "SpecAugment: mels per masked band (0 = off).")  # two bands
    time_mask: int = option(32, "SpecAugment: frames per masked span (0 = off).")  # two spans
    mixup: float = option(0.2, "Mixup Beta alpha (0 = off).")  # Beta(alpha, alpha) mixing weight
    label_smoothing: float = option(0.1)
    weight_decay: float = option(1e-2, "AdamW weight decay.")
    schedule: str = option("cosine", "Learning rate: cosine decay after a 10% warm-up, or constant.", choices=SCHEDULES)

    def check(self) -> None:
        """Raise UsageError naming the first option whose value cannot work."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{option_flag(name)} must be a whole number of at least 1, not {value!r}")
        non_negative = {
            "patience": self.patience,
            "num_workers": self.num_workers,
            "crop": self.crop,
            "freq_mask": self.freq_mask,
            "time_mask": self.time_mask,
        }
        for name, value in non_negative.items():
            if not isinstance(value, int) or value < 0:
                raise UsageError(f"{option_flag(name)} must be a whole number of at least 0, not {value!r}")
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
