"""A store's files as an attacker leaves them: every command works on correct data or says
in one sentence what is wrong (exit 2; `info --verify` exit 1 for damaged rows). Never a
traceback, never NaN served, never a file of the user's deleted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE_AUDIO, SAMPLE_TRACKS, copy_tree, run_melset, store_bytes
from melset.store import Store

pytestmark = pytest.mark.slow  # whole commands end to end


def _extract_args(out, audio=SAMPLE_AUDIO, *extra):
    return ["extract", "--tracks", SAMPLE_TRACKS, "--audio", audio, "--out", out, "--subset", "large", "--quiet"]


def _corrupt_row(store: Path, row: int) -> None:
    mels = np.load(store / "mels.npy", mmap_mode="r")
    off = mels.offset + row * mels[0].nbytes + 1000
    with open(store / "mels.npy", "r+b") as f:
        f.seek(off)
        f.write(b"\xff\x7f\x00\x7c")  # 0x7fff is a float16 NaN, 0x7c00 is inf


def test_verify_finds_exactly_the_damaged_rows_and_repair_rebuilds_them(sample_store, tmp_path):
    store = copy_tree(sample_store, tmp_path / "store")
    ok = Store(store).ok_rows()
    damaged = [int(ok[1]), int(ok[5])]
    for row in damaged:
        _corrupt_row(store, row)
    proc = run_melset("info", store, "--verify", "--json", check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["corrupt_rows"] == damaged
    proc = run_melset("info", store, "--verify", check=False)
    assert proc.returncode == 1 and "2 row(s) of" in proc.stderr and f"melset repair {store}" in proc.stderr
    track = Store(store).tracks["track_id"][damaged[0]]
    proc = run_melset("show", store, "--track", track, "--png", tmp_path / "x.png", check=False)
    assert proc.returncode == 2 and "is damaged" in proc.stderr and not (tmp_path / "x.png").exists()
    proc = run_melset("export", store, "--format", "seed-pickles", "--to", tmp_path / "p", check=False)
    assert proc.returncode == 2 and "is damaged" in proc.stderr  # never a NaN pickle
    proc = run_melset("repair", store)
    assert f"2 damaged row(s) marked for re-extraction: {damaged[0]}, {damaged[1]}" in proc.stdout
    assert run_melset("info", store, "--verify").returncode == 0
    proc = run_melset(*_extract_args(store))
    assert "2 processed" in proc.stdout and "14 already done" in proc.stdout
    assert store_bytes(store) == store_bytes(sample_store)
    assert "no damage found" in run_melset("repair", store).stdout


def test_a_moved_collection_resumes_where_it_stopped(sample_store, tmp_path):
    first = copy_tree(SAMPLE_AUDIO, tmp_path / "disk1" / "fma_audio")
    store = tmp_path / "store"
    run_melset(*_extract_args(store, first))
    # stop it halfway: the journal is what a resume trusts (a kill leaves it like this)
    journal = (store / "journal.jsonl").read_bytes().splitlines(keepends=True)
    (store / "journal.jsonl").write_bytes(b"".join(journal[:8]))
    m = json.loads((store / "manifest.json").read_text())
    from melset.store import _sealed

    (store / "manifest.json").write_text(json.dumps(_sealed({**m, "state": "running"})))
    moved = tmp_path / "disk2" / "music" / "fma_audio"
    moved.parent.mkdir(parents=True)
    shutil.move(first, moved)
    proc = run_melset(*_extract_args(store, moved))
    assert "8 already done" in proc.stdout and "8 processed" in proc.stdout
    assert {k: v for k, v in store_bytes(store).items() if k != "tracks.parquet"} == {
        k: v for k, v in store_bytes(sample_store).items() if k != "tracks.parquet"
    }
    t, clean = pd.read_parquet(store / "tracks.parquet"), pd.read_parquet(sample_store / "tracks.parquet")
    assert all(p.startswith(str(moved)) for p in t["path"])  # the table follows the collection
    assert t.drop(columns=["path", "error"]).equals(clean.drop(columns=["path", "error"]))
    found = t["status"] != "missing"  # a missing row keeps the reason (and path) its run recorded
    assert (t["error"][found] == clean["error"][found]).all()
    assert json.loads((store / "manifest.json").read_text())["source"]["audio"] == str(moved)


def test_overwrite_waits_for_every_other_check(sample_store, tmp_path):
    store = copy_tree(sample_store, tmp_path / "store")
    before = store_bytes(store)
    bad = ["extract", "--tracks", tmp_path / "nope.csv", "--audio", SAMPLE_AUDIO, "--out", store, "--overwrite"]
    proc = run_melset(*bad, "--quiet", check=False)
    assert proc.returncode == 2 and "nope.csv" in proc.stderr
    assert store_bytes(store) == before  # a bad catalog replaced nothing


def test_store_files_without_manifest_are_refused_not_wiped(sample_store, tmp_path):
    store = copy_tree(sample_store, tmp_path / "store")
    (store / "manifest.json").unlink()
    before = store_bytes(store)
    for extra in ([], ["--overwrite"]):
        proc = run_melset(*_extract_args(store), *extra, check=False)
        assert proc.returncode == 2 and "but no manifest.json" in proc.stderr and "Traceback" not in proc.stderr
    assert store_bytes(store) == before
