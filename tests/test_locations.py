"""Audio where it lives: FMA's zip archives read in place, FMA's checksums, and fsspec URLs
(an S3 server on 127.0.0.1). Each store is compared byte for byte with the same run over
the unpacked, local files."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from conftest import (
    SAMPLE_AUDIO,
    SAMPLE_TRACKS,
    fma_metadata_zip,
    fma_zip,
    needs_s3,
    run_melset,
    sample_extract,
)
from melset.errors import MelsetError, MetadataError, MissingDependency, UsageError
from melset.location import ARCHIVE, FOLDER, URL, Place, open_place, parse_storage_options, read_checksums
from melset.vocab import ERROR, PATH, STATUS

pytestmark = pytest.mark.slow

FLIPPED = "200/200010.mp3"  # a good 30 s clip of the sample


def _extract(audio, out, *extra) -> list:
    """`melset extract` of the shipped sample's tracks.csv (subset large) over `audio`."""
    return ["extract", "--tracks", SAMPLE_TRACKS, "--audio", audio, "--subset", "large", "--out", out, *extra]


def _same_rows(store: Path, reference: Path) -> None:
    """Same matrices and labels; same statuses, and the same reasons but for the file's own name."""
    for name in ("mels.npy", "labels.npy", "classes.json"):
        assert (store / name).read_bytes() == (reference / name).read_bytes(), name
    a, b = pd.read_parquet(store / "tracks.parquet"), pd.read_parquet(reference / "tracks.parquet")
    assert a[STATUS].tolist() == b[STATUS].tolist()
    for path_a, err_a, path_b, err_b in zip(a[PATH], a[ERROR], b[PATH], b[ERROR]):
        assert err_a.replace(path_a, "FILE") == err_b.replace(path_b, "FILE")


# -- zip archives in place --------------------------------------------------------------------


def test_fma_zips_in_place_give_the_unpacked_store(tmp_path, sample_store):
    audio = fma_zip(tmp_path / "fma_large.zip")
    meta = fma_metadata_zip(tmp_path / "fma_metadata.zip")
    out = tmp_path / "store"
    proc = run_melset("extract", "--tracks", meta, "--audio", audio, "--subset", "large", "--workers", "2", "--out", out)
    _same_rows(out, sample_store)
    paths = pd.read_parquet(out / "tracks.parquet")[PATH].tolist()
    # the archive's top folder fma_small/ is the collection's root; each path opens with fsspec
    assert f"zip://fma_small/{FLIPPED}::{audio}" in paths
    source = json.loads((out / "manifest.json").read_text())["source"]
    assert source["audio"] == f"zip://fma_small::{audio}"
    assert source["tracks"] == f"zip://fma_metadata/tracks.csv::{meta}"
    assert source["n_genres"] > 100  # genres.csv read from the same archive
    assert "checksums: 14 of 16 tracks' files checked (SHA-1)" in proc.stdout
    assert "0 did not match" in proc.stdout


def test_a_run_resumes_whether_the_audio_was_zipped_or_unpacked(tmp_path):
    audio = fma_zip(tmp_path / "fma_large.zip")
    out = tmp_path / "store"
    run_melset(*sample_extract(out, "--workers", "2", "--limit", "9"))
    before = (out / "mels.npy").read_bytes()
    proc = run_melset("extract", "--tracks", SAMPLE_TRACKS, "--audio", audio, "--subset", "large", "--limit", "9",
                      "--quiet", "--out", out)
    assert "0 processed" in proc.stdout and "9 already done" in proc.stdout
    assert (out / "mels.npy").read_bytes() == before


def test_a_flipped_bit_in_a_member_fails_with_the_checksum_named(tmp_path, sample_store):
    audio = fma_zip(tmp_path / "fma_large.zip", flip=FLIPPED)
    out = tmp_path / "store"
    proc = run_melset(*_extract(audio, out, "--workers", "2"))
    rows = pd.read_parquet(out / "tracks.parquet").set_index("track_id")
    reason = rows.loc[200010, ERROR]
    assert rows.loc[200010, STATUS] == "failed"
    assert reason.startswith("checksum mismatch") and f"zip://fma_small/checksums::{audio}" in reason
    assert "1 did not match" in proc.stdout
    # the other rows are those of the unpacked run
    ok = pd.read_parquet(sample_store / "tracks.parquet").set_index("track_id")[STATUS]
    assert (rows[STATUS].drop(200010) == ok.drop(200010)).all()


