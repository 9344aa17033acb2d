"""The embedded store: SQLite in WAL mode, with message bodies inline or in files.

Concurrency model (measured, see FIELD-NOTES): one writer thread owns the only
write connection and runs *group commit*: it takes every write job waiting, runs
them in one transaction (if one fails, each again in its own, so a failing job
does not sink the others) and commits once. A second thread, the syncer, then
fsyncs the WAL once for every batch committed meanwhile and only then wakes their
callers. Throughput thus grows with concurrency instead of being capped at one
fsync per message.

The write lock (shared by every process writing the store: SMTP workers, the
CLI) is held for the statements only, not for the fsync: another process commits
its batch, and this writer its next one, while the disk catches up. A change is
thus visible to readers a few milliseconds before it is durable; no caller is
told it is done before it is, so a crash in between costs a retry (the client
never got its 250), never a message.

The writer shares the GIL with the event loop, so what crosses between them is
counted per batch, not per job: the jobs a loop iteration submits reach the
writer in one hand-over, consecutive deliveries run as one grouped call (one
multi-row statement per table), and the callers of a batch are woken with one
call_soon_threadsafe.

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
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ..base import StoreError
from ..models import (
    Account,
    Alias,
    Change,
)
from .blobs import fsync_path

T = TypeVar("T")


MAX_BATCH = 256


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    # False for changes a crash may undo without harm (flags, read marks, journey
    # notes): a batch of only such jobs commits without waiting for an fsync.
    durable: bool = True
    # Optional: consecutive jobs of a batch with equal `many` run as one call
    # many(conn, [item, ...]) -> [result, ...] (a statement per table instead
    # of a few statements per job). `fn` alone must do the same for one job: it is
    # what runs if the group fails, so a bad job still sinks only itself.
    many: Callable[[sqlite3.Connection, list[Any]], list[Any]] | None = None
    item: Any = None


@dataclass
class _Committed:
    """A batch committed by the writer, waiting for the syncer's fsync."""

    results: list[tuple[_Job, Any, BaseException | None]]
    unlink: list[str]  # body files whose rows the batch dropped
    durable: bool


def _take_waiting(
    q: queue.SimpleQueue[T | None], most: int = 1 << 30, size: Callable[[T], int] = lambda _: 1
) -> tuple[list[T], bool]:
    """Block for one item, then take those waiting too, up to `most` by `size`.
    Returns them, and whether the stop mark (None) came."""
    first = q.get()
    if first is None:
        return [], True
    items, total = [first], size(first)
    while total < most:
        try:
            item = q.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return items, True
        items.append(item)
        total += size(item)
    return items, False


def _connect(path: Path) -> sqlite3.Connection:
    # A larger statement cache than the default 128: the padded sizes of each
    # multi-row statement (see padded_size) must all stay in it.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0,
                           cached_statements=512)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    # Debian's SQLite is built with SECURE_DELETE on: a deleted row's content is
    # zeroed even in pages freed whole, which are then written (WAL and database)
    # for nothing but the zeroing. FAST zeroes only within pages written anyway;
    # a freed page keeps old bytes until reused, as a file that Postfix or
    # Dovecot unlinks keeps its blocks.
    conn.execute("PRAGMA secure_delete = FAST")
    return conn


def _now() -> float:
    return time.time()



