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
import weakref
from collections.abc import Callable
from typing import ClassVar, Protocol

from mailhouse.store.base import Store
from mailhouse.store.models import Change

POLL_INTERVAL = 2.0


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
        self.recent_marks: dict[int, int] = {}

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
        if not self.folders:
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            if self._poller is not None:
                self._poller.cancel()
                self._poller = None

    def _changed(self, change: Change) -> None:
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
                    for s in list(sessions):
                        # A folder gone (None) is news as well.
                        if modseq is None or modseq > s.known_modseq():
                            s.notify()
