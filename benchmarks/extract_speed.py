"""Extraction speed: the notebook's loop vs `melset extract` vs the decode floor and the exact limit.

Builds N FMA-like clips (30 s, 44.1 kHz stereo MP3 at 320 kbps) from the real recordings in
sample/, lays them out like FMA, then times as whole processes:
  (a) the notebook's loop as written (librosa.load, melspectrogram, power_to_db,
      MinMaxScaler, ndarray.dump per track; one process);
  (b) `melset extract` (default: all cores);
  (c) the floor: decode the first 24 s with libsndfile + mono + soxr HQ to 22,050 Hz, in
      as many processes as (b) uses: the work no exact implementation can skip;
  (d) the exact limit: the floor plus the cheapest exact computation of the kept frames
      (the fastest FFT installed: mkl_fft, ducc0 or scipy; power, sparse mel, dB, scaling),
      in as many processes, writing nothing: what no exact implementation can beat here;
  (e) where the system has libmpg123: the exact limit with libmpg123's mono mix (one
      synthesis instead of two; melset's default decode of stereo MP3), which moves the floor.
Each configuration runs --repeats times, interleaved (a, b, c, d, e, a, b, ...), and the
median and the spread (min-max) are printed, so a noisy moment cannot decide the verdict.
It also prints the peak memory of all melset processes together, how long melset took from
the command to the metadata being read and to the first file being decoded, the core count
and the library versions.

    python benchmarks/extract_speed.py                 # 120 clips, 3 interleaved repeats
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
from statistics import median

import numpy as np

from melset.audio import mono_mix
from melset.system import versions

from import_hook import AFTER_IMPORT  # benchmarks/, the script's own folder

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


LIMIT = textwrap.dedent(
    """
    import os, sys
    from multiprocessing import get_context
    import numpy as np

    def fastest_rfft():
        os.environ.setdefault("MKL_NUM_THREADS", "1")
        try:
            import mkl_fft
            return "mkl_fft", lambda x: mkl_fft.rfft(x, axis=1)
        except ImportError:
            pass
        try:
            import ducc0
            return "ducc0", lambda x: ducc0.fft.r2c(x, axes=(1,), nthreads=1)
        except ImportError:
            import scipy.fft
            return "scipy", lambda x: scipy.fft.rfft(x, axis=1, workers=1)

    NAME, RFFT = fastest_rfft()
    MIX = sys.argv[3:] == ["mix"]  # decode with libmpg123's mono mix, as melset does where it can
    STATE = {}

    def init():
        from melset.engines.worker import prepare_worker
        from melset.features import hann_window
        from melset.melscale import mel_filterbank
        import scipy.sparse
        prepare_worker()
        STATE["window"] = hann_window(2048)
        STATE["fb"] = scipy.sparse.csr_matrix(mel_filterbank(22050, 2048, 128))

    def work(path):
        import soundfile as sf, soxr
        from melset.audio import mono_mix, to_mono
        from melset.recipe import Recipe
        r = Recipe()
        with sf.SoundFile(path) as f:
            rate = f.samplerate
            if MIX:
                y = mono_mix.decode(path, r.input_frames_needed(rate), rate)
            else:
                y = to_mono(f.read(frames=r.input_frames_needed(rate), dtype='float32', always_2d=True))
        y = soxr.resample(y, rate, 22050, quality='soxr_hq')
        buf = np.zeros(1024 + r.samples_needed, np.float32)
        n = min(len(y), r.samples_needed)
        buf[1024:1024 + n] = y[:n]
        frames = np.lib.stride_tricks.sliding_window_view(buf, 2048)[::512][:1024]
        mel = np.empty((128, 1024), np.float32)
        for s in range(0, 1024, 128):
            spec = RFFT(frames[s:s + 128] * STATE["window"])
            power = np.square(spec.real)
            power += np.square(spec.imag)
            mel[:, s:s + 128] = (STATE["fb"] @ power.T)
        db = np.log(np.maximum(1e-10, mel)) * np.float32(10 / np.log(10))
        db -= db.max()
        np.maximum(db, -80.0, out=db)
        lo = db.min(axis=0)
        rng = db.max(axis=0) - lo
        rng[rng == 0] = 1.0
        return ((db - lo) / rng).astype(np.float16).shape

    if __name__ == '__main__':
        files = [os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) for f in fs if f.endswith('.mp3')]
        with get_context('spawn').Pool(int(sys.argv[2]), initializer=init) as pool:
            n = sum(1 for _ in pool.imap_unordered(work, files, chunksize=2))
        print(n, NAME)
    """
)

# Loaded through PYTHONPATH into the melset run only: notes when the metadata has been read
# and when the first file starts decoding (the same hook point the durability tests use).
STARTUP_PROBE = AFTER_IMPORT + textwrap.dedent(
    """
    import functools, importlib.util, os, sys, time

    def _mark(name):
        try:
            fd = os.open(os.path.join(os.environ["MELSET_BENCH_MARKS"], name), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, repr(time.time()).encode())
        os.close(fd)


    def _probe_catalog(catalog):
        inner = catalog.open_catalog

        @functools.wraps(inner)
        def open_catalog(*a, **k):
            out = inner(*a, **k)
            _mark("metadata_read")
            return out

        catalog.open_catalog = open_catalog

    def _probe_worker(worker):
        inner = worker.run_task

        @functools.wraps(inner)
        def run_task(*a, **k):
            _mark("first_decode")
            return inner(*a, **k)

        worker.run_task = run_task

    if os.environ.get("MELSET_BENCH_MARKS"):
        _after("melset.catalog", _probe_catalog)
        _after("melset.engines.worker", _probe_worker)
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


