"""Stereo MPEG Layer III to mono inside libmpg123, whose MONO_MIX mode sums the two channels'
spectra before the synthesis filterbank: one channel's synthesis instead of two, and no
separate averaging pass. libsndfile decodes MP3 with the same library and the same flags, so
the samples equal librosa's channel mean of libsndfile's stereo output up to float32 rounding
(2.6e-6 at most on the test clips), 3-4 ms sooner per 30 s clip (9-10%), feed and check included.

The mix is exact only where both channels of a granule use the same block type (long,
start, short or stop window, and the same mixed-block flag): libmpg123 transforms the summed
spectrum with the left channel's. Mid/side stereo requires that; plain stereo allows each
channel its own, which LAME's defaults never use but other encoders may. So after the
decode, the side information of every frame libmpg123 read (their offsets come from its
frame index) is checked in one vectorised pass (0.3-0.7 ms a clip), and any difference, an
index that misses a frame, or anything that is not stereo Layer III returns None: the
caller then decodes with libsndfile as librosa does, which also words every failure. Used
only where the system's libmpg123 loads (``libmpg123.so.0`` on Linux distributions that
ship libsndfile).

The file is fed to libmpg123 from memory, a block at a time: its own reader makes two
read() calls a frame, ~1,800 for a 30 s clip, which cost ~1 ms (4% of the decode) here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

import numpy as np

from melset.audio.decoded import FileBytes, open_binary

# mpg123.h: enum mpg123_parms, enum mpg123_param_flags, return codes, MPG123_ENC_FLOAT_32
_ADD_FLAGS, _REMOVE_FLAGS = 2, 13
_MONO_MIX, _QUIET, _GAPLESS, _FORCE_FLOAT, _AUTO_RESAMPLE, _NO_FRANKENSTEIN = (
    0x4,
    0x20,
    0x40,
    0x400,
    0x8000,
    0x1000000,
)
_INDEX_SIZE = 15  # enum mpg123_parms; negative: the frame index grows in steps of that size
_OK, _NEED_MORE, _DONE = 0, -10, -12
_ENC_FLOAT_32 = 0x200
_CHUNK_FRAMES = 1 << 22  # frames one read asks for (16 MB; the recipe's 24 s at 48 kHz take one)
_FEED_BYTES = 1 << 18  # bytes fed at a time (~6 s at 320 kbps)
_ID3V1_BYTES = 128

_lib = None  # the loaded library, False once it failed to load


def _load():
    global _lib
    if _lib is None:
        _lib = False
        try:
            try:
                lib = ctypes.CDLL("libmpg123.so.0")
            except OSError:  # not Linux's name: ask the system (find_library may run ldconfig or gcc)
                lib = ctypes.CDLL(ctypes.util.find_library("mpg123") or "libmpg123")
            p, i, size = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
            lib.mpg123_init.restype = i
            lib.mpg123_new.restype, lib.mpg123_new.argtypes = p, [ctypes.c_char_p, ctypes.POINTER(i)]
            lib.mpg123_param.argtypes = [p, i, ctypes.c_long, ctypes.c_double]
            lib.mpg123_open_feed.argtypes = [p]
            lib.mpg123_feed.argtypes = [p, ctypes.c_char_p, size]
            lib.mpg123_tell_stream_64.restype, lib.mpg123_tell_stream_64.argtypes = ctypes.c_int64, [p]
            lib.mpg123_getformat.argtypes = [p, ctypes.POINTER(ctypes.c_long), ctypes.POINTER(i), ctypes.POINTER(i)]
            lib.mpg123_read.argtypes = [p, p, size, ctypes.POINTER(size)]
            lib.mpg123_close.argtypes = lib.mpg123_delete.argtypes = [p]
            lib.mpg123_tellframe.restype, lib.mpg123_tellframe.argtypes = ctypes.c_int64, [p]
            lib.mpg123_framepos_64.restype, lib.mpg123_framepos_64.argtypes = ctypes.c_int64, [p]
            offsets = ctypes.POINTER(ctypes.POINTER(ctypes.c_int64))
            lib.mpg123_index_64.argtypes = [p, offsets, ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(size)]
            if lib.mpg123_init() == _OK:
                _lib = lib
        except (OSError, AttributeError):  # no such library, or one without these functions
            pass
    return _lib or None


def available() -> bool:
    """Whether the system's libmpg123 could be loaded."""
    return _load() is not None


