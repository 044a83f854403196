"""Local engine vs Ray engine on the same clips, as whole `melset extract` processes.

    python benchmarks/ray_overhead.py [--clips 200]

Three runs on the clips of extract_speed.py: the local engine; the Ray engine starting its
own single-machine instance (what `--engine ray` without an address does); the Ray engine
on an already running instance (`ray start --head`, then `--ray-address`), which is how a
cluster is used. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_speed import WORKDIR, build_collection, timed  # noqa: E402

ENV = {
    **os.environ,
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
}


def extract(tracks, audio, out, *extra) -> tuple[float, int]:
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
        *extra,
    ]
    t, peak, _ = timed(cmd, env=ENV)
    return t, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", type=Path, default=WORKDIR)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    tracks, audio = build_collection(args.workdir, args.clips, min(60, args.clips))
    w = str(args.workers)
    n = args.clips
    out = args.workdir / "ray-store"
    print(f"{n} clips, {args.workers} workers, {os.cpu_count()} cores")

    t_local, _ = extract(tracks, audio, out, "--workers", w)
    print(f"local engine                            {t_local:6.1f} s  {n / t_local:6.1f} clips/s")
    t_own, _ = extract(tracks, audio, out, "--engine", "ray", "--workers", w)
    print(
        f"ray, starts its own instance            {t_own:6.1f} s  {n / t_own:6.1f} clips/s  overhead {t_own / t_local - 1:+.0%}"
    )

    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run(
        [
            ray,
            "start",
            "--head",
            "--num-cpus",
            w,
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            "6399",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
        ],
        env=ENV,
        check=True,
        capture_output=True,
    )
    try:
        time.sleep(1)
        t_cluster, _ = extract(tracks, audio, out, "--engine", "ray", "--ray-address", "127.0.0.1:6399")
        print(
            f"ray, running instance (--ray-address)   {t_cluster:6.1f} s  {n / t_cluster:6.1f} clips/s  overhead {t_cluster / t_local - 1:+.0%}"
        )
    finally:
        subprocess.run([ray, "stop", "--force"], env=ENV, capture_output=True)


if __name__ == "__main__":
    main()
