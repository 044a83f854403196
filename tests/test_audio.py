"""Inputs beyond FMA: folder-per-genre and manifest layouts, every audio format we promise."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE_AUDIO, notebook_matrix, run_melset, write_audio
from melset import audio
from melset.catalog import folders, manifest_layout
from melset.errors import MetadataError
from melset.recipe import Recipe
from melset.track import process

librosa = pytest.importorskip("librosa")

R = Recipe(dtype="float32")

FORMATS = [
    # (file name, soundfile arguments, rate, channels)
    ("pcm_u8.wav", dict(subtype="PCM_U8"), 22050, 1),
    ("pcm16.wav", dict(subtype="PCM_16"), 44100, 2),
    ("pcm24.wav", dict(subtype="PCM_24"), 48000, 2),
    ("pcm32.wav", dict(subtype="PCM_32"), 96000, 2),
    ("float.wav", dict(subtype="FLOAT"), 8000, 1),
    ("six.wav", dict(subtype="PCM_16"), 32000, 6),
    ("f.flac", dict(subtype="PCM_24"), 88200, 2),
    ("v.ogg", dict(format="OGG", subtype="VORBIS"), 44100, 2),
    ("gtzan.au", dict(format="AU", subtype="PCM_16"), 22050, 1),
    ("c.mp3", dict(format="MP3"), 16000, 1),
]


@pytest.fixture(scope="module")
def format_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    return {name: write_audio(d / name, rate=rate, channels=ch, **kw) for name, kw, rate, ch in FORMATS}


@pytest.mark.parametrize("name", [f[0] for f in FORMATS])
def test_every_libsndfile_format_decodes_like_librosa(format_files, name):
    path = format_files[name]
    d = audio.decode(path, 22050, R.input_frames_needed)
    ref, _ = librosa.load(path)
    assert d.backend == "soundfile"
    n = min(R.samples_needed, len(ref))
    assert np.array_equal(d.samples[:n], ref[:n]), f"{name}: max diff {np.abs(d.samples[:n] - ref[:n]).max()}"
    result = process(path, R)
    assert result.status == "ok" and result.decoder == "soundfile"
    assert np.abs(result.mel - notebook_matrix(str(path))).max() <= 1e-3


def test_m4a_aac_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    import soxr

    from conftest import real_music

    x, sr = real_music()
    x = x[: 25 * sr]
    path = tmp_path / "a.m4a"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=sr, layout="stereo")
        for i in range(0, len(x), 1024):
            chunk = np.ascontiguousarray(x[i : i + 1024].T)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    assert audio.sniff(str(path)).kind == "mp4"
    result = process(path, R)
    assert result.status == "ok" and result.decoder == "av", result.error
    # lossy, so compared with the recipe on the source samples: same picture, small error
    src = soxr.resample(x.mean(axis=1), sr, 22050, quality="HQ")
    from melset import features

    ref = features.log_mel(src.astype(np.float32), R)
    assert np.corrcoef(ref.ravel(), result.mel.ravel())[0, 1] > 0.9
    assert np.abs(ref - result.mel).mean() < 0.05


def test_id3_tag_with_large_cover_art(tmp_path):
    src = (SAMPLE_AUDIO / "200" / "200047.mp3").read_bytes()
    art = np.random.default_rng(3).bytes(1_500_000)
    frame = b"APIC" + (len(art) + 14).to_bytes(4, "big") + b"\x00\x00" + b"\x00image/jpeg\x00\x03\x00" + art

    def syncsafe(n):
        return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])

    tagged = tmp_path / "tagged.mp3"
    tagged.write_bytes(b"ID3\x03\x00\x00" + syncsafe(len(frame)) + frame + src)
    plain = process(SAMPLE_AUDIO / "200" / "200047.mp3", R)
    with_art = process(tagged, R)
    assert with_art.status == "ok", with_art.error
    assert np.array_equal(with_art.mel, plain.mel)


def _gtzan(root, files):
    for rel in files:
        write_audio(root / rel, seconds=25, rate=22050, channels=1, format="AU", subtype="PCM_16")
    return root


@pytest.mark.slow
def test_folders_layout_gtzan_style(tmp_path):
    root = _gtzan(tmp_path / "genres", ["blues/blues.00000.au", "blues/blues.00001.au", "rock/rock.00000.au"])
    (root / "README.txt").write_text("not audio")
    cat = folders.catalog(root)
    assert cat.table["track_id"].tolist() == ["blues/blues.00000.au", "blues/blues.00001.au", "rock/rock.00000.au"]
    assert cat.table["genre_top"].tolist() == ["blues", "blues", "rock"]
    out = tmp_path / "store"
    run_melset("extract", "--audio", root, "--out", out, "--quiet")
    t = pd.read_parquet(out / "tracks.parquet")
    assert t["status"].tolist() == ["ok"] * 3 and pd.api.types.is_string_dtype(t["track_id"])
    assert json.loads((out / "classes.json").read_text()) == ["blues", "rock"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"]["layout"] == "folders" and m["decoders"] == {"soundfile": 3}
    assert np.load(out / "labels.npy").tolist() == [[1, 0], [1, 0], [0, 1]]
    proc = run_melset("show", out, "--track", "rock/rock.00000.au", "--png", tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 10_000, proc.stdout


@pytest.mark.slow
def test_manifest_layout_csv_and_parquet(tmp_path):
    root = _gtzan(tmp_path / "audio", ["a/x.au", "b/y.au", "z.au"])
    rows = pd.DataFrame(
        {"path": ["a/x.au", "b/y.au", "gone.wav"], "label": ["jazz", "pop", "pop"], "split": ["train", "val", "test"]}
    )
    rows.to_csv(tmp_path / "m.csv", index=False)
    rows.to_parquet(tmp_path / "m.parquet")
    for m in ("m.csv", "m.parquet"):
        out = tmp_path / f"store-{m}"
        run_melset("extract", "--manifest", tmp_path / m, "--audio", root, "--out", out, "--quiet")
        t = pd.read_parquet(out / "tracks.parquet")
        assert t["track_id"].tolist() == ["a/x.au", "b/y.au", "gone.wav"]
        assert t["split"].tolist() == ["training", "validation", "test"]
        assert t["status"].tolist() == ["ok", "ok", "missing"]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["unlisted_files"] == ["z.au"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "path, message",
    [
        ("../outside.wav", "leads outside"),
        ("a/../../outside.wav", "leads outside"),
        ("/etc/passwd", "must be relative"),
    ],
)
def test_manifest_path_escaping_root_is_refused(tmp_path, path, message):
    (tmp_path / "root").mkdir()
    pd.DataFrame({"path": ["ok.wav", path], "label": ["a", "b"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(MetadataError, match=message) as e:
        manifest_layout.catalog(tmp_path / "m.csv", tmp_path / "root")
    assert "line 3" in str(e.value)  # the header is line 1
    proc = run_melset(
        "extract", "--manifest", tmp_path / "m.csv", "--audio", tmp_path / "root", "--out", tmp_path / "s", check=False
    )
    assert proc.returncode == 2 and ("refused" in proc.stderr or "must be relative" in proc.stderr)


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"file": ["a.wav"], "label": ["x"]}), "missing required column 'path'"),
        (pd.DataFrame({"path": ["a.wav", "./a.wav"], "label": ["x", "y"]}), "listed twice"),
        (
            pd.DataFrame({"path": ["a.wav"], "label": ["x"], "split": ["holdout"]}),
            "is not training, validation or test",
        ),
    ],
)
def test_bad_manifests(tmp_path, frame, message):
    frame.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(MetadataError, match=message):
        manifest_layout.catalog(tmp_path / "m.csv")


def _latin1_name(folder, name: bytes):
    """A path whose file name is Latin-1 bytes (not UTF-8), as os.listdir returns it."""
    return folder / os.fsdecode(name)


@pytest.mark.parametrize("decoder", ["auto", "soundfile", "av"])
def test_a_file_name_that_is_not_utf8_decodes(tmp_path, decoder):
    """Python keeps such names as surrogates, which soundfile cannot encode as UTF-8."""
    if decoder == "av":
        pytest.importorskip("av")
    path = _latin1_name(tmp_path, b"caf\xe9 [1].mp3")
    shutil.copy(SAMPLE_AUDIO / "200" / "200010.mp3", path)
    d = audio.decode(str(path), 22050, Recipe().input_frames_needed, decoder=decoder)
    same = audio.decode(SAMPLE_AUDIO / "200" / "200010.mp3", 22050, Recipe().input_frames_needed, decoder=decoder)
    assert d.backend == same.backend and np.array_equal(d.samples, same.samples)


def test_a_folder_file_name_that_is_not_utf8_is_refused_by_name(tmp_path):
    """The store's tables hold names as UTF-8 text: the catalog names the file and the fix."""
    (tmp_path / "rock").mkdir()
    shutil.copy(SAMPLE_AUDIO / "200" / "200010.mp3", tmp_path / "rock" / "fine.mp3")
    shutil.copy(SAMPLE_AUDIO / "200" / "200010.mp3", _latin1_name(tmp_path / "rock", b"caf\xe9 [1].mp3"))
    with pytest.raises(MetadataError, match=r"rock/caf\\xe9 \[1\]\.mp3: the name is not UTF-8.*rename it"):
        folders.catalog(tmp_path)
    out = run_melset("extract", "--audio", tmp_path, "--out", tmp_path / "store", "--quiet", check=False)
    assert out.returncode == 2 and "caf\\xe9 [1].mp3: the name is not UTF-8" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_whole_mp3_decodes_as_librosa_reads_it_in_one_read(tmp_path):
    """libsndfile's MPEG decoder gives other samples after a read that ends mid-stream: read
    in chunks of 2**20 frames, this 32 kbps clip comes out 0.25 apart from the 2**20th frame
    on. librosa reads the header's length in one read, and so does melset."""
    import librosa
    import soundfile as sf

    y, sr = sf.read(SAMPLE_AUDIO / "200" / "200047.mp3", dtype="float32")
    path = tmp_path / "low [32k].mp3"
    sf.write(path, y, sr, format="MP3", bitrate_mode="CONSTANT", compression_level=0.99)
    d = audio.decode(path, 22050, None, decoder="soundfile")
    ref, _ = librosa.load(path)
    assert len(d.samples) == len(ref) > (1 << 20) // 2
    assert np.array_equal(d.samples, ref)
