"""Who has seen what as ``\\Recent`` (IMAP4rev1): per folder, the first UID that no
session has claimed yet.

RFC 3501 §2.3.2: a message is \\Recent in exactly one session, the first to be
told of it. Sessions claim a folder's new UIDs when they select it read-write or
are told of new messages (mailbox.py): ``claim(folder, upto)`` moves the mark to
``upto`` and returns where it was, so the caller's messages from there on are
its own recent ones and no other session's.

In one process a dict does. With worker processes two sessions of one mailbox
may be in different processes, so the marks live in a shared, file-backed
memory map (``data_dir/run/recent``), and a claim is a read-modify-write under
an ``flock`` of that file. The table is open-addressed by folder id; when every
slot a folder may take is taken, the oldest claim in its probe range is
replaced, and that folder's next claim may count some messages as recent
again (down to the mark saved in the store at most).

A moved mark is saved in the store as the folder's ``recent_uid`` by the
session that moved it (never lowered, not fsync'd on its own); after a restart
the marks start from there, so a message told of before is not \\Recent again.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

SLOTS = 1 << 18  # 4 MiB, a sparse file: only the pages of used slots take memory
PROBES = 32
_SLOT = struct.Struct("<QQ")  # folder id (0: empty), mark


class RecentMarks:
    """The marks of one process's sessions."""

    def __init__(self) -> None:
        self._marks: dict[int, int] = {}

    def get(self, folder_id: int, floor: int = 0) -> int:
        return max(self._marks.get(folder_id, 0), floor)

    def claim(self, folder_id: int, upto: int, floor: int = 0) -> int:
        """Move the folder's mark up to ``upto``; the mark as it was. ``floor``:
        the mark saved in the store (Folder.recent_uid), where it starts after
        a restart."""
        old = max(self._marks.get(folder_id, 0), floor)
        if upto > old:
            self._marks[folder_id] = upto
        return old


class SharedRecentMarks(RecentMarks):
    """The marks of every worker's sessions (see the module's text)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._map = mmap.mmap(fd, SLOTS * _SLOT.size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @staticmethod
    def create(path: Path) -> None:
        """A fresh table (the main process, before it starts the workers)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.truncate(SLOTS * _SLOT.size)
        os.replace(tmp, path)

    def _find(self, folder_id: int) -> tuple[int, bool]:
        """The slot offset of the folder (True) or where it would go (False)."""
        start = ((folder_id * 0x9E3779B97F4A7C15) >> 20) % SLOTS
        oldest, oldest_mark = -1, -1
        for i in range(PROBES):
            off = ((start + i) % SLOTS) * _SLOT.size
            key, mark = _SLOT.unpack_from(self._map, off)
            if key == folder_id:
                return off, True
            if key == 0:
                return off, False
            if oldest < 0 or mark < oldest_mark:
                oldest, oldest_mark = off, mark
        return oldest, False

    def get(self, folder_id: int, floor: int = 0) -> int:
        # Unlocked: STATUS RECENT's estimate may read a claim half made.
        off, found = self._find(folder_id)
        return max(_SLOT.unpack_from(self._map, off)[1] if found else 0, floor)

    def claim(self, folder_id: int, upto: int, floor: int = 0) -> int:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            off, found = self._find(folder_id)
            old = max(_SLOT.unpack_from(self._map, off)[1] if found else 0, floor)
            if upto > old:
                _SLOT.pack_into(self._map, off, folder_id, upto)
            return old
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


_shared: Path | None = None


def share(path: Path) -> None:
    """This process is a worker: its sessions' marks are every worker's."""
    global _shared
    _shared = path


def new_marks() -> RecentMarks:
    return SharedRecentMarks(_shared) if _shared is not None else RecentMarks()
