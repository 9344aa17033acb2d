"""The queue manager: drains the durable queue, retries, gives up, tells the sender.

Each due entry is one unit of work: its pending recipients are grouped by domain,
each domain is routed and attempted (concurrently, within per-destination and
global limits), and the outcome of the whole attempt, DSNs included, is committed
in one store call. A crash at any point leaves the entry in the queue with its
recipients pending, so it is simply tried again (at-least-once delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import log
from ..config import QueueSettings
from ..delivery.recipients import resolve
from ..ids import new_queue_id
from ..mime.structure import analyze
from ..store.base import BlobWriter, Store
from ..store.models import AttemptOutcome, Incoming, QueueEntry, QueueRecipient, RecipientUpdate
from .dsn import RecipientStatus, build_dsn
from .routing import Route, Router

logger = log.get("queue")

MAX_RECEIVED = 50
# Entries taken from the queue, those waiting for their outcome's commit included,
# as a multiple of max_parallel (those before the end of their SMTP transaction).
# Measured with two workers draining a backlog to one sink: an outcome waited
# 25-35 ms for its commit, so when those counted against max_parallel, half the
# slots held entries that were done with the network. Since messages are sent
# behind the previous one's dot, entries also wait for that final reply outside
# their slot: with 2 here the bound came close (sampled every 10 ms: 75 of 100
# taken on average per worker; one process reached its 200), and 4 drained 2,213
# and 2,215 msg/s against 2,118 and 2,093 with 2 (two workers, runs alternated).
MAX_COMMITTING = 4
ROUTE_CACHE_SECONDS = 5.0


@dataclass
class RecipientResult:
    state: str  # delivered / deferred / failed
    reply: str  # the far side's reply or our own diagnosis, as one line
    status: str  # enhanced status code


@dataclass
class DomainAttempt:
    """What happened when one domain's recipients of one message were attempted."""

    results: dict[int, RecipientResult] = field(default_factory=dict)  # by recipient id
    remote_mta: str | None = None
    dsn_passed_on: bool = False  # the next hop took NOTIFY/ORCPT: success DSNs are its job
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class Deliverer(Protocol):
    """Sends one message to one domain's recipients over SMTP (mailhouse.net.smtp_client)."""

    async def deliver(
        self, route: Route, entry: QueueEntry, recipients: list[QueueRecipient], source: bytes | str,
        on_sent: Callable[[], None] | None = None,
    ) -> DomainAttempt:
        """``on_sent``, when given, is called once the message is sent and its
        connection has gone on to the next one before the final reply came back:
        the entry no longer holds a connection slot (see QueueManager._sending)."""
        ...


_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def status_of(reply: str, default: str) -> str:
    m = _STATUS.search(reply[:40])
    return m.group(0) if m else default


def wants(notify: str | None, what: str) -> bool:
    """RFC 3461 NOTIFY: absent means failures (and delays at our discretion)."""
    if notify is None:
        return what in ("FAILURE", "DELAY")
    values = {v.strip().upper() for v in notify.split(",")}
    return "NEVER" not in values and what in values


def count_received(source: bytes | str) -> int:
    if isinstance(source, str):
        with open(source, "rb") as f:
            head = f.read(256 * 1024)
    else:
        head = source[: 256 * 1024]
    end = head.find(b"\r\n\r\n")
    header = head[: end + 2] if end >= 0 else head
    # A substring count over the lower-cased header: a fifth of the regex's cost.
    low = b"\n" + header.lower()
    return low.count(b"\nreceived:")


