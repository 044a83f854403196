"""Extraction speed: the notebook's loop vs `melset extract` vs the decoder floor, in one run.

Builds N FMA-like clips (30 s, 44.1 kHz stereo MP3 at 320 kbps) from the real recordings in
sample/, lays them out like FMA, then times as whole processes:
  (a) the notebook's loop as written (librosa.load, melspectrogram, power_to_db,
      MinMaxScaler, ndarray.dump per track; one process);
  (b) `melset extract` (default: all cores);
  (c) the floor: decode the first 24 s with libsndfile + mono + soxr HQ to 22,050 Hz, in
      as many processes as (b) uses: the work no exact implementation can skip.
It prints clips/s for each, the ratios b/a and b/c, the peak memory of all melset processes
together, the core count and the library versions.

    python benchmarks/extract_speed.py                 # 120 clips
    python benchmarks/extract_speed.py --clips 2000 --skip-notebook
    python benchmarks/extract_speed.py --workers 1,2,4,8,16 --plot docs/scaling.png
    python benchmarks/extract_speed.py --long          # a 5-minute track vs a 30 s clip
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from melset.system import versions

ROOT = Path(__file__).resolve().parents[1]
WORKDIR = Path(tempfile.gettempdir()) / "melset-bench"  # clips are built here once and reused
SOURCES = ["200010", "200011", "200023", "200036", "200037", "200047"]  # 44.1 kHz stereo, CC-BY / PD
GENRES = ["Folk", "Folk", "Classical", "Jazz", "Jazz", "Classical"]
CLIP_S = 30.0
SR = 44100


# -- building clips ----------------------------------------------------------------------------


def _source_audio() -> np.ndarray:
    import soundfile as sf

    parts = [
        sf.read(ROOT / "sample" / "fma_audio" / "200" / f"{s}.mp3", dtype="float32", always_2d=True)[0] for s in SOURCES
    ]
    return np.concatenate(parts)  # ~3 minutes of real music, stereo 44.1 kHz


def _encode(args) -> None:
    path, seconds, seed = args
    import soundfile as sf

    src = _source_audio()
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    start = int(rng.integers(0, len(src)))
    idx = (start + np.arange(n)) % len(src)
    clip = src[idx] * np.float32(rng.uniform(0.6, 1.0))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.part.mp3"
    sf.write(tmp, clip, SR, format="MP3", bitrate_mode="CONSTANT", compression_level=0.0)  # 320 kbps CBR
    os.replace(tmp, path)


def build_collection(workdir: Path, clips: int, distinct: int) -> tuple[Path, Path]:
    """FMA layout with `clips` tracks; `distinct` real encodes, the rest hard links to them."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "src"))
    from melset.catalog import fma

    pool_dir = workdir / "encoded"
    todo = [
        (str(pool_dir / f"{i:05d}.mp3"), CLIP_S, i) for i in range(distinct) if not (pool_dir / f"{i:05d}.mp3").exists()
    ]
    if todo:
        print(f"encoding {len(todo)} clips of {CLIP_S:.0f} s at 320 kbps ...", flush=True)
        with Pool(os.cpu_count()) as p:
            p.map(_encode, todo)
    coll = workdir / f"fma_{clips}"
    audio = coll / "fma_audio"
    if not (coll / "tracks.csv").exists():
        shutil.rmtree(coll, ignore_errors=True)
        rows = {}
        for i in range(clips):
            tid = 1000 + i
            dst = Path(fma.audio_path(audio, tid))
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(pool_dir / f"{i % distinct:05d}.mp3", dst)
            rows[tid] = {
                ("track", "genre_top"): GENRES[i % len(GENRES)],
                ("set", "subset"): "small",
                ("set", "split"): "training",
            }
        fma.write_tracks_csv(pd.DataFrame.from_dict(rows, orient="index"), coll / "tracks.csv")
    return coll / "tracks.csv", audio


def encoded_clips(folder: Path, n: int) -> list[str]:
    """The first n clips that build_collection encoded (for the per-clip benchmarks)."""
    files = sorted(str(p) for p in folder.glob("*.mp3"))[:n]
    if not files:
        raise SystemExit(f"no MP3 files in {folder}; run benchmarks/extract_speed.py first")
    return files


