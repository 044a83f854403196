"""A run is complete or it is not a run: interrupted runs are refused and resume to the weights
of an uninterrupted one; SIGTERM and Ctrl-C keep the last epoch and say so; damaged run files are
one sentence, never a traceback."""

from __future__ import annotations

import io
import json
import shlex
import shutil
import signal
import subprocess

import pytest
from click.testing import CliRunner

from conftest import SAMPLE_AUDIO, melset_cmd, run_melset, sample_extract

torch = pytest.importorskip("torch")

from melset.cli import main  # noqa: E402
from melset.errors import RunError  # noqa: E402
from melset.predict import load_run  # noqa: E402
from melset.runs import prepare_run_dir  # noqa: E402

pytestmark = pytest.mark.slow  # whole commands end to end

EPOCHS = 5
TRAIN = ("--epochs", str(EPOCHS), "--device", "cpu", "--seed", "3", "--quiet")
SONG = SAMPLE_AUDIO / "200" / "200010.mp3"


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="melset")


def _sentence(stderr: str) -> str:
    """The one error sentence a refusal prints (no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("melset: error: ") and "Traceback" not in stderr, stderr
    return lines[0][len("melset: error: ") :]


def _epochs(run) -> list[dict]:
    return [
        {k: v for k, v in e.items() if k != "seconds"} for e in json.loads((run / "metrics.json").read_text())["epochs"]
    ]


def _assert_same_run(reference, run) -> None:
    """The weights (tensor for tensor) and the metrics (time aside) of an uninterrupted run."""
    a = torch.load(reference / "model.pt", weights_only=True)
    b = torch.load(run / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _epochs(run) == _epochs(reference)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (reference, run))
    assert {k: v for k, v in ma.items() if k != "epochs"} == {k: v for k, v in mb.items() if k != "epochs"}
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "curves.png", "metrics.json", "model.pt"]


@pytest.fixture(scope="module")
def reference(sample_store, tmp_path_factory):
    """The run trained without interruption."""
    run = tmp_path_factory.mktemp("reference") / "run"
    run_melset("train", sample_store, "--run", run, *TRAIN)
    return run


def _start(store, run) -> subprocess.Popen:
    return subprocess.Popen(
        melset_cmd("train", store, "--run", run, *TRAIN), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _checkpoint_epoch(run) -> int:
    try:  # replaced by a rename, so always whole
        return torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    except FileNotFoundError:
        return 0


def _wait_until(done, proc: subprocess.Popen, what: str) -> None:
    """Wait for observed progress of a training process (never for a fixed time)."""
    while not done():
        if proc.poll() is not None:
            raise AssertionError(f"train ended ({proc.returncode}) before {what}: {proc.communicate()}")
        try:
            proc.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            pass


def _refused_as_unfinished(run, store, tmp_path) -> None:
    """predict, evaluate and report each refuse the run in one sentence naming metrics.json and the resume command."""
    resume = f"resume it with melset train {shlex.quote(str(store))} --run {shlex.quote(str(run))} --resume"
    for args in (
        ("predict", run, SONG, "--device", "cpu"),
        ("evaluate", run, "--store", store, "--device", "cpu"),
        ("report", run, "--html", tmp_path / "page.html"),
    ):
        result = _invoke(*args)
        sentence = _sentence(result.stderr)
        assert result.exit_code == 2 and "metrics.json" in sentence and sentence.endswith(resume), (args, sentence)
    assert not (tmp_path / "page.html").exists()


@pytest.mark.parametrize("moment", ["config.json", "checkpoint.pt"])
def test_a_run_killed_mid_training_is_refused_then_resumes_to_the_same_weights(
    sample_store, reference, tmp_path, moment
):
    run = tmp_path / "run"
    proc = _start(sample_store, run)
    _wait_until((run / moment).exists, proc, f"{moment} appeared")
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and not (run / "metrics.json").exists()
    _refused_as_unfinished(run, sample_store, tmp_path)
    run_melset("train", sample_store, "--run", run, "--resume", "--quiet")
    _assert_same_run(reference, run)
    for args in (("predict", run, SONG, "--device", "cpu"), ("report", run, "--html", tmp_path / "page.html")):
        assert _invoke(*args).exit_code == 0


@pytest.mark.parametrize(
    "sig, code, how",
    [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")],
    ids=["SIGTERM", "Ctrl-C"],
)
def test_sigterm_and_ctrl_c_keep_the_last_epoch_and_say_how_to_resume(
    sample_store, reference, tmp_path, sig, code, how
):
    run = tmp_path / "run"
    proc = _start(sample_store, run)
    _wait_until(lambda: _checkpoint_epoch(run) >= 2, proc, "epoch 2 was checkpointed")
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    kept = _checkpoint_epoch(run)
    assert proc.returncode == code and 2 <= kept < EPOCHS, stderr
    resume = f"melset train {shlex.quote(str(sample_store))} --run {shlex.quote(str(run))} --resume"
    last = stderr.splitlines()[-1]
    assert last == f"{how}: stopped after epoch {kept} of {EPOCHS}: the checkpoint is saved; resume with {resume}"
    assert "Traceback" not in stderr and not (run / "metrics.json").exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".partial")]
    _refused_as_unfinished(run, sample_store, tmp_path)
    argv = shlex.split(last.split("resume with ")[1])  # the command as printed
    assert argv[0] == "melset"
    run_melset(*argv[1:])
    _assert_same_run(reference, run)


def _unfinished_copy(reference, dst):
    """A run whose training stopped before its first epoch ended: its config.json alone."""
    dst.mkdir()
    shutil.copy(reference / "config.json", dst / "config.json")
    return dst


def test_resume_refuses_what_it_cannot_continue(sample_store, reference, tmp_path):
    unfinished = _unfinished_copy(reference, tmp_path / "unfinished")
    other_store = tmp_path / "other_store"
    run_melset(*sample_extract(other_store, "--workers", "1"))  # the same tracks, another store
    damaged = _unfinished_copy(reference, tmp_path / "damaged")
    (damaged / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "empty").mkdir()
    cases = [
        (reference, sample_store, (), "finished (metrics.json is written), so there is nothing to resume"),
        (tmp_path / "empty", sample_store, (), "it has no config.json), so there is nothing to resume"),
        (tmp_path / "nowhere", sample_store, (), "it has no config.json), so there is nothing to resume"),
        (unfinished, sample_store, ("--overwrite",), "--resume continues the run in --run and --overwrite replaces"),
        (unfinished, sample_store, ("--epochs", "7"), f"was begun with --epochs {EPOCHS}, not 7"),
        (unfinished, sample_store, ("--seed", "4"), "was begun with --seed 3, not 4"),
        (unfinished, other_store, (), f"{other_store} is not the store {unfinished} was begun on ({sample_store})"),
        (damaged, sample_store, (), "checkpoint.pt cannot be loaded"),
    ]
    for run, store, extra, words in cases:
        before = sorted((p.name, p.read_bytes()) for p in run.iterdir()) if run.exists() else None
        result = _invoke("train", store, "--run", run, "--resume", "--device", "cpu", "--quiet", *extra)
        assert result.exit_code == 2 and words in _sentence(result.stderr), (run, extra, result.stderr)
        assert (sorted((p.name, p.read_bytes()) for p in run.iterdir()) if run.exists() else None) == before
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the command gave SIGTERM back


def test_an_unfinished_run_is_not_loaded_and_overwrite_replaces_it(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "metrics.json").unlink()
    (run / "checkpoint.pt").write_bytes(b"x")
    (run / "checkpoint.pt.partial").write_bytes(b"x")  # what a kill -9 during its write leaves
    with pytest.raises(RunError, match="did not finish .metrics.json.*--resume$"):
        load_run(str(run), "cpu")
    prepare_run_dir(str(run), overwrite=True)
    assert list(run.iterdir()) == []


def _edit(name: str, change):
    def apply(run):
        path = run / name
        data = json.loads(path.read_text())
        data = change(data)
        path.write_text(json.dumps(data))

    return apply


def _set(key, value):
    def change(d):
        if value is _DROP:
            d.pop(key)
        else:
            d[key] = value
        return d

    return change


_DROP = object()
DAMAGE = {
    "config without classes": _edit("config.json", _set("classes", _DROP)),
    "config classes a string": _edit("config.json", _set("classes", "Rock")),
    "config classes numbers": _edit("config.json", _set("classes", [1, 2, 3, 4, 5, 6])),
    "config recipe a list": _edit("config.json", _set("recipe", [])),
    "config without model": _edit("config.json", _set("model", _DROP)),
    "config model a string": _edit("config.json", _set("model", "compact")),
    "config model n_classes text": _edit("config.json", lambda d: {**d, "model": {**d["model"], "n_classes": "six"}}),
    "config hyperparameters a list": _edit("config.json", _set("hyperparameters", [])),
    "config crop text": _edit("config.json", lambda d: {**d, "hyperparameters": {**d["hyperparameters"], "crop": "x"}}),
    "config seed text": _edit("config.json", _set("seed", "three")),
    "config store a number": _edit("config.json", _set("store", 5)),
    "config multi_label text": _edit("config.json", _set("multi_label", "yes")),
    "config a list": _edit("config.json", lambda d: [d]),
    "metrics a list": _edit("metrics.json", lambda d: [d]),
    "metrics without epochs": _edit("metrics.json", _set("epochs", _DROP)),
    "metrics epochs text": _edit("metrics.json", _set("epochs", "five")),
    "metrics epoch a number": _edit("metrics.json", lambda d: {**d, "epochs": [1, 2]}),
    "metrics epoch without its number": _edit("metrics.json", lambda d: {**d, "epochs": [{"train_loss": 1.0}]}),
    "metrics loss text": _edit("metrics.json", lambda d: {**d, "epochs": [{**d["epochs"][0], "train_loss": "low"}]}),
    "metrics best epoch elsewhere": _edit("metrics.json", _set("best_epoch", 99)),
    "metrics best epoch text": _edit("metrics.json", _set("best_epoch", "1")),
    "metrics stopped_early text": _edit("metrics.json", _set("stopped_early", "no")),
    "metrics warnings a number": _edit("metrics.json", _set("warnings", 3)),
}


def test_damaged_run_files_are_one_sentence_for_predict_evaluate_report(sample_store, reference, tmp_path):
    for i, (what, damage) in enumerate(DAMAGE.items()):
        run = tmp_path / f"run{i}"
        shutil.copytree(reference, run)
        damage(run)
        name = what.split()[0] + ".json"
        for args in (
            ("predict", run, SONG, "--device", "cpu"),
            ("evaluate", run, "--store", sample_store, "--device", "cpu"),
            ("report", run, "--html", tmp_path / "page.html"),
        ):
            result = _invoke(*args)
            assert result.exit_code == 2, (what, args[0], result.exit_code, result.stderr, result.stdout)
            assert name in _sentence(result.stderr), (what, args[0], result.stderr)
        assert not (tmp_path / "page.html").exists()


def test_fit_resumed_from_any_epoch_ends_with_the_uninterrupted_weights():
    """Every random draw (weights, dropout, shuffling, crops, masks, mixup) and the schedule, the
    optimizer and the early stop continue from the checkpoint as if nothing had happened."""
    from torch.utils.data import TensorDataset

    from melset.model import architecture
    from melset.train import TrainConfig, fit

    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(14, 1, 32, 96, generator=gen), torch.arange(14) % 3)
    val = TensorDataset(torch.rand(6, 1, 32, 96, generator=gen), torch.arange(6) % 3)
    cfg = TrainConfig(epochs=5, batch_size=4, device="cpu", crop=48, freq_mask=8, time_mask=16, mixup=0.4, patience=2)
    arch = architecture("compact", 3)
    kept = []

    def keep(checkpoint):
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        kept.append(buf.getvalue())

    model, history, best = fit(data, val, arch, cfg, on_checkpoint=keep)
    reference = model.state_dict()
    assert len(kept) == len(history) >= 2
    for blob in {kept[0], kept[len(kept) // 2], kept[-1]}:
        checkpoint = torch.load(io.BytesIO(blob), weights_only=True)
        resumed, rest, again = fit(data, val, arch, cfg, resume=checkpoint)
        assert again == best and [e | {"seconds": 0} for e in rest] == [e | {"seconds": 0} for e in history]
        assert all(torch.equal(reference[k], resumed.state_dict()[k]) for k in reference), checkpoint["epoch"]
