"""Scores a user can trust: scikit-learn's metrics, runs checked against the data they score,
predictions made with the run's own recipe."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from conftest import SAMPLE_AUDIO, real_music

torch = pytest.importorskip("torch")
sklearn_metrics = pytest.importorskip("sklearn.metrics")

from melset.errors import MelsetError, RecipeError, RunError, UsageError  # noqa: E402
from melset.model import Architecture, MelCNN  # noqa: E402
from melset.recipe import Recipe, feature_difference  # noqa: E402
from melset.system import strict_json  # noqa: E402
from melset.evaluate import classification_scores, evaluate  # noqa: E402
from melset.predict import load_run, predict  # noqa: E402
from melset.runs import prepare_run_dir  # noqa: E402
from melset.train import TrainConfig, check_config  # noqa: E402

SAMPLE_CLASSES = ["Classical", "Experimental", "Folk", "Jazz"]


def make_run(root, recipe: Recipe = Recipe(), classes=SAMPLE_CLASSES, seed: int = 0):
    """A run folder as `train` writes it, with a seeded untrained model: what inference reads."""
    torch.manual_seed(seed)
    arch = Architecture(n_classes=len(classes))
    model = MelCNN(arch)
    with torch.no_grad():  # batch-norm statistics away from the defaults, so inputs matter more
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    root.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), root / "model.pt")
    config = {"recipe": recipe.to_dict(), "classes": list(classes), "model": arch.to_dict(), "seed": seed}
    (root / "config.json").write_text(json.dumps(config))
    epoch = {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": None, "val_accuracy": None}
    (root / "metrics.json").write_text(json.dumps({"epochs": [epoch], "best_epoch": 1}))  # last: a finished run
    return root


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# ---- metrics: exactly scikit-learn's ------------------------------------------------------


CASES = {
    # class 2 and 3 absent from truth and prediction: macro-F1 averages classes 0 and 1 only
    "absent from both": ([0, 0, 1, 1, 0], [0, 1, 1, 1, 0], 4),
    # class 2 predicted but never true: counted in macro-F1 with F1 0
    "only predicted": ([0, 0, 1, 1], [0, 2, 1, 1], 3),
    # class 2 true but never predicted: precision 0 by zero_division=0, counted in macro-F1
    "only true": ([0, 2, 1, 2], [0, 0, 1, 1], 4),
    "perfect on two of five": ([3, 3, 4], [3, 3, 4], 5),
    "one example": ([1], [0], 2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_metrics_equal_scikit_learn(name):
    y_true, y_pred, k = CASES[name]
    classes = [f"g{i}" for i in range(k)]
    report = classification_scores(np.array(y_true), np.array(y_pred), classes)
    assert report["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(y_true, y_pred, average="macro"))
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(y_true, y_pred, labels=list(range(k)), zero_division=0)
    for i, c in enumerate(classes):
        got = report["per_class"][c]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == pytest.approx((p[i], r[i], f[i], s[i]))
    expected_cm = sklearn_metrics.confusion_matrix(y_true, y_pred, labels=list(range(k)))
    assert report["confusion_matrix"] == expected_cm.tolist()
    assert report["n"] == len(y_true)


def test_macro_f1_ignores_classes_absent_from_truth_and_prediction():
    # the planted bug: averaging F1 over every class, absent ones as 0, gives 0.4 here, not 0.8
    y_true, y_pred = np.array([0, 0, 1, 1, 0]), np.array([0, 1, 1, 1, 0])
    report = classification_scores(y_true, y_pred, ["a", "b", "c", "d"])
    f1_all = np.mean([m["f1"] for m in report["per_class"].values()])
    assert report["macro_f1"] == pytest.approx(0.8) and f1_all == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(8))
def test_metrics_equal_scikit_learn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 9))
    n = int(rng.integers(1, 40))
    present = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
    y_true, y_pred = rng.choice(present, n), rng.choice(present, n)
    report = classification_scores(y_true, y_pred, [str(i) for i in range(k)])
    assert report["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(y_true, y_pred, average="macro"))
    assert report["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))


def test_no_examples_gives_null_scores_not_a_division_by_zero():
    report = classification_scores(np.array([], dtype=int), np.array([], dtype=int), ["a", "b"])
    assert report["accuracy"] is None and report["macro_f1"] is None and report["n"] == 0
    assert _strict(strict_json(report))["per_class"]["a"]["f1"] is None


def test_strict_json_turns_nan_and_infinity_into_null():
    text = strict_json({"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": np.float32("nan"), "d": np.int64(3)})
    assert _strict(text) == {"a": None, "b": [None, None, 1.5], "c": None, "d": 3}


# ---- option ranges and run folders ------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("epochs", 0, "--epochs"),
        ("epochs", -3, "--epochs"),
        ("batch_size", 0, "--batch-size"),
        ("lr", 0.0, "--lr"),
        ("lr", -1e-3, "--lr"),
        ("lr", math.nan, "--lr"),
        ("lr", math.inf, "--lr"),
        ("patience", -1, "--patience"),
        ("num_workers", -2, "--workers"),
        ("device", "tpu", "--device"),
    ],
)
def test_training_options_out_of_range_are_refused(field, value, words):
    with pytest.raises(UsageError, match=words):
        check_config(TrainConfig(**{field: value}))


def test_patience_zero_and_one_epoch_are_allowed():
    check_config(TrainConfig(epochs=1, patience=0, batch_size=1, device="cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_sentence():
    with pytest.raises(UsageError, match="no CUDA device"):
        check_config(TrainConfig(device="cuda"))


def test_existing_run_folder_is_refused_unless_overwrite(tmp_path):
    run = make_run(tmp_path / "run")
    with pytest.raises(RunError, match="already holds a run.*--overwrite"):
        prepare_run_dir(str(run))
    assert (run / "model.pt").exists()  # untouched
    (run / "confusion_matrix_test.png").write_bytes(b"x")
    prepare_run_dir(str(run), overwrite=True)
    assert list(run.iterdir()) == []
    prepare_run_dir(str(tmp_path / "new" / "run"))  # created
    (tmp_path / "empty").mkdir()
    prepare_run_dir(str(tmp_path / "empty"))  # an empty folder is fine


def test_overwrite_never_wipes_files_that_are_not_a_run(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="notes.txt"):
        prepare_run_dir(str(run), overwrite=True)
    assert (run / "notes.txt").read_text() == "mine" and (run / "model.pt").exists()


def test_broken_runs_are_one_sentence(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        load_run(str(tmp_path / "nowhere"), "cpu")
    run = make_run(tmp_path / "run")
    (run / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="model.pt cannot be loaded"):
        load_run(str(run), "cpu")
    run = make_run(tmp_path / "run2")
    (run / "config.json").write_text("{")
    with pytest.raises(RunError, match="config.json cannot be read"):
        load_run(str(run), "cpu")
    run = make_run(tmp_path / "run3")
    (run / "config.json").unlink()
    with pytest.raises(RunError, match="config.json is missing"):
        load_run(str(run), "cpu")


# ---- recipes: the run's, never another ---------------------------------------------------


def test_recipe_difference_names_the_first_parameter():
    base = Recipe().to_dict()
    assert feature_difference(base, base) is None
    assert feature_difference(base, Recipe(dtype="float32").to_dict()) is None  # only rounding
    assert feature_difference(base, Recipe(n_mels=64).to_dict()).startswith("n_mels ")
    assert feature_difference(base, Recipe(n_frames=512).to_dict()).startswith("n_frames ")
    assert feature_difference(base, Recipe(sample_rate=16000).to_dict()).startswith("sample_rate ")
    assert feature_difference(base, Recipe(scaling="none").to_dict()).startswith("scaling ")
    assert feature_difference(base, Recipe(top_db=None).to_dict()).startswith("top_db ")
    assert feature_difference(base, Recipe(hop_length=256, fmax=8000.0).to_dict()).startswith("hop_length ")


def _probabilities(run, matrices) -> np.ndarray:
    return run.probabilities(np.asarray(matrices, dtype=np.float32))


def test_predict_applies_the_runs_recipe_not_the_default(tmp_path):
    recipe = Recipe(n_mels=64, n_frames=256, dtype="float32", top_db=60.0)
    run_dir = make_run(tmp_path / "run", recipe)
    clip = SAMPLE_AUDIO / "200" / "200010.mp3"
    [got] = predict(str(run_dir), [str(clip)], top=4, device="cpu")
    from melset.track import process

    run = load_run(str(run_dir), "cpu")
    expected = _probabilities(run, process(clip, recipe).mel[None])[0]
    default = _probabilities(run, process(clip, Recipe()).mel[None])[0]
    assert got["windows"] == 1
    for g in got["top"]:
        assert g["probability"] == pytest.approx(expected[run.classes.index(g["genre"])], abs=1e-6)
    # the test can tell the two recipes apart
    assert np.abs(expected - default).max() > 1e-4


def test_whole_track_averages_every_window(tmp_path):
    recipe = Recipe(n_mels=64, n_frames=256, dtype="float32")
    run_dir = make_run(tmp_path / "run", recipe)
    music, sr = real_music()  # ~60 s of two different recordings
    path = tmp_path / "long.wav"
    sf.write(path, music[: 40 * sr], sr)
    [got] = predict(str(run_dir), [str(path)], whole_track=True, top=4, device="cpu")

    from melset import audio, features

    y = audio.decode(path, recipe.sample_rate, None, recipe.decoder).samples
    frames = 1 + len(y) // recipe.hop_length
    n_windows = frames // recipe.n_frames
    assert n_windows >= 6 and got["windows"] == n_windows
    windows = [features.log_mel(y, recipe, start_frame=w * recipe.n_frames) for w in range(n_windows)]
    run = load_run(str(run_dir), "cpu")
    per_window = _probabilities(run, windows)
    mean = per_window.mean(axis=0)
    for g in got["top"]:
        assert g["probability"] == pytest.approx(mean[run.classes.index(g["genre"])], abs=1e-5)
    assert np.abs(mean - per_window[0]).max() > 1e-4  # one window alone would be told apart


def test_predict_reports_missing_and_odd_named_files(tmp_path):
    run_dir = make_run(tmp_path / "run")
    [missing] = predict(str(run_dir), [str(tmp_path / "gone [/].wav")], device="cpu")
    assert missing["error"] == f"file not found: {tmp_path / 'gone [/].wav'}"
    with pytest.raises(UsageError, match="--top"):
        predict(str(run_dir), [], top=0, device="cpu")


# ---- evaluate on a store: the run's recipe and genres ---------------------------------


@pytest.mark.slow
def test_evaluate_refuses_a_store_made_with_another_recipe(sample_store, tmp_path):
    for recipe, words in (
        (Recipe(n_mels=64), "n_mels 64 vs 128"),
        (Recipe(top_db=60.0), "top_db 60.0 vs 80.0"),
        (Recipe(sample_rate=16000), "sample_rate"),
        (Recipe(scaling="none"), "scaling"),
    ):
        run = make_run(tmp_path / f"run{recipe.n_mels}{recipe.top_db}{recipe.sample_rate}{recipe.scaling}", recipe)
        with pytest.raises(RecipeError, match="another recipe") as info:
            evaluate(str(run), str(sample_store), None, "cpu")
        assert words in str(info.value)
    # float32 vs float16 storage is the same recipe
    report = evaluate(str(make_run(tmp_path / "f32", Recipe(dtype="float32"))), str(sample_store), None, "cpu")
    assert report["n"] == 8


@pytest.mark.slow
def test_evaluate_scores_shared_genres_and_says_what_was_left_out(sample_store, tmp_path):
    full = evaluate(str(make_run(tmp_path / "all")), str(sample_store), None, "cpu")
    assert full["n"] == 8 and full["left_out"] == {"tracks": 0, "genres": []}
    by_genre = {g: m["support"] for g, m in full["per_class"].items()}
    part = evaluate(
        str(make_run(tmp_path / "part", classes=["Folk", "Jazz", "Zydeco"])), str(sample_store), None, "cpu"
    )
    assert part["n"] == by_genre["Folk"] + by_genre["Jazz"]
    assert part["left_out"] == {"tracks": 8 - part["n"], "genres": ["Classical", "Experimental"]}
    assert {p["true"] for p in part["predictions"]} <= {"Folk", "Jazz"}
    with pytest.raises(RunError, match="shares no genre"):
        evaluate(str(make_run(tmp_path / "none", classes=["Polka", "Zydeco"])), str(sample_store), None, "cpu")
    with pytest.raises(MelsetError, match="no ok, labelled track"):
        evaluate(str(make_run(tmp_path / "val")), str(sample_store), "validation", "cpu")


class _Split:
    """What check_training_data reads of a MelDataset: its class index per row."""

    def __init__(self, targets):
        self.targets = np.asarray(targets, dtype=np.int64)

    def __len__(self):
        return len(self.targets)


def test_thin_training_data_is_refused_or_warned_never_divided_by_zero():
    from types import SimpleNamespace

    from melset.train import check_training_data

    store = SimpleNamespace(root="S", classes=["a", "b", "c", "d"])
    with pytest.raises(UsageError, match="no ok, labelled rows"):
        check_training_data(store, _Split([]), _Split([]))
    with pytest.raises(UsageError, match="holds 1 genre \\(b\\); a classifier needs at least 2"):
        check_training_data(store, _Split([1, 1, 1]), _Split([1]))
    warnings = check_training_data(store, _Split([0, 1, 1, 2]), _Split([0, 1]))
    assert warnings == [
        "1 genre(s) have no training rows and cannot be learnt: d",
        "the validation split has no example of 1 genre(s) (c): validation accuracy says nothing about them",
    ]
    assert check_training_data(store, _Split([0, 1, 2, 3]), _Split([]))[-1].startswith("the validation split is empty")
    assert check_training_data(store, _Split([0, 1, 2, 3]), _Split([3, 2, 1, 0])) == []
