"""The asyncio side of the SMTP server: sockets in, the sans-I/O machine, decisions.

The protocol object only moves bytes (BufferedProtocol: no allocation per read);
one task per connection pulls events from `mailhouse.smtp.server` and takes the
decisions that need the store: recipients, logins, the durable commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import Any, cast

from .. import log
from ..context import Context
from ..delivery.reception import Client, Reception, Refusal
from ..delivery.trace import TLSInfo
from ..smtp import server as sm
from ..smtp.grammar import format_reply
from ..trust.hooks import allow_connection, may_send_as
from . import peer_ip
from .listeners import bind_args

logger = log.get("smtpd")

READ_SIZE = 64 * 1024
MAX_BUFFERED_INPUT = 1024 * 1024
SHUTDOWN_GRACE = 10.0

# Event classes as module constants, for the type checks done per event.
_DataChunk = sm.DataChunk
_NEED_DATA = sm.NEED_DATA
_WAITING = (sm.DataComplete, sm.AuthAttempt, sm.StartTLS)  # decisions that run as a task
_ENDING = (sm.Quit, sm.ConnectionClosed)


def machine_config(ctx: Context, submission: bool) -> sm.ServerConfig:
    lim = ctx.config.limits
    return sm.ServerConfig(
        hostname=ctx.config.hostname,
        submission=submission,
        tls_available=ctx.tls is not None,
        max_message_size=lim.max_message_size,
        max_recipients=lim.max_recipients,
        max_errors=lim.max_errors,
    )


class SMTPSession(asyncio.BufferedProtocol):
    """One connection. Events are handled inline from the protocol callbacks; only the
    decisions that must wait (a login, the durable commit, the TLS handshake) run as
    a task, and input is held in the machine meanwhile. No task or timer per
    command: the cost per message stays in the tens of microseconds."""

    def __init__(
        self,
        ctx: Context,
        listener: str,
        *,
        implicit_tls: bool,
        registry: set[SMTPSession] | None = None,
        config: sm.ServerConfig | None = None,
    ) -> None:
        self.ctx = ctx
        self.registry = registry
        self.listener = listener
        self.submission = listener in ("submission", "submissions")
        self.implicit_tls = implicit_tls
        # The listener passes one config for all its sessions (nothing changes it).
        self.machine = sm.ServerConnection(config or machine_config(ctx, self.submission), tls_active=implicit_tls)
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        self._tls_pending: list[bytes] | None = None
        self._paused = False
        self._closed = False
        self._busy = False  # a decision task is running: the machine waits for it
        self.transport: asyncio.Transport | None = None
        self.peer_ip = "unknown"
        self.helo = ""
        self.esmtp = False
        self.tls: TLSInfo | None = None
        self.auth_user: str | None = None
        self.tx: Reception | None = None
        self._client_info: Client | None = None  # _client(), until HELO, TLS or AUTH change it
        self.in_data = False
        self.messages = 0
        self.task: asyncio.Task[None] | None = None
        self._counted = False
        self._last_activity = time.monotonic()
        self._data_deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.done: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ protocol side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self.peer_ip = peer_ip(transport.get_extra_info("peername"))
        # No TCP_NODELAY here: uvloop and asyncio set it on every TCP transport
        # (and get_extra_info("socket") builds a socket object per connection).
        if self.implicit_tls:
            self._note_tls(transport)
        ip = self.peer_ip
        lim = self.ctx.config.limits
        if self.ctx.shutting_down.is_set():
            self.machine.refuse(421, "4.3.2", "Service shutting down")
            self._close()
            return
        if self.ctx.total_connections >= lim.max_connections:
            self.machine.refuse(421, "4.7.0", "Error: too many connections")
            logger.info("reject: connect from [%s] on %s: too many connections", ip, self.listener)
            self._close()
            return
        if self.ctx.connections.of(ip) >= lim.max_connections_per_ip:
            self.machine.refuse(421, "4.7.0", f"Error: too many connections from {ip}")
            logger.info("reject: connect from [%s] on %s: too many connections from this address", ip, self.listener)
            self._close()
            return
        if not allow_connection(self.ctx, ip):
            self.machine.refuse(421, "4.7.0", f"Error: too many new connections from {ip}, slow down")
            logger.info("reject: connect from [%s] on %s: connection rate", ip, self.listener)
            self._close()
            return
        self.ctx.connections.add(ip)
        self._counted = True
        logger.info("connect from [%s] on %s%s", ip, self.listener, " (TLS)" if self.implicit_tls else "")
        self.machine.greet()
        self._flush()
        self._timer = loop.call_later(self.ctx.config.limits.command_timeout, self._check_timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self._view[:nbytes])
        if self._tls_pending is not None:
            # Decrypted bytes can arrive before start_tls() returns (FIELD-NOTES):
            # hold them until the machine knows TLS is on.
            self._tls_pending.append(data)
            return
        self.machine.receive_data(data)
        if self._busy:
            if self.machine.buffered_input > MAX_BUFFERED_INPUT and self.transport and not self._paused:
                self._paused = True
                self.transport.pause_reading()
            return
        self._drive()

    def eof_received(self) -> bool | None:
        if self._tls_pending is None:
            self.machine.receive_data(b"")
            if not self._busy:
                self._drive()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            if self.in_data and self.tx is not None:
                logger.info("%s: lost connection with [%s] during DATA", self.tx.queue_id, self.peer_ip)
            if self.task is not None and not self.task.done() and self._tls_pending is None:
                return  # the running decision finishes (a commit must not be cut short)
            self._close()

    # ------------------------------------------------------------ driving the machine
    def _send(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _flush(self) -> None:
        self._send(self.machine.data_to_send())

    def _drive(self) -> None:
        """Handle events until the machine needs input or a decision must wait."""
        m = self.machine
        try:
            while not self._closed:
                ev = m.next_event()
                if ev is _NEED_DATA:
                    self._flush()
                    if self._paused and self.transport is not None:
                        self._paused = False
                        self.transport.resume_reading()
                    if self.ctx.shutting_down.is_set() and not self.in_data:
                        self._send(format_reply(421, "4.3.2", f"{self.ctx.config.hostname} Service shutting down"))
                        self._close()
                    return
                self._last_activity = time.monotonic()
                if type(ev) is _DataChunk:
                    if self.tx is not None:
                        self.tx.feed(ev.data)
                elif isinstance(ev, _WAITING):
                    self._busy = True
                    self.task = asyncio.get_running_loop().create_task(self._decide(ev))
                    return
                elif isinstance(ev, _ENDING):
                    self._close()
                    return
                else:
                    self._handle_sync(ev)
                if m.closed:
                    self._close()
                    return
        except Exception:
            logger.exception("session with [%s] failed", self.peer_ip)
            self._send(format_reply(421, "4.3.0", f"{self.ctx.config.hostname} Error: internal error, closing"))
            self._close()

    async def _decide(self, ev: Any) -> None:
        try:
            if type(ev) is sm.DataComplete:
                await self._data_complete()
            else:
                await self._handle(ev)
        except Exception:
            logger.exception("session with [%s] failed", self.peer_ip)
            self._send(format_reply(421, "4.3.0", f"{self.ctx.config.hostname} Error: internal error, closing"))
            self._close()
            return
        finally:
            self._busy = False
        if self.transport is None or self.transport.is_closing():
            self._close()
            return
        self._drive()

    def _check_timeout(self) -> None:
        if self._closed:
            return
        lim = self.ctx.config.limits
        now = time.monotonic()
        limit = self._last_activity + lim.command_timeout
        if self.in_data:
            limit = min(limit, self._data_deadline)
        if self._busy:
            limit = max(limit, now + 1.0)  # our own decision is not the client's delay
        if now >= limit:
            self._send(format_reply(421, "4.4.2", f"{self.ctx.config.hostname} Error: timeout exceeded"))
            logger.info("timeout after %s from [%s]", "DATA" if self.in_data else "command", self.peer_ip)
            self._close()
            return
        self._timer = asyncio.get_running_loop().call_later(limit - now, self._check_timeout)

    def shutdown(self) -> None:
        """Server stopping: an idle session is told so now; one in DATA may finish."""
        if not self._closed and not self.in_data and not self._busy:
            self._send(format_reply(421, "4.3.2", f"{self.ctx.config.hostname} Service shutting down"))
            self._close()

    def abort(self) -> None:
        if not self._closed:
            self._send(format_reply(421, "4.3.2", f"{self.ctx.config.hostname} Service shutting down"))
            if self.task is not None and not self.task.done():
                self.task.cancel()
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._end_transaction("session ended")
        if self.registry is not None:
            self.registry.discard(self)
        if self._counted:
            ip = self.peer_ip
            self.ctx.connections.remove(ip)
            logger.info("disconnect from [%s] helo=%s messages=%d", ip, self.helo or "-", self.messages)
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self._flush()
            self.transport.close()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    # ------------------------------------------------------------ decisions
    def _handle_sync(self, ev: Any) -> None:
        m = self.machine
        if isinstance(ev, sm.Hello):
            self.helo, self.esmtp = ev.name, ev.extended
            self._client_info = None
        elif isinstance(ev, sm.MailFrom):
            self._end_transaction("new transaction")
            if self.auth_user is not None and not may_send_as(self.ctx, self.auth_user, ev.address):
                logger.info("[%s]: %s may not send as <%s>", self.peer_ip, self.auth_user, ev.address)
                m.reject(553, "5.7.1", f"<{ev.address}>: Sender address rejected: not owned by user {self.auth_user}")
                return
            self.tx = Reception(self.ctx, self._client(), ev.address, dict(ev.params), submission=self.submission)
            m.accept()
        elif isinstance(ev, sm.RcptTo):
            self._rcpt(ev)
        elif isinstance(ev, sm.DataStart):
            self._data_deadline = time.monotonic() + self.ctx.config.limits.data_timeout
            self._data_start()
        elif isinstance(ev, sm.DataAborted):
            self.in_data = False
            if self.tx is not None:
                logger.info("%s: message aborted from [%s]: %s", self.tx.queue_id, self.peer_ip, ev.reason)
                self._discard_blob()
        elif isinstance(ev, sm.Reset):
            self._end_transaction("reset")

    async def _handle(self, ev: Any) -> None:
        if isinstance(ev, sm.DataComplete):
            await self._data_complete()
        elif isinstance(ev, sm.AuthAttempt):
            await self._auth(ev)
        elif isinstance(ev, sm.StartTLS):
            await self._starttls()

    def _client(self) -> Client:
        # One Client per session state, shared by its transactions (nothing
        # changes a Client once made): HELO, TLS and AUTH make a new one.
        c = self._client_info
        if c is None:
            c = self._client_info = Client(self.listener, self.peer_ip, self.helo, self.esmtp, self.tls, self.auth_user)
        return c

    def _rcpt(self, ev: sm.RcptTo) -> None:
        assert self.tx is not None
        refusal = self.tx.add_recipient(ev.address, ev.params)
        if refusal is None:
            self.machine.accept()
        else:
            self.machine.reject(refusal.code, refusal.enhanced, refusal.text)

    def _data_start(self) -> None:
        if self.tx is None:
            return
        self.in_data = True
        self.tx.client = self._client()
        self.tx.start_data()

    async def _data_complete(self) -> None:
        tx = self.tx
        self.in_data = False
        if tx is None:
            self.machine.reject(451, "4.3.0", "Error: no transaction")
            return
        result = await tx.complete(self.ctx.message_hooks(self.listener))
        if isinstance(result, Refusal):
            self.machine.reject(result.code, result.enhanced, result.text)
        else:
            self.machine.message_accepted(result.queue_id)
            self.messages += 1
        self.tx = None

    async def _auth(self, ev: sm.AuthAttempt) -> None:
        m = self.machine
        if ev.authzid and ev.authzid.lower() != ev.username.lower():
            m.auth_failed()
            return
        result = await self.ctx.auth.attempt(ev.username, ev.password, ip=self.peer_ip, protocol="smtp")
        account = result.account
        if account is None:
            logger.info("[%s]: %s authentication failed for %r", self.peer_ip, ev.mechanism, ev.username[:100])
            m.auth_failed(temporary=result.locked)
            return
        self.auth_user = account.address
        self._client_info = None
        logger.info("[%s]: authenticated as %s (%s)", self.peer_ip, account.address, ev.mechanism)
        m.auth_succeeded()

    async def _starttls(self) -> None:
        self._flush()
        transport = self.transport
        if self.ctx.tls is None or transport is None:
            raise RuntimeError("STARTTLS without a TLS context")
        self._tls_pending = []
        loop = asyncio.get_running_loop()
        try:
            new_transport = await loop.start_tls(transport, self, self.ctx.tls, server_side=True)
        except (ssl.SSLError, OSError, ConnectionError) as e:
            logger.info("[%s]: TLS handshake failed: %s", self.peer_ip, e)
            self._tls_pending = None
            self._close()
            return
        if new_transport is None:
            self._tls_pending = None
            self._close()
            return
        self.transport = new_transport
        self._note_tls(new_transport)
        self.helo, self.esmtp = "", False
        self._client_info = None
        self.machine.tls_started()
        pending, self._tls_pending = self._tls_pending, None
        for chunk in pending or []:
            self.machine.receive_data(chunk)

    def _note_tls(self, transport: asyncio.BaseTransport) -> None:
        obj = transport.get_extra_info("ssl_object")
        if obj is not None:
            cipher = obj.cipher()
            self.tls = TLSInfo(obj.version() or "TLS", cipher[0] if cipher else "unknown")
        else:
            self.tls = TLSInfo("TLS", "unknown")

    # ------------------------------------------------------------ cleanup
    def _discard_blob(self) -> None:
        if self.tx is not None:
            self.tx.discard()

    def _end_transaction(self, why: str) -> None:
        self.in_data = False
        self._discard_blob()
        self.tx = None


class SMTPListener:
    def __init__(self, ctx: Context, name: str, host: str, port: int) -> None:
        self.ctx = ctx
        self.name = name
        self.host = host
        self.port = port
        self.server: asyncio.base_events.Server | None = None
        self.sessions: set[SMTPSession] = set()

    async def start(self) -> None:
        implicit = self.name == "submissions"
        if implicit and self.ctx.tls is None:
            raise RuntimeError("submissions needs TLS")

        config = machine_config(self.ctx, self.name in ("submission", "submissions"))

        def factory() -> SMTPSession:
            s = SMTPSession(self.ctx, self.name, implicit_tls=implicit, registry=self.sessions, config=config)
            self.sessions.add(s)
            return s

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            factory, **bind_args(self.host, self.port), ssl=self.ctx.tls if implicit else None, backlog=1024,
        )

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        for session in list(self.sessions):
            session.shutdown()

    async def drain(self, grace: float = SHUTDOWN_GRACE) -> None:
        waits = [s.done for s in self.sessions if s.done is not None and not s.done.done()]
        if waits:
            await asyncio.wait(waits, timeout=grace)
        tasks = [s.task for s in self.sessions if s.task is not None and not s.task.done()]
        for session in list(self.sessions):
            session.abort()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        self.sessions.clear()
