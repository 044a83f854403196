"""FMA metadata: two-row header, list columns, subsets, splits, paths, and clear errors."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from conftest import HEAD_TRACKS, MINI_AUDIO, MINI_TRACKS, SAMPLE_AUDIO, SAMPLE_TRACKS, needs_shared, run_melset
from melset.catalog import fma, open_catalog
from melset.errors import MetadataError


def test_sample_tracks_parse_like_fma_utils():
    t = fma.load_tracks(SAMPLE_TRACKS)
    assert t.index.name == "track_id" and t.index.dtype == "int64"
    assert isinstance(t.columns, pd.MultiIndex) and ("track", "genre_top") in t.columns
    # list columns are real lists, parsed safely
    assert t.loc[20, ("track", "genres")] == [76, 103]
    assert t.loc[20, ("track", "genres_all")] == [10, 17, 76, 103]
    assert t.loc[200010, ("artist", "tags")] == ["cc", "rock 'n' roll"]
    # multi-line quoted bios survive
    assert "Second line" in t.loc[200010, ("artist", "bio")]
    assert str(t[("track", "date_created")].dtype).startswith("datetime64")
    assert t[("set", "subset")].dtype == fma.SUBSET_DTYPE
    assert pd.isna(t.loc[20, ("track", "genre_top")])


def test_subsets_nest_on_sample():
    t = fma.load_tracks(SAMPLE_TRACKS)
    small, medium, large = (set(fma.select(t, s).index) for s in fma.SUBSETS)
    assert small < medium <= large == set(t.index)
    assert 200036 in medium and 200036 not in small  # a medium-only track


@needs_shared
def test_real_fma_head_counts():
    t = fma.load_tracks(HEAD_TRACKS)
    assert len(t) == 682
    assert [len(fma.select(t, s)) for s in fma.SUBSETS] == [58, 194, 682]
    assert t[("set", "split")].value_counts().to_dict() == {"training": 563, "validation": 48, "test": 71}
    # the notebook's `tracks[tracks['set']['subset'] == 'small']` is the small case
    raw = pd.read_csv(HEAD_TRACKS, index_col=0, header=[0, 1])
    assert list(fma.select(t, "small").index) == list(raw[raw["set"]["subset"] == "small"].index)
    # real-world quirks: tracks without genre_top, list columns with several ids
    assert t[("track", "genre_top")].isna().sum() > 0
    assert any(len(g) > 1 for g in t[("track", "genres_all")])


@needs_shared
def test_fma_mini_catalog(fixture_json):
    cat = fma.catalog(MINI_TRACKS, MINI_AUDIO, "large")
    fixture_ids = sorted(t["track_id"] for t in fixture_json["tracks"])
    assert cat.table["track_id"].tolist() == fixture_ids
    assert cat.unlisted == ["299/299999.mp3"]
    row = cat.table.set_index("track_id").loc[200010]
    assert row["path"].endswith("fma_audio/200/200010.mp3")
    assert row["genre_top"] == "Folk" and row["subset"] == "small" and row["split"] == "training"
    assert pd.isna(cat.table.set_index("track_id").loc[20, "genre_top"])
    small = fma.catalog(MINI_TRACKS, MINI_AUDIO, "small")
    expected_small = sorted(t["track_id"] for t in fixture_json["tracks"] if t["subset"] == "small")
    assert small.table["track_id"].tolist() == expected_small


def test_audio_path_is_zero_padded():
    assert fma.audio_path("/a", 2) == "/a/000/000002.mp3"
    assert fma.audio_path("/a", 155066) == "/a/155/155066.mp3"


def _write(tmp_path, text, name="tracks.csv", encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return p


def _sample_text() -> str:
    return SAMPLE_TRACKS.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00", "not a CSV file"),
        ("track_id,genre_top,subset\n1,Rock,small\n", "wrong header"),
        ("just one line with no commas\n", "not a CSV file with FMA's two-row header"),
    ],
)
def test_malformed_tracks_csv_gets_one_sentence(tmp_path, content, message):
    p = _write(tmp_path, content)
    with pytest.raises(MetadataError) as e:
        fma.load_tracks(p)
    text = str(e.value)
    assert str(p) in text and message in text and "\n" not in text


@pytest.mark.parametrize("column", ["genre_top", "subset"])
def test_missing_required_column(tmp_path, column):
    lines = _sample_text().split("\n")
    top, sub = lines[0].split(","), lines[1].split(",")
    i = sub.index(column)
    sub[i] = column + "_renamed"
    p = _write(tmp_path, "\n".join([",".join(top), ",".join(sub), *lines[2:]]))
    with pytest.raises(MetadataError, match=rf"missing required column (track|set)\.{column}"):
        fma.load_tracks(p)


def test_bom_crlf_and_extra_columns_are_fine(tmp_path):
    import csv
    import io

    rows = list(csv.reader(io.StringIO(_sample_text())))
    rows[0].append("extra")
    rows[1].append("note")
    for r in rows[2:]:
        r.append("" if r[0] == "track_id" else "x")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    p = _write(tmp_path, "\ufeff" + buf.getvalue())
    assert b"\r\n" in p.read_bytes() and p.read_bytes().startswith(b"\xef\xbb\xbf")
    t = fma.load_tracks(p)
    ref = fma.load_tracks(SAMPLE_TRACKS)
    assert list(t.index) == list(ref.index)
    assert t[("track", "genre_top")].astype(object).equals(ref[("track", "genre_top")].astype(object))


def test_duplicate_track_ids_are_refused(tmp_path):
    lines = _sample_text().split("\n")
    header, body = lines[:3], "\n".join(lines[3:])
    p = _write(tmp_path, "\n".join(header) + "\n" + body + body)
    with pytest.raises(MetadataError, match="duplicate track_id"):
        fma.load_tracks(p)


def test_unknown_subset_value_is_refused(tmp_path):
    p = _write(tmp_path, _sample_text().replace(",training,small,", ",training,tiny,", 1))
    with pytest.raises(MetadataError, match=r"set\.subset has values \['tiny'\]"):
        fma.load_tracks(p)


def test_list_columns_never_eval(tmp_path):
    evil = "\"__import__('os').system('touch pwned')\""
    p = _write(tmp_path, _sample_text().replace(",[17],[17],", f",{evil},[17],", 1))
    with pytest.raises(MetadataError, match="is not a list literal"):
        fma.load_tracks(p)
    assert not (tmp_path / "pwned").exists()


def test_genres_csv():
    g = fma.load_genres(SAMPLE_TRACKS.parent / "genres.csv")
    assert g.loc[21, "title"] == "Hip-Hop" and g.loc[17, "title"] == "Folk"


def test_missing_audio_dir(tmp_path):
    with pytest.raises(MetadataError, match="audio folder does not exist"):
        fma.catalog(SAMPLE_TRACKS, tmp_path / "nope")


def test_sample_catalog_lists_unlisted_file():
    cat = fma.catalog(SAMPLE_TRACKS, SAMPLE_AUDIO, "large")
    assert cat.unlisted == ["299/299999.mp3"]
    assert cat.classes() == sorted(cat.classes()) and "Folk" in cat.classes()


# -- values pandas would misread -------------------------------------------------------------


def _genres(cat) -> list:
    return [g if isinstance(g, str) else None for g in cat.table["genre_top"]]


def _tiny_tracks(tmp_path, rows: list[tuple[str, str]]) -> str:
    """tracks.csv in FMA's format with (track_id, genre_top) rows, all in subset small."""
    lines = [",track,set,set", ",genre_top,subset,split", "track_id,,,"]
    lines += [f"{tid},{genre},small,training" for tid, genre in rows]
    p = tmp_path / "tracks.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize("word", ["NA", "None", "null", "nan", "NaN", "N/A", "NULL", "#N/A"])
