"""From spectrograms to genres: dataset, baseline CNN training, evaluate, predict."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import needs_shared, run_melset

torch = pytest.importorskip("torch")

from melset.store import Store  # noqa: E402
from melset.dataset import MelDataset, split_rows  # noqa: E402

pytestmark = pytest.mark.slow  # whole commands end to end


def test_dataset_serves_ok_labelled_rows_memory_mapped(sample_store):
    ds = MelDataset(sample_store)
    t = pd.read_parquet(sample_store / "tracks.parquet")
    expected = t.index[(t["status"] == "ok") & t["genre_top"].notna()].tolist()
    assert ds.rows.tolist() == expected and len(ds) == 8
    x, y = ds[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, 128, 1024)
    mels = np.load(sample_store / "mels.npy")
    assert np.array_equal(x[0].numpy(), mels[expected[0]].astype(np.float32))
    assert ds.classes[y] == t.loc[expected[0], "genre_top"]
    # pickles without its open file (what DataLoader workers receive)
    state = pickle.loads(pickle.dumps(ds))
    assert state._reader._fd is None and torch.equal(state[0][0], x)


def test_dataloader_with_worker_processes(sample_store):
    ds = MelDataset(sample_store, split="training")
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    xs, ys = zip(*loader)
    assert sum(len(y) for y in ys) == len(ds)
    assert torch.equal(torch.cat(xs)[0], ds[0][0])


def test_fma_split_used_when_present_else_seeded_stratified(sample_store, tmp_path):
    s = split_rows(Store(sample_store))
    assert s.source == "store"
    t = pd.read_parquet(sample_store / "tracks.parquet")
    assert list(s.names) == t.loc[s.rows, "split"].tolist()
    # a folders store has no split: stratified by genre, reproducible from the seed
    root = tmp_path / "g"
    for genre, src in (("a", "200010"), ("b", "200047"), ("c", "200090")):
        for i in range(5):
            (root / genre).mkdir(parents=True, exist_ok=True)
            (root / genre / f"{i}.mp3").symlink_to(_sample(src))
    run_melset("extract", "--audio", root, "--out", tmp_path / "s", "--quiet")
    store = Store(tmp_path / "s")
    one, two, other = split_rows(store, seed=1), split_rows(store, seed=1), split_rows(store, seed=2)
    assert one.source == "stratified" and list(one.names) == list(two.names) and list(one.names) != list(other.names)
    targets = np.asarray(store.labels)[one.rows].argmax(1)
    for c in range(3):  # every genre in every split
        assert sorted(set(one.names[targets == c])) == ["test", "training", "validation"]


def _sample(track: str):
    from conftest import SAMPLE_AUDIO

    return SAMPLE_AUDIO / "200" / f"{track}.mp3"


def _separable_collection(root, per_class=20, seconds=25.0, sr=22050):
    """Three clearly different timbres: a noise band, a sustained tone cluster, a pulse train."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(per_class):
        noise = rng.standard_normal(len(t))
        spec = np.fft.rfft(noise)
        f = np.fft.rfftfreq(len(t), 1 / sr)
        lo = rng.uniform(3000, 4000)
        spec[(f < lo) | (f > lo + 3000)] = 0
        band = np.fft.irfft(spec, len(t))
        tones = sum(np.sin(2 * np.pi * rng.uniform(150, 600) * t + rng.uniform(0, 6)) for _ in range(4))
        pulses = np.zeros(len(t))
        period = int(sr / rng.uniform(2, 6))
        pulses[rng.integers(0, period) :: period] = 1.0
        pulses = np.convolve(pulses, np.hanning(64), mode="same")
        for name, y in (("noise", band), ("tones", tones), ("pulses", pulses)):
            y = y / (np.abs(y).max() + 1e-9) * rng.uniform(0.3, 0.9)
            (root / name).mkdir(parents=True, exist_ok=True)
            sf.write(root / name / f"{i:02d}.wav", y.astype(np.float32), sr, subtype="PCM_16")
    return root


def test_separable_timbres_reach_high_validation_accuracy(tmp_path):
    root = _separable_collection(tmp_path / "timbres")
    store, run = tmp_path / "store", tmp_path / "run"
    run_melset("extract", "--audio", root, "--out", store, "--quiet")
    proc = run_melset("train", store, "--run", run, "--epochs", "8", "--lr", "3e-3", "--quiet")
    metrics = json.loads((run / "metrics.json").read_text())
    best = metrics["epochs"][metrics["best_epoch"] - 1]
    assert best["val_accuracy"] >= 0.9, proc.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["split"]["source"] == "stratified" and config["split"]["counts"]["validation"] == 6
    report = json.loads(run_melset("evaluate", run, "--store", store, "--split", "test", "--json").stdout)
    assert report["n"] == 6 and report["accuracy"] >= 0.8
    assert (run / "confusion_matrix_test.png").stat().st_size > 5_000


