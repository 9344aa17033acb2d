"""The asyncio side of the outbound SMTP client: connections, TLS, a connection cache.

Delivery to one domain tries its hops in order (route, or MX by preference, each
host's addresses in turn); a refused connection, a timeout, a 4xx greeting or a
failed TLS handshake moves on to the next address. Once a transaction runs, its
replies decide. Connections are cached briefly per address so several messages
for one next hop go over one connection, one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from .. import log
from ..config import QueueSettings
from ..queue.convert import to_7bit
from ..queue.manager import DomainAttempt, RecipientResult, status_of
from ..queue.routing import Hop, Route
from ..smtp import client as cm
from ..smtp.grammar import Reply
from ..store.models import QueueEntry, QueueRecipient
from ..trust.tlspolicy import OutboundTLS, TLSRequirement

logger = log.get("smtp")

CHUNK = 64 * 1024


class StaleConnection(Exception):
    """A cached connection died before the transaction began: open a fresh one."""


class HopFailed(Exception):
    """This address could not take the message; try the next one."""

    def __init__(self, reason: str, transcript: list[tuple[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.transcript = transcript or []


class TLSPolicyFailed(HopFailed):
    """The hop's mandatory TLS (DANE, MTA-STS, [tls_policy]) was not met: never send in the clear."""


def _reply_text(reply: Reply | None) -> str:
    if reply is None:
        return ""
    enh = f"{reply.enhanced} " if reply.enhanced else ""
    return f"{reply.code} {enh}{' '.join(reply.lines)}".strip()


