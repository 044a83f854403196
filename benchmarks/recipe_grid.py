"""How far melset's matrices are from librosa's over a grid of recipes, on real clips.

    python benchmarks/recipe_grid.py [--frames 128] [--all] [--markdown FILE]

For every recipe of the grid (top_db 80 and none; amin 1e-10, 1e-20, 1e-30; the full band
and narrow bands at the bottom and the top of the spectrum; 8 to 192 kHz; minmax-per-frame
and no scaling; a small and a large n_fft) and every clip (the shipped sample, fma_mini and
GTZAN from ../shared/data, read in place), it decodes the clip once at the recipe's rate
(libsndfile, as librosa.load) and computes on the same samples melset's matrix
(`features.log_mel`) and the oracle: librosa.feature.melspectrogram -> librosa.power_to_db(
ref=np.max) -> sklearn's MinMaxScaler per frame. It prints the worst |difference| per recipe
(scaled values; dB where scaling is none), which precision melset used, and the time
`features.log_mel` took per clip; then the default recipe's time per clip on 1,024 frames.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from itertools import product
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MELSET_SHARED", ROOT.parent / "shared")) / "data"
CLIPS = (
    ROOT / "sample/fma_audio/200/200010.mp3",  # Folk, 44.1 kHz stereo
    ROOT / "sample/fma_audio/200/200090.mp3",  # whale song, 22.05 kHz mono
    SHARED / "fma_mini/fma_audio/200/200012.mp3",
    SHARED / "fma_mini/fma_audio/200/200024.mp3",
    SHARED / "gtzan_dev/genres/classical/classical.00000.wav",  # 22.05 kHz mono
    SHARED / "gtzan_dev/genres/metal/metal.00000.wav",
)
RATES = (8000, 16000, 22050, 44100, 96000, 192000)
N_FFTS = (512, 4096)
BANDS = ("full", "low", "high")
TOP_DBS = (80.0, None)
AMINS = (1e-10, 1e-20, 1e-30)
SCALINGS = ("minmax-per-frame", "none")
BOUND = {"minmax-per-frame": 1e-3, "none": 1e-2}  # tests/test_parity.py's bounds: scaled values, dB


def band_recipe(sr: int, n_fft: int, band: str, frames: int, **rest):
    """The recipe of a band: the whole spectrum with 64 mels, or the lowest / highest 3% of it
    (at least 12 FFT bins) with as many of 4 mels as hold a bin each."""
    from melset.errors import RecipeError
    from melset.recipe import Recipe

    nyq = sr / 2
    width = max(0.03 * nyq, 12 * sr / n_fft)
    fmin, fmax, n_mels = {"full": (0.0, None, 64), "low": (0.0, width, 4), "high": (nyq - width, nyq, 4)}[band]
    while True:
        try:
            return Recipe(
                sample_rate=sr, n_fft=n_fft, hop_length=n_fft // 4, n_frames=frames, n_mels=n_mels,
                fmin=fmin, fmax=fmax, dtype="float32", **rest,
            )  # fmt: skip
        except RecipeError as exc:
            if "stay empty" not in str(exc) or n_mels == 1:
                raise
            n_mels -= 1


def oracle_power(y: np.ndarray, r) -> np.ndarray:
    import librosa

    return librosa.feature.melspectrogram(
        y=y, sr=r.sample_rate, n_fft=r.n_fft, hop_length=r.hop_length, n_mels=r.n_mels, fmin=r.fmin, fmax=r.fmax
    )[:, : r.n_frames]


def oracle(power: np.ndarray, r) -> np.ndarray:
    import librosa
    from sklearn.preprocessing import MinMaxScaler

    db = librosa.power_to_db(power, ref=np.max, amin=r.amin, top_db=r.top_db)
    return MinMaxScaler().fit_transform(db) if r.scaling == "minmax-per-frame" else db


def precision_of(y: np.ndarray, r) -> str:
    from melset import features

    said = getattr(features, "log_mel_precision", None)
    return said(y, r) if said else "float32"


def grid(clips: list[Path], frames: int) -> list[dict]:
    from melset import audio, features

    rows: dict[tuple, dict] = {}
    for clip, sr in product(clips, RATES):
        base = band_recipe(sr, max(N_FFTS), "full", frames)
        y = audio.decode(clip, sr, base.input_frames_needed, decoder="soundfile").samples
        for n_fft, band in product(N_FFTS, BANDS):
            r0 = band_recipe(sr, n_fft, band, frames)
            part = y[: r0.samples_needed]
            power = oracle_power(part, r0)
            for top_db, amin, scaling in product(TOP_DBS, AMINS, SCALINGS):
                r = band_recipe(sr, n_fft, band, frames, top_db=top_db, amin=amin, scaling=scaling)
                t = time.perf_counter()
                with np.errstate(all="ignore"):
                    ours = features.log_mel(part, r)
                took = time.perf_counter() - t
                diff = float(np.abs(ours - oracle(power, r)).max())
                key = (sr, n_fft, band, r.n_mels, top_db, amin, scaling)
                row = rows.setdefault(key, {"diff": -1.0, "clip": "", "ms": [], "f64": 0})
                row["ms"].append(took * 1000)
                row["f64"] += precision_of(part, r) == "float64"
                if diff > row["diff"]:
                    row.update(diff=diff, clip=clip.stem)
        print(f"  {clip.stem} at {sr} Hz done", file=sys.stderr)
    out = []
    for (sr, n_fft, band, n_mels, top_db, amin, scaling), row in rows.items():
        out.append(
            dict(
                sr=sr,
                n_fft=n_fft,
                band=band,
                n_mels=n_mels,
                top_db=top_db,
                amin=amin,
                scaling=scaling,
                diff=row["diff"],
                clip=row["clip"],
                ms=statistics.mean(row["ms"]),
                f64=row["f64"],
                bad=row["diff"] > BOUND[scaling],
            )  # fmt: skip
        )
    return out


def default_timing(clips: list[Path], repeats: int) -> tuple[float, str]:
    """Median ms of features.log_mel for the default recipe (1,024 frames) per clip, and the precisions used."""
    from melset import audio, features
    from melset.recipe import Recipe

    r = Recipe()
    ys = [audio.decode(c, r.sample_rate, r.input_frames_needed, decoder="soundfile").samples for c in clips]
    times = []
    for _ in range(repeats):
        for y in ys:
            t = time.thread_time()
            features.log_mel(y, r)
            times.append(time.thread_time() - t)
    used = sorted({precision_of(y, r) for y in ys})
    return statistics.median(times) * 1000, ", ".join(used)


def table(rows: list[dict], show_all: bool) -> str:
    head = (
        "| sr | n_fft | band (mels) | top_db | amin | scaling | worst diff | bound | clip | float64 clips | ms/clip |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in sorted(rows, key=lambda r: -r["diff"] / BOUND[r["scaling"]]):
        if not (show_all or r["bad"]):
            continue
        lines.append(
            f"| {r['sr']} | {r['n_fft']} | {r['band']} ({r['n_mels']}) | {r['top_db'] or 'none'} | {r['amin']:g} |"
            f" {r['scaling']} | {r['diff']:.2e} | {BOUND[r['scaling']]:g} | {r['clip']} | {r['f64']} | {r['ms']:.2f} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    lines = ["| group | recipes | over the bound | worst scaled diff | worst dB diff |", "|---|---|---|---|---|"]
    groups = [("all", None, None), ("top_db 80", "top_db", 80.0), ("top_db none", "top_db", None)]
    groups += [(f"amin {a:g}", "amin", a) for a in AMINS] + [(f"band {b}", "band", b) for b in BANDS]
    groups += [(f"{s} Hz", "sr", s) for s in RATES] + [(f"n_fft {n}", "n_fft", n) for n in N_FFTS]
    for name, key, value in groups:
        sel = [r for r in rows if key is None or r[key] == value]
        scaled = [r["diff"] for r in sel if r["scaling"] != "none"]
        db = [r["diff"] for r in sel if r["scaling"] == "none"]
        lines.append(f"| {name} | {len(sel)} | {sum(r['bad'] for r in sel)} | {max(scaled):.2e} | {max(db):.2e} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=128, help="frames kept per clip in the grid")
    ap.add_argument("--clips", type=int, default=len(CLIPS), help="how many of the clips to use")
    ap.add_argument("--repeats", type=int, default=5, help="passes over the clips when timing the default recipe")
    ap.add_argument("--all", action="store_true", help="list every recipe, not only those over the bound")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    clips = [c for c in CLIPS if c.exists()][: args.clips]
    print(f"{len(clips)} clips: {', '.join(c.name for c in clips)}", file=sys.stderr)
    warnings.simplefilter("ignore")
    ms, used = default_timing(clips, args.repeats)
    rows = grid(clips, args.frames)
    text = (
        f"default recipe: features.log_mel {ms:.2f} ms per clip (median, CPU time, 1,024 frames), precision {used}\n\n"
        f"{len(rows)} recipes x {len(clips)} clips, {args.frames} frames each\n\n{summary(rows)}\n\n{table(rows, args.all)}\n"
    )
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