def run_melset(tracks: Path, audio: Path, workdir: Path, workers: int | None) -> tuple[float, int, dict]:
    """Wall seconds, peak RSS of all processes, and seconds from the command to the metadata
    being read and to the first file being decoded."""
    out = workdir / "store"
    shutil.rmtree(out, ignore_errors=True)
    probe, marks = workdir / "probe", workdir / "marks"
    probe.mkdir(exist_ok=True)
    (probe / "sitecustomize.py").write_text(STARTUP_PROBE)
    shutil.rmtree(marks, ignore_errors=True)
    marks.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(probe), str(ROOT / "src")]),
        "MELSET_BENCH_MARKS": str(marks),
    }
    cmd = [sys.executable, "-m", "melset", "extract", "--tracks", str(tracks), "--audio", str(audio), "--out", str(out)]
    cmd += ["--quiet", *(["--workers", str(workers)] if workers else [])]
    started = time.time()
    elapsed, peak, proc = timed(cmd, env=env)
    if " 0 failed" not in proc.stdout:
        print(proc.stdout)
    startup = {name: float((marks / name).read_text()) - started for name in ("metadata_read", "first_decode")}
    return elapsed, peak, startup


def run_floor(audio: Path, workdir: Path, workers: int) -> float:
    script = workdir / "floor.py"
    script.write_text(FLOOR)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    elapsed, _, _ = timed([sys.executable, str(script), str(audio), str(workers)], env=env)
    return elapsed


def run_limit(audio: Path, workdir: Path, workers: int, mix: bool = False) -> tuple[float, str]:
    script = workdir / "limit.py"
    script.write_text(LIMIT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(script), str(audio), str(workers), *(["mix"] if mix else [])]
    elapsed, _, proc = timed(cmd, env=env)
    return elapsed, proc.stdout.split()[-1]


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
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each configuration (median and spread)")
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

    def show(label: str, seconds: list[float], extra: str = "") -> float:
        rates = [n / t for t in seconds]
        m = median(rates)
        print(
            f"{label:42s} {median(seconds):7.1f} s  {m:7.1f} clips/s  (spread {min(rates):.1f}-{max(rates):.1f}){extra}"
        )
        return m

    nb = None
    for w in workers_list:
        procs = w or cores
        times: dict[str, list] = {"a": [], "b": [], "c": [], "d": [], "e": []}
        peaks, startups, fft = [], [], ""
        for _ in range(args.repeats):  # interleaved: a, b, c, d, a, b, c, d, ...
            if not args.skip_notebook and w == workers_list[0]:
                times["a"].append(run_notebook(audio, args.workdir))
            tb, peak, startup = run_melset(tracks, audio, args.workdir, w)
            times["b"].append(tb)
            peaks.append(peak)
            startups.append(startup)
            times["c"].append(run_floor(audio, args.workdir, procs))
            td, fft = run_limit(audio, args.workdir, procs)
            times["d"].append(td)
            if mono_mix.available():
                times["e"].append(run_limit(audio, args.workdir, procs, mix=True)[0])
        if times["a"]:
            nb = show("(a) notebook loop (1 process)", times["a"])
            result["notebook_clips_per_s"] = nb
        peak = max(peaks)
        b = show(f"(b) melset extract ({procs:2d} workers)", times["b"], f"   peak memory {peak / 2**20:.0f} MB")
        c = show(f"(c) floor: decode 24 s + soxr ({procs:2d} procs)", times["c"])
        d = show(f"(d) exact limit: floor + {fft} recipe ({procs:2d})", times["d"])
        e = show(f"(e) exact limit, libmpg123 mono mix ({procs:2d})", times["e"]) if times["e"] else None
        meta = median(s["metadata_read"] for s in startups)
        first = median(s["first_decode"] for s in startups)
        run = {
            "workers": procs,
            "repeats": args.repeats,
            "seconds": times,
            "melset_clips_per_s": b,
            "floor_clips_per_s": c,
            "limit_clips_per_s": d,
            "limit_fft": fft,
            "peak_rss_mb": peak / 2**20,
            "metadata_read_s": meta,
            "first_decode_s": first,
            "b_over_c": b / c,
            "b_over_d": b / d,
        }
        ratios = f"    melset = {b / c:.2f} of the floor, {b / d:.2f} of the exact limit"
        if e:
            run["mono_mix_limit_clips_per_s"], run["b_over_e"] = e, b / e
            ratios += f", {b / e:.2f} of the mono-mix exact limit"
        if nb:
            run["b_over_a"] = b / nb
            ratios += f", {b / nb:.2f}x the notebook"
        print(ratios)
        print(
            f"    start-up: metadata read after {meta:.2f} s, first file decoding after {first:.2f} s ({first - meta:.2f} s beyond the metadata)"
        )
        result["runs"].append(run)

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
    ax.plot(
        w,
        [r["limit_clips_per_s"] for r in runs],
        marker="^",
        linestyle=":",
        label="exact limit: floor + fastest recipe",
    )
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