def test_a_genre_named_like_a_missing_value_is_a_genre(tmp_path, word):
    p = _tiny_tracks(tmp_path, [("1", word), ("2", "Rock"), ("3", "")])
    (tmp_path / "a").mkdir()
    cat = fma.catalog(p, tmp_path / "a")
    assert _genres(cat) == [word, "Rock", None]  # only the empty cell is missing
    assert cat.classes() == sorted([word, "Rock"])


@pytest.mark.parametrize("word", ["NA", "None", "null", "nan"])
def test_a_manifest_label_named_like_a_missing_value_is_a_label(tmp_path, word):
    from melset.catalog import manifest as manifest_layout

    (tmp_path / "m.csv").write_text(f"path,label,split\na.wav,{word},\nb.wav,,train\n")
    cat = manifest_layout.catalog(tmp_path / "m.csv")
    splits = [s if isinstance(s, str) else None for s in cat.table["split"]]
    assert _genres(cat) == [word, None] and splits == [None, "training"]
    pd.DataFrame({"path": ["a.wav", "b.wav"], "label": [word, None]}).to_parquet(tmp_path / "m.parquet")
    cat = manifest_layout.catalog(tmp_path / "m.parquet")
    assert _genres(cat) == [word, None]


@pytest.mark.parametrize(
    "tid, found",
    [
        ("9223372036854775808", "'9223372036854775808'"),  # 2**63: beyond int64
        ("99999999999999999999999", "'99999999999999999999999'"),
        ("-5", "'-5'"),
        ("abc", "'abc'"),
        ("1.5", "'1.5'"),
        ("NA", "'NA'"),
        ("", "an empty cell"),
    ],
)
def test_track_ids_beyond_int64_or_not_numbers_are_refused_with_the_line(tmp_path, tid, found):
    p = _tiny_tracks(tmp_path, [("1", "Rock"), (tid, "Pop")])
    with pytest.raises(MetadataError) as e:
        fma.load_tracks(p)
    assert str(e.value) == (
        f"{p}: line 5: track_id must be a whole number from 0 to 9223372036854775807, found {found}"
    )


