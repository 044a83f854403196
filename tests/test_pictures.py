"""Names that come from data reach pictures as they are: matplotlib's mathtext never reads them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import SAMPLE_AUDIO, run_melset
from melset import plots

# each of these made matplotlib raise (mathtext) before names were drawn plain
MARKUP = ["$\\frac$", "$x^{$", "Cash $$ money", "50% off $5_{", "a\\$b$"]


@pytest.mark.parametrize("name", MARKUP)
def test_every_picture_draws_names_that_look_like_markup(tmp_path, name):
    mel = np.random.default_rng(0).random((32, 40), dtype=np.float32)
    assert plots.spectrogram_png(mel, tmp_path / "s.png", 22050, 512, title=f"track {name}")
    assert plots.confusion_png(np.eye(2, dtype=int), [name, "Rock"], tmp_path / "c.png", title=name)
    epochs = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_accuracy": 0.5, "val_accuracy": 0.4}]
    assert plots.curves_png(epochs, tmp_path / "k.png", title=name)
    for png in ("s.png", "c.png", "k.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_show_and_report_draw_a_collection_whose_names_look_like_markup(tmp_path):
    """A folder per genre whose genre and file names are mathtext: show and report draw them."""
    audio = tmp_path / "music"
    clips = sorted(SAMPLE_AUDIO.rglob("*.mp3"))[:2]
    for genre, clip, name in zip(("$x^{$", "Cash $$ money"), clips, ("$\\frac$ [1]", "a\\$b$")):
        (audio / genre).mkdir(parents=True)
        shutil.copy(clip, audio / genre / f"{name}.mp3")
    store = tmp_path / "store"
    run_melset("extract", "--audio", audio, "--out", store, "--quiet", "--workers", "1")
    from melset.store import Store

    ids = Store(store).tracks["track_id"].tolist()
    for tid in ids:
        proc = run_melset("show", store, "--track", tid, "--png", tmp_path / "x.png", check=False)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    proc = run_melset("report", store, "--html", tmp_path / "r.html", check=False)
    assert proc.returncode == 0, proc.stderr
