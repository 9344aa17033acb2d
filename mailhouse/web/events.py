"""Server-Sent Events: the store's change notifications, per account.

One subscription to the store serves every open event stream; each stream has
a small queue. A stream that does not keep up loses events rather than holding
memory (a client reloads what it shows on any event, so it catches up).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from ..context import Context
from ..store.models import Change

PING_INTERVAL = 15.0  # keeps proxies and browsers from timing the stream out
QUEUE_MAX = 256


class ChangeHub:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._streams: dict[int, set[asyncio.Queue[Change | None]]] = {}
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self.ctx.store.subscribe_changes(self._on_change)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for queues in self._streams.values():
            for q in queues:
                while not q.empty():  # room for the end marker, whatever was pending
                    q.get_nowait()
                _put(q, None)

    def _on_change(self, change: Change) -> None:
        for q in self._streams.get(change.account_id, ()):
            _put(q, change)

    async def stream(self, account_id: int) -> AsyncIterator[str]:
        q: asyncio.Queue[Change | None] = asyncio.Queue(QUEUE_MAX)
        self._streams.setdefault(account_id, set()).add(q)
        names: dict[int, str] = {}
        try:
            yield "retry: 3000\n\n"
            while not self.ctx.shutting_down.is_set():
                try:
                    change = await asyncio.wait_for(q.get(), PING_INTERVAL)
                except TimeoutError:
                    yield ": ping\n\n"
                    continue
                if change is None:
                    return
                if change.kind == "folders" or change.folder_id not in names:
                    names = {f.id: f.name for f in await self.ctx.store.list_folders(account_id)}
                data = {"kind": change.kind, "mailbox": names.get(change.folder_id)}
                yield f"event: change\ndata: {json.dumps(data)}\n\n"
        finally:
            queues = self._streams.get(account_id)
            if queues is not None:
                queues.discard(q)
                if not queues:
                    del self._streams[account_id]


def _put(q: asyncio.Queue[Change | None], item: Change | None) -> None:
    try:
        q.put_nowait(item)
    except asyncio.QueueFull:
        pass  # a slow reader: it sees the next change, and reloads on its own