def test_checksums_name_a_corrupt_local_file_too(tmp_path):
    audio = tmp_path / "fma_audio"
    shutil.copytree(SAMPLE_AUDIO, audio)
    good = (audio / FLIPPED).read_bytes()
    sums = tmp_path / "sums.sha1"
    sums.write_text(f"{hashlib.sha1(good).hexdigest()}  {FLIPPED}\n")
    data = bytearray(good)
    data[len(data) // 2] ^= 0x01
    (audio / FLIPPED).write_bytes(bytes(data))
    out = tmp_path / "store"
    proc = run_melset("extract", "--tracks", SAMPLE_TRACKS, "--audio", audio, "--subset", "large",
                      "--checksums", sums, "--out", out, "--limit", "4")
    rows = pd.read_parquet(out / "tracks.parquet").set_index("track_id")
    assert rows.loc[200010, STATUS] == "failed" and str(sums) in rows.loc[200010, ERROR]
    assert "1 of 4 tracks' files checked" in proc.stdout and "3 not listed there" in proc.stdout
    # without the checksum the corrupt MP3 decodes to a plausible, wrong spectrogram
    (audio / FLIPPED).write_bytes(bytes(data))
    out2 = tmp_path / "unchecked"
    run_melset("extract", "--tracks", SAMPLE_TRACKS, "--audio", audio, "--subset", "large", "--out", out2, "--quiet",
               "--limit", "4")
    assert pd.read_parquet(out2 / "tracks.parquet").set_index("track_id").loc[200010, STATUS] == "ok"


def test_a_damaged_archive_member_is_a_failed_row_not_a_crash(tmp_path):
    audio = fma_zip(tmp_path / "a.zip", compression=zipfile.ZIP_STORED)
    with zipfile.ZipFile(audio) as z:
        info = z.getinfo(f"fma_small/{FLIPPED}")
    raw = bytearray(audio.read_bytes())
    raw[info.header_offset + 30 + len(info.filename) + 5000] ^= 0xFF  # inside the member's data
    audio.write_bytes(bytes(raw))
    out = tmp_path / "store"
    proc = run_melset("extract", "--tracks", SAMPLE_TRACKS, "--audio", audio, "--subset", "large", "--out", out,
                      "--quiet", "--limit", "4")
    rows = pd.read_parquet(out / "tracks.parquet").set_index("track_id")
    # the checksum names it first; zip's own CRC-32 would too
    assert rows.loc[200010, STATUS] == "failed", rows.loc[200010, ERROR]
    assert proc.returncode == 0


def test_zip_crc_catches_a_damaged_member_without_checksums(tmp_path):
    from melset.location import read_bytes
    from melset.location.remote import FetchError

    audio = tmp_path / "plain.zip"
    with zipfile.ZipFile(audio, "w", compression=zipfile.ZIP_STORED) as z:
        z.write(SAMPLE_AUDIO / FLIPPED, "x/a.mp3")
    with zipfile.ZipFile(audio) as z:
        info = z.getinfo("x/a.mp3")
    raw = bytearray(audio.read_bytes())
    raw[info.header_offset + 30 + len(info.filename) + 5000] ^= 0xFF
    audio.write_bytes(bytes(raw))
    with pytest.raises(FetchError, match="damaged in the zip archive"):
        read_bytes(f"zip://x/a.mp3::{audio}", {})


@pytest.mark.parametrize(
    "content, words",
    [
        (b"not a checksum\n", "line 1 is not"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"# only a comment\n\n", "lists no checksum"),
    ],
)
def test_a_bad_checksums_file_is_one_sentence(tmp_path, content, words):
    sums = tmp_path / "checksums"
    sums.write_bytes(content)
    proc = run_melset(*sample_extract(tmp_path / "s"), "--checksums", sums, check=False)
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr
    assert str(sums) in proc.stderr


def test_checksums_lines_in_sha1sum_format():
    sums = read_checksums(b"# FMA\n" + b"a" * 40 + b"  000/000002.mp3\n" + b"B" * 40 + b" *./000/000005.mp3\n", "c")
    assert sums.sha1 == {"000/000002.mp3": "a" * 40, "000/000005.mp3": "b" * 40}


def test_places_and_locators(tmp_path):
    audio = fma_zip(tmp_path / "fma_small.zip")
    place = open_place(audio)
    assert (place.kind, place.root, place.archive) == (ARCHIVE, "fma_small", str(audio))
    loc = place.locator("200/200010.mp3")
    assert loc == f"zip://fma_small/200/200010.mp3::{audio}" and place.relative(loc) == "200/200010.mp3"
    assert "checksums" in place.files() and "200/200010.mp3" in place.files()
    folder = open_place(SAMPLE_AUDIO)
    assert folder.kind == FOLDER and folder.relative(folder.locator("200/200010.mp3")) == "200/200010.mp3"
    url = Place(URL, "s3://b/fma")
    assert url.relative(url.locator("000/000002.mp3")) == "000/000002.mp3" and url.relative("s3://b/other/x") is None
    # a zip:// URL naming a folder inside the archive
    inner = open_place(f"zip://fma_small::{audio}")
    assert inner == place


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p.write_bytes(b"PK\x03\x04 not really"), "damaged or truncated zip archive"),
        (lambda p: p.write_text("hello"), "damaged or truncated zip archive"),
    ],
)
def test_a_file_that_is_no_archive_is_refused(tmp_path, make, words):
    bad = tmp_path / "fma_small.zip"
    make(bad)
    proc = run_melset(*_extract(bad, tmp_path / "s"), check=False)
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr


