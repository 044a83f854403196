"""sha1sum files: FMA's archives carry one (``fma_small/checksums``), one line a file,
``<40 hex digits>  <path relative to the archive's folder>``. MP3 decoders play through
flipped bits, so a file whose SHA-1 differs would otherwise become a plausible, wrong
spectrogram."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from melset.errors import MetadataError

NAME = "checksums"  # FMA's file, at the top of each audio archive
MAX_BYTES = 64 * 10**6  # fma_full's lists 106,574 lines (~6 MB)
_LINE = re.compile(r"^([0-9a-fA-F]{40}) [ *](.+)$")


@dataclass(frozen=True)
class Checksums:
    """Expected SHA-1s by path relative to the collection's root, and the file that lists them."""

    source: str
    sha1: dict[str, str]

    def __len__(self) -> int:
        return len(self.sha1)


def read_checksums(data: bytes, source: str) -> Checksums:
    """Parse sha1sum lines (``HASH  PATH`` or ``HASH *PATH``); blank lines and # comments are
    skipped. MetadataError names the file and the first line that is not one of these."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MetadataError(f"{source}: not a checksums file (not UTF-8 text)") from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise MetadataError(
                f"{source}: line {n} is not '<40 hex digits>  <path>' (sha1sum's format): {line[:80]!r}"
            )
        path = m.group(2).strip()
        while path.startswith("./"):
            path = path[2:]
        digest = m.group(1).lower()
        if out.get(path, digest) != digest:
            raise MetadataError(f"{source}: line {n} lists {path} again with another SHA-1; list each file once")
        out[path] = digest
    if not out:
        raise MetadataError(f"{source}: lists no checksum (sha1sum's format: '<40 hex digits>  <path>')")
    return Checksums(source, out)


def mismatch(data: bytes, expected: str, source: str) -> str | None:
    """Why `data` is not the file `source` lists, in words, or None when its SHA-1 matches."""
    got = hashlib.sha1(data).hexdigest()
    if got == expected:
        return None
    return (
        f"checksum mismatch: its SHA-1 is {got}, {source} lists {expected} (a damaged or changed "
        "download: fetch the file again)"
    )
