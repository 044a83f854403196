"""Any fault: each broken input gets a reason in words, the run never crashes or hangs,
and the store survives kills, full disks and a second writer."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import SAMPLE_AUDIO, fault_env, make_collection, melset_cmd, run_melset, store_bytes, write_audio
from melset import audio
from melset.recipe import Recipe
from melset.track import process
from melset.store import read_journal

R = Recipe(dtype="float32")
MP3 = SAMPLE_AUDIO / "200" / "200047.mp3"


def reason(path) -> str:
    result = process(path, R)
    assert result.status == "failed", (path, result.status)
    return result.error


# -- files ---------------------------------------------------------------------------------


def test_empty_truncated_random_html_text(tmp_path):
    (tmp_path / "empty.mp3").write_bytes(b"")
    assert reason(tmp_path / "empty.mp3") == "empty file (0 bytes)"
    (tmp_path / "cut.mp3").write_bytes(MP3.read_bytes()[:30_000])
    assert reason(tmp_path / "cut.mp3").startswith("truncated: the stream ends after 0.")
    (tmp_path / "noise.mp3").write_bytes(random.Random(1).randbytes(200_000))
    assert reason(tmp_path / "noise.mp3") == "not an MP3 stream: no valid frame header in 195 KB"
    (tmp_path / "page.mp3").write_text("<!DOCTYPE html>\n<html><head><title>Error</title></head></html>")
    assert reason(tmp_path / "page.mp3").startswith(
        "not audio: an HTML page saved as .mp3 (starts with '<!DOCTYPE html>')"
    )
    (tmp_path / "notes.wav").write_text("track list\n" * 100)
    assert reason(tmp_path / "notes.wav") == "not audio: a text file saved as .wav"
    (tmp_path / "feed.flac").write_text('<?xml version="1.0"?><rss></rss>')
    assert reason(tmp_path / "feed.flac") == "not audio: an XML document saved as .flac"


def test_wav_header_promising_more_than_the_file_holds(tmp_path):
    full = write_audio(tmp_path / "full.wav", seconds=30, rate=22050, channels=1, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 5])
    assert reason(cut) == "truncated: the stream ends after 6.0 s of the 30.0 s its header announces"
    # enough audio left for the kept frames: stored, as librosa would
    long_cut = tmp_path / "long_cut.wav"
    long_cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.9)])
    assert process(long_cut, R).status == "ok"


def test_directory_named_like_audio(tmp_path):
    (tmp_path / "x.mp3").mkdir()
    assert reason(tmp_path / "x.mp3") == "a directory, not an audio file"


def test_symlink_loop_and_broken_link(tmp_path):
    a, b = tmp_path / "a.mp3", tmp_path / "b.mp3"
    a.symlink_to(b)
    b.symlink_to(a)
    assert reason(a) == "symbolic link loop: the path never reaches a file"
    (tmp_path / "dangling.mp3").symlink_to(tmp_path / "nowhere.mp3")
    assert reason(tmp_path / "dangling.mp3") == "broken symbolic link: its target does not exist"


def test_unreadable_file(tmp_path):
    locked = tmp_path / "locked.mp3"
    shutil.copy(MP3, locked)
    locked.chmod(0)
    if os.geteuid() != 0:
        assert reason(locked) == "cannot read the file: permission denied"
        return
    # root reads everything: check as an unprivileged user in a child process
    tmp_path.chmod(0o755)
    code = (
        "import os, soundfile, soxr, melset.audio, melset.features  # before giving up root's stdlib\n"
        "from melset.track import process; from melset.recipe import Recipe\n"
        "os.setgid(65534); os.setuid(65534)\n"
        f"print(process({str(locked)!r}, Recipe()).error)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "cannot read the file: permission denied"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_samples_are_rejected(tmp_path, bad):
    y = np.random.default_rng(0).standard_normal(22050 * 25).astype(np.float32) * 0.1
    y[50_000:50_010] = bad
    sf.write(tmp_path / "bad.wav", y, 22050, subtype="FLOAT")
    assert reason(tmp_path / "bad.wav") == "the audio contains NaN or infinite sample values"


@pytest.mark.parametrize("value", [0.0, 0.3])
def test_digital_silence_and_dc_offset_are_stored_without_nan(tmp_path, value):
    sf.write(tmp_path / "flat.wav", np.full(22050 * 25, value, np.float32), 22050, subtype="FLOAT")
    result = process(tmp_path / "flat.wav", R)
    assert result.status == "ok" and np.isfinite(result.mel).all()
    # [0, 1] up to float32 rounding: scikit-learn's X * scale + min can give 1.0000001
    assert result.mel.min() >= -1e-6 and result.mel.max() <= 1 + 1e-6
    if value == 0.0:
        assert not result.mel.any()  # silence: every frame constant, scaled to 0 as scikit-learn does


# -- fuzzing ---------------------------------------------------------------------------------


def _seeds(tmp_path) -> dict[str, bytes]:
    seeds = {"mp3": MP3.read_bytes()[:60_000]}
    for name, kw in (
        ("wav", dict(subtype="PCM_16")),
        ("flac", dict(subtype="PCM_16")),
        ("ogg", dict(format="OGG", subtype="VORBIS")),
        ("au", dict(format="AU", subtype="PCM_16")),
    ):
        p = write_audio(tmp_path / "seeds" / f"s.{name}", seconds=2, rate=22050, channels=1, **kw)
        seeds[name] = p.read_bytes()
    return seeds


@pytest.mark.slow
def test_fuzzed_inputs_never_crash_or_hang_and_all_get_a_reason(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    seeds = _seeds(tmp_path)
    corpus = tmp_path / "corpus" / "fuzz"
    corpus.mkdir(parents=True)
    written: list = []

    @st.composite
    def inputs(draw):
        ext = draw(st.sampled_from(sorted(seeds)))
        data = bytearray(seeds[ext])
        kind = draw(st.sampled_from(["random", "flip", "truncate", "splice", "header", "zeros"]))
        if kind == "random":
            data = bytearray(draw(st.binary(min_size=0, max_size=4096)))
        elif kind == "flip":
            for _ in range(draw(st.integers(1, 64))):
                i = draw(st.integers(0, len(data) - 1))
                data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == "splice":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=512))
        elif kind == "header":  # garbage in the first bytes, where the parsers look hardest
            head = draw(st.binary(min_size=4, max_size=64))
            data[4 : 4 + len(head)] = head
        else:
            data = bytearray(len(data))
        return ext, bytes(data)

    # derandomize: the same 300 inputs in every CI run; MELSET_FUZZ_SEED explores others
    seed = os.environ.get("MELSET_FUZZ_SEED") or None

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs())
    def collect(example):
        ext, data = example
        path = corpus / f"{len(written):04d}.{ext}"
        path.write_bytes(data)
        audio.sniff(str(path))  # must not raise on anything
        written.append(path)

    if seed is not None:
        from hypothesis import seed as hypothesis_seed

        collect = hypothesis_seed(int(seed))(collect)
    collect()
    assert len(written) == 300
    out = tmp_path / "store"
    # the per-file timeout is what guarantees no hang: the run must simply end, with every row
    proc = run_melset(
        "extract", "--audio", tmp_path / "corpus", "--out", out, "--quiet", "--timeout", "20", check=False
    )
    assert proc.returncode in (0, 1), proc.stderr
    t = pd.read_parquet(out / "tracks.parquet")
    assert len(t) == 300
    assert set(t["status"]) <= {"ok", "too_short", "failed"}
    bad = t[t["status"] != "ok"]
    assert (bad["error"].str.len() > 10).all()
    ours = bad["error"].str.startswith("internal error")  # melset's own catch-all, i.e. a bug of ours
    assert not ours.any(), bad[ours]["error"].tolist()
    # the corpus exercised the decoders, not only the sniffing: some inputs still decode
    assert (t["status"] == "too_short").sum() >= 10 and (t["status"] == "failed").sum() >= 50
    print(t["status"].value_counts().to_dict(), bad["error"].str.split(":").str[0].value_counts().to_dict())


# -- store durability ---------------------------------------------------------------------------


def _args(tracks, audio_dir, out):
    return ["extract", "--tracks", tracks, "--audio", audio_dir, "--out", out, "--quiet", "--workers", "2"]


@pytest.mark.slow
def test_disk_full_mid_run_is_a_clear_error_and_resumes(tmp_path):
    tracks, audio_dir = make_collection(tmp_path / "c", 30)
    clean, full = tmp_path / "clean", tmp_path / "full"
    run_melset(*_args(tracks, audio_dir, clean))
    env = fault_env("enospc:100017")
    proc = run_melset(*_args(tracks, audio_dir, full), check=False, env=env)
    assert proc.returncode == 2
    assert "disk full while writing the store" in proc.stderr and "run the same command again to resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((full / "manifest.json").read_text())["state"] == "incomplete"
    assert '"corrupt_rows": []' in run_melset("info", full, "--json", "--verify").stdout
    run_melset(*_args(tracks, audio_dir, full))
    assert store_bytes(full) == store_bytes(clean)


def _mount_tmpfs(where, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )


@pytest.mark.slow
def test_disk_full_on_a_real_small_filesystem(tmp_path):
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "10m"):
        pytest.skip(
            "cannot mount a tmpfs here (needs root and mount rights); the fault-injection test covers the logic"
        )
    try:
        tracks, audio_dir = make_collection(tmp_path / "c", 60)  # 60 rows x 256 KB = 15.7 MB
        clean, out = tmp_path / "clean", mnt / "store"
        run_melset(*_args(tracks, audio_dir, clean))
        proc = run_melset(*_args(tracks, audio_dir, out), check=False)
        assert proc.returncode == 2 and "not enough disk space" in proc.stderr and "is free" in proc.stderr
        # room enough to start, then another program fills the disk mid-run
        subprocess.run(["mount", "-o", "remount,size=24m", str(mnt)], check=True)
        p = subprocess.Popen(
            melset_cmd(*_args(tracks, audio_dir, out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            if (out / "journal.jsonl").exists() and len(read_journal(str(out / "journal.jsonl"))) >= 10:
                break
            time.sleep(0.02)
        with open(mnt / "filler", "wb") as f:
            try:
                while True:
                    f.write(bytes(1 << 20))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        _, err = p.communicate(timeout=60)
        assert p.returncode == 2 and "disk full while writing the store" in err, err
        (mnt / "filler").unlink()
        run_melset(*_args(tracks, audio_dir, out))
        assert store_bytes(out) == store_bytes(clean)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_second_writer_is_refused_and_nothing_is_corrupted(tmp_path):
    tracks, audio_dir = make_collection(tmp_path / "c", 40)
    clean, out = tmp_path / "clean", tmp_path / "busy"
    run_melset(*_args(tracks, audio_dir, clean))
    first = subprocess.Popen(  # slowed a little, so that it still holds the store when the second comes
        melset_cmd(*_args(tracks, audio_dir, out)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=fault_env("slow:0.2"),
    )
    deadline = time.monotonic() + 60
    while not (out / "journal.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = run_melset(*_args(tracks, audio_dir, out), check=False)
    assert first.wait(timeout=120) == 0
    assert second.returncode == 2 and f"{out} is in use by another melset run (pid {first.pid})" in second.stderr
    assert store_bytes(out) == store_bytes(clean)
