"""Telling sessions that their selected folder changed.

One watcher per store serves every session of the process: it subscribes
once to the store's change notifications (commits made in this process:
deliveries, other sessions, the web) and, for changes made by other
processes (the CLI), polls the highest mod-sequence of every watched folder
in a single query every ``POLL_INTERVAL`` seconds. Either way it calls the
sessions' ``notify()``; an IDLE session then refreshes and announces at
once, a busy one does so at its next command.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Callable
from typing import ClassVar, Protocol

from mailhouse.imap.headercache import HeaderCache
from mailhouse.imap.recent import RecentMarks, new_marks
from mailhouse.store.base import Store
from mailhouse.store.models import Change, FolderDelta

POLL_INTERVAL = 2.0
FOLDER_IDS_MAX = 100_000
DELTAS_MAX = 10_000
DELTA_TTL = 0.2


class Watching(Protocol):
    def notify(self) -> None: ...

    def known_modseq(self) -> int: ...


class FolderWatcher:
    _by_store: ClassVar[weakref.WeakKeyDictionary[Store, FolderWatcher]] = weakref.WeakKeyDictionary()

    @classmethod
    def for_store(cls, store: Store) -> FolderWatcher:
        w = cls._by_store.get(store)
        if w is None:
            w = cls._by_store[store] = cls(store)
        return w

    def __init__(self, store: Store) -> None:
        self.store = store
        self.folders: dict[int, set[Watching]] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self.poll_interval = POLL_INTERVAL
        # \Recent bookkeeping shared by the sessions of this store (see mailbox.py).
        self.recent_marks: RecentMarks = new_marks()
        # (account id, folder name) -> folder id, learnt by SELECT and APPEND: the
        # next one reads the folder by id on the event loop (store reads of one
        # row run there) instead of looking the name up in the reader pool. Only
        # a hint: the row read by id is checked to still carry that name.
        self.folder_ids: dict[tuple[int, str], int] = {}
        # Header blocks of listed messages (see headercache.py).
        self.headers = HeaderCache()
        # (folder id, since) -> what changed after that mod-sequence, as last read.
        # When a delivery wakes every IDLE session of a folder, they all ask the
        # same question: the first reads the store, the others reuse its answer.
        # Forgotten at every change of the folder (so never stale when a session
        # is told of a change), and only kept when no change came meanwhile.
        # Changes made by another process (the CLI) are not published: a kept
        # answer is only trusted for DELTA_TTL seconds, so a NOOP sees them soon.
        self._deltas: dict[tuple[int, int], tuple[float, FolderDelta | None]] = {}
        self._epoch = 0  # moves at every change anywhere

    def remember_folder(self, account_id: int, name: str, folder_id: int) -> None:
        if len(self.folder_ids) >= FOLDER_IDS_MAX:
            self.folder_ids.clear()
        self.folder_ids[(account_id, name)] = folder_id

    def watch(self, folder_id: int, session: Watching) -> None:
        self.folders.setdefault(folder_id, set()).add(session)
        if self._unsubscribe is None:
            self._unsubscribe = self.store.subscribe_changes(self._changed)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    def unwatch(self, folder_id: int, session: Watching) -> None:
        sessions = self.folders.get(folder_id)
        if sessions is None:
            return
        sessions.discard(session)
        if not sessions:
            del self.folders[folder_id]
            self._forget(folder_id)
        if not self.folders:
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            if self._poller is not None:
                self._poller.cancel()
                self._poller = None

    async def changes(self, folder_id: int, since: int) -> FolderDelta | None:
        """``Store.folder_changes``, shared by the sessions of a folder."""
        key = (folder_id, since)
        kept = self._deltas.get(key)
        now = time.monotonic()
        if kept is not None and now - kept[0] < DELTA_TTL:
            return kept[1]
        epoch = self._epoch
        delta = await self.store.folder_changes(folder_id, since)
        if self._epoch == epoch and folder_id in self.folders:
            if len(self._deltas) >= DELTAS_MAX:
                self._deltas.clear()
            self._deltas[key] = (now, delta)
        return delta

    def _forget(self, folder_id: int) -> None:
        self._epoch += 1
        if folder_id == 0:  # a change without a folder (a rename): forget everything
            self._deltas.clear()
        elif self._deltas:
            for key in [k for k in self._deltas if k[0] == folder_id]:
                del self._deltas[key]

    def _changed(self, change: Change) -> None:
        self._forget(change.folder_id)
        for session in list(self.folders.get(change.folder_id, ())):
            session.notify()

    async def _poll(self) -> None:
        while self.folders:
            await asyncio.sleep(self.poll_interval)
            ids = list(self.folders)
            if not ids:
                break
            with contextlib.suppress(Exception):
                current = await self.store.folder_modseqs(ids)
                for fid, sessions in list(self.folders.items()):
                    modseq = current.get(fid)
                    if any(modseq is None or modseq > s.known_modseq() for s in sessions):
                        self._forget(fid)  # changed by another process: not published here
                    for s in list(sessions):
                        # A folder gone (None) is news as well.
                        if modseq is None or modseq > s.known_modseq():
                            s.notify()
