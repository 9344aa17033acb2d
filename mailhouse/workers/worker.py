"""A worker process: ``python -m mailhouse.workers.worker``, started by serve.

It serves the listeners whose sockets it inherits, with its own store
connection, drains its share of the queue (serve.outbound, serve.queue_shares), and
keeps the main process told of its changes through the link.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import socket
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from .. import log
from ..auth.service import Authenticator, LoginResult
from ..config import Config, ConfigError, config_from_toml, load_config
from ..context import Context
from ..dns.resolver import Resolver
from ..imap import recent
from ..net.counts import SharedConnectionCounts, SharedConnectionRate
from ..net.listeners import INHERITED
from ..net.smtp_client import SMTPDeliverer
from ..net.tls import server_context
from ..queue.manager import QueueManager
from ..serve import (
    outbound,
    queue_shares,
    run,
    start_listeners,
    stop_listeners,
    stop_outbound,
    until_signalled,
)
from ..store import open_store
from ..store.base import Store
from ..store.models import Change
from ..trust.hooks import install as install_trust
from .link import Link, encode_changes
from .supervisor import counts_path, rate_path, recent_path

logger = log.get("workers")

LOGIN_TIMEOUT = 60.0  # argon2 under load, the failure delay: seconds, not minutes
LIMIT_TIMEOUT = 30.0  # a count in memory: only a stalled main process takes this long
T = TypeVar("T")


class _Asked(Generic[T]):
    """Requests to the main process awaiting their answers, by id."""

    def __init__(self) -> None:
        # Ids unique to this process's life: an answer meant for a worker that
        # died in this slot can never settle a request of its successor.
        self._next = secrets.randbits(48) << 16
        self._waiting: dict[int, asyncio.Future[T]] = {}

    async def ask(self, send: Callable[[int], None], timeout: float) -> T:
        """send(id) sends the request; raises TimeoutError when no answer comes."""
        self._next += 1
        rid = self._next
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        send(rid)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(rid, None)

    def answer(self, rid: int, value: T) -> None:
        fut = self._waiting.get(rid)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def fail_all(self, value: T) -> None:
        """The main process is gone: nobody will answer."""
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_result(value)


class RemoteAuthenticator(Authenticator):
    """Logins checked by the main process (see link.py)."""

    def __init__(self, store: Store, link: Link) -> None:
        super().__init__(store)
        self.link = link
        self._asked: _Asked[tuple[str | None, float]] = _Asked()
        link.on_answer = lambda rid, address, retry_after: self._asked.answer(rid, (address, retry_after))

    def fail_all(self) -> None:
        self._asked.fail_all((None, 1.0))

    async def attempt(self, username: str, password: str, *, ip: str | None = None,
                      protocol: str = "") -> LoginResult:
        try:
            address, retry_after = await self._asked.ask(
                lambda rid: self.link.send_login(rid, username, password, ip or "-", protocol.replace(" ", "_") or "-"),
                LOGIN_TIMEOUT)
        except TimeoutError:
            logger.warning("login for %r: no answer from the main process", username[:100])
            return LoginResult(None, 1.0)
        account = self.store.find_account(address) if address else None
        return LoginResult(account, retry_after)


class RemoteSendLimits:
    """Messages counted against sending limits by the main process (see link.py)."""

    UNANSWERED = "sending limits cannot be checked now"

    def __init__(self, link: Link) -> None:
        self.link = link
        self._asked: _Asked[str | None] = _Asked()
        link.on_limit_answer = self._asked.answer

    def fail_all(self) -> None:
        self._asked.fail_all(self.UNANSWERED)

    async def count(self, user: str, recipients: int) -> str | None:
        """None, or why the message is over a limit (then it is not counted)."""
        try:
            return await self._asked.ask(lambda rid: self.link.send_limit(rid, user, recipients), LIMIT_TIMEOUT)
        except TimeoutError:
            logger.warning("sending limits for %r: no answer from the main process", user[:100])
            return self.UNANSWERED


class RemoteGreylist:
    """Greylisting triplets checked by the main process (see link.py)."""

    # No answer (the main process stalled or gone): deferred, as greylisting
    # itself defers; the sender retries, and the triplet is checked then.
    UNANSWERED = 60.0

    def __init__(self, link: Link) -> None:
        self.link = link
        self._asked: _Asked[float] = _Asked()
        link.on_greylist_answer = self._asked.answer

    def fail_all(self) -> None:
        self._asked.fail_all(self.UNANSWERED)

    async def wait(self, ip: str, sender: str, recipients: list[str]) -> float:
        """0 when every triplet may pass; else the seconds still to wait."""
        async def one(recipient: str) -> float:
            try:
                return await self._asked.ask(
                    lambda rid: self.link.send_greylist(rid, ip, sender, recipient), LIMIT_TIMEOUT)
            except TimeoutError:
                logger.warning("greylisting [%s]: no answer from the main process", ip)
                return self.UNANSWERED

        # Every recipient is asked (and so remembered), as in one process.
        waits = await asyncio.gather(*(one(r) for r in recipients))
        return max(waits, default=0.0)


class Relay:
    """This worker's changes to the main process; everyone else's to its subscribers."""

    def __init__(self, store: Store, lost: asyncio.Event) -> None:
        self.store = store
        self.link = Link(self._from_main, lambda: None, lost.set)
        self._pending: list[Change] = []
        self._kick = False
        self._scheduled = False
        self._relaying = False
        store.subscribe_changes(self._changed_here)

    def _from_main(self, changes: list[Change]) -> None:
        self._relaying = True
        try:
            self.store.announce_changes(changes)
        finally:
            self._relaying = False

    def _changed_here(self, change: Change) -> None:
        if not self._relaying:
            self._pending.append(change)
            self._schedule()

    def kick(self) -> None:
        self._kick = True
        self._schedule()

    def _schedule(self) -> None:
        # One write per loop iteration for all the commits it settled.
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        data = encode_changes(self._pending) + (b"q\n" if self._kick else b"")
        self._pending, self._kick = [], False
        self.link.send(data)


async def work(config: Config, slot: int, slots: int, notice_fd: int) -> None:
    log.tag_process(f"w{slot}")
    store = await open_store(config)
    try:
        lost = asyncio.Event()
        relay = Relay(store, lost)
        auth = RemoteAuthenticator(store, relay.link)
        limits = RemoteSendLimits(relay.link)
        greylist = RemoteGreylist(relay.link)

        def main_gone() -> None:
            lost.set()
            auth.fail_all()
            limits.fail_all()
            greylist.fail_all()

        relay.link.on_lost = main_gone
        ctx = Context(config=config, store=store, auth=auth, tls=server_context(config))
        ctx.connections = SharedConnectionCounts(counts_path(config), slot, slots)
        ctx.make_counts = lambda name: SharedConnectionCounts(counts_path(config, name), slot, slots)
        resolver = Resolver(config.nameservers, trust_ad=config.dns_trust_ad)
        trust = install_trust(ctx, resolver)
        trust.count_sending = limits.count
        trust.greylist_wait = greylist.wait
        trust.connections = SharedConnectionRate(rate_path(config), trust.connections.per_minute)
        # Workers 0 .. shares-1 drain the queue, a share each (serve.queue_shares).
        shares = queue_shares(config)
        queue: QueueManager | None = None
        deliverer: SMTPDeliverer | None = None

        def queued() -> None:  # here: this share may hold it, another may
            if queue is not None:
                queue.kick()
            relay.kick()

        if slot < shares:
            queue, deliverer = outbound(config, store, resolver, part=(slot, shares), on_queued=queued)
            relay.link.on_kick = queue.kick  # another process queued mail
        ctx.on_queued = queued
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: relay.link, socket.socket(fileno=notice_fd))
        recent.share(recent_path(config))  # IMAP \Recent claims, every worker's
        names = [n for n, (host, port) in config.listen.items() if (host, port) in INHERITED]
        listeners = await start_listeners(ctx, names)
        queue_task = loop.create_task(queue.run()) if queue is not None else None
        stop = asyncio.create_task(_until_signalled_or(lost))
        await stop
        if lost.is_set():
            logger.warning("worker %d: the main process is gone; stopping", slot)
        await stop_listeners(ctx, listeners, *([queue.stop()] if queue is not None else []))
        await stop_outbound(queue_task, deliverer)
    finally:
        await store.close()


async def _until_signalled_or(lost: asyncio.Event) -> None:
    signalled = asyncio.create_task(until_signalled())
    gone = asyncio.create_task(lost.wait())
    await asyncio.wait({signalled, gone}, return_when=asyncio.FIRST_COMPLETED)
    for t in (signalled, gone):
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mailhouse-worker")
    p.add_argument("--config")
    p.add_argument("--config-snapshot", help="the configuration text the main process started with")
    p.add_argument("--slot", type=int, required=True)
    p.add_argument("--slots", type=int, required=True)
    p.add_argument("--notice-fd", type=int, required=True)
    p.add_argument("--listen", action="append", default=[], help="NAME:FD")
    a = p.parse_args(argv)
    try:
        if a.config_snapshot and a.config:
            # What the main process read at its start, not the file as it is now:
            # a worker restarted after an edit must not differ from the others.
            doc = tomllib.loads(Path(a.config_snapshot).read_text(encoding="utf-8"))
            config = config_from_toml(doc, Path(a.config))
        else:
            config = load_config(a.config)
    except (ConfigError, OSError, tomllib.TOMLDecodeError) as e:
        print(f"mailhouse worker: {e}", file=sys.stderr)
        return 2
    for item in a.listen:
        name, _, fd = item.partition(":")
        INHERITED[config.listen[name]] = socket.socket(fileno=int(fd))
    run(config, lambda c: work(c, a.slot, a.slots, a.notice_fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
