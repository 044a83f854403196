"""Exact for every recipe the Recipe accepts: where float32's STFT noise would show, float64 is used.

The float32 STFT's rounding noise lies about 140 dB under each frame's energy; librosa's float64
STFT has none. With top_db none and a tiny amin, or a band where the audio is at its noise floor
(near Nyquist after resampling), the recipe keeps values at that noise and whole frames moved by
up to 1.0 from librosa. benchmarks/recipe_grid.py measures the grid; these are its failures.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import SAMPLE_AUDIO, SAMPLE_TRACKS, run_melset
from melset import audio, features
from melset.cli import main
from melset.errors import RecipeError
from melset.recipe import Recipe, recipe_from_options

pytest.importorskip("librosa")
pytest.importorskip("sklearn")

TOL = 1e-3
CLIPS = ("200010", "200047", "200090")  # Folk and Classical at 44.1 kHz stereo, whale song at 22.05 kHz mono

# Recipes that moved whole frames on a0298da (worst difference from librosa on these clips then).
RECIPES = {
    # 5.0e-3 (whale song)
    "top-db-none-amin-1e-20": dict(top_db=None, amin=1e-20, n_frames=256),
    # 3.6e-2: the whale song resampled up to 44.1 kHz is silent above 11 kHz
    "top-db-none-amin-1e-20-44k": dict(
        sample_rate=44100, n_fft=512, hop_length=128, n_mels=64, top_db=None, amin=1e-20, n_frames=128
    ),
    # 2.2e-3 with the default amin and top_db: 44.1 kHz Folk resampled to 22.05 kHz, the band under Nyquist
    "band-at-nyquist-after-resampling": dict(fmin=10500.0, n_mels=4, n_fft=512, hop_length=128, n_frames=256),
    # 0.9 (whale song resampled up)
    "band-at-nyquist-44k-amin-1e-20": dict(
        sample_rate=44100, fmin=21000.0, n_mels=4, n_fft=512, hop_length=128, n_frames=256, amin=1e-20
    ),
}


def _oracle(y: np.ndarray, r: Recipe) -> np.ndarray:
    import librosa
    from sklearn.preprocessing import MinMaxScaler

    mel = librosa.feature.melspectrogram(
        y=y, sr=r.sample_rate, n_fft=r.n_fft, hop_length=r.hop_length, n_mels=r.n_mels, fmin=r.fmin, fmax=r.fmax
    )[:, : r.n_frames]
    db = librosa.power_to_db(mel, ref=np.max, amin=r.amin, top_db=r.top_db)
    return MinMaxScaler().fit_transform(db) if r.scaling == "minmax-per-frame" else db


def _decoded(clip: str, r: Recipe) -> np.ndarray:
    return audio.decode(SAMPLE_AUDIO / "200" / f"{clip}.mp3", r.sample_rate, None, decoder="soundfile").samples


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_at_the_noise_floor_compute_what_librosa_computes(name):
    r = Recipe(**RECIPES[name], dtype="float32")
    worst = {}
    for clip in CLIPS:
        y = _decoded(clip, r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            worst[clip] = float(np.abs(features.log_mel(y, r) - _oracle(y, r)).max())
    assert max(worst.values()) <= TOL, f"{name}: worst difference per clip {worst}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_stored_matrices_of_those_recipes_equal_librosa(tmp_path, name):
    from test_parity import _flags, librosa_matrix

    values = RECIPES[name]
    pd.DataFrame({"path": [f"200/{c}.mp3" for c in CLIPS], "label": ["a", "b", "c"]}).to_csv(
        tmp_path / "clips.csv", index=False
    )
    out = tmp_path / "store"
    run_melset(
        "extract", "--manifest", tmp_path / "clips.csv", "--audio", SAMPLE_AUDIO, "--out", out, "--quiet",
        "--dtype", "float32", "--decoder", "soundfile", *_flags(values),
    )  # fmt: skip
    tracks = pd.read_parquet(out / "tracks.parquet")
    mels = np.load(out / "mels.npy", mmap_mode="r")
    assert (tracks["status"] == "ok").all()
    recipe = Recipe(**values, dtype="float32", decoder="soundfile")
    for row, rec in tracks.iterrows():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            diff = float(np.abs(mels[row] - librosa_matrix(SAMPLE_AUDIO / rec["path"], recipe)).max())
        assert diff <= TOL, f"{name}, {rec['path']}: max difference {diff:.2e} > {TOL}"


def test_the_default_recipe_keeps_the_float32_stft():
    """The float64 STFT is for what needs it: every sample clip takes float32 with the default recipe."""
    r = Recipe()
    clips = ("200010", "200011", "200023", "200036", "200037", "200047", "200090", "200091")
    assert {features.log_mel_precision(_decoded(c, r), r) for c in clips} == {"float32"}
    # ... and the band at Nyquist after resampling takes float64, on the same clip
    band = Recipe(**RECIPES["band-at-nyquist-after-resampling"])
    assert features.log_mel_precision(_decoded("200010", band), band) == "float64"


@pytest.mark.parametrize("amin", [1e-300, 1e-39, 1e39])
def test_an_amin_float32_cannot_hold_is_refused_before_any_work(tmp_path, amin):
    out = tmp_path / "store"
    res = CliRunner().invoke(
        main,
        ["extract", "--tracks", str(SAMPLE_TRACKS), "--audio", str(SAMPLE_AUDIO), "--out", str(out), "--quiet",
         "--amin", f"{amin:g}"],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("melset: error: ") and "--amin" in res.stderr and "float32" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not out.exists(), "refused before the store was made"
    (tmp_path / "r.toml").write_text(f"amin = {amin!r}\n")
    with pytest.raises(RecipeError, match=r"r\.toml: amin \(--amin\)"):
        recipe_from_options(tmp_path / "r.toml")


def test_the_ends_of_float32_are_accepted_and_computed():
    tiny = float(np.finfo(np.float32).tiny)
    r = Recipe(amin=tiny, top_db=None, n_frames=64)
    y = _decoded("200090", r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diff = float(np.abs(features.log_mel(y, r) - _oracle(y, r)).max())
    assert diff <= TOL