class Connection(asyncio.Protocol):
    """One connection to a next hop: the protocol moves bytes between the socket
    and the machine, and wakes the task that drives a transaction only when the
    machine has an event for it. (Streams woke it, and built a future, for every
    read: four per message against smtp-sink, of which two carried an event.)"""

    def __init__(
        self, host: str, address: str, port: int, machine: cm.ClientConnection, reply_cap: float | None,
        tls_key: tuple[Any, ...] = (),
    ) -> None:
        self.host = host
        self.address = address
        self.port = port
        self.machine = machine
        self.reply_cap = reply_cap
        self.tls: str | None = None
        self.tls_key = tls_key  # the TLSRequirement.key it was opened under: reuse only under the same
        self.tls_problem: str | None = None  # what the requirement's certificate check found (testing mode goes on)
        self.last_used = time.monotonic()
        self.messages = 0
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._lost: str | None = None  # why the socket failed (not a clean EOF)
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        # Decrypted bytes that arrive before the machine knows TLS is on (FIELD-NOTES:
        # before start_tls() returns): held until tls_established().
        self._tls_pending: list[bytes] | None = None
        # The reply timeout: one lazily re-armed timer per connection rather than an
        # asyncio.timeout() (an object, a timer handle and a reschedule) per wait.
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # Transactions whose next one was started behind their dot (hand_off), oldest
        # first: each gets its end-of-data reply, or why none came (a str).
        self._finishers: deque[asyncio.Future[Reply | str]] = deque()
        self._stash: deque[cm.Event] = deque()  # events _dispatch pulled for the task using it

    # ------------------------------------------------------------ protocol side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._tls_pending is not None:
            self._tls_pending.append(data)
            return
        m = self.machine
        m.receive_data(data)
        if self._waiter is None and self._finishers:
            self._dispatch()  # no task is reading: an end-of-data reply is for a finisher
        elif m.has_event():
            self._wake()
        else:
            self.send()  # what a reply made the machine say (a non-pipelined RCPT)

    def eof_received(self) -> bool | None:
        if self._tls_pending is None:
            self.machine.receive_data(b"")
        self._wake_or_dispatch()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:  # a reset, not the server's close: the hop failed (see event)
            self._lost = str(exc) or type(exc).__name__
            self._fail_finishers(f"connection lost: {self._lost}")
        else:
            self.machine.receive_data(b"")  # no-op after the EOF
        self._wake_or_dispatch()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _wake_or_dispatch(self) -> None:
        if self._waiter is None and self._finishers:
            self._dispatch()
        else:
            self._wake()

    def _check_deadline(self) -> None:
        self._timer = None
        w = self._waiter
        waiting = w is not None and not w.done()
        if not waiting and not self._finishers:
            return  # idle: the next wait arms the timer again
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:  # replies came meanwhile: wait for the rest
            self._arm(self._deadline)
            return
        if waiting:
            assert w is not None
            w.set_exception(TimeoutError())
        else:  # only finishers wait, and their reply is overdue
            self._fail_finishers("timeout waiting for the reply to the end of data")
            self.close()

    def _timeout(self) -> float:
        """The wait for the reply the machine expects next (RFC 5321 §4.5.3.2), capped."""
        timeout = self.machine.reply_timeout or 300.0
        return timeout if self.reply_cap is None else min(timeout, self.reply_cap)

    def _arm(self, deadline: float) -> None:
        self._deadline = deadline
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = asyncio.get_running_loop().call_at(deadline, self._check_deadline)

    # ------------------------------------------------------------ transactions behind a dot
    @property
    def busy(self) -> bool:
        """A transaction on it still waits for its end-of-data reply."""
        return bool(self._finishers)

    def finishing(self) -> list[asyncio.Future[Reply | str]]:
        return list(self._finishers)

    def usable(self) -> bool:
        """A new transaction may start on it now (Ready, or behind a dot)."""
        m = self.machine
        return not self.is_closing() and (m.ready or m.can_start_next())

    def hand_off(self) -> asyncio.Future[Reply | str]:
        """The current transaction's content is in the machine and the next may start
        behind it: the future gets its end-of-data reply, or why none came. Whoever
        reads the connection meanwhile (the next transaction's task, or the protocol
        when nobody does) passes the reply on."""
        fut: asyncio.Future[Reply | str] = asyncio.get_running_loop().create_future()
        self._finishers.append(fut)
        self._arm(asyncio.get_running_loop().time() + self._timeout())
        return fut

    def _route(self, ev: cm.Event) -> bool:
        """With finishers waiting: True when the event was the oldest one's reply.
        Replies come in order, so a MessageResult is theirs before any of the
        transaction started behind them."""
        if type(ev) is cm.MessageResult:
            f = self._finishers.popleft()
            if not f.done():
                f.set_result(ev.reply)
            return True
        if isinstance(ev, cm.ConnectionFailed):
            reply = _reply_text(ev.reply)
            self._fail_finishers(f"{ev.reason} {reply}".strip())
        elif isinstance(ev, cm.Closed):
            self._fail_finishers("connection closed")
        return False

    def _dispatch(self) -> None:
        """Pass end-of-data replies on while no task reads the connection."""
        m = self.machine
        while self._finishers:
            ev = m.next_event()
            if ev is cm.NEED_DATA:
                self.send()
                return
            assert isinstance(ev, cm.Event)
            if self._route(ev):
                continue
            if isinstance(ev, cm.Ready):
                continue  # nobody uses the connection; the next action drops it anyway
            if not isinstance(ev, cm.ConnectionFailed | cm.Closed):  # terminal: stays in the machine
                self._stash.append(ev)
            return

    def _fail_finishers(self, reason: str) -> None:
        while self._finishers:
            f = self._finishers.popleft()
            if not f.done():
                f.set_result(reason)

    # ------------------------------------------------------------ task side
    def send(self) -> None:
        """Write what the machine has to say."""
        data = self.machine.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport holds back a lot (a large message's chunks)."""
        if self._paused and self.transport is not None and not self.transport.is_closing():
            loop = asyncio.get_running_loop()
            self._drained = loop.create_future()
            await self._drained

    async def event(self) -> cm.Event:
        """The next event, waiting (with the RFC's timeouts) as needed."""
        m = self.machine
        while True:
            if self._stash:
                return self._stash.popleft()
            ev = m.next_event()
            if ev is not cm.NEED_DATA:
                assert isinstance(ev, cm.Event)
                if self._finishers and self._route(ev):
                    continue
                return ev
            self.send()
            if self._lost is not None:
                raise HopFailed(f"connection to {self.host}[{self.address}] lost: {self._lost}")
            timeout = self._timeout()
            loop = asyncio.get_running_loop()
            self._arm(loop.time() + timeout)
            self._waiter = loop.create_future()
            try:
                await self._waiter
            except TimeoutError:
                raise HopFailed(f"timeout after {timeout:.0f}s waiting for {self.host}[{self.address}]") from None
            finally:
                self._waiter = None

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        transport = self.transport
        assert transport is not None
        self._tls_pending = []
        new = await asyncio.get_running_loop().start_tls(transport, self, context, server_hostname=server_hostname)
        if new is None:
            raise ConnectionError("connection closed during the TLS handshake")
        self.transport = new

    def tls_established(self) -> None:
        """The machine reads again, first what arrived during the handshake."""
        pending, self._tls_pending = self._tls_pending or [], None
        self.machine.tls_established()
        for chunk in pending:
            self.machine.receive_data(chunk)

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        self._fail_finishers("connection closed before the reply to the end of data")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()

    async def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.machine.quit()
            self.send()
            async with asyncio.timeout(2):
                while not isinstance(await self.event(), cm.Closed | cm.ConnectionFailed):
                    pass
        self.close()


@dataclass
class TransactionOutcome:
    per_recipient: dict[str, RecipientResult]
    transcript: list[tuple[str, str]]


@dataclass
class _Handed:
    """A transaction whose content is sent and whose connection went on to the next
    one before the reply to its end of data: the outcome once that reply is in."""

    reply: asyncio.Future[Reply | str]
    per: dict[str, RecipientResult]
    accepted: list[str]
    record: cm.Transcript
    conn: Connection

    async def wait(self) -> TransactionOutcome:
        result = await self.reply
        if isinstance(result, Reply):
            res = _result(result)
            for a in self.accepted:
                self.per[a] = res
        else:  # the connection failed first: whether the message was taken is unknown
            text = f"{self.conn.host}[{self.conn.address}] {result}"
            for a in self.accepted:
                self.per.setdefault(a, RecipientResult("deferred", text, "4.4.2"))
        return TransactionOutcome(self.per, self.record.lines())


class SMTPDeliverer:
    def __init__(
        self,
        hostname: str,
        settings: QueueSettings,
        tls_policy: dict[str, str] | None = None,
        tls: OutboundTLS | None = None,
    ) -> None:
        self.hostname = hostname
        self.settings = settings
        self.tls_policy = tls_policy or {}
        # [tls_policy], DANE, MTA-STS: what each hop needs (mailhouse.trust.tlspolicy).
        self.tls = tls or OutboundTLS(self.tls_policy)
        self._idle: dict[tuple[str, int], list[Connection]] = defaultdict(list)
        self._dest_limits: dict[str, asyncio.Semaphore] = {}
        self._global = asyncio.Semaphore(settings.max_connections)
        self._reaper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ cache
    def _take_idle(self, address: str, port: int) -> Connection | None:
        idle = self._idle.get((address, port))
        now = time.monotonic()
        found = None
        busy = []
        while idle:
            c = idle.pop()
            if c.usable() and (c.busy or now - c.last_used < self.settings.idle_timeout):
                found = c
                break
            if c.busy:
                busy.append(c)  # an end-of-data reply is still to come: not closed under it
            else:
                c.close()
        if busy:
            assert idle is not None
            idle.extend(reversed(busy))
        return found

    def _put_idle(self, conn: Connection) -> None:
        conn.last_used = time.monotonic()
        self._idle[(conn.address, conn.port)].append(conn)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while any(self._idle.values()):
            await asyncio.sleep(min(1.0, self.settings.idle_timeout))
            now = time.monotonic()
            for key, conns in list(self._idle.items()):
                keep = []
                for c in conns:
                    if now - c.last_used >= self.settings.idle_timeout and not c.busy:
                        await c.quit()
                    else:
                        keep.append(c)
                self._idle[key] = keep

    async def close(self) -> None:
        # Replies still due to transactions handed off (their messages may be taken):
        # a little time for them before the connections go.
        due = [f for conns in self._idle.values() for c in conns for f in c.finishing()]
        if due:
            await asyncio.wait(due, timeout=5.0)
        for conns in self._idle.values():
            for c in conns:
                await c.quit()
        self._idle.clear()
        if self._reaper is not None:
            self._reaper.cancel()

    # ------------------------------------------------------------------ connect
    async def _open(self, hop: Hop, address: str, policy: TLSRequirement) -> Connection:
        port = hop.port
        machine = cm.ClientConnection(self.hostname, want_tls=policy.want_tls)
        conn = Connection(hop.host, address, port, machine, self.settings.reply_timeout, tls_key=policy.key)
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                await asyncio.get_running_loop().create_connection(lambda: conn, address, port)
        except TimeoutError:
            raise HopFailed(f"connect to {hop.host}[{address}]:{port}: timed out") from None
        except OSError as e:
            raise HopFailed(f"connect to {hop.host}[{address}]:{port}: {e.strerror or e}") from None
        failed = TLSPolicyFailed if policy.mandatory else HopFailed
        try:
            while True:
                ev = await conn.event()
                if isinstance(ev, cm.Greeting):
                    continue
                if isinstance(ev, cm.TLSRequired):
                    conn.send()
                    try:
                        async with asyncio.timeout(self.settings.connect_timeout):
                            await conn.start_tls(policy.context(), server_hostname=hop.host)
                    except (ssl.SSLError, OSError, TimeoutError) as e:
                        raise failed(f"TLS handshake with {hop.host}[{address}] failed: {e}", machine.transcript) from None
                    assert conn.transport is not None
                    obj = conn.transport.get_extra_info("ssl_object")
                    conn.tls_problem = policy.check(obj)
                    if conn.tls_problem is not None and policy.mandatory:
                        raise TLSPolicyFailed(f"{hop.host}[{address}]: {conn.tls_problem}", machine.transcript)
                    conn.tls = f"{obj.version()} {obj.cipher()[0]}" if obj is not None else "TLS"
                    conn.tls_established()
                    continue
                if isinstance(ev, cm.TLSRefused):
                    if policy.mandatory:
                        raise TLSPolicyFailed(f"{hop.host} refused STARTTLS ({_reply_text(ev.reply)}) and TLS is required",
                                              machine.transcript)
                    continue
                if isinstance(ev, cm.Ready):
                    if policy.mandatory and not ev.tls:
                        raise TLSPolicyFailed(f"{hop.host} does not offer STARTTLS and TLS is required", machine.transcript)
                    return conn
                if isinstance(ev, cm.ConnectionFailed):
                    raise HopFailed(f"{hop.host}[{address}] {ev.reason}: {_reply_text(ev.reply)}".rstrip(": "),
                                    machine.transcript)
                if isinstance(ev, cm.Closed):
                    raise HopFailed(f"{hop.host}[{address}] closed the connection", machine.transcript)
        except BaseException:
            conn.close()
            raise

    # ------------------------------------------------------------------ deliver
    async def deliver(
        self, route: Route, entry: QueueEntry, recipients: list[QueueRecipient], source: bytes | str,
        on_sent: Callable[[], None] | None = None,
    ) -> DomainAttempt:
        route_tls = await self.tls.for_route(route)
        att = DomainAttempt()
        failures: list[str] = []
        tls_failures = 0  # those of a mandatory TLS policy: if all are, the status says so (4.7.5)
        body = await _load(source)
        for hop in route.hops:
            policy = await route_tls.for_hop(hop)
            if policy.refused is not None:
                failures.append(policy.refused)
                tls_failures += 1
                att.events.append(("attempt", route_tls.refusal_event(policy, [r.address for r in recipients])))
                continue
            for address in hop.addresses:
                started = time.time()
                event: dict[str, Any] = {
                    "domain": route.domain, "route": route.describe(), "host": hop.host, "address": address,
                    "port": hop.port, "recipients": [r.address for r in recipients], "started": started,
                    "tls_policy": policy.describe(),
                }
                sem = self._dest_limits.get(hop.host)
                if sem is None:  # (not setdefault: that built a Semaphore per attempt)
                    sem = self._dest_limits[hop.host] = asyncio.Semaphore(self.settings.connections_per_destination)
                async with sem, self._global:
                    try:
                        conn = self._take_idle(address, hop.port)
                        if conn is not None and conn.tls_key != policy.key:
                            # Opened under another TLS requirement, maybe a weaker one.
                            if conn.busy:
                                self._put_idle(conn)  # its last reply is still to come
                            else:
                                await conn.quit()
                            conn = None
                        event["reused_connection"] = conn is not None
                        outcome = None
                        if conn is not None:
                            try:
                                outcome = await self._transaction(conn, entry, recipients, body, reused=True)
                            except StaleConnection:
                                event["reused_connection"] = False
                        if conn is None or outcome is None:
                            conn = await self._open(hop, address, policy)
                            outcome = await self._transaction(conn, entry, recipients, body)
                    except HopFailed as e:
                        failures.append(str(e))
                        tls_failures += isinstance(e, TLSPolicyFailed)
                        event.update(outcome="connection-failed", error=str(e), transcript=_lines(e.transcript),
                                     duration=round(time.time() - started, 3))
                        att.events.append(("attempt", event))
                        logger.info("%s: %s", entry.id, e)
                        continue
                if isinstance(outcome, _Handed):
                    # The release above woke the next transaction waiting for this hop;
                    # it runs in the next loop turn, takes a connection from the pool and
                    # writes its MAIL, RCPT and DATA behind the dot, in one write. The
                    # write here is for a connection nobody took: one turn later still,
                    # as transactions ending together wake theirs together, and each
                    # takes the connection put back last, not the one its waker left.
                    loop = asyncio.get_running_loop()
                    loop.call_soon(loop.call_soon, conn.send)
                    if on_sent is not None:
                        on_sent()
                    outcome = await outcome.wait()
                att.remote_mta = hop.host
                att.dsn_passed_on = conn.machine.offers("DSN")
                for r in recipients:
                    att.results[r.id] = outcome.per_recipient.get(r.address) or RecipientResult(
                        "deferred", "no reply for this recipient", "4.3.0")
                states = {res.state for res in att.results.values()}
                event.update(
                    outcome="/".join(sorted(states)), tls=conn.tls, transcript=_lines(outcome.transcript),
                    tls_policy=policy.report(conn.tls, conn.tls_problem),
                    replies={r.address: att.results[r.id].reply for r in recipients},
                    duration=round(time.time() - started, 3),
                )
                att.events.append(("attempt", event))
                return att
        reason = "; ".join(failures[-3:]) or "no host to try"
        for r in recipients:
            att.results[r.id] = RecipientResult(
                "deferred", reason, "4.7.5" if failures and tls_failures == len(failures) else "4.4.1")
        return att

    async def _transaction(
        self, conn: Connection, entry: QueueEntry, recipients: list[QueueRecipient], body: bytes,
        *, reused: bool = False,
    ) -> TransactionOutcome | _Handed:
        try:
            return await self._transaction_on(conn, entry, recipients, body, reused)
        except HopFailed:
            conn.close()
            if reused:
                raise StaleConnection() from None
            raise

    async def _transaction_on(
        self, conn: Connection, entry: QueueEntry, recipients: list[QueueRecipient], body: bytes, reused: bool
    ) -> TransactionOutcome | _Handed:
        m = conn.machine
        # A fresh connection's journey shows its whole dialogue, greeting and TLS included;
        # a reused one's only this transaction. (A mark into the bounded transcript was
        # wrong once its head was full: every later transaction's record came out empty.)
        if reused:
            m.restart_transcript()
        eight = not body.isascii()
        if eight and not m.offers("8BITMIME"):
            converted = to_7bit(body)
            if converted is None:
                res = RecipientResult("failed", "554 5.6.3 the message has 8-bit headers and the next hop "
                                      "supports neither 8BITMIME nor SMTPUTF8", "5.6.3")
                return TransactionOutcome({r.address: res for r in recipients}, [])
            body, eight = converted, False
        smtputf8 = entry.smtputf8 or not (entry.sender.isascii() and all(r.address.isascii() for r in recipients))
        env = cm.Envelope(
            sender=entry.sender,
            recipients=[cm.RecipientSpec(r.address, r.notify, r.orcpt) for r in recipients],
            size=len(body), body_8bit=eight, smtputf8=smtputf8,
            ret=entry.ret, envid=entry.envid,
        )
        m.send_envelope(env)
        conn.send()
        per: dict[str, RecipientResult] = {}
        accepted: list[str] = []
        mail_reply: Reply | None = None
        while True:
            ev = await conn.event()
            if isinstance(ev, cm.MailRejected):
                mail_reply = ev.reply
            elif isinstance(ev, cm.RecipientResult):
                if ev.accepted:
                    accepted.append(ev.address)
                else:
                    per[ev.address] = _result(ev.reply)
            elif isinstance(ev, cm.ReadyForContent):
                # The end of the message (the dot, or LAST) goes with its last chunk:
                # one write, one packet and one wake-up of the peer less per message
                # than a separate ".\r\n" or "BDAT 0 LAST".
                last = max(len(body) - 1, 0) // CHUNK * CHUNK
                for i in range(0, last, CHUNK):
                    m.send_content(body[i : i + CHUNK], final=False)
                    conn.send()
                    await conn.drain()
                m.send_content(body[last:], final=True)
                if m.can_start_next():
                    # The next message for this hop may start behind the dot: the
                    # connection goes back now, its output not yet written (see deliver).
                    conn.messages += 1
                    handed = _Handed(conn.hand_off(), per, accepted, m.transcript_record(), conn)
                    self._put_idle(conn)
                    return handed
                conn.send()
            elif isinstance(ev, cm.MessageResult):
                res = _result(ev.reply)  # one verdict for all: built once, not per recipient
                for a in accepted:
                    per[a] = res
                break
            elif isinstance(ev, cm.TransactionFailed):
                reply = mail_reply or ev.reply
                for r in recipients:
                    per.setdefault(r.address, _result(reply))
                break
            elif isinstance(ev, cm.ConnectionFailed | cm.Closed):
                if reused and mail_reply is None and not accepted and not per:
                    conn.close()
                    raise StaleConnection()
                reason = ev.reason if isinstance(ev, cm.ConnectionFailed) else "connection closed"
                reply_t = _reply_text(ev.reply) if isinstance(ev, cm.ConnectionFailed) else ""
                for r in recipients:
                    per.setdefault(r.address, RecipientResult(
                        "deferred" if not (reply_t.startswith("5")) else "failed",
                        f"{conn.host}[{conn.address}] {reason} {reply_t}".strip(), status_of(reply_t, "4.4.2")))
                conn.close()
                return TransactionOutcome(per, m.transcript)
        # Wait for Ready, then keep the connection for the next message.
        conn.messages += 1
        ev = await conn.event()
        transcript = m.transcript
        if isinstance(ev, cm.Ready):
            self._put_idle(conn)
        else:
            conn.close()
        return TransactionOutcome(per, transcript)


def _result(reply: Reply) -> RecipientResult:
    text = _reply_text(reply)
    if reply.is_positive:
        return RecipientResult("delivered", text, reply.enhanced or "2.0.0")
    if reply.is_permanent:
        return RecipientResult("failed", text, reply.enhanced or "5.0.0")
    return RecipientResult("deferred", text, reply.enhanced or "4.0.0")


def _lines(transcript: list[tuple[str, str]]) -> list[str]:
    return [f"{d}: {line}" for d, line in transcript]


async def _load(source: bytes | str) -> bytes:
    if isinstance(source, str):
        data = await asyncio.get_running_loop().run_in_executor(None, _read, source)
    else:
        data = source
    # Return-Path belongs to final delivery (RFC 5321 §4.4): ours goes no further.
    if data[:12].lower() == b"return-path:":
        nl = data.find(b"\r\n")
        while nl >= 0 and data[nl + 2 : nl + 3] in (b" ", b"\t"):
            nl = data.find(b"\r\n", nl + 2)
        data = data[nl + 2 :] if nl >= 0 else b""
    return data


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
