"""Message bodies: inline in the row up to INLINE_MAX, else an fsync'd file under blobs/."""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import time
from pathlib import Path
from typing import Any, TypeVar

from ..base import BlobWriter

T = TypeVar("T")

INLINE_MAX = 256 * 1024


def fsync_path(path: Path | str) -> None:
    """fsync a file or directory by name (a directory: so that an entry made in it lasts)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolBlob(BlobWriter):
    """Memory first, a file in blobs/ once it passes INLINE_MAX."""

    def __init__(self, blob_dir: Path) -> None:
        self._dir = blob_dir
        self._buf = bytearray()
        self._file: Any = None
        self.path: Path | None = None
        self._mmap: mmap.mmap | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self._file is None:
            self._buf += data
            if len(self._buf) > INLINE_MAX:
                self._spill()
        else:
            self._file.write(data)

    def _spill(self) -> None:
        sub = self._dir / secrets.token_hex(1)
        sub.mkdir(parents=True, exist_ok=True)
        self.path = sub / f"{time.time_ns():x}-{secrets.token_hex(6)}"
        self._file = open(self.path, "xb+", buffering=1024 * 1024)  # noqa: SIM115
        self._file.write(self._buf)
        self._buf = bytearray()

    @property
    def spooled(self) -> bool:
        return self._file is not None

    def head(self, n: int) -> bytes:
        if self._file is None:
            return bytes(self._buf[:n])
        if not self._file.closed:
            self._file.flush()
        assert self.path is not None
        with open(self.path, "rb") as f:
            return f.read(n)

    def view(self) -> memoryview:
        if self._file is None:
            return memoryview(self._buf)
        self._file.flush()
        if self._mmap is None:
            if self.size == 0:
                return memoryview(b"")
            self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return memoryview(self._mmap)

    def inline_bytes(self) -> bytes:
        return bytes(self._buf)

    def sync(self) -> None:
        """Make a spooled file durable (blocking: run it off the event loop)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            assert self.path is not None
            fsync_path(self.path.parent)

    def close_file(self) -> None:
        if self._mmap is not None:
            with contextlib.suppress(BufferError):
                self._mmap.close()
            self._mmap = None
        if self._file is not None:
            self._file.close()

    def splice(self, start: int, end: int, data: bytes) -> None:
        if not 0 <= start <= end <= self.size:
            raise ValueError("splice outside the message")
        if self._file is None:
            self._buf[start:end] = data
            self.size = len(self._buf)
            return
        old_path = self.path
        assert old_path is not None
        self._file.flush()
        if self._mmap is not None:
            with contextlib.suppress(BufferError):
                self._mmap.close()
            self._mmap = None
        new_path = old_path.with_name(old_path.name + "-s")
        with open(old_path, "rb") as src, open(new_path, "xb") as dst:
            dst.write(src.read(start))
            dst.write(data)
            src.seek(end)
            while chunk := src.read(1024 * 1024):
                dst.write(chunk)
        self._file.close()
        old_path.unlink()
        self.path = new_path
        self._file = open(new_path, "rb+", buffering=1024 * 1024)  # noqa: SIM115
        self._file.seek(0, os.SEEK_END)
        self.size = self._file.tell()

    def discard(self) -> None:
        self.close_file()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._buf = bytearray()
        self.size = 0


