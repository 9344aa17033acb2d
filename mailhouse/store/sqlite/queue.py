"""The outbound queue: entries, per-recipient state, attempts and their notices."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from ..base import BlobWriter, NotFound
from ..models import (
    AttemptOutcome,
    Incoming,
    QueueEntry,
    QueueRecipient,
)
from . import jsontext
from .engine import _now, chunks, in_list, values_table
from .messages import MessageStore

_PREFETCH_LOCK = threading.Lock()


class QueueStore(MessageStore):
    # ------------------------------------------------------------------ queue, journey
    # Bodies read along with due entries (inline blobs only), by blob id: the queue
    # manager asks for each entry's body right after due_queue, and answering that
    # from here saves an executor hop per message. Consumed on use, kept only for
    # entries with recipients pending, and bounded in bytes: a body never asked
    # for (its attempt cancelled at shutdown) only takes room until the cache fills
    # and is emptied. Blob ids are never given out again (MessageStore._blob_ids)
    # and a blob's bytes never change, so a body kept here is right whenever asked
    # for, even after its row is gone. (Skipping the cache whenever a commit had
    # dropped blob rows during the read, as before, lost the bodies of every other
    # due batch in a drain, where commits drop blobs all the time: 76-80 µs of
    # reader CPU a message instead of 59-61, 627-650 µs in all instead of 581-588.)
    _PREFETCH_MAX_BYTES = 64 * 1024 * 1024
    _prefetch: dict[int, bytes] | None = None
    _prefetch_bytes = 0

    def _queue_entries(
        self, c: sqlite3.Connection, where: str, args: tuple[Any, ...], *, with_data: bool = False
    ) -> list[QueueEntry]:
        rows = c.execute(
            "SELECT q.id, q.sender, q.message_id, q.created, q.next_attempt, q.attempts, q.held, q.last_error, "
            "q.warned, q.ret, q.envid, q.body_type, q.smtputf8, q.auth_user, b.size, q.blob_id"
            + (", b.data" if with_data else "")
            + f" FROM queue q JOIN blobs b ON b.id = q.blob_id {where} ORDER BY q.created",
            args,
        ).fetchall()
        if not rows:
            return []
        # All recipients in one query (not one per entry): a due batch is up to
        # max_connections entries. Chunked below SQLite's bound-parameter limit.
        by_entry: dict[str, list[QueueRecipient]] = {r[0]: [] for r in rows}
        ids = list(by_entry)
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            for x in c.execute(
                "SELECT queue_id, id, address, orcpt, notify, state, last_reply, updated FROM queue_recipients "
                f"WHERE queue_id IN ({','.join('?' * len(part))}) ORDER BY id",
                part,
            ):
                by_entry[x[0]].append(QueueRecipient(*x[1:]))
        out = []
        for r in rows:
            recipients = by_entry[r[0]]
            if (
                with_data
                and r[16] is not None
                # Only a body the queue manager will ask for.
                and any(x.state in ("pending", "deferred") for x in recipients)
            ):
                data = bytes(r[16])
                with _PREFETCH_LOCK:  # filled on a reader thread, emptied on the loop's
                    cache = self._prefetched()
                    if self._prefetch_bytes + len(data) > self._PREFETCH_MAX_BYTES:
                        cache.clear()  # leftovers: those still wanted are read again, no harm
                        self._prefetch_bytes = 0
                    old = cache.pop(r[15], None)
                    self._prefetch_bytes += len(data) - (len(old) if old is not None else 0)
                    cache[r[15]] = data
            out.append(
                QueueEntry(
                    id=r[0], sender=r[1], message_id=r[2], created=r[3], next_attempt=r[4], attempts=r[5],
                    held=bool(r[6]), last_error=r[7], warned=bool(r[8]), ret=r[9], envid=r[10],
                    body_type=r[11], smtputf8=bool(r[12]), auth_user=r[13], size=r[14], recipients=recipients,
                    blob_id=r[15],
                )
            )
        return out

    def _prefetched(self) -> dict[int, bytes]:
        cache = self._prefetch
        if cache is None:
            cache = self._prefetch = {}
        return cache

    async def list_queue(self) -> list[QueueEntry]:
        return await self._read(lambda c: self._queue_entries(c, "", ()))

    async def get_queue_entry(self, queue_id: str) -> QueueEntry | None:
        found = await self._read(lambda c: self._queue_entries(c, "WHERE q.id = ?", (queue_id,)))
        return found[0] if found else None

    async def due_queue(
        self, now: float, limit: int, exclude: set[str], part: tuple[int, int] | None = None
    ) -> list[QueueEntry]:
        share, args = _share(part)

        def fn(c: sqlite3.Connection) -> list[QueueEntry]:
            ids = [
                r[0]
                for r in c.execute(
                    f"SELECT id FROM queue WHERE held = 0 AND next_attempt <= ?{share} ORDER BY next_attempt LIMIT ?",
                    (now, *args, limit + len(exclude)),
                )
                if r[0] not in exclude
            ][:limit]
            if not ids:
                return []
            # One query for the batch (with the bodies of inline blobs), in due order.
            found = {
                e.id: e
                for e in self._queue_entries(
                    c, f"WHERE q.id IN ({','.join('?' * len(ids))})", tuple(ids), with_data=True
                )
            }
            return [found[i] for i in ids if i in found]

        return await self._read(fn)

    async def next_queue_time(self, part: tuple[int, int] | None = None) -> float | None:
        share, args = _share(part)
        row = await self._read(
            lambda c: c.execute(f"SELECT min(next_attempt) FROM queue WHERE held = 0{share}", args).fetchone()
        )
        return float(row[0]) if row and row[0] is not None else None

    async def blob_source(self, blob_id: int) -> bytes | str:
        with _PREFETCH_LOCK:
            data = self._prefetched().pop(blob_id, None)
            if data is not None:
                self._prefetch_bytes -= len(data)
        if data is not None:
            return data

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
        prepared = [(await self._prepare(b), inc, jsontext.dumps(inc.parse)) for b, inc in notices]
        now = _now()

        def fn(c: sqlite3.Connection) -> bool:
            # This runs on the writer thread for every attempt, holding the GIL the
            # event loop needs: as few statements as will do.
            row = c.execute(
                "UPDATE queue SET next_attempt = ?, attempts = attempts + ?, last_error = ?, "
                "warned = warned OR ? WHERE id = ? RETURNING message_id",
                (outcome.next_attempt, int(outcome.count_attempt), outcome.last_error, int(outcome.warned), queue_id),
            ).fetchall()  # all: the statement is finished (and reset) before the next
            if not row:
                raise NotFound(f"no queued message {queue_id}")
            if len(outcome.updates) == 1:
                u = outcome.updates[0]
                c.execute(
                    "UPDATE queue_recipients SET state = ?, last_reply = ?, updated = ? WHERE id = ? AND queue_id = ?",
                    (u.state, u.reply, now, u.recipient_id, queue_id),
                )
            elif outcome.updates:
                c.executemany(
                    "UPDATE queue_recipients SET state = ?, last_reply = ?, updated = ? WHERE id = ? AND queue_id = ?",
                    [(u.state, u.reply, now, u.recipient_id, queue_id) for u in outcome.updates],
                )
            for blob, inc, pj in prepared:
                self._deliver_tx(c, blob, inc, pj)
            left = c.execute(
                "SELECT EXISTS (SELECT 1 FROM queue_recipients WHERE queue_id = ? AND state IN ('pending', 'deferred'))",
                (queue_id,),
            ).fetchone()[0]
            events = outcome.events
            if not left:
                c.execute("DELETE FROM queue WHERE id = ?", (queue_id,))
                events = [*events, ("removed", {"reason": "no recipient left pending"})]
            self._insert_events(c, queue_id, row[0][0], events, now)
            return not left

        try:
            if prepared:  # notices to queue or deliver: rare, one job alone
                return await self._write(fn, directory=False)
            # The common case joins the other attempts finished meanwhile: a few
            # set-wise statements for the whole group commit (see _finish_many).
            encoded = [(kind, jsontext.dumps(data)) for kind, data in outcome.events]
            return await self._write(fn, directory=False, many=self._finish_many,
                                     item=(queue_id, outcome, now, encoded))
        finally:
            for blob, _, _ in prepared:
                blob.close_file()

    def _finish_many(
        self, c: sqlite3.Connection, items: list[tuple[str, AttemptOutcome, float, list[tuple[str, str]]]]
    ) -> list[bool]:
        """finish_attempt's fn for a group of attempts without notices: the same
        changes in a few set-wise statements for the whole group, whatever its size.
        This runs on the writer thread holding the store's write lock, and every
        statement step lets go of the GIL and must win it back from the busy event
        loop: so few steps, and the JSON already encoded by the caller. Raises if any
        entry is gone, so that the writer runs each alone (NotFound for that one)."""
        ids = [item[0] for item in items]
        ups = [(u.recipient_id, qid, u.state, u.reply, now) for qid, o, now, _ in items for u in o.updates]
        for up in chunks(ups):
            values, params = values_table(5, up)
            c.execute(
                # (id, queue id, state, reply, time): a VALUES table's columns are column1...
                "UPDATE queue_recipients SET state = u.column3, last_reply = u.column4, updated = u.column5 "
                f"FROM (VALUES {values}) AS u "
                "WHERE queue_recipients.id = u.column1 AND queue_recipients.queue_id = u.column2",
                params,
            )
        left: set[str] = set()
        for part in chunks(ids):
            marks, params = in_list(part)
            left.update(
                r[0]
                for r in c.execute(
                    "SELECT DISTINCT queue_id FROM queue_recipients WHERE state IN ('pending', 'deferred') "
                    f"AND queue_id IN ({marks})",
                    params,
                )
            )
        # The journey first, while every entry still has its row (and message id).
        events = [(qid, now, kind, data) for qid, _, now, evs in items for kind, data in evs]
        events += [(qid, now, "removed", _REMOVED) for qid, _, now, _ in items if qid not in left]
        for ev in chunks([(i, *e) for i, e in enumerate(events)]):
            values, params = values_table(5, ev)
            c.execute(
                # (order, queue id, time, kind, data); the padding joins no queue row
                "INSERT INTO journey(queue_id, message_id, time, kind, data) "
                "SELECT v.column2, q.message_id, v.column3, v.column4, v.column5 "
                f"FROM (VALUES {values}) AS v JOIN queue q ON q.id = v.column2 ORDER BY v.column1",
                params,
            )
        found = 0
        kept = [(qid, o.next_attempt, int(o.count_attempt), o.last_error, int(o.warned))
                for qid, o, _, _ in items if qid in left]
        for kp in chunks(kept):
            values, params = values_table(5, kp)
            found += c.execute(
                # (id, next attempt, attempts added, last error, warned). Not a WITH
                # statement: sqlite3 gives a rowcount only to those starting UPDATE etc.
                "UPDATE queue SET next_attempt = v.column2, attempts = attempts + v.column3, "
                "last_error = v.column4, warned = warned OR v.column5 "
                f"FROM (VALUES {values}) AS v WHERE queue.id = v.column1",
                params,
            ).rowcount
        done = [qid for qid in ids if qid not in left]
        for gone in chunks(done):
            marks, params = in_list(gone)
            found += c.execute(f"DELETE FROM queue WHERE id IN ({marks})", params).rowcount
        if found != len(items):
            raise NotFound("a queued message is gone (or listed twice): finish one by one")
        return [qid not in left for qid in ids]

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



_REMOVED = jsontext.dumps({"reason": "no recipient left pending"})


def _share(part: tuple[int, int] | None) -> tuple[str, tuple[int, ...]]:
    """The SQL condition for one share of the queue: by rowid, which spreads a
    backlog's consecutive entries over the shares (mail that trickles in, each
    entry gone before the next comes, may reuse one rowid and so one share:
    no harm, the load is light). Rowids stay put (mailhouse never runs VACUUM,
    which may renumber them), so an entry in flight never moves to another share."""
    if part is None or part[1] <= 1:
        return "", ()
    return " AND rowid % ? = ?", (part[1], part[0])