def test_a_zip_url_naming_a_folder_the_archive_lacks(tmp_path):
    audio = fma_zip(tmp_path / "fma_small.zip")
    with pytest.raises(MetadataError, match="no folder nope/"):
        open_place(f"zip://nope::{audio}")


def test_tracks_zip_without_tracks_csv(tmp_path):
    meta = tmp_path / "fma_metadata.zip"
    with zipfile.ZipFile(meta, "w") as z:
        z.writestr("fma_metadata/other.csv", "x")
    proc = run_melset("extract", "--tracks", meta, "--audio", SAMPLE_AUDIO, "--out", tmp_path / "s", check=False)
    assert proc.returncode == 2 and "holds no tracks.csv" in proc.stderr


def test_an_archive_that_changed_is_not_resumed_into_a_mix(tmp_path):
    audio = fma_zip(tmp_path / "fma_large.zip")
    out = tmp_path / "store"
    # the first three tracks by id: two listed without a file, then the one whose bytes change
    args = ["extract", "--tracks", SAMPLE_TRACKS, "--audio", audio, "--subset", "large", "--quiet", "--out", out,
            "--limit", "3"]
    run_melset(*args)
    fma_zip(audio, flip=FLIPPED)  # the same names, one member's bytes changed
    proc = run_melset(*args, check=False)
    assert proc.returncode == 2 and "changed since" in proc.stderr and "--overwrite" in proc.stderr


# -- storage options --------------------------------------------------------------------------


def test_storage_options_parse_json_values():
    assert parse_storage_options(["anon=true", "endpoint_url=http://127.0.0.1:9", "n=3", 'k={"a": 1}']) == {
        "anon": True,
        "endpoint_url": "http://127.0.0.1:9",
        "n": 3,
        "k": {"a": 1},
    }
    for bad in ("novalue", "=x", "a b=1"):
        with pytest.raises(UsageError, match="KEY=VALUE"):
            parse_storage_options([bad])


def test_a_scheme_without_its_backend_names_the_extra():
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    with pytest.raises(MissingDependency, match=r"melset\[gcs\]"):
        open_place("gs://bucket/fma_small")


def test_out_at_a_url_is_refused_with_the_export_to_use(tmp_path):
    proc = run_melset(*sample_extract("s3://bucket/store"), check=False)
    assert proc.returncode == 2 and "melset export" in proc.stderr and not Path("s3:").exists()


# -- S3 (moto's server on 127.0.0.1) ------------------------------------------------------------


