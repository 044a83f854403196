"""The decoders side by side: speed per clip and deviation from librosa.

    python benchmarks/decoders.py [--n 30] [--files DIR] [--dtype float16] [--rounds 3]

For each decoder (auto, the default: stereo MP3 mixed to mono inside libmpg123 where the
stream allows it exactly; soundfile: libsndfile as librosa.load uses it; av: FFmpeg through
PyAV), runs the whole recipe on the benchmark clips (30 s, 44.1 kHz stereo, 320 kbps MP3;
or every audio file under --files that the notebook would keep) in one process and reports
ms per clip (the fastest of --rounds interleaved rounds) and the largest difference of the
stored matrix from librosa + scikit-learn.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
import sys
from pathlib import Path

import numpy as np

from melset.recipe import Recipe
from melset.track import process
from melset.system import keep_freed_memory


sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_speed import WORKDIR, encoded_clips  # noqa: E402


def reference(path: str) -> np.ndarray:
    import librosa
    from sklearn.preprocessing import MinMaxScaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, _ = librosa.load(path)
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, n_mels=128)[:, :1024], ref=np.max)
    return MinMaxScaler().fit_transform(mel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=Path, default=WORKDIR / "encoded")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--dtype", default="float32", choices=("float16", "float32"))
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each decoder's fastest is shown")
    args = ap.parse_args()
    if args.files == WORKDIR / "encoded":
        files = encoded_clips(args.files, args.n)
    else:  # every clip the notebook keeps (long enough, decodable)
        files = [str(p) for p in sorted(args.files.rglob("*.mp3"))]
        files = [f for f in files if process(f, Recipe()).status == "ok"][: args.n]
    keep_freed_memory()
    refs = {f: reference(f) for f in files}
    print(f"{len(files)} clips, recipe in {args.dtype}, one process, CPU time of the fastest of {args.rounds} rounds")
    devs: dict[str, str] = {}
    best: dict[str, float] = {}
    for _ in range(args.rounds):  # interleaved; the fastest round of each decoder counts
        for decoder in ("auto", "soundfile", "av"):
            recipe = Recipe(decoder=decoder, dtype=args.dtype)
            process(files[0], recipe)
            t = time.process_time()
            results = [process(f, recipe) for f in files]
            best[decoder] = min(best.get(decoder, 1e9), (time.process_time() - t) / len(files) * 1000)
            if decoder not in devs:
                dev = [float(np.abs(r.mel.astype(np.float32) - refs[f]).max()) for f, r in zip(files, results)]
                mean = [float(np.abs(r.mel.astype(np.float32) - refs[f]).mean()) for f, r in zip(files, results)]
                used = sorted({r.decoder for r in results})
                devs[decoder] = f"max |diff| vs librosa: worst clip {max(dev):.2e}, median clip {np.median(dev):.2e}; "
                devs[decoder] += f"mean |diff| {np.mean(mean):.1e}   ({'+'.join(used)})"
    for decoder, ms in best.items():
        print(f"{decoder:10s} {ms:6.1f} ms/clip   {devs[decoder]}")
    decode_only(files)


def decode_only(files: list[str], tries: int = 5) -> None:
    """The decode and resample alone, auto against soundfile, on the stereo clips: each clip's
    fastest of `tries` (CPU time of this thread), which a busy machine disturbs least."""
    import soundfile as sf

    from melset import audio

    stereo = [f for f in files if sf.info(f).channels == 2]
    if not stereo:
        return
    needed = Recipe().input_frames_needed
    total = dict.fromkeys(("auto", "soundfile"), 0.0)
    for path in stereo:
        for decoder in total:
            fastest = math.inf
            for _ in range(tries):
                t = time.thread_time()
                audio.decode(path, 22050, needed, decoder=decoder)
                fastest = min(fastest, time.thread_time() - t)
            total[decoder] += fastest
    auto, plain = (1000 * total[d] / len(stereo) for d in ("auto", "soundfile"))
    print(
        f"decode + resample of {len(stereo)} stereo clips, each clip's fastest of {tries}: "
        f"auto {auto:.1f} ms, soundfile {plain:.1f} ms ({100 * (1 - auto / plain):.0f}% less)"
    )


if __name__ == "__main__":
    main()
