"""Log-mel features: mel power spectrogram, power_to_db(ref=max), per-frame min-max scaling.

Pure numpy/scipy. Each step mirrors the librosa / scikit-learn call the notebook makes
(the tests hold them side by side), but computes only the frames that are kept, with the
filterbank and window built once per recipe.

The STFT is float32 unless that cannot keep the documented bound. A float32 FFT's rounding
error is noise about 140 dB below the frame's energy in every bin, where librosa's float64 FFT
keeps every bin to float32's relative precision. Where a kept value (above the recipe's
amin and top_db floors) is so close to that noise that its dB value would move the matrix by
more than half the bound (1e-3 scaled, 1e-2 dB unscaled) -- `top_db` none with a tiny
`amin`, a band where the audio is at the resampler's noise floor -- the matrix is computed
again with a float64 STFT (`log_mel_precision` says which one a clip takes). The check costs
one matrix-vector product per block of frames and a few operations per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse

try:  # the `fast` extra: ~1.3 ms less per clip than scipy's pocketfft on this recipe's frames
    import ducc0
except ImportError:  # scipy.fft: the same transform, a little slower
    ducc0 = None

from melset.melscale import mel_filterbank
from melset.recipe import Recipe

__all__ = [
    "fft_backend",
    "hann_window",
    "log_mel",
    "log_mel_precision",
    "mel_power",
    "minmax_per_frame",
    "n_centred_frames",
    "power_to_db",
    "rfft_columns",
]


def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (scipy.signal.get_window('hann', n_fft, fftbins=True))."""
    n = np.arange(n_fft)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)


_BLOCK_FRAMES = 128
PRECISIONS = ("float32", "float64")
_EPS32 = float(np.finfo(np.float32).eps)
# The float32 STFT's rounding noise, in units of eps² * log2(n_fft) * the frame's energy * the band's
# weights: a kept mel power P with noise N in these units is off by at most 2 sqrt(F1 N P) + F2 N.
# Measured on real music at 8-192 kHz, n_fft 256-4096, narrow bands included (benchmarks/recipe_grid.py):
# F1 needs 1.7 at most and F2 20 at most.
_F1, _F2 = 4.0, 64.0
# How much of the bound the float32 STFT's noise may take (the rest is librosa's own float32).
_SHARE = 0.5
BOUND_SCALED, BOUND_DB = 1e-3, 1e-2  # tests/test_parity.py's bounds: scaled values, dB (scaling none)


@dataclass(frozen=True)
class _Kernel:
    window: np.ndarray
    filterbank: scipy.sparse.csr_matrix  # (n_mels, 1 + n_fft // 2); ~2 non-zeros per FFT bin
    noise: float  # the unit of float32 STFT noise in a mel band's power per unit of `ones @ power` (_F1, _F2)

    @property
    def window64(self) -> np.ndarray:
        return _window64(len(self.window))

    @property
    def filterbank64(self) -> scipy.sparse.csr_matrix:
        return self.filterbank.astype(np.float64)  # librosa's float32 weights, exactly


@lru_cache(maxsize=8)
def _kernel(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> _Kernel:
    fb = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    # ||frame||² = (P_0 + 2 sum P_k + P_n/2) / n_fft <= 2 * sum(P) / n_fft (Parseval on the half spectrum)
    noise = _EPS32**2 * max(1.0, np.log2(n_fft)) * 2.0 / n_fft * float(fb.sum(axis=1).max())
    return _Kernel(window=hann_window(n_fft), filterbank=scipy.sparse.csr_matrix(fb), noise=noise)


@lru_cache(maxsize=2)
def _window64(n_fft: int) -> np.ndarray:
    n = np.arange(n_fft)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)


def mel_power(y: np.ndarray, recipe: Recipe, start_frame: int = 0, precision: str = "float32") -> np.ndarray:
    """Mel power spectrogram (n_mels, n_frames) of centred frames start_frame.. of `y`, float32.

    Equals librosa.feature.melspectrogram(y=y, sr, n_fft, hop_length, n_mels, fmin, fmax)[:, start:start + n_frames]
    (centre padding with zeros), computing only those frames. Samples past the end of `y`
    are zeros, as librosa's centre padding makes them. precision "float64" computes the STFT and
    the mel power in float64, as librosa's float64 FFT, and rounds the result to float32.
    """
    return _mel_power(y, recipe, start_frame, precision)


