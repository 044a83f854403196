"""The store: format readable with numpy + pandas alone, journal, resume, refusal, lock."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from melset.store import Store, StoreError, StoreWriter, read_journal
from melset.vocab import JOURNAL


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


def test_a_store_of_an_older_melset_is_refused_but_may_be_overwritten(tmp_path):
    root = _finished(tmp_path / "s")
    m = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**m, "format": "melset-store/1"}))
    with pytest.raises(StoreError, match=r"written by an older melset \(melset-store/1\); rebuild .* --overwrite"):
        _open(root)
    _open(root, overwrite=True).close()
    assert Store(root).manifest["format"] == "melset-store/2"


# -- the store is checked, never trusted -------------------------------------------------------------


def _finished(root):
    with _open(root) as w:
        for row in range(4):
            w.write(row, "ok", "", 30.0, np.full((3, 5), row / 4, np.float32))
        w.commit()
        w.finalize(complete=True)
    return root


def _reseal(root, **fields):
    """Edit manifest fields the way a careful attacker would: with a valid checksum."""
    from melset.store.format import _sealed

    m = json.loads((root / "manifest.json").read_text())
    m.update(fields)
    (root / "manifest.json").write_text(json.dumps(_sealed(m)))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.unlink(), "not a melset store.*no manifest.json|holds .*mels.npy.* but no manifest.json"),
        (lambda p: p.write_text("{not json"), "is not valid JSON"),
        (lambda p: p.write_text("[1, 2]"), "holds a JSON list, not melset's manifest object"),
        (lambda p: p.write_text(p.read_text().replace('"rows": 4', '"rows": 5')), "was changed after melset wrote it"),
    ],
)
def test_a_damaged_manifest_is_refused_with_one_sentence(tmp_path, edit, message):
    root = _finished(tmp_path / "s")
    edit(root / "manifest.json")
    with pytest.raises(StoreError, match=message):
        Store(root)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"rows": -1}, "rows is -1, not a count"),
        ({"rows": True}, "rows is true, not a count"),
        ({"shape": [4, 3]}, r"shape is \[4, 3\], not \[rows, n_mels, n_frames\]"),
        ({"shape": [9, 3, 5]}, r"shape \[9, 3, 5\] does not match rows 4"),
        ({"dtype": "float64"}, 'dtype is "float64", not one of float16, float32'),
        ({"classes": ["Folk", 3]}, "classes is .*not a list of names"),
        ({"identity": []}, "identity is not an object"),
        ({"state": "done"}, 'state is "done"'),
    ],
)
def test_manifest_fields_are_typed_even_with_a_valid_checksum(tmp_path, fields, message):
    root = _finished(tmp_path / "s")
    _reseal(root, **fields)
    with pytest.raises(StoreError, match=message + ".*--overwrite"):
        Store(root)


def test_npy_header_and_size_are_checked(tmp_path):
    root = _finished(tmp_path / "s")
    mels = root / "mels.npy"
    data = mels.read_bytes()
    mels.write_bytes(data[:-7])  # a truncated file is damage, not rows of zeros
    with pytest.raises(
        StoreError, match=r"mels.npy is truncated \(.* bytes, .* expected\); run the same `melset extract`"
    ):
        Store(root)
    mels.write_bytes(data.replace(b"(4, 3, 5)", b"(4, 5, 3)"))
    with pytest.raises(StoreError, match=r"holds a float16 array of shape \(4, 5, 3\), the manifest says"):
        Store(root)
    mels.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(StoreError, match="has no valid .npy header"):
        Store(root)
    mels.write_bytes(data)
    (root / "labels.npy").write_bytes(np.lib.format.magic(1, 0) + b"x")
    with pytest.raises(StoreError, match="labels.npy has no valid .npy header"):
        Store(root)


def test_labels_tracks_and_classes_are_checked(tmp_path):
    root = _finished(tmp_path / "s")
    labels = root / "labels.npy"
    good = labels.read_bytes()
    labels.write_bytes(good[:-1] + b"\x01")  # a valid file that says another thing
    with pytest.raises(StoreError, match="labels.npy was changed after melset wrote it"):
        Store(root)
    labels.write_bytes(good)
    (root / "classes.json").write_text('["Folk", "Pop"]')
    with pytest.raises(StoreError, match="classes.json does not list the classes the manifest names"):
        Store(root)
    (root / "classes.json").write_text('["Folk", "Rock"]\n')
    t = pd.read_parquet(root / "tracks.parquet")
    t.loc[0, "genre_top"] = "Pop"
    t.to_parquet(root / "tracks.parquet")
    with pytest.raises(StoreError, match="tracks.parquet was changed after melset wrote it"):
        Store(root)
    (root / "tracks.parquet").write_bytes(b"PAR1 not really")
    _reseal(root, state="running")  # a run in progress: the table is not checksummed yet, but read
    with pytest.raises(StoreError, match="tracks.parquet is not a readable Parquet file"):
        Store(root)


@pytest.mark.parametrize(
    "line, message",
    [
        (b"garbage", "line 2 is not JSON"),
        (b"[1]", "line 2 is not a JSON object"),
        (
            b'{"row": 99, "status": "ok", "error": "", "duration_s": 1, "crc32": 0}',
            "line 2 names row 99 but the store has 4 rows",
        ),
        (b'{"row": -1, "status": "ok", "error": "", "duration_s": 1, "crc32": 0}', "line 2 names row -1"),
        (
            b'{"row": "1", "status": "ok", "error": "", "duration_s": 1, "crc32": 0}',
            'line 2 has row "1", not a row number',
        ),
        (b'{"row": 1, "status": "great", "error": "", "duration_s": 1, "crc32": 0}', 'line 2 has status "great"'),
        (b'{"row": 1, "status": "ok", "error": 5, "duration_s": 1, "crc32": 0}', "line 2 has error 5, not a text"),
        (b'{"row": 1, "status": "ok", "error": "", "duration_s": 1, "crc32": "x"}', 'line 2 has crc32 "x"'),
        (
            b'{"row": 1, "status": "ok", "error": "", "duration_s": 1, "crc32": 4294967296}',
            "line 2 has crc32 4294967296",
        ),
        (b'{"row": 1, "status": "ok", "error": "", "duration_s": NaN, "crc32": 0}', "line 2 has duration_s NaN"),
        (b'{"row": 1, "status": "ok", "error": "", "duration_s": "1", "crc32": 0}', 'line 2 has duration_s "1"'),
        (b"", "line 2 is not JSON"),
        (
            b'{"row":1,"status":"ok","error":"","duration_s":31.0,"crc32":0,"decoder":"","line_crc32":1}',
            r"line 2 \(row 1\) does not match its own checksum: it was changed after melset wrote it",
        ),
    ],
)
def test_every_journal_line_is_checked(tmp_path, line, message):
    root = _finished(tmp_path / "s")
    lines = (root / JOURNAL).read_bytes().splitlines(keepends=True)
    lines[1] = line + b"\n"
    (root / JOURNAL).write_bytes(b"".join(lines))
    with pytest.raises(StoreError, match=f"journal.jsonl {message}.*; run `melset repair .*` to mark the rows"):
        Store(root)
    with pytest.raises(StoreError, match=f"journal.jsonl {message}"):
        _open(root)  # resume refuses too, and leaves the store as it was
    assert (root / JOURNAL).read_bytes() == b"".join(lines)


def test_store_files_without_a_manifest_are_never_wiped(tmp_path):
    root = _finished(tmp_path / "s")
    (root / "manifest.json").unlink()
    before = {p.name: p.read_bytes() for p in root.iterdir() if p.name != ".lock"}
    for overwrite in (False, True):
        with pytest.raises(
            StoreError, match="holds tracks.parquet, mels.npy, .* but no manifest.json.*will not touch it"
        ):
            _open(root, overwrite=overwrite)
    assert {p.name: p.read_bytes() for p in root.iterdir() if p.name != ".lock"} == before


def test_overwrite_removes_only_melset_files_and_checks_space_first(tmp_path, monkeypatch):
    import shutil

    from melset.store import space as store_mod

    root = _finished(tmp_path / "s")
    (root / "notes.txt").write_text("mine")
    (root / "mels.npy.tmp.bak").write_text("also mine")  # looks like a temp file, is not melset's
    (root / "manifest.json.tmp123").write_text("melset's leftover")
    before = store_bytes = (root / "mels.npy").read_bytes()
    usage = shutil.disk_usage(root)
    monkeypatch.setattr(store_mod.shutil, "disk_usage", lambda p: usage._replace(free=10))
    with pytest.raises(StoreError, match="not enough disk space"):
        _open(root, {"recipe": {"a": 2}}, overwrite=True)
    assert (root / "mels.npy").read_bytes() == store_bytes and Store(root).manifest["identity"] == {"recipe": {"a": 1}}
    monkeypatch.undo()
    _open(root, {"recipe": {"a": 2}}, overwrite=True).close()
    assert (root / "notes.txt").read_text() == "mine" and (root / "mels.npy.tmp.bak").exists()
    assert not (root / "manifest.json.tmp123").exists()
    assert (root / "mels.npy").read_bytes() != before


def test_overwrite_refuses_what_it_cannot_recognise(tmp_path):
    root = _finished(tmp_path / "s")
    (root / "manifest.json").write_text("{ this was mine")
    with pytest.raises(StoreError, match="is not valid JSON.*will not use or replace it"):
        _open(root, overwrite=True)
    assert (root / "mels.npy").exists() and (root / "manifest.json").read_text() == "{ this was mine"


def test_an_interrupted_creation_is_made_again(tmp_path, monkeypatch):
    from melset.store import writer as store_mod

    root = tmp_path / "s"
    monkeypatch.setattr(store_mod, "_npy_bytes", lambda a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _open(root)
    monkeypatch.undo()
    assert json.loads((root / "manifest.json").read_text())["state"] == "creating"
    with pytest.raises(
        StoreError, match="is being created, or its creation was interrupted; run the same `melset extract`"
    ):
        Store(root)
    _finished(root)
    assert Store(root).manifest["state"] == "complete"


def _flip(root, row, shape=(3, 5), itemsize=2):
    off = np.load(root / "mels.npy", mmap_mode="r").offset + row * int(np.prod(shape)) * itemsize + 3
    with open(root / "mels.npy", "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x10]))


def test_resume_redoes_rows_whose_bytes_miss_their_checksum_and_heals_derived_files(tmp_path):
    root = _finished(tmp_path / "s")
    clean = {n: (root / n).read_bytes() for n in ("mels.npy", "labels.npy", "classes.json", "tracks.parquet")}
    _flip(root, 1)
    (root / "labels.npy").write_bytes(b"junk")
    (root / "classes.json").unlink()
    (root / "tracks.parquet").write_bytes(b"junk")
    mels = root / "mels.npy"
    mels.write_bytes(mels.read_bytes()[:-20])  # row 3 lost its end
    with _open(root) as w:
        assert w.done(0) and w.done(2) and w.done(1) is None and w.done(3) is None
        assert any("row(s) did not match their journal checksum" in n and "1, 3" in n for n in w.notes), w.notes
        assert any("labels.npy was damaged" in n for n in w.notes) and any(
            "classes.json was missing" in n for n in w.notes
        )
        for row in (1, 3):
            w.write(row, "ok", "", 30.0, np.full((3, 5), row / 4, np.float32))
        w.finalize(complete=True)
    assert {n: (root / n).read_bytes() for n in clean} == clean
    assert Store(root).verify() == []


def test_reader_serves_only_rows_that_match_their_checksum(tmp_path):
    root = _finished(tmp_path / "s")
    assert np.all(Store(root).row(2) == 0.5)
    _flip(root, 2)
    s = Store(root)
    assert s.verify() == [2]
    with pytest.raises(StoreError, match="row 2 of .* is damaged.*melset repair"):
        s.row(2)


def test_repair_marks_exactly_the_damaged_rows_for_re_extraction(tmp_path):
    from melset.store import repair

    root = _finished(tmp_path / "s")
    clean = (root / "mels.npy").read_bytes()
    _flip(root, 0)
    lines = (root / JOURNAL).read_bytes().splitlines(keepends=True)
    lines.insert(2, b'{"row": 2, "status": "bogus"}\n')  # a bad line naming row 2
    (root / JOURNAL).write_bytes(b"".join(lines))
    result = repair(root)
    assert result.damaged == [0, 2] and result.dropped_lines == [3]
    s = Store(root)
    assert s.manifest["state"] == "incomplete" and s.tracks["status"].tolist() == ["pending", "ok", "pending", "ok"]
    assert s.verify() == []
    assert repair(root).changed is False  # idempotent
    with _open(root) as w:
        assert sorted(r for r in range(4) if w.done(r) is None) == [0, 2]
        for row in (0, 2):
            w.write(row, "ok", "", 30.0, np.full((3, 5), row / 4, np.float32))
        w.finalize(complete=True)
    assert (root / "mels.npy").read_bytes() == clean and Store(root).manifest["state"] == "complete"


def test_a_lost_journal_is_refused_and_repair_marks_every_row(tmp_path):
    from melset.store import repair

    root = _finished(tmp_path / "s")
    (root / JOURNAL).unlink()
    with pytest.raises(StoreError, match="journal.jsonl is missing; run `melset repair"):
        Store(root)
    assert repair(root).journal_missing
    assert Store(root).tracks["status"].tolist() == ["pending"] * 4


def test_a_finished_store_whose_journal_lost_lines_is_refused(tmp_path):
    root = _finished(tmp_path / "s")
    lines = (root / JOURNAL).read_bytes().splitlines(keepends=True)
    (root / JOURNAL).write_bytes(b"".join(lines[:2]))  # cut at a line boundary: no torn line to see
    with pytest.raises(
        StoreError, match="disagrees with tracks.parquet on 2 row\\(s\\) \\(2, 3\\); run `melset repair"
    ):
        Store(root)


@pytest.mark.slow  # 28 GB announced, a few MB written: ~9 s of tables
def test_a_store_sized_for_fma_large_is_sparse_and_answers(tmp_path, monkeypatch):
    import shutil

    from melset.store import space as store_mod

    n = 106_574
    tracks = pd.DataFrame(
        {
            "track_id": np.arange(n, dtype="int64"),
            "path": [f"/audio/{i:06d}.mp3" for i in range(n)],
            "genre_top": ["Rock", "Folk"] * (n // 2),
            "subset": ["large"] * n,
            "split": ["training"] * n,
        }
    )
    labels = np.zeros((n, 2), np.uint8)
    labels[np.arange(n), (np.arange(n) % 2 == 0).astype(int)] = 1  # Rock, Folk, Rock, ...
    real = shutil.disk_usage(tmp_path)
    # a big disk: 28 GB of rows fit, so the up-front check lets the store be made
    monkeypatch.setattr(store_mod.shutil, "disk_usage", lambda p: real._replace(free=40 * 10**9))
    root = tmp_path / "large"
    with StoreWriter.open(root, {"recipe": {}}, tracks, labels, ["Folk", "Rock"], (128, 1024), "float16") as w:
        w.write(5, "ok", "", 30.0, np.full((128, 1024), 0.25, np.float32))
        w.commit()
        w.finalize(complete=False)
    st = os.stat(root / "mels.npy")
    assert st.st_size == 128 + n * 128 * 1024 * 2  # 27.9 GB announced ...
    assert st.st_blocks * 512 < 64 * 1024 * 1024  # ... not reserved
    s = Store(root)
    report = s.describe()
    assert report["rows"] == n and report["counts"]["ok"] == 1 and report["counts"]["pending"] == n - 1
    assert s.verify() == []
    with StoreWriter.open(root, {"recipe": {}}, tracks, labels, ["Folk", "Rock"], (128, 1024), "float16") as w:
        assert w.done(5) is not None  # resumes: the free-space check counts only rows still to write


@pytest.mark.slow  # writes 150 MB
def test_verify_reads_the_store_in_bounded_memory(tmp_path):
    import subprocess
    import sys

    n = 600  # 600 rows of 128 x 1024 float16: 150 MB
    tracks = pd.DataFrame(
        {
            "track_id": np.arange(n, dtype="int64"),
            "path": [f"/a/{i}.mp3" for i in range(n)],
            "genre_top": ["Rock"] * n,
            "subset": ["small"] * n,
            "split": ["training"] * n,
        }
    )
    root = tmp_path / "s"
    rng = np.random.default_rng(0)
    with StoreWriter.open(
        root, {"recipe": {}}, tracks, np.ones((n, 1), np.uint8), ["Rock"], (128, 1024), "float16"
    ) as w:
        for row in range(n):
            w.write(row, "ok", "", 30.0, rng.random((128, 1024), dtype=np.float32))
        w.commit()
        w.finalize(complete=True)
    code = (
        "import resource, sys; from melset.store import Store; s = Store(sys.argv[1]); "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; assert s.verify() == []; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)"
    )
    grew_kb = int(subprocess.run([sys.executable, "-c", code, root], capture_output=True, text=True, check=True).stdout)
    assert grew_kb < 64 * 1024, f"verify of a 150 MB store grew the process by {grew_kb // 1024} MB"
