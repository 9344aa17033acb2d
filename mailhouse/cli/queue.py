"""queue list / show."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..config import Config
from ..control import notify
from ..store.models import QueueEntry
from .common import store_for
from .main import CommandError
from .output import emit, fmt_age, fmt_time


def _row(e: QueueEntry, now: float) -> dict[str, Any]:
    return {
        "id": e.id,
        "age": fmt_age(now - e.created),
        "sender": e.sender or "<>",
        "recipients": [r.address for r in e.pending],
        "attempts": e.attempts,
        "next_attempt": "held" if e.held else fmt_time(e.next_attempt),
        "last_error": e.last_error or "",
    }


async def cmd_list(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        entries = await store.list_queue()
    now = time.time()
    emit(
        [_row(e, now) for e in entries],
        ["id", "age", "sender", "recipients", "attempts", "next_attempt", "last_error"],
        as_json=args.json,
        empty="queue is empty",
    )


async def cmd_show(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        e = await store.get_queue_entry(args.id)
        if e is None:
            raise CommandError(f"no queued message {args.id}")
        events = await store.journey(e.id)
    doc = {
        "id": e.id,
        "sender": e.sender,
        "message_id": e.message_id,
        "size": e.size,
        "created": fmt_time(e.created),
        "next_attempt": fmt_time(e.next_attempt),
        "attempts": e.attempts,
        "held": e.held,
        "last_error": e.last_error,
        "dsn": {"ret": e.ret, "envid": e.envid},
        "recipients": [
            {"address": r.address, "state": r.state, "last_reply": r.last_reply, "orcpt": r.orcpt, "notify": r.notify}
            for r in e.recipients
        ],
        "events": [{"time": fmt_time(ev.time), "kind": ev.kind, **ev.data} for ev in events],
    }
    if args.json:
        print(json.dumps(doc, ensure_ascii=False))
        return
    print(f"id:         {e.id}")
    print(f"sender:     <{e.sender}>")
    print(f"message-id: {e.message_id or '-'}")
    print(f"size:       {e.size}")
    print(f"created:    {fmt_time(e.created)}")
    print(f"attempts:   {e.attempts}; next: {'held' if e.held else fmt_time(e.next_attempt)}")
    if e.last_error:
        print(f"last error: {e.last_error}")
    for r in e.recipients:
        print(f"  <{r.address}>  {r.state}{'  ' + r.last_reply if r.last_reply else ''}")


async def cmd_retry(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        if args.id:
            await store.update_queue_entry(args.id, next_attempt=time.time())
            print(f"{args.id}: will be retried now")
        else:
            n = await store.retry_all(time.time())
            print(f"{n} message(s) will be retried now")
    notify(config)  # a running server acts now, not at its next poll


async def cmd_delete(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        await store.delete_queue_entry(args.id)
    print(f"{args.id}: deleted (no bounce is sent)")


async def cmd_hold(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        await store.update_queue_entry(args.id, held=True)
    print(f"{args.id}: held; `mailhouse queue release {args.id}` lets it go")


async def cmd_release(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        await store.update_queue_entry(args.id, held=False, next_attempt=time.time())
    notify(config)
    print(f"{args.id}: released")
