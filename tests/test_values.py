"""Stored data is correct: a row is ok only when every value is finite and in the recipe's
range after the cast to the store's dtype; audio that cannot give that is failed with a reason."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf

from conftest import real_music
from melset import audio
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
    # checked in float32 as it will be stored: the cast's extremes are the extremes' casts
    loud = np.array([[-1e5, -3.0]], np.float32)
    assert "1 NaN or infinite values in float16" in out_of_range(loud, Recipe(scaling="none"), "float16")
    assert out_of_range(loud, Recipe(scaling="none", top_db=None), "float32") is None
    assert "NaN or infinite values in float16" in out_of_range(np.array([[np.inf, 0]], np.float32), ok, "float16")
    assert "outside [0, 1]" in out_of_range(np.array([[1.5]], np.float32), ok)
    assert "outside [-80, 0]" in out_of_range(np.array([[-90.0]], np.float32), Recipe(scaling="none"))
    assert out_of_range(np.array([[-500.0]], np.float32), Recipe(scaling="none", top_db=None)) is None
    assert "outside" in out_of_range(np.array([[3.0]], np.float32), Recipe(scaling="none", top_db=None))


# -- headers that lie about the length -----------------------------------------------------


def _xing_mp3(tmp_path, frames: int):
    """A real VBR MP3 whose Xing header claims `frames` MPEG frames (the file has 1,150)."""
    import struct

    from conftest import SAMPLE_AUDIO

    data = bytearray((SAMPLE_AUDIO / "200" / "200036.mp3").read_bytes())
    i = data.find(b"Xing")
    assert struct.unpack(">I", data[i + 4 : i + 8])[0] & 1 and struct.unpack(">I", data[i + 8 : i + 12])[0] == 1150
    data[i + 8 : i + 12] = struct.pack(">I", frames)
    path = tmp_path / f"xing{frames}.mp3"
    path.write_bytes(bytes(data))
    return path


def _wav_claiming(tmp_path, seconds: float):
    """A real 30 s 16-bit WAV whose data chunk size claims `seconds`."""
    import struct

    from conftest import write_audio

    full = write_audio(tmp_path / "full.wav", seconds=30, rate=RATE, channels=1, subtype="PCM_16")
    data = bytearray(full.read_bytes())
    j = data.find(b"data")
    data[j + 4 : j + 8] = struct.pack("<I", int(seconds * RATE) * 2)
    path = tmp_path / f"claims{seconds}.wav"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda t: _xing_mp3(t, 100), "too_short"),  # libsndfile (librosa's decoder) trusts the count
        (lambda t: _xing_mp3(t, 383), "too_short"),
        (lambda t: _xing_mp3(t, 4600), "ok"),  # more frames promised than held: the audio there is used
        (lambda t: _xing_mp3(t, 0), "ok"),
        (lambda t: _wav_claiming(t, 10), "too_short"),  # data chunk too small: only what it declares
        (lambda t: _wav_claiming(t, 26), "ok"),
        (lambda t: _wav_claiming(t, 60), "ok"),  # too big, but the kept frames are all there
    ],
)
def test_headers_that_lie_about_the_length_are_read_as_librosa_reads_them(tmp_path, make, expected):
    from conftest import notebook_matrix

    path = make(tmp_path)
    result = process(path, Recipe(dtype="float32"))
    ref = notebook_matrix(str(path))
    assert result.status == expected, result.error
    if expected == "ok":
        np.testing.assert_allclose(result.mel, ref, atol=1e-3, rtol=0)
    else:
        assert ref is None  # the notebook skips it too (fewer than 1,024 frames)
        assert "s of audio gives" in result.error


def test_an_absurd_xing_frame_count_is_a_reason_not_a_36_tib_allocation(tmp_path):
    """librosa.load sizes its buffer from the header and fails on 2^32 - 1 frames (the notebook
    skips the file). melset decodes the stream to learn its true length and names both."""
    path = _xing_mp3(tmp_path, 0xFFFFFFFF)
    result = process(path, Recipe(dtype="float32"))
    assert result.status == "failed"
    assert result.error == "truncated: the stream ends after 30.0 s of the 112195064.0 s its header announces"
    for decoder in ("auto", "soundfile"):  # the whole file (predict) too
        with pytest.raises(audio.AudioError, match="ends after 30.0 s of the 112195064.0 s"):
            audio.decode(path, 22050, None, decoder=decoder)


@pytest.mark.parametrize("max_frames_at", [None, Recipe().input_frames_needed], ids=["whole file", "kept frames"])
def test_a_xing_count_of_one_frame_is_a_reason_not_a_traceback(tmp_path, max_frames_at):
    """libsndfile then reports no length and an unseekable stream, where soundfile's
    read(frames=-1) raises ValueError (librosa.load too)."""
    for decoder in ("auto", "soundfile"):
        with pytest.raises(audio.AudioError, match="no audio frames could be decoded .libsndfile finds no length"):
            audio.decode(_xing_mp3(tmp_path, 1), 22050, max_frames_at, decoder=decoder)
