"""What is this file, in words: a look at its first bytes, used to explain why a decode failed
(an HTML page saved as .mp3, a text file, an MP3 with no valid frame header, ...)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from melset.audio.decoded import FileBytes, name_of, open_binary

_SNIFF_BYTES = 300 * 1024


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


def sniff(path: str | FileBytes) -> Sniffed:
    """Look at a file's first bytes and say what it is; used to explain failures."""
    try:
        with open_binary(path) as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as exc:
        return Sniffed("unreadable", f"cannot read the file: {exc.strerror.lower()}")
    if not head:
        return Sniffed("empty", "empty file (0 bytes)")
    ext = os.path.splitext(name_of(path))[1].lower().lstrip(".") or "audio"
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
