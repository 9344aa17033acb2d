"""Folders and messages as rows; delivery and APPEND write them; listeners hear of changes."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from ..base import BlobWriter, NotFound
from ..models import (
    Change,
    Delivered,
    Folder,
    Incoming,
    LocalTarget,
    Message,
    bits_to_flags,
    flags_to_bits,
)
from . import jsontext
from .blobs import SpoolBlob
from .engine import Engine, _folder_name, _now, insert_rows


class MessageStore(Engine):
    # ------------------------------------------------------------------ folders, messages
    _FOLDER_SQL = (
        "SELECT id, account_id, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed, recent_uid "
        "FROM folders"
    )

    @staticmethod
    def _folder(r: tuple[Any, ...]) -> Folder:
        return Folder(
            id=r[0], account_id=r[1], name=r[2], special_use=r[3], uidvalidity=r[4], uidnext=r[5],
            highestmodseq=r[6], subscribed=bool(r[7]), recent_uid=r[8],
        )

    async def list_folders(self, account_id: int) -> list[Folder]:
        # An account has tens of folders, found through the (account_id, name) index.
        return self._read_inline(
            lambda c: [
                self._folder(r)
                for r in c.execute(self._FOLDER_SQL + " WHERE account_id = ? ORDER BY name != 'INBOX', name", (account_id,))
            ]
        )

    async def get_folder(self, account_id: int, name: str) -> Folder | None:
        def fn(c: sqlite3.Connection) -> Folder | None:
            r = c.execute(self._FOLDER_SQL + " WHERE account_id = ? AND name = ?", (account_id, _folder_name(name))).fetchone()
            return self._folder(r) if r else None

        return self._read_inline(fn)

    _MESSAGE_SQL = (
        "SELECT id, folder_id, uid, internal_date, size, flags, keywords, modseq, queue_id, message_id, parse, blob_id, "
        "internal_tz FROM messages"
    )

    @staticmethod
    def _message(r: tuple[Any, ...]) -> Message:
        return Message(
            id=r[0], folder_id=r[1], uid=r[2], internal_date=r[3], size=r[4],
            flags=bits_to_flags(r[5], r[6]), modseq=r[7], queue_id=r[8], message_id=r[9],
            parse=jsontext.loads(r[10]), blob_id=r[11], internal_tz=r[12],
        )

    async def list_messages(self, folder_id: int) -> list[Message]:
        return await self._read(
            lambda c: [self._message(r) for r in c.execute(self._MESSAGE_SQL + " WHERE folder_id = ? ORDER BY uid", (folder_id,))]
        )

    async def get_message(self, folder_id: int, uid: int) -> Message | None:
        def fn(c: sqlite3.Connection) -> Message | None:
            r = c.execute(self._MESSAGE_SQL + " WHERE folder_id = ? AND uid = ?", (folder_id, uid)).fetchone()
            return self._message(r) if r else None

        return await self._read(fn)

    async def read_blob(self, blob_id: int) -> bytes:
        def fn(c: sqlite3.Connection) -> bytes:
            r = c.execute("SELECT data, path FROM blobs WHERE id = ?", (blob_id,)).fetchone()
            if r is None:
                raise NotFound(f"no blob {blob_id}")
            return self._blob_bytes(r[0], r[1])

        return await self._read(fn)

    def new_blob(self) -> SpoolBlob:
        return SpoolBlob(self.blob_dir)

    def _insert_blob(self, c: sqlite3.Connection, blob: SpoolBlob) -> int:
        blob_id = _blob_ids(c, 1)
        if blob.spooled:
            assert blob.path is not None
            rel = str(blob.path.relative_to(self.blob_dir))
            c.execute("INSERT INTO blobs(id, size, data, path) VALUES (?, ?, NULL, ?)", (blob_id, blob.size, rel))
        else:
            c.execute("INSERT INTO blobs(id, size, data) VALUES (?, ?, ?)", (blob_id, blob.size, blob.inline_bytes()))
        return blob_id

    @staticmethod
    def _insert_message(
        c: sqlite3.Connection, target: LocalTarget, blob_id: int, size: int, parse_json: str,
        internal_date: float, flags: Iterable[str], queue_id: str | None, message_id: str | None,
        internal_tz: int = 0,
    ) -> Delivered:
        fid, uid, modseq, fname = _target_folder(c, target.account_id, target.folder, target.address)
        modseq += 1
        c.execute("UPDATE folders SET uidnext = ?, highestmodseq = ? WHERE id = ?", (uid + 1, modseq, fid))
        bits, keywords = flags_to_bits(set(flags))
        c.execute(
            "INSERT INTO messages(folder_id, uid, blob_id, internal_date, size, flags, keywords, modseq, "
            "queue_id, message_id, parse, internal_tz) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (fid, uid, blob_id, internal_date, size, bits, keywords, modseq, queue_id, message_id, parse_json,
             internal_tz),
        )
        return Delivered(target.account_id, target.address, fname, uid, fid)

    def _deliver_tx(self, c: sqlite3.Connection, blob: SpoolBlob, incoming: Incoming, parse_json: str) -> list[Delivered]:
        return self._deliver_many(c, [(blob, incoming, parse_json)])[0]

    @staticmethod
    def _insert_queue_entry(c: sqlite3.Connection, incoming: Incoming, blob_id: int, now: float) -> None:
        c.execute(
            "INSERT INTO queue(id, blob_id, sender, message_id, created, next_attempt, ret, envid, "
            "body_type, smtputf8, auth_user) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (incoming.queue_id, blob_id, incoming.sender, incoming.message_id, now, now,
             incoming.ret, incoming.envid, incoming.body_type, int(incoming.smtputf8), incoming.auth_user),
        )
        c.executemany(
            "INSERT INTO queue_recipients(queue_id, address, orcpt, notify, updated) VALUES (?,?,?,?,?)",
            [(incoming.queue_id, r.address, r.orcpt, r.notify, now) for r in incoming.remote],
        )

    @staticmethod
    def _insert_events(
        c: sqlite3.Connection, queue_id: str, message_id: str | None,
        events: list[tuple[str, dict[str, Any]]], now: float,
    ) -> None:
        c.executemany(
            "INSERT INTO journey(queue_id, message_id, time, kind, data) VALUES (?,?,?,?,?)",
            [(queue_id, message_id, now, k, jsontext.dumps(d)) for k, d in events],
        )

    async def _prepare(self, blob: BlobWriter) -> SpoolBlob:
        assert isinstance(blob, SpoolBlob)
        if blob.spooled:
            await asyncio.get_running_loop().run_in_executor(None, blob.sync)
        return blob

    def _deliver_many(
        self, c: sqlite3.Connection, items: list[tuple[SpoolBlob, Incoming, str]]
    ) -> list[list[Delivered]]:
        """The deliveries waiting in one batch (or one alone, _deliver_tx): their rows, with
        one multi-row statement per table and each folder's counters read and written once
        (the writer thread's Python per message is what contends for the GIL with
        the event loop)."""
        now = _now()
        # Blob ids assigned here, so the message rows can name them without a round trip.
        base = _blob_ids(c, len(items)) - 1
        blob_rows: list[tuple[int, int, bytes | None, str | None]] = []
        for n, (blob, _inc, _pj) in enumerate(items, base + 1):
            if blob.spooled:
                assert blob.path is not None
                blob_rows.append((n, blob.size, None, str(blob.path.relative_to(self.blob_dir))))
            else:
                blob_rows.append((n, blob.size, blob.inline_bytes(), None))
        insert_rows(c, "INSERT INTO blobs(id, size, data, path)", 4, blob_rows)
        # (account_id, folder) -> [folder id, next uid, modseq, name], shared by the
        # names that lead to the same folder (a missing one falls back to INBOX).
        folders: dict[tuple[int, str], list[Any]] = {}
        by_id: dict[int, list[Any]] = {}
        message_rows = []
        journey_rows = []
        out: list[list[Delivered]] = []
        for n, (blob, inc, parse_json) in enumerate(items, base + 1):
            bits, keywords = flags_to_bits(inc.flags) if inc.flags else (0, "")
            delivered = []
            for t in inc.local:
                key = (t.account_id, _folder_name(t.folder))
                f = folders.get(key)
                if f is None:
                    row = _target_folder(c, t.account_id, t.folder, t.address)
                    f = folders[key] = by_id.setdefault(row[0], list(row))
                fid, uid = f[0], f[1]
                f[1] = uid + 1
                f[2] += 1
                message_rows.append((fid, uid, n, inc.internal_date, blob.size, bits, keywords, f[2],
                                     inc.queue_id, inc.message_id, parse_json, inc.internal_tz))
                delivered.append(Delivered(t.account_id, t.address, f[3], uid, fid))
            if inc.remote:
                self._insert_queue_entry(c, inc, n, now)
            qid, mid = inc.queue_id, inc.message_id
            journey_rows += [(qid, mid, now, k, jsontext.dumps(d)) for k, d in inc.events]
            journey_rows += [
                (qid, mid, now, "delivered", jsontext.dumps({"account": d.address, "folder": d.folder, "uid": d.uid}))
                for d in delivered
            ]
            if inc.remote:
                journey_rows.append((qid, mid, now, "queued", jsontext.dumps({"recipients": [r.address for r in inc.remote]})))
            out.append(delivered)
        c.executemany(
            "UPDATE folders SET uidnext = ?, highestmodseq = ? WHERE id = ?",
            [(f[1], f[2], f[0]) for f in by_id.values()],
        )
        insert_rows(
            c,
            "INSERT INTO messages(folder_id, uid, blob_id, internal_date, size, flags, keywords, modseq, "
            "queue_id, message_id, parse, internal_tz)",
            12,
            message_rows,
        )
        insert_rows(c, "INSERT INTO journey(queue_id, message_id, time, kind, data)", 5, journey_rows)
        return out

    async def deliver(self, blob: BlobWriter, incoming: Incoming) -> list[Delivered]:
        assert isinstance(blob, SpoolBlob)
        sb = await self._prepare(blob) if blob.spooled else blob  # no coroutine for an inline body
        parse_json = jsontext.dumps(incoming.parse)
        try:
            out = await self._write(
                lambda c: self._deliver_tx(c, sb, incoming, parse_json),
                directory=False, many=self._deliver_many, item=(sb, incoming, parse_json),
            )
        finally:
            sb.close_file()
        if self._change_listeners:
            self._publish([Change(d.account_id, d.folder_id, "exists") for d in out])
        return out

    async def append(
        self,
        target: LocalTarget,
        raw: bytes,
        *,
        flags: Iterable[str] = (),
        internal_date: float | None = None,
        parse: dict[str, Any] | None = None,
        internal_tz: int = 0,
    ) -> Delivered:
        from ...mime.structure import analyze

        blob = self.new_blob()
        blob.write(raw)
        await self._prepare(blob)
        parse_json = jsontext.dumps(parse if parse is not None else analyze(raw))
        when = internal_date if internal_date is not None else _now()
        flag_list = list(flags)

        def fn(c: sqlite3.Connection) -> Delivered:
            blob_id = self._insert_blob(c, blob)
            return self._insert_message(
                c, target, blob_id, blob.size, parse_json, when, flag_list, None, None, internal_tz
            )

        try:
            d = await self._write(fn, directory=False)
        finally:
            blob.close_file()
        self._publish([Change(d.account_id, d.folder_id, "exists")])
        return d

    # ------------------------------------------------------------------ mailbox operations
    def subscribe_changes(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        self._change_listeners.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._change_listeners.remove(callback)

        return unsubscribe

    def announce_changes(self, changes: list[Change]) -> None:
        self._publish(changes)

    def _publish(self, changes: list[Change]) -> None:
        for ch in changes:
            for cb in list(self._change_listeners):
                try:
                    cb(ch)
                except Exception:  # a listener's bug must not undo a delivery
                    pass

    def _blob_bytes(self, data: bytes | None, path: str | None, limit: int | None = None) -> bytes:
        if data is not None:
            return bytes(data)
        with open(self.blob_dir / str(path), "rb") as f:
            return f.read() if limit is None else f.read(limit)


def _target_folder(c: sqlite3.Connection, account_id: int, folder: str, address: str) -> tuple[Any, ...]:
    """(id, uidnext, highestmodseq, name) of the folder a delivery goes to."""
    row = c.execute(
        "SELECT id, uidnext, highestmodseq, name FROM folders WHERE account_id = ? AND name = ?",
        (account_id, _folder_name(folder)),
    ).fetchone()
    if row is None:  # a filing rule named a folder that is gone: INBOX never is
        row = c.execute(
            "SELECT id, uidnext, highestmodseq, name FROM folders WHERE account_id = ? AND name = 'INBOX'",
            (account_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"account {address} no longer exists")
    return tuple(row)


def _blob_ids(c: sqlite3.Connection, n: int) -> int:
    """The first of n new blob ids, in the write transaction. Never one used
    before: SQLite's max(rowid) + 1 would give a deleted blob's id to the next
    body, and a reader that listed a message and then reads its body by id (an
    IMAP FETCH, in two steps) could be handed another message's bytes. The
    high-water mark in meta outlives deleted rows, as UIDVALIDITY's does."""
    row = c.execute(
        "SELECT max(coalesce((SELECT value FROM meta WHERE key = 'blob_id'), 0), coalesce((SELECT max(id) FROM blobs), 0))"
    ).fetchone()
    first = int(row[0]) + 1
    c.execute(
        "INSERT INTO meta(key, value) VALUES ('blob_id', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (first + n - 1,),
    )
    return first
