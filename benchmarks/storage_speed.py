"""Storage speed: `melset extract` from local files vs from S3 (moto's server on loopback).

Copies the real 30 s MP3s of the shipped sample (sample/fma_audio: the eight that decode to
30 s; six 44.1 kHz stereo at up to 320 kbps, two 22.05 kHz mono) under distinct FMA names
into a temporary FMA-style collection (fma_audio/NNN/NNNNNN.mp3 and a tracks.csv), uploads
the folder to moto's S3 server on 127.0.0.1 (tests/support/s3server.py), then times, as
whole processes, interleaved --repeats times:
  (local) melset extract --tracks T --audio FOLDER          --workers W --quiet
  (s3)    melset extract --tracks T --audio s3://bench/fma_audio --workers W --quiet
and prints clips/s (median and spread) and the ratio s3/local. With each run it notes the
CPU seconds of melset's processes (driver, fork server, workers) and of moto's server, and a
probe loaded through PYTHONPATH into the melset run times, inside each worker, the fetch of
a file's bytes (melset.track._fetch: the GET for s3) and the whole track (fetch + decode +
log-mel), in wall and CPU seconds. It then times GETs alone, one after another from this
process (melset.location.read_bytes, as a worker reads), against moto.

The machine's cores are shared by moto and the workers: on a 2-core machine moto's CPU is
taken from the decoders, which a real S3 endpoint would not do.

    python benchmarks/storage_speed.py                    # 400 clips, 2 workers, 3 repeats
    python benchmarks/storage_speed.py --clips 100 --repeats 1
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
import time
from pathlib import Path
from statistics import median

from import_hook import AFTER_IMPORT  # benchmarks/, the script's own folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SAMPLE = ROOT / "sample" / "fma_audio"
# the sample's clips that decode to 30 s (the others are short or broken on purpose)
GOOD = {
    200010: "Folk",
    200011: "Folk",
    200023: "Classical",
    200036: "Jazz",
    200037: "Jazz",
    200047: "Classical",
    200090: "Experimental",
    200091: "Experimental",
}
FIRST_ID = 1000
BUCKET, PREFIX = "bench", "fma_audio"


# -- the collection ------------------------------------------------------------------------------


def build_clips(dst: Path, clips: int) -> tuple[Path, Path]:
    """`clips` copies of the sample's good clips as FMA tracks FIRST_ID.. under dst/fma_audio,
    with dst/tracks.csv (FMA's format). Returns (tracks.csv, the audio folder)."""
    import pandas as pd

    from melset.catalog import fma

    audio = dst / "fma_audio"
    sources = sorted(GOOD)
    rows = {}
    for i in range(clips):
        tid, src = FIRST_ID + i, sources[i % len(sources)]
        target = Path(fma.audio_path(audio, tid))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fma.audio_path(SAMPLE, src), target)
        rows[tid] = {("track", "genre_top"): GOOD[src], ("set", "subset"): "small", ("set", "split"): "training"}
    tracks = dst / "tracks.csv"
    fma.write_tracks_csv(pd.DataFrame.from_dict(rows, orient="index"), tracks)
    return tracks, audio


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- a probe inside the melset run ---------------------------------------------------------------

