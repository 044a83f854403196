"""What a decode gives (`Decoded`, or an `AudioError` in words) and the steps every decoder ends with.

`to_mono` averages channels and `finish` resamples with soxr 'HQ', both exactly as
librosa.load does, then refuses non-finite samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class AudioError(Exception):
    """A file that cannot be turned into audio; str() is the reason in words."""


@dataclass(frozen=True)
class InMemory:
    """A file's bytes already read (a zip archive's member, an object from storage), with its
    name (for its extension and for messages). Every decoder reads it as it reads a file."""

    name: str
    data: bytes

    def __repr__(self) -> str:
        return f"InMemory({self.name!r}, {len(self.data)} bytes)"


def open_binary(src: str | InMemory):
    """A binary file object over a path or an `InMemory` file, read from its start."""
    import io

    return io.BytesIO(src.data) if isinstance(src, InMemory) else open(src, "rb")


def name_of(src: str | InMemory) -> str:
    return src.name if isinstance(src, InMemory) else src


@dataclass(frozen=True)
class Decoded:
    samples: np.ndarray  # mono float32 at `sample_rate`
    sample_rate: int
    native_rate: int
    channels: int
    duration_s: float  # the whole file's duration: exact when reached_end, else the header's
    reached_end: bool  # the whole stream was decoded (the file is not longer than what was read)
    backend: str  # "soundfile" (libsndfile), "mpg123" (libmpg123's mono mix) or "av" (FFmpeg)


def clean(exc: Exception | str) -> str:
    """A library's error message without its boilerplate ("Error : ", errno numbers, the path)."""
    text = exc if isinstance(exc, str) else getattr(exc, "strerror", None) or str(exc)
    return text.replace("Error : ", "").strip().rstrip(".")



def to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels of (n, channels) float32 exactly as librosa.to_mono (same sums, same order)."""
    if data.shape[1] == 1:
        return data[:, 0].copy()
    y = data[:, 0] + data[:, 1]
    for c in range(2, data.shape[1]):
        y += data[:, c]
    y /= np.float32(data.shape[1])
    return y


def finish(y: np.ndarray, native: int, sample_rate: int, reached_end: bool) -> np.ndarray:
    if native != sample_rate:
        import soxr

        n_in = len(y)
        y = np.asarray(soxr.resample(y, native, sample_rate, quality="soxr_hq"), dtype=np.float32)
        if reached_end:
            # librosa.resample fixes the length to ceil(n * ratio)
            n = int(math.ceil(n_in * float(sample_rate) / native))
            y = y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))
    # checked after resampling (NaN and inf spread through it): half the samples to look at
    if not np.isfinite(y).all():
        raise AudioError("the audio contains NaN or infinite sample values")
    return y