@needs_s3
def test_audio_and_tracks_from_s3_give_the_local_store(tmp_path, s3, sample_store):
    s3.upload_folder(str(SAMPLE_AUDIO), "music", "fma_audio")
    s3.upload_folder(str(SAMPLE_TRACKS.parent), "music", "fma_metadata")
    out = tmp_path / "store"
    proc = run_melset("extract", "--tracks", "s3://music/fma_metadata/tracks.csv", "--audio", "s3://music/fma_audio",
                      "--subset", "large", "--workers", "2", "--out", out)
    _same_rows(out, sample_store)
    assert "s3://music/fma_audio/200/200010.mp3" in pd.read_parquet(out / "tracks.parquet")[PATH].tolist()
    assert "unlisted (1)" in proc.stdout  # 299/299999.mp3, from the bucket's listing
    # resuming from the local folder: the same tracks, relative to their root
    again = run_melset(*sample_extract(out))
    assert "16 already done" in again.stdout


@needs_s3
def test_a_zip_in_a_bucket_is_read_in_place(tmp_path, s3, sample_store):
    audio = fma_zip(tmp_path / "fma_large.zip")
    client = s3.client()
    client.create_bucket(Bucket="music")
    client.upload_file(str(audio), "music", "fma_large.zip")
    out = tmp_path / "store"
    run_melset("extract", "--tracks", SAMPLE_TRACKS, "--audio", "s3://music/fma_large.zip", "--subset", "large",
               "--quiet", "--out", out)
    _same_rows(out, sample_store)


@needs_s3
def test_a_manifest_at_a_url_with_relative_paths_and_urls(tmp_path, s3):
    s3.upload_folder(str(SAMPLE_AUDIO), "music", "clips")
    rows = "path,label\n200/200010.mp3,Folk\ns3://music/clips/200/200023.mp3,Classical\n200/nothere.mp3,Folk\n"
    client = s3.client()
    client.put_object(Bucket="music", Key="clips/manifest.csv", Body=rows.encode())
    out = tmp_path / "store"
    proc = run_melset("extract", "--manifest", "s3://music/clips/manifest.csv", "--audio", "s3://music/clips",
                      "--out", out, "--quiet", check=False)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_parquet(out / "tracks.parquet")
    assert table[STATUS].tolist() == ["ok", "missing", "ok"]  # track_ids sort: relative paths, then the URL
    assert json.loads((out / "manifest.json").read_text())["source"]["manifest"] == "s3://music/clips/manifest.csv"


@needs_s3
def test_a_changed_object_is_noticed_on_resume(tmp_path, s3):
    s3.upload_folder(str(SAMPLE_AUDIO), "music", "fma_audio")
    out = tmp_path / "store"
    args = ["extract", "--tracks", SAMPLE_TRACKS, "--audio", "s3://music/fma_audio", "--subset", "large", "--quiet",
            "--out", out, "--limit", "3"]
    run_melset(*args)
    s3.client().put_object(Bucket="music", Key=f"fma_audio/{FLIPPED}", Body=b"replaced")
    proc = run_melset(*args, check=False)
    assert proc.returncode == 2 and "changed since" in proc.stderr


