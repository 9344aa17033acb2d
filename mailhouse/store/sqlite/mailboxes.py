"""Mailbox operations for IMAP, POP3 and the webmail: folders, flags, expunge, copy, and the reads IMAP sessions make."""

from __future__ import annotations

import contextlib
import sqlite3
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..base import NotFound, StoreError
from ..models import (
    FLAG_BITS,
    AppendItem,
    Change,
    Delivered,
    FlagChange,
    Folder,
    FolderColumns,
    FolderDelta,
    FolderSummary,
    LocalTarget,
    Message,
    MessageState,
    SearchRow,
    bits_to_flags,
    flags_to_bits,
)
from . import jsontext
from .blobs import SpoolBlob
from .engine import _folder_name, _now, _uidvalidity
from .messages import MessageStore

T = TypeVar("T")

# Reads an IMAP session waits for run on the caller's thread (the event loop)
# when they touch a bounded handful of rows, on the engine's private reader
# connection: such a query costs 5-30 µs there, while a hop to the reader pool
# costs the loop ~60-90 µs and a worker as much again under the same GIL
# (benchmarks/imap_bench.py). Anything that may touch many rows, or a blob
# file, still goes to the pool; the limits below bound the loop's stall.
INLINE_ROWS = 500
"""A delta (changes, expunges) read inline is cut off here and re-read in the pool."""
INLINE_MESSAGES = 16
"""get_messages / read_blobs for at most this many messages run inline..."""
INLINE_BLOB_BYTES = 64 * 1024
"""...reading inline only blobs stored in the row up to this size."""
INLINE_HEADER_ROWS = 32
"""search_rows with headers: this many rows at most (each reads <= 16 KiB)."""

COLUMNS_CACHE_MESSAGES = 400_000
"""Messages kept in the shared folder-columns cache (~21 bytes each)."""


class _TooMany(Exception):
    """An inline read met more rows than it may handle on the loop."""


@dataclass(slots=True)
class _CachedColumns:
    """The columns of one folder as of its mod-sequence ``modseq``, shared by
    every SELECT of it in this process: the next SELECT reads only what
    changed since (an indexed range), not the whole folder again."""

    uidvalidity: int
    modseq: int
    uids: array[int]
    flags: bytearray
    modseqs: array[int]
    sizes: array[int]
    keywords: dict[int, str]

    def apply(self, changed: list[tuple[int, int, str, int, int]], vanished: list[int], modseq: int) -> None:
        """Take in a delta (rows sorted by UID); arrays stay sorted by UID."""
        uids = self.uids
        if vanished:
            gone = set(vanished)
            drop = {i for i in (bisect_left(uids, u) for u in vanished) if i < len(uids) and uids[i] in gone}
            if drop:
                for i in drop:
                    self.keywords.pop(uids[i], None)
                keep = [i for i in range(len(uids)) if i not in drop]
                self.uids = uids = array("I", [uids[i] for i in keep])
                self.flags = bytearray(self.flags[i] for i in keep)
                self.modseqs = array("Q", [self.modseqs[i] for i in keep])
                self.sizes = array("Q", [self.sizes[i] for i in keep])
        for uid, bits, kw, mseq, size in changed:
            i = bisect_left(uids, uid)
            if i < len(uids) and uids[i] == uid:
                self.flags[i] = bits & 255
                self.modseqs[i] = mseq
            else:
                uids.insert(i, uid)
                self.flags.insert(i, bits & 255)
                self.modseqs.insert(i, mseq)
                self.sizes.insert(i, size)
            if kw:
                self.keywords[uid] = kw
            else:
                self.keywords.pop(uid, None)
        self.modseq = modseq

    def columns(self, folder: Folder) -> FolderColumns:
        # Copies: a session's view changes its own arrays (\Recent bits, removals).
        return FolderColumns(
            folder, array("I", self.uids), bytearray(self.flags), array("Q", self.modseqs),
            array("Q", self.sizes), dict(self.keywords),
        )


