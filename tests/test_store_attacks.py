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
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

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
    from melset.store.format import _sealed

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


# -- the property suite: random damage to a real store, every command ---------------------------------

FILES = ("manifest.json", "tracks.parquet", "mels.npy", "labels.npy", "classes.json", "journal.jsonl", ".store_id")
FIELDS = ("rows", "shape", "dtype", "classes", "identity", "state", "store_id", "format", "checksums", "counts")
STATUS_WORDS = ("ok", "too_short", "failed", "missing", "pending", "OK", "")


def _strategies():
    json_value = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 10**12),
        st.floats(),
        st.text(max_size=8),
        st.lists(st.integers(-2, 2000), max_size=4),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
    record = st.fixed_dictionaries(
        {
            "row": st.one_of(st.integers(-2, 20), st.text(max_size=2), st.none(), st.floats()),
            "status": st.one_of(st.sampled_from(STATUS_WORDS), st.integers()),
            "error": st.one_of(st.text(max_size=5), st.integers(), st.none()),
            "duration_s": st.one_of(st.none(), st.floats(), st.text(max_size=2), st.booleans()),
            "crc32": st.one_of(st.integers(-1, 2**33), st.text(max_size=2), st.floats()),
        }
    ).map(lambda d: json.dumps(d).encode())
    where = st.one_of(st.floats(0, 1), st.integers(0, 300))  # a fraction of the file, or a byte of its head
    return st.one_of(
        st.tuples(st.just("truncate"), st.sampled_from(FILES), where),
        st.tuples(st.just("flip"), st.sampled_from(FILES), where, st.integers(0, 7)),
        st.tuples(st.just("flip"), st.just("mels.npy"), st.floats(0.01, 1), st.integers(0, 7)),  # a row's bytes
        st.tuples(st.just("delete"), st.sampled_from(FILES)),
        st.tuples(st.just("copy-over"), st.sampled_from(FILES), st.sampled_from(FILES)),
        st.tuples(st.just("copy-aside"), st.sampled_from(FILES)),
        st.tuples(st.just("manifest"), st.sampled_from(FIELDS), json_value, st.booleans()),
        st.tuples(st.just("journal"), st.integers(0, 40), st.one_of(record, st.binary(max_size=30)), st.booleans()),
        st.tuples(
            st.just("journal-field"),
            st.integers(0, 40),
            st.sampled_from(("row", "status", "error", "duration_s", "crc32", "decoder")),
            st.one_of(json_value, st.sampled_from(STATUS_WORDS), st.floats(0, 40)),
        ),
        st.tuples(st.just("torn-line"), st.binary(min_size=1, max_size=30).filter(lambda b: b"\n" not in b)),
    )


def _at(size: int, where) -> int:
    return min(size, where) if isinstance(where, int) else int(where * size)


def _mutate(store: Path, m) -> None:
    from melset.store.format import _sealed

    kind, *args = m
    if kind in ("truncate", "flip", "delete", "copy-aside") and not (store / args[0]).exists():
        return
    if kind == "truncate":
        path = store / args[0]
        path.write_bytes(path.read_bytes()[: _at(path.stat().st_size, args[1])])
    elif kind == "flip":
        path = store / args[0]
        data = bytearray(path.read_bytes())
        if data:
            i = min(_at(len(data), args[1]), len(data) - 1)
            data[i] ^= 1 << args[2]
            path.write_bytes(bytes(data))
    elif kind == "delete":
        (store / args[0]).unlink()
    elif kind == "copy-over":
        if (store / args[0]).exists() and args[0] != args[1]:
            shutil.copyfile(store / args[0], store / args[1])
    elif kind == "copy-aside":
        shutil.copyfile(store / args[0], store / f"copy of {args[0]}")
    elif kind == "manifest":
        field, value, reseal = args
        try:
            manifest = json.loads((store / "manifest.json").read_text())
            manifest[field] = value
        except (ValueError, TypeError, OSError):
            return
        (store / "manifest.json").write_text(json.dumps(_sealed(manifest) if reseal else manifest))
    elif kind == "journal":
        index, line, insert = args
        path = store / "journal.jsonl"
        if path.exists():
            lines = path.read_bytes().splitlines(keepends=True)
            i = index % (len(lines) + 1)
            lines[i : i if insert else i + 1] = [line.replace(b"\n", b" ") + b"\n"]
            path.write_bytes(b"".join(lines))
    elif kind == "journal-field":  # a line edited in place, the rest of it (its checksum too) kept
        index, field, value = args
        path = store / "journal.jsonl"
        lines = path.read_bytes().splitlines(keepends=True) if path.exists() else []
        if lines:
            i = index % len(lines)
            try:
                record = json.loads(lines[i])
                record[field] = value
            except (ValueError, TypeError):
                return
            lines[i] = json.dumps(record, separators=(",", ":")).encode() + b"\n"
            path.write_bytes(b"".join(lines))
    elif kind == "torn-line" and (store / "journal.jsonl").exists():
        with open(store / "journal.jsonl", "ab") as f:
            f.write(args[0])