def _mel_power(
    y: np.ndarray, recipe: Recipe, start_frame: int, precision: str, energy: np.ndarray | None = None
) -> np.ndarray:
    """mel_power; with `energy` (n_frames,), also fills it with each frame's `ones @ power` (float32 only)."""
    k = _kernel(recipe.sample_rate, recipe.n_fft, recipe.n_mels, recipe.fmin, recipe.fmax)
    exact = precision == "float64"
    dtype = np.float64 if exact else np.float32
    window, filterbank = (k.window64, k.filterbank64) if exact else (k.window, k.filterbank)
    half = recipe.n_fft // 2
    need = recipe.samples_needed
    buf = np.zeros(half + need, dtype=dtype)
    # buf[j] is y[first + j]; samples before 0 are the left centre padding
    first = start_frame * recipe.hop_length - half
    lo, hi = max(first, 0), min(len(y), first + half + need)
    if hi > lo:
        buf[lo - first : hi - first] = y[lo:hi]
    frames = np.lib.stride_tricks.sliding_window_view(buf, recipe.n_fft)[:: recipe.hop_length][: recipe.n_frames]
    out = np.empty((recipe.n_mels, recipe.n_frames), dtype=np.float32)
    ones = np.ones(1 + half, dtype=np.float32) if energy is not None else None
    # Blocks of frames keep each step's arrays in cache (~15% faster than whole-clip arrays).
    for start in range(0, recipe.n_frames, _BLOCK_FRAMES):
        block = frames[start : start + _BLOCK_FRAMES] * window
        # FFT along axis 0 of the transposed block gives (bins, frames) in C order directly,
        # which is what the sparse product wants.
        spec = rfft_columns(block.T)
        power = np.square(spec.real)
        power += np.square(spec.imag)
        # (n_mels, bins) @ (bins, frames) with the sparse filterbank: ~60x fewer multiplies than dense.
        out[:, start : start + _BLOCK_FRAMES] = filterbank @ power
        if ones is not None:
            energy[start : start + _BLOCK_FRAMES] = ones @ power
    return out


def _float32_suffices(
    lo: np.ndarray, hi: np.ndarray, energy: np.ndarray, ref: float, recipe: Recipe, k: _Kernel
) -> bool:
    """Whether the float32 STFT's noise moves no value of the matrix by more than its share of the bound.

    `lo`/`hi` are the per-frame extremes of power_to_db of the float32 mel power (floors applied),
    `energy` each frame's `ones @ power`, `ref` the power that 0 dB stands for. A kept power P
    whose band carries noise in units N = k.noise * energy is off by at most
    10 log10(1 + 2 sqrt(F1 N / P) + F2 N / P) dB, largest at a frame's smallest kept power,
    10^(lo / 10) * ref. A frame of (nearly) one value throughout is scaled to X - min, as
    scikit-learn does for a range under 10 float32 eps, whichever side of that the noise puts it.
    """
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ratio = (k.noise / ref) * energy.astype(np.float64) / np.power(10.0, lo.astype(np.float64) / 10.0)
        error_db = 10.0 * np.log10(1.0 + 2.0 * np.sqrt(_F1 * ratio) + _F2 * ratio)
        span = (hi - lo).astype(np.float64)
        if recipe.scaling == "minmax-per-frame":
            # both ends of a frame move: the scaled values by up to 2 * error / range
            ok = error_db <= _SHARE * BOUND_SCALED * span / 2.0
            flat = 2.0 * error_db <= _SHARE * BOUND_SCALED
            ok |= flat & (span + 2.0 * error_db < 10 * _EPS32)
        else:
            ok = error_db <= _SHARE * BOUND_DB
        return bool(np.all(ok))


def fft_backend() -> str:
    """The library that computes the FFTs: "ducc0" (the `fast` extra) or "scipy"."""
    return "scipy" if ducc0 is None else "ducc0"


def rfft_columns(x: np.ndarray) -> np.ndarray:
    """Unnormalised real FFT of every column of `x`, single-threaded: complex64 for float32, complex128 for float64."""
    if ducc0 is None:
        import scipy.fft  # here, not at the top: importing it costs a worker ~0.3 s of start-up

        return scipy.fft.rfft(x, axis=0, workers=1)
    return ducc0.fft.r2c(x, axes=(0,), nthreads=1)


def power_to_db(S: np.ndarray, amin: float = 1e-10, top_db: float | None = 80.0) -> np.ndarray:
    """librosa.power_to_db(S, ref=np.max, amin, top_db) in S's dtype."""
    return _power_to_db(S, amin, top_db, float(S.max()))


