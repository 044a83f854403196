"""The mel scale melset computes on: Slaney's (librosa's default, htk=False) and its filterbank.

Each function mirrors the librosa function of the same name with librosa's defaults
(`librosa.hz_to_mel`, `librosa.mel_frequencies`, `librosa.filters.mel` with norm="slaney");
the tests hold them side by side.
"""

from __future__ import annotations

import numpy as np

# Slaney's scale: linear below 1 kHz (200/3 Hz a mel), logarithmic above (a factor 6.4 per 27 mels)
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(freqs: np.ndarray | float) -> np.ndarray:
    """Slaney's auditory-toolbox mel scale (librosa's default, htk=False)."""
    freqs = np.asanyarray(freqs, dtype=np.float64)
    log_t = freqs >= _MIN_LOG_HZ
    return np.where(
        log_t, _MIN_LOG_MEL + np.log(np.maximum(freqs, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, freqs / _F_SP
    )


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    mels = np.asanyarray(mels, dtype=np.float64)
    log_t = mels >= _MIN_LOG_MEL
    return np.where(log_t, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels - _MIN_LOG_MEL)), _F_SP * mels)


def mel_frequencies(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """`n_mels` frequencies (Hz) evenly spaced on the mel scale from fmin to fmax."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels))


def empty_mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Indices of the mel filters that no FFT bin falls inside: the all-zero rows of
    ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)``.

    Filter i is non-zero exactly at the bins strictly between edges i and i + 2, so this
    counts bins per filter instead of building the (n_mels, 1 + n_fft // 2) matrix.
    """
    edges = mel_frequencies(n_mels + 2, fmin, fmax)
    bins = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    inside = np.searchsorted(bins, edges[2:], side="left") - np.searchsorted(bins, edges[:-2], side="right")
    return np.flatnonzero(inside <= 0)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular filters, (n_mels, 1 + n_fft // 2): librosa.filters.mel's defaults."""
    if fmax is None:
        fmax = sr / 2.0
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_frequencies(n_mels + 2, fmin, fmax)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:n_mels] / fdiff[:n_mels, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)
