"""Portable exports (paths relative to the collection root, a dataset card), WebDataset shards a
DataLoader with workers reads, and `melset train` lines a log file shows as training runs."""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import melset_cmd, run_melset
from melset.store import Store

pytestmark = pytest.mark.slow  # extracts stores, runs whole commands

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): train loss \S+ acc \S+, val loss \S+ acc \S+, \d+\.\d s, ETA .+$")


def _card(folder) -> tuple[dict, str]:
    yaml = pytest.importorskip("yaml")
    text = (folder / "README.md").read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def _python_block(body: str) -> str:
    return body.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("fmt", ["hf", "webdataset"])
def test_exports_store_relative_paths_and_a_dataset_card(sample_store, tmp_path, fmt):
    if fmt == "hf":
        datasets = pytest.importorskip("datasets")
    store = Store(sample_store)
    root = store.manifest["source"]["audio"]
    to = tmp_path / "export"
    proc = run_melset("export", sample_store, "--format", fmt, "--to", to)
    assert "README.md" in proc.stdout
    marker = json.loads((to / "melset-export.json").read_text())
    assert marker["source_root"] == root and "README.md" in marker["files"]
    # the machine's root is written once, in the card and the marker, and in no data file
    for path in to.rglob("*"):
        if path.is_file() and path.name not in ("README.md", "melset-export.json"):
            assert root.encode() not in path.read_bytes(), path
    if fmt == "hf":
        dd = datasets.load_from_disk(str(to))  # the card beside it changes nothing
        records = [r for split in dd.values() for r in split.remove_columns("mel")]
    else:
        wds = pytest.importorskip("webdataset")
        urls = sorted(glob.glob(str(to / "*.tar")))
        records = [s["json"] for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()]
    assert len(records) == len(store.ok_rows())
    for r in records:
        stored = store.tracks["path"].iat[store.row_of(r["track_id"])]
        assert not os.path.isabs(r["path"]) and os.path.join(root, r["path"]) == stored, r

    meta, body = _card(to)
    assert meta["license"] == "other" and meta["task_categories"] == ["audio-classification"]
    assert meta["pretty_name"]
    counts = store.tracks.groupby("status").size().to_dict()
    train_line = next(line for line in body.splitlines() if line.startswith("| train |"))
    cells = [c.strip() for c in train_line.strip("|").split("|")]
    assert cells[1:] == [str(n) for n in (6, 2, 4, 2, 6)] and counts == {
        "ok": 8,
        "too_short": 2,
        "failed": 4,
        "missing": 2,
    }
    assert all(f"{i}. {c}" in body for i, c in enumerate(store.classes))
    blocks = [json.loads(b.split("```", 1)[0]) for b in body.split("```json\n")[1:]]
    assert store.recipe in blocks
    assert any(b.get("store", {}).get("melset") == store.manifest["versions"]["melset"] for b in blocks)
    assert "track.license" in body and "redistribut" in body and root in body


def test_a_dataloader_with_two_workers_reads_every_sample_once(sample_store, tmp_path):
    torch = pytest.importorskip("torch")
    wds = pytest.importorskip("webdataset")
    store = Store(sample_store)
    # the default shards: the library's default loader, two workers, each split of the small store
    run_melset("export", sample_store, "--format", "webdataset", "--to", tmp_path / "w")
    seen = {}
    for split in ("train", "test"):
        urls = sorted(glob.glob(str(tmp_path / "w" / f"{split}-*.tar")))
        assert len(urls) >= 2
        loader = torch.utils.data.DataLoader(
            wds.WebDataset(urls, shardshuffle=False).decode(), num_workers=2, batch_size=None
        )
        for s in loader:
            assert s["__key__"] not in seen
            seen[s["__key__"]] = s
    _same_as_store(store, seen)

    # the card's loader reads one shard per split (fewer shards than workers) too
    run_melset("export", sample_store, "--format", "webdataset", "--to", tmp_path / "one", "--shard-size", "1000")
    assert len(list((tmp_path / "one").glob("train-*.tar"))) == 1
    code = _python_block(_card(tmp_path / "one")[1])
    assert "num_workers=2" in code
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope = {}
        exec(code, scope)
        got = {}
        for s in scope["loader"]:
            assert s["__key__"] not in got
            got[s["__key__"]] = s
    finally:
        os.chdir(here)
    assert {s["json"]["split"] for s in got.values()} == {"train"} and len(got) == 6
    _same_as_store(store, got, exact=False)


def _same_as_store(store: Store, samples: dict, exact: bool = True) -> None:
    rows = store.ok_rows().tolist()
    if exact:
        assert len(samples) == len(rows)
    for key, s in samples.items():
        row = store.row_of(s["json"]["track_id"])
        assert row in rows and key == f"{int(store.tracks['track_id'].iat[row]):06d}"
        x = np.asarray(s["npy"])
        assert x.dtype == store.mels.dtype and np.array_equal(x, store.mels[row]), key


def test_train_prints_a_line_per_epoch_into_a_log_file(sample_store, tmp_path):
    pytest.importorskip("torch")
    log = tmp_path / "log"
    with open(log, "w") as f:
        subprocess.run(
            melset_cmd("train", sample_store, "--run", tmp_path / "r", "--epochs", "2"), stdout=f, check=True
        )
    lines = log.read_text().splitlines()
    epochs = [m.groups() for m in map(EPOCH_LINE.match, lines) if m]
    assert epochs == [("1", "2"), ("2", "2")], lines
    assert lines[0].startswith("training 2 epochs on 6 training tracks"), lines
    assert any(line.startswith("estimated total: ") and line.endswith("for 2 epochs at this pace") for line in lines)
    quiet = run_melset("train", sample_store, "--run", tmp_path / "q", "--epochs", "2", "--quiet")
    assert not any(EPOCH_LINE.match(line) for line in quiet.stdout.splitlines()), quiet.stdout


def test_an_epoch_line_reaches_the_log_while_training_runs(sample_store, tmp_path):
    pytest.importorskip("torch")
    log = tmp_path / "log"
    cmd = melset_cmd("train", sample_store, "--run", tmp_path / "r", "--epochs", "40", "--patience", "40")
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 200
        while not any(EPOCH_LINE.match(line) for line in log.read_text().splitlines()):
            assert proc.poll() is None, "training ended before an epoch line reached the log"
            assert time.monotonic() < deadline, "no epoch line in the log"
            time.sleep(0.1)
        assert proc.poll() is None  # seen while training still runs: flushed as it was printed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