@pytest.fixture(scope="module")
def clean_export(sample_store, tmp_path_factory) -> dict[str, np.ndarray]:
    from melset.export import seed_pickles

    to = tmp_path_factory.mktemp("clean-export")
    seed_pickles(Store(sample_store), to)
    return {p.name: np.load(p, allow_pickle=True) for p in (to / "pickles").iterdir()}


def _cli(*args):
    from click.testing import CliRunner

    from melset.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    # an exception that is not a deliberate exit is a traceback a user would have seen
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    assert "Traceback" not in result.stderr, result.stderr
    if result.exit_code == 2:
        assert result.stderr.startswith("melset: error: ") and result.stderr.count("\n") <= 2, result.stderr
    return result


@pytest.fixture(scope="module")
def clean(sample_store) -> tuple[dict[str, bytes], dict]:
    store = Store(sample_store)
    return store_bytes(sample_store), store.describe(), store.tracks["track_id"][store.ok_rows()[0]]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutations=st.lists(_strategies(), min_size=1, max_size=3))
# what the suite found while it was written: a refused resume that had already resized
# mels.npy, and an edited duration that a journal line without its own checksum let through
@example(mutations=[("truncate", "mels.npy", 0.5), ("flip", "journal.jsonl", 0.0, 0)])
@example(mutations=[("journal-field", 9, "duration_s", 31.0)])
@example(mutations=[("delete", "manifest.json")])
@example(mutations=[("manifest", "rows", 99, True)])
@example(mutations=[("manifest", "store_id", "\x80", True)])
def test_any_damage_to_a_store_ends_in_correct_data_or_one_sentence(sample_store, clean, clean_export, mutations):
    import tempfile

    clean_bytes, clean_report, ok_track = clean
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = copy_tree(sample_store, tmp / "store")
        (store / "notes.txt").write_text("the user's own file")
        for m in mutations:
            _mutate(store, m)
        had = {p.name for p in store.iterdir()} - {".lock"}
        before = {p.name: p.read_bytes() for p in store.iterdir() if p.name not in (".lock", "journal.jsonl")}

        r = _cli("info", store, "--json")
        event(f"info exit {r.exit_code}")
        assert r.exit_code in (0, 2)
        if r.exit_code == 0:
            report = json.loads(r.stdout)
            assert report["counts"] == clean_report["counts"] and report["classes"] == clean_report["classes"]
        r = _cli("info", store, "--verify", "--json")
        event(f"verify exit {r.exit_code}")
        assert r.exit_code in (0, 1, 2)
        if r.exit_code != 2:
            assert bool(json.loads(r.stdout)["corrupt_rows"]) == (r.exit_code == 1)
        r = _cli("show", store, "--track", ok_track, "--png", tmp / "x.png")
        assert r.exit_code in (0, 2) and (r.exit_code == 0) == (tmp / "x.png").exists()
        r = _cli("export", store, "--format", "seed-pickles", "--to", tmp / "export")
        event(f"export exit {r.exit_code}")
        assert r.exit_code in (0, 2)
        if r.exit_code == 0:  # every pickle served is the clean one: no NaN, no damaged row
            got = {p.name: np.load(p, allow_pickle=True) for p in (tmp / "export" / "pickles").iterdir()}
            assert got.keys() == clean_export.keys()
            assert all(np.array_equal(got[k], clean_export[k]) for k in got)
        assert {p.name: p.read_bytes() for p in store.iterdir() if p.name in before} == before  # readers write nothing

        r = _cli("repair", store)
        event(f"repair exit {r.exit_code}")
        assert r.exit_code in (0, 2)
        if r.exit_code == 0:
            assert _cli("info", store, "--verify").exit_code in (0, 2)  # repaired: no damaged row left
        before = {p.name: p.read_bytes() for p in store.iterdir() if p.name not in (".lock", "journal.jsonl")}

        r = _cli(*_extract_args(store), "--workers", "1")
        event(f"extract exit {r.exit_code}")
        assert r.exit_code in (0, 2), r.stdout
        if r.exit_code == 0:
            assert store_bytes(store) == clean_bytes
            assert _cli("info", store, "--verify").exit_code == 0
        else:  # refused: the store is as it was
            assert {p.name: p.read_bytes() for p in store.iterdir() if p.name in before} == before
        assert had <= {p.name for p in store.iterdir()}  # never a wipe
        assert (store / "notes.txt").read_text() == "the user's own file"


def _store_of_another_recipe(tmp_path) -> Path:
    """The shipped sample extracted with another --fmax: same rows, same shape, other bytes."""
    other = tmp_path / "other"
    run_melset(*_extract_args(other), "--fmax", "8000", "--workers", "2")
    return other


