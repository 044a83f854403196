"""Processes: SIGTERM is Ctrl-C, no worker outlives a driver killed with kill -9, and a slow
file never holds back the journal of fast ones. Every wait is for observed progress."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from conftest import fault_env, make_collection, melset_cmd, run_melset
from melset.store import read_journal

pytestmark = pytest.mark.slow  # whole commands end to end


def _args(tracks, audio, out, *extra):
    return ["extract", "--tracks", tracks, "--audio", audio, "--out", out, "--quiet", "--workers", "2", *extra]


def _committed(out) -> int:
    journal = out / "journal.jsonl"
    return len(read_journal(str(journal))) if journal.exists() else 0


def wait_for(condition, what: str, proc: subprocess.Popen | None = None, limit_s: float = 120.0) -> None:
    """Poll until condition() holds; fail (never hang) if it does not within limit_s, or if proc ends first."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {limit_s:g} s")
        time.sleep(0.05)


def test_sigterm_commits_finished_rows_says_incomplete_and_exits_143(tmp_path):
    tracks, audio = make_collection(tmp_path / "c", 21, with_faults=False)
    out = tmp_path / "store"
    # one file hangs (for an hour, past any test): the run is mid-way when SIGTERM comes
    proc = subprocess.Popen(
        melset_cmd(*_args(tracks, audio, out, "--timeout", "3000")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=fault_env("hang:100000.mp3"),
        start_new_session=True,
    )
    try:
        # the timer commits the 20 fast rows although the hung file never gives a result
        wait_for(lambda: _committed(out) == 20, "journal of the 20 fast rows while one file hangs", proc)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM): finished rows are saved; run the same command again to resume" in err
    assert "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "incomplete" and manifest["counts"]["ok"] == 20 and manifest["counts"]["pending"] == 1
    # resume without the fault: only the hung row is computed
    proc = run_melset(*_args(tracks, audio, out))
    assert "1 processed" in proc.stdout and "20 already done" in proc.stdout


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_kill9_of_the_driver_leaves_no_worker_behind_and_frees_the_lock(tmp_path):
    tracks, audio = make_collection(tmp_path / "c", 12, with_faults=False)
    out = tmp_path / "store"
    # every file hangs: the workers are busy "decoding" when the driver dies
    hanging = tmp_path / "hanging"
    proc = subprocess.Popen(
        melset_cmd(*_args(tracks, audio, out, "--timeout", "3000")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=fault_env("hang:fma_audio", dict(os.environ, MELSET_FAULT_HANGING=str(hanging))),
        start_new_session=True,
    )
    children: list[psutil.Process] = []
    try:
        wait_for(lambda: hanging.exists() and len(hanging.read_text().split()) >= 2, "both workers hanging", proc)
        children = _descendants(proc.pid)  # fork server, workers, multiprocessing's resource tracker
        assert len(children) >= 3, children
        proc.send_signal(signal.SIGKILL)  # the driver alone, as the OOM killer would
        proc.wait()
        gone, alive = psutil.wait_procs(children, timeout=10)
        left = [(p.pid, " ".join(p.cmdline()[:3])) for p in alive if p.is_running() and p.status() != "zombie"]
        assert not left, f"processes outlived the killed driver: {left}"
    finally:
        for p in _descendants(proc.pid) + [c for c in children if c.is_running()]:
            p.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # the lock is free: the same command (without the fault) runs and finishes the store
    done = run_melset(*_args(tracks, audio, out))
    assert "12 ok" in done.stdout
