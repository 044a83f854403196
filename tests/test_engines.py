"""Worker crashes and hangs: the track is retried or failed with a reason, the run goes on."""

from __future__ import annotations

import pytest


import pandas as pd

from conftest import fault_env, run_melset, sample_extract, store_bytes

pytestmark = pytest.mark.slow  # whole commands end to end


def _extract(out, *extra, env=None):
    return run_melset(*sample_extract(out, *extra), env=env)


def test_worker_killed_once_is_retried_and_nothing_lost(tmp_path, sample_store):
    marker = tmp_path / "crashed-once"
    _extract(tmp_path / "s", env=fault_env(f"crash-once:200047:{marker}"))
    assert marker.exists()  # the worker really died on that track
    assert store_bytes(tmp_path / "s") == store_bytes(sample_store)


def test_worker_killed_every_time_fails_that_track_only(tmp_path):
    proc = _extract(tmp_path / "s", env=fault_env("crash:200047"))
    t = pd.read_parquet(tmp_path / "s" / "tracks.parquet").set_index("track_id")
    assert t.loc[200047, "status"] == "failed"
    assert t.loc[200047, "error"] == "the decoder crashed: the worker process was killed by SIGKILL on every try (2)"
    assert (t["status"] == "ok").sum() == 7  # every other good track still made it
    assert proc.returncode == 0


def test_hanging_decoder_times_out(tmp_path):
    _extract(tmp_path / "s", "--timeout", "3", env=fault_env("hang:200036"))
    t = pd.read_parquet(tmp_path / "s" / "tracks.parquet").set_index("track_id")
    assert t.loc[200036, "status"] == "failed"
    assert t.loc[200036, "error"].startswith("timed out: no result after 3 s")
    assert (t["status"] == "ok").sum() == 7
