"""`melset extract / info / show / export` end to end on the shipped sample."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE_AUDIO, SAMPLE_TRACKS, run_melset, sample_extract, store_bytes

pytestmark = pytest.mark.slow  # whole commands end to end


def test_sample_store_rows_and_labels(sample_store):
    t = pd.read_parquet(sample_store / "tracks.parquet")
    assert t["track_id"].tolist() == sorted(t["track_id"].tolist())
    assert t["status"].value_counts().to_dict() == {"ok": 8, "failed": 4, "too_short": 2, "missing": 2}
    classes = json.loads((sample_store / "classes.json").read_text())
    labels = np.load(sample_store / "labels.npy")
    assert labels.dtype == np.uint8 and labels.shape == (len(t), len(classes))
    from sklearn.preprocessing import LabelBinarizer

    genres = t["genre_top"].dropna()
    lb = LabelBinarizer().fit(genres.values)
    assert classes == list(lb.classes_)
    assert np.array_equal(labels[genres.index], lb.transform(genres.values))
    assert not labels[t["genre_top"].isna()].any()  # no genre: all-zero row


def test_manifest_says_how_the_store_was_made(sample_store):
    m = json.loads((sample_store / "manifest.json").read_text())
    assert m["state"] == "complete"
    assert m["identity"]["recipe"]["n_mels"] == 128 and m["identity"]["recipe"]["hop_length"] == 512
    assert m["identity"]["recipe"]["n_frames"] == 1024 and m["dtype"] == "float16"
    assert m["counts"] == {"ok": 8, "too_short": 2, "failed": 4, "missing": 2, "pending": 0}
    assert m["source"]["tracks"] == str(SAMPLE_TRACKS) and m["source"]["audio"] == str(SAMPLE_AUDIO)
    for lib in ("melset", "numpy", "soundfile", "soxr", "libsndfile"):
        assert lib in m["versions"]
    assert m["started"] <= m["finished"]
    assert m["unlisted_files"] == ["299/299999.mp3"] and m["no_genre"] == 1


def test_rerun_skips_finished_work_and_keeps_bytes(sample_store):
    before = store_bytes(sample_store)
    proc = run_melset(*sample_extract(sample_store))
    assert "0 processed" in proc.stdout and "16 already done" in proc.stdout
    assert store_bytes(sample_store) == before


def test_other_parameters_refused_then_overwrite(tmp_path):
    out = tmp_path / "s"
    args = ["extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", out, "--quiet", "--limit", "3"]
    run_melset(*args)
    proc = run_melset(*args, "--dtype", "float32", check=False)
    assert proc.returncode == 2
    assert "made with --dtype float16; this run asks --dtype float32: run with --dtype float16 to resume it" in proc.stderr
    assert "--overwrite" in proc.stderr
    run_melset(*args, "--dtype", "float32", "--overwrite")
    assert np.load(out / "mels.npy").dtype == np.float32


def test_summary_and_exit_codes(tmp_path):
    proc = run_melset(
        "extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", tmp_path / "a", "--subset", "large"
    )
    assert proc.returncode == 0
    assert "8 ok, 2 too short, 4 failed, 2 missing of 16 tracks" in proc.stdout
    assert "failed (1): not audio: an HTML page saved as .mp3" in proc.stdout
    assert "unlisted (1): on disk but not in the metadata: 299/299999.mp3" in proc.stdout
    # a selection where nothing succeeds: exit 1, reasons still given
    t = pd.read_csv(SAMPLE_TRACKS, header=[0, 1], index_col=0)
    only_bad = t.loc[[200159, 200193]]
    only_bad.to_csv(tmp_path / "bad.csv")
    proc = run_melset(
        "extract",
        "--tracks",
        tmp_path / "bad.csv",
        "--audio",
        SAMPLE_AUDIO,
        "--out",
        tmp_path / "b",
        "--subset",
        "large",
        check=False,
    )
    assert proc.returncode == 1 and "no track succeeded" in proc.stdout


def test_malformed_metadata_stops_with_one_sentence(tmp_path):
    bad = tmp_path / "tracks.csv"
    bad.write_text("track_id,genre\n1,Rock\n")
    proc = run_melset("extract", "--tracks", bad, "--audio", SAMPLE_AUDIO, "--out", tmp_path / "s", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("melset: error:") and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_info_table_and_json(sample_store):
    proc = run_melset("info", sample_store)
    for text in (
        "not an MP3 stream: no valid frame header",
        "empty file (0 bytes)",
        "299/299999.mp3",
        "n_mels=128",
        "Folk",
    ):
        assert text in proc.stdout
    report = json.loads(run_melset("info", sample_store, "--json", "--verify").stdout)
    assert report["counts"]["ok"] == 8 and report["corrupt_rows"] == []
    assert report["by_genre"]["Folk"] == {"ok": 2}
    reasons = {p["track_id"]: p["reason"] for p in report["problems"]}
    assert reasons[200176].startswith("truncated")
    assert report["recipe"]["sample_rate"] == 22050


def test_show_writes_a_spectrogram_png(sample_store, tmp_path):
    png = tmp_path / "s.png"
    run_melset("show", sample_store, "--track", "200010", "--png", png)
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.shape[0] >= 300 and img.shape[1] >= 800 and img[..., :3].std() > 0.1
    proc = run_melset("show", sample_store, "--track", "200159", "--png", png, check=False)
    assert proc.returncode == 2 and "has no spectrogram: failed (empty file (0 bytes))" in proc.stderr
    proc = run_melset("show", sample_store, "--track", "123", "--png", png, check=False)
    assert "there is no track '123' in" in proc.stderr


def test_export_seed_pickles_equal_store(sample_store, tmp_path):
    run_melset("export", sample_store, "--format", "seed-pickles", "--to", tmp_path / "nb")
    t = pd.read_parquet(sample_store / "tracks.parquet")
    mels = np.load(sample_store / "mels.npy")
    files = sorted(p.name for p in (tmp_path / "nb" / "pickles").iterdir())
    ok = t[t["status"] == "ok"]
    assert files == [f"{tid:06d}.pickle" for tid in ok["track_id"]]
    for row, tid in zip(ok.index, ok["track_id"]):
        x = np.load(tmp_path / "nb" / "pickles" / f"{tid:06d}.pickle", allow_pickle=True)
        assert x.dtype == np.float64 and x.shape == (128, 1024)
        assert np.array_equal(x, mels[row].astype(np.float64))
    with open(tmp_path / "nb" / "y.pickle", "rb") as f:
        y = pickle.load(f)
    with open(tmp_path / "nb" / "classlabels.pickle", "rb") as f:
        classes = pickle.load(f)
    from sklearn.preprocessing import LabelBinarizer

    with_genre = t.dropna(subset=["genre_top"])
    lb = LabelBinarizer().fit(with_genre["genre_top"].values)
    assert list(classes) == list(lb.classes_)
    assert sorted(y) == sorted(f"{tid:06d}" for tid in with_genre["track_id"])
    for tid, genre in zip(with_genre["track_id"], with_genre["genre_top"]):
        assert np.array_equal(y[f"{tid:06d}"], lb.transform([genre])[0])


@pytest.mark.parametrize("mode", ["skip", "pad"])
def test_on_short(tmp_path, mode):
    out = tmp_path / mode
    run_melset(*sample_extract(out, "--on-short", mode))
    t = pd.read_parquet(out / "tracks.parquet").set_index("track_id")
    mels = np.load(out / "mels.npy")
    row = t.index.get_loc(200112)
    if mode == "skip":
        assert t.loc[200112, "status"] == "too_short" and not mels[row].any()
    else:
        assert t.loc[200112, "status"] == "ok"
        # 5.3 s of audio: frames past ~230 are silence, scaled to 0
        assert mels[row][:, :200].any() and not mels[row][:, 300:].any()