# Loaded through PYTHONPATH into the melset run only: times melset.track._fetch (reading a
# file's bytes: the GET for s3) and melset.track.process (fetch + decode + log-mel) in each
# process, wall and CPU, one line per track in MELSET_BENCH_PROBE/<pid>.
PROBE = AFTER_IMPORT + textwrap.dedent(
    """
    import importlib.util, os, sys, time


    def _patch(track):
        fetch, process = track._fetch, track.process
        last = {"fetch": (0.0, 0.0)}

        def _fetch(item):
            w, c = time.perf_counter(), time.process_time()
            try:
                return fetch(item)
            finally:
                last["fetch"] = (time.perf_counter() - w, time.process_time() - c)

        def process_(path, recipe):
            last["fetch"] = (0.0, 0.0)
            began = time.time()
            w, c = time.perf_counter(), time.process_time()
            out = process(path, recipe)
            w, c = time.perf_counter() - w, time.process_time() - c
            with open(os.path.join(os.environ["MELSET_BENCH_PROBE"], str(os.getpid())), "a") as f:
                f.write(f"{last['fetch'][0]} {last['fetch'][1]} {w} {c} {began} {time.time()}\\n")
            return out

        track._fetch, track.process = _fetch, process_

    if os.environ.get("MELSET_BENCH_PROBE"):
        _after("melset.track", _patch)
    """
)


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a long-lived process and its children have used so far."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for q in procs:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _watch_cpu(proc: subprocess.Popen, seen: dict) -> None:
    """Every 20 ms, the CPU seconds of each process in proc's tree (the last seen per pid)."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for q in procs:
            try:
                t = q.cpu_times()
                seen[(q.pid, q.create_time())] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.02)


def run_extract(tracks: Path, audio: str, work: Path, workers: int, env: dict, server_pid: int | None) -> dict:
    """One `melset extract` as a whole process: wall s, CPU s of its processes and of moto's
    server, seconds to the first track, and the probe's per-track rows."""
    import threading

    out = work / "store"
    shutil.rmtree(out, ignore_errors=True)
    probe_dir, marks = work / "probe", work / "marks"
    probe_dir.mkdir(exist_ok=True)
    (probe_dir / "sitecustomize.py").write_text(PROBE)
    shutil.rmtree(marks, ignore_errors=True)
    marks.mkdir()
    env = {
        **env,
        "PYTHONPATH": os.pathsep.join([str(probe_dir), str(ROOT / "src")]),
        "MELSET_BENCH_PROBE": str(marks),
    }
    cmd = [sys.executable, "-m", "melset", "extract", "--tracks", str(tracks), "--audio", audio, "--out", str(out)]
    cmd += ["--workers", str(workers), "--quiet"]
    moto0 = _cpu_of(server_pid) if server_pid else 0.0
    seen: dict = {}
    started = time.time()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watcher = threading.Thread(target=_watch_cpu, args=(proc, seen), daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t
    watcher.join()
    moto = (_cpu_of(server_pid) - moto0) if server_pid else 0.0
    if proc.returncode != 0 or " 0 failed" not in stdout:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stdout}\n{stderr}")
    rows, worker_pids, first_fetch = [], set(), []
    for f in marks.iterdir():
        worker_pids.add(int(f.name))
        mine = [tuple(map(float, line.split())) for line in f.read_text().splitlines()]
        first_fetch.append(mine[0][1])  # a worker's first fetch imports the client's libraries
        rows += mine
    first = min(r[4] for r in rows) - started
    last = max(r[5] for r in rows) - started
    by_kind = {"driver": 0.0, "workers": 0.0, "other": 0.0}  # other: the fork server, a resource tracker
    for (pid, _), cpu in seen.items():
        by_kind["driver" if pid == proc.pid else "workers" if pid in worker_pids else "other"] += cpu
    return {
        "wall": wall,
        "cpu": sum(seen.values()),
        "cpu_by_process": by_kind,
        "moto_cpu": moto,
        "first_track_s": first,
        "last_track_s": last,
        "tracks": [r[:4] for r in rows],
        "first_fetch_cpu": first_fetch,
    }


