"""Multi-label genres: FMA's track.genres / track.genres_all as multi-hot labels, end to end."""

from __future__ import annotations

import ast
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import MINI_AUDIO, MINI_TRACKS, SAMPLE_AUDIO, SAMPLE_TRACKS, needs_shared, run_melset
from melset.catalog import fma
from melset.errors import MetadataError


def expected_genres(tracks_csv, kind="genres_all") -> dict[int, set[str]]:
    """Straight from the CSVs with pandas and ast: track_id -> the titles of its genres."""
    tracks = pd.read_csv(tracks_csv, index_col=0, header=[0, 1])
    genres = pd.read_csv(tracks_csv.parent / "genres.csv", index_col=0)
    title = genres["title"].to_dict()
    return {int(tid): {title[g] for g in ast.literal_eval(v)} for tid, v in tracks[("track", kind)].items()}


def stored_genres(store) -> dict[int, set[str]]:
    t = pd.read_parquet(store / "tracks.parquet")
    labels = np.load(store / "labels.npy")
    classes = json.loads((store / "classes.json").read_text())
    return {int(tid): {classes[j] for j in np.flatnonzero(row)} for tid, row in zip(t["track_id"], labels)}


@pytest.mark.parametrize("kind", ["genres", "genres_all"])
@pytest.mark.parametrize("tracks_csv", [SAMPLE_TRACKS, pytest.param(MINI_TRACKS, marks=needs_shared)])
def test_genre_labels_equal_fma_lists_for_every_track(tracks_csv, kind):
    expected = expected_genres(tracks_csv, kind)
    ids = sorted(expected)
    labels, classes = fma.genre_labels(tracks_csv, ids, kind)
    assert classes == sorted(set().union(*expected.values()))
    assert labels.dtype == np.uint8 and labels.shape == (len(ids), len(classes))
    for tid, row in zip(ids, labels):
        assert {classes[j] for j in np.flatnonzero(row)} == expected[tid], tid
    assert any(len(v) > 1 for v in expected.values()) or kind == "genres"  # the data is really multi-label


def _copy_metadata(tmp_path):
    meta = tmp_path / "fma_metadata"
    shutil.copytree(SAMPLE_TRACKS.parent, meta)
    return meta


def test_genre_id_missing_from_genres_csv_is_a_metadata_error(tmp_path):
    meta = _copy_metadata(tmp_path)
    genres = pd.read_csv(meta / "genres.csv", index_col=0)
    ids = sorted(expected_genres(SAMPLE_TRACKS))
    used = set()
    tracks = pd.read_csv(SAMPLE_TRACKS, index_col=0, header=[0, 1])
    for v in tracks[("track", "genres_all")]:
        used |= set(ast.literal_eval(v))
    dropped = min(used)
    genres.drop(index=dropped).to_csv(meta / "genres.csv")
    with pytest.raises(MetadataError, match=rf"genre id {dropped}\b.*genres.csv does not list"):
        fma.genre_labels(meta / "tracks.csv", ids, "genres_all")
    (meta / "genres.csv").unlink()
    with pytest.raises(MetadataError, match="genres.csv: no such file"):
        fma.genre_labels(meta / "tracks.csv", ids, "genres")


@pytest.fixture(scope="module")
def sample_multi(tmp_path_factory):
    out = tmp_path_factory.mktemp("multi") / "store"
    run_melset(
        "extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", out, "--subset", "large",
        "--labels", "genres_all", "--quiet", "--workers", "2",
    )  # fmt: skip
    return out


@pytest.mark.slow
def test_extract_writes_multi_hot_labels_aligned_with_tracks(sample_multi):
    assert stored_genres(sample_multi) == expected_genres(SAMPLE_TRACKS)
    manifest = json.loads((sample_multi / "manifest.json").read_text())
    assert manifest["labels"] == "genres_all" and manifest["identity"]["labels"] == "genres_all"
    assert np.load(sample_multi / "labels.npy").sum(axis=1).max() > 1