@needs_s3
@pytest.mark.parametrize(
    "audio, env, words",
    [
        ("s3://nobucket/fma_audio", {}, "no such bucket or folder"),
        ("s3://music/nothing-here", {}, "no such bucket or folder"),
        ("s3://music/fma_audio", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "does not answer"),
        (
            "s3://music/fma_audio",
            {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
             "AWS_CONFIG_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"},
            "no credentials",
        ),
    ],
)
def test_storage_failures_are_one_sentence_before_work(tmp_path, s3, audio, env, words):
    import os

    s3.upload_folder(str(SAMPLE_AUDIO), "music", "fma_audio")
    run_env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    proc = run_melset(*_extract(audio, tmp_path / "s"), check=False, env=run_env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr and audio in proc.stderr
    assert not (tmp_path / "s").exists()


@needs_s3
def test_a_bad_storage_option_is_one_sentence(tmp_path, s3):
    s3.upload_folder(str(SAMPLE_AUDIO), "music", "fma_audio")
    for option, words in (("nonsense", "KEY=VALUE"), ("no_such_option=1", "--storage-option this filesystem does not take")):
        proc = run_melset(*_extract("s3://music/fma_audio", tmp_path / "s", "--storage-option", option), check=False,
                          timeout=120)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_melset_errors_are_the_family():
    assert issubclass(MissingDependency, MelsetError) and issubclass(MetadataError, MelsetError)


# -- range requests ------------------------------------------------------------------------------


def _long_clip(tmp_path, seconds: float = 70.0) -> Path:
    """A long stereo WAV of real music (over WHOLE_BELOW: read by ranges)."""
    from conftest import write_audio

    return write_audio(tmp_path / "long.wav", seconds=seconds, rate=44100, channels=2)


@needs_s3
def test_a_long_object_is_read_by_ranges_to_the_same_matrix(tmp_path, s3, monkeypatch):
    import numpy as np

    from melset.location import Fetch, remote
    from melset.recipe import Recipe
    from melset.track import process

    clip = _long_clip(tmp_path)
    client = s3.client()
    client.create_bucket(Bucket="music")
    client.upload_file(str(clip), "music", "long.wav")
    fetched = []
    real = remote.read_range
    monkeypatch.setattr(remote, "read_range", lambda *a: fetched.append(len(b := real(*a))) or b)
    recipe = Recipe()
    size = clip.stat().st_size
    ranged = process(Fetch("s3://music/long.wav", {}, None, "", size), recipe)
    local = process(str(clip), recipe)
    assert ranged.status == local.status == "ok" and np.array_equal(ranged.mel, local.mel)
    assert ranged.duration_s == local.duration_s
    # the recipe keeps ~24 s of 70 s: well under half the object travels
    assert 0 < sum(fetched) < size / 2, (sum(fetched), size)


def test_a_range_request_that_fails_is_named(tmp_path, monkeypatch):
    from melset.location import Fetch, remote
    from melset.recipe import Recipe
    from melset.track import process

    clip = _long_clip(tmp_path)
    data = clip.read_bytes()

    def flaky(url, options, start, end):
        if start > 1 << 20:
            raise remote.FetchError("the storage does not answer (read timeout)")
        return data[start:end]

    monkeypatch.setattr(remote, "read_range", flaky)
    result = process(Fetch("s3://music/long.wav", {}, None, "", len(data)), Recipe())
    assert result.status == "failed" and "does not answer" in result.error


# -- reading ahead -------------------------------------------------------------------------------


def test_objects_at_urls_are_read_ahead_by_the_driver(tmp_path):
    """fsspec's memory:// filesystem lives in one process: the driver's. A worker that read the
    file itself would find nothing; read ahead, every row is the local one's."""
    import fsspec
    import numpy as np

    from melset.engines.local import LocalEngine
    from melset.location import Fetch
    from melset.recipe import Recipe
    from melset.track import process

    fs = fsspec.filesystem("memory")
    clips = ["200/200010.mp3", "200/200023.mp3", "200/200036.mp3"]
    for rel in clips:
        fs.pipe(f"/prefetch/{rel}", (SAMPLE_AUDIO / rel).read_bytes())
    tasks = [(i, Fetch(f"memory://prefetch/{rel}", {})) for i, rel in enumerate(clips)]
    tasks.append((3, Fetch("memory://prefetch/nothere.mp3", {})))
    recipe = Recipe()
    with LocalEngine(workers=2) as engine:
        done = {row: result for row, result, _ in engine.run(tasks, recipe)}
    for i, rel in enumerate(clips):
        assert done[i].status == "ok", done[i].error
        assert np.array_equal(done[i].mel, process(str(SAMPLE_AUDIO / rel), recipe).mel)
    assert done[3].status == "missing" and "memory://prefetch/nothere.mp3" in done[3].error


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_members_of_every_compression_and_zip64_read_as_the_file(tmp_path, method):
    from melset.location import read_bytes

    data = (SAMPLE_AUDIO / FLIPPED).read_bytes()
    audio = tmp_path / "a.zip"
    with zipfile.ZipFile(audio, "w", compression=method) as z:
        with z.open("fma_small/200/200010.mp3", "w", force_zip64=True) as f:  # zip64 extra fields
            f.write(data)
    raw, name = audio.read_bytes(), b"fma_small/200/200010.mp3"
    assert raw[30 + len(name) : 32 + len(name)] == b"\x01\x00"  # the local header's zip64 extra field
    place = open_place(audio)
    assert place.root == "fma_small" and read_bytes(place.locator(FLIPPED), {}) == data


# -- archives and checksums that cannot be used as they are ---------------------------------------


def _zip_with(path: Path, members: list[tuple[str, bytes]], encrypted: bool = False, external_attr: int = 0) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = external_attr or info.external_attr
            z.writestr(info, data)
    if encrypted:  # the "encrypted" bit in the local and central headers (zipfile cannot write one)
        raw = bytearray(path.read_bytes())
        for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            i = raw.find(sig)
            raw[i + at] |= 0x1
        path.write_bytes(bytes(raw))
    return path


def test_an_encrypted_or_symlinked_member_is_a_failed_row_with_its_reason(tmp_path):
    import stat as st

    from melset.location import read_bytes
    from melset.location.remote import FetchError

    clip = (SAMPLE_AUDIO / FLIPPED).read_bytes()
    enc = _zip_with(tmp_path / "enc.zip", [("a/x.mp3", clip)], encrypted=True)
    with pytest.raises(FetchError, match="encrypted in the zip archive"):
        read_bytes(f"zip://a/x.mp3::{enc}", {})
    link = _zip_with(tmp_path / "link.zip", [("a/x.mp3", b"y.mp3")], external_attr=(st.S_IFLNK | 0o777) << 16)
    with pytest.raises(FetchError, match="symbolic link in the zip archive"):
        read_bytes(f"zip://a/x.mp3::{link}", {})


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: zipfile.ZipFile(p, "w").close(), "holds no files"),
        (lambda p: _zip_with(p, [("fma_small/200/200010.mp3", b"1"), ("fma_small/200/200010.mp3", b"2")]),
         "two members named fma_small/200/200010.mp3"),
        (lambda p: p.write_bytes(fma_zip(p.with_suffix(".full.zip")).read_bytes()[:-10]), "damaged or truncated"),
        (lambda p: _zip_with(p, [("/fma_small/200/200010.mp3", b"1")]), "absolute or '..' path"),
        (lambda p: _zip_with(p, [("fma_small/../200/200010.mp3", b"1")]), "absolute or '..' path"),
        (lambda p: _zip_with(p, [("inner/fma_small.zip", b"PK")]), "holds only other zip archives"),
    ],
)
def test_an_archive_that_cannot_be_used_as_it_is_is_one_sentence(tmp_path, make, words):
    bad = tmp_path / "fma_small.zip"
    make(bad)
    with pytest.raises(MetadataError, match=words):
        open_place(bad)


