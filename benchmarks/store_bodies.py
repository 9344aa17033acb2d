#!/usr/bin/env python3
"""Message bodies inline in SQLite versus one file each: durable deliveries per second.

Runs the real store (group commit, fsync) twice on the same disk: once with every
body inline (the default for bodies up to INLINE_MAX), once with every body in its
own fsync'd file, at several concurrencies. Prints messages/s for each.

    python3 benchmarks/store_bodies.py [--messages 2000] [--size 4096]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from mailhouse.store import sqlite as sq
from mailhouse.store.models import Incoming, LocalTarget
from mailhouse.store.sqlite import blobs


async def run(mode: str, messages: int, size: int, concurrency: int) -> float:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        store = sq.SQLiteStore(Path(tmp))
        await store.open()
        await store.add_domain("bench.test")
        acc = await store.add_account("rcpt@bench.test", "x")
        body = b"Subject: bench\r\n\r\n" + b"x" * (size - 20) + b"\r\n"
        old = blobs.INLINE_MAX
        blobs.INLINE_MAX = 1 << 30 if mode == "inline" else -1
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                blob = store.new_blob()
                blob.write(body)
                await store.deliver(blob, Incoming(
                    queue_id=f"Q{i}", sender="a@example.org", local=[LocalTarget(acc.id, acc.address, acc.address)],
                    remote=[], parse={"subject": "bench"}, message_id=None, internal_date=time.time(),
                ))

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(messages)))
        elapsed = time.perf_counter() - start
        blobs.INLINE_MAX = old
        commits = store.commits
        await store.close()
        print(f"  {mode:6s} concurrency {concurrency:3d}: {messages / elapsed:8.0f} msg/s  ({commits} commits)")
        return messages / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4096)
    args = ap.parse_args()
    print(f"durable deliveries of {args.size}-byte messages, {args.messages} per run")
    for c in (1, 20, 100):
        for mode in ("inline", "file"):
            asyncio.run(run(mode, args.messages if c > 1 else args.messages // 4, args.size, c))


if __name__ == "__main__":
    main()