@pytest.mark.slow
@needs_shared
def test_extract_mini_genres_all_every_track(tmp_path):
    out = tmp_path / "s"
    run_melset(
        "extract", "--tracks", MINI_TRACKS, "--audio", MINI_AUDIO, "--out", out, "--subset", "large",
        "--labels", "genres_all", "--quiet", "--workers", "2",
    )  # fmt: skip
    assert stored_genres(out) == expected_genres(MINI_TRACKS)


@pytest.mark.slow
def test_resume_with_other_labels_is_refused(sample_multi):
    for kind in ("genres", "genre_top"):
        p = run_melset(
            "extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", sample_multi,
            "--subset", "large", "--labels", kind, "--quiet", check=False,
        )  # fmt: skip
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert "labelled with --labels genres_all; run with --labels genres_all to resume it" in p.stderr


@pytest.mark.slow
def test_genre_lists_refused_for_layouts_without_them(tmp_path):
    (tmp_path / "g" / "rock").mkdir(parents=True)
    (tmp_path / "g" / "rock" / "a.mp3").symlink_to(SAMPLE_AUDIO / "200" / "200010.mp3")
    p = run_melset("extract", "--audio", tmp_path / "g", "--out", tmp_path / "s", "--labels", "genres", check=False)
    assert p.returncode == 2 and "--labels genre_top" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_missing_genres_csv_from_the_command_line(tmp_path):
    meta = _copy_metadata(tmp_path)
    (meta / "genres.csv").unlink()
    p = run_melset(
        "extract", "--tracks", meta / "tracks.csv", "--audio", SAMPLE_AUDIO, "--out", tmp_path / "s",
        "--labels", "genres_all", check=False,
    )  # fmt: skip
    assert p.returncode == 2 and "genres.csv" in p.stderr and "Traceback" not in p.stderr, p.stderr


@pytest.mark.slow
def test_exports_of_a_multi_label_store_carry_every_genre(sample_multi, tmp_path):
    datasets = pytest.importorskip("datasets")
    wds = pytest.importorskip("webdataset")
    from melset import export as exports
    from melset.store import Store

    store = Store(sample_multi)
    classes = store.classes
    expected = expected_genres(SAMPLE_TRACKS)
    ids = store.tracks["track_id"].tolist()
    exports.hf(store, tmp_path / "hf")
    dd = datasets.load_from_disk(str(tmp_path / "hf"))
    seen = 0
    for ds in dd.values():
        assert ds.features["label"] == datasets.Sequence(datasets.ClassLabel(names=classes))
        for item in ds:
            assert {classes[i] for i in item["label"]} == expected[item["track_id"]]
            seen += 1
    assert seen == len(store.ok_rows())
    exports.webdataset(store, tmp_path / "w")
    samples = list(wds.WebDataset(sorted(map(str, (tmp_path / "w").glob("*.tar"))), shardshuffle=False).decode())
    assert len(samples) == seen
    for s in samples:
        meta = s["json"]
        assert set(meta["labels"]) == expected[meta["track_id"]]
        assert np.array_equal(s["npy"], store.mels[ids.index(meta["track_id"])])


@pytest.mark.slow
def test_dataset_multi_hot_targets_and_torchvision_attributes(sample_multi, sample_store):
    torch = pytest.importorskip("torch")
    from melset.dataset import MelDataset

    ds = MelDataset(sample_multi, target_transform=lambda y: y * 2)
    labels = np.load(sample_multi / "labels.npy")
    assert ds.multi_label and ds.classes == json.loads((sample_multi / "classes.json").read_text())
    assert ds.class_to_idx == {c: i for i, c in enumerate(ds.classes)}
    assert ds.targets.dtype == np.float32 and np.array_equal(ds.targets, labels[ds.rows])
    x, y = ds[1]
    assert y.dtype == torch.float32 and torch.equal(y, torch.from_numpy(labels[ds.rows[1]].astype(np.float32)) * 2)
    batch = next(iter(torch.utils.data.DataLoader(MelDataset(sample_multi), batch_size=4)))
    assert batch[1].shape == (4, len(ds.classes))

    single = MelDataset(sample_store, split="training", transform=lambda x: x + 1, target_transform=str)
    assert not single.multi_label and single.targets.dtype == np.int64
    assert single.class_to_idx[single.classes[single.targets[0]]] == single.targets[0]
    x, y = single[0]
    mels = np.load(sample_store / "mels.npy", mmap_mode="r")
    assert y == str(single.targets[0]) and torch.equal(
        x[0], torch.from_numpy(mels[single.rows[0]].astype(np.float32)) + 1
    )
    with pytest.raises(ValueError, match="split"):
        MelDataset(sample_store, split="train")