@needs_shared
@pytest.mark.timeout(600)  # 40 epochs: minutes on a machine whose cores are busy with other work
def test_fma_mini_training_evaluate_predict(mini_store, tmp_path):
    run = tmp_path / "run"
    plain = ("--model", "baseline", "--crop", "0", "--freq-mask", "0", "--time-mask", "0", "--mixup", "0")
    plain += ("--label-smoothing", "0", "--schedule", "constant")  # training metrics without augmentation noise
    run_melset(
        "train", mini_store, "--run", run, "--epochs", "40", "--lr", "3e-3", "--patience", "100", "--quiet", *plain
    )
    for name in ("model.pt", "metrics.json", "curves.png", "config.json"):
        assert (run / name).exists()
    metrics = json.loads((run / "metrics.json").read_text())
    epochs = metrics["epochs"]
    assert len(epochs) == 40 and set(epochs[0]) >= {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    # the gradient path is real: the loss falls and training accuracy reaches 0.9
    assert max(e["train_accuracy"] for e in epochs[-10:]) >= 0.9
    assert np.mean([e["train_loss"] for e in epochs[-5:]]) < 0.5 * epochs[0]["train_loss"]
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["n_mels"] == 128 and config["seed"] == 0 and "torch" in config["versions"]
    assert config["store_manifest"]["counts"]["ok"] == 21

    report = json.loads(run_melset("evaluate", run, "--store", mini_store, "--split", "training", "--json").stdout)
    assert report["n"] == 18 and 0 <= report["macro_f1"] <= 1 and len(report["per_class"]) == 9

    # predict on stored tracks' files gives the model's class for the stored matrices
    from melset.predict import load_run

    model = load_run(str(run), "cpu")
    t = pd.read_parquet(mini_store / "tracks.parquet")
    mels = np.load(mini_store / "mels.npy", mmap_mode="r")
    rows = t.index[t["status"] == "ok"][:6]
    preds = json.loads(run_melset("predict", run, *t.loc[rows, "path"], "--json").stdout)
    for row, p in zip(rows, preds):
        expected = model.classes[int(model.probabilities(np.asarray(mels[row : row + 1])).argmax())]
        assert p["top"][0]["genre"] == expected and len(p["top"]) == 3
        probs = [g["probability"] for g in p["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    whole = json.loads(run_melset("predict", run, t.loc[rows[0], "path"], "--whole-track", "--json").stdout)[0]
    assert whole["windows"] == 1  # a 30 s clip holds one 1,024-frame window
    bad = run_melset("predict", run, t.loc[t["status"] == "failed", "path"].iloc[0], check=False)
    assert bad.returncode == 1 and "cannot predict" in bad.stdout


def test_training_is_deterministic_on_cpu(sample_store, tmp_path):
    for name in ("a", "b"):
        run_melset(
            "train",
            sample_store,
            "--run",
            tmp_path / name,
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--seed",
            "3",
            "--quiet",
        )
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())["epochs"]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["epochs"]
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in a]
    assert strip == [{k: v for k, v in e.items() if k != "seconds"} for e in b]
    sa = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _weights(run):
    return torch.load(run / "model.pt", weights_only=True)


def test_training_with_augmentation_is_deterministic_per_seed(sample_store, tmp_path):
    """Crops, masks, mixup, label smoothing and the schedule all draw from the seed's generators."""
    opts = ("--epochs", "2", "--device", "cpu", "--crop", "128", "--freq-mask", "24", "--time-mask", "40")
    opts += ("--mixup", "0.4", "--label-smoothing", "0.1", "--schedule", "cosine", "--patience", "0", "--quiet")
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        run_melset("train", sample_store, "--run", tmp_path / name, "--seed", seed, *opts)
    a, b, c = (_weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed matters
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["model"]["name"] == "CompactCNN" and config["hyperparameters"]["mixup"] == 0.4


def test_augmentation_reaches_the_weights():
    """Each augmentation changes what is learned (a switch that did nothing would not)."""
    import dataclasses

    from torch.utils.data import TensorDataset

    from melset.model import architecture
    from melset.train import TrainConfig, fit

    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(12, 1, 32, 96, generator=gen), torch.arange(12) % 3)
    plain = TrainConfig(
        epochs=1, batch_size=4, device="cpu", crop=48, freq_mask=0, time_mask=0, mixup=0.0, label_smoothing=0.0
    )

    def weights(cfg):
        model, _, _ = fit(data, TensorDataset(data[:0][0], data[:0][1]), architecture("compact", 3), cfg)
        return model.state_dict()

    reference = weights(plain)
    everything = dataclasses.replace(plain, freq_mask=8, time_mask=16, mixup=0.4, label_smoothing=0.1)
    one, two = weights(everything), weights(everything)
    assert all(torch.equal(one[k], two[k]) for k in one)  # deterministic with every augmentation on
    for change in ({"freq_mask": 8}, {"time_mask": 16}, {"mixup": 0.4}, {"label_smoothing": 0.2}, {"crop": 64}):
        w = weights(dataclasses.replace(plain, **change))
        assert not all(torch.equal(reference[k], w[k]) for k in w), change


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--crop", "-1", "--crop must be"),
        ("--crop", "8", "--crop must be 0"),
        ("--freq-mask", "-3", "--freq-mask must be"),
        ("--time-mask", "-3", "--time-mask must be"),
        ("--mixup", "-0.5", "--mixup must be"),
        ("--mixup", "nan", "--mixup must be"),
        ("--label-smoothing", "1", "--label-smoothing must be"),
        ("--weight-decay", "-1", "--weight-decay must be"),
        ("--lr", "0", "--lr must be"),
        ("--lr", "inf", "--lr must be"),
        ("--epochs", "0", "--epochs must be"),
        ("--batch-size", "-4", "--batch-size must be"),
        ("--patience", "-1", "--patience must be"),
        ("--model", "resnet[9]", "'resnet[9]' is not one of"),
        ("--schedule", "onecycle", "'onecycle' is not one of"),
    ],
)
def test_bad_training_options_are_refused_in_one_sentence(sample_store, tmp_path, option, value, words):
    proc = run_melset("train", sample_store, "--run", tmp_path / "run", option, value, "--quiet", check=False)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_crops_cover_the_window_and_keep_shapes():
    from melset.augment import covering_crops, crop_starts, mask_, mixup, random_crops

    assert crop_starts(1024, 256) == [0, 256, 512, 768]
    assert crop_starts(1000, 256) == [0, 248, 496, 744]  # evenly spaced, the last ends at the last frame
    assert crop_starts(1024, 0) == [0] and crop_starts(200, 256) == [0]
    x = torch.arange(2 * 3 * 1000, dtype=torch.float32).reshape(2, 1, 3, 1000)
    crops = covering_crops(x, 256)
    assert crops.shape == (4, 2, 1, 3, 256)
    covered = torch.zeros(1000, dtype=torch.bool)
    for c, s in zip(crops, crop_starts(1000, 256)):
        assert torch.equal(c, x[..., s : s + 256])
        covered[s : s + 256] = True
    assert covered.all()
    assert covering_crops(x, 0).shape == (1, 2, 1, 3, 1000)

    gen = torch.Generator().manual_seed(0)
    r = random_crops(x, 100, gen)
    assert r.shape == (2, 1, 3, 100)
    for i in range(2):  # each item's crop is a contiguous window of its own frames
        start = int(r[i, 0, 0, 0] - x[i, 0, 0, 0])
        assert torch.equal(r[i], x[i, ..., start : start + 100])

    m = mask_(torch.rand(4, 1, 128, 256, generator=gen), 16, 32, gen)
    assert m.shape == (4, 1, 128, 256)
    y = torch.tensor([0, 1, 2, 3])
    mixed, ya, yb, lam = mixup(torch.rand(4, 1, 8, 8, generator=gen), y, 0.4, gen)
    assert mixed.shape == (4, 1, 8, 8) and 0.5 <= lam <= 1 and sorted(yb.tolist()) == [0, 1, 2, 3]


