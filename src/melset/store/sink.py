"""RowSink: how a finished matrix goes into a store's mels.npy, from the driver or from an engine worker.

Engine workers import it (unpickling a RowSink does), so it stays light: no pandas or pyarrow
(~0.4 s and ~100 MB), only numpy and the store's file names; nor does the package's front door
load them (the tables are handled where they are read and written).
"""

from __future__ import annotations

import os
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
    """

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str
    store_id: str  # what D/.store_id must hold: proof that this path is the driver's store

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
        node that sees another file at the same path raises SinkUnreachable, not a silent loss.
        """
        buf = self.encode(matrix)
        own = fd is None
        if own:
            try:
                with open(os.path.join(os.path.dirname(self.path), STORE_ID), encoding="ascii") as f:
                    found = f.read().strip()
                # opened per row (~20 us): a cached descriptor could outlive an --overwrite
                fd = os.open(self.path, os.O_WRONLY)
            except OSError as exc:
                raise SinkUnreachable(f"cannot write into {self.path}: {exc.strerror}") from None
            if found != self.store_id:
                os.close(fd)
                raise SinkUnreachable(f"{self.path} is not the driver's store (another .store_id)")
        try:
            _pwrite_all(fd, buf, self.offset + row * len(buf))
        finally:
            if own:
                os.close(fd)
        return zlib.crc32(buf)


def _pwrite_all(fd: int, buf: bytes, offset: int) -> None:
    """pwrite every byte: a nearly full disk can take part of a row and return a short count."""
    view = memoryview(buf)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
