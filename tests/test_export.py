"""Exports read back by their own libraries: datasets.load_from_disk and webdataset.WebDataset."""

from __future__ import annotations

import glob
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLE_AUDIO, run_melset
from melset import export as exports
from melset.card import relative_path, source_root
from melset.cli import main
from melset.errors import UsageError
from melset.store import Store
from melset.store.format import _sealed

pytestmark = pytest.mark.slow  # extracts stores, runs whole commands

SPLIT_NAMES = {"training": "train", "validation": "validation", "test": "test"}


def expected_splits(store: Store) -> dict[str, list[int]]:
    t = store.tracks
    ok = t[t["status"] == "ok"]
    if ok["split"].isna().all():
        return {"train": ok.index.tolist()}
    return {SPLIT_NAMES[s]: ok.index[ok["split"] == s].tolist() for s in SPLIT_NAMES if (ok["split"] == s).any()}


def check_hf(store_dir, to):
    datasets = pytest.importorskip("datasets")
    store = Store(store_dir)
    dd = datasets.load_from_disk(str(to))
    splits = expected_splits(store)
    assert sorted(dd) == sorted(splits)
    shape = tuple(store.manifest["shape"][1:])
    for name, rows in splits.items():
        ds = dd[name]
        assert ds.features["mel"] == datasets.Array2D(shape, str(store.mels.dtype))
        assert ds.features["label"].names == store.classes
        assert len(ds) == len(rows)
        stored_type = {"float16": "halffloat", "float32": "float"}[str(store.mels.dtype)]
        assert str(ds.data.column("mel").type.storage_type) == f"list<item: list<item: {stored_type}>>"
        for row, item in zip(rows, ds.with_format("numpy", dtype=store.mels.dtype)):
            mel = item["mel"]
            assert mel.dtype == store.mels.dtype and np.array_equal(mel, store.mels[row]), row
            t = store.tracks.iloc[row]
            assert item["track_id"] == t["track_id"] and item["path"] == relative_path(t["path"], source_root(store))
            assert item["duration_s"] == t["duration_s"]
            assert item["genre"] == (t["genre_top"] if isinstance(t["genre_top"], str) else None)
            hot = np.flatnonzero(store.labels[row])
            assert int(item["label"]) == (hot[0] if len(hot) else -1)
    return dd


def read_wds(to):
    wds = pytest.importorskip("webdataset")
    urls = sorted(glob.glob(str(to / "*.tar")))
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode())


def check_wds(store_dir, to):
    store = Store(store_dir)
    samples = read_wds(to)
    splits = expected_splits(store)
    rows_in_order = [r for name in sorted(splits) for r in splits[name]]  # shards sort by split name
    assert len(samples) == len(rows_in_order)
    keys = [s["__key__"] for s in samples]
    assert len(set(keys)) == len(keys) and not any("." in k or "/" in k for k in keys)
    for row, s in zip(rows_in_order, samples):
        meta = s["json"]
        assert meta["track_id"] == store.tracks["track_id"].iat[row]
        assert s["npy"].dtype == store.mels.dtype and np.array_equal(s["npy"], store.mels[row]), row
        assert meta["split"] in splits and row in splits[meta["split"]]
        assert meta["label"] == store.tracks["genre_top"].iat[row]
        assert (
            meta["path"] == relative_path(store.tracks["path"].iat[row], source_root(store))
            and meta["duration_s"] == store.tracks["duration_s"].iat[row]
        )
    return samples


def test_hf_export_reads_back_equal_to_the_store(sample_store, tmp_path):
    run_melset("export", sample_store, "--format", "hf", "--to", tmp_path / "hf")
    dd = check_hf(sample_store, tmp_path / "hf")
    assert sum(len(d) for d in dd.values()) == len(Store(sample_store).ok_rows())
    # exporting again replaces the earlier export
    run_melset("export", sample_store, "--format", "hf", "--to", tmp_path / "hf")
    check_hf(sample_store, tmp_path / "hf")


def test_hf_export_float32_mini(mini_store, tmp_path):
    exports.hf(Store(mini_store), tmp_path / "hf")
    check_hf(mini_store, tmp_path / "hf")


def test_webdataset_export_reads_back_and_is_deterministic(sample_store, tmp_path):
    run_melset("export", sample_store, "--format", "webdataset", "--to", tmp_path / "a", "--shard-size", "2")
    run_melset("export", sample_store, "--format", "webdataset", "--to", tmp_path / "b", "--shard-size", "2")
    check_wds(sample_store, tmp_path / "a")
    a = sorted(p.name for p in (tmp_path / "a").glob("*.tar"))
    assert a == sorted(p.name for p in (tmp_path / "b").glob("*.tar")) and "train-000002.tar" in a
    for name in a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    n_ok = len(Store(sample_store).ok_rows())
    run_melset("export", sample_store, "--format", "webdataset", "--to", tmp_path / "a")  # min(rows, 8) shards a split
    n_shards = sum(min(len(rows), 8) for rows in expected_splits(Store(sample_store)).values())
    assert len(read_wds(tmp_path / "a")) == n_ok and len(list((tmp_path / "a").glob("*.tar"))) == n_shards


