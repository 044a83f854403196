"""The Ray engine: same bytes as the local engine, resumable, safe when workers die.

Each test starts a real local Ray instance through `melset extract --engine ray`
(2 CPUs, no dashboard, usage stats off, every service on 127.0.0.1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from conftest import (
    MINI_AUDIO,
    MINI_TRACKS,
    fault_env,
    make_collection,
    melset_cmd,
    needs_shared,
    run_melset,
    store_bytes,
)
from melset.store import read_journal

pytestmark = pytest.mark.slow  # whole commands end to end

pytest.importorskip("ray")

RAY_ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _args(tracks, audio, out, *extra):
    return ["extract", "--tracks", tracks, "--audio", audio, "--out", out, "--subset", "large", "--quiet", *extra]


@needs_shared
def test_ray_store_is_byte_identical_to_local(tmp_path, fixture_json):
    local, viaray = tmp_path / "local", tmp_path / "ray"
    run_melset(*_args(MINI_TRACKS, MINI_AUDIO, local))
    proc = run_melset(*_args(MINI_TRACKS, MINI_AUDIO, viaray, "--engine", "ray", "--workers", "2"), env=RAY_ENV)
    assert "21 ok, 4 too short, 4 failed, 5 missing of 34 tracks" in proc.stdout
    assert store_bytes(viaray) == store_bytes(local)
    statuses = set(pd.read_parquet(viaray / "tracks.parquet")["status"])
    assert statuses == {"ok", "failed", "missing", "too_short"}


def test_ray_driver_killed_then_resumed_gives_same_bytes(tmp_path):
    tracks, audio = make_collection(tmp_path / "c", 60)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_melset(*_args(tracks, audio, clean, "--workers", "2"))
    proc = subprocess.Popen(
        melset_cmd(*_args(tracks, audio, killed, "--engine", "ray", "--workers", "2")),
        env=RAY_ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal, committed, deadline = killed / "journal.jsonl", 0, time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # kill once real work is under way
        committed = len(read_journal(str(journal))) if journal.exists() else 0
        if committed >= 12:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 12 <= committed < 60, f"the kill should land mid-run ({committed} rows committed)"
    run_melset(*_args(tracks, audio, killed, "--engine", "ray", "--workers", "2"), env=RAY_ENV)
    assert store_bytes(killed) == store_bytes(clean)


def test_ray_worker_killed_mid_task_is_retried_or_failed(tmp_path, sample_store):
    from conftest import SAMPLE_AUDIO, SAMPLE_TRACKS

    marker = tmp_path / "crashed-once"
    env = fault_env(f"crash-once:200047:{marker}", RAY_ENV)
    run_melset(*_args(SAMPLE_TRACKS, SAMPLE_AUDIO, tmp_path / "once", "--engine", "ray", "--workers", "2"), env=env)
    assert marker.exists()
    assert store_bytes(tmp_path / "once") == store_bytes(sample_store)  # retried: nothing lost, nothing doubled

    env = fault_env("crash:200047", RAY_ENV)
    run_melset(*_args(SAMPLE_TRACKS, SAMPLE_AUDIO, tmp_path / "always", "--engine", "ray", "--workers", "2"), env=env)
    t = pd.read_parquet(tmp_path / "always" / "tracks.parquet").set_index("track_id")
    assert t.loc[200047, "status"] == "failed"
    assert t.loc[200047, "error"] == "the decoder crashed: the Ray worker process died on every try (2)"
    assert (t["status"] == "ok").sum() == 7
