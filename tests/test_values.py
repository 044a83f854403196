"""Stored data is correct: a row is ok only when every value is finite and in the recipe's
range after the cast to the store's dtype; audio that cannot give that is failed with a reason."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf

from conftest import real_music
from melset.recipe import Recipe
from melset.track import out_of_range, process, value_range

RATE = 22050


def _music(seconds: float = 25.0) -> np.ndarray:
    x, sr = real_music()
    import soxr

    return soxr.resample(x[: int(seconds * sr)].mean(axis=1), sr, RATE).astype(np.float32)


def _spike(value: float) -> np.ndarray:
    y = _music()
    y[100_000] = value
    return y


# (name, samples, what librosa gives: "finite" -> melset equals it; "overflow" -> failed with the reason)
CASES = {
    "one sample of 1e30": (lambda: _spike(1e30), "overflow"),
    "one sample of 3e38": (lambda: _spike(3e38), "overflow"),
    "one sample of -1e25": (lambda: _spike(-1e25), "overflow"),
    "one sample of 1e10": (lambda: _spike(1e10), "finite"),
    "music times 1e18": (lambda: _music() * np.float32(1e18), "overflow"),
    "music times 1e4": (lambda: _music() * np.float32(1e4), "finite"),
    "denormals only": (lambda: np.full(RATE * 25, 1e-40, np.float32), "finite"),
    "denormal noise": (
        lambda: (np.random.default_rng(0).standard_normal(RATE * 25) * 1e-39).astype(np.float32),
        "finite",
    ),
    "DC only": (lambda: np.full(RATE * 25, 0.7, np.float32), "finite"),
    "silence": (lambda: np.zeros(RATE * 25, np.float32), "finite"),
}


def _librosa(y: np.ndarray, scaled: bool) -> np.ndarray:
    import librosa
    from sklearn.preprocessing import MinMaxScaler

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        mel = librosa.feature.melspectrogram(y=y, sr=RATE, n_mels=128)[:, :1024]
        mel = librosa.power_to_db(mel, ref=np.max)
        return MinMaxScaler().fit_transform(mel) if scaled else mel


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("scaling", ["minmax-per-frame", "none"])
def test_extreme_samples_are_exact_or_failed_with_a_reason(tmp_path, name, scaling):
    make, expected = CASES[name]
    y = make()
    path = tmp_path / "x.wav"
    sf.write(path, y, RATE, subtype="FLOAT")
    y_read = sf.read(path, dtype="float32")[0]
    ref = _librosa(y_read, scaled=scaling != "none")
    assert np.isfinite(ref).all() == (expected == "finite")  # the case is what its name says
    for dtype in ("float16", "float32"):
        recipe = Recipe(dtype=dtype, scaling=scaling)
        result = process(path, recipe)
        if expected == "finite":
            assert result.status == "ok", result.error
            assert result.mel.dtype == np.dtype(dtype) and np.isfinite(result.mel).all()
            lo, hi = value_range(recipe)
            assert result.mel.min() >= lo - 1e-3 and result.mel.max() <= hi + 1e-3
            # the project's parity bound (1e-3) scaled; in dB float16 rounds by up to 0.03 dB at -80 dB
            tol = 1e-3 if scaling != "none" else (0.04 if dtype == "float16" else 0.01)
            np.testing.assert_allclose(result.mel.astype(np.float32), ref, atol=tol, rtol=0)
        else:
            assert result.status == "failed" and result.mel is None
            assert result.error.startswith(("sample values out of range", "the audio contains NaN or infinite")), (
                result.error
            )


def test_out_of_range_names_the_problem():
    ok = Recipe()
    assert out_of_range(np.zeros((2, 2), np.float16), ok) is None
    assert "NaN or infinite" in out_of_range(np.array([[np.nan, 0]], np.float32), ok)
    # float16 overflows at 65,504: a dB value that fits float32 is inf once cast
    with np.errstate(over="ignore"):
        cast = np.array([[-1e5]], np.float32).astype(np.float16)
    assert "NaN or infinite" in out_of_range(cast, Recipe(scaling="none"))
    assert "outside [0, 1]" in out_of_range(np.array([[1.5]], np.float32), ok)
    assert "outside [-80, 0]" in out_of_range(np.array([[-90.0]], np.float32), Recipe(scaling="none"))
    assert out_of_range(np.array([[-500.0]], np.float32), Recipe(scaling="none", top_db=None)) is None
    assert "outside" in out_of_range(np.array([[3.0]], np.float32), Recipe(scaling="none", top_db=None))
