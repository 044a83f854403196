"""Nothing lost: kill -9 at random moments, then resume, gives a clean run's bytes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from conftest import fault_env, make_collection, melset_cmd, run_melset, store_bytes
from melset.store import read_journal

pytestmark = pytest.mark.slow  # whole commands end to end


def _extract_args(tracks, audio, out):
    return ["extract", "--tracks", tracks, "--audio", audio, "--out", out, "--quiet", "--workers", "2"]


def _committed(out) -> int:
    journal = out / "journal.jsonl"
    return len(read_journal(str(journal))) if journal.exists() else 0


def kill_at_random_moments(args, out, kills: int, seed: int, n_tracks: int) -> list[int]:
    """Start `melset *args` and SIGKILL its whole process group, `kills` times in a row, each
    time once the journal shows a random number of new rows (0: as soon as the store exists).
    Timed by observed progress, never by the clock, so it kills mid-run on a loaded machine too;
    every track is slowed down a little (fault injection `slow:`), so that on an idle machine
    the rows still arrive a few per commit instead of the whole rest of the run in one.
    Returns how many rows were committed after each kill."""
    rng = random.Random(seed)
    step = max(1, (n_tracks - 2) // kills)
    committed = []
    for _ in range(kills):
        before = _committed(out)
        target = min(n_tracks - 1, before + rng.randint(0, step))
        proc = subprocess.Popen(
            melset_cmd(*args),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=fault_env("slow:0.1"),
        )
        deadline = time.monotonic() + 300  # only a guard against a run that never progresses
        while proc.poll() is None:
            if (out / "journal.jsonl").exists() and _committed(out) >= max(target, 1 if target > before else 0):
                break
            assert time.monotonic() < deadline, f"no progress to {target} rows"
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        committed.append(_committed(out))
    return committed


@pytest.mark.parametrize(
    "kills, n_tracks, seed",
    [(6, 48, 7), pytest.param(20, 60, 2026, marks=pytest.mark.slow, id="twenty-kills-in-a-row")],
)
def test_kill9_then_resume_equals_clean_run(tmp_path, kills, n_tracks, seed):
    tracks, audio = make_collection(tmp_path / "c", n_tracks)
    clean = tmp_path / "clean"
    run_melset(*_extract_args(tracks, audio, clean))
    killed = tmp_path / "killed"
    committed = kill_at_random_moments(
        _extract_args(tracks, audio, killed), killed, kills=kills, seed=seed, n_tracks=n_tracks
    )
    # every kill landed mid-run, with work partly done (otherwise this test proves nothing)
    assert sum(0 < n < n_tracks for n in committed) >= max(1, kills // 3), committed
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
        env=fault_env("slow:0.1"),  # slow enough that an idle machine does not finish before the Ctrl-C
    )
    deadline = time.monotonic() + 300  # only a guard against a run that never progresses
    while proc.poll() is None and _committed(out) < 8:
        assert time.monotonic() < deadline, "no 8 rows committed"
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert (
        proc.returncode == 130 and "interrupted: finished rows are saved; run the same command again to resume" in err
    )
    assert "Traceback" not in err
    run_melset(*_extract_args(tracks, audio, out))
    assert store_bytes(out) == store_bytes(clean)