def _power_to_db(S: np.ndarray, amin: float, top_db: float | None, peak: float) -> np.ndarray:
    ref = np.maximum(amin, S.dtype.type(peak))  # in S's dtype, as librosa; NaN stays NaN
    # 10 log10(x) as (10 / ln 10) ln(x): numpy's float32 log is vectorised, log10 is not
    # (0.3 vs 1.5 ms a clip); the two differ by an ulp or two of the dB value.
    log_spec = np.maximum(S, S.dtype.type(amin))
    np.log(log_spec, out=log_spec)
    log_spec *= S.dtype.type(10.0 / np.log(10.0))
    log_spec -= S.dtype.type(10.0 * np.log10(ref))
    if top_db is not None:
        np.maximum(log_spec, log_spec.max() - top_db, out=log_spec)
    return log_spec


def _power_to_db_as_librosa(S: np.ndarray, amin: float, top_db: float | None) -> np.ndarray:
    """power_to_db with librosa's own float32 operations (np.log10, then the reference subtracted).

    Where a frame's range is a few float32 ulps of its dB values, only the same roundings give the
    same scaled frame; np.log is 5x faster, so the float32 path keeps it.
    """
    log_spec = 10.0 * np.log10(np.maximum(S.dtype.type(amin), S))
    log_spec -= 10.0 * np.log10(np.maximum(S.dtype.type(amin), S.max()))
    if top_db is not None:
        log_spec = np.maximum(log_spec, log_spec.max() - S.dtype.type(top_db))
    return log_spec


def minmax_per_frame(X: np.ndarray) -> np.ndarray:
    """sklearn's MinMaxScaler().fit_transform(X): each column (time frame) to [0, 1] on its own.

    Near-constant columns (range under 10 float eps, e.g. digital silence) get scale 1 as in
    scikit-learn, so they become 0 rather than NaN.
    """
    return _minmax(X, X.min(axis=0), X.max(axis=0))


def _minmax(X: np.ndarray, data_min: np.ndarray, data_max: np.ndarray) -> np.ndarray:
    data_range = data_max - data_min
    data_range[data_range < 10 * np.finfo(X.dtype).eps] = 1.0
    scale = (1.0 / data_range).astype(X.dtype)
    out = X * scale
    out += 0.0 - data_min * scale
    return out


def log_mel(y: np.ndarray, recipe: Recipe, start_frame: int = 0) -> np.ndarray:
    """The whole feature recipe on mono samples at recipe.sample_rate: (n_mels, n_frames) float32.

    The STFT is float32 where that keeps the bound and float64 where it does not (`log_mel_precision`).
    """
    return _log_mel(y, recipe, start_frame)[0]


def log_mel_precision(y: np.ndarray, recipe: Recipe, start_frame: int = 0) -> str:
    """The precision of the STFT that `log_mel` computes these samples with: "float32" or "float64".

    "float64" where the float32 STFT's rounding noise (about 140 dB below each frame's energy)
    would move a value the recipe keeps by more than half the bound: in practice
    ``top_db`` none with a tiny ``amin``, or a band where the audio is at its noise floor.
    """
    return _log_mel(y, recipe, start_frame)[1]


def _log_mel(y: np.ndarray, recipe: Recipe, start_frame: int) -> tuple[np.ndarray, str]:
    k = _kernel(recipe.sample_rate, recipe.n_fft, recipe.n_mels, recipe.fmin, recipe.fmax)
    energy = np.empty(recipe.n_frames, dtype=np.float32)
    S = _mel_power(y, recipe, start_frame, "float32", energy)
    peak = float(S.max())
    db = _power_to_db(S, recipe.amin, recipe.top_db, peak)
    lo, hi = db.min(axis=0), db.max(axis=0)
    precision = "float32"
    if not _float32_suffices(lo, hi, energy, max(recipe.amin, peak), recipe, k):
        precision = "float64"
        db = _power_to_db_as_librosa(_mel_power(y, recipe, start_frame, precision), recipe.amin, recipe.top_db)
        lo, hi = db.min(axis=0), db.max(axis=0)
    if recipe.scaling == "minmax-per-frame":
        db = _minmax(db, lo, hi)
    return db, precision


def n_centred_frames(n_samples: int, hop_length: int, n_fft: int = 0) -> int:
    """How many centred frames librosa's STFT gives for n_samples: 1 + n // hop (even n_fft),
    1 + (n - 1) // hop (odd n_fft, whose centre padding is one sample short of a window)."""
    return 1 + (n_samples - n_fft % 2) // hop_length
