"""The stored matrices against the reference notebook's own computation (librosa + sklearn)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import MINI_AUDIO, notebook_matrix, needs_shared
from melset.catalog import fma

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
