"""Disk space: the up-front check that a store's rows fit, and the sentence for a disk that filled up anyway."""

from __future__ import annotations

import errno
import os
import shutil

from melset.errors import StoreError


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _check_space(root: str, needed: int, reclaimable: int = 0) -> None:
    """Refuse up front when the disk cannot hold the rows still to write (mels.npy is sparse).
    reclaimable: bytes that files about to be replaced free."""
    free = shutil.disk_usage(root).free + reclaimable
    margin = 1024 * 1024  # journal, tables, manifest
    if needed + margin > free:
        raise StoreError(
            f"not enough disk space for {root}: the rows still to write need {_human(needed)}, {_human(free)} is free"
        )


def disk_full_message(root: str, exc: OSError) -> str:
    """The sentence for a write that filled the disk: finished rows are kept, the same command resumes."""
    return f"disk full while writing the store {root} ({exc.strerror}); finished rows are saved: free some space and run the same command again to resume"


def _blocks(path: str) -> int:
    """Bytes a file takes on disk (a sparse file takes less than its size)."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0
