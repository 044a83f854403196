"""What a decode gives (`Decoded`, or an `AudioError` in words) and the steps every decoder ends with.

`to_mono` averages channels and `finish` resamples with soxr 'HQ', both exactly as
librosa.load does, then refuses non-finite samples.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np


class AudioError(Exception):
    """A file that cannot be turned into audio; str() is the reason in words."""


class FileBytes:
    """A file that is not at a local path (a zip archive's member, an object in storage): its
    name (for its extension and for messages), its size, and `open()`, a seekable binary file
    object over its bytes. Every decoder reads one as it reads a file."""

    name: str
    size: int

    def open(self):  # pragma: no cover - each kind has its own
        raise NotImplementedError


@dataclass(frozen=True)
class InMemory(FileBytes):
    """A file's bytes, read whole."""

    name: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def open(self):
        import io

        return io.BytesIO(self.data)

    def __repr__(self) -> str:
        return f"InMemory({self.name!r}, {len(self.data)} bytes)"


@dataclass(frozen=True, eq=False)
class Ranged(FileBytes):
    """A file read by ranges as the decoders ask for them (an object in storage, through range
    requests): `fetch(start, end)` gives bytes [start, end). What was fetched is kept, so a
    second reader (libmpg123's mix after libsndfile's look) fetches nothing again; `fetched`
    counts the bytes, `error` keeps a fetch's failure (a decoder sees it as the end of the file)."""

    name: str
    size: int
    fetch: object = field(repr=False)
    block: int = 1 << 20
    _have: list = field(default_factory=list, repr=False)  # [(start, bytes)]
    _state: dict = field(default_factory=dict, repr=False)  # "fetched", "error"

    @property
    def fetched(self) -> int:
        return self._state.get("fetched", 0)

    @property
    def error(self) -> BaseException | None:
        return self._state.get("error")

    def read_at(self, pos: int, n: int) -> bytes:
        end = min(pos + n, self.size)
        if pos >= end:
            return b""
        for start, data in self._have:
            if start <= pos and end <= start + len(data):
                return data[pos - start : end - start]
        want = min(max(end, pos + self.block), self.size)
        try:
            data = self.fetch(pos, want)
        except BaseException as exc:
            self._state["error"] = exc
            raise
        self._state["fetched"] = self.fetched + len(data)
        self._have.append((pos, data))
        return data[: end - pos]

    def open(self):
        return _RangedReader(self)


class _RangedReader(io.RawIOBase):
    def __init__(self, ranged: Ranged):
        self._r, self._pos = ranged, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._r.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        try:
            data = self._r.read_at(self._pos, len(buffer))
        except Exception:  # kept in `error`; a decoder (a C callback) sees the end of the file
            return 0
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def open_binary(src: str | FileBytes):
    """A binary file object over a path or a `FileBytes` file, read from its start."""
    return src.open() if isinstance(src, FileBytes) else open(src, "rb")


def name_of(src: str | FileBytes) -> str:
    return src.name if isinstance(src, FileBytes) else src


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
