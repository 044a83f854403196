"""What a person reads and what a script gets back: help, versions, verbatim names, one
sentence per error, strict JSON, exit codes; and the options each command promises."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

import melset
from conftest import ROOT, SAMPLE_AUDIO, SAMPLE_TRACKS, fault_env, melset_cmd, run_melset, sample_extract, write_audio
from melset.cli import main
from melset.recipe import Recipe


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="melset")


def _one_sentence(stderr: str, start: str = "melset: error: ") -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(start) and "Traceback" not in stderr, stderr
    return lines[0][len(start) :]


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# ---- help, version, exit codes -----------------------------------------------------------


@pytest.mark.parametrize("command", sorted(main.commands))
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_has_h_and_help(command, flag):
    result = _invoke(command, flag)
    assert result.exit_code == 0 and result.output.startswith(f"Usage: melset {command}"), result.output


def test_group_help_and_version():
    assert _invoke("-h").output.startswith("Usage: melset")
    result = _invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"melset, version {melset.__version__}"


def test_melset_error_is_one_sentence_and_exit_2(tmp_path):
    result = _invoke("info", tmp_path / "no store [here]")
    assert result.exit_code == 2
    assert str(tmp_path / "no store [here]") in _one_sentence(result.stderr)


def test_unexpected_exception_is_a_bug_report_with_a_saved_traceback(monkeypatch, tmp_path):
    from melset.store import Store

    def boom(self, root):
        raise ZeroDivisionError("planted [bug]")

    monkeypatch.setattr(Store, "__init__", boom)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    result = _invoke("info", tmp_path)
    assert result.exit_code == 70
    line = _one_sentence(result.stderr, "melset: internal error: ")
    m = re.fullmatch(r"ZeroDivisionError: planted \[bug\]; this is a bug, please report it with: (.+)", line)
    assert m, line
    saved = Path(m.group(1))
    assert saved.parent == tmp_path and "ZeroDivisionError: planted [bug]" in saved.read_text()
    assert "Traceback" in saved.read_text()


def test_ctrl_c_is_exit_130(monkeypatch, tmp_path):
    from melset.store import Store

    def interrupted(self, root):
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "__init__", interrupted)
    result = _invoke("info", tmp_path)
    assert result.exit_code == 130 and "Traceback" not in result.stderr


def test_install_hint_prints_as_written(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    for args in (("train", tmp_path, "--run", tmp_path / "r"), ("predict", tmp_path, "x.wav")):
        result = _invoke(*args)
        assert result.exit_code == 2
        assert _one_sentence(result.stderr).endswith("pip install 'melset[train]'")


# ---- training options: refused before any work -----------------------------------------


@pytest.mark.parametrize(
    "option, value",
    [
        ("--epochs", "0"),
        ("--batch-size", "0"),
        ("--lr", "0"),
        ("--lr", "-1"),
        ("--lr", "nan"),
        ("--lr", "inf"),
        ("--patience", "-1"),
        ("--workers", "-1"),
    ],
)
def test_train_option_ranges(option, value, tmp_path):
    pytest.importorskip("torch")
    result = _invoke("train", tmp_path / "no-store", "--run", tmp_path / "run", option, value)
    assert result.exit_code == 2 and _one_sentence(result.stderr).startswith(option)
    assert not (tmp_path / "run").exists()


def test_cuda_without_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for args in (
        ("train", tmp_path, "--run", tmp_path / "run", "--device", "cuda"),
        ("evaluate", tmp_path, "--store", tmp_path, "--device", "cuda"),
    ):
        result = _invoke(*args)
        assert result.exit_code == 2, result.output
        assert "--device cuda" in _one_sentence(result.stderr) or "run folder" in result.stderr


def test_predict_without_a_run_and_with_odd_names(tmp_path):
    pytest.importorskip("torch")
    from test_evaluation import make_run

    result = _invoke("predict", tmp_path / "no run", "song.mp3")
    assert result.exit_code == 2 and "is not a run folder" in _one_sentence(result.stderr)
    run = make_run(tmp_path / "run")
    gone = tmp_path / "gone [/].wav"
    result = _invoke("predict", run, gone, "--device", "cpu")
    assert result.exit_code == 1
    assert result.stdout == f"{gone}: cannot predict: file not found: {gone}\n"
    result = _invoke("predict", run, gone, "--json", "--device", "cpu")
    assert _strict(result.stdout) == [{"file": str(gone), "error": f"file not found: {gone}"}]


# ---- the extraction options each test is named for -------------------------------------


def _wav(path: Path, n_samples: int, sr: int = 22050) -> Path:
    rng = np.random.default_rng(n_samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * rng.standard_normal(n_samples)).astype(np.float32), sr, subtype="FLOAT")
    return path


def test_too_short_boundary_is_exact_to_the_sample(tmp_path):
    """1,024 centred frames need (1,024 - 1) * hop samples: one sample fewer is too short."""
    from melset.track import process

    r = Recipe()
    exact = process(_wav(tmp_path / "exact.wav", r.min_samples), r)
    assert exact.status == "ok" and exact.mel.shape == (128, 1024)
    short = process(_wav(tmp_path / "short.wav", r.min_samples - 1), r)
    assert short.status == "too_short" and "gives 1023 frames" in short.error
    a_frame_less = process(_wav(tmp_path / "frame.wav", r.min_samples - r.hop_length), r)
    assert a_frame_less.status == "too_short"
    # a smaller recipe, where one frame is a larger share
    small = Recipe(n_frames=8, n_mels=16)
    assert process(_wav(tmp_path / "s8.wav", small.min_samples), small).status == "ok"
    assert process(_wav(tmp_path / "s7.wav", small.min_samples - 1), small).status == "too_short"


@pytest.mark.slow
def test_retry_failed_redoes_failed_rows_and_only_then(tmp_path):
    root = tmp_path / "audio"
    for genre, src in (("folk", "200010"), ("jazz", "200036")):
        (root / genre).mkdir(parents=True)
        (root / genre / "good.mp3").symlink_to(SAMPLE_AUDIO / "200" / f"{src}.mp3")
    bad = root / "jazz" / "later.wav"
    bad.write_text("not audio yet")
    out = tmp_path / "store"

    def status():
        t = pd.read_parquet(out / "tracks.parquet").set_index("track_id")
        return t.loc["jazz/later.wav", "status"]

    run_melset("extract", "--audio", root, "--out", out, "--quiet")
    assert status() == "failed"
    bad.unlink()
    write_audio(bad, seconds=25.0, rate=22050, channels=1)  # the file is fixed
    run_melset("extract", "--audio", root, "--out", out, "--quiet")
    assert status() == "failed"  # failed rows are finished work...
    run_melset("extract", "--audio", root, "--out", out, "--quiet", "--retry-failed")
    assert status() == "ok"  # ...until asked


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["av", "soundfile"])
def test_decoder_option_chooses_the_backend(tmp_path, decoder):
    if decoder == "av":
        pytest.importorskip("av")
    out = tmp_path / "store"
    run_melset(
        "extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", out, "--quiet", "--decoder", decoder
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["identity"]["recipe"]["decoder"] == decoder
    assert set(manifest["decoders"]) == {decoder} and manifest["decoders"][decoder] >= 3


@pytest.mark.slow
def test_the_default_decoder_mixes_stereo_mp3_in_libmpg123_where_it_loads(tmp_path):
    from melset.audio import mono_mix

    if not mono_mix.available():
        pytest.skip("the system has no libmpg123 (libsndfile decodes every MP3 there)")
    out = tmp_path / "store"
    run_melset("extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", out, "--quiet")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["identity"]["recipe"]["decoder"] == "auto"
    assert manifest["decoders"].get("mpg123", 0) >= 3, manifest["decoders"]


def _run_group(args, env=None, deadline: float = 90.0) -> subprocess.CompletedProcess:
    """Run melset in its own process group; on the deadline kill the whole group (workers
    included), so a test of a hang never leaves a process behind."""
    proc = subprocess.Popen(
        melset_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"melset {' '.join(map(str, args))} still ran after {deadline} s") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.slow
def test_timeout_value_is_the_one_given(tmp_path):
    out = tmp_path / "store"
    proc = _run_group(
        sample_extract(out, "--timeout", "2"),
        env=fault_env("hang:200036"),
        deadline=60,
    )
    assert proc.returncode == 0, proc.stderr
    t = pd.read_parquet(out / "tracks.parquet").set_index("track_id")
    assert t.loc[200036, "error"].startswith("timed out: no result after 2 s")


# ---- data printed verbatim, whole commands ------------------------------------------------


@pytest.mark.slow
def test_names_with_markup_print_verbatim(tmp_path):
    root = tmp_path / "audio"
    (root / "[bold]Rock").mkdir(parents=True)
    (root / "[bold]Rock" / "good [x].mp3").symlink_to(SAMPLE_AUDIO / "200" / "200010.mp3")
    (root / "[bold]Rock" / "gone [red].wav").symlink_to(tmp_path / "nowhere")
    (root / "[dim]Jazz").mkdir()
    (root / "[dim]Jazz" / "a.mp3").symlink_to(SAMPLE_AUDIO / "200" / "200036.mp3")
    out = tmp_path / "store [1]"
    proc = run_melset("extract", "--audio", root, "--out", out)
    assert f"{out}: 2 ok" in proc.stdout and "Traceback" not in proc.stderr
    info = run_melset("info", out).stdout
    for name in ("[bold]Rock", "[dim]Jazz", "[bold]Rock/gone [red].wav", str(out)):
        assert name in info, info
    report = _strict(run_melset("info", out, "--json").stdout)
    assert report["classes"] == ["[bold]Rock", "[dim]Jazz"]


@pytest.mark.slow
def test_show_unknown_track_is_one_sentence(sample_store, tmp_path):
    for track in ("abc", "999999999", "[red]x"):
        proc = run_melset("show", sample_store, "--track", track, "--png", tmp_path / "x.png", check=False)
        assert proc.returncode == 2 and track in _one_sentence(proc.stderr)
    proc = run_melset("show", sample_store, "--track", "200159", "--png", tmp_path / "x.png", check=False)
    assert proc.returncode == 2 and "has no spectrogram" in _one_sentence(proc.stderr)


@pytest.mark.slow
def test_predict_keeps_decoder_noise_off_the_terminal(tmp_path):
    pytest.importorskip("torch")
    from test_evaluation import make_run

    data = bytearray((SAMPLE_AUDIO / "200" / "200010.mp3").read_bytes())
    i = data.find(b"\xff\xfb", 100_000)
    data[i : i + 4] = b"\x00\x11\x22\x33"  # one damaged frame header, 5 s in: libmpg123 complains
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(bytes(data))
    # libsndfile's decoder (librosa's) speaks on fd 2 about the damaged frame; the auto mix is quiet
    from melset.recipe import Recipe

    run = make_run(tmp_path / "run", Recipe(decoder="soundfile"))
    for extra in ((), ("--whole-track",)):
        proc = run_melset("predict", run, damaged, "--device", "cpu", *extra, check=False)
        assert proc.returncode in (0, 1) and proc.stderr == "", proc.stderr
        assert proc.stdout.startswith(f"{damaged}: ")


@pytest.mark.slow
def test_train_refuses_an_existing_run_and_thin_data(sample_store, tmp_path):
    pytest.importorskip("torch")
    run = tmp_path / "run"
    args = ("train", sample_store, "--run", run, "--epochs", "1", "--device", "cpu", "--quiet")
    first = run_melset(*args)
    assert "the validation split is empty" in first.stderr  # the sample has no validation rows
    assert "2 genre(s) have no training rows and cannot be learnt: Hip-Hop, Rock" in first.stderr
    metrics = _strict((run / "metrics.json").read_text())
    assert metrics["warnings"] and len(metrics["epochs"]) == 1
    model = (run / "model.pt").read_bytes()
    again = run_melset(*args, check=False)
    assert again.returncode == 2 and "--overwrite" in _one_sentence(again.stderr)
    assert (run / "model.pt").read_bytes() == model
    run_melset("train", sample_store, "--run", run, "--epochs", "2", "--patience", "0", "--quiet", "--overwrite")
    _strict((run / "config.json").read_text())
    # patience 0 stops at the first epoch without progress, never before the second epoch
    assert len(_strict((run / "metrics.json").read_text())["epochs"]) == 2

    # one genre: nothing to tell apart
    root = tmp_path / "one"
    (root / "folk").mkdir(parents=True)
    for i, src in enumerate(("200010", "200011", "200036", "200047")):
        (root / "folk" / f"{i}.mp3").symlink_to(SAMPLE_AUDIO / "200" / f"{src}.mp3")
    run_melset("extract", "--audio", root, "--out", tmp_path / "one.melset", "--quiet")
    proc = run_melset("train", tmp_path / "one.melset", "--run", tmp_path / "r1", "--epochs", "1", check=False)
    assert proc.returncode == 2 and "at least 2" in _one_sentence(proc.stderr)
    assert not (tmp_path / "r1").exists()


@pytest.mark.slow
def test_evaluate_json_is_strict_and_other_recipes_are_refused(sample_store, tmp_path):
    pytest.importorskip("torch")
    from test_evaluation import make_run

    report = _strict(run_melset("evaluate", make_run(tmp_path / "run"), "--store", sample_store, "--json").stdout)
    assert report["n"] == 2 and report["split"] == "test"
    part = run_melset("evaluate", make_run(tmp_path / "part", classes=["Jazz", "Polka"]), "--store", sample_store)
    assert "1 track(s) left out: their genres are not the run's (Classical)" in part.stdout
    other = make_run(tmp_path / "other", Recipe(n_mels=64))
    proc = run_melset("evaluate", other, "--store", sample_store, check=False)
    assert proc.returncode == 2 and "another recipe" in _one_sentence(proc.stderr)


# ---- the Python entry point, as the README prints it -------------------------------------


def _readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    after = text[text.index("From Python, the same job") :]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def test_bare_import_reaches_the_front_door():
    code = "import melset; print(melset.Recipe().shape, melset.extract.extract.__name__, melset.open_catalog.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "(128, 1024) extract open_catalog"


@pytest.mark.slow
def test_readme_python_example_runs_as_printed(tmp_path):
    (tmp_path / "fma_small").symlink_to(SAMPLE_AUDIO)
    (tmp_path / "fma_metadata").symlink_to(SAMPLE_TRACKS.parent)
    (tmp_path / "example.py").write_text(_readme_python_example())
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    counts = eval(proc.stdout.strip().splitlines()[-1])  # the printed dict
    assert counts["ok"] >= 4 and sum(counts.values()) == 10
    assert (tmp_path / "fma_small.melset" / "mels.npy").exists()


def test_commands_called_in_process_give_sigterm_back(tmp_path):
    """extract and export set SIGTERM to act as Ctrl-C while they run; called in-process (a test,
    a notebook) they put the caller's handler back, as train does."""
    import signal

    from click.testing import CliRunner

    from conftest import sample_extract

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        CliRunner().invoke(main, [str(a) for a in sample_extract(tmp_path / "s", "--workers", "1")])
        assert signal.getsignal(signal.SIGTERM) is mine
        CliRunner().invoke(main, ["export", str(tmp_path / "s"), "--format", "seed-pickles", "--to", str(tmp_path / "p")])
        assert signal.getsignal(signal.SIGTERM) is mine and (tmp_path / "p" / "y.pickle").exists()
    finally:
        signal.signal(signal.SIGTERM, previous)