# -- the contenders, each a whole process --------------------------------------------------------

NOTEBOOK = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import librosa as lib
    from sklearn.preprocessing import MinMaxScaler

    src, dst = sys.argv[1], sys.argv[2]
    scaler = MinMaxScaler()
    os.makedirs(dst, exist_ok=True)
    for folder in os.listdir(src):
        for filename in os.listdir(os.path.join(src, folder)):
            if filename.endswith('.mp3'):
                if os.path.exists(os.path.join(dst, filename[:-4] + '.pickle')):
                    continue
                path = os.path.join(src, folder, filename)
                try:
                    file, sr = lib.core.load(path)
                except Exception:
                    print(path, 'failed')
                    continue
                mel = lib.feature.melspectrogram(y=file, n_mels=128)[:, :1024]
                mel = lib.power_to_db(mel, ref=np.max)
                melscaled = scaler.fit_transform(mel)
                x = np.array(melscaled)
                if x.shape == (128, 1024):
                    x.dump(os.path.join(dst, filename[:-4] + '.pickle'))
    """
)

FLOOR = textwrap.dedent(
    """
    import os, sys
    from multiprocessing import get_context
    import numpy as np

    def work(path):
        import soundfile as sf, soxr
        from melset.audio import to_mono
        from melset.recipe import Recipe
        with sf.SoundFile(path) as f:
            data = f.read(frames=Recipe().input_frames_needed(f.samplerate), dtype='float32', always_2d=True)
            rate = f.samplerate
        y = soxr.resample(to_mono(data), rate, 22050, quality='soxr_hq')
        return len(y)

    if __name__ == '__main__':
        from melset.engines.worker import prepare_worker
        files = [os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) for f in fs if f.endswith('.mp3')]
        with get_context('spawn').Pool(int(sys.argv[2]), initializer=prepare_worker) as pool:
            n = sum(1 for _ in pool.imap_unordered(work, files, chunksize=2))
        print(n)
    """
)


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def timed(cmd: list[str], env=None) -> tuple[float, int, subprocess.CompletedProcess]:
    """Wall seconds and peak RSS (bytes) of a command and all its child processes together."""
    peak = 0
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stop = threading.Event()

    def watch():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    out, err = proc.communicate()
    elapsed = time.perf_counter() - start
    stop.set()
    t.join()
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out}\n{err}")
    return elapsed, peak, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_notebook(audio: Path, workdir: Path) -> float:
    dst = workdir / "notebook_pickles"
    shutil.rmtree(dst, ignore_errors=True)
    script = workdir / "notebook_loop.py"
    script.write_text(NOTEBOOK)
    elapsed, _, _ = timed([sys.executable, str(script), str(audio), str(dst)])
    return elapsed


def run_melset(tracks: Path, audio: Path, workdir: Path, workers: int | None) -> tuple[float, int]:
    out = workdir / "store"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "melset",
        "extract",
        "--tracks",
        str(tracks),
        "--audio",
        str(audio),
        "--out",
        str(out),
        "--quiet",
    ]
    if workers:
        cmd += ["--workers", str(workers)]
    elapsed, peak, proc = timed(cmd)
    if " 0 failed" not in proc.stdout:
        print(proc.stdout)
    return elapsed, peak


def run_floor(audio: Path, workdir: Path, workers: int) -> float:
    script = workdir / "floor.py"
    script.write_text(FLOOR)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    elapsed, _, _ = timed([sys.executable, str(script), str(audio), str(workers)], env=env)
    return elapsed


# -- the long-track check -----------------------------------------------------------------------


def long_track(workdir: Path, repeats: int = 5) -> dict:
    """Per-file cost of the recipe on a 5-minute track vs a 30 s clip (same process, warm)."""
    sys.path.insert(0, str(ROOT / "src"))
    from melset.recipe import Recipe
    from melset.track import process

    files = {"30 s": workdir / "long" / "clip30.mp3", "5 min": workdir / "long" / "track300.mp3"}
    for (_, path), seconds in zip(files.items(), (30.0, 300.0)):
        if not path.exists():
            _encode((str(path), seconds, 12345))
    recipe = Recipe()
    out = {}
    for name, path in files.items():
        process(path, recipe)
        t = time.perf_counter()
        for _ in range(repeats):
            assert process(path, recipe).status == "ok"
        out[name] = (time.perf_counter() - t) / repeats
    return out


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--distinct", type=int, default=60, help="distinct encodes; further clips are hard links to them")
    ap.add_argument("--workers", default="", help="comma-separated worker counts for (b) and (c); default: all cores")
    ap.add_argument("--skip-notebook", action="store_true")
    ap.add_argument("--long", action="store_true", help="also time a 5-minute track against a 30 s clip")
    ap.add_argument("--workdir", type=Path, default=WORKDIR)
    ap.add_argument("--plot", type=Path, default=None, help="write the workers scaling curve as a PNG")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args()

    cores = os.cpu_count() or 1
    workers_list = [int(w) for w in args.workers.split(",") if w] or [None]
    args.workdir.mkdir(parents=True, exist_ok=True)
    tracks, audio = build_collection(args.workdir, args.clips, min(args.distinct, args.clips))
    n = args.clips
    result: dict = {
        "clips": n,
        "cores": cores,
        "machine": platform.processor() or platform.machine(),
        "versions": versions(
            "melset", "numpy", "scipy", "soundfile", "soxr", "librosa", "scikit-learn", "pebble", "libsndfile"
        ),
        "runs": [],
    }
    print(f"{n} clips of 30 s, 44.1 kHz stereo, 320 kbps MP3; {cores} cores; {platform.platform()}")

    nb = None
    if not args.skip_notebook:
        t = run_notebook(audio, args.workdir)
        nb = n / t
        result["notebook_clips_per_s"] = nb
        print(f"(a) notebook loop (1 process)          {t:7.1f} s  {nb:7.1f} clips/s")

    for w in workers_list:
        procs = w or cores
        tb, peak = run_melset(tracks, audio, args.workdir, w)
        tc = run_floor(audio, args.workdir, procs)
        b, c = n / tb, n / tc
        run = {"workers": procs, "melset_clips_per_s": b, "floor_clips_per_s": c, "peak_rss_mb": peak / 2**20}
        result["runs"].append(run)
        print(
            f"(b) melset extract ({procs:2d} workers)         {tb:7.1f} s  {b:7.1f} clips/s   peak memory {peak / 2**20:6.0f} MB (all processes)"
        )
        print(f"(c) floor: decode 24 s + soxr ({procs:2d} procs) {tc:7.1f} s  {c:7.1f} clips/s")
        ratios = f"    b/c = {b / c:.2f}"
        if nb:
            ratios = f"    b/a = {b / nb:.2f}   " + ratios.strip()
            run["b_over_a"] = b / nb
        run["b_over_c"] = b / c
        print(ratios)

    if args.long:
        cost = long_track(args.workdir)
        result["long_track_s"] = cost
        print(
            f"recipe per file: 30 s clip {cost['30 s'] * 1000:.0f} ms, 5-minute track {cost['5 min'] * 1000:.0f} ms  (ratio {cost['5 min'] / cost['30 s']:.2f})"
        )

    print("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.plot and len(result["runs"]) > 1:
        plot_scaling(result, args.plot)
        print(f"wrote {args.plot}")


def plot_scaling(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    w = [r["workers"] for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(w, [r["melset_clips_per_s"] for r in runs], marker="o", label="melset extract")
    ax.plot(w, [r["floor_clips_per_s"] for r in runs], marker="s", linestyle="--", label="floor: decode + resample")
    if result.get("notebook_clips_per_s"):
        ax.axhline(result["notebook_clips_per_s"], color="gray", linestyle=":", label="notebook loop (1 process)")
    ax.set(xlabel="worker processes", ylabel="clips/s", title=f"{result['clips']} clips, {result['cores']} cores")
    ax.set_xscale("log", base=2)
    ax.set_xticks(w, [str(x) for x in w])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


if __name__ == "__main__":
    main()