def test_evaluate_and_predict_average_over_covering_crops(sample_store, tmp_path):
    run = tmp_path / "run"
    run_melset("train", sample_store, "--run", run, "--epochs", "1", "--crop", "256", "--device", "cpu", "--quiet")
    from melset.augment import covering_crops
    from melset.predict import load_run

    loaded = load_run(str(run), "cpu")
    assert loaded.crop == 256
    mels = np.load(sample_store / "mels.npy", mmap_mode="r")
    x = np.asarray(mels[MelDataset(sample_store).rows[:2]], dtype=np.float32)
    with torch.no_grad():
        crops = covering_crops(torch.from_numpy(x).unsqueeze(1), 256)
        expected = torch.stack([torch.softmax(loaded.model(c), 1) for c in crops]).mean(0).numpy()
        single = torch.softmax(loaded.model(torch.from_numpy(x).unsqueeze(1)[..., :256]), 1).numpy()
    got = loaded.probabilities(x)
    assert got.shape == (2, len(loaded.classes)) and np.allclose(got, expected, atol=1e-6)
    assert not np.allclose(got, single, atol=1e-6)
    report = json.loads(run_melset("evaluate", run, "--store", sample_store, "--split", "training", "--json").stdout)
    assert report["n"] >= 1 and 0 <= report["accuracy"] <= 1


def test_baseline_model_stays_available(sample_store, tmp_path):
    run = tmp_path / "run"
    run_melset("train", sample_store, "--run", run, "--model", "baseline", "--crop", "0", "--epochs", "1", "--quiet")
    config = json.loads((run / "config.json").read_text())
    from melset.predict import load_run

    model = load_run(str(run), "cpu").model
    assert config["model"]["name"] == type(model).__name__ == "MelCNN"
    assert config["model"]["parameters"] == model.n_parameters() < 100_000