def decode(path: str | FileBytes, frames: int, native_rate: int) -> np.ndarray | None:
    """The first `frames` frames (all when negative) of a stereo MPEG Layer III file, mixed
    to mono as float32.

    None when libmpg123 is absent, refuses the file, reports another rate or format than
    expected, fails mid-stream, or read a frame the mix would decode wrong (see the module's
    docstring)."""
    lib = _load()
    if lib is None:
        return None
    err = ctypes.c_int()
    handle = lib.mpg123_new(None, ctypes.byref(err))
    if not handle:
        return None
    try:
        lib.mpg123_param(handle, _REMOVE_FLAGS, _AUTO_RESAMPLE, 0.0)
        flags = _FORCE_FLOAT | _GAPLESS | _NO_FRANKENSTEIN | _MONO_MIX | _QUIET  # libsndfile's, + mix, quiet
        lib.mpg123_param(handle, _ADD_FLAGS, flags, 0.0)
        lib.mpg123_param(handle, _INDEX_SIZE, -4096, 0.0)  # every frame's offset (the default keeps some)
        if lib.mpg123_open_feed(handle) != _OK:
            return None
        try:
            with open_binary(path) as f:
                feed = _Feed(lib, handle, f)
                rate, channels, encoding = ctypes.c_long(), ctypes.c_int(), ctypes.c_int()
                while (
                    status := lib.mpg123_getformat(
                        handle, ctypes.byref(rate), ctypes.byref(channels), ctypes.byref(encoding)
                    )
                ) == _NEED_MORE and feed.more():
                    pass
                if status != _OK or (rate.value, channels.value, encoding.value) != (native_rate, 1, _ENC_FLOAT_32):
                    return None
                mixed = _read(lib, handle, frames, feed)
                data = feed.data
        except OSError:
            return None
        if mixed is None or (feed.ended and _cut_before_id3v1(lib, handle, data)):
            return None
        if not _same_block_types(data, _frame_offsets(lib, handle)):
            return None
        return mixed
    finally:
        lib.mpg123_close(handle)
        lib.mpg123_delete(handle)


class _Feed:
    """The file's bytes, handed to libmpg123 a block at a time as it asks for more: every
    byte, a trailing ID3v1 tag too, as libmpg123's own reader reads them (a last frame cut
    short takes its missing bytes from the tag)."""

    def __init__(self, lib, handle, f):
        self._lib, self._handle, self._file = lib, handle, f
        self._blocks: list[bytes] = []
        self.ended = False  # the whole file has been fed
        self.more()

    @property
    def data(self) -> np.ndarray:
        """Every byte fed so far."""
        return np.frombuffer(b"".join(self._blocks), dtype=np.uint8)

    def more(self) -> bool:
        """Feed the next block; False at the end of the file."""
        block = self._file.read(_FEED_BYTES)
        if not block:
            self.ended = True
            return False
        if self._lib.mpg123_feed(self._handle, block, len(block)) != _OK:
            raise OSError("libmpg123 took no more input")
        self._blocks.append(block)
        return True


def _cut_before_id3v1(lib, handle, data: np.ndarray) -> bool:
    """Whether the whole file `data`, fed, ended inside a frame (bytes fed but not used) and
    has an ID3v1 tag. libmpg123's reader, which knows where the tag starts, calls that an
    error, not the end of the stream, and libsndfile then fails or decodes otherwise."""
    tag = data[-_ID3V1_BYTES:][:3].tobytes() if len(data) >= _ID3V1_BYTES else b""
    return tag == b"TAG" and lib.mpg123_tell_stream_64(handle) < len(data)


def _read(lib, handle, frames: int, feed: _Feed) -> np.ndarray | None:
    chunks, total, done = [], 0, ctypes.c_size_t()
    while frames < 0 or total < frames:
        # one buffer per _CHUNK_FRAMES (the recipe's reads take one), filled across feeds
        buf = np.empty(_CHUNK_FRAMES if frames < 0 else min(frames - total, _CHUNK_FRAMES), dtype=np.float32)
        got, end = 0, False
        while got < len(buf) and not end:
            status = lib.mpg123_read(handle, buf.ctypes.data + 4 * got, 4 * (len(buf) - got), ctypes.byref(done))
            got += done.value // 4
            if status == _NEED_MORE:
                end = not feed.more()  # the end of the file: every whole frame is decoded
            elif status == _DONE:
                end = True
            elif status != _OK or done.value == 0:
                return None  # a new format mid-stream (libsndfile calls it malformed) or an error
        chunks.append(buf[:got])
        total += got
        if end:
            break
    if len(chunks) == 1:
        return chunks[0]
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.float32)


