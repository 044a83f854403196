"""The store: format readable with numpy + pandas alone, journal, resume, refusal, lock."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from melset.store import JOURNAL, Store, StoreError, StoreWriter, read_journal


def _tracks(n=4):
    return pd.DataFrame(
        {
            "track_id": np.arange(1, n + 1, dtype="int64"),
            "path": [f"/x/{i}.mp3" for i in range(n)],
            "genre_top": ["Rock", None, "Folk", "Rock"][:n],
            "subset": ["small"] * n,
            "split": ["training"] * n,
        }
    )


def _open(root, identity=None, overwrite=False):
    labels = np.zeros((4, 2), np.uint8)
    return StoreWriter.open(
        root,
        identity or {"recipe": {"a": 1}},
        _tracks(),
        labels,
        ["Folk", "Rock"],
        (3, 5),
        "float16",
        overwrite=overwrite,
    )


def test_format_is_plain_numpy_and_parquet(tmp_path):
    root = tmp_path / "s"
    with _open(root) as w:
        w.write(0, "ok", "", 30.0, np.full((3, 5), 0.5, np.float32))
        w.write(1, "failed", "not audio", math.nan, None)
        w.commit()
        w.finalize(complete=False)
    mels = np.load(root / "mels.npy", mmap_mode="r")
    assert mels.shape == (4, 3, 5) and mels.dtype == np.float16
    assert np.all(mels[0] == 0.5) and not mels[1:].any()
    t = pd.read_parquet(root / "tracks.parquet")
    assert list(t.columns) == ["track_id", "path", "genre_top", "subset", "split", "status", "error", "duration_s"]
    assert t["status"].tolist() == ["ok", "failed", "pending", "pending"]
    assert t.loc[1, "error"] == "not audio" and t.loc[0, "error"] == ""
    m = json.loads((root / "manifest.json").read_text())
    assert m["state"] == "incomplete" and m["counts"]["pending"] == 2
    assert json.loads((root / "classes.json").read_text()) == ["Folk", "Rock"]


def test_resume_skips_committed_rows_and_ignores_torn_journal_line(tmp_path):
    root = tmp_path / "s"
    with _open(root) as w:
        w.write(0, "ok", "", 30.0, np.ones((3, 5)))
        w.commit()
        w.write(1, "ok", "", 30.0, np.ones((3, 5)))  # written, never committed
    with open(root / JOURNAL, "ab") as f:
        f.write(b'{"row": 2, "status": "ok", "err')  # a kill in the middle of a journal write
    with _open(root) as w:
        assert w.done(0) is not None and w.done(1) is None and w.done(2) is None
        w.write(2, "too_short", "short", 3.0, None)
        w.commit()
    lines = (root / JOURNAL).read_bytes().splitlines()
    assert [json.loads(x)["row"] for x in lines] == [0, 2]
    assert set(read_journal(str(root / JOURNAL))) == {0, 2}


def test_other_parameters_are_refused_unless_overwrite(tmp_path):
    root = tmp_path / "s"
    _open(root).close()
    with pytest.raises(StoreError, match=r"made with other parameters \(recipe\.a: stored 1, asked 2\).*--overwrite"):
        _open(root, {"recipe": {"a": 2}})
    _open(root, {"recipe": {"a": 2}}, overwrite=True).close()
    assert json.loads((root / "manifest.json").read_text())["identity"] == {"recipe": {"a": 2}}


def test_second_writer_is_locked_out(tmp_path):
    root = tmp_path / "s"
    with _open(root):
        with pytest.raises(StoreError, match=f"in use by another melset run \\(pid {os.getpid()}\\)"):
            _open(root)
    _open(root).close()  # free again once the first closes


def test_refuses_a_folder_that_is_not_a_store(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not a melset store"):
        _open(tmp_path, overwrite=True)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_reader_sees_progress_of_incomplete_store_and_verifies(tmp_path):
    root = tmp_path / "s"
    with _open(root) as w:
        w.write(3, "ok", "", 29.0, np.ones((3, 5)))
        w.commit()
        s = Store(root)
        assert s.tracks.loc[3, "status"] == "ok" and s.tracks.loc[0, "status"] == "pending"
        assert s.verify() == []
    with open(root / "mels.npy", "r+b") as f:  # flip a byte in row 3
        off = np.load(root / "mels.npy", mmap_mode="r").offset + 3 * 30 + 4
        f.seek(off)
        f.write(b"\x7f")
    assert Store(root).verify() == [3]


def test_unknown_store_format_is_named(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(StoreError, match="unknown store format"):
        Store(tmp_path)