def get_times(objects: list[str], env: dict) -> dict:
    """GETs one after another from this process, as a worker reads (melset.location.read_bytes):
    wall and CPU ms of each (the client's CPU; moto's is on the server)."""
    from melset.location import read_bytes

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        read_bytes(objects[0], {})  # the client and its connection, once
        walls, cpus = [], []
        for url in objects:
            w, c = time.perf_counter(), time.process_time()
            read_bytes(url, {})
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"wall_ms": 1000 * median(walls), "cpu_ms": 1000 * median(cpus)}


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each (median and spread)")
    ap.add_argument("--gets", type=int, default=40, help="GETs timed one after another from this process")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from s3server import S3Server

    from melset.system import versions

    n = args.clips
    work = Path(tempfile.mkdtemp(prefix="melset-storage-"))
    result: dict = {"clips": n, "workers": args.workers, "cores": os.cpu_count(), "runs": {"local": [], "s3": []}}
    try:
        tracks, audio = build_clips(work, n)
        size = folder_bytes(audio)
        print(
            f"{n} clips (copies of the sample's {len(GOOD)} good 30 s MP3s, {size / n / 1e6:.2f} MB each on average), "
            f"{args.workers} workers, {os.cpu_count()} cores; {platform.platform()}"
        )
        with S3Server() as s3:
            t = time.perf_counter()
            s3.upload_folder(str(audio), BUCKET, PREFIX)
            print(f"uploaded {size / 1e6:.0f} MB to moto's S3 server on 127.0.0.1 in {time.perf_counter() - t:.1f} s")
            env_local = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            env_s3 = {**env_local, **s3.env}
            url = f"s3://{BUCKET}/{PREFIX}"
            for _ in range(args.repeats):  # interleaved: local, s3, local, s3, ...
                result["runs"]["local"].append(run_extract(tracks, str(audio), work, args.workers, env_local, None))
                result["runs"]["s3"].append(run_extract(tracks, url, work, args.workers, env_s3, s3.proc.pid))
            objects = [f"{url}/{f'{FIRST_ID + i:06d}'[:3]}/{FIRST_ID + i:06d}.mp3" for i in range(min(args.gets, n))]
            gets = get_times(objects, s3.env)
            moto_idle0 = _cpu_of(s3.proc.pid)
            time.sleep(2.0)
            moto_idle = (_cpu_of(s3.proc.pid) - moto_idle0) / 2.0
        # local reads, one after another, for scale
        local_ms = []
        for i in range(min(args.gets, n)):
            p = Path(f"{audio}/{f'{FIRST_ID + i:06d}'[:3]}/{FIRST_ID + i:06d}.mp3")
            t = time.perf_counter()
            p.read_bytes()
            local_ms.append(1000 * (time.perf_counter() - t))

        def rate(runs):
            rates = [n / r["wall"] for r in runs]
            return median(rates), min(rates), max(rates)

        print()
        print(
            f"{'':24s} {'wall s':>6s} {'clips/s':>8s} {'(spread)':>13s} {'1st track':>9s} {'steady':>8s} "
            f"{'melset CPU':>10s} {'moto CPU':>8s}"
        )
        rates = {}
        for name, label in (("local", "local folder"), ("s3", "s3:// (moto loopback)")):
            runs = result["runs"][name]
            m, lo, hi = rate(runs)
            rates[name] = m
            steady = median(n / (r["last_track_s"] - r["first_track_s"]) for r in runs)
            print(
                f"{label:24s} {median(r['wall'] for r in runs):6.1f} {m:8.1f} {f'({lo:.1f}-{hi:.1f})':>13s} "
                f"{median(r['first_track_s'] for r in runs):7.2f} s {steady:8.1f} "
                f"{median(r['cpu'] for r in runs):8.1f} s {median(r['moto_cpu'] for r in runs):6.1f} s"
            )
        ratio = rates["s3"] / rates["local"]
        print(f"s3 / local = {ratio:.2f}   (1st track: seconds from the command to the first track's start; steady:")
        print("clips/s from the first track's start to the last one's end; CPU: all processes, user + system)")

        print()
        print("inside the workers, per track (median over all runs' tracks):")
        print(f"{'':24s} {'fetch wall':>11s} {'fetch CPU':>10s} {'track wall':>11s} {'track CPU':>10s}")
        per = {}
        for name, label in (("local", "local folder"), ("s3", "s3:// (moto loopback)")):
            rows = [row for r in result["runs"][name] for row in r["tracks"]]
            fw, fc, tw, tc = (1000 * median(col) for col in zip(*rows))
            per[name] = {"fetch_wall_ms": fw, "fetch_cpu_ms": fc, "track_wall_ms": tw, "track_cpu_ms": tc}
            print(f"{label:24s} {fw:8.1f} ms {fc:7.1f} ms {tw:8.1f} ms {tc:7.1f} ms")
        print()
        print("CPU ms per clip (median run): where the s3 run spends more")
        print(
            f"{'':24s} {'driver':>7s} {'other':>6s} {'workers:':>9s} {'fetch':>6s} {'decode+mel':>10s} {'between':>8s} "
            f"{'moto':>6s} {'total':>6s}"
        )
        for name, label in (("local", "local folder"), ("s3", "s3:// (moto loopback)")):
            runs = result["runs"][name]

            def ms(get, runs=runs):
                return 1000 * median(get(r) for r in runs) / n

            fetch = ms(lambda r: sum(t[1] for t in r["tracks"]))
            track = ms(lambda r: sum(t[3] for t in r["tracks"]))
            workers = ms(lambda r: r["cpu_by_process"]["workers"])
            moto = ms(lambda r: r["moto_cpu"])
            print(
                f"{label:24s} {ms(lambda r: r['cpu_by_process']['driver']):7.1f} "
                f"{ms(lambda r: r['cpu_by_process']['other']):6.1f} {'':9s} {fetch:6.1f} {track - fetch:10.1f} "
                f"{workers - track:8.1f} {moto:6.1f} {ms(lambda r: r['cpu']) + moto:6.1f}"
            )
        print("(between: a worker's CPU outside its tracks: start-up, imports, the store's writes)")
        firsts = [c for r in result["runs"]["s3"] for c in r["first_fetch_cpu"]]
        print(
            f"a worker's first s3 fetch (imports s3fs and aiobotocore, makes a client): {1000 * median(firsts):.0f} ms CPU "
            f"(median over {len(firsts)} workers), later ones {per['s3']['fetch_cpu_ms']:.1f} ms"
        )
        s3_runs = result["runs"]["s3"]
        moto_per_get = 1000 * median(r["moto_cpu"] for r in s3_runs) / n
        print()
        print(
            f"GETs one at a time from one client (melset.location.read_bytes): {gets['wall_ms']:.1f} ms wall, "
            f"{gets['cpu_ms']:.1f} ms client CPU each; a local read {median(local_ms):.1f} ms"
        )
        print(
            f"moto's server: {moto_per_get:.1f} ms CPU per clip during the s3 runs "
            f"(idle: {moto_idle * 100:.0f}% of a core); "
            f"melset's own CPU per clip: local {1000 * median(r['cpu'] for r in result['runs']['local']) / n:.1f} ms, "
            f"s3 {1000 * median(r['cpu'] for r in s3_runs) / n:.1f} ms"
        )
        result.update(rates=rates, ratio=ratio, per_track=per, gets=gets, moto_cpu_ms_per_clip=moto_per_get)
        vers = versions("melset", "s3fs", "fsspec", "aiobotocore", "botocore", "moto", "soundfile", "libsndfile")
        print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
        if args.json:
            for runs in result["runs"].values():
                for r in runs:
                    r.pop("tracks")
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
