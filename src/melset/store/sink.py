"""RowSink: how a finished matrix goes into a store's mels.npy, from the driver or from an engine worker.

Engine workers import it (unpickling a RowSink does), so it stays light: no pandas or pyarrow
(~0.4 s and ~100 MB), only numpy and the store's file names; nor does the package's front door
load them (the tables are handled where they are read and written).
"""

from __future__ import annotations

import os
import stat
import zlib
from dataclasses import dataclass

import numpy as np

from melset.vocab import STORE_ID


def row_nbytes(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of one row of mels.npy."""
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


class SinkUnreachable(OSError):
    """This process cannot write into the driver's store (not on shared storage)."""


@dataclass(frozen=True)
class RowSink:
    """Writes rows straight into a store's mels.npy, from any process that can reach the file.

    Engine workers use it so that a finished matrix goes to disk once, not through the
    driver. A written row still counts only once the driver commits its record.

    A worker writes only into the very file the driver opened: the path's .store_id must hold
    `store_id`, and mels.npy must be a regular file of the driver's size and inode number
    (taken when the sink is made, on the driver). A node that sees nothing at the path, an
    empty folder (a mount of its own), or a copy of the store, raises SinkUnreachable and
    sends the matrix back; a worker never creates a file.
    """

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str
    store_id: str  # what D/.store_id must hold: proof that this path is the driver's store
    ino: int = 0  # mels.npy's inode number and size on the driver (0: not known, not checked)
    size: int = 0

    def __post_init__(self) -> None:
        # runs where the sink is made (the driver), not where it is unpickled (a worker)
        if not self.ino:
            try:
                st = os.stat(self.path)
            except OSError:
                return
            object.__setattr__(self, "ino", st.st_ino)
            object.__setattr__(self, "size", st.st_size)

    @property
    def row_bytes(self) -> int:
        return row_nbytes(self.shape, self.dtype)

    def encode(self, matrix: np.ndarray | None) -> bytes:
        """A row's bytes: the matrix in the store's dtype, or zeros when matrix is None."""
        if matrix is None:
            return bytes(self.row_bytes)
        data = np.ascontiguousarray(matrix, dtype=self.dtype)
        if data.shape != tuple(self.shape):
            raise ValueError(f"a matrix of shape {data.shape} does not fit rows of {tuple(self.shape)}")
        return data.tobytes()

    def write(self, row: int, matrix: np.ndarray | None, fd: int | None = None) -> int:
        """Write a row (zeros when matrix is None); returns the crc32 of the bytes written.

        Without fd (in a worker) it first checks that the path holds the driver's store, so a
        node that sees another file, or none, at the same path raises SinkUnreachable, not a
        silent loss.
        """
        buf = self.encode(matrix)
        own = fd is None
        if own:
            fd = self._open_drivers_file()
        try:
            _pwrite_all(fd, buf, self.offset + row * len(buf))
        finally:
            if own:
                os.close(fd)
        return zlib.crc32(buf)

    def _open_drivers_file(self) -> int:
        """A descriptor on the driver's mels.npy, opened for writing (never created), or SinkUnreachable."""
        try:
            with open(os.path.join(os.path.dirname(self.path), STORE_ID), encoding="ascii") as f:
                found = f.read().strip()
        except (OSError, ValueError) as exc:  # ValueError: not ASCII text
            raise SinkUnreachable(f"cannot write into {self.path}: {getattr(exc, 'strerror', None) or exc}") from None
        if found != self.store_id:
            raise SinkUnreachable(f"{self.path} is not the driver's store (another .store_id)")
        try:
            # opened per row (~20 us): a cached descriptor could outlive an --overwrite
            fd = os.open(self.path, os.O_WRONLY)  # never O_CREAT
        except OSError as exc:
            raise SinkUnreachable(f"cannot write into {self.path}: {exc.strerror}") from None
        st = os.fstat(fd)
        if (
            not stat.S_ISREG(st.st_mode)
            or (self.ino and st.st_ino != self.ino)
            or (self.size and st.st_size != self.size)
        ):
            os.close(fd)
            raise SinkUnreachable(f"{self.path} is not the driver's file (a copy of the store, or another file)")
        return fd


def _pwrite_all(fd: int, buf: bytes, offset: int) -> None:
    """pwrite every byte: a nearly full disk can take part of a row and return a short count."""
    view = memoryview(buf)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