def test_the_largest_int64_track_id_is_kept_exactly(tmp_path):
    p = _tiny_tracks(tmp_path, [("9223372036854775807", "Rock"), ("7", "Pop")])
    assert list(fma.load_tracks(p).index) == [9223372036854775807, 7]


def test_duplicate_track_id_names_both_lines(tmp_path):
    p = _tiny_tracks(tmp_path, [("1", "Rock"), ("2", "Pop"), ("1", "Jazz")])
    with pytest.raises(MetadataError, match=r"duplicate track_id 1 \(track 1 on lines 4 and 6\)"):
        fma.load_tracks(p)


@pytest.mark.parametrize("spelling", ["a//b.wav", "./a/b.wav", "a/./b.wav", "a/c/../b.wav", " a/b.wav", "a\\b.wav"])
def test_one_file_listed_under_two_spellings_is_refused_with_both_lines(tmp_path, spelling):
    from melset.catalog import manifest as manifest_layout

    pd.DataFrame({"path": ["a/b.wav", "x.wav", spelling], "label": ["p", "q", "r"]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    with pytest.raises(MetadataError) as e:
        manifest_layout.catalog(tmp_path / "m.csv")
    assert str(e.value) == (
        f"{tmp_path / 'm.csv'}: line 4: path {spelling!r} is listed twice: line 2 already lists the file 'a/b.wav'"
        " (as 'a/b.wav'); list each file once"
    )


def test_an_empty_manifest_path_is_refused_with_its_line(tmp_path):
    from melset.catalog import manifest as manifest_layout

    (tmp_path / "m.csv").write_text("path,label\na.wav,x\n,y\n")
    with pytest.raises(MetadataError, match=r"line 3: the path is empty"):
        manifest_layout.catalog(tmp_path / "m.csv")


@pytest.mark.parametrize("option", ["--tracks", "--manifest"])
def test_a_named_file_that_cannot_be_read_to_its_end_is_refused_before_it_is_opened(tmp_path, option):
    """A FIFO waits for a writer for ever and a device reads without end: each is one sentence
    (exit 2) before melset opens it, as is a file too large to be metadata."""
    fifo = tmp_path / "tracks [1].csv"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as f:
        f.truncate(5 * 10**9)  # sparse: no disk used
    for path, words in ((fifo, "not a regular file"), ("/dev/zero", "not a regular file"), (huge, "5.0 GB is more")):
        proc = run_melset("extract", option, path, "--audio", SAMPLE_AUDIO, "--out", tmp_path / "s", check=False, timeout=60)
        assert proc.returncode == 2 and f"{option} {path}: {words}" in proc.stderr, proc.stderr
        with pytest.raises(MetadataError, match="not a regular file|is more than"):
            open_catalog(SAMPLE_AUDIO, **{option[2:]: path})
    assert not (tmp_path / "s").exists()


def test_genres_csv_that_is_a_fifo_is_refused(tmp_path):
    meta = tmp_path / "fma_metadata"
    meta.mkdir()
    shutil.copy(SAMPLE_TRACKS, meta / "tracks.csv")
    os.mkfifo(meta / "genres.csv")
    proc = run_melset(
        "extract", "--tracks", meta / "tracks.csv", "--audio", SAMPLE_AUDIO, "--out", tmp_path / "s",
        "--labels", "genres", "--subset", "large", check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "genres.csv" in proc.stderr and "not a regular file" in proc.stderr, proc.stderr


def test_a_collection_one_level_off_is_refused_with_the_audio_to_use(tmp_path):
    """FMA's parent folder (fma_small/ inside it) and GTZAN's (genres/ inside it): each is one
    sentence naming the --audio to use, before any store exists (it was every track missing, or a
    one-genre dataset labelled "genres", with exit 0)."""
    parent = tmp_path / "fma [data]"
    parent.mkdir()
    (parent / "fma_small").symlink_to(SAMPLE_AUDIO, target_is_directory=True)
    proc = run_melset(
        "extract", "--tracks", SAMPLE_TRACKS, "--audio", parent, "--subset", "large", "--out", tmp_path / "s", check=False
    )  # fmt: skip
    assert proc.returncode == 2 and f"pass --audio {parent / 'fma_small'}" in proc.stderr, proc.stderr
    proc = run_melset(
        "extract", "--tracks", SAMPLE_TRACKS, "--audio", parent / "fma_small" / "200", "--subset", "large",
        "--out", tmp_path / "s", check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and f"pass --audio {parent / 'fma_small'}" in proc.stderr, proc.stderr  # one too deep
    gtzan = tmp_path / "gtzan $1"
    for genre, clip in zip(("rock", "folk"), sorted(SAMPLE_AUDIO.rglob("*.mp3"))[:2]):
        (gtzan / "genres" / genre).mkdir(parents=True)
        shutil.copy(clip, gtzan / "genres" / genre / clip.name)
    proc = run_melset("extract", "--audio", gtzan, "--out", tmp_path / "s", check=False)
    assert proc.returncode == 2 and f"pass --audio {gtzan / 'genres'}" in proc.stderr, proc.stderr
    assert not (tmp_path / "s").exists()
    cat = open_catalog(gtzan / "genres")  # the folder it names works
    assert cat.classes() == ["folk", "rock"]


def test_a_limit_that_leaves_genres_out_says_so(tmp_path):
    """--limit takes the first tracks by id: on a folder per genre, the first genres only."""
    audio = tmp_path / "music"
    for genre, clip in zip(("blues", "rock", "rock"), sorted(SAMPLE_AUDIO.rglob("*.mp3"))[:3]):
        (audio / genre).mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, audio / genre / clip.name)
    assert open_catalog(audio, limit=1).source["limit_left_out_genres"] == ["rock"]
    assert "limit_left_out_genres" not in open_catalog(audio, limit=2).source
    proc = run_melset("extract", "--audio", audio, "--out", tmp_path / "s", "--limit", "1", "--workers", "1")
    assert "--limit 1 left out 1 genre(s) (the first tracks by id): rock" in proc.stdout, proc.stdout


def test_hidden_names_are_skipped_and_unlabelled_or_clashing_labels_are_named(tmp_path):
    """A folder collection as a newcomer's disk holds it: a hidden folder (it became a class
    named '.hidden'), macOS's ._ companions, a file directly in --audio (stored without a
    label, unnamed) and two folders whose names differ only in case (two classes)."""
    clips = sorted(SAMPLE_AUDIO.rglob("*.mp3"))
    audio = tmp_path / "my music"
    for rel, clip in (("jazz/a.mp3", 0), ("Jazz/b.mp3", 1), (".hidden/c.mp3", 2), ("jazz/._a.mp3", 3), ("stray.mp3", 4)):
        (audio / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clips[clip], audio / rel)
    cat = open_catalog(audio)
    assert cat.table["track_id"].tolist() == ["Jazz/b.mp3", "jazz/a.mp3", "stray.mp3"]
    assert cat.source["labels_differing_in_case"] == [["Jazz", "jazz"]]
    proc = run_melset("extract", "--audio", audio, "--out", tmp_path / "s", "--workers", "1")
    assert "files directly in --audio have no genre folder: stray.mp3" in proc.stdout, proc.stdout
    assert "labels that differ only in case: Jazz, jazz are separate classes" in proc.stdout