def test_a_journal_and_matrices_copied_from_another_store_are_refused_then_rebuilt(sample_store, tmp_path):
    """Journal lines carry their store's store_id: another store's rows (another recipe) copied
    in are refused by info --verify and by a resume, and repair + extract rebuild this store's."""
    store = copy_tree(sample_store, tmp_path / "store")
    other = _store_of_another_recipe(tmp_path)
    assert (other / "mels.npy").read_bytes() != (store / "mels.npy").read_bytes()
    for name in ("mels.npy", "journal.jsonl"):
        shutil.copyfile(other / name, store / name)
    for command in (("info", store, "--verify"), _extract_args(store)):
        proc = run_melset(*command, check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "belongs to another store" in proc.stderr and f"melset repair {store}" in proc.stderr
    proc = run_melset("export", store, "--format", "seed-pickles", "--to", tmp_path / "p", check=False)
    assert proc.returncode == 2 and "belongs to another store" in proc.stderr
    assert "marked for re-extraction" in run_melset("repair", store).stdout
    run_melset(*_extract_args(store))
    assert store_bytes(store) == store_bytes(sample_store)
    assert run_melset("info", store, "--verify").returncode == 0


def _as_killed(store: Path) -> None:
    """The store as a run killed after its first commits leaves it: state running."""
    from melset.store.format import RUNNING, write_manifest

    manifest = json.loads((store / "manifest.json").read_text())
    write_manifest(str(store), {**manifest, "state": RUNNING})


def _edit_genre(store: Path, row: int, genre: str) -> None:
    table = pd.read_parquet(store / "tracks.parquet")
    table.loc[row, "genre_top"] = genre
    table.to_parquet(store / "tracks.parquet", index=False)


def test_an_edited_track_list_of_a_killed_store_is_refused_and_resume_rewrites_it(sample_store, tmp_path):
    store = copy_tree(sample_store, tmp_path / "store")
    _as_killed(store)
    row = int(Store(store).ok_rows()[0])
    _edit_genre(store, row, "Polka")
    with pytest.raises(Exception, match="lists other tracks than the store was made with"):
        Store(store)
    for command in (
        ("info", store),
        ("export", store, "--format", "webdataset", "--to", tmp_path / "w"),
        ("export", store, "--format", "seed-pickles", "--to", tmp_path / "p"),
    ):
        proc = run_melset(*command, check=False)
        assert proc.returncode == 2 and "lists other tracks" in proc.stderr, proc.stderr
    assert not (tmp_path / "w").exists() and not (tmp_path / "p").exists()
    run_melset(*_extract_args(store))
    assert Store(store).tracks["genre_top"][row] != "Polka"
    assert store_bytes(store) == store_bytes(sample_store)


def test_repair_does_not_seal_an_edited_track_list(sample_store, tmp_path):
    """repair rewrites tracks.parquet from the one on disk: an edited one must not get a new checksum."""
    store = copy_tree(sample_store, tmp_path / "store")
    row = int(Store(store).ok_rows()[0])
    _corrupt_row(store, int(Store(store).ok_rows()[1]))
    _edit_genre(store, row, "Polka")
    run_melset("repair", store)
    with pytest.raises(Exception, match="lists other tracks"):
        Store(store)
    run_melset(*_extract_args(store))
    assert Store(store).tracks["genre_top"][row] != "Polka"
    assert store_bytes(store) == store_bytes(sample_store)


@pytest.mark.parametrize("name", ["manifest.json", "mels.npy", "labels.npy", "classes.json", "tracks.parquet", "journal.jsonl"])
def test_a_fifo_or_a_device_in_place_of_a_store_file_is_refused_not_read(sample_store, tmp_path, name):
    """A FIFO waited for a writer for ever and a link to /dev/zero read without end: every
    reader (info, a resume, an export) refuses it in one sentence instead."""
    import os

    for kind in ("fifo", "device"):
        store = copy_tree(sample_store, tmp_path / kind)
        (store / name).unlink()
        os.mkfifo(store / name) if kind == "fifo" else (store / name).symlink_to("/dev/zero")
        for command in (("info", store), ("export", store, "--format", "seed-pickles", "--to", tmp_path / f"p-{kind}")):
            proc = run_melset(*command, check=False, timeout=60)
            assert proc.returncode == 2 and f"{store / name} is not a regular file" in proc.stderr, proc.stderr
        proc = run_melset(*_extract_args(store), check=False, timeout=60)
        if name == "tracks.parquet":  # a resume writes it anew from the catalog: healed, never read
            assert proc.returncode == 0 and store_bytes(store) == store_bytes(sample_store)
        else:
            assert proc.returncode == 2 and f"{store / name} is not a regular file" in proc.stderr, proc.stderr
