"""The stored matrices against the reference notebook's own computation (librosa + sklearn)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import MINI_AUDIO, SAMPLE_AUDIO, notebook_matrix, needs_shared, run_melset
from melset.catalog import fma
from melset.recipe import Recipe

pytestmark = pytest.mark.slow  # whole commands end to end

pytest.importorskip("librosa")
pytest.importorskip("sklearn")

TOL = 1e-3


def _check_store(store_dir):
    tracks = pd.read_parquet(store_dir / "tracks.parquet")
    mels = np.load(store_dir / "mels.npy", mmap_mode="r")
    checked = 0
    for row, rec in tracks.iterrows():
        ref = notebook_matrix(rec["path"])
        if rec["status"] == "ok":
            assert ref is not None, f"{rec['track_id']}: stored but the notebook would skip it"
            diff = float(np.abs(mels[row].astype(np.float32) - ref).max())
            assert diff <= TOL, f"track {rec['track_id']}: max difference {diff:.2e} > {TOL}"
            checked += 1
        else:
            assert ref is None, f"{rec['track_id']} is {rec['status']} ({rec['error']}) but the notebook keeps it"
            assert not np.any(mels[row]), "rows that are not ok hold zeros"
    return checked


def test_sample_store_matches_notebook(sample_store):
    assert _check_store(sample_store) == 8


@needs_shared
def test_fma_mini_every_real_clip_matches_notebook(mini_store, fixture_json):
    tracks = pd.read_parquet(mini_store / "tracks.parquet").set_index("track_id")
    long_real = [t["track_id"] for t in fixture_json["tracks"] if t["source"] and t["duration"] >= 24]
    assert (tracks.loc[long_real, "status"] == "ok").all()
    assert _check_store(mini_store) == len(long_real) == 21


@needs_shared
def test_fma_mini_statuses(mini_store, fixture_json):
    tracks = pd.read_parquet(mini_store / "tracks.parquet").set_index("track_id")
    for bad in fixture_json["bad_files"]:
        rec = tracks.loc[bad["track_id"]]
        assert rec["status"] == "failed" and len(rec["error"]) > 10
    assert tracks.loc[200159, "error"] == "empty file (0 bytes)"
    assert tracks.loc[200176, "error"].startswith("truncated:")
    assert tracks.loc[200193, "error"].startswith("not an MP3 stream: no valid frame header")
    assert tracks.loc[200210, "error"].startswith("not audio: an HTML page")
    for tid in fixture_json["missing_on_disk"]:
        assert tracks.loc[tid, "status"] == "missing"
        assert tracks.loc[tid, "error"] == f"file not found: {fma.audio_path(MINI_AUDIO, tid)}"
    short = [t["track_id"] for t in fixture_json["tracks"] if t["source"] and t["duration"] < 24]
    assert (tracks.loc[short, "status"] == "too_short").all()
    assert tracks.loc[200112, "duration_s"] == pytest.approx(5.33, abs=0.01)


@needs_shared
def test_float16_default_also_within_tolerance(tmp_path):
    from conftest import MINI_TRACKS, run_melset

    out = tmp_path / "f16"
    run_melset("extract", "--tracks", MINI_TRACKS, "--audio", MINI_AUDIO, "--out", out, "--subset", "small", "--quiet")
    assert np.load(out / "mels.npy", mmap_mode="r").dtype == np.float16
    assert _check_store(out) > 0


# -- any recipe equals librosa for that recipe ---------------------------------------------------

# Non-default recipes: sample rate up and down, small and large windows, a band, dB kept, an odd
# window with a hop longer than it and no floor. Values as a manifest's recipe records them.
RECIPES = {
    "44k1-nfft4096": dict(sample_rate=44100, n_fft=4096, hop_length=1024, n_frames=512),
    "16k-nfft512": dict(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40, n_frames=1000),
    "band-30-8000": dict(fmin=30.0, fmax=8000.0, n_mels=96, n_frames=800),
    "unscaled-db": dict(scaling="none", top_db=60.0, n_frames=600),
    "odd-nfft-long-hop": dict(n_fft=1023, hop_length=1500, top_db=None, n_mels=64, n_frames=300),
}
CLIPS = ("200010", "200047", "200090")  # Folk and Classical at 44.1 kHz stereo, whale song at 22.05 kHz mono


def _flags(values: dict) -> list[str]:
    names = {"n_frames": "--frames"}
    out = []
    for key, value in values.items():
        out += [names.get(key, "--" + key.replace("_", "-")), "none" if value is None else str(value)]
    return out


def librosa_matrix(path, recipe) -> np.ndarray:
    """The notebook's calls with the recipe's values: librosa.load -> melspectrogram -> power_to_db -> MinMaxScaler."""
    import librosa
    from sklearn.preprocessing import MinMaxScaler

    y, sr = librosa.load(path, sr=recipe.sample_rate)
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=sr,
        n_fft=recipe.n_fft,
        hop_length=recipe.hop_length,
        n_mels=recipe.n_mels,
        fmin=recipe.fmin,
        fmax=recipe.fmax,
    )[:, : recipe.n_frames]
    db = librosa.power_to_db(mel, ref=np.max, amin=recipe.amin, top_db=recipe.top_db)
    return MinMaxScaler().fit_transform(db) if recipe.scaling == "minmax-per-frame" else db


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_matches_librosa_for_that_recipe(tmp_path, name):
    values = RECIPES[name]
    expected = Recipe(**values, dtype="float32")
    pd.DataFrame({"path": [f"200/{c}.mp3" for c in CLIPS], "label": ["a", "b", "c"]}).to_csv(
        tmp_path / "clips.csv", index=False
    )
    out = tmp_path / "store"
    run_melset(
        "extract", "--manifest", tmp_path / "clips.csv", "--audio", SAMPLE_AUDIO, "--out", out, "--quiet",
        "--dtype", "float32", *_flags(values),
    )  # fmt: skip
    recipe = Recipe.from_dict(json.loads((out / "manifest.json").read_text())["identity"]["recipe"])
    assert recipe == expected, "the store records the recipe the flags asked for"
    tracks = pd.read_parquet(out / "tracks.parquet")
    mels = np.load(out / "mels.npy", mmap_mode="r")
    assert mels.shape == (len(CLIPS), *expected.shape) and (tracks["status"] == "ok").all()
    tol = TOL if expected.scaling == "minmax-per-frame" else 1e-2  # dB
    for row, rec in tracks.iterrows():
        ref = librosa_matrix(SAMPLE_AUDIO / rec["path"], expected)
        assert ref.shape == expected.shape
        diff = float(np.abs(mels[row] - ref).max())
        assert diff <= tol, f"{name}, {rec['path']}: max difference {diff:.2e} > {tol}"