@pytest.mark.slow
def test_train_evaluate_predict_multi_label(sample_multi, tmp_path):
    pytest.importorskip("torch")
    from sklearn.metrics import average_precision_score, roc_auc_score

    from melset.dataset import MelDataset
    from melset.predict import load_run

    run = tmp_path / "run"
    run_melset("train", sample_multi, "--run", run, "--epochs", "2", "--quiet")
    config = json.loads((run / "config.json").read_text())
    assert config["multi_label"] and config["labels"] == "genres_all"
    report = json.loads(run_melset("evaluate", run, "--store", sample_multi, "--split", "all", "--json").stdout)
    loaded = load_run(str(run), "cpu")
    ds = MelDataset(sample_multi)
    mels = np.load(sample_multi / "mels.npy", mmap_mode="r")
    scores = loaded.probabilities(np.asarray(mels[ds.rows]))
    assert not np.allclose(scores.sum(axis=1), 1.0)  # sigmoid per genre, not softmax
    y = ds.targets.astype(int)
    assert report["n"] == len(ds)
    assert report["average_precision_micro"] == pytest.approx(average_precision_score(y.ravel(), scores.ravel()))
    assert report["roc_auc_micro"] == pytest.approx(roc_auc_score(y.ravel(), scores.ravel()))
    scored = [j for j in range(len(ds.classes)) if 0 < y[:, j].sum() < len(y)]
    assert report["average_precision_macro"] == pytest.approx(
        np.mean([average_precision_score(y[:, j], scores[:, j]) for j in scored])
    )
    for j, name in enumerate(ds.classes):
        ap = report["per_class"][name]["average_precision"]
        assert (ap is None) == (j not in scored)
    text = run_melset("evaluate", run, "--store", sample_multi, "--split", "all").stdout
    assert "average precision" in text and "ROC-AUC" in text
    from melset import report as reports

    page, why_not = reports.run_page(run, sample_multi, None)
    assert why_not is None and 'alt="average precision per genre"' in page
    assert f"{report['average_precision_micro']:.4f}" in page

    t = pd.read_parquet(sample_multi / "tracks.parquet")
    path = t.loc[ds.rows[0], "path"]
    everything = json.loads(run_melset("predict", run, path, "--threshold", "0", "--json").stdout)[0]
    assert [g["genre"] for g in everything["genres"]] == [ds.classes[j] for j in np.argsort(-scores[0])]
    nothing = run_melset("predict", run, path, "--threshold", "1").stdout
    assert "no genre reaches 1" in nothing or len(
        json.loads(run_melset("predict", run, path, "--threshold", "1", "--json").stdout)[0]["genres"]
    )
    for value in ("1.5", "-0.1", "nan", "x"):
        bad = run_melset("predict", run, path, "--threshold", value, check=False)
        assert bad.returncode == 2 and "threshold" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_epoch_uses_binary_cross_entropy_and_precision_at_one_for_multi_label():
    torch = pytest.importorskip("torch")
    from melset.model import Architecture, MelCNN
    from melset.train import _eval_epoch

    torch.manual_seed(0)
    x = torch.rand(6, 1, 32, 256)
    y = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1], [1, 0, 0], [0, 1, 1]], dtype=torch.float32)
    model = MelCNN(Architecture(n_classes=3)).eval()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    loss, acc = _eval_epoch(model, loader, torch.device("cpu"), crop=0, multi_label=True)
    with torch.no_grad():
        logits = model(x)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum").item() / len(y)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert acc == pytest.approx(float(y.gather(1, logits.argmax(1, keepdim=True)).mean()))
    assert not model.training  # evaluation pass: no optimizer, eval mode
