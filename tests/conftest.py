"""Shared fixtures: the shipped sample, ../shared data (skipped when absent), oracles."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample"
SAMPLE_TRACKS = SAMPLE / "fma_metadata" / "tracks.csv"
SAMPLE_AUDIO = SAMPLE / "fma_audio"
SHARED = Path(os.environ.get("MELSET_SHARED", ROOT.parent / "shared")) / "data"
MINI = SHARED / "fma_mini"
MINI_TRACKS = MINI / "fma_metadata" / "tracks.csv"
MINI_AUDIO = MINI / "fma_audio"
HEAD_TRACKS = SHARED / "fma_metadata_head" / "tracks.csv"

needs_shared = pytest.mark.skipif(
    not MINI_TRACKS.exists(),
    reason=f"needs the project's shared test data at {SHARED} (not part of a clone); the shipped sample covers the basics",
)


SUPPORT = Path(__file__).resolve().parent / "support"


def fault_env(spec: str, base: dict | None = None) -> dict[str, str]:
    """An environment in which melset's workers meet the fault `spec` (see support/sitecustomize.py)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SUPPORT), env.get("PYTHONPATH")) if p)
    env["MELSET_FAULT_INJECT"] = spec
    return env


def sample_extract(out, *extra) -> list:
    """`melset extract` arguments for the shipped sample (subset large: every row kind) into `out`."""
    return [
        "extract",
        "--tracks",
        SAMPLE_TRACKS,
        "--audio",
        SAMPLE_AUDIO,
        "--subset",
        "large",
        "--quiet",
        "--out",
        out,
        *extra,
    ]


def melset_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "melset", *map(str, args)]


