"""The one decode front door: any audio file -> mono float32 at the recipe's rate, or a reason.

The path is what `librosa.load(path)` does: libsndfile (through soundfile) decodes,
channels are averaged, soxr 'HQ' resamples. Unlike librosa it decodes only the first
seconds the recipe needs (plus a margin that keeps soxr's output over them bit-identical).
Decoder "auto" mixes stereo MP3 (Layer III) to mono inside the system's libmpg123, the
decoder libsndfile uses, where every frame read allows it (`mono_mix`: float32 rounding
apart); "soundfile" keeps librosa's samples bit for bit. Files libsndfile cannot read
(M4A/AAC, ...) go through PyAV's FFmpeg when installed. Every failure becomes an
`AudioError` whose message a user can act on.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import sys
from dataclasses import dataclass

import numpy as np

# Tolerance for "the header promised more audio than the stream holds": MP3 headers may be
# off by a frame or two, and Xing/VBR estimates by about a percent.
_TRUNCATION_SLACK_FRAMES = 2 * 1152
_TRUNCATION_SLACK_RATIO = 0.02
_SNIFF_BYTES = 300 * 1024
# The most samples (per channel) one byte of MPEG audio can carry: 24 in Layer III at 8 kbps
# and 24 kHz, with room for free-format streams. A header that announces more than this times
# the file's size is wrong or the file is cut short: the whole stream is decoded to tell.
_MPEG_MAX_FRAMES_PER_BYTE = 48
_READ_CHUNK_FRAMES = 1 << 20  # reading a whole file: what one read asks of libsndfile
_UNKNOWN_LENGTH = 2**62  # libsndfile reports SF_COUNT_MAX frames when a header gives no length


class AudioError(Exception):
    """A file that cannot be turned into audio; str() is the reason in words."""


@dataclass(frozen=True)
class Decoded:
    samples: np.ndarray  # mono float32 at `sample_rate`
    sample_rate: int
    native_rate: int
    channels: int
    duration_s: float  # the whole file's duration: exact when reached_end, else the header's
    reached_end: bool  # the whole stream was decoded (the file is not longer than what was read)
    backend: str  # "soundfile" (libsndfile), "mpg123" (libmpg123's mono mix) or "av" (FFmpeg)


def decode(path: str | os.PathLike, sample_rate: int = 22050, max_frames_at=None, decoder: str = "auto") -> Decoded:
    """Decode `path` to mono float32 at `sample_rate`.

    max_frames_at: None to decode everything, or a function native_rate -> how many frames at
    the file's own rate to decode (the recipe's `input_frames_needed`).
    Raises FileNotFoundError for a missing file, AudioError for anything else that fails.
    """
    path = os.fspath(path)
    checked = _check_file(path)
    libsndfile_said = None
    if decoder != "av":
        try:
            return _decode_soundfile(path, sample_rate, max_frames_at, checked, mix=decoder == "auto")
        except _NotForLibsndfile as exc:
            kind = sniff(path)
            if decoder == "soundfile" or kind.reason:
                raise AudioError(
                    kind.reason or f"{kind.what}: libsndfile cannot read it ({_clean(str(exc))})"
                ) from None
            libsndfile_said = _clean(str(exc))
    return _decode_av(path, sample_rate, max_frames_at, libsndfile_said)


# -- file checks -----------------------------------------------------------------------------


def _check_file(path: str) -> os.stat_result:
    """The file's stat, once it is known to be a readable, non-empty regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise AudioError("broken symbolic link: its target does not exist") from None
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AudioError("symbolic link loop: the path never reaches a file") from None
        raise AudioError(f"cannot read the file: {exc.strerror.lower()}") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError("a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        raise AudioError("not a regular file (a pipe, socket or device)")
    if st.st_size == 0:
        raise AudioError("empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioError("cannot read the file: permission denied")
    return st


# -- libsndfile ------------------------------------------------------------------------------


class _NotForLibsndfile(Exception):
    pass


def _decode_soundfile(
    path: str, sample_rate: int, max_frames_at, checked: os.stat_result, mix: bool = False
) -> Decoded:
    """libsndfile's decode; with `mix`, stereo Layer III is mixed in libmpg123 instead, unless
    the file changed since it was `checked` (its stat before libsndfile opened it)."""
    import soundfile as sf

    from melset.audio import mono_mix

    try:
        # a name that is not UTF-8 (kept by Python as surrogates) opens only as bytes on POSIX
        f = sf.SoundFile(path if sys.platform == "win32" else os.fsencode(path))
    except sf.LibsndfileError as exc:
        # libsndfile's own words ("File does not exist or is not a regular file") mislead
        # for unknown formats; `sniff` finds the real reason.
        raise _NotForLibsndfile(exc.error_string) from None
    except (OSError, RuntimeError) as exc:
        raise _NotForLibsndfile(str(exc)) from None
    with f:
        native, channels, header_frames = f.samplerate, f.channels, f.frames
        if f.format in ("WAV", "WAVEX"):
            # libsndfile quietly shortens a WAV whose data chunk promises more than the file holds
            header_frames = max(header_frames, _wav_declared_frames(path) or 0)
        if native <= 0 or channels <= 0:
            raise AudioError(f"invalid header: {native} Hz, {channels} channels")
        want = -1 if max_frames_at is None else int(max_frames_at(native))
        known_length = 0 < header_frames < _UNKNOWN_LENGTH
        mpeg_length = f.subtype.startswith("MPEG_LAYER") and known_length
        plausible = header_frames <= _MPEG_MAX_FRAMES_PER_BYTE * checked.st_size
        if mpeg_length and not plausible:
            # more than a stream of this size can hold: the file was cut short, or its Xing count
            # is wrong (librosa.load then tries to allocate it). The whole stream is decoded, so
            # the truncation check below compares the header with the true length.
            want = -1
        # libsndfile has judged the file (format, rate, channels, length); libmpg123 may mix it.
        # Layer III only (libmpg123 mixes nothing in Layers I and II: it keeps the left channel),
        # and never past the length libsndfile would read.
        mixed = None
        if mix and f.subtype == "MPEG_LAYER_III" and channels == 2 and known_length:
            mixed = mono_mix.decode(path, min(want, header_frames) if want >= 0 else header_frames, native)
            after = os.stat(path)
            if (checked.st_ino, checked.st_size, checked.st_mtime_ns) != (
                after.st_ino,
                after.st_size,
                after.st_mtime_ns,
            ):
                mixed = None  # replaced since libsndfile opened it: libsndfile's open handle decides
        try:
            if mixed is not None:
                data = mixed[:, None]
            elif want >= 0:
                data = f.read(frames=want, dtype="float32", always_2d=True)
            elif mpeg_length and plausible:
                # one read of the header's length, as librosa reads: libsndfile's MPEG decoder
                # gives other samples after a read that ends mid-stream (0.32 apart from the
                # 2**20th frame on on some 32 kbps files, when read in chunks of 2**20)
                data = f.read(frames=-1, dtype="float32", always_2d=True)
            else:
                data = _read_all(f)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"decoding failed: libsndfile says {_clean(exc)}") from None
    reached_end = want < 0 or len(data) < want
    if len(data) == 0:
        announced = ""
        if header_frames >= _UNKNOWN_LENGTH:  # a Xing count of 1, for one
            announced = (
                " (libsndfile finds no length in its header and reads nothing; re-encode the file or"
                " rewrite its VBR header)"
            )
        elif 0 < header_frames < native:
            announced = f" (its header announces {header_frames} samples)"
        raise AudioError(sniff(path).reason or f"no audio frames could be decoded{announced}")
    if reached_end and known_length:
        slack = max(_TRUNCATION_SLACK_FRAMES, _TRUNCATION_SLACK_RATIO * header_frames)
        if len(data) + slack < header_frames:
            raise AudioError(
                f"truncated: the stream ends after {len(data) / native:.1f} s of the {header_frames / native:.1f} s its header announces"
            )
    duration = (len(data) if reached_end else header_frames) / native
    y = _finish(data[:, 0] if mixed is not None else to_mono(data), native, sample_rate, reached_end)
    return Decoded(y, sample_rate, native, channels, duration, reached_end, "soundfile" if mixed is None else "mpg123")


def _read_all(f) -> np.ndarray:
    """The rest of an open SoundFile, as librosa's ``read(frames=-1)`` reads it (up to the
    header's length), but in chunks: a header may announce terabytes, or a length libsndfile
    then calls unseekable."""
    chunks = []
    while True:
        chunk = f.read(frames=_READ_CHUNK_FRAMES, dtype="float32", always_2d=True)
        chunks.append(chunk)
        if len(chunk) < _READ_CHUNK_FRAMES:
            return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def _wav_declared_frames(path: str) -> int | None:
    """Frames the RIFF header's data chunk announces (None when unreadable or open-ended)."""
    import struct

    try:
        with open(path, "rb") as f:
            if f.read(12)[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                head = f.read(8)
                if len(head) < 8:
                    return None
                cid, size = head[:4], struct.unpack("<I", head[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                elif cid == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None


# -- FFmpeg through PyAV ---------------------------------------------------------------------


def _clean(exc: Exception | str) -> str:
    """A library's error message without its boilerplate ("Error : ", errno numbers, the path)."""
    text = exc if isinstance(exc, str) else getattr(exc, "strerror", None) or str(exc)
    return text.replace("Error : ", "").strip().rstrip(".")


def _decode_av(path: str, sample_rate: int, max_frames_at, libsndfile_said: str | None = None) -> Decoded:
    try:
        import av
    except ImportError:
        raise AudioError(
            f"{sniff(path).what}: libsndfile cannot read it; install melset[av] (PyAV/FFmpeg) to try FFmpeg"
        ) from None
    try:
        with av.open(path, metadata_errors="ignore") as container:
            streams = container.streams.audio
            if not streams:
                raise AudioError("no audio stream in the file")
            stream = streams[0]
            native = stream.codec_context.sample_rate or stream.rate
            channels = stream.codec_context.channels
            want = None if max_frames_at is None else int(max_frames_at(native))
            chunks, got = [], 0
            for frame in container.decode(stream):
                # planar float: (channels, n)
                arr = frame.to_ndarray()
                if not frame.format.is_planar:
                    arr = arr.reshape(-1, frame.layout.nb_channels).T
                chunks.append(np.ascontiguousarray(arr.T, dtype=np.float32))
                got += arr.shape[1]
                if want is not None and got >= want:
                    break
            header_frames = None
            if stream.duration is not None and stream.time_base is not None:
                header_frames = float(stream.duration * stream.time_base) * native
    except AudioError:
        raise
    except Exception as exc:  # FFmpeg raises many kinds; all mean "could not decode"
        kind = sniff(path)
        said = f"libsndfile: {libsndfile_said}; FFmpeg: {_clean(exc)}" if libsndfile_said else f"FFmpeg: {_clean(exc)}"
        raise AudioError(kind.reason or f"{kind.what}: cannot be decoded ({said})") from None
    if got == 0:
        raise AudioError("no audio frames could be decoded")
    data = np.concatenate(chunks)
    reached_end = want is None or got < want
    if want is not None:
        data = data[:want]
    duration = len(data) / native if reached_end or not header_frames else header_frames / native
    y = _finish(to_mono(data), native, sample_rate, reached_end)
    return Decoded(y, sample_rate, native, max(channels, data.shape[1]), duration, reached_end, "av")


# -- shared steps ----------------------------------------------------------------------------


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels of (n, channels) float32 exactly as librosa.to_mono (same sums, same order)."""
    if data.shape[1] == 1:
        return data[:, 0].copy()
    y = data[:, 0] + data[:, 1]
    for c in range(2, data.shape[1]):
        y += data[:, c]
    y /= np.float32(data.shape[1])
    return y


def _finish(y: np.ndarray, native: int, sample_rate: int, reached_end: bool) -> np.ndarray:
    if native != sample_rate:
        import soxr

        n_in = len(y)
        y = np.asarray(soxr.resample(y, native, sample_rate, quality="soxr_hq"), dtype=np.float32)
        if reached_end:
            # librosa.resample fixes the length to ceil(n * ratio)
            n = int(math.ceil(n_in * float(sample_rate) / native))
            y = y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))
    # checked after resampling (NaN and inf spread through it): half the samples to look at
    if not np.isfinite(y).all():
        raise AudioError("the audio contains NaN or infinite sample values")
    return y


# -- sniffing: what is this file, in words ----------------------------------------------------


@dataclass(frozen=True)
class Sniffed:
    kind: str  # "mp3", "html", "text", "mp4", "binary", ...
    reason: str | None  # why it cannot be audio, or None when it may be audio
    what: str = "an audio file"  # how to name it in a message


_MAGIC = [
    (b"RIFF", "wav", "a WAV file"),
    (b"RIFX", "wav", "a WAV file"),
    (b"fLaC", "flac", "a FLAC file"),
    (b"OggS", "ogg", "an Ogg file"),
    (b".snd", "au", "an AU file"),
    (b"FORM", "aiff", "an AIFF file"),
    (b"ID3", "mp3", "an MP3 file"),
]


def sniff(path: str) -> Sniffed:
    """Look at a file's first bytes and say what it is; used to explain failures."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as exc:
        return Sniffed("unreadable", f"cannot read the file: {exc.strerror.lower()}")
    if not head:
        return Sniffed("empty", "empty file (0 bytes)")
    ext = os.path.splitext(path)[1].lower().lstrip(".") or "audio"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in stripped[:1024]:
        first = head.lstrip()[:40].decode("utf-8", "replace").split("\n")[0]
        return Sniffed("html", f"not audio: an HTML page saved as .{ext} (starts with {first!r})")
    if stripped.startswith(b"<?xml"):
        return Sniffed("xml", f"not audio: an XML document saved as .{ext}")
    if head[4:8] == b"ftyp":
        return Sniffed("mp4", None, "an MP4/M4A file (AAC or ALAC)")
    for magic, kind, what in _MAGIC:
        if head.startswith(magic):
            if kind == "mp3":
                return _sniff_mp3(head, has_id3=True)
            return Sniffed(kind, None, what)
    if _mostly_text(head):
        return Sniffed("text", f"not audio: a text file saved as .{ext}")
    if ext == "mp3" or _mp3_frames(head, 0):
        return _sniff_mp3(head, has_id3=False)
    return Sniffed("binary", None, "not a recognised audio format")


def _mostly_text(head: bytes) -> bool:
    sample = head[:4096]
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in sample)
    return printable >= 0.95 * len(sample)


def _sniff_mp3(head: bytes, has_id3: bool) -> Sniffed:
    start = 0
    if has_id3 and len(head) >= 10:
        size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        start = 10 + size
        if start >= len(head):
            return Sniffed(
                "mp3", None, "an MP3 file"
            )  # tag larger than the sniffed bytes (cover art): trust the decoder
    if _mp3_frames(head, start):
        return Sniffed("mp3", None, "an MP3 file")
    kb = max(1, (len(head) - start) // 1024)
    return Sniffed("mp3", f"not an MP3 stream: no valid frame header in {kb} KB")


_BITRATES = {  # (version_bit, layer) -> kbps table, index 1..14
    (1, 1): [32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
    (1, 2): [32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
    (1, 3): [32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    (0, 1): [32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
    (0, 2): [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    (0, 3): [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _frame_length(h: bytes) -> int | None:
    """Length in bytes of the MPEG audio frame whose 4-byte header is `h`, or None if invalid."""
    if h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return None
    version = (h[1] >> 3) & 3
    layer_bits = (h[1] >> 1) & 3
    br_idx = h[2] >> 4
    sr_idx = (h[2] >> 2) & 3
    if version == 1 or layer_bits == 0 or br_idx in (0, 15) or sr_idx == 3:
        return None
    layer = 4 - layer_bits
    kbps = _BITRATES[(1 if version == 3 else 0, layer)][br_idx - 1] * 1000
    rate = _RATES[version][sr_idx]
    pad = (h[2] >> 1) & 1
    if layer == 1:
        return (12 * kbps // rate + pad) * 4
    mult = 144 if (layer == 2 or version == 3) else 72
    return mult * kbps // rate + pad


def _mp3_frames(head: bytes, start: int) -> bool:
    """True when three MPEG audio frame headers follow one another somewhere in `head`."""
    pos = head.find(b"\xff", start)
    while 0 <= pos < len(head) - 4:
        n, length = 0, _frame_length(head[pos : pos + 4])
        p = pos
        while length and n < 3 and p + length + 4 <= len(head):
            p += length
            length = _frame_length(head[p : p + 4])
            n += 1
        if n >= 3 or (length and n >= 1 and p + length >= len(head)):
            return True
        pos = head.find(b"\xff", pos + 1)
    return False
