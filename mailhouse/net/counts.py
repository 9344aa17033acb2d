"""SMTP connections per client address, for the connection limits.

In one process a Counter does. With worker processes the limits are the
server's, not each worker's: every process keeps its counts in its own slab of
a shared, file-backed memory map and reads the sum of all slabs. Each slab has
one writer, so no lock is taken; two workers admitting the last allowed
connection at the same instant may both let it in (the limit is exceeded by at
most one per worker, for as long as those connections last).

Addresses share buckets through a hash keyed with a secret made at start (in
the file's header): a client cannot pick an address that lands in another
one's bucket to fill that one's allowance.

The SMTP connection rate of worker processes (SharedConnectionRate) is kept
the same way: one token bucket per address bucket, for all of them.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..trust.limits import ConnectionRate

BUCKETS = 1 << 16  # addresses hash into these; a collision only makes a limit stricter
_SLAB = 8 + 2 * BUCKETS  # total (uint64) + per-bucket counts (uint16)
_HEADER = 16  # the hash key


def _bucket(key: bytes, ip: str) -> int:
    # hash() differs between processes, and an unkeyed hash can be aimed
    return int.from_bytes(hashlib.blake2b(ip.encode(), digest_size=2, key=key).digest(), "little")


def _create(path: Path, size: int) -> None:
    """A shared file of `size` bytes, zero but for a new hash key in its header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A new file, not this one truncated: workers of a main process killed
    # with SIGKILL may still have the old one mapped.
    tmp = path.with_suffix(".new")
    with open(tmp, "wb") as f:
        f.write(secrets.token_bytes(_HEADER))
        f.truncate(size)
    os.replace(tmp, path)


class ConnectionCounts:
    """This process's connections (and, when shared, every worker's)."""

    def __init__(self) -> None:
        self.local: Counter[str] = Counter()

    def total(self) -> int:
        return self.local.total()

    def of(self, ip: str) -> int:
        return self.local[ip]

    def add(self, ip: str) -> None:
        self.local[ip] += 1

    def remove(self, ip: str) -> None:
        n = self.local[ip] - 1
        if n <= 0:
            del self.local[ip]
        else:
            self.local[ip] = n


class SharedConnectionCounts(ConnectionCounts):
    def __init__(self, path: Path, slot: int, slots: int) -> None:
        super().__init__()
        self.slot = slot
        self.slots = slots
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._map = mmap.mmap(fd, _HEADER + _SLAB * slots)
        finally:
            os.close(fd)
        view = memoryview(self._map)
        self._key = bytes(view[:_HEADER])
        at = [_HEADER + i * _SLAB for i in range(slots)]
        self._totals = [view[a : a + 8].cast("Q") for a in at]
        self._buckets = [view[a + 8 : a + _SLAB].cast("H") for a in at]

    def _bucket(self, ip: str) -> int:
        return _bucket(self._key, ip)

    @staticmethod
    def create(path: Path, slots: int) -> None:
        """The main process, before any worker starts: all counts zero."""
        _create(path, _HEADER + _SLAB * slots)

    @staticmethod
    def clear_slot(path: Path, slot: int) -> None:
        """A worker died: its connections died with it."""
        with open(path, "r+b") as f:
            f.seek(_HEADER + slot * _SLAB)
            f.write(bytes(_SLAB))

    def total(self) -> int:
        return sum(t[0] for t in self._totals)

    def of(self, ip: str) -> int:
        b = self._bucket(ip)
        return sum(s[b] for s in self._buckets)

    def add(self, ip: str) -> None:
        super().add(ip)
        b = self._bucket(ip)
        mine = self._buckets[self.slot]
        mine[b] = min(mine[b] + 1, 0xFFFF)
        self._totals[self.slot][0] += 1

    def remove(self, ip: str) -> None:
        if ip not in self.local:
            return
        super().remove(ip)
        b = self._bucket(ip)
        mine = self._buckets[self.slot]
        if mine[b]:
            mine[b] -= 1
        if self._totals[self.slot][0]:
            self._totals[self.slot][0] -= 1


class SharedConnectionRate(ConnectionRate):
    """ConnectionRate for worker processes: one token bucket per address bucket
    in a shared memory map, so the rate is the server's, not each worker's. An
    update reads a bucket and writes it back, so it takes an flock on the file
    (two syscalls a new connection): two workers must not interleave."""

    _CELL = 16  # tokens, time: two float64

    def __init__(self, path: Path, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(per_minute, clock)
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._map = mmap.mmap(self._fd, _HEADER + self._CELL * BUCKETS)
        self._key = bytes(self._map[:_HEADER])
        self._cells = memoryview(self._map)[_HEADER:].cast("d")

    @classmethod
    def create(cls, path: Path) -> None:
        """The main process, before any worker starts: every bucket full (time 0)."""
        _create(path, _HEADER + cls._CELL * BUCKETS)

    def allow(self, ip: str) -> bool:
        if not self.per_minute:
            return True
        b = 2 * _bucket(self._key, ip)
        cells = self._cells
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            now = self.clock()
            at = cells[b + 1]
            # CLOCK_MONOTONIC is one clock for every process; time 0 is a full bucket.
            tokens = float(self.per_minute) if at == 0.0 else min(
                float(self.per_minute), cells[b] + (now - at) * self.per_minute / 60.0)
            allowed = tokens >= 1.0
            cells[b] = tokens - 1.0 if allowed else tokens
            cells[b + 1] = now
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return allowed