def _frame_offsets(lib, handle) -> np.ndarray | None:
    """The file offset of every frame libmpg123 has read, or None when its index misses any."""
    offsets, step, fill = ctypes.POINTER(ctypes.c_int64)(), ctypes.c_int64(), ctypes.c_size_t()
    if lib.mpg123_index_64(handle, ctypes.byref(offsets), ctypes.byref(step), ctypes.byref(fill)) != _OK:
        return None
    # tellframe is the number of the frame being decoded (0-based), or one past it at the end
    if step.value != 1 or fill.value == 0 or fill.value < lib.mpg123_tellframe(handle):
        return None
    found = np.ctypeslib.as_array(offsets, shape=(fill.value,)).copy()
    # the index grows one frame at a time and stops for good at the first frame it misses, so
    # it holds every frame read when its last entry is the last frame read (framepos)
    return found if found[-1] == lib.mpg123_framepos_64(handle) else None


@dataclass(frozen=True)
class _SideInfo:
    """Where the windows sit in a stereo frame's side information (ISO 11172-3 and 13818-3,
    2.4.1.7), counted in bits from its start (after the header and the optional CRC)."""

    prefix: int  # main_data_begin, private_bits (and scfsi in MPEG-1)
    block: int  # one granule of one channel; the same size whether the window switches or not
    window: int  # window_switching_flag, block_type (2 bits), mixed_block_flag: after
    # part2_3_length 12, big_values 9, global_gain 8 and scalefac_compress (4 or 9)
    granules: int  # blocks are granule-major: granule 0 left, granule 0 right, ...


_MPEG1 = _SideInfo(prefix=9 + 3 + 2 * 4, block=59, window=12 + 9 + 8 + 4, granules=2)
_LSF = _SideInfo(prefix=8 + 2, block=63, window=12 + 9 + 8 + 9, granules=1)  # MPEG-2 and 2.5
_SIDE_BYTES = 32


def _same_block_types(data: np.ndarray, offsets: np.ndarray | None) -> bool:
    """Whether every frame at `offsets` in the stream's bytes `data` is stereo Layer III of one
    MPEG version whose two channels use the same window (block type and mixed-block flag) in
    each granule."""
    if offsets is None:
        return False
    end = int(offsets.max()) + 6 + _SIDE_BYTES
    if offsets.min() < 0 or offsets.max() + 6 > len(data):
        return False  # not where libmpg123 read frames
    data = data[:end]
    if len(data) < end:  # the last frame may be shorter than _SIDE_BYTES (LSF side information is 17)
        data = np.concatenate([data, np.zeros(end - len(data), dtype=np.uint8)])
    second = data[offsets + 1]  # sync (3 bits), version (2), layer (2), no CRC (1)
    if not ((data[offsets] == 0xFF) & (second & 0xE6 == 0xE2) & (data[offsets + 3] >> 6 != 3)).all():
        return False  # lost sync, not Layer III, or a single-channel frame
    version = second & 0x18
    if (version != version[0]).any():
        return False
    layout = _MPEG1 if version[0] == 0x18 else _LSF
    side = offsets + 4 + 2 * (second & 1 == 0)
    for granule in range(layout.granules):
        left = layout.prefix + 2 * granule * layout.block + layout.window
        if (_window(data, side, left) != _window(data, side, left + layout.block)).any():
            return False
    return True


def _window(data: np.ndarray, side: np.ndarray, bit: int) -> np.ndarray:
    """window_switching_flag, block_type and mixed_block_flag, `bit` bits into the side
    information at each of `side`, as one code: 0 when the flag is off (libmpg123 then reads
    neither and uses the long window)."""
    pair = data[side + bit // 8].astype(np.uint16) << 8 | data[side + bit // 8 + 1]
    code = (pair >> (12 - bit % 8)) & 0xF
    return np.where(code & 8, code, 0)
