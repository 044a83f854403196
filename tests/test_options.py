"""Every `melset extract` option is checked before any work starts: a bad value exits 2 with
one sentence naming the option, and nothing hangs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import SAMPLE_AUDIO, SAMPLE_TRACKS, melset_cmd, run_melset
from melset.engines.dispatch import default_workers

FMA = ["--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO]
MOST = 4 * default_workers()


def _refused(tmp_path, *args, env=None, message: str) -> str:
    out = tmp_path / "store"
    # the timeout only guards against a hang; a refusal takes a second or two
    proc = subprocess.run(
        melset_cmd("extract", *args, "--out", out, "--quiet"), capture_output=True, text=True, env=env, timeout=90
    )
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("melset: error: ") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # refused before any work: not even the store folder
    return lines[-1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "0"], f"--workers must be a whole number from 1 to {MOST} (4 per core), not 0"),
        (["--workers", "-3"], "--workers must be a whole number from 1 to"),
        (["--workers", str(MOST + 1)], f"not {MOST + 1}"),
        (["--workers", "1000000"], "not 1000000"),
        (["--timeout", "0"], "--timeout must be a finite number of seconds above 0, not 0.0"),
        (["--timeout", "-1"], "--timeout must be a finite number of seconds above 0"),
        (["--timeout", "nan"], "not nan"),
        (["--timeout", "inf"], "not inf"),
        (["--limit", "0"], "--limit must be a whole number of at least 1, not 0"),
        (["--limit", "-5"], "not -5"),
    ],
)
def test_bad_numbers_are_refused_before_any_work(tmp_path, args, message):
    _refused(tmp_path, *FMA, *args, message=message)


@pytest.mark.slow
def test_paths_that_must_exist(tmp_path):
    gone = tmp_path / "gone [old]"
    _refused(tmp_path, "--tracks", SAMPLE_TRACKS, "--audio", gone, message=f"--audio {gone}: no such folder")
    _refused(tmp_path, "--tracks", gone, "--audio", SAMPLE_AUDIO, message=f"--tracks {gone}: no such file")
    _refused(tmp_path, "--manifest", gone, "--audio", SAMPLE_AUDIO, message=f"--manifest {gone}: no such file")
    _refused(tmp_path, "--tracks", SAMPLE_AUDIO, "--audio", SAMPLE_AUDIO, message="a folder, not a file")
    _refused(tmp_path, "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_TRACKS, message="not a folder")


@pytest.mark.slow
def test_decoder_av_without_pyav(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "av.py").write_text("raise ImportError('No module named av (test shim)')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]))
    line = _refused(tmp_path, *FMA, "--decoder", "av", env=env, message="--decoder av needs PyAV")
    assert line.endswith("pip install 'melset[av]'")  # the brackets survive the terminal markup


@pytest.mark.slow
def test_a_ray_address_that_does_not_answer_is_refused_not_waited_on(tmp_path):
    pytest.importorskip("ray")
    _refused(
        tmp_path,
        *FMA,
        "--engine",
        "ray",
        "--ray-address",
        "127.0.0.1:1",
        message="--ray-address 127.0.0.1:1: no Ray cluster answers there (connection refused",
    )
    _refused(tmp_path, *FMA, "--engine", "ray", "--ray-address", "nonsense", message="is not HOST:PORT")


def test_a_port_that_accepts_but_is_not_ray_is_given_up_on(monkeypatch):
    """ray.init that never returns (something else listens there) is bounded."""
    import threading

    from melset.engines import cluster
    from melset.errors import UsageError

    never = threading.Event()

    class FakeRay:
        @staticmethod
        def init(**kwargs):
            never.wait()

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 0.2)
    with pytest.raises(UsageError, match=r"--ray-address 10\.0\.0\.1:6379: no Ray cluster answered within 0\.2 s"):
        cluster._init_bounded(FakeRay, {}, "10.0.0.1:6379")
    never.set()


# -- the layout is explicit -----------------------------------------------------------------


@pytest.mark.slow
def test_an_fma_folder_without_tracks_is_refused_not_read_as_genre_folders(tmp_path):
    _refused(
        tmp_path,
        "--audio",
        SAMPLE_AUDIO,
        message="looks like an FMA audio folder (NNN/NNNNNN.mp3) but no --tracks was given: pass --tracks",
    )


@pytest.mark.slow
def test_the_layout_and_why_are_said(tmp_path):
    proc = run_melset("extract", *FMA, "--out", tmp_path / "fma", "--limit", "1", "--workers", "1", check=False)
    assert "layout: fma (--tracks given)" in proc.stdout
    assert json.loads((tmp_path / "fma" / "manifest.json").read_text())["source"]["layout_reason"] == "--tracks given"
    # asked for explicitly, the folders layout reads an FMA folder by its folder names
    out = tmp_path / "folders"
    run_melset("extract", "--audio", SAMPLE_AUDIO, "--layout", "folders", "--out", out, "--limit", "1", "--quiet")
    source = json.loads((out / "manifest.json").read_text())["source"]
    assert source["layout"] == "folders" and source["layout_reason"] == "--layout folders given"


def test_check_options_in_process(tmp_path):
    from melset.errors import MetadataError, UsageError
    from melset.extract import check_options

    base = dict(audio=SAMPLE_AUDIO, tracks=SAMPLE_TRACKS)
    assert check_options(**base) == "fma"
    for bad in (dict(workers=0), dict(workers=True), dict(workers=2.5), dict(workers=MOST + 1)):
        with pytest.raises(UsageError, match="--workers"):
            check_options(**base, **bad)
    assert check_options(**base, workers=MOST) == "fma"
    assert check_options(**base, workers=MOST + 1, engine="ray") == "fma"  # a cluster has its own cores
    for bad in (0, -1.0, float("nan"), float("inf"), "3"):
        with pytest.raises(UsageError, match="--timeout"):
            check_options(**base, timeout=bad)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UsageError, match="--limit"):
            check_options(**base, limit=bad)
    with pytest.raises(UsageError, match="--subset"):
        check_options(**base, subset="tiny")
    with pytest.raises(MetadataError, match="--audio"):
        check_options(audio=tmp_path / "none")
    with pytest.raises(UsageError, match="looks like an FMA audio folder"):
        check_options(audio=SAMPLE_AUDIO)
    assert check_options(audio=SAMPLE_AUDIO, layout="folders") == "folders"