def test_checksums_that_list_none_of_the_files_or_a_file_twice_are_refused(tmp_path):
    digest = hashlib.sha1(b"x").hexdigest()
    absolute = tmp_path / "abs.sha1"
    absolute.write_text(f"{digest}  {SAMPLE_AUDIO / FLIPPED}\n")
    proc = run_melset(*_extract(SAMPLE_AUDIO, tmp_path / "s", "--checksums", absolute, "--quiet"), check=False)
    assert proc.returncode == 2 and "lists none of the 16 selected tracks' files" in proc.stderr
    twice = tmp_path / "twice.sha1"
    twice.write_text(f"{digest}  {FLIPPED}\n{'0' * 40}  {FLIPPED}\n")
    with pytest.raises(MetadataError, match=f"line 2 lists {FLIPPED} again"):
        read_checksums(twice.read_bytes(), str(twice))


def test_a_read_ahead_that_does_not_end_is_left_to_the_worker(monkeypatch):
    import threading
    import time

    from melset import location
    from melset.location import Fetch, prefetched

    never = threading.Event()
    monkeypatch.setattr(location, "read_bytes", lambda *a, **k: never.wait() or b"")
    started = time.monotonic()
    out = list(prefetched([(0, Fetch("s3://b/hung.mp3", {})), (1, "/local.mp3")], ahead=4, wait_s=0.3))
    assert time.monotonic() - started < 5
    assert out[0][1].data is None and not out[0][1].problem and out[1] == (1, "/local.mp3")


@needs_s3
def test_tracks_at_a_folder_url_is_named_as_given(tmp_path, s3):
    s3.upload_folder(str(SAMPLE_TRACKS.parent), "music", "fma_metadata")
    proc = run_melset("extract", "--tracks", "s3://music/fma_metadata", "--audio", SAMPLE_AUDIO, "--out",
                      tmp_path / "s", check=False)
    assert proc.returncode == 2 and "s3://music/fma_metadata" in proc.stderr and "melset-tables" not in proc.stderr
