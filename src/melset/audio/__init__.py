"""The one decode front door: any audio file -> mono float32 at the recipe's rate, or a reason.

The path is what `librosa.load(path)` does: libsndfile (through soundfile) decodes,
channels are averaged, soxr 'HQ' resamples. Unlike librosa it decodes only the first
seconds the recipe needs (plus a margin that keeps soxr's output over them bit-identical).
Decoder "auto" mixes stereo MP3 (Layer III) to mono inside the system's libmpg123, the
decoder libsndfile uses, where every frame read allows it (`mono_mix`: float32 rounding
apart); "soundfile" keeps librosa's samples bit for bit. Files libsndfile cannot read
(M4A/AAC, ...) go through PyAV's FFmpeg when installed. Every failure becomes an
`AudioError` whose message a user can act on.

    libsndfile.py   libsndfile's decode and its length checks (librosa.load's path)
    mono_mix.py     stereo Layer III mixed to mono inside libmpg123, checked frame by frame
    ffmpeg.py       FFmpeg through PyAV, for what libsndfile cannot read
    sniffing.py     what a file is, in words, when no decoder can read it
    decoded.py      Decoded and AudioError; channel averaging and resampling, shared by all
"""

from __future__ import annotations

import errno
import os
import stat

from melset.audio import ffmpeg, libsndfile
from melset.audio.decoded import AudioError, Decoded, FileBytes, InMemory, Ranged, clean, to_mono
from melset.audio.sniffing import Sniffed, sniff

__all__ = ["AudioError", "Decoded", "FileBytes", "InMemory", "Ranged", "Sniffed", "decode", "sniff", "to_mono"]


def decode(
    path: str | os.PathLike | FileBytes, sample_rate: int = 22050, max_frames_at=None, decoder: str = "auto"
) -> Decoded:
    """Decode `path` (a file, or an `InMemory` file's bytes) to mono float32 at `sample_rate`.

    max_frames_at: None to decode everything, or a function native_rate -> how many frames at
    the file's own rate to decode (the recipe's `input_frames_needed`).
    Raises FileNotFoundError for a missing file, AudioError for anything else that fails.
    """
    if isinstance(path, FileBytes):
        if path.size == 0:
            raise AudioError("empty file (0 bytes)")
        checked = None
    else:
        path = os.fspath(path)
        checked = _check_file(path)
    libsndfile_said = None
    if decoder != "av":
        try:
            return libsndfile.decode(path, sample_rate, max_frames_at, checked, mix=decoder == "auto")
        except libsndfile.NotForLibsndfile as exc:
            kind = sniff(path)
            if decoder == "soundfile" or kind.reason:
                raise AudioError(
                    kind.reason or f"{kind.what}: libsndfile cannot read it ({clean(str(exc))})"
                ) from None
            libsndfile_said = clean(str(exc))
    return ffmpeg.decode(path, sample_rate, max_frames_at, libsndfile_said)


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