def run_melset(*args, check=True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(melset_cmd(*args), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"melset {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@functools.cache
def notebook_matrix(path: str) -> np.ndarray | None:
    """The reference notebook's computation for one file (librosa + scikit-learn), or None
    where the notebook skips the file (load failure or fewer than 1,024 frames)."""
    import warnings

    import librosa
    from sklearn.preprocessing import MinMaxScaler

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, sr = librosa.load(path)
    except Exception:
        return None
    mel = librosa.feature.melspectrogram(y=y, n_mels=128)[:, :1024]
    mel = librosa.power_to_db(mel, ref=np.max)
    x = MinMaxScaler().fit_transform(mel)
    return x if x.shape == (128, 1024) else None


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory) -> Path:
    """The shipped sample extracted once (subset large: every row kind)."""
    out = tmp_path_factory.mktemp("sample") / "store"
    run_melset(*sample_extract(out, "--workers", "2"))
    return out


@pytest.fixture(scope="session")
def mini_store(tmp_path_factory) -> Path:
    """fma_mini extracted once with float32 (subset large), for parity checks."""
    if not MINI_TRACKS.exists():
        pytest.skip(f"needs {MINI} (shared test data, not part of a clone)")
    out = tmp_path_factory.mktemp("mini") / "store"
    run_melset(
        "extract",
        "--tracks",
        MINI_TRACKS,
        "--audio",
        MINI_AUDIO,
        "--out",
        out,
        "--subset",
        "large",
        "--dtype",
        "float32",
        "--quiet",
    )
    return out


@pytest.fixture(scope="session")
def fixture_json() -> dict:
    return json.loads((MINI / "fixture.json").read_text())


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def make_collection(root: Path, n: int, with_faults: bool = True) -> tuple[Path, Path]:
    """An FMA-shaped collection of n tracks built from the sample's clips (symlinks), plus a
    few broken, short and missing ones. Returns (tracks.csv, audio dir)."""
    import pandas as pd

    from melset.catalog import fma

    good = ["200010", "200011", "200023", "200036", "200037", "200047", "200090", "200091"]
    faults = ["200159", "200176", "200193", "200210", "200112"] if with_faults else []
    genres = {
        "200010": "Folk",
        "200011": "Folk",
        "200023": "Classical",
        "200036": "Jazz",
        "200037": "Jazz",
        "200047": "Classical",
        "200090": "Experimental",
        "200091": "Experimental",
    }
    audio = root / "fma_audio"
    rows = {}
    for i in range(n):
        tid = 100000 + i
        src_id = faults[i // 7] if with_faults and i % 7 == 3 and i // 7 < len(faults) else good[i % len(good)]
        dst = Path(fma.audio_path(audio, tid))
        genre = genres.get(src_id, "Rock")
        if not (with_faults and i % 11 == 5):  # every 11th listed track has no file
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(SAMPLE_AUDIO / "200" / f"{src_id}.mp3")
        rows[tid] = {
            ("track", "genre_top"): genre,
            ("set", "subset"): "small",
            ("set", "split"): ["training", "validation", "test"][i % 3],
        }
    tracks = root / "tracks.csv"
    fma.write_tracks_csv(pd.DataFrame.from_dict(rows, orient="index"), tracks)
    return tracks, audio


def store_bytes(store: Path) -> dict[str, bytes]:
    """The files whose bytes must not depend on how a run went (kills, resumes, engines)."""
    return {name: (store / name).read_bytes() for name in ("mels.npy", "labels.npy", "tracks.parquet", "classes.json")}


@functools.lru_cache(maxsize=1)
def real_music() -> tuple[np.ndarray, int]:
    """~60 s of real stereo music at 44.1 kHz from the shipped sample (CC-BY / PD)."""
    import soundfile as sf

    a, sr = sf.read(SAMPLE_AUDIO / "200" / "200010.mp3", dtype="float32", always_2d=True)
    b, _ = sf.read(SAMPLE_AUDIO / "200" / "200047.mp3", dtype="float32", always_2d=True)
    return np.concatenate([a, b]), sr


def write_audio(path: Path, seconds: float = 25.0, rate: int = 44100, channels: int = 2, **sf_kwargs) -> Path:
    """Real music resampled to `rate` with `channels` channels, written with soundfile."""
    import soundfile as sf
    import soxr

    x, sr = real_music()
    x = x[: int(seconds * sr)]
    if rate != sr:
        x = soxr.resample(x, sr, rate)
    if channels == 1:
        x = x.mean(axis=1, keepdims=True)
    elif channels > 2:
        x = np.concatenate([x, 0.5 * x[:, ::-1], 0.25 * x][: (channels + 1) // 2], axis=1)[:, :channels]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.ascontiguousarray(x, dtype=np.float32), rate, **sf_kwargs)
    return path


# -- audio where it lives: FMA-style archives and an S3 server on loopback ----------------------


def fma_zip(dst: Path, audio: Path = SAMPLE_AUDIO, top: str = "fma_small", *, flip: str | None = None,
            compression: int | None = None) -> Path:
    """An archive laid out as FMA's: TOP/NNN/NNNNNN.mp3 members compressed with bzip2 (as FMA's
    are), a TOP/checksums file (sha1sum's format, paths relative to TOP/) and a README. With
    `flip` (a relative path), that member's bytes have one bit flipped while the checksums file
    still lists the original's SHA-1: a corrupt download."""
    import hashlib
    import zipfile

    compression = zipfile.ZIP_BZIP2 if compression is None else compression
    lines = []
    with zipfile.ZipFile(dst, "w", compression=compression) as z:
        for path in sorted(p for p in audio.rglob("*") if p.is_file()):
            rel = path.relative_to(audio).as_posix()
            data = path.read_bytes()
            lines.append(f"{hashlib.sha1(data).hexdigest()}  {rel}")
            if rel == flip:
                data = bytearray(data)
                data[len(data) // 2] ^= 0x10
                data = bytes(data)
            z.writestr(f"{top}/{rel}" if top else rel, data)
        z.writestr(f"{top}/checksums" if top else "checksums", "\n".join(lines) + "\n")
        z.writestr(f"{top}/README.txt" if top else "README.txt", "An FMA-style archive made by melset's tests.\n")
    return dst


def fma_metadata_zip(dst: Path, tracks: Path = SAMPLE_TRACKS) -> Path:
    """fma_metadata.zip as FMA ships it: fma_metadata/tracks.csv and genres.csv."""
    import zipfile

    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in ("tracks.csv", "genres.csv"):
            z.write(tracks.parent / name, f"fma_metadata/{name}")
    return dst


def _have_moto() -> bool:
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError:
        return False
    return True


needs_s3 = pytest.mark.skipif(
    not _have_moto(),
    reason="needs moto[server], boto3 and s3fs (make install adds them) for an S3 server on 127.0.0.1",
)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 at a free port, for the whole session (one per test process)."""
    if not _have_moto():
        pytest.skip("needs moto[server], boto3 and s3fs (make install adds them) for an S3 server on 127.0.0.1")
    sys.path.insert(0, str(SUPPORT))
    from s3server import S3Server

    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 server with no bucket, its endpoint and keys in this process's environment
    (subprocesses inherit them), fsspec's cached clients forgotten."""
    s3_server.reset()
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    except ImportError:
        pass
    return s3_server