class QueueManager:
    def __init__(
        self,
        store: Store,
        router: Router,
        deliverer: Deliverer,
        settings: QueueSettings,
        hostname: str,
        *,
        max_parallel: int = 100,
        part: tuple[int, int] | None = None,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.deliverer = deliverer
        self.settings = settings
        self.hostname = hostname
        self.max_parallel = max_parallel
        # (k, n): this manager drains the k-th of n shares of the queue (one per
        # worker process, see mailhouse.workers); None: all of it.
        self.part = part
        # Wakes the queue manager(s) when this one queues a DSN: with shares, the
        # DSN's entry may be another process's.
        self.on_queued = on_queued or self.kick
        self._low_water = max(1, max_parallel // 4)  # refill when this many slots are free
        self.in_flight: set[str] = set()  # taken from the queue and not yet finished
        # Those of in_flight not yet past their SMTP transaction. An entry whose
        # outcome waits for its commit (or whose message waits for its final reply
        # behind the next one: on_sent) no longer holds a connection slot: the next
        # entry may take its place, within MAX_COMMITTING times max_parallel taken.
        self._sending: set[str] = set()
        self._wake = asyncio.Event()
        self._kicked = True  # look at the queue once at start
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._routes: dict[str, tuple[float, Route]] = {}  # domain -> (expiry, route): see _route

    def kick(self) -> None:
        """New mail was queued: look now rather than at the next poll."""
        self._kicked = True
        self._wake.set()

    async def run(self) -> None:
        # Refilling after every finished attempt cost two store reads per message
        # (due_queue and next_queue_time, each an executor hop) while a backlog
        # drained. Instead: refill in batches once a quarter of the slots is free.
        # max_parallel (max_connections) is far above one destination's connection
        # limit, so connections never wait for work meanwhile.
        low_water = self._low_water
        more = True  # the last batch was full: more may be due at once
        next_due = 0.0  # when not `more`: when the next entry is due (or the next poll)
        while not self._stopping:
            self._wake.clear()
            free = self._free()
            due: list[QueueEntry] = []
            fetched = False
            if free > 0 and (self._kicked or (more and free >= low_water) or not self.in_flight):
                fetched, self._kicked = True, False
                try:
                    due = await self.store.due_queue(time.time(), free, set(self.in_flight), self.part)
                except Exception:
                    logger.exception("cannot read the queue")
                more = len(due) == free
            for entry in due:
                self.in_flight.add(entry.id)
                self._sending.add(entry.id)
                t = asyncio.get_running_loop().create_task(self._process(entry))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
            if fetched and not more:
                # Nothing more due now: sleep until the next entry is (or the poll).
                next_due = time.time() + self.settings.poll_interval
                with contextlib.suppress(Exception):
                    nxt = await self.store.next_queue_time(self.part)
                    if nxt is not None:
                        next_due = min(next_due, nxt)
            elif fetched:
                next_due = time.time() + self.settings.poll_interval
            wait = max(0.05, next_due - time.time()) if not more else self.settings.poll_interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            if not self._wake.is_set():
                more = True  # the poll: the CLI (another process) may have changed the queue

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for t in pending:
                t.cancel()  # the entry stays queued: it is retried after restart
            if pending:
                await asyncio.wait(pending, timeout=2.0)

    # ------------------------------------------------------------------ one entry
    async def _process(self, entry: QueueEntry) -> None:
        try:
            await self._attempt(entry)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s: delivery attempt failed", entry.id)
            with contextlib.suppress(Exception):
                await self.store.finish_attempt(
                    entry.id,
                    AttemptOutcome([], time.time() + self._retry_delay(), "internal error", count_attempt=False),
                    [],
                )
        finally:
            self.in_flight.discard(entry.id)
            self._sent(entry)

    def _free(self) -> int:
        return min(self.max_parallel - len(self._sending), MAX_COMMITTING * self.max_parallel - len(self.in_flight))

    def _sent(self, entry: QueueEntry) -> None:
        """The entry's transaction is over (or it is finished): its slot is free."""
        self._sending.discard(entry.id)
        # Wake the loop only when it has something to do: a refill (see run), or
        # nothing left in flight. Waking it per finished attempt cost a loop turn each.
        if self._free() >= self._low_water or not self.in_flight or self._kicked:
            self._wake.set()

    def _retry_delay(self) -> float:
        base = self.settings.retry_interval
        return base * random.uniform(0.9, 1.1)  # jitter: a backlog must not retry in lockstep

    async def _attempt(self, entry: QueueEntry) -> None:
        pending = entry.pending
        if not pending:
            await self.store.finish_attempt(entry.id, AttemptOutcome([], time.time(), None, count_attempt=False), [])
            return
        source = await self.store.blob_source(entry.blob_id)
        now = time.time()
        results: dict[int, RecipientResult] = {}
        remote_mta: dict[int, str | None] = {}
        passed_on: dict[int, bool] = {}
        events: list[tuple[str, dict[str, Any]]] = []
        received = count_received(source)
        if received > MAX_RECEIVED:
            for r in pending:
                results[r.id] = RecipientResult("failed", f"mail forwarding loop: more than {MAX_RECEIVED} Received headers", "5.4.6")
            events.append(("loop", {"received_headers": received}))
        else:
            by_domain: dict[str, list[QueueRecipient]] = defaultdict(list)
            for r in pending:
                by_domain[r.address.rpartition("@")[2].lower()].append(r)
            attempts: list[DomainAttempt | BaseException]
            if len(by_domain) == 1:
                # The common case: no gather (a task per domain) for one domain.
                ((d, rs),) = by_domain.items()
                try:
                    attempts = [await self._domain(entry, d, rs, source, lambda: self._sent(entry))]
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    attempts = [e]
            else:
                attempts = await asyncio.gather(
                    *(self._domain(entry, d, rs, source) for d, rs in by_domain.items()), return_exceptions=True
                )
            for (domain, rs), att in zip(by_domain.items(), attempts, strict=True):
                if isinstance(att, BaseException):
                    if isinstance(att, asyncio.CancelledError):
                        raise att
                    logger.error("%s: %s: %r", entry.id, domain, att)
                    for r in rs:
                        results[r.id] = RecipientResult("deferred", f"internal error: {att!r}", "4.3.0")
                    continue
                events += att.events
                for r in rs:
                    res = att.results.get(r.id) or RecipientResult("deferred", "no result", "4.3.0")
                    results[r.id] = res
                    remote_mta[r.id] = att.remote_mta
                    passed_on[r.id] = att.dsn_passed_on
        self._sent(entry)
        await self._conclude(entry, pending, results, remote_mta, passed_on, events, source, now)

    async def _domain(
        self, entry: QueueEntry, domain: str, rcpts: list[QueueRecipient], source: bytes | str,
        on_sent: Callable[[], None] | None = None,
    ) -> DomainAttempt:
        route = await self._route(domain)
        if route.error is not None or not route.hops:
            state = "failed" if route.permanent else "deferred"
            reply = route.error or "no route"
            att = DomainAttempt(
                results={r.id: RecipientResult(state, reply, route.status or ("5.1.2" if route.permanent else "4.4.3")) for r in rcpts}
            )
            att.events.append(("attempt", {"domain": domain, "route": route.describe(), "outcome": state, "error": reply,
                                           "recipients": [r.address for r in rcpts]}))
            return att
        return await self.deliverer.deliver(route, entry, rcpts, source, on_sent)

    async def _route(self, domain: str) -> Route:
        # A configured route to an IP address is static: routing it once every few
        # seconds instead of per message spares the backlog of one domain that much.
        # MX routes are not kept here: the resolver's cache keeps to the DNS TTLs.
        now = time.monotonic()
        hit = self._routes.get(domain)
        if hit is not None and hit[0] > now:
            return hit[1]
        route = await self.router.route(domain)
        if route.how == "route" and route.error is None and all(h.addresses == [h.host] for h in route.hops):
            self._routes[domain] = (now + ROUTE_CACHE_SECONDS, route)
        return route

    async def _conclude(
        self,
        entry: QueueEntry,
        pending: list[QueueRecipient],
        results: dict[int, RecipientResult],
        remote_mta: dict[int, str | None],
        passed_on: dict[int, bool],
        events: list[tuple[str, dict[str, Any]]],
        source: bytes | str,
        now: float,
    ) -> None:
        age = now - entry.created
        expired = age >= self.settings.max_lifetime
        updates: list[RecipientUpdate] = []
        failed: list[RecipientStatus] = []
        delayed: list[RecipientStatus] = []
        succeeded: list[RecipientStatus] = []
        next_attempt = now + self._retry_delay()
        last_error: str | None = None
        for r in pending:
            res = results[r.id]
            state = res.state
            if state == "deferred" and expired:
                state = "failed"
                res = RecipientResult("failed", f"{res.reply} (gave up after {_human_age(age)} in the queue)",
                                      res.status if res.status.startswith("4.4") else "4.4.7")
            updates.append(RecipientUpdate(r.id, state, res.reply))
            if state == "failed":
                last_error = res.reply
                logger.info("%s: to=<%s>, status=bounced (%s)", entry.id, r.address, res.reply)
                if wants(r.notify, "FAILURE"):
                    failed.append(RecipientStatus(r.address, r.orcpt, state, res.status, remote_mta.get(r.id), res.reply))
            elif state == "deferred":
                last_error = res.reply
                logger.info("%s: to=<%s>, status=deferred (%s)", entry.id, r.address, res.reply)
                if wants(r.notify, "DELAY"):
                    delayed.append(RecipientStatus(r.address, r.orcpt, "delayed", res.status, remote_mta.get(r.id),
                                                   res.reply, entry.created + self.settings.max_lifetime))
            else:
                logger.info("%s: to=<%s>, relay=%s, status=sent (%s)", entry.id, r.address, remote_mta.get(r.id) or "-", res.reply)
                if wants(r.notify, "SUCCESS") and not passed_on.get(r.id):
                    succeeded.append(RecipientStatus(r.address, r.orcpt, "relayed", res.status, remote_mta.get(r.id), res.reply))
        notices: list[tuple[BlobWriter, Incoming]] = []
        warned = False
        original: bytes | None = None

        async def orig() -> bytes:
            nonlocal original
            if original is None:
                if isinstance(source, str):
                    original = await asyncio.get_running_loop().run_in_executor(None, _read_file, source)
                else:
                    original = source
            return original

        if entry.sender:  # never bounce a bounce
            if failed:
                notices.append(await self._notice(entry, "failed", failed, await orig(), events))
            warn_after = self.settings.delay_warning
            if delayed and not entry.warned and warn_after > 0 and age >= warn_after and not expired:
                notices.append(await self._notice(entry, "delayed", delayed, await orig(), events))
                warned = True
            if succeeded:
                notices.append(await self._notice(entry, "relayed", succeeded, await orig(), events))
        elif failed:
            logger.info("%s: undeliverable bounce (null sender) dropped: %s", entry.id, ", ".join(s.address for s in failed))
            events.append(("dropped", {"reason": "a bounce (null sender) failed; bounces are never bounced",
                                       "recipients": [s.address for s in failed]}))
        removed = await self.store.finish_attempt(
            entry.id, AttemptOutcome(updates, next_attempt, last_error, events, warned), notices
        )
        if notices:
            self.on_queued()  # a DSN may have been queued for a remote sender: send it now
        if removed:
            logger.info("%s: removed", entry.id)

    async def _notice(
        self,
        entry: QueueEntry,
        kind: str,
        statuses: list[RecipientStatus],
        original: bytes,
        events: list[tuple[str, dict[str, Any]]],
    ) -> tuple[BlobWriter, Incoming]:
        raw, message_id = build_dsn(
            kind=kind, hostname=self.hostname, queue_id=entry.id, sender=entry.sender, envid=entry.envid,
            arrival=entry.created, statuses=statuses, original=original, ret_full=(entry.ret or "").upper() == "FULL",
            now=time.time(),
        )
        res = resolve(self.store, entry.sender)
        qid = new_queue_id()
        blob = self.store.new_blob()
        if res.local:
            raw = b"Return-Path: <>\r\n" + raw  # final delivery: the trace field is ours to add
        blob.write(raw)
        inc = Incoming(
            queue_id=qid, sender="", local=res.local, remote=res.remote if not res.local else [],
            parse=analyze(raw), message_id=message_id.strip("<>"), internal_date=time.time(),
            events=[("dsn", {"kind": kind, "about": entry.id, "to": entry.sender,
                             "recipients": [s.address for s in statuses]})],
        )
        if res.unknown:
            inc.local, inc.remote = [], []
        events.append((
            "bounced" if kind == "failed" else f"dsn-{kind}",
            {"dsn_queue_id": qid, "to": entry.sender, "recipients": [s.address for s in statuses]},
        ))
        logger.info("%s: sender %s notification: %s", entry.id, kind, qid)
        return blob, inc


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _human_age(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} seconds"
