"""The recipe: every parameter that decides the bytes of a stored spectrogram.

One frozen object, written into every store's manifest and every trained run, so a
dataset always says how it was made and `predict` can apply exactly the same recipe.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

ON_SHORT = ("skip", "pad")
SCALINGS = ("minmax-per-frame", "none")
DTYPES = ("float16", "float32")
DECODERS = ("auto", "soundfile", "av")


@dataclass(frozen=True)
class Recipe:
    """Every parameter that decides the bytes of a stored spectrogram; the notebook's by default.

    The default is the reference notebook: ``librosa.load(path)`` (22,050 Hz mono, soxr HQ),
    ``melspectrogram(y, n_mels=128)[:, :1024]``, ``power_to_db(ref=np.max)`` and
    ``MinMaxScaler().fit_transform`` per time frame. A recipe is written into every store's
    manifest and every training run, so both always say how their data was made.

    Parameters
    ----------
    sample_rate : int
        Rate the audio is resampled to (Hz).
    n_mels : int
        Mel bands (Slaney scale and normalisation, as librosa's defaults).
    n_fft, hop_length : int
        STFT window length and hop in samples (Hann window, centred frames).
    n_frames : int
        Frames kept from the start of each clip.
    fmin, fmax : float
        Lowest and highest mel filter frequency; fmax None means sample_rate / 2.
    top_db : float or None
        ``power_to_db``'s floor below the peak; None keeps every level.
    amin : float
        ``power_to_db``'s smallest power.
    scaling : {"minmax-per-frame", "none"}
        Scale each time frame to [0, 1] as the notebook's MinMaxScaler, or keep dB.
    on_short : {"skip", "pad"}
        A clip shorter than n_frames is stored as too_short, or padded with silence.
    decoder : {"auto", "soundfile", "av"}
        libsndfile (as librosa.load), PyAV/FFmpeg, or libsndfile with FFmpeg for the rest.
    resample : {"soxr_hq"}
        The resampler (librosa.load's default).
    dtype : {"float16", "float32"}
        Stored precision.

    Examples
    --------
    >>> Recipe().shape
    (128, 1024)
    >>> Recipe(dtype="float32", on_short="pad").to_dict()["dtype"]
    'float32'
    """

    sample_rate: int = 22050
    n_mels: int = 128
    n_fft: int = 2048
    hop_length: int = 512
    n_frames: int = 1024
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2, as librosa
    top_db: float | None = 80.0
    amin: float = 1e-10
    # The notebook's `MinMaxScaler().fit_transform(mel)`: each time frame (column) on its own.
    scaling: str = "minmax-per-frame"
    # A clip shorter than n_frames is not stored ("skip", as the notebook) or padded with silence.
    on_short: str = "skip"
    # "auto": libsndfile (what librosa.load uses) for what it reads, PyAV/FFmpeg for the rest.
    decoder: str = "auto"
    resample: str = "soxr_hq"
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.on_short not in ON_SHORT:
            raise ValueError(f"on_short must be one of {ON_SHORT}, not {self.on_short!r}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, not {self.scaling!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, not {self.decoder!r}")
        if self.resample != "soxr_hq":
            raise ValueError("only soxr_hq resampling (librosa.load's default) is supported")
        for name in ("sample_rate", "n_mels", "n_fft", "hop_length", "n_frames"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def shape(self) -> tuple[int, int]:
        """(n_mels, n_frames): the shape of one stored matrix."""
        return (self.n_mels, self.n_frames)

    @property
    def samples_needed(self) -> int:
        """Samples at `sample_rate` that the kept frames touch (centred frames, n_fft // 2 each side)."""
        return (self.n_frames - 1) * self.hop_length + self.n_fft // 2

    @property
    def min_samples(self) -> int:
        """Fewest samples that still give n_frames centred frames (librosa: 1 + len // hop)."""
        return (self.n_frames - 1) * self.hop_length

    @property
    def seconds_needed(self) -> float:
        """Seconds of audio the kept frames touch."""
        return self.samples_needed / self.sample_rate

    def input_frames_needed(self, native_rate: int) -> int:
        """Samples to decode at the file's own rate: what the kept frames need, plus a margin
        that makes soxr's output over those frames bit-identical to resampling the whole file."""
        margin = max(4096, math.ceil(0.25 * native_rate))
        return math.ceil(self.samples_needed * native_rate / self.sample_rate) + margin

    def to_dict(self) -> dict[str, Any]:
        """The recipe as the plain dict that manifests and runs record."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """The recipe a manifest or run recorded; unknown keys are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown recipe parameters: {sorted(unknown)}")
        return cls(**data)