class MailboxStore(MessageStore):
    # Every write here passes directory=False: folders and messages are not
    # domains, accounts or aliases, so the recipient/login lookups keep their
    # snapshot instead of re-reading it after each flag change or APPEND.
    _columns_cache: OrderedDict[int, _CachedColumns] | None = None
    _columns_cached = 0  # messages in the cache

    async def create_folder(self, account_id: int, name: str, special_use: str | None = None) -> Folder:
        name = _folder_name(name)

        def fn(c: sqlite3.Connection) -> Folder:
            if c.execute("SELECT 1 FROM folders WHERE account_id = ? AND name = ?", (account_id, name)).fetchone():
                raise StoreError(f"folder {name} exists already")
            cur = c.execute(
                "INSERT INTO folders(account_id, name, special_use, uidvalidity) VALUES (?, ?, ?, ?)",
                (account_id, name, special_use, _uidvalidity(c)),
            )
            r = c.execute(self._FOLDER_SQL + " WHERE id = ?", (cur.lastrowid,)).fetchone()
            return self._folder(r)

        f = await self._write(fn, directory=False)
        self._publish([Change(account_id, f.id, "folders")])
        return f

    async def delete_folder(self, account_id: int, name: str) -> None:
        name = _folder_name(name)
        if name == "INBOX":
            raise StoreError("INBOX cannot be deleted")

        def fn(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT id FROM folders WHERE account_id = ? AND name = ?", (account_id, name)).fetchone()
            if row is None:
                raise NotFound(f"no folder {name}")
            c.execute("DELETE FROM messages WHERE folder_id = ?", row)
            c.execute("DELETE FROM folders WHERE id = ?", row)
            return int(row[0])

        fid = await self._write(fn, directory=False)
        self._forget_columns(fid)
        self._publish([Change(account_id, fid, "folders")])

    async def rename_folder(self, account_id: int, old: str, new: str) -> None:
        old, new = _folder_name(old), _folder_name(new)

        def fn(c: sqlite3.Connection) -> None:
            src = c.execute("SELECT id FROM folders WHERE account_id = ? AND name = ?", (account_id, old)).fetchone()
            if src is None:
                raise NotFound(f"no folder {old}")
            if c.execute("SELECT 1 FROM folders WHERE account_id = ? AND name = ?", (account_id, new)).fetchone():
                raise StoreError(f"folder {new} exists already")
            if old == "INBOX":
                cur = c.execute(
                    "INSERT INTO folders(account_id, name, uidvalidity) VALUES (?, ?, ?)",
                    (account_id, new, _uidvalidity(c)),
                )
                dst = int(cur.lastrowid or 0)
                uids = [r[0] for r in c.execute("SELECT uid FROM messages WHERE folder_id = ? ORDER BY uid", src)]
                self._copy_tx(c, src[0], uids, dst, move=True)
                return
            c.execute("UPDATE folders SET name = ? WHERE id = ?", (new, src[0]))
            for fid, name in c.execute(
                "SELECT id, name FROM folders WHERE account_id = ? AND substr(name, 1, ?) = ?",
                (account_id, len(old) + 1, old + "/"),
            ).fetchall():
                c.execute("UPDATE folders SET name = ? WHERE id = ?", (new + name[len(old):], fid))

        await self._write(fn, directory=False)
        self._publish([Change(account_id, 0, "folders")])

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        name = _folder_name(name)

        def fn(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "UPDATE folders SET subscribed = ? WHERE account_id = ? AND name = ?", (int(subscribed), account_id, name)
            )
            if cur.rowcount == 0:
                raise NotFound(f"no folder {name}")

        await self._write(fn, directory=False)

    async def folder_states(self, folder_id: int) -> list[MessageState]:
        return await self._read(
            lambda c: [
                MessageState(*r)
                for r in c.execute(
                    "SELECT uid, flags, keywords, modseq, size FROM messages WHERE folder_id = ? ORDER BY uid",
                    (folder_id,),
                )
            ]
        )

    async def get_messages(self, folder_id: int, uids: list[int]) -> list[Message]:
        def fn(c: sqlite3.Connection) -> list[Message]:
            out: list[Message] = []
            for i in range(0, len(uids), 500):
                part = uids[i : i + 500]
                out += [
                    self._message(r)
                    for r in c.execute(
                        self._MESSAGE_SQL + f" WHERE folder_id = ? AND uid IN ({','.join('?' * len(part))}) ORDER BY uid",
                        (folder_id, *part),
                    )
                ]
            return out

        if len(uids) <= INLINE_MESSAGES:
            return self._read_inline(fn)
        return await self._read(fn)

    def _account_of(self, c: sqlite3.Connection, folder_id: int) -> int:
        row = c.execute("SELECT account_id FROM folders WHERE id = ?", (folder_id,)).fetchone()
        if row is None:
            raise NotFound("the folder no longer exists")
        return int(row[0])

    def _bump(self, c: sqlite3.Connection, folder_id: int) -> int:
        # One statement, not an UPDATE then a SELECT: it runs in the writer's
        # batch, which every waiting session's commit shares.
        row = c.execute(
            "UPDATE folders SET highestmodseq = highestmodseq + 1 WHERE id = ? RETURNING highestmodseq", (folder_id,)
        ).fetchone()
        if row is None:
            raise NotFound("the folder no longer exists")
        return int(row[0])

    async def store_flags(
        self,
        folder_id: int,
        uids: list[int],
        mode: str,
        flags: set[str],
        unchanged_since: int | None = None,
        *,
        missing: list[int] | None = None,
    ) -> tuple[list[FlagChange], list[int]]:
        bits, keywords = flags_to_bits(flags)
        kw = set(keywords.split())

        def fn(c: sqlite3.Connection) -> tuple[int, list[FlagChange], list[int], list[int]]:
            account = self._account_of(c, folder_id)
            changed: list[FlagChange] = []
            failed: list[int] = []
            absent: list[int] = []
            modseq: int | None = None
            for i in range(0, len(uids), 500):
                part = uids[i : i + 500]
                rows = c.execute(
                    f"SELECT uid, flags, keywords, modseq FROM messages WHERE folder_id = ? AND uid IN "
                    f"({','.join('?' * len(part))})",
                    (folder_id, *part),
                ).fetchall()
                if len(rows) < len(part):
                    found = {r[0] for r in rows}
                    absent.extend(u for u in part if u not in found)
                for uid, fbits, fkw, mseq in rows:
                    if unchanged_since is not None and mseq > unchanged_since:
                        failed.append(uid)
                        continue
                    old_kw = set(fkw.split())
                    if mode == "add":
                        nbits, nkw = fbits | bits, old_kw | kw
                    elif mode == "remove":
                        nbits, nkw = fbits & ~bits, old_kw - kw
                    else:
                        nbits, nkw = bits, set(kw)
                    if nbits == fbits and nkw == old_kw:
                        continue
                    if modseq is None:
                        modseq = self._bump(c, folder_id)
                    kws = " ".join(sorted(nkw))
                    c.execute(
                        "UPDATE messages SET flags = ?, keywords = ?, modseq = ? WHERE folder_id = ? AND uid = ?",
                        (nbits, kws, modseq, folder_id, uid),
                    )
                    changed.append(FlagChange(uid, bits_to_flags(nbits, kws), modseq))
            return account, changed, failed, absent

        # Flags are not worth an fsync each (Dovecot does not either): a crash may
        # lose the last changes, which the next durable commit would have carried.
        account, changed, failed, absent = await self._write(fn, durable=False, directory=False)
        if missing is not None:
            missing.extend(absent)
        if changed:
            self._publish([Change(account, folder_id, "flags")])
        return changed, failed

    def _expunge_tx(self, c: sqlite3.Connection, folder_id: int, uids: list[int]) -> list[int]:
        if not uids:
            return []
        modseq = self._bump(c, folder_id)
        gone: list[int] = []
        for i in range(0, len(uids), 500):
            part = uids[i : i + 500]
            marks = ",".join("?" * len(part))
            gone += [
                r[0]
                for r in c.execute(
                    f"DELETE FROM messages WHERE folder_id = ? AND uid IN ({marks}) RETURNING uid", (folder_id, *part)
                )
            ]
        c.executemany(
            "INSERT OR REPLACE INTO expunged(folder_id, uid, modseq) VALUES (?, ?, ?)",
            [(folder_id, u, modseq) for u in gone],
        )
        return sorted(gone)

    async def expunge(self, folder_id: int, uids: list[int] | None = None) -> list[int]:
        deleted = FLAG_BITS["\\Deleted"]

        def fn(c: sqlite3.Connection) -> tuple[int, list[int]]:
            account = self._account_of(c, folder_id)
            cand = [
                r[0] for r in c.execute(
                    "SELECT uid FROM messages WHERE folder_id = ? AND flags & ? ORDER BY uid", (folder_id, deleted)
                )
            ]
            if uids is not None:
                wanted = set(uids)
                cand = [u for u in cand if u in wanted]
            return account, self._expunge_tx(c, folder_id, cand)

        # Not fsync'd, as Dovecot's default mail_fsync=optimized does not: a crash
        # can only bring an expunged message back, never lose one (and its body
        # file stays until a durable commit, see Engine._write_loop).
        account, gone = await self._write(fn, directory=False, durable=False)
        if gone:
            self._publish([Change(account, folder_id, "expunge")])
        return gone

    def _copy_tx(
        self, c: sqlite3.Connection, folder_id: int, uids: list[int], target: int, *, move: bool
    ) -> list[tuple[int, int]]:
        row = c.execute("SELECT uidnext, highestmodseq FROM folders WHERE id = ?", (target,)).fetchone()
        if row is None:
            raise NotFound("the target folder no longer exists")
        uidnext, modseq = row
        modseq += 1
        pairs: list[tuple[int, int]] = []
        for i in range(0, len(uids), 500):
            part = uids[i : i + 500]
            rows = c.execute(
                "SELECT uid, blob_id, internal_date, size, flags, keywords, queue_id, message_id, parse, internal_tz "
                "FROM messages "
                f"WHERE folder_id = ? AND uid IN ({','.join('?' * len(part))}) ORDER BY uid",
                (folder_id, *part),
            ).fetchall()
            for uid, blob_id, idate, size, fbits, kw, qid, mid, parse, tz in rows:
                c.execute(
                    "INSERT INTO messages(folder_id, uid, blob_id, internal_date, size, flags, keywords, modseq, "
                    "queue_id, message_id, parse, internal_tz) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (target, uidnext, blob_id, idate, size, fbits, kw, modseq, qid, mid, parse, tz),
                )
                pairs.append((uid, uidnext))
                uidnext += 1
        c.execute("UPDATE folders SET uidnext = ?, highestmodseq = ? WHERE id = ?", (uidnext, modseq, target))
        if move and pairs:
            self._expunge_tx(c, folder_id, [p[0] for p in pairs])
        return pairs

    async def copy_messages(
        self, folder_id: int, uids: list[int], target_folder_id: int, *, move: bool = False
    ) -> list[tuple[int, int]]:
        def fn(c: sqlite3.Connection) -> tuple[int, int, list[tuple[int, int]]]:
            return (
                self._account_of(c, folder_id),
                self._account_of(c, target_folder_id),
                self._copy_tx(c, folder_id, sorted(uids), target_folder_id, move=move),
            )

        src_acc, dst_acc, pairs = await self._write(fn, directory=False)
        if pairs:
            changes = [Change(dst_acc, target_folder_id, "exists")]
            if move:
                changes.append(Change(src_acc, folder_id, "expunge"))
            self._publish(changes)
        return pairs

    async def vanished_since(self, folder_id: int, modseq: int) -> list[int]:
        def fn(c: sqlite3.Connection, limit: int) -> list[int]:
            rows = c.execute(
                "SELECT uid FROM expunged WHERE folder_id = ? AND modseq > ? LIMIT ?", (folder_id, modseq, limit)
            ).fetchall()
            if 0 <= limit <= len(rows):
                raise _TooMany
            return sorted(r[0] for r in rows)

        with contextlib.suppress(_TooMany):
            return self._read_inline(lambda c: fn(c, INLINE_ROWS))
        return await self._read(lambda c: fn(c, -1))

    async def mailbox_usage(self, account_id: int) -> int:
        row = await self._read(
            lambda c: c.execute(
                "SELECT coalesce(sum(m.size), 0) FROM messages m JOIN folders f ON f.id = m.folder_id "
                "WHERE f.account_id = ?",
                (account_id,),
            ).fetchone()
        )
        return int(row[0])

    # ------------------------------------------------------------------ IMAP (mailhouse.imap)
    # Reads that must be consistent (the folder row with its messages) run in one
    # read transaction: in autocommit mode each statement would see its own snapshot.
    @staticmethod
    def _snapshot_read(c: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        c.execute("BEGIN")
        try:
            return fn(c)
        finally:
            c.execute("COMMIT")

    def _delta_rows(
        self, c: sqlite3.Connection, folder_id: int, since: int, limit: int
    ) -> tuple[list[tuple[int, int, str, int, int]], list[int]]:
        """(changed rows, expunged UIDs) after mod-sequence ``since``, by UID.
        With ``limit`` >= 0, raise _TooMany rather than return that many."""
        changed = c.execute(
            "SELECT uid, flags, keywords, modseq, size FROM messages WHERE folder_id = ? AND modseq > ? LIMIT ?",
            (folder_id, since, limit),
        ).fetchall()
        vanished = [
            r[0] for r in c.execute(
                "SELECT uid FROM expunged WHERE folder_id = ? AND modseq > ? LIMIT ?", (folder_id, since, limit)
            )
        ]
        if limit >= 0 and (len(changed) >= limit or len(vanished) >= limit):
            raise _TooMany
        changed.sort()
        vanished.sort()
        return changed, vanished

    def _forget_columns(self, folder_id: int) -> None:
        cache = self._columns_cache
        if cache is not None and (entry := cache.pop(folder_id, None)) is not None:
            self._columns_cached -= len(entry.uids)

    def _remember_columns(self, cols: FolderColumns) -> None:
        f = cols.folder
        cache = self._columns_cache
        if cache is None:
            cache = self._columns_cache = OrderedDict()
        old = cache.get(f.id)
        if old is not None and old.modseq > f.highestmodseq:
            return  # a newer state is cached already (a concurrent SELECT)
        self._forget_columns(f.id)
        if len(cols.uids) > COLUMNS_CACHE_MESSAGES // 2:
            return
        cache[f.id] = _CachedColumns(
            f.uidvalidity, f.highestmodseq, array("I", cols.uids), bytearray(cols.flags), array("Q", cols.modseqs),
            array("Q", cols.sizes), dict(cols.keywords),
        )
        self._columns_cached += len(cols.uids)
        while self._columns_cached > COLUMNS_CACHE_MESSAGES and len(cache) > 1:
            _, dropped = cache.popitem(last=False)
            self._columns_cached -= len(dropped.uids)

    def _columns_from_cache(self, c: sqlite3.Connection, folder_id: int, entry: _CachedColumns) -> FolderColumns | None:
        """The folder row, and the cached columns brought up to its mod-sequence
        with what changed since. _TooMany when the cache cannot serve (another
        folder under the same id, or a delta too large for the loop)."""
        r = c.execute(self._FOLDER_SQL + " WHERE id = ?", (folder_id,)).fetchone()
        if r is None:
            return None
        folder = self._folder(r)
        # A folder id can be reused after a DELETE; its UIDVALIDITY then differs
        # (the store never reuses one for a folder that could hold the same UIDs).
        if folder.uidvalidity != entry.uidvalidity or folder.highestmodseq < entry.modseq:
            raise _TooMany
        if folder.highestmodseq > entry.modseq:
            changed, vanished = self._delta_rows(c, folder_id, entry.modseq, INLINE_ROWS)
            before = len(entry.uids)
            entry.apply(changed, vanished, folder.highestmodseq)
            self._columns_cached += len(entry.uids) - before
        return entry.columns(folder)

    async def folder_columns(self, folder_id: int) -> FolderColumns | None:
        cache = self._columns_cache
        entry = cache.get(folder_id) if cache is not None else None
        if entry is not None and cache is not None:
            cache.move_to_end(folder_id)
            try:
                cols = self._read_inline(lambda c: self._snapshot_read(c, lambda c: self._columns_from_cache(c, folder_id, entry)))
            except _TooMany:
                self._forget_columns(folder_id)
            else:
                if cols is None:
                    self._forget_columns(folder_id)
                return cols

        def fn(c: sqlite3.Connection) -> FolderColumns | None:
            r = c.execute(self._FOLDER_SQL + " WHERE id = ?", (folder_id,)).fetchone()
            if r is None:
                return None
            # Each column as one string, parsed by json in C: three times faster
            # than materialising 100,000 row tuples (the covering index
            # messages_state keeps the scan off the wide message rows).
            cols = c.execute(
                "SELECT group_concat(uid), group_concat(flags & 255), group_concat(modseq), group_concat(size) "
                "FROM (SELECT uid, flags, modseq, size FROM messages WHERE folder_id = ? ORDER BY uid)",
                (folder_id,),
            ).fetchone()

            def column(text: str | None) -> list[int]:
                return jsontext.loads("[" + text + "]") if text else []

            uids = array("I", column(cols[0]))
            flags = bytearray(column(cols[1]))
            modseqs = array("Q", column(cols[2]))
            sizes = array("Q", column(cols[3]))
            keywords = dict(
                c.execute(
                    "SELECT uid, keywords FROM messages WHERE folder_id = ? AND keywords != ''", (folder_id,)
                ).fetchall()
            )
            return FolderColumns(self._folder(r), uids, flags, modseqs, sizes, keywords)

        result = await self._read(lambda c: self._snapshot_read(c, fn))
        if result is None:
            self._forget_columns(folder_id)
        else:
            self._remember_columns(result)
        return result

    async def folder_changes(self, folder_id: int, since_modseq: int) -> FolderDelta | None:
        def fn(c: sqlite3.Connection, limit: int) -> FolderDelta | None:
            r = c.execute(self._FOLDER_SQL + " WHERE id = ?", (folder_id,)).fetchone()
            if r is None:
                return None
            folder = self._folder(r)
            if folder.highestmodseq <= since_modseq:
                return FolderDelta(folder, [], [])
            changed, vanished = self._delta_rows(c, folder_id, since_modseq, limit)
            return FolderDelta(folder, changed, vanished)

        # Usually a few rows (a delivery, a flag change): on the loop. A client
        # back after a mass STORE gets its delta from the pool.
        with contextlib.suppress(_TooMany):
            return self._read_inline(lambda c: self._snapshot_read(c, lambda c: fn(c, INLINE_ROWS)))
        return await self._read(lambda c: self._snapshot_read(c, lambda c: fn(c, -1)))

    async def folder_modseqs(self, folder_ids: list[int]) -> dict[int, int]:
        def fn(c: sqlite3.Connection) -> dict[int, int]:
            out: dict[int, int] = {}
            for i in range(0, len(folder_ids), 500):
                part = folder_ids[i : i + 500]
                out.update(
                    c.execute(
                        f"SELECT id, highestmodseq FROM folders WHERE id IN ({','.join('?' * len(part))})", part
                    ).fetchall()
                )
            return out

        return await self._read(fn)

    async def folder_summaries(self, folder_ids: list[int]) -> dict[int, FolderSummary]:
        seen, deleted = FLAG_BITS["\\Seen"], FLAG_BITS["\\Deleted"]

        def fn(c: sqlite3.Connection) -> dict[int, FolderSummary]:
            out: dict[int, FolderSummary] = {}
            for fid in folder_ids:
                n, unseen, dels, size, dsize = c.execute(
                    "SELECT count(*), coalesce(sum((flags & ?) = 0), 0), coalesce(sum((flags & ?) != 0), 0), "
                    "coalesce(sum(size), 0), coalesce(sum(CASE WHEN flags & ? THEN size ELSE 0 END), 0) "
                    "FROM messages WHERE folder_id = ?",
                    (seen, deleted, deleted, fid),
                ).fetchone()
                out[fid] = FolderSummary(int(n), int(unseen), int(dels), int(size), int(dsize))
            return out

        return await self._read(fn)

    async def read_blobs(self, blob_ids: list[int]) -> dict[int, bytes]:
        wanted = sorted(set(blob_ids))

        def fn(c: sqlite3.Connection, ids: list[int]) -> dict[int, bytes]:
            out: dict[int, bytes] = {}
            for i in range(0, len(ids), 500):
                part = ids[i : i + 500]
                for bid, data, path in c.execute(
                    f"SELECT id, data, path FROM blobs WHERE id IN ({','.join('?' * len(part))})", part
                ):
                    out[bid] = self._blob_bytes(data, path)
            return out

        if len(wanted) > INLINE_MESSAGES:
            return await self._read(lambda c: fn(c, wanted))

        def small(c: sqlite3.Connection) -> tuple[dict[int, bytes], list[int]]:
            # Bodies kept in the row and small are read here (the CASE keeps
            # SQLite from loading a large one); files and large rows go to the pool.
            out: dict[int, bytes] = {}
            rest: list[int] = []
            for bid, data in c.execute(
                "SELECT id, CASE WHEN path IS NULL AND size <= ? THEN data END FROM blobs "
                f"WHERE id IN ({','.join('?' * len(wanted))})",
                (INLINE_BLOB_BYTES, *wanted),
            ):
                if data is None:
                    rest.append(bid)
                else:
                    out[bid] = bytes(data)
            return out, rest

        found, rest = self._read_inline(small)
        if rest:
            found.update(await self._read(lambda c: fn(c, rest)))
        return found

    SEARCH_HEADER_PREFIX = 16384  # read this much first; a longer header is read whole

    async def search_rows(self, folder_id: int, uids: list[int], *, headers: bool) -> list[SearchRow]:
        from ...mime.headers import find_header_end

        limit = self.SEARCH_HEADER_PREFIX
        if headers:
            # The prefix of the stored bytes, cut at the end of the header in
            # Python: cheaper than asking SQLite to read the cached parse.
            sql = (
                "SELECT m.uid, m.internal_date, m.internal_tz, substr(b.data, 1, ?), b.path, b.id "
                "FROM messages m JOIN blobs b ON b.id = m.blob_id WHERE m.folder_id = ? AND m.uid IN "
            )
        else:
            sql = "SELECT uid, internal_date, internal_tz, NULL, NULL, NULL FROM messages WHERE folder_id = ? AND uid IN "

        def header_of(c: sqlite3.Connection, prefix: bytes | None, path: str | None, blob_id: int) -> bytes:
            data = bytes(prefix) if prefix is not None else self._blob_bytes(None, path, limit)
            end = find_header_end(data)[1]
            if end == len(data) and len(data) >= limit:
                r = c.execute("SELECT data, path FROM blobs WHERE id = ?", (blob_id,)).fetchone()
                data = self._blob_bytes(r[0], r[1])
                end = find_header_end(data)[1]
            return data[:end]

        def rows(c: sqlite3.Connection, inline: bool) -> list[SearchRow]:
            out: list[SearchRow] = []
            for i in range(0, len(uids), 500):
                part = uids[i : i + 500]
                args: tuple[Any, ...] = (folder_id, *part) if not headers else (limit, folder_id, *part)
                found = c.execute(sql + f"({','.join('?' * len(part))})", args).fetchall()
                for uid, idate, tz, prefix, path, blob_id in found:
                    header = None
                    if headers:
                        if inline and (prefix is None or len(prefix) >= limit):
                            raise _TooMany  # a file to read, or a long header: not on the loop
                        header = header_of(c, prefix, path, blob_id)
                    out.append(SearchRow(uid, idate, header, tz))
            out.sort(key=lambda r: r.uid)
            return out

        if len(uids) <= (INLINE_HEADER_ROWS if headers else INLINE_ROWS):
            with contextlib.suppress(_TooMany):
                return self._read_inline(lambda c: rows(c, True))
        return await self._read(lambda c: rows(c, False))


    async def append_many(self, target: LocalTarget, items: list[AppendItem]) -> list[Delivered]:
        from ...mime.structure import analyze

        prepared: list[tuple[SpoolBlob, str, float, int, list[str]]] = []
        try:
            for item in items:
                blob = self.new_blob()
                blob.write(item.raw)
                await self._prepare(blob)
                parse_json = jsontext.dumps(analyze(item.raw))
                when = item.internal_date if item.internal_date is not None else _now()
                prepared.append((blob, parse_json, when, item.internal_tz, list(item.flags)))

            def fn(c: sqlite3.Connection) -> list[Delivered]:
                if c.execute(
                    "SELECT 1 FROM folders WHERE account_id = ? AND name = ?",
                    (target.account_id, _folder_name(target.folder)),
                ).fetchone() is None:
                    raise NotFound(f"no folder {target.folder}")
                out = []
                for blob, parse_json, when, tz, flags in prepared:
                    blob_id = self._insert_blob(c, blob)
                    out.append(
                        self._insert_message(c, target, blob_id, blob.size, parse_json, when, flags, None, None, tz)
                    )
                return out

            delivered = await self._write(fn, directory=False)
        except BaseException:
            for blob, *_ in prepared:
                blob.discard()
            raise
        for blob, *_ in prepared:
            blob.close_file()
        if delivered:
            self._publish([Change(delivered[0].account_id, delivered[0].folder_id, "exists")])
        return delivered

    async def orphan_subscriptions(self, account_id: int) -> set[str]:
        # A handful of rows at most, usually none: on the loop (see INLINE_ROWS).
        return self._read_inline(
            lambda c: {
                r[0] for r in c.execute("SELECT name FROM imap_subscriptions WHERE account_id = ?", (account_id,))
            }
        )

    async def set_orphan_subscription(self, account_id: int, name: str, subscribed: bool) -> None:
        sql = (
            "INSERT OR IGNORE INTO imap_subscriptions(account_id, name) VALUES (?, ?)"
            if subscribed
            else "DELETE FROM imap_subscriptions WHERE account_id = ? AND name = ?"
        )
        await self._write(lambda c: c.execute(sql, (account_id, name)), directory=False)

    async def note_recent(self, folder_id: int, mark: int) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE folders SET recent_uid = max(recent_uid, ?) WHERE id = ?", (mark, folder_id)
            ),
            durable=False, directory=False,
        )

    async def note_first_read(
        self, queue_id: str, message_id: str | None, account: str, protocol: str
    ) -> bool:
        now = _now()

        def fn(c: sqlite3.Connection) -> bool:
            for (data,) in c.execute(
                "SELECT data FROM journey WHERE queue_id = ? AND kind = 'read'", (queue_id,)
            ):
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    if jsontext.loads(data).get("account") == account:
                        return False
            self._insert_events(c, queue_id, message_id, [("read", {"account": account, "protocol": protocol})], now)
            return True

        return await self._write(fn, durable=False, directory=False)

