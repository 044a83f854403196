"""Where the time of one track goes: each stage of the recipe timed on real clips, one process.

    python benchmarks/profile_recipe.py [--files DIR] [--n 40]

Defaults to the clips built by extract_speed.py (30 s, 44.1 kHz stereo, 320 kbps MP3).
Uses the same worker set-up as `melset extract` (allocator tuning).
"""

from __future__ import annotations

import argparse
import os
import pickle
import time
import sys
from pathlib import Path

from melset.engines.worker import prepare_worker


sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_speed import WORKDIR, encoded_clips  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=Path, default=WORKDIR / "encoded")
    ap.add_argument("--n", type=int, default=40)
    args = ap.parse_args()
    files = encoded_clips(args.files, args.n)

    fd = os.dup(2)
    prepare_worker()
    os.dup2(fd, 2)

    import numpy as np
    import soundfile as sf
    import soxr

    from melset import features
    from melset.audio import _check_file, to_mono
    from melset.recipe import Recipe

    r = Recipe()
    stages: dict[str, float] = {}

    def clock(name: str, t0: float) -> float:
        t = time.perf_counter()
        stages[name] = stages.get(name, 0.0) + t - t0
        return t

    for _ in range(2):  # first pass warms caches and the allocator
        stages.clear()
        for path in files:
            t = time.perf_counter()
            _check_file(path)
            with sf.SoundFile(path) as f:
                rate = f.samplerate
                t = clock("decode: open + checks", t)
                data = f.read(frames=r.input_frames_needed(rate), dtype="float32", always_2d=True)
            t = clock("decode: libsndfile/mpg123 (24 s)", t)
            y = to_mono(data)
            t = clock("decode: mono", t)
            y = soxr.resample(y, rate, r.sample_rate, quality="soxr_hq")
            t = clock("resample: soxr HQ", t)
            np.isfinite(y).all()
            t = clock("checks: finite samples", t)
            S = features.mel_power(y, r)
            t = clock("features: STFT + mel (1,024 frames)", t)
            S = features.minmax_per_frame(features.power_to_db(S))
            t = clock("features: dB + per-frame scaling", t)
            pickle.dumps(S.astype(np.float16))
            clock("result: float16 + pickle", t)
    total = sum(stages.values())
    floor = sum(v for k, v in stages.items() if k.startswith(("decode", "resample")))
    print(f"{len(files)} clips, per clip:")
    for name, v in stages.items():
        print(f"  {name:40s} {v / len(files) * 1000:6.2f} ms  {v / total * 100:5.1f}%")
    print(f"  {'total':40s} {total / len(files) * 1000:6.2f} ms")
    print(f"beyond decode + resample: {(total - floor) / floor * 100:.0f}% of the floor's work")


if __name__ == "__main__":
    main()
