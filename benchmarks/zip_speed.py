"""FMA's zip read in place vs unpacked first.

Copies the real 30 s MP3s of the shipped sample under distinct FMA names (as
benchmarks/storage_speed.py does) and packs them as FMA ships them: fma_small.zip with
bzip2-compressed members fma_small/NNN/NNNNNN.mp3, a fma_small/checksums file (sha1sum's
format) and a README (tests/conftest.py's fma_zip). Then:
  (a) per clip, in this process: the time to bzip2-decompress a member (zipfile's read, its
      CRC-32 check included), to SHA-1 it (melset checks each file against `checksums`), and
      to decode it (melset.audio.decode of the bytes in memory, with the default recipe's
      frames), and the decode of the same clip from a local file; medians over --per-clip
      members;
  (b) whole runs, interleaved --repeats times: "unzip then extract" (zipfile's extractall,
      then `melset extract --audio FOLDER`) vs "extract from the zip" (`melset extract
      --audio fma_small.zip`), both `--workers W --quiet` over the same tracks.csv: wall and
      CPU seconds (all processes; the CPU share tells how much of the machine the runs got on
      a shared machine), and the disk each needs; from these, after how many extractions
      over the same audio (several recipes) unpacking once has paid for itself.

    python benchmarks/zip_speed.py                      # 400 clips, 2 workers, 3 repeats
    python benchmarks/zip_speed.py --clips 100 --repeats 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from storage_speed import GOOD, build_clips, folder_bytes, run_extract  # noqa: E402

TOP = "fma_small"


class _OnceEach:
    """A bzip2 compressor for zipfile that compresses each distinct content once: the clips are
    copies of a few recordings, and bzip2 at ~5 MB/s would take minutes over 400 of them. Its
    output is bz2.compress's, byte for byte what zipfile's own compressor writes."""

    cache: dict[bytes, bytes] = {}

    def compress(self, data: bytes) -> bytes:
        import bz2

        key = hashlib.sha1(data).digest()
        if key not in self.cache:
            self.cache[key] = bz2.compress(data)
        return self.cache[key]

    def flush(self) -> bytes:
        return b""


def build_zip(audio: Path, dst: Path) -> Path:
    """audio/ as FMA's fma_small.zip: bzip2 members under fma_small/, a checksums file, a README."""
    lines = []
    own = zipfile._get_compressor  # writestr hands each member to one compress() call, then flush()
    zipfile._get_compressor = lambda kind, level=None: _OnceEach() if kind == zipfile.ZIP_BZIP2 else own(kind, level)
    try:
        _write_zip(audio, dst, lines)
    finally:
        zipfile._get_compressor = own
    with zipfile.ZipFile(dst) as z:  # every member reads back (CRC-32 checked) as the file it came from
        for path in sorted(p for p in audio.rglob("*") if p.is_file())[:16]:
            assert z.read(f"{TOP}/{path.relative_to(audio).as_posix()}") == path.read_bytes()
    return dst


def _write_zip(audio: Path, dst: Path, lines: list[str]) -> None:
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_BZIP2) as z:
        for path in sorted(p for p in audio.rglob("*") if p.is_file()):
            rel = path.relative_to(audio).as_posix()
            data = path.read_bytes()
            lines.append(f"{hashlib.sha1(data).hexdigest()}  {rel}")
            z.writestr(f"{TOP}/{rel}", data)
        z.writestr(f"{TOP}/checksums", "\n".join(lines) + "\n")
        z.writestr(f"{TOP}/README.txt", "An FMA-style archive made by melset's benchmarks/zip_speed.py.\n")


def per_clip(arch: Path, audio: Path, count: int) -> dict:
    """Medians (ms) over `count` members: bzip2 decompress, SHA-1, decode from memory, decode from a file."""
    from melset import audio as melaudio
    from melset.audio import InMemory
    from melset.recipe import Recipe

    recipe = Recipe()

    def decode(src):
        return melaudio.decode(src, recipe.sample_rate, recipe.input_frames_needed, recipe.decoder)

    out: dict[str, list[float]] = {"decompress": [], "sha1": [], "decode": [], "decode_file": [], "mb": []}
    with zipfile.ZipFile(arch) as zf:
        members = sorted((i for i in zf.infolist() if i.filename.endswith(".mp3")), key=lambda i: i.filename)[:count]
        decode(InMemory(members[0].filename, zf.read(members[0])))  # warm: libraries, tables
        for info in members:
            t = time.perf_counter()
            data = zf.read(info)
            out["decompress"].append(time.perf_counter() - t)
            t = time.perf_counter()
            hashlib.sha1(data).hexdigest()
            out["sha1"].append(time.perf_counter() - t)
            t = time.perf_counter()
            decode(InMemory(info.filename, data))
            out["decode"].append(time.perf_counter() - t)
            path = audio / info.filename[len(TOP) + 1 :]
            t = time.perf_counter()
            decode(str(path))
            out["decode_file"].append(time.perf_counter() - t)
            out["mb"].append(info.file_size / 1e6)
    return {k: (1000 * median(v) if k != "mb" else median(v)) for k, v in out.items()}


