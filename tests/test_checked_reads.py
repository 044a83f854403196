"""One checked way to read a row: every consumer of a store (the three exports, MelDataset,
train, evaluate, report) reads its matrices through the store's checked reader (crc32 of the
journal, finite values). A damaged row is refused with one sentence naming the row and its
track (exit 2), or, where a consumer can go on without it (a report page), left out and
counted; it is never handed on. Damage of two kinds: bytes flipped in a row (its checksum
fails), and NaN written into a row with its journal line rewritten to match (checksums pass,
finiteness does not)."""

from __future__ import annotations

import dataclasses
import json
import pickle
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conftest import copy_tree, run_melset
from melset.errors import StoreError
from melset.store import Store
from melset.store.format import journal_owner, read_journal

import test_multilabel

KINDS = ("flip", "nan-resealed")
sample_multi = test_multilabel.sample_multi  # the fixture: the sample extracted with --labels genres_all


def _training_row(store: Path) -> int:
    """An ok, labelled row of the training split (every consumer reads it)."""
    s = Store(store)
    labelled = np.asarray(s.labels).any(axis=1)
    return next(int(r) for r in s.ok_rows() if labelled[r] and s.tracks["split"].iat[r] == "training")


def _flip(store: Path, row: int) -> None:
    """Flip the low (mantissa) byte of one float16 value of `row`: still finite, checksum fails."""
    mels = np.load(store / "mels.npy", mmap_mode="r")
    off = mels.offset + row * mels[0].nbytes + 1000
    with open(store / "mels.npy", "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0xFF]))


def _nan_resealed(store: Path, row: int) -> None:
    """Write NaN into `row` and rewrite its journal line (its crc32 and the line's own) to match,
    as format.py writes a line: only the finiteness check can tell."""
    mels = np.load(store / "mels.npy", mmap_mode="r+")
    mels[row, 3, 5] = np.nan
    mels.flush()
    crc = zlib.crc32(np.ascontiguousarray(mels[row]))
    del mels
    journal = store / "journal.jsonl"
    record = dataclasses.replace(read_journal(str(journal))[row], crc32=crc)
    lines = journal.read_bytes().splitlines(keepends=True)
    last = max(i for i, line in enumerate(lines) if json.loads(line)["row"] == row)
    owner = journal_owner(json.loads((store / "manifest.json").read_text()))  # the store's own id, as melset writes
    lines[last] = record.to_json(owner).encode() + b"\n"
    journal.write_bytes(b"".join(lines))
    assert Store(store).records[row].crc32 == crc  # the journal accepts the forged line


def _damaged(sample_store: Path, tmp_path: Path, kind: str) -> tuple[Path, int, str]:
    store = copy_tree(sample_store, tmp_path / "store")
    row = _training_row(store)
    (_flip if kind == "flip" else _nan_resealed)(store, row)
    return store, row, str(Store(store).tracks["track_id"].iat[row])


def _refused(proc, store: Path, row: int, track: str) -> None:
    """Exit 2 with the one sentence: the row, its track, what to do; never a traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") <= 2, proc.stderr
    assert f"row {row} of {store} (track {track}) is damaged" in proc.stderr, proc.stderr
    assert f"melset repair {store}" in proc.stderr


# -- the reader ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_store_reads_refuse_a_damaged_row_or_leave_it_out_when_asked(sample_store, tmp_path, kind):
    store, row, track = _damaged(sample_store, tmp_path, kind)
    s, clean = Store(store), Store(sample_store)
    ok = s.ok_rows()
    for read in (lambda: s.rows(ok), lambda: s.row(row), lambda: list(s.iter_rows(ok, chunk_rows=3))):
        with pytest.raises(StoreError, match=rf"row {row} of .* \(track {track}\) is damaged.*melset repair"):
            read()
    damaged: list[int] = []
    got = {int(r): x for rows, block in s.iter_rows(ok, chunk_rows=3, damaged=damaged) for r, x in zip(rows, block)}
    assert damaged == [row] and sorted(got) == sorted(set(ok.tolist()) - {row})
    assert all(np.array_equal(x, clean.row(r)) for r, x in got.items())
    assert s.verify() == [row]  # info --verify: finiteness too


# -- the exports ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["seed-pickles", "hf", "webdataset"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_export_refuses_a_damaged_row(sample_store, tmp_path, fmt, kind):
    if fmt != "seed-pickles":
        pytest.importorskip("datasets" if fmt == "hf" else "webdataset")
    store, row, track = _damaged(sample_store, tmp_path, kind)
    out = tmp_path / "exports" / "x"
    _refused(run_melset("export", store, "--format", fmt, "--to", out, check=False), store, row, track)
    assert not out.exists()  # an export never holds damaged data
    assert not list((tmp_path / "exports").glob(".melset*"))  # nor leaves its work folders behind


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_exports_library_calls_refuse_too(sample_store, tmp_path, kind):
    pytest.importorskip("datasets")
    from melset import export as exports

    store, row, track = _damaged(sample_store, tmp_path, kind)
    for i, fn in enumerate((exports.seed_pickles, exports.hf, exports.webdataset)):
        with pytest.raises(StoreError, match=rf"row {row} of .* \(track {track}\) is damaged"):
            fn(Store(store), tmp_path / f"out{i}")
        assert not (tmp_path / f"out{i}").exists()


@pytest.mark.slow
def test_seed_pickles_of_a_multi_label_store_carry_the_multi_hot_rows(sample_multi, tmp_path):
    from melset.export import export_name

    run_melset("export", sample_multi, "--format", "seed-pickles", "--to", tmp_path / "nb")
    with open(tmp_path / "nb" / "y.pickle", "rb") as f:
        y = pickle.load(f)
    with open(tmp_path / "nb" / "classlabels.pickle", "rb") as f:
        classes = pickle.load(f)
    s = Store(sample_multi)
    labels = np.load(sample_multi / "labels.npy")
    ids = s.tracks["track_id"].tolist()
    # every track with a genre in its genres_all, genre_top or not (track 20 has none)
    assert set(y) == {export_name(ids[r]) for r in np.flatnonzero(labels.any(axis=1))}
    assert "000020" in y and y["000020"].sum() > 1
    for r, tid in enumerate(ids):
        if export_name(tid) in y:
            assert y[export_name(tid)].dtype == np.int64 and np.array_equal(y[export_name(tid)], labels[r])
    assert list(classes) == s.classes


# -- MelDataset, train, evaluate, report -------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_dataset_never_serves_a_damaged_row(sample_store, tmp_path, kind):
    pytest.importorskip("torch")
    from melset.dataset import MelDataset

    store, row, track = _damaged(sample_store, tmp_path, kind)
    with pytest.raises(StoreError, match=rf"row {row} of .* \(track {track}\) is damaged"):
        MelDataset(store)  # verified on opening: a training run is refused before it starts
    ds, clean = MelDataset(store, verify=False), MelDataset(sample_store)
    assert list(ds.rows) == list(clean.rows)
    i = list(ds.rows).index(row)
    for served in (ds, pickle.loads(pickle.dumps(ds))):  # as a DataLoader worker gets it
        with pytest.raises(StoreError, match=rf"row {row} of .* \(track {track}\) is damaged"):
            served[i]
        for j in range(len(ds)):
            if j != i:
                assert bool((served[j][0] == clean[j][0]).all()) and served[j][1] == clean[j][1]


@pytest.fixture(scope="module")
def sample_run(sample_store, tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    run = tmp_path_factory.mktemp("run") / "run"
    run_melset("train", sample_store, "--run", run, "--epochs", "1", "--device", "cpu", "--quiet")
    return run


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_train_stops_on_a_damaged_row_before_any_weights(sample_store, tmp_path, kind):
    pytest.importorskip("torch")
    store, row, track = _damaged(sample_store, tmp_path, kind)
    run = tmp_path / "run"
    proc = run_melset("train", store, "--run", run, "--epochs", "1", "--device", "cpu", "--quiet", check=False)
    _refused(proc, store, row, track)
    assert not (run / "model.pt").exists()  # never NaN weights


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_refuses_a_damaged_row(sample_store, sample_run, tmp_path, kind):
    store, row, track = _damaged(sample_store, tmp_path, kind)
    proc = run_melset("evaluate", sample_run, "--store", store, "--split", "all", "--device", "cpu", check=False)
    _refused(proc, store, row, track)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_store_page_leaves_damaged_rows_out_and_says_how_many(sample_store, tmp_path, kind):
    from melset import report as reports

    store, row, track = _damaged(sample_store, tmp_path, kind)
    s = Store(store)
    with pytest.raises(StoreError, match=rf"row {row} of .* is damaged"):
        reports.mean_spectrograms(s)
    damaged: list[int] = []
    means, counts = reports.mean_spectrograms(s, damaged=damaged)
    clean_means, clean_counts = reports.mean_spectrograms(Store(sample_store))
    label = np.asarray(s.labels[row], dtype=np.int64)
    assert damaged == [row] and np.array_equal(counts, clean_counts - label) and np.isfinite(means).all()
    for j in np.flatnonzero(label == 0):
        assert np.array_equal(means[j], clean_means[j])
    proc = run_melset("report", store, "--html", tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text()
    assert "1 damaged row(s) left out of the means" in page and f"melset repair {store}" in page
    assert "1 damaged row(s) left out of the examples" in page  # the row is among the first of its class
    assert proc.returncode == 0


# -- random damage: correct data or StoreError, from every consumer ------------------------------------


@pytest.fixture(scope="module")
def attacked(sample_store, sample_run, tmp_path_factory):
    """A copy of the sample store to damage and restore, and what each consumer gives on the clean one."""
    from melset import export as exports
    from melset import report as reports
    from melset.dataset import MelDataset
    from melset.evaluate import evaluate

    store = copy_tree(sample_store, tmp_path_factory.mktemp("attacked") / "store")
    clean = _consumers(store, sample_run, tmp_path_factory.mktemp("clean"), exports, reports, MelDataset, evaluate)
    return store, sample_run, clean, (exports, reports, MelDataset, evaluate)


def _consumers(store, run, out, exports, reports, MelDataset, evaluate) -> dict:
    """What each consumer gives on `store`: its data, or the StoreError it raised."""

    def outcome(fn):
        try:
            return fn()
        except StoreError as exc:
            return exc

    def pickles():
        exports.seed_pickles(Store(store), out / "p")
        return {p.name: p.read_bytes() for p in sorted((out / "p" / "pickles").iterdir())}

    def shards():
        exports.webdataset(Store(store), out / "w")
        return {p.name: p.read_bytes() for p in sorted((out / "w").glob("*.tar"))}

    def dataset():
        ds = MelDataset(store)  # verifies its rows on opening, and each item as it is served
        return [outcome(lambda i=i: ds[i][0].numpy()) for i in range(len(ds))]

    def scores():
        return evaluate(str(run), str(store), split=None, device="cpu")["predictions"]

    return {
        "rows": [outcome(lambda r=r: Store(store).row(r)) for r in Store(store).ok_rows().tolist()],
        "seed-pickles": outcome(pickles),
        "webdataset": outcome(shards),
        "dataset": outcome(dataset),
        "means": outcome(lambda: reports.mean_spectrograms(Store(store))),
        "evaluate": outcome(scores),
    }


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    return a == b


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@example(flips=[(0.5, 1), (0.5, 1)])  # two flips of one byte cancel: the clean data, served
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=3))
def test_random_flips_in_rows_give_correct_data_or_a_store_error_from_every_consumer(attacked, flips):
    store, run, clean, modules = attacked
    mels = np.load(store / "mels.npy", mmap_mode="r")
    offset, row_bytes, data = mels.offset, mels[0].nbytes, mels.nbytes
    del mels
    path = store / "mels.npy"
    original = path.read_bytes()
    ok = set(Store(store).ok_rows().tolist())
    try:
        raw = bytearray(original)
        for where, mask in flips:
            raw[offset + int(where * data)] ^= mask
        _overwrite(path, bytes(raw))
        changed = {p for p in (offset + int(where * data) for where, _ in flips) if raw[p] != original[p]}
        hit_ok = {(p - offset) // row_bytes for p in changed} & ok
        event("an ok row damaged" if hit_ok else "only rows without a spectrogram damaged")
        with tempfile.TemporaryDirectory() as tmp:
            got = _consumers(store, run, Path(tmp), *modules)
        served = _served(store)
        for name, value in got.items():
            # one by one where a consumer reads rows one by one: each the clean one, or refused
            if isinstance(value, list) and name in ("rows", "dataset"):
                pairs = list(zip(value, clean[name]))
            else:
                pairs = [(value, clean[name])]
            for v, c in pairs:
                if isinstance(v, StoreError):
                    assert hit_ok and "is damaged" in str(v) and "melset repair" in str(v), (name, v)
                else:
                    assert _same(v, c), name
        if hit_ok:  # a damaged ok row is never served: refused by name, or the whole read refused
            refused = [r for r, v in zip(sorted(ok), got["rows"]) if isinstance(v, StoreError)]
            assert refused == sorted(hit_ok)
            assert all(isinstance(got[n], StoreError) for n in ("seed-pickles", "webdataset", "means"))
            assert isinstance(got["dataset"], StoreError) == bool(hit_ok & set(served))
    finally:
        _overwrite(path, original)


def _overwrite(path: Path, data: bytes) -> None:
    """In place, never truncated (a mapped file cut short would crash its reader)."""
    with open(path, "r+b") as f:
        f.write(data)


def _served(store: Path) -> list[int]:
    """The rows MelDataset serves (split None: every ok, labelled row)."""
    from melset.dataset import split_rows

    return split_rows(Store(store)).rows.tolist()


def test_repair_and_extract_heal_a_nan_row_whose_journal_line_was_forged(sample_store, tmp_path):
    """info --verify finds it, repair marks it, the next extract redoes it: the store equals a clean one."""
    from conftest import sample_extract, store_bytes

    store, row, _ = _damaged(sample_store, tmp_path, "nan-resealed")
    proc = run_melset("info", store, "--verify", "--json", check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["corrupt_rows"] == [row]
    assert f"1 damaged row(s) marked for re-extraction: {row}" in run_melset("repair", store).stdout
    run_melset(*sample_extract(store))
    assert store_bytes(store) == store_bytes(sample_store)
