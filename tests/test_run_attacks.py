"""Attacks on run folders: a user's own files under --run, weights or records changed after
training, inputs too small for the model, a full or read-only disk: each is one sentence
(exit 2), never wrong answers with exit 0, never a traceback."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil

import pytest
from click.testing import CliRunner

from conftest import SAMPLE_AUDIO, run_melset

torch = pytest.importorskip("torch")

from melset.cli import main  # noqa: E402
from melset.errors import RunError, UsageError  # noqa: E402
from melset.predict import load_run  # noqa: E402
from melset.runs import prepare_run_dir  # noqa: E402
from melset.train_config import TrainConfig  # noqa: E402

TRAIN = ("--epochs", "1", "--device", "cpu", "--seed", "3", "--quiet")
SONG = SAMPLE_AUDIO / "200" / "200010.mp3"


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="melset")


def _sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("melset: error: ") and "Traceback" not in stderr, stderr
    return lines[0][len("melset: error: ") :]


# -- F2: --overwrite removes only a melset run's files ----------------------------------------------


def test_overwrite_keeps_a_users_own_files_named_like_a_runs(tmp_path):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "config.json").write_text('{"my": "settings"}')
    (run / "model.pt").write_bytes(b"my own model")
    with pytest.raises(RunError, match="not a melset run's; choose another --run or move them"):
        prepare_run_dir(str(run), overwrite=True)
    with pytest.raises(RunError) as info:
        prepare_run_dir(str(run), overwrite=False)
    assert "already holds a run" not in str(info.value)
    assert (run / "config.json").read_text() == '{"my": "settings"}' and (run / "model.pt").read_bytes() == b"my own model"


# -- F6: an input the model cannot take is refused before anything is written -----------------------


@pytest.mark.parametrize(
    "model, recipe, crop",
    [("compact", {"n_mels": 8, "n_frames": 16}, 0), ("baseline", {"n_mels": 128, "n_frames": 64}, 0)],
)
def test_an_input_too_small_for_the_model_is_a_usage_error(model, recipe, crop):
    from melset.model import check_input_size

    with pytest.raises(UsageError, match="needs inputs of at least"):
        check_input_size(TrainConfig(model=model, crop=crop), recipe, 4)
    check_input_size(TrainConfig(model=model, crop=0), {"n_mels": 128, "n_frames": 1024}, 4)


# -- whole commands ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(sample_store, tmp_path_factory):
    run = tmp_path_factory.mktemp("attacks") / "run"
    run_melset("train", sample_store, "--run", run, *TRAIN)
    return run


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _restamp(run) -> None:
    """metrics.json's sha256 brought in line with the files now there (an attacker who edits both)."""
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["sha256"] = {n: hashlib.sha256((run / n).read_bytes()).hexdigest() for n in ("config.json", "model.pt")}
    (run / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.slow
def test_overwrite_replaces_a_melset_run(trained, sample_store, tmp_path):
    run = _copy(trained, tmp_path)
    result = _invoke("train", sample_store, "--run", run, *TRAIN, "--overwrite")
    assert result.exit_code == 0, result.output
    load_run(str(run), "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("restamp", [False, True])
def test_nan_weights_in_a_finished_run_are_refused(trained, tmp_path, restamp):
    run = _copy(trained, tmp_path)
    state = torch.load(run / "model.pt", weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key].view(-1)[0] = float("nan")
    torch.save(state, run / "model.pt")
    if restamp:
        _restamp(run)
    result = _invoke("predict", run, SONG, "--device", "cpu")
    sentence = _sentence(result.stderr)
    assert result.exit_code == 2
    assert ("not finite" if restamp else "was changed after training wrote it") in sentence, sentence


@pytest.mark.slow
@pytest.mark.parametrize("restamp", [False, True])
def test_a_hand_edited_config_is_refused(trained, tmp_path, restamp):
    run = _copy(trained, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["classes"] = config["classes"][::-1]
    (run / "config.json").write_text(json.dumps(config))
    if restamp:
        _restamp(run)
    result = _invoke("predict", run, SONG, "--device", "cpu")
    assert result.exit_code == 2 and "config.json" in _sentence(result.stderr)


@pytest.mark.slow
@pytest.mark.parametrize(
    "text",
    [
        '"val_loss": NaN',
        '"val_loss": Infinity',
        '"val_loss": 1e400',
        "empty",
        "duplicate",
        "negative",
    ],
)
def test_metrics_that_are_not_a_runs_record_are_refused(trained, tmp_path, text):
    run = _copy(trained, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    if text == "empty":
        metrics["epochs"], metrics["best_epoch"] = [], None
    elif text == "duplicate":
        metrics["epochs"] = metrics["epochs"] * 2
    elif text == "negative":
        metrics["epochs"][0]["epoch"] = -1
        metrics["best_epoch"] = -1
    raw = json.dumps(metrics)
    if text.startswith('"val_loss"'):
        raw = raw.replace(f'"val_loss": {json.dumps(metrics["epochs"][0]["val_loss"])}', text, 1)
        assert text in raw
    (run / "metrics.json").write_text(raw)
    with pytest.raises(RunError, match="metrics.json"):
        load_run(str(run), "cpu")


def _interrupted(sample_store, run) -> None:
    """A run stopped after its first of two epochs: config.json and checkpoint.pt, no metrics.json."""
    from melset.train import train

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(str(sample_store), str(run), TrainConfig(epochs=2, device="cpu", seed=3), on_epoch=stop)
    assert (run / "checkpoint.pt").exists() and not (run / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["nan", "bit flip"])
def test_a_damaged_checkpoint_is_not_resumed(sample_store, tmp_path, damage):
    run = tmp_path / "run"
    _interrupted(sample_store, run)
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    weight = next(v for v in checkpoint["model"].values() if v.is_floating_point())
    if damage == "nan":
        weight.view(-1)[0] = float("nan")
    else:
        weight.view(-1).view(torch.int32)[0] ^= 1 << 20
    torch.save(checkpoint, run / "checkpoint.pt")
    result = _invoke("train", sample_store, "--run", run, "--resume", "--quiet")
    sentence = _sentence(result.stderr)
    assert result.exit_code == 2 and "checkpoint.pt is damaged" in sentence and "--overwrite" in sentence


@pytest.mark.slow
def test_an_input_too_small_leaves_no_run_folder(sample_store, tmp_path):
    run = tmp_path / "run"
    result = _invoke("train", sample_store, "--run", run, *TRAIN, "--model", "baseline", "--crop", "64")
    assert result.exit_code == 2 and "--crop 128" in _sentence(result.stderr)
    assert not run.exists()


# -- F7: a full or read-only disk -------------------------------------------------------------------


@pytest.mark.slow
def test_a_full_disk_is_one_sentence_that_says_how_to_resume(sample_store, tmp_path, monkeypatch):
    run = tmp_path / "run"
    fsync = os.fsync

    def full(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("checkpoint.pt.partial"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    result = _invoke("train", sample_store, "--run", run, *TRAIN)
    sentence = _sentence(result.stderr)
    assert result.exit_code == 2, result.output
    assert sentence.startswith(f"cannot write {run / 'checkpoint.pt'}: No space left on device; free some space")
    assert "--resume" in sentence and not (run / "checkpoint.pt.partial").exists()


@pytest.mark.slow
def test_evaluate_prints_its_scores_when_the_picture_cannot_be_written(trained, sample_store, tmp_path, monkeypatch):
    import melset.plots

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(melset.plots, "confusion_png", read_only)
    run = _copy(trained, tmp_path)
    result = _invoke("evaluate", run, "--store", sample_store, "--device", "cpu")
    assert result.exit_code == 0 and "accuracy" in result.stdout, result.output
    assert "Read-only file system" in result.stderr and "Traceback" not in result.output