class Engine:
    """The writer thread, the reader pool and the schema: what every part of the store stands on."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.db_path = data_dir / "mailhouse.db"
        self.blob_dir = data_dir / "blobs"
        self._jobs: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        # Jobs submitted on a loop during one iteration, handed to the writer
        # together at its end: one wakeup of the writer thread (a futex and a GIL
        # handoff) for all the sessions served in that iteration.
        self._handoff: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        self._writer: threading.Thread | None = None
        self._syncer: threading.Thread | None = None
        self._committed: queue.SimpleQueue[_Committed | None] = queue.SimpleQueue()
        # Every process writing this store (serve, its SMTP workers, the CLI) takes
        # this lock around a write transaction. SQLite's own lock would do, but a
        # writer that finds it taken sleeps in its busy handler (1, 2, 5 ... 100 ms)
        # instead of waking when it is free: with several writers the sleeps, not
        # the work, would set the pace.
        self._lock_fd = -1
        self._reader: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_lock = threading.Lock()
        self._wal_fd = -1  # the WAL, opened once by the syncer to fsync it (see _sync_wal)
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

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(exist_ok=True)
        self._lock_fd = os.open(self.data_dir / "mailhouse.db.lock", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        conn = _connect(self.db_path)
        with self._write_lock():
            conn.execute("PRAGMA journal_mode = WAL")
            self._migrate(conn)
        # The WAL exists now, whoever made it: its directory entry is made durable
        # once, as SQLite does for a journal it creates under synchronous=FULL.
        fsync_path(self.data_dir)
        # COMMIT writes the WAL without waiting for the disk: the syncer fsyncs it.
        conn.execute("PRAGMA synchronous = NORMAL")
        self._reader = _connect(self.db_path)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="store-read")
        self._writer = threading.Thread(
            target=self._write_loop, args=(conn,), name="store-writer", daemon=True
        )
        self._syncer = threading.Thread(target=self._sync_loop, name="store-sync", daemon=True)
        self._syncer.start()
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            self._hand_over(asyncio.get_running_loop())  # jobs before the stop mark
            self._jobs.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = self._syncer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

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
            handed, stop = _take_waiting(self._jobs, MAX_BATCH, len)
            if not handed:
                break
            batch = [job for jobs in handed for job in jobs]
            with self._write_lock():
                results, orphans = self._run_batch(conn, batch)
            self._committed.put(_Committed(results, [path for _, path in orphans if path],
                                           any(j.durable for j in batch)))
        self._committed.put(None)
        if self._syncer is not None:
            self._syncer.join()  # its last fsync before the connection closes
        conn.close()

    def _sync_loop(self) -> None:
        """Make committed batches durable, then wake their callers.

        Each fdatasync covers every batch committed before it: those that waited
        during the last one share the next."""
        unlink: list[str] = []  # body files to remove after the next fsync
        stop = False
        while not stop:
            done, stop = _take_waiting(self._committed)
            if not done:
                break
            for d in done:
                unlink += d.unlink
            error: StoreError | None = None
            # Changes a crash may undo (flags, read marks) are not worth an fsync
            # alone: they become durable with the next durable batch.
            if any(d.durable for d in done):
                try:
                    self._sync_wal()
                except OSError as e:
                    # Committed, but maybe not on disk: no caller may be told it is
                    # stored. (A client told 451 sends again: a duplicate, not a loss.)
                    error = StoreError(f"the store could not be made durable: {e}")
                else:
                    # A body file goes only once the commit that dropped its row is
                    # durable: before, a crash could bring the row back without it.
                    self._unlink(unlink)
                    unlink = []
            self._settle_all([r for d in done for r in d.results], error)
        with contextlib.suppress(OSError):
            self._sync_wal()
            self._unlink(unlink)
        if self._wal_fd >= 0:
            os.close(self._wal_fd)
            self._wal_fd = -1

    def _sync_wal(self) -> None:
        """fdatasync the WAL: every commit before it is durable.

        The writer connection runs with synchronous=NORMAL, so COMMIT writes its
        frames without waiting for the disk, and this is what synchronous=FULL
        would have done inside the write lock. A checkpoint meanwhile is no harm:
        under NORMAL SQLite syncs the WAL before it copies frames into the
        database, and the database before the WAL is reused."""
        fd = self._wal_fd
        if fd < 0 or os.fstat(fd).st_nlink == 0:  # not opened yet, or the file was replaced
            if fd >= 0:
                os.close(fd)
                self._wal_fd = -1
            try:
                # Kept open: closing a descriptor would drop this process's POSIX
                # locks on the file, and SQLite keeps locks of its own.
                fd = self._wal_fd = os.open(f"{self.db_path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                # No WAL: it was checkpointed into the database file and removed.
                fsync_path(self.db_path)
                return
        os.fdatasync(fd)

    def _unlink(self, paths: list[str]) -> None:
        for path in paths:
            with contextlib.suppress(OSError):
                (self.blob_dir / path).unlink()

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[_Job]
    ) -> tuple[list[tuple[_Job, Any, BaseException | None]], list[tuple[int, str | None]]]:
        """All jobs in one transaction; if one fails, each again in its own, so a
        failing job sinks only itself (cheaper than a savepoint per job).
        Returns the results and the (id, path) of dropped body files."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            results: list[tuple[_Job, Any, BaseException | None]] = []
            i, n = 0, len(batch)
            while i < n:
                j = batch[i]
                k = i + 1
                if j.many is not None:
                    while k < n and batch[k].many == j.many:
                        k += 1
                if k - i > 1:
                    assert j.many is not None
                    group = batch[i:k]
                    outs = j.many(conn, [g.item for g in group])
                    results += [(g, o, None) for g, o in zip(group, outs, strict=True)]
                else:
                    results.append((j, j.fn(conn), None))
                i = k
            # Inline bodies by count, not RETURNING: a returned row is a statement
            # step, and each step gives the GIL up and waits to win it back.
            conn.execute("DELETE FROM blobs WHERE refs <= 0 AND path IS NULL")
            orphans = conn.execute("DELETE FROM blobs WHERE refs <= 0 RETURNING id, path").fetchall()
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
    def _settle_all(results: list[tuple[_Job, Any, BaseException | None]], failed: BaseException | None = None) -> None:
        """Wake the callers (with `failed` for all, when given): one
        call_soon_threadsafe per event loop for the whole batch, not one per job
        (each is a lock, a wakeup write and a GIL handoff)."""
        per_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, BaseException | None]]] = {}
        for job, result, error in results:
            per_loop.setdefault(job.loop, []).append((job.future, result, failed or error))
        for loop, outcomes in per_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                loop.call_soon_threadsafe(_settle_futures, outcomes)

    async def _write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = True,
        directory: bool = True,
        many: Callable[[sqlite3.Connection, list[Any]], list[Any]] | None = None,
        item: Any = None,
    ) -> T:
        """Run fn in the writer's next transaction; return once it is committed.

        directory=False: the job cannot change domains, accounts or aliases, so the
        recipient lookups keep their snapshot (else the next lookup re-reads it).
        many/item: see _Job."""
        if self._writer is None:
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        waiting = self._handoff.get(loop)
        if waiting is None:
            waiting = self._handoff[loop] = []
        if not waiting:
            loop.call_soon(self._hand_over, loop)
        waiting.append(_Job(fn, loop, fut, durable, many, item))
        # A cancelled caller (client gone) cancels only its wait: the job stays
        # queued and commits; _settle_futures skips a cancelled future.
        try:
            return await fut
        finally:
            if directory:
                self._snapshot_checked = 0.0  # our own change is seen by the next lookup

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs = self._handoff.pop(loop, None)
        if jobs:
            self._jobs.put(jobs)

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

    def _read_inline(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read of a few indexed rows, on the caller's thread: cheaper than the
        ~60–90 µs executor hop (and the wait for a worker under load) it replaces.
        Only for reads bounded by an index lookup, never a scan."""
        if self._reader is None:
            raise StoreError("store is not open")
        with self._reader_lock:
            return fn(self._reader)


# Multi-row statements come in a few fixed sizes, their lists padded with NULL
# rows that match (or insert) nothing, so that each size's text repeats and stays
# in sqlite3's statement cache. On the writer thread a statement prepared anew
# lets the GIL go once more (for the prepare) than a cached one, and each time
# the writer must win it back from the busy event loop inside the write lock:
# measured against a thread spinning in Python, an uncached SELECT waited about
# two switch intervals, a cached one less than one.
PAD_MIN = 4
CHUNK_ROWS = 256  # rows per statement at most: 12 columns x 256 is far below SQLite's bound on parameters


def padded_size(n: int) -> int:
    """n rounded up to the next power of two (at least PAD_MIN)."""
    size = PAD_MIN
    while size < n:
        size *= 2
    return size


def values_table(width: int, rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """A VALUES list of rows (columns column1, column2 ...), padded with NULL rows:
    its SQL text and parameters."""
    n = padded_size(len(rows))
    row = "(" + ",".join("?" * width) + ")"
    params = [x for r in rows for x in r]
    params += [None] * (width * n - len(params))
    return ",".join([row] * n), params


def in_list(items: Sequence[Any]) -> tuple[str, list[Any]]:
    """The `?, ?, ...` of an IN list, padded with NULLs (which match nothing), and its parameters."""
    n = padded_size(len(items))
    return ",".join("?" * n), [*items, *[None] * (n - len(items))]


def chunks(seq: Sequence[T], size: int = CHUNK_ROWS) -> Iterator[Sequence[T]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def insert_rows(c: sqlite3.Connection, head: str, width: int, rows: Sequence[Sequence[Any]]) -> None:
    """INSERT of many rows as a few multi-row statements rather than executemany:
    sqlite3 steps a statement once per parameter set, and on the writer thread
    every step lets go of the GIL and must win it back from the busy event loop.
    The first column must not be NULL: that marks the padding."""
    for part in chunks(rows):
        values, params = values_table(width, part)
        c.execute(f"{head} SELECT * FROM (VALUES {values}) WHERE column1 IS NOT NULL", params)


def _settle_futures(outcomes: list[tuple[Any, Any, BaseException | None]]) -> None:
    """On the loop: resolve the futures of one committed batch."""
    for fut, result, error in outcomes:
        if fut.cancelled():
            continue
        if error is None:
            fut.set_result(result)
        else:
            fut.set_exception(error)


def _uidvalidity(c: sqlite3.Connection) -> int:
    """A new folder's UIDVALIDITY: time-based, and never reused for a name re-created
    in the same second (RFC 9051 §2.3.1.1)."""
    now = int(time.time()) & 0xFFFFFFFF or 1
    # The high-water mark outlives deleted folders: the live folders' maximum alone
    # would hand a deleted folder's value to a name re-created in the same second.
    row = c.execute(
        "SELECT max(coalesce((SELECT value FROM meta WHERE key = 'uidvalidity'), 0), "
        "coalesce((SELECT max(uidvalidity) FROM folders), 0))"
    ).fetchone()
    value = max(now, row[0] + 1) & 0xFFFFFFFF or 1
    c.execute(
        "INSERT INTO meta(key, value) VALUES ('uidvalidity', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (value,),
    )
    return value


def _folder_name(name: str) -> str:
    # INBOX is case-insensitive (RFC 3501 §5.1); every other name is exact.
    return "INBOX" if name.upper() == "INBOX" else name
