"""libsndfile's decode, as librosa.load reads a file (through soundfile), with its length checks:
a header that promises more than the stream holds is a truncated file, and a whole MP3 is read
in one read, as librosa reads it. Stereo Layer III may be mixed in libmpg123 (`mono_mix`)."""

from __future__ import annotations

import os
import sys

import numpy as np

from melset.audio import mono_mix
from melset.audio.decoded import AudioError, Decoded, FileBytes, clean, finish, open_binary, to_mono
from melset.audio.sniffing import sniff

# Tolerance for "the header promised more audio than the stream holds": MP3 headers may be
# off by a frame or two, and Xing/VBR estimates by about a percent.
_TRUNCATION_SLACK_FRAMES = 2 * 1152
_TRUNCATION_SLACK_RATIO = 0.02
# The most samples (per channel) one byte of MPEG audio can carry: 24 in Layer III at 8 kbps
# and 24 kHz, with room for free-format streams. A header that announces more than this times
# the file's size is wrong or the file is cut short: the whole stream is decoded to tell.
_MPEG_MAX_FRAMES_PER_BYTE = 48
_READ_CHUNK_FRAMES = 1 << 20  # reading a whole file: what one read asks of libsndfile
_UNKNOWN_LENGTH = 2**62  # libsndfile reports SF_COUNT_MAX frames when a header gives no length


class NotForLibsndfile(Exception):
    """libsndfile cannot open the file at all (another decoder may)."""


def decode(
    path: str | FileBytes, sample_rate: int, max_frames_at, checked: os.stat_result | None, mix: bool = False
) -> Decoded:
    """libsndfile's decode; with `mix`, stereo Layer III is mixed in libmpg123 instead, unless
    the file changed since it was `checked` (its stat before libsndfile opened it; None for
    bytes in memory, which cannot change)."""
    import soundfile as sf

    try:
        if isinstance(path, FileBytes):
            f = sf.SoundFile(open_binary(path))  # libsndfile's virtual I/O: the same decoder, bytes in memory
        else:
            # a name that is not UTF-8 (kept by Python as surrogates) opens only as bytes on POSIX
            f = sf.SoundFile(path if sys.platform == "win32" else os.fsencode(path))
    except sf.LibsndfileError as exc:
        # libsndfile's own words ("File does not exist or is not a regular file") mislead
        # for unknown formats; `sniff` finds the real reason.
        raise NotForLibsndfile(exc.error_string) from None
    except (OSError, RuntimeError) as exc:
        raise NotForLibsndfile(str(exc)) from None
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
        size = path.size if checked is None else checked.st_size
        plausible = header_frames <= _MPEG_MAX_FRAMES_PER_BYTE * size
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
            after = checked if checked is None else os.stat(path)
            if checked is not None and (checked.st_ino, checked.st_size, checked.st_mtime_ns) != (
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
            raise AudioError(f"decoding failed: libsndfile says {clean(exc)}") from None
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
    y = finish(data[:, 0] if mixed is not None else to_mono(data), native, sample_rate, reached_end)
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


def _wav_declared_frames(path: str | FileBytes) -> int | None:
    """Frames the RIFF header's data chunk announces (None when unreadable or open-ended)."""
    import struct

    try:
        with open_binary(path) as f:
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
