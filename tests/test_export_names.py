"""Exports never let two tracks share a file: names are injective."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import real_music, run_melset
from melset.export import export_name


def test_export_names_are_injective():
    ids = ["a/b.wav", "a__b.wav", "a%2Fb.wav", "a%252Fb.wav", "a%b.wav", "a/b/c.wav", "a%2Fb/c.wav"]
    names = [export_name(t) for t in ids]
    assert len(set(names)) == len(ids) and not any("/" in n for n in names)
    assert export_name(7) == "000007" and export_name(np.int64(1234567)) == "1234567"


@pytest.mark.slow
def test_tracks_whose_old_names_collided_each_get_their_own_pickle(tmp_path):
    x, sr = real_music()
    root = tmp_path / "audio"
    (root / "a").mkdir(parents=True)
    # three different clips whose ids the old naming (`/` -> `__`) mapped to one or two names
    files = {"a/b.wav": 0, "a__b.wav": 25, "a%2Fb.wav": 12}
    for rel, start in files.items():
        sf.write(root / rel, x[start * sr : (start + 25) * sr].mean(axis=1), sr, subtype="FLOAT")
    out, nb = tmp_path / "store", tmp_path / "nb"
    run_melset("extract", "--audio", root, "--out", out, "--quiet", "--workers", "1", "--layout", "folders")
    run_melset("export", out, "--format", "seed-pickles", "--to", nb)
    t = pd.read_parquet(out / "tracks.parquet")
    mels = np.load(out / "mels.npy")
    assert (t["status"] == "ok").all() and len(t) == 3
    pickles = sorted(p.name for p in (nb / "pickles").iterdir())
    assert pickles == sorted(f"{export_name(tid)}.pickle" for tid in t["track_id"])
    for row, tid in enumerate(t["track_id"]):
        got = np.load(nb / "pickles" / f"{export_name(tid)}.pickle", allow_pickle=True)
        assert np.array_equal(got, mels[row].astype(np.float64))
    assert not np.array_equal(mels[0], mels[1])  # the clips differ, so an overwrite would show
    with open(nb / "y.pickle", "rb") as f:
        y = pickle.load(f)
    assert sorted(y) == [export_name("a/b.wav")]  # only a/b.wav has a genre folder
