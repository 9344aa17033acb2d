#!/usr/bin/env python3
"""What one delivery writes: WAL pages a commit, by table and index, and CPU a message.

Runs the real store (group commit, fsync) on a fresh data dir with the WAL's
automatic checkpoint off, so the WAL keeps every frame written; delivers
--messages messages of about --size bytes in groups of --group at once (each
group is one commit, as concurrent SMTP sessions make them), spread over
--mailboxes accounts; then reads the WAL's frame headers and names each page's
B-tree (SQLite's dbstat). A page rewritten by each commit is counted each time:
that is what the disk sees, once in the WAL and again at the checkpoint.

    python3 benchmarks/store_wal.py [--messages 3000] [--group 15] [--mailboxes 1]

The body and headers are those of smtp_receive.py's asyncio load (a unique,
random-looking Message-ID each).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import resource
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smtp_receive import MessageFactory

from mailhouse.ids import new_queue_id
from mailhouse.mime.structure import analyze
from mailhouse.store.models import Incoming, LocalTarget
from mailhouse.store.sqlite import SQLiteStore, engine


def _no_autocheckpoint() -> None:
    # The store's connections come from engine._connect; a benchmark may wrap it
    # (the product never turns checkpoints off).
    original = engine._connect

    def connect(path: Path) -> sqlite3.Connection:
        conn = original(path)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    engine._connect = connect  # type: ignore[assignment]


def wal_frames(wal: bytes, start: int = 32) -> tuple[int, list[tuple[int, bool]]]:
    """(page size, [(page number, ends a commit)]) from a WAL file's bytes, from
    offset `start` (a frame boundary) on."""
    page_size = struct.unpack(">I", wal[8:12])[0]
    frames = []
    off = max(start, 32)
    while off + 24 + page_size <= len(wal):
        page, db_size = struct.unpack(">II", wal[off : off + 8])
        frames.append((page, db_size != 0))
        off += 24 + page_size
    return page_size, frames


async def deliver_all(data: Path, messages: int, group: int, mailboxes: int, size: int) -> tuple[float, int]:
    """Deliver; return the process CPU seconds it took and the WAL's size before."""
    store = SQLiteStore(data)
    await store.open()
    await store.add_domain("bench.test")
    accounts = [await store.add_account(f"rcpt{i}@bench.test", "x") for i in range(mailboxes)]
    factory = MessageFactory(size, f"{random.getrandbits(40):010x}")
    raws = [factory.data(i)[:-3] for i in range(messages)]  # without the ".\r\n" of DATA
    parses = [analyze(r) for r in raws]
    order = list(range(messages))
    random.Random(1).shuffle(order)  # Message-IDs arrive in no order, as from many clients

    async def one(n: int) -> None:
        acc = accounts[n % mailboxes]
        blob = store.new_blob()
        blob.write(raws[n])
        mid = str(parses[n].get("message_id") or "").strip("<>") or None
        await store.deliver(blob, Incoming(
            queue_id=new_queue_id(), sender="sender@client.bench.test",
            local=[LocalTarget(acc.id, acc.address, acc.address)], remote=[], parse=parses[n],
            message_id=mid, internal_date=time.time(),
            events=[("received", {"listener": "smtp", "client_ip": "127.0.0.1", "helo": "client.bench.test",
                                  "tls": None, "auth_user": None, "sender": "sender@client.bench.test",
                                  "recipients": [acc.address], "size": len(raws[n]), "server": "mx.bench.test"})],
        ))

    await asyncio.sleep(0.1)  # the setup's commits are written (and skipped below)
    wal_start = (data / "mailhouse.db-wal").stat().st_size
    before = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(0, messages, group):
        await asyncio.gather(*(one(n) for n in order[i : i + group]))
    after = resource.getrusage(resource.RUSAGE_SELF)
    # Copy the WAL before close() checkpoints it away.
    shutil.copy(data / "mailhouse.db-wal", data.parent / "kept.wal")
    shutil.copy(data / "mailhouse.db", data.parent / "kept.db")
    await store.close()
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), wal_start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--group", type=int, default=15, help="deliveries waiting together: one commit")
    ap.add_argument("--mailboxes", type=int, default=1, help="accounts the messages are spread over")
    ap.add_argument("--size", type=int, default=4096)
    a = ap.parse_args()
    _no_autocheckpoint()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        data = Path(tmp) / "data"
        cpu, wal_start = asyncio.run(deliver_all(data, a.messages, a.group, a.mailboxes, a.size))
        page_size, frames = wal_frames((Path(tmp) / "kept.wal").read_bytes(), wal_start)
        db = Path(tmp) / "copy.db"
        shutil.copy(Path(tmp) / "kept.db", db)
        shutil.copy(Path(tmp) / "kept.wal", f"{db}-wal")
        conn = sqlite3.connect(db)
        owner = {page: name for name, page in conn.execute("SELECT name, pageno FROM dbstat")}
        conn.close()
    commits = sum(1 for _, end in frames if end)
    by_tree = collections.Counter(owner.get(page, "(freelist)") for page, _ in frames)
    print(f"{a.messages} deliveries of {a.size} B in groups of {a.group} over {a.mailboxes} mailbox(es): "
          f"{commits} commits")
    print(f"  WAL: {len(frames) / commits:.1f} pages a commit, {len(frames) * (page_size + 24) / a.messages / 1024:.1f} "
          f"KB a message; CPU {cpu / a.messages * 1e6:.0f} µs a message (all threads)")
    for name, n in by_tree.most_common():
        if n / commits >= 0.01:
            print(f"  {name:32s} {n / commits:6.2f} pages a commit")


if __name__ == "__main__":
    main()
