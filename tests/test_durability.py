"""Nothing lost: kill -9 at random moments, then resume, gives a clean run's bytes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from conftest import make_collection, melset_cmd, run_melset, store_bytes
from melset.store import read_journal

pytestmark = pytest.mark.slow  # whole commands end to end


def _extract_args(tracks, audio, out):
    return ["extract", "--tracks", tracks, "--audio", audio, "--out", out, "--quiet", "--workers", "2"]


def kill_at_random_moments(args, out, kills: int, seed: int, window: tuple[float, float]) -> list[int]:
    """Start `melset *args` and SIGKILL its whole process group after a random delay, `kills`
    times in a row. Returns how many rows were committed after each kill."""
    rng = random.Random(seed)
    committed = []
    for _ in range(kills):
        proc = subprocess.Popen(
            melset_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        time.sleep(rng.uniform(*window))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        journal = out / "journal.jsonl"
        committed.append(len(read_journal(str(journal))) if journal.exists() else 0)
    return committed


@pytest.mark.parametrize(
    "kills, n_tracks, seed, window, mid_run",
    [
        (6, 48, 7, (0.3, 1.6), 1),
        pytest.param(20, 60, 2026, (0.2, 1.2), 3, marks=pytest.mark.slow, id="twenty-kills-in-a-row"),
    ],
)
def test_kill9_then_resume_equals_clean_run(tmp_path, kills, n_tracks, seed, window, mid_run):
    tracks, audio = make_collection(tmp_path / "c", n_tracks)
    clean = tmp_path / "clean"
    run_melset(*_extract_args(tracks, audio, clean))
    killed = tmp_path / "killed"
    committed = kill_at_random_moments(
        _extract_args(tracks, audio, killed), killed, kills=kills, seed=seed, window=window
    )
    # the kills landed mid-run, with work partly done (otherwise this test proves nothing)
    assert sum(0 < n < n_tracks for n in committed) >= mid_run, committed
    run_melset(*_extract_args(tracks, audio, killed))
    assert store_bytes(killed) == store_bytes(clean)
    assert '"corrupt_rows": []' in run_melset("info", killed, "--json", "--verify").stdout


def test_ctrl_c_saves_finished_rows_and_says_how_to_resume(tmp_path):
    tracks, audio = make_collection(tmp_path / "c", 48)
    clean, out = tmp_path / "clean", tmp_path / "interrupted"
    run_melset(*_extract_args(tracks, audio, clean))
    proc = subprocess.Popen(
        melset_cmd(*_extract_args(tracks, audio, out)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    journal = out / "journal.jsonl"
    while proc.poll() is None and not (journal.exists() and len(read_journal(str(journal))) >= 8):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert (
        proc.returncode == 130 and "interrupted: finished rows are saved; run the same command again to resume" in err
    )
    assert "Traceback" not in err
    run_melset(*_extract_args(tracks, audio, out))
    assert store_bytes(out) == store_bytes(clean)
