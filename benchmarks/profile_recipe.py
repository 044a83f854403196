"""Where the time of one track goes: each stage of the recipe on real clips, one process.

    python benchmarks/profile_recipe.py [--files DIR] [--n 40] [--plot docs/waterfall.png]

Defaults to the clips built by extract_speed.py (30 s, 44.1 kHz stereo, 320 kbps MP3).
Uses the same worker set-up as `melset extract` (allocator tuning). Times are CPU time of
this thread (time.thread_time), so a busy machine inflates them less than wall time.
Besides melset's own stages it times the cheapest exact computation of the kept frames it
can find (the fastest FFT installed), which is what the "exact limit" of extract_speed.py
adds to the floor, and the floor itself (libsndfile's stereo decode, channel mean, soxr)
beside melset's own decode (libmpg123's mono mix, melset's default decoder for stereo MP3;
--decoder soundfile times libsndfile's as librosa decodes); --plot draws
the stages as a waterfall with the floor and both limits.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path

from melset.engines.worker import prepare_worker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_speed import WORKDIR, encoded_clips  # noqa: E402

DECODE_STAGES = ("decode: open + checks", "resample: soxr HQ")


def fastest_features():
    """(name, f(y) -> scaled float32 matrix): the notebook's recipe with the fastest FFT installed."""
    import numpy as np
    import scipy.sparse

    from melset.features import hann_window
    from melset.melscale import mel_filterbank
    from melset.recipe import Recipe

    os.environ.setdefault("MKL_NUM_THREADS", "1")
    try:
        import mkl_fft

        name, rfft = "mkl_fft", lambda x: mkl_fft.rfft(x, axis=1)
    except ImportError:
        try:
            import ducc0

            name, rfft = "ducc0", lambda x: ducc0.fft.r2c(x, axes=(1,), nthreads=1)
        except ImportError:
            import scipy.fft

            name, rfft = "scipy", lambda x: scipy.fft.rfft(x, axis=1, workers=1)
    r = Recipe()
    window, fb = hann_window(r.n_fft), scipy.sparse.csr_matrix(mel_filterbank(r.sample_rate, r.n_fft, r.n_mels))

    def recipe(y):
        buf = np.zeros(r.n_fft // 2 + r.samples_needed, np.float32)
        n = min(len(y), r.samples_needed)
        buf[r.n_fft // 2 : r.n_fft // 2 + n] = y[:n]
        frames = np.lib.stride_tricks.sliding_window_view(buf, r.n_fft)[:: r.hop_length][: r.n_frames]
        mel = np.empty(r.shape, np.float32)
        for s in range(0, r.n_frames, 128):
            spec = rfft(frames[s : s + 128] * window)
            power = np.square(spec.real)
            power += np.square(spec.imag)
            mel[:, s : s + 128] = fb @ power.T
        db = np.log(np.maximum(r.amin, mel)) * np.float32(10 / np.log(10))
        db -= db.max()
        np.maximum(db, -r.top_db, out=db)
        lo = db.min(axis=0)
        span = db.max(axis=0) - lo
        span[span == 0] = 1.0
        return (db - lo) / span

    return name, recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=Path, default=WORKDIR / "encoded")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--decoder", default="auto", choices=("auto", "soundfile"), help="melset's decoder")
    ap.add_argument("--plot", type=Path, default=None, help="write the per-stage waterfall as a PNG")
    args = ap.parse_args()
    files = encoded_clips(args.files, args.n)

    fd = os.dup(2)
    prepare_worker()
    os.dup2(fd, 2)

    import numpy as np
    import soundfile as sf
    import soxr

    from melset import features
    from melset.audio import _check_file, mono_mix, to_mono
    from melset.recipe import Recipe

    r = Recipe()
    fft_name, limit_recipe = fastest_features()
    stages: dict[str, float] = {}

    def clock(name: str, t0: float) -> float:
        t = time.thread_time()
        stages[name] = stages.get(name, 0.0) + t - t0
        return t

    mix = args.decoder == "auto" and mono_mix.available()
    decode_stage = "decode: libmpg123 mono mix (24 s)" if mix else "decode: libsndfile + mono (24 s)"
    for _ in range(2):  # first pass warms caches and the allocator
        stages.clear()
        floor = limit = 0.0
        for path in files:
            # the floor as extract_speed.py defines it: libsndfile's stereo decode, channel mean, soxr
            t = time.thread_time()
            with sf.SoundFile(path) as f:
                rate = f.samplerate
                data = f.read(frames=r.input_frames_needed(rate), dtype="float32", always_2d=True)
            soxr.resample(to_mono(data), rate, r.sample_rate, quality="soxr_hq")
            floor += time.thread_time() - t
            # melset's own stages
            t = time.thread_time()
            _check_file(path)
            with sf.SoundFile(path) as f:
                rate, want = f.samplerate, r.input_frames_needed(f.samplerate)
                t = clock(DECODE_STAGES[0], t)
                y = mono_mix.decode(path, want, rate) if mix else None
                if y is None:
                    y = to_mono(f.read(frames=want, dtype="float32", always_2d=True))
            t = clock(decode_stage, t)
            y = soxr.resample(y, rate, r.sample_rate, quality="soxr_hq")
            t = clock(DECODE_STAGES[1], t)
            np.isfinite(y).all()
            t = clock("checks: finite samples", t)
            S = features.mel_power(y, r)
            t = clock("features: STFT + mel (1,024 frames)", t)
            S = features.minmax_per_frame(features.power_to_db(S))
            t = clock("features: dB + per-frame scaling", t)
            pickle.dumps(S.astype(np.float16))
            t = clock("result: float16 + pickle", t)
            limit_recipe(y).astype(np.float16)
            limit += time.thread_time() - t
    n = len(files)
    total = sum(stages.values())
    decoded = sum(v for k, v in stages.items() if k.startswith(("decode", "resample")))
    print(f"{n} clips, CPU time per clip:")
    for name, v in stages.items():
        print(f"  {name:40s} {v / n * 1000:6.2f} ms  {v / total * 100:5.1f}%")
    print(f"  {'total':40s} {total / n * 1000:6.2f} ms")
    print(
        f"floor (libsndfile decode + mono + resample): {floor / n * 1000:.2f} ms; melset's decode + resample: {decoded / n * 1000:.2f} ms"
    )
    print(
        f"exact limit: floor + the recipe with {fft_name} {limit / n * 1000:.2f} ms = {(floor + limit) / n * 1000:.2f} ms; "
        f"with melset's decode {(decoded + limit) / n * 1000:.2f} ms"
    )
    print(
        f"melset per clip = {floor / total:.2f} of the floor's speed, {(floor + limit) / total:.2f} of the exact limit's, "
        f"{(decoded + limit) / total:.2f} of the exact limit with its own decode"
    )
    if args.plot:
        waterfall(stages, n, floor, floor + limit, decoded + limit, fft_name, args.plot)
        print(f"wrote {args.plot}")


def waterfall(
    stages: dict[str, float], n: int, floor: float, limit: float, own_limit: float, fft_name: str, out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(stages)
    ms = [stages[k] / n * 1000 for k in names]
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    start = 0.0
    for i, (name, v) in enumerate(zip(names, ms)):
        colour = "tab:blue" if name.startswith(("decode", "resample")) else "tab:orange"
        ax.barh(i, v, left=start, color=colour)
        ax.text(start + v + 0.3, i, f"{v:.1f} ms", va="center", fontsize=8)
        start += v
    ax.axvline(
        floor / n * 1000,
        color="tab:blue",
        linestyle="--",
        label=f"floor (libsndfile decode + mono + resample) {floor / n * 1000:.1f} ms",
    )
    ax.axvline(
        limit / n * 1000,
        color="tab:green",
        linestyle=":",
        label=f"exact limit (floor + {fft_name} recipe) {limit / n * 1000:.1f} ms",
    )
    ax.axvline(
        own_limit / n * 1000,
        color="tab:purple",
        linestyle="-.",
        label=f"exact limit with melset's decode {own_limit / n * 1000:.1f} ms",
    )
    ax.axvline(start, color="tab:red", linestyle="-", alpha=0.5, label=f"melset {start:.1f} ms")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("CPU ms per 30 s clip (cumulative)")
    ax.set_title("One clip through the recipe, stage by stage")
    ax.set_xlim(0, start * 1.12)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


if __name__ == "__main__":
    main()
