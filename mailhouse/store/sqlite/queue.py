"""The outbound queue: entries, per-recipient state, attempts and their notices."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..base import BlobWriter, NotFound
from ..models import (
    AttemptOutcome,
    Incoming,
    QueueEntry,
    QueueRecipient,
)
from .engine import _now
from .messages import MessageStore


class QueueStore(MessageStore):
    # ------------------------------------------------------------------ queue, journey
    def _queue_entries(self, c: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> list[QueueEntry]:
        rows = c.execute(
            "SELECT q.id, q.sender, q.message_id, q.created, q.next_attempt, q.attempts, q.held, q.last_error, "
            "q.warned, q.ret, q.envid, q.body_type, q.smtputf8, q.auth_user, b.size, q.blob_id "
            f"FROM queue q JOIN blobs b ON b.id = q.blob_id {where} ORDER BY q.created",
            args,
        ).fetchall()
        out = []
        for r in rows:
            rcpts = [
                QueueRecipient(*x)
                for x in c.execute(
                    "SELECT id, address, orcpt, notify, state, last_reply, updated FROM queue_recipients "
                    "WHERE queue_id = ? ORDER BY id",
                    (r[0],),
                )
            ]
            out.append(
                QueueEntry(
                    id=r[0], sender=r[1], message_id=r[2], created=r[3], next_attempt=r[4], attempts=r[5],
                    held=bool(r[6]), last_error=r[7], warned=bool(r[8]), ret=r[9], envid=r[10],
                    body_type=r[11], smtputf8=bool(r[12]), auth_user=r[13], size=r[14], recipients=rcpts,
                    blob_id=r[15],
                )
            )
        return out

    async def list_queue(self) -> list[QueueEntry]:
        return await self._read(lambda c: self._queue_entries(c, "", ()))

    async def get_queue_entry(self, queue_id: str) -> QueueEntry | None:
        found = await self._read(lambda c: self._queue_entries(c, "WHERE q.id = ?", (queue_id,)))
        return found[0] if found else None

    async def due_queue(self, now: float, limit: int, exclude: set[str]) -> list[QueueEntry]:
        def fn(c: sqlite3.Connection) -> list[QueueEntry]:
            ids = [
                r[0]
                for r in c.execute(
                    "SELECT id FROM queue WHERE held = 0 AND next_attempt <= ? ORDER BY next_attempt LIMIT ?",
                    (now, limit + len(exclude)),
                )
                if r[0] not in exclude
            ][:limit]
            out: list[QueueEntry] = []
            for qid in ids:
                out += self._queue_entries(c, "WHERE q.id = ?", (qid,))
            return out

        return await self._read(fn)

    async def next_queue_time(self) -> float | None:
        row = await self._read(lambda c: c.execute("SELECT min(next_attempt) FROM queue WHERE held = 0").fetchone())
        return float(row[0]) if row and row[0] is not None else None

    async def blob_source(self, blob_id: int) -> bytes | str:
        def fn(c: sqlite3.Connection) -> bytes | str:
            r = c.execute("SELECT data, path FROM blobs WHERE id = ?", (blob_id,)).fetchone()
            if r is None:
                raise NotFound(f"no blob {blob_id}")
            return bytes(r[0]) if r[0] is not None else str(self.blob_dir / r[1])

        return await self._read(fn)

    async def finish_attempt(
        self,
        queue_id: str,
        outcome: AttemptOutcome,
        notices: list[tuple[BlobWriter, Incoming]],
    ) -> bool:
        prepared = [(await self._prepare(b), inc, json.dumps(inc.parse, separators=(",", ":"))) for b, inc in notices]
        now = _now()

        def fn(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT message_id FROM queue WHERE id = ?", (queue_id,)).fetchone()
            if row is None:
                raise NotFound(f"no queued message {queue_id}")
            c.executemany(
                "UPDATE queue_recipients SET state = ?, last_reply = ?, updated = ? WHERE id = ? AND queue_id = ?",
                [(u.state, u.reply, now, u.recipient_id, queue_id) for u in outcome.updates],
            )
            c.execute(
                "UPDATE queue SET next_attempt = ?, attempts = attempts + ?, last_error = ?, "
                "warned = warned OR ? WHERE id = ?",
                (outcome.next_attempt, int(outcome.count_attempt), outcome.last_error, int(outcome.warned), queue_id),
            )
            self._insert_events(c, queue_id, row[0], outcome.events, now)
            for blob, inc, pj in prepared:
                self._deliver_tx(c, blob, inc, pj)
            left = c.execute(
                "SELECT count(*) FROM queue_recipients WHERE queue_id = ? AND state IN ('pending', 'deferred')",
                (queue_id,),
            ).fetchone()[0]
            if left == 0:
                c.execute("DELETE FROM queue WHERE id = ?", (queue_id,))
                self._insert_events(c, queue_id, row[0], [("removed", {"reason": "no recipient left pending"})], now)
                return True
            return False

        try:
            return await self._write(fn)
        finally:
            for blob, _, _ in prepared:
                blob.close_file()

    async def update_queue_entry(
        self, queue_id: str, *, held: bool | None = None, next_attempt: float | None = None
    ) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM queue WHERE id = ?", (queue_id,)).fetchone() is None:
                raise NotFound(f"no queued message {queue_id}")
            if held is not None:
                c.execute("UPDATE queue SET held = ? WHERE id = ?", (int(held), queue_id))
            if next_attempt is not None:
                c.execute("UPDATE queue SET next_attempt = ? WHERE id = ?", (next_attempt, queue_id))

        await self._write(fn)

    async def retry_all(self, now: float) -> int:
        return await self._write(
            lambda c: c.execute("UPDATE queue SET next_attempt = ? WHERE held = 0", (now,)).rowcount
        )

    async def delete_queue_entry(self, queue_id: str) -> None:
        now = _now()

        def fn(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT message_id FROM queue WHERE id = ?", (queue_id,)).fetchone()
            if row is None:
                raise NotFound(f"no queued message {queue_id}")
            c.execute("DELETE FROM queue WHERE id = ?", (queue_id,))
            self._insert_events(c, queue_id, row[0], [("deleted", {"by": "administrator"})], now)

        await self._write(fn)

