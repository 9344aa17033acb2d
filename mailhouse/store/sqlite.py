"""The embedded store: SQLite in WAL mode, with message bodies inline or in files.

Concurrency model (measured, see FIELD-NOTES): one writer thread owns the only
write connection and runs *group commit*: it takes every write job waiting, runs
them in one transaction (a savepoint each, so one failing job does not sink the
others), commits once (one WAL fsync with synchronous=FULL) and only then wakes
the callers. Throughput thus grows with concurrency instead of being capped at
one fsync per message.

Reads that are a single indexed lookup (is this domain local? does this account
exist?) run on the caller's thread on a private connection: in WAL mode readers
never block and such a query costs a few microseconds, far less than the ~130 µs
hop to an executor. Larger reads go to a small reader pool.

Bodies: up to INLINE_MAX bytes they are a BLOB in the row, so the one WAL fsync
covers them; larger ones are files under data_dir/blobs, fsync'd (file and
directory) before the commit that references them. benchmarks/store_bodies.py
measures both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mmap
import os
import queue
import secrets
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from .base import BlobWriter, NotFound, Store, StoreError
from .models import (
    FLAG_BITS,
    SPECIAL_FOLDERS,
    Account,
    Alias,
    ApiToken,
    AppendItem,
    AttemptOutcome,
    Change,
    Delivered,
    Domain,
    FlagChange,
    Folder,
    FolderColumns,
    FolderDelta,
    FolderSummary,
    Incoming,
    JourneyEvent,
    LocalTarget,
    Message,
    MessageQuery,
    MessageState,
    QueueEntry,
    QueueRecipient,
    SearchRow,
    bits_to_flags,
    flags_to_bits,
)

T = TypeVar("T")

INLINE_MAX = 256 * 1024
MAX_BATCH = 256


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
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
            _fsync_dir(self.path.parent)

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


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop | None
    future: Any  # asyncio.Future or concurrent.futures.Future
    after_commit: list[Callable[[], None]] = field(default_factory=list)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _now() -> float:
    return time.time()


class SQLiteStore(Store):
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.db_path = data_dir / "mailhouse.db"
        self.blob_dir = data_dir / "blobs"
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_lock = threading.Lock()
        self.commits = 0  # for the benchmark: how many transactions carried the writes
        # Recipient lookups run for every RCPT: they read an in-memory snapshot of
        # domains, accounts and aliases, reloaded when the directory counter (moved by
        # triggers) says this process or another (the CLI) changed them.
        self._snapshot_version = -1
        self._snapshot_checked = 0.0
        self._domains: set[str] = set()
        self._accounts: dict[str, Account] = {}
        self._aliases: dict[str, Alias] = {}
        self._change_listeners: list[Callable[[Change], None]] = []
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(exist_ok=True)
        conn = _connect(self.db_path)
        conn.execute("PRAGMA journal_mode = WAL")
        self._migrate(conn)
        self._reader = _connect(self.db_path)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="store-read")
        self._writer = threading.Thread(
            target=self._write_loop, args=(conn,), name="store-writer", daemon=True
        )
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            self._jobs.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _migrate(self, conn: sqlite3.Connection) -> None:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        files = sorted(
            (p.name, p.read_text(encoding="utf-8"))
            for p in resources.files("mailhouse.store").joinpath("migrations").iterdir()
            if p.name.endswith(".sql")
        )
        for name, sql in files:
            version = int(name.split("_", 1)[0])
            if version <= current:
                continue
            # executescript commits on its own; wrap so a failed migration rolls back.
            conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")
        if current > len(files):
            raise StoreError(
                f"the store at {self.data_dir} was written by a newer mailhouse (schema {current})"
            )

    # ------------------------------------------------------------------ writer
    def _write_loop(self, conn: sqlite3.Connection) -> None:
        stop = False
        while not stop:
            first = self._jobs.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    j = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if j is None:
                    stop = True
                    break
                batch.append(j)
            results, orphans = self._run_batch(conn, batch)
            for (path,) in orphans:
                if path:
                    with contextlib.suppress(OSError):
                        (self.blob_dir / path).unlink()
            for j, r, err in results:
                if err is None:
                    for hook in j.after_commit:
                        with contextlib.suppress(Exception):
                            hook()
                self._settle(j, r, err)
        conn.close()

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[_Job]
    ) -> tuple[list[tuple[_Job, Any, BaseException | None]], list[tuple[str | None]]]:
        """All jobs in one transaction; if one fails, each again in its own, so a
        failing job sinks only itself (cheaper than a savepoint per job)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            results: list[tuple[_Job, Any, BaseException | None]] = [(j, j.fn(conn), None) for j in batch]
            orphans = conn.execute("DELETE FROM blobs WHERE refs <= 0 RETURNING path").fetchall()
            conn.execute("COMMIT")
            self.commits += 1
            return results, orphans
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if len(batch) == 1:
                return [(batch[0], None, e)], []
        results, orphans = [], []
        for j in batch:
            r, o = self._run_batch(conn, [j])
            results += r
            orphans += o
        return results, orphans

    @staticmethod
    def _settle(job: _Job, result: Any, error: BaseException | None) -> None:
        fut = job.future
        if job.loop is None:
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(error)
            return

        def settle() -> None:
            if fut.cancelled():
                return
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(error)

        with contextlib.suppress(RuntimeError):  # the loop closed under us
            job.loop.call_soon_threadsafe(settle)

    async def _write(
        self, fn: Callable[[sqlite3.Connection], T], after_commit: list[Callable[[], None]] | None = None
    ) -> T:
        if self._writer is None:
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, loop, fut, after_commit or []))
        # Shielded: a cancelled caller (client gone) must not hide a commit's outcome.
        try:
            return await asyncio.shield(fut)
        finally:
            self._snapshot_checked = 0.0  # our own change is seen by the next lookup

    # ------------------------------------------------------------------ readers
    def _read_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.db_path)
            self._local.conn = conn
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None:
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._read_conn()))

    SNAPSHOT_CHECK_INTERVAL = 0.1

    def _snapshot(self) -> None:
        now = time.monotonic()
        if now - self._snapshot_checked < self.SNAPSHOT_CHECK_INTERVAL:
            return
        self._snapshot_checked = now
        if self._reader is None:
            raise StoreError("store is not open")
        with self._reader_lock:
            c = self._reader
            key = c.execute("SELECT value FROM meta WHERE key = 'directory'").fetchone()[0]
            if key == self._snapshot_version:
                return
            c.execute("BEGIN")
            try:
                self._domains = {r[0] for r in c.execute("SELECT name FROM domains")}
                self._accounts = {r[1]: Account(*r) for r in c.execute(self._ACCOUNT_SQL)}
                self._aliases = {a: Alias(a, json.loads(t)) for a, t in c.execute("SELECT address, targets FROM aliases")}
            finally:
                c.execute("COMMIT")
            self._snapshot_version = key

    def _invalidate_snapshot(self) -> None:
        self._snapshot_checked = 0.0

    # ------------------------------------------------------------------ domains
    async def add_domain(self, name: str, *, exist_ok: bool = False) -> Domain:
        name = name.lower().rstrip(".")

        def fn(c: sqlite3.Connection) -> Domain:
            row = c.execute("SELECT id, name, created FROM domains WHERE name = ?", (name,)).fetchone()
            if row:
                if exist_ok:
                    return Domain(*row)
                raise StoreError(f"domain {name} exists already")
            now = _now()
            cur = c.execute("INSERT INTO domains(name, created) VALUES (?, ?)", (name, now))
            return Domain(int(cur.lastrowid or 0), name, now)

        return await self._write(fn)

    async def remove_domain(self, name: str) -> None:
        name = name.lower().rstrip(".")

        def fn(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT id FROM domains WHERE name = ?", (name,)).fetchone()
            if not row:
                raise NotFound(f"no domain {name}")
            n = c.execute("SELECT count(*) FROM accounts WHERE domain_id = ?", row).fetchone()[0]
            if n:
                raise StoreError(f"domain {name} still has {n} user(s); remove them first")
            c.execute("DELETE FROM aliases WHERE domain_id = ?", row)
            c.execute("DELETE FROM domains WHERE id = ?", row)

        await self._write(fn)

    async def list_domains(self) -> list[Domain]:
        return await self._read(
            lambda c: [Domain(*r) for r in c.execute("SELECT id, name, created FROM domains ORDER BY name")]
        )

    def is_local_domain(self, name: str) -> bool:
        self._snapshot()
        return name.lower().rstrip(".") in self._domains

    # ------------------------------------------------------------------ accounts
    async def add_account(self, address: str, password_hash: str) -> Account:
        address = address.lower()
        local, _, domain = address.rpartition("@")
        if not local or not domain:
            raise StoreError(f"{address!r} is not an address like user@example.org")

        def fn(c: sqlite3.Connection) -> Account:
            d = c.execute("SELECT id FROM domains WHERE name = ?", (domain,)).fetchone()
            if not d:
                raise StoreError(f"domain {domain} does not exist; add it with: mailhouse domain add {domain}")
            if c.execute("SELECT 1 FROM accounts WHERE address = ?", (address,)).fetchone():
                raise StoreError(f"user {address} exists already")
            if c.execute("SELECT 1 FROM aliases WHERE address = ?", (address,)).fetchone():
                raise StoreError(f"{address} is an alias; remove the alias first")
            now = _now()
            cur = c.execute(
                "INSERT INTO accounts(address, domain_id, password_hash, created) VALUES (?, ?, ?, ?)",
                (address, d[0], password_hash, now),
            )
            aid = int(cur.lastrowid or 0)
            uidvalidity = int(now) & 0xFFFFFFFF or 1
            c.executemany(
                "INSERT INTO folders(account_id, name, special_use, uidvalidity) VALUES (?, ?, ?, ?)",
                [(aid, n, su, uidvalidity) for n, su in SPECIAL_FOLDERS],
            )
            return Account(aid, address, domain, password_hash, now)

        return await self._write(fn)

    async def remove_account(self, address: str) -> None:
        address = address.lower()

        def fn(c: sqlite3.Connection) -> None:
            if c.execute("DELETE FROM accounts WHERE address = ?", (address,)).rowcount == 0:
                raise NotFound(f"no user {address}")

        await self._write(fn)

    async def set_password(self, address: str, password_hash: str) -> None:
        address = address.lower()

        def fn(c: sqlite3.Connection) -> None:
            cur = c.execute("UPDATE accounts SET password_hash = ? WHERE address = ?", (password_hash, address))
            if cur.rowcount == 0:
                raise NotFound(f"no user {address}")

        await self._write(fn)

    _ACCOUNT_SQL = (
        "SELECT a.id, a.address, d.name, a.password_hash, a.created, a.quota "
        "FROM accounts a JOIN domains d ON d.id = a.domain_id"
    )

    async def list_accounts(self) -> list[Account]:
        return await self._read(
            lambda c: [Account(*r) for r in c.execute(self._ACCOUNT_SQL + " ORDER BY d.name, a.address")]
        )

    def find_account(self, address: str) -> Account | None:
        self._snapshot()
        return self._accounts.get(address.lower())

    # ------------------------------------------------------------------ aliases
    async def add_alias(self, address: str, targets: list[str]) -> Alias:
        address = address.lower()
        domain = address.rpartition("@")[2]
        if "@" not in address or not domain:
            raise StoreError(f"{address!r} is not an address like user@example.org or @example.org")
        if not targets:
            raise StoreError("an alias needs at least one target")

        def fn(c: sqlite3.Connection) -> Alias:
            d = c.execute("SELECT id FROM domains WHERE name = ?", (domain,)).fetchone()
            if not d:
                raise StoreError(f"domain {domain} does not exist; add it with: mailhouse domain add {domain}")
            if c.execute("SELECT 1 FROM accounts WHERE address = ?", (address,)).fetchone():
                raise StoreError(f"{address} is a user; an alias cannot shadow it")
            if c.execute("SELECT 1 FROM aliases WHERE address = ?", (address,)).fetchone():
                raise StoreError(f"alias {address} exists already; remove it first")
            c.execute(
                "INSERT INTO aliases(address, domain_id, targets, created) VALUES (?, ?, ?, ?)",
                (address, d[0], json.dumps(targets), _now()),
            )
            return Alias(address, list(targets))

        return await self._write(fn)

    async def remove_alias(self, address: str) -> None:
        address = address.lower()

        def fn(c: sqlite3.Connection) -> None:
            if c.execute("DELETE FROM aliases WHERE address = ?", (address,)).rowcount == 0:
                raise NotFound(f"no alias {address}")

        await self._write(fn)

    async def list_aliases(self) -> list[Alias]:
        return await self._read(
            lambda c: [
                Alias(a, json.loads(t)) for a, t in c.execute("SELECT address, targets FROM aliases ORDER BY address")
            ]
        )

    def find_alias(self, address: str) -> Alias | None:
        self._snapshot()
        return self._aliases.get(address.lower())

    # ------------------------------------------------------------------ folders, messages
    _FOLDER_SQL = (
        "SELECT id, account_id, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed FROM folders"
    )

    @staticmethod
    def _folder(r: tuple[Any, ...]) -> Folder:
        return Folder(
            id=r[0], account_id=r[1], name=r[2], special_use=r[3], uidvalidity=r[4], uidnext=r[5],
            highestmodseq=r[6], subscribed=bool(r[7]),
        )

    async def list_folders(self, account_id: int) -> list[Folder]:
        return await self._read(
            lambda c: [
                self._folder(r)
                for r in c.execute(self._FOLDER_SQL + " WHERE account_id = ? ORDER BY name != 'INBOX', name", (account_id,))
            ]
        )

    async def get_folder(self, account_id: int, name: str) -> Folder | None:
        def fn(c: sqlite3.Connection) -> Folder | None:
            r = c.execute(self._FOLDER_SQL + " WHERE account_id = ? AND name = ?", (account_id, _folder_name(name))).fetchone()
            return self._folder(r) if r else None

        return await self._read(fn)

    _MESSAGE_SQL = (
        "SELECT id, folder_id, uid, internal_date, size, flags, keywords, modseq, queue_id, message_id, parse, blob_id "
        "FROM messages"
    )

    @staticmethod
    def _message(r: tuple[Any, ...]) -> Message:
        return Message(
            id=r[0], folder_id=r[1], uid=r[2], internal_date=r[3], size=r[4],
            flags=bits_to_flags(r[5], r[6]), modseq=r[7], queue_id=r[8], message_id=r[9],
            parse=json.loads(r[10]), blob_id=r[11],
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
            if r[0] is not None:
                return bytes(r[0])
            return (self.blob_dir / str(r[1])).read_bytes()

        return await self._read(fn)

    def new_blob(self) -> SpoolBlob:
        return SpoolBlob(self.blob_dir)

    def _insert_blob(self, c: sqlite3.Connection, blob: SpoolBlob) -> int:
        if blob.spooled:
            assert blob.path is not None
            rel = str(blob.path.relative_to(self.blob_dir))
            cur = c.execute("INSERT INTO blobs(size, data, path) VALUES (?, NULL, ?)", (blob.size, rel))
        else:
            cur = c.execute("INSERT INTO blobs(size, data) VALUES (?, ?)", (blob.size, blob.inline_bytes()))
        return int(cur.lastrowid or 0)

    @staticmethod
    def _insert_message(
        c: sqlite3.Connection, target: LocalTarget, blob_id: int, size: int, parse_json: str,
        internal_date: float, flags: Iterable[str], queue_id: str | None, message_id: str | None,
    ) -> Delivered:
        row = c.execute(
            "SELECT id, uidnext, highestmodseq, name FROM folders WHERE account_id = ? AND name = ?",
            (target.account_id, _folder_name(target.folder)),
        ).fetchone()
        if row is None:  # a filing rule named a folder that is gone: INBOX never is
            row = c.execute(
                "SELECT id, uidnext, highestmodseq, name FROM folders WHERE account_id = ? AND name = 'INBOX'",
                (target.account_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"account {target.address} no longer exists")
        fid, uid, modseq, fname = row
        modseq += 1
        c.execute("UPDATE folders SET uidnext = ?, highestmodseq = ? WHERE id = ?", (uid + 1, modseq, fid))
        bits, keywords = flags_to_bits(set(flags))
        c.execute(
            "INSERT INTO messages(folder_id, uid, blob_id, internal_date, size, flags, keywords, modseq, "
            "queue_id, message_id, parse) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (fid, uid, blob_id, internal_date, size, bits, keywords, modseq, queue_id, message_id, parse_json),
        )
        return Delivered(target.account_id, target.address, fname, uid, fid)

    def _deliver_tx(self, c: sqlite3.Connection, blob: SpoolBlob, incoming: Incoming, parse_json: str) -> list[Delivered]:
        now = _now()
        blob_id = self._insert_blob(c, blob)
        out = [
            self._insert_message(
                c, t, blob_id, blob.size, parse_json, incoming.internal_date, incoming.flags,
                incoming.queue_id, incoming.message_id,
            )
            for t in incoming.local
        ]
        if incoming.remote:
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
        events = list(incoming.events)
        events += [("delivered", {"account": d.address, "folder": d.folder, "uid": d.uid}) for d in out]
        if incoming.remote:
            events.append(("queued", {"recipients": [r.address for r in incoming.remote]}))
        self._insert_events(c, incoming.queue_id, incoming.message_id, events, now)
        return out

    @staticmethod
    def _insert_events(
        c: sqlite3.Connection, queue_id: str, message_id: str | None,
        events: list[tuple[str, dict[str, Any]]], now: float,
    ) -> None:
        c.executemany(
            "INSERT INTO journey(queue_id, message_id, time, kind, data) VALUES (?,?,?,?,?)",
            [(queue_id, message_id, now, k, json.dumps(d)) for k, d in events],
        )

    async def _prepare(self, blob: BlobWriter) -> SpoolBlob:
        assert isinstance(blob, SpoolBlob)
        if blob.spooled:
            await asyncio.get_running_loop().run_in_executor(None, blob.sync)
        return blob

    async def deliver(self, blob: BlobWriter, incoming: Incoming) -> list[Delivered]:
        sb = await self._prepare(blob)
        parse_json = json.dumps(incoming.parse, separators=(",", ":"))
        try:
            out = await self._write(lambda c: self._deliver_tx(c, sb, incoming, parse_json))
        finally:
            sb.close_file()
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
    ) -> Delivered:
        from ..mime.structure import analyze

        blob = self.new_blob()
        blob.write(raw)
        if blob.spooled:
            await asyncio.get_running_loop().run_in_executor(None, blob.sync)
        parse_json = json.dumps(parse if parse is not None else analyze(raw), separators=(",", ":"))
        when = internal_date if internal_date is not None else _now()
        flag_list = list(flags)

        def fn(c: sqlite3.Connection) -> Delivered:
            blob_id = self._insert_blob(c, blob)
            return self._insert_message(c, target, blob_id, blob.size, parse_json, when, flag_list, None, None)

        try:
            d = await self._write(fn)
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

    def _publish(self, changes: list[Change]) -> None:
        for ch in changes:
            for cb in list(self._change_listeners):
                try:
                    cb(ch)
                except Exception:  # a listener's bug must not undo a delivery
                    pass

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

        f = await self._write(fn)
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

        fid = await self._write(fn)
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

        await self._write(fn)
        self._publish([Change(account_id, 0, "folders")])

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        name = _folder_name(name)

        def fn(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "UPDATE folders SET subscribed = ? WHERE account_id = ? AND name = ?", (int(subscribed), account_id, name)
            )
            if cur.rowcount == 0:
                raise NotFound(f"no folder {name}")

        await self._write(fn)

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

        return await self._read(fn)

    def _account_of(self, c: sqlite3.Connection, folder_id: int) -> int:
        row = c.execute("SELECT account_id FROM folders WHERE id = ?", (folder_id,)).fetchone()
        if row is None:
            raise NotFound("the folder no longer exists")
        return int(row[0])

    def _bump(self, c: sqlite3.Connection, folder_id: int) -> int:
        c.execute("UPDATE folders SET highestmodseq = highestmodseq + 1 WHERE id = ?", (folder_id,))
        return int(c.execute("SELECT highestmodseq FROM folders WHERE id = ?", (folder_id,)).fetchone()[0])

    async def store_flags(
        self,
        folder_id: int,
        uids: list[int],
        mode: str,
        flags: set[str],
        unchanged_since: int | None = None,
    ) -> tuple[list[FlagChange], list[int]]:
        bits, keywords = flags_to_bits(flags)
        kw = set(keywords.split())

        def fn(c: sqlite3.Connection) -> tuple[int, list[FlagChange], list[int]]:
            account = self._account_of(c, folder_id)
            changed: list[FlagChange] = []
            failed: list[int] = []
            modseq: int | None = None
            for i in range(0, len(uids), 500):
                part = uids[i : i + 500]
                rows = c.execute(
                    f"SELECT uid, flags, keywords, modseq FROM messages WHERE folder_id = ? AND uid IN "
                    f"({','.join('?' * len(part))})",
                    (folder_id, *part),
                ).fetchall()
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
            return account, changed, failed

        account, changed, failed = await self._write(fn)
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

        account, gone = await self._write(fn)
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
                "SELECT uid, blob_id, internal_date, size, flags, keywords, queue_id, message_id, parse FROM messages "
                f"WHERE folder_id = ? AND uid IN ({','.join('?' * len(part))}) ORDER BY uid",
                (folder_id, *part),
            ).fetchall()
            for uid, blob_id, idate, size, fbits, kw, qid, mid, parse in rows:
                c.execute(
                    "INSERT INTO messages(folder_id, uid, blob_id, internal_date, size, flags, keywords, modseq, "
                    "queue_id, message_id, parse) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (target, uidnext, blob_id, idate, size, fbits, kw, modseq, qid, mid, parse),
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

        src_acc, dst_acc, pairs = await self._write(fn)
        if pairs:
            changes = [Change(dst_acc, target_folder_id, "exists")]
            if move:
                changes.append(Change(src_acc, folder_id, "expunge"))
            self._publish(changes)
        return pairs

    async def vanished_since(self, folder_id: int, modseq: int) -> list[int]:
        return await self._read(
            lambda c: [
                r[0] for r in c.execute(
                    "SELECT uid FROM expunged WHERE folder_id = ? AND modseq > ? ORDER BY uid", (folder_id, modseq)
                )
            ]
        )

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

    async def folder_columns(self, folder_id: int) -> FolderColumns | None:
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
                return json.loads("[" + text + "]") if text else []

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

        return await self._read(lambda c: self._snapshot_read(c, fn))

    async def folder_changes(self, folder_id: int, since_modseq: int) -> FolderDelta | None:
        def fn(c: sqlite3.Connection) -> FolderDelta | None:
            r = c.execute(self._FOLDER_SQL + " WHERE id = ?", (folder_id,)).fetchone()
            if r is None:
                return None
            folder = self._folder(r)
            if folder.highestmodseq <= since_modseq:
                return FolderDelta(folder, [], [])
            changed = c.execute(
                "SELECT uid, flags, keywords, modseq, size FROM messages "
                "WHERE folder_id = ? AND modseq > ? ORDER BY uid",
                (folder_id, since_modseq),
            ).fetchall()
            vanished = [
                row[0]
                for row in c.execute(
                    "SELECT uid FROM expunged WHERE folder_id = ? AND modseq > ? ORDER BY uid",
                    (folder_id, since_modseq),
                )
            ]
            return FolderDelta(folder, changed, vanished)

        return await self._read(lambda c: self._snapshot_read(c, fn))

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
                n, unseen, dels, size = c.execute(
                    "SELECT count(*), coalesce(sum((flags & ?) = 0), 0), coalesce(sum((flags & ?) != 0), 0), "
                    "coalesce(sum(size), 0) FROM messages WHERE folder_id = ?",
                    (seen, deleted, fid),
                ).fetchone()
                out[fid] = FolderSummary(int(n), int(unseen), int(dels), int(size))
            return out

        return await self._read(fn)

    def _blob_bytes(self, data: bytes | None, path: str | None, limit: int | None = None) -> bytes:
        if data is not None:
            return bytes(data)
        with open(self.blob_dir / str(path), "rb") as f:
            return f.read() if limit is None else f.read(limit)

    async def read_blobs(self, blob_ids: list[int]) -> dict[int, bytes]:
        wanted = sorted(set(blob_ids))

        def fn(c: sqlite3.Connection) -> dict[int, bytes]:
            out: dict[int, bytes] = {}
            for i in range(0, len(wanted), 500):
                part = wanted[i : i + 500]
                for bid, data, path in c.execute(
                    f"SELECT id, data, path FROM blobs WHERE id IN ({','.join('?' * len(part))})", part
                ):
                    out[bid] = self._blob_bytes(data, path)
            return out

        return await self._read(fn)

    SEARCH_HEADER_PREFIX = 16384  # read this much first; a longer header is read whole

    async def search_rows(self, folder_id: int, uids: list[int], *, headers: bool) -> list[SearchRow]:
        from ..mime.headers import find_header_end

        limit = self.SEARCH_HEADER_PREFIX
        if headers:
            # The prefix of the stored bytes, cut at the end of the header in
            # Python: cheaper than asking SQLite to read the cached parse.
            sql = (
                "SELECT m.uid, m.internal_date, substr(b.data, 1, ?), b.path, b.id "
                "FROM messages m JOIN blobs b ON b.id = m.blob_id WHERE m.folder_id = ? AND m.uid IN "
            )
        else:
            sql = "SELECT uid, internal_date, NULL, NULL, NULL FROM messages WHERE folder_id = ? AND uid IN "

        def header_of(c: sqlite3.Connection, prefix: bytes | None, path: str | None, blob_id: int) -> bytes:
            data = bytes(prefix) if prefix is not None else self._blob_bytes(None, path, limit)
            end = find_header_end(data)[1]
            if end == len(data) and len(data) >= limit:
                r = c.execute("SELECT data, path FROM blobs WHERE id = ?", (blob_id,)).fetchone()
                data = self._blob_bytes(r[0], r[1])
                end = find_header_end(data)[1]
            return data[:end]

        def rows(c: sqlite3.Connection) -> list[SearchRow]:
            out: list[SearchRow] = []
            for i in range(0, len(uids), 500):
                part = uids[i : i + 500]
                args: tuple[Any, ...] = (folder_id, *part) if not headers else (limit, folder_id, *part)
                found = c.execute(sql + f"({','.join('?' * len(part))})", args).fetchall()
                for uid, idate, prefix, path, blob_id in found:
                    header = header_of(c, prefix, path, blob_id) if headers else None
                    out.append(SearchRow(uid, idate, header))
            out.sort(key=lambda r: r.uid)
            return out

        return await self._read(rows)

    async def append_many(self, target: LocalTarget, items: list[AppendItem]) -> list[Delivered]:
        from ..mime.structure import analyze

        prepared: list[tuple[SpoolBlob, str, float, list[str]]] = []
        try:
            for item in items:
                blob = self.new_blob()
                blob.write(item.raw)
                if blob.spooled:
                    await asyncio.get_running_loop().run_in_executor(None, blob.sync)
                parse_json = json.dumps(analyze(item.raw), separators=(",", ":"))
                when = item.internal_date if item.internal_date is not None else _now()
                prepared.append((blob, parse_json, when, list(item.flags)))

            def fn(c: sqlite3.Connection) -> list[Delivered]:
                if c.execute(
                    "SELECT 1 FROM folders WHERE account_id = ? AND name = ?",
                    (target.account_id, _folder_name(target.folder)),
                ).fetchone() is None:
                    raise NotFound(f"no folder {target.folder}")
                out = []
                for blob, parse_json, when, flags in prepared:
                    blob_id = self._insert_blob(c, blob)
                    out.append(
                        self._insert_message(c, target, blob_id, blob.size, parse_json, when, flags, None, None)
                    )
                return out

            delivered = await self._write(fn)
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
        return await self._read(
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
        await self._write(lambda c: c.execute(sql, (account_id, name)))

    async def note_first_read(
        self, queue_id: str, message_id: str | None, account: str, protocol: str
    ) -> bool:
        now = _now()

        def fn(c: sqlite3.Connection) -> bool:
            for (data,) in c.execute(
                "SELECT data FROM journey WHERE queue_id = ? AND kind = 'read'", (queue_id,)
            ):
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    if json.loads(data).get("account") == account:
                        return False
            self._insert_events(c, queue_id, message_id, [("read", {"account": account, "protocol": protocol})], now)
            return True

        return await self._write(fn)

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

    async def add_event(
        self, queue_id: str, kind: str, data: dict[str, object], message_id: str | None = None
    ) -> None:
        now = _now()
        await self._write(
            lambda c: c.execute(
                "INSERT INTO journey(queue_id, message_id, time, kind, data) VALUES (?,?,?,?,?)",
                (queue_id, message_id, now, kind, json.dumps(data)),
            )
        )

    async def journey(self, ident: str) -> list[JourneyEvent]:
        mid = ident.strip().removeprefix("<").removesuffix(">")

        def fn(c: sqlite3.Connection) -> list[JourneyEvent]:
            rows = c.execute(
                "SELECT queue_id, message_id, time, kind, data FROM journey "
                "WHERE queue_id = ? OR message_id = ? ORDER BY time, id",
                (ident, mid),
            ).fetchall()
            return [JourneyEvent(q, m, t, k, json.loads(d)) for q, m, t, k, d in rows]

        return await self._read(fn)

    # ------------------------------------------------------------------ webmail and HTTP API (mailhouse.web)
    # The summary fields of the parse, extracted by SQLite in one small JSON array:
    # decoding whole parses (MIME tree and all) costs ~40 µs a message in Python.
    _SUMMARY_KEYS = ("subject", "from_name", "from_address", "to", "cc", "date", "preview", "has_attachments")
    _SUMMARY_SQL = (
        "SELECT id, folder_id, uid, internal_date, size, flags, keywords, modseq, queue_id, message_id, "
        "json_extract(parse, " + ", ".join(f"'$.{k}'" for k in _SUMMARY_KEYS) + "), blob_id FROM messages m"
    )

    @classmethod
    def _summary_message(cls, r: tuple[Any, ...]) -> Message:
        values = json.loads(r[10]) if r[10] else []
        return Message(
            id=r[0], folder_id=r[1], uid=r[2], internal_date=r[3], size=r[4],
            flags=bits_to_flags(r[5], r[6]), modseq=r[7], queue_id=r[8], message_id=r[9],
            parse=dict(zip(cls._SUMMARY_KEYS, values, strict=False)), blob_id=r[11],
        )

    async def list_messages_page(
        self, folder_id: int, limit: int, offset: int, *, max_uid: int | None = None
    ) -> list[Message]:
        # Walks the (folder_id, uid) unique index backwards; OFFSET skips index
        # entries only, but still one by one: callers paging deep pass max_uid.
        bound = max_uid if max_uid is not None else 2**63 - 1
        return await self._read(
            lambda c: [
                self._summary_message(r)
                for r in c.execute(
                    self._SUMMARY_SQL + " WHERE folder_id = ? AND uid <= ? ORDER BY uid DESC LIMIT ? OFFSET ?",
                    (folder_id, bound, max(0, limit), max(0, offset)),
                )
            ]
        )

    async def folder_uids(self, folder_id: int) -> list[int]:
        return await self._read(
            lambda c: [r[0] for r in c.execute("SELECT uid FROM messages WHERE folder_id = ? ORDER BY uid", (folder_id,))]
        )

    async def folder_counts(self, account_id: int) -> dict[int, tuple[int, int]]:
        seen = FLAG_BITS["\\Seen"]

        def fn(c: sqlite3.Connection) -> dict[int, tuple[int, int]]:
            # One grouped query over the (folder_id, flags) index, no message rows read.
            rows = c.execute(
                "SELECT f.id, count(m.folder_id), coalesce(sum((m.flags & ?) = 0), 0) FROM folders f "
                "LEFT JOIN messages m ON m.folder_id = f.id WHERE f.account_id = ? GROUP BY f.id",
                (seen, account_id),
            ).fetchall()
            return {int(fid): (int(n), int(u)) for fid, n, u in rows}

        return await self._read(fn)

    async def search_messages(self, account_id: int, query: MessageQuery, limit: int) -> list[Message]:
        def like(v: str) -> str:
            return "%" + v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

        where = ["m.folder_id IN (SELECT id FROM folders WHERE account_id = ?)"]
        args: list[Any] = [account_id]
        if query.folder_id is not None:
            where.append("m.folder_id = ?")
            args.append(query.folder_id)
        fields = {
            "from": "(json_extract(m.parse, '$.from_address') || ' ' || json_extract(m.parse, '$.from_name'))",
            "to": "(json_extract(m.parse, '$.to') || ' ' || json_extract(m.parse, '$.cc'))",
            "subject": "json_extract(m.parse, '$.subject')",
            "preview": "json_extract(m.parse, '$.preview')",
        }
        esc = " ESCAPE '\\'"
        if query.text:
            where.append("(" + " OR ".join(f"{f} LIKE ?{esc}" for f in fields.values()) + ")")
            args += [like(query.text)] * len(fields)
        for value, key in ((query.sender, "from"), (query.recipient, "to"), (query.subject, "subject")):
            if value:
                where.append(f"{fields[key]} LIKE ?{esc}")
                args.append(like(value))
        if query.body:
            # Inline bodies (all but the largest messages) are searched in their
            # stored bytes; that finds plain words of 7bit/8bit/quoted-printable text.
            where.append(
                f"({fields['preview']} LIKE ?{esc} OR (SELECT CAST(b.data AS TEXT) FROM blobs b "
                f"WHERE b.id = m.blob_id) LIKE ?{esc})"
            )
            args += [like(query.body)] * 2
        if query.since is not None:
            where.append("m.internal_date >= ?")
            args.append(query.since)
        if query.before is not None:
            where.append("m.internal_date < ?")
            args.append(query.before)
        sql = self._SUMMARY_SQL + " WHERE " + " AND ".join(where) + " ORDER BY m.internal_date DESC, m.id DESC LIMIT ?"
        args.append(max(0, limit))
        return await self._read(lambda c: [self._summary_message(r) for r in c.execute(sql, args)])

    _TOKEN_SQL = (
        "SELECT t.id, t.account_id, t.name, t.hash, t.created, t.last_used, a.address "
        "FROM api_tokens t JOIN accounts a ON a.id = t.account_id"
    )

    async def add_api_token(self, account_id: int, name: str, token_hash: str) -> ApiToken:
        now = _now()

        def fn(c: sqlite3.Connection) -> ApiToken:
            cur = c.execute(
                "INSERT INTO api_tokens(account_id, name, hash, created) VALUES (?, ?, ?, ?)",
                (account_id, name, token_hash, now),
            )
            row = c.execute("SELECT address FROM accounts WHERE id = ?", (account_id,)).fetchone()
            if row is None:
                raise NotFound("no such account")
            return ApiToken(int(cur.lastrowid or 0), account_id, name, token_hash, now, None, row[0])

        return await self._write(fn)

    async def list_api_tokens(self, account_id: int) -> list[ApiToken]:
        return await self._read(
            lambda c: [
                ApiToken(*r) for r in c.execute(self._TOKEN_SQL + " WHERE t.account_id = ? ORDER BY t.id", (account_id,))
            ]
        )

    async def get_api_token(self, token_id: int) -> ApiToken | None:
        row = await self._read(lambda c: c.execute(self._TOKEN_SQL + " WHERE t.id = ?", (token_id,)).fetchone())
        return ApiToken(*row) if row else None

    async def delete_api_token(self, account_id: int, token_id: int) -> bool:
        return await self._write(
            lambda c: c.execute(
                "DELETE FROM api_tokens WHERE id = ? AND account_id = ?", (token_id, account_id)
            ).rowcount > 0
        )

    async def touch_api_token(self, token_id: int, when: float) -> None:
        await self._write(lambda c: c.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", (when, token_id)))

    # ------------------------------------------------------------------ DKIM keys (mailhouse.trust.keys)
    async def dkim_keys(self, domain: str) -> list[tuple[str, str, str, float]]:
        domain = domain.lower().rstrip(".")
        return await self._read(
            lambda c: [
                (str(s), str(a), str(k), float(t))
                for s, a, k, t in c.execute(
                    "SELECT selector, algorithm, private_key, created FROM dkim_keys "
                    "WHERE domain = ? AND active ORDER BY algorithm DESC",
                    (domain,),
                )
            ]
        )

    async def add_dkim_key(self, domain: str, selector: str, algorithm: str, private_pem: str) -> bool:
        domain = domain.lower().rstrip(".")

        def fn(c: sqlite3.Connection) -> bool:
            # OR IGNORE: the partial unique index turns a second maker's insert into a no-op.
            cur = c.execute(
                "INSERT OR IGNORE INTO dkim_keys(domain, selector, algorithm, private_key, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (domain, selector, algorithm, private_pem, _now()),
            )
            return cur.rowcount > 0

        return await self._write(fn)


def _uidvalidity(c: sqlite3.Connection) -> int:
    """A new folder's UIDVALIDITY: time-based, and never reused for a name re-created
    in the same second (RFC 9051 §2.3.1.1)."""
    now = int(time.time()) & 0xFFFFFFFF or 1
    row = c.execute("SELECT max(uidvalidity) FROM folders").fetchone()
    return max(now, (row[0] or 0) + 1) & 0xFFFFFFFF or 1


def _folder_name(name: str) -> str:
    # INBOX is case-insensitive (RFC 3501 §5.1); every other name is exact.
    return "INBOX" if name.upper() == "INBOX" else name