def extract(tracks: Path, audio: Path, work: Path, workers: int) -> tuple[float, float]:
    """(wall s, CPU s of all its processes) of one `melset extract` (storage_speed's runner)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    r = run_extract(tracks, str(audio), work, workers, env, None)
    return r["wall"], r["cpu"]


def unzip(arch: Path, dst: Path) -> tuple[float, float]:
    """(wall s, CPU s) of zipfile's extractall (one thread)."""
    shutil.rmtree(dst, ignore_errors=True)
    t, c = time.perf_counter(), time.process_time()
    with zipfile.ZipFile(arch) as zf:
        zf.extractall(dst)
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each (median and spread)")
    ap.add_argument("--per-clip", type=int, default=80, help="members timed one by one for (a)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args()

    from melset.system import versions

    n = args.clips
    work = Path(tempfile.mkdtemp(prefix="melset-zip-"))
    try:
        tracks, audio = build_clips(work, n)
        t = time.perf_counter()
        arch = build_zip(audio, work / "fma_small.zip")
        built = time.perf_counter() - t
        zip_size, folder_size = arch.stat().st_size, folder_bytes(audio)
        print(
            f"{n} clips (copies of the sample's {len(GOOD)} good 30 s MP3s, {folder_size / n / 1e6:.2f} MB each on "
            f"average), {args.workers} workers, {os.cpu_count()} cores; {platform.platform()}"
        )
        print(f"fma_small.zip (bzip2 members, a checksums file) built in {built:.0f} s (not timed below)")

        pc = per_clip(arch, audio, min(args.per_clip, n))
        print()
        print(f"(a) per clip, one process, median over {min(args.per_clip, n)} members ({pc['mb']:.2f} MB median):")
        print(f"    bzip2 decompress (zipfile read, CRC-32)   {pc['decompress']:6.1f} ms")
        print(f"    SHA-1 against checksums                   {pc['sha1']:6.1f} ms")
        print(f"    decode from memory (melset.audio.decode)  {pc['decode']:6.1f} ms")
        print(f"    decode from a local file                  {pc['decode_file']:6.1f} ms")
        print(f"    decompress / decode = {pc['decompress'] / pc['decode']:.2f}")

        unpacked = work / "unpacked"
        times: dict[str, list[float]] = {"unzip": [], "extract_folder": [], "extract_zip": []}
        cpu: dict[str, list[float]] = {"unzip": [], "extract_folder": [], "extract_zip": []}

        def note(key: str, got: tuple[float, float]) -> None:
            times[key].append(got[0])
            cpu[key].append(got[1])

        for _ in range(args.repeats):  # interleaved: unzip + extract folder, extract zip, ...
            note("unzip", unzip(arch, unpacked))
            note("extract_folder", extract(tracks, unpacked / TOP, work, args.workers))
            unpacked_size = folder_bytes(unpacked)
            store_size = folder_bytes(work / "store")
            shutil.rmtree(unpacked)
            note("extract_zip", extract(tracks, arch, work, args.workers))
        times["unzip_then_extract"] = [u + e for u, e in zip(times["unzip"], times["extract_folder"])]
        cpu["unzip_then_extract"] = [u + e for u, e in zip(cpu["unzip"], cpu["extract_folder"])]
        m = {k: median(v) for k, v in times.items()}
        c = {k: median(v) for k, v in cpu.items()}

        def row(label: str, key: str, disk: str) -> None:
            secs = times[key]
            print(
                f"    {label:28s} {m[key]:6.1f} s {n / m[key]:6.1f} clips/s {f'({min(secs):.1f}-{max(secs):.1f})':>13s} "
                f"{c[key]:6.1f} s  {disk}"
            )

        print()
        print(f"(b) whole runs, {n} clips, --workers {args.workers}, median of {args.repeats} interleaved:")
        print(f"    {'':28s} {'wall':>8s} {'':14s} {'(spread s)':>13s} {'CPU':>8s}  disk beside the store")
        row("unzip (zipfile.extractall)", "unzip", f"+{unpacked_size / 1e6:.0f} MB unpacked")
        row("extract the unpacked folder", "extract_folder", "")
        row("unzip then extract", "unzip_then_extract", f"{(zip_size + unpacked_size) / 1e6:.0f} MB with the zip kept")
        row("extract from the zip", "extract_zip", f"{zip_size / 1e6:.0f} MB (the zip)")
        print(
            f"    the store: {store_size / 1e6:.0f} MB either way; bzip2 saves "
            f"{100 * (1 - zip_size / unpacked_size):.1f}% of the MP3s' size"
        )
        print(
            f"    one pass: extracting from the zip takes {m['extract_zip'] / m['unzip_then_extract']:.2f}x the wall "
            f"time of unzip then extract, {c['extract_zip'] / c['unzip_then_extract']:.2f}x its CPU"
        )
        gain = m["extract_zip"] - m["extract_folder"]
        if gain > 0:
            k = m["unzip"] / gain
            print(
                f"    each extraction from the unpacked folder saves {gain:.1f} s; unpacking ({m['unzip']:.1f} s) pays "
                f"for itself from extraction {max(1, int(k) + 1)} over the same audio (break-even at {k:.2f} extractions)"
            )
        else:
            print("    extracting the unpacked folder is no faster than the zip here: unpacking never pays off")
        busy = c["extract_folder"] / (m["extract_folder"] * min(args.workers, os.cpu_count() or 1))
        print(
            f"    (the runs had {100 * busy:.0f}% of {min(args.workers, os.cpu_count() or 1)} cores: CPU / (wall x cores) "
            "of extracting the folder; other work on the machine takes the rest)"
        )
        vers = versions("melset", "soundfile", "libsndfile")
        print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
        if args.json:
            result = {
                "clips": n,
                "workers": args.workers,
                "cores": os.cpu_count(),
                "per_clip_ms": pc,
                "seconds": times,
                "cpu_seconds": cpu,
                "zip_bytes": zip_size,
                "unpacked_bytes": unpacked_size,
                "store_bytes": store_size,
            }
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