@pytest.fixture(scope="module")
def folders_store(tmp_path_factory):
    """GTZAN-like names (dots, slashes) and no split: keys need an injective encoding."""
    root = tmp_path_factory.mktemp("folders")
    for genre, src in (("blues", "200010"), ("jazz", "200036"), ("jazz", "200037")):
        d = root / "audio" / genre
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{genre}.{src}.mp3").symlink_to(SAMPLE_AUDIO / "200" / f"{src}.mp3")
    (root / "audio" / "jazz" / "jazz%2E200036.mp3").symlink_to(SAMPLE_AUDIO / "200" / "200036.mp3")
    run_melset("extract", "--audio", root / "audio", "--out", root / "store", "--quiet", "--workers", "2")
    return root / "store"


def test_string_ids_get_unique_keys_and_one_train_split(folders_store, tmp_path):
    exports.webdataset(Store(folders_store), tmp_path / "w", shard_size=2)
    samples = check_wds(folders_store, tmp_path / "w")
    assert {s["json"]["split"] for s in samples} == {"train"} and len(samples) == 4
    assert "blues%2Eblues%2E200010%2Emp3" not in [s["__key__"] for s in samples]
    assert "blues%2Fblues%2E200010%2Emp3" in [s["__key__"] for s in samples]
    exports.hf(Store(folders_store), tmp_path / "h")
    assert list(check_hf(folders_store, tmp_path / "h")) == ["train"]


def test_sample_key_is_injective():
    ids = ["a.b", "a%2Eb", "a/b", "a_b", "a-b", "é", "%", "%25", "a b"]
    keys = [exports.sample_key(i) for i in ids]
    assert len(set(keys)) == len(keys) and all("." not in k and "/" not in k for k in keys)
    assert exports.sample_key(2) == "000002" and exports.sample_key(1234567) == "1234567"


def test_target_folder_is_checked(sample_store, tmp_path):
    store = Store(sample_store)
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="is a file"):
        exports.webdataset(store, tmp_path / "file")
    with pytest.raises(UsageError, match="not empty and holds no melset export"):
        exports.hf(store, tmp_path / "full")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    exports.webdataset(store, tmp_path / "w")
    with pytest.raises(UsageError, match="holds a webdataset export"):
        exports.hf(store, tmp_path / "w")
    with pytest.raises(UsageError, match="inside the store"):
        exports.webdataset(store, sample_store / "x")
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(UsageError, match="--shard-size"):
            exports.webdataset(store, tmp_path / "w2", shard_size=bad)
    assert not (tmp_path / "w2").exists()
    (tmp_path / "empty").mkdir()
    exports.webdataset(store, tmp_path / "empty", shard_size=10**9)
    assert len(read_wds(tmp_path / "empty")) == len(store.ok_rows())


@pytest.mark.parametrize(
    "args, words",
    [
        (["--format", "webdataset", "--shard-size", "0"], "--shard-size"),
        (["--format", "webdataset", "--shard-size", "-5"], "--shard-size"),
        (["--format", "webdataset", "--shard-size", "x"], "shard-size"),
        (["--format", "hf", "--shard-size", "5"], "webdataset only"),
        (["--format", "parquet"], "parquet"),
    ],
)
def test_bad_export_options_are_one_sentence(sample_store, tmp_path, args, words):
    p = run_melset("export", sample_store, "--to", tmp_path / "x", *args, check=False)
    assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_hf_without_datasets_says_what_to_install(sample_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets raises ImportError
    result = CliRunner().invoke(main, ["export", str(sample_store), "--format", "hf", "--to", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert "pip install 'melset[hf]'" in result.output and not (tmp_path / "x").exists()


def test_store_without_ok_rows_is_refused_not_exported_empty(tmp_path):
    (tmp_path / "audio" / "rock").mkdir(parents=True)
    (tmp_path / "audio" / "rock" / "a.mp3").write_text("not audio")
    run_melset("extract", "--audio", tmp_path / "audio", "--out", tmp_path / "s", "--quiet", check=False)
    for fmt in ("hf", "webdataset"):
        p = run_melset("export", tmp_path / "s", "--format", fmt, "--to", tmp_path / fmt, check=False)
        assert p.returncode == 2 and "has no ok row" in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert not (tmp_path / fmt).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio", "s"]  # no work folder left behind


def test_seed_pickles_replace_an_earlier_export_and_leave_other_folders_alone(sample_store, tmp_path):
    store = Store(sample_store)
    to = tmp_path / "nb"
    exports.seed_pickles(store, to)
    ok = sorted(p.name for p in (to / "pickles").iterdir())
    assert len(ok) == len(store.ok_rows())
    stale = to / "pickles" / "999999.pickle"  # a row that was ok in an earlier export, failed now
    stale.write_bytes((to / "pickles" / ok[0]).read_bytes())
    marker = json.loads((to / exports.MARKER).read_text())  # as that earlier export recorded it
    marker["files"].append("pickles/999999.pickle")
    (to / exports.MARKER).write_text(json.dumps(_sealed(marker)))  # as melset wrote it then
    exports.seed_pickles(store, to)
    assert sorted(p.name for p in (to / "pickles").iterdir()) == ok
    (tmp_path / "notebook").mkdir()
    (tmp_path / "notebook" / "y.pickle").write_bytes(b"the user's own")
    with pytest.raises(UsageError, match="not empty and holds no melset export"):
        exports.seed_pickles(store, tmp_path / "notebook")
    assert (tmp_path / "notebook" / "y.pickle").read_bytes() == b"the user's own"
    with pytest.raises(UsageError, match="holds a seed-pickles export"):
        exports.webdataset(store, to)
