"""Multi-label genres: FMA's track.genres / track.genres_all as multi-hot labels, end to end."""

from __future__ import annotations

import ast
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import MINI_AUDIO, MINI_TRACKS, SAMPLE_AUDIO, SAMPLE_TRACKS, needs_shared, run_melset
from melset.catalog import fma
from melset.errors import MetadataError


def expected_genres(tracks_csv, kind="genres_all") -> dict[int, set[str]]:
    """Straight from the CSVs with pandas and ast: track_id -> the titles of its genres."""
    tracks = pd.read_csv(tracks_csv, index_col=0, header=[0, 1])
    genres = pd.read_csv(tracks_csv.parent / "genres.csv", index_col=0)
    title = genres["title"].to_dict()
    return {int(tid): {title[g] for g in ast.literal_eval(v)} for tid, v in tracks[("track", kind)].items()}


def stored_genres(store) -> dict[int, set[str]]:
    t = pd.read_parquet(store / "tracks.parquet")
    labels = np.load(store / "labels.npy")
    classes = json.loads((store / "classes.json").read_text())
    return {int(tid): {classes[j] for j in np.flatnonzero(row)} for tid, row in zip(t["track_id"], labels)}


@pytest.mark.parametrize("kind", ["genres", "genres_all"])
@pytest.mark.parametrize("tracks_csv", [SAMPLE_TRACKS, pytest.param(MINI_TRACKS, marks=needs_shared)])
def test_genre_labels_equal_fma_lists_for_every_track(tracks_csv, kind):
    expected = expected_genres(tracks_csv, kind)
    ids = sorted(expected)
    labels, classes = fma.genre_labels(tracks_csv, ids, kind)
    assert classes == sorted(set().union(*expected.values()))
    assert labels.dtype == np.uint8 and labels.shape == (len(ids), len(classes))
    for tid, row in zip(ids, labels):
        assert {classes[j] for j in np.flatnonzero(row)} == expected[tid], tid
    assert any(len(v) > 1 for v in expected.values()) or kind == "genres"  # the data is really multi-label


def _copy_metadata(tmp_path):
    meta = tmp_path / "fma_metadata"
    shutil.copytree(SAMPLE_TRACKS.parent, meta)
    return meta


def test_genre_id_missing_from_genres_csv_is_a_metadata_error(tmp_path):
    meta = _copy_metadata(tmp_path)
    genres = pd.read_csv(meta / "genres.csv", index_col=0)
    ids = sorted(expected_genres(SAMPLE_TRACKS))
    used = set()
    tracks = pd.read_csv(SAMPLE_TRACKS, index_col=0, header=[0, 1])
    for v in tracks[("track", "genres_all")]:
        used |= set(ast.literal_eval(v))
    dropped = min(used)
    genres.drop(index=dropped).to_csv(meta / "genres.csv")
    with pytest.raises(MetadataError, match=rf"genre id {dropped}\b.*genres.csv does not list"):
        fma.genre_labels(meta / "tracks.csv", ids, "genres_all")
    (meta / "genres.csv").unlink()
    with pytest.raises(MetadataError, match="genres.csv: no such file"):
        fma.genre_labels(meta / "tracks.csv", ids, "genres")


@pytest.fixture(scope="module")
def sample_multi(tmp_path_factory):
    out = tmp_path_factory.mktemp("multi") / "store"
    run_melset(
        "extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", out, "--subset", "large",
        "--labels", "genres_all", "--quiet", "--workers", "2",
    )  # fmt: skip
    return out


@pytest.mark.slow
def test_extract_writes_multi_hot_labels_aligned_with_tracks(sample_multi):
    assert stored_genres(sample_multi) == expected_genres(SAMPLE_TRACKS)
    manifest = json.loads((sample_multi / "manifest.json").read_text())
    assert manifest["labels"] == "genres_all" and manifest["identity"]["labels"] == "genres_all"
    assert np.load(sample_multi / "labels.npy").sum(axis=1).max() > 1


@pytest.mark.slow
@needs_shared
def test_extract_mini_genres_all_every_track(tmp_path):
    out = tmp_path / "s"
    run_melset(
        "extract", "--tracks", MINI_TRACKS, "--audio", MINI_AUDIO, "--out", out, "--subset", "large",
        "--labels", "genres_all", "--quiet", "--workers", "2",
    )  # fmt: skip
    assert stored_genres(out) == expected_genres(MINI_TRACKS)


@pytest.mark.slow
def test_resume_with_other_labels_is_refused(sample_multi):
    for kind in ("genres", "genre_top"):
        p = run_melset(
            "extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", sample_multi,
            "--subset", "large", "--labels", kind, "--quiet", check=False,
        )  # fmt: skip
        assert p.returncode == 2 and "labels" in p.stderr and "Traceback" not in p.stderr, p.stderr


@pytest.mark.slow
def test_genre_lists_refused_for_layouts_without_them(tmp_path):
    (tmp_path / "g" / "rock").mkdir(parents=True)
    (tmp_path / "g" / "rock" / "a.mp3").symlink_to(SAMPLE_AUDIO / "200" / "200010.mp3")
    p = run_melset("extract", "--audio", tmp_path / "g", "--out", tmp_path / "s", "--labels", "genres", check=False)
    assert p.returncode == 2 and "--labels genre_top" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_missing_genres_csv_from_the_command_line(tmp_path):
    meta = _copy_metadata(tmp_path)
    (meta / "genres.csv").unlink()
    p = run_melset(
        "extract", "--tracks", meta / "tracks.csv", "--audio", SAMPLE_AUDIO, "--out", tmp_path / "s",
        "--labels", "genres_all", check=False,
    )  # fmt: skip
    assert p.returncode == 2 and "genres.csv" in p.stderr and "Traceback" not in p.stderr, p.stderr


@pytest.mark.slow
def test_exports_of_a_multi_label_store_carry_every_genre(sample_multi, tmp_path):
    datasets = pytest.importorskip("datasets")
    wds = pytest.importorskip("webdataset")
    from melset import export as exports
    from melset.store import Store

    store = Store(sample_multi)
    classes = store.classes
    expected = expected_genres(SAMPLE_TRACKS)
    ids = store.tracks["track_id"].tolist()
    exports.hf(store, tmp_path / "hf")
    dd = datasets.load_from_disk(str(tmp_path / "hf"))
    seen = 0
    for ds in dd.values():
        assert ds.features["label"] == datasets.Sequence(datasets.ClassLabel(names=classes))
        for item in ds:
            assert {classes[i] for i in item["label"]} == expected[item["track_id"]]
            seen += 1
    assert seen == len(store.ok_rows())
    exports.webdataset(store, tmp_path / "w")
    samples = list(wds.WebDataset(sorted(map(str, (tmp_path / "w").glob("*.tar"))), shardshuffle=False).decode())
    assert len(samples) == seen
    for s in samples:
        meta = s["json"]
        assert set(meta["labels"]) == expected[meta["track_id"]]
        assert np.array_equal(s["npy"], store.mels[ids.index(meta["track_id"])])
