"""The asyncio side of IMAP: sockets, TLS (implicit and STARTTLS), COMPRESS.

A thin layer: bytes go to :class:`mailhouse.imap.session.IMAPSession`, which
does everything else. Per connection there is one protocol object and one
session; the read buffer is shared by all connections (each read is copied
out at once), so an idle connection costs a few kilobytes, not a 64 KB
buffer. No task exists while a connection waits, IDLE included.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import zlib
from typing import cast

from .. import log
from ..context import Context
from ..imap.session import IMAPSession
from . import is_loopback, peer_ip
from .listeners import bind_args

logger = log.get("imap")

READ_SIZE = 64 * 1024
MAX_BUFFERED_INPUT = 4 * 1024 * 1024  # while a command runs; literals are bounded by the parser
MAX_INFLATED = 64 * 1024 * 1024
NONAUTH_TIMEOUT = 60.0
AUTH_TIMEOUT = 30 * 60.0  # RFC 9051 §5.4: at least 30 minutes once logged in
SWEEP_INTERVAL = 15.0
SHUTDOWN_GRACE = 5.0

_BUFFER = bytearray(READ_SIZE)
_VIEW = memoryview(_BUFFER)


class IMAPConnection(asyncio.BufferedProtocol):
    """One client connection; also the session's :class:`SessionIO`."""

    __slots__ = (
        "_deflater",
        "_drain_waiter",
        "_inflater",
        "_read_paused",
        "_tls_pending",
        "_write_paused",
        "implicit_tls",
        "listener",
        "peer_ip",
        "session",
        "transport",
    )

    def __init__(self, listener: IMAPListener, implicit_tls: bool) -> None:
        self.listener = listener
        self.implicit_tls = implicit_tls
        self.transport: asyncio.Transport | None = None
        self.session: IMAPSession | None = None
        self.peer_ip = "unknown"
        self._tls_pending: list[bytes] | None = None
        self._write_paused = False
        self._read_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._deflater: zlib._Compress | None = None
        self._inflater: zlib._Decompress | None = None

    # -- protocol callbacks ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.peer_ip = peer_ip(transport.get_extra_info("peername"))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = self.listener.ctx
        loopback = is_loopback(self.peer_ip)
        if not loopback and self.listener.counts.of(self.peer_ip) >= ctx.config.limits.max_connections_per_ip:
            self.transport.write(b"* BYE Too many connections from your address\r\n")
            self.transport.close()
            return
        self.listener.add(self)
        session = IMAPSession(ctx, self, peer=self.peer_ip, tls_active=self.implicit_tls, secure_peer=loopback)
        self.session = session
        session.greeting()
        data = b"".join(session.out)
        session.out.clear()
        session.out_size = 0
        self.transport.write(data)
        if session.state == "logout":
            self.transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _VIEW

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(_VIEW[:nbytes])
        if self._tls_pending is not None:
            # Decrypted bytes can arrive before start_tls() returns (FIELD-NOTES).
            self._tls_pending.append(data)
            return
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        session = self.session
        if session is None or session.closed:
            return
        if self._inflater is not None:
            try:
                data = self._inflater.decompress(data, MAX_INFLATED)
            except zlib.error:
                self.close()
                return
            if self._inflater.unconsumed_tail:
                self.close()  # a decompression bomb
                return
        session.feed(data)
        if session.busy and session.parser.buffered > MAX_BUFFERED_INPUT and not self._read_paused:
            self._read_paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self.session is not None and not self.session.busy:
            self.session.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.remove(self)
        if self.session is not None:
            self.session.close()
        self._wake_drain()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- SessionIO -------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if self._deflater is not None:
            data = self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        t.write(data)

    async def drain(self) -> None:
        while self._write_paused:
            t = self.transport
            if t is None or t.is_closing():
                raise ConnectionResetError("connection closed")
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    async def start_tls(self) -> bool:
        ctx = self.listener.ctx
        transport = self.transport
        if ctx.tls is None or transport is None:
            return False
        self._tls_pending = []
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(transport, self, ctx.tls, server_side=True)
        except (ssl.SSLError, OSError, ConnectionError) as e:
            logger.info("[%s]: TLS handshake failed: %s", self.peer_ip, e)
            self._tls_pending = None
            return False
        if new is None:
            self._tls_pending = None
            return False
        self.transport = new
        pending, self._tls_pending = self._tls_pending, None
        if pending:
            loop.call_soon(self._replay, pending)
        return True

    def _replay(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._receive(chunk)

    def start_compression(self, pending: bytes) -> bytes:
        self._deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._inflater = zlib.decompressobj(-15)
        return self._inflater.decompress(pending, MAX_INFLATED) if pending else b""

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def resume(self) -> None:
        if self._read_paused:
            self._read_paused = False
            if self.transport is not None:
                self.transport.resume_reading()


class IMAPListener:
    def __init__(self, ctx: Context, name: str, host: str, port: int) -> None:
        self.ctx = ctx
        self.name = name
        self.host = host
        self.port = port
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[IMAPConnection] = set()
        self.counts = ctx.listener_counts(name)  # per client address
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        implicit = self.name == "imaps"
        if implicit and self.ctx.tls is None:
            raise RuntimeError("imaps needs TLS")
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: IMAPConnection(self, implicit), **bind_args(self.host, self.port),
            ssl=self.ctx.tls if implicit else None, backlog=1024,
        )
        self._sweeper = loop.create_task(self._sweep())

    def add(self, conn: IMAPConnection) -> None:
        self.connections.add(conn)
        self.counts.add(conn.peer_ip)

    def remove(self, conn: IMAPConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.counts.remove(conn.peer_ip)

    async def _sweep(self) -> None:
        """Autologout: one pass over every connection now and then, instead
        of a timer per connection."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for conn in list(self.connections):
                s = conn.session
                if s is None or s.busy:
                    continue
                limit = NONAUTH_TIMEOUT if s.state == "nonauth" else AUTH_TIMEOUT
                if now - s.last_activity > limit:
                    conn.write(b"* BYE Autologout: idle for too long\r\n")
                    s.close()

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            if conn.session is not None:
                conn.session.shutdown()

    async def drain(self, grace: float = SHUTDOWN_GRACE) -> None:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for conn in list(self.connections):
                if conn.session is not None:
                    conn.session.shutdown()
            if not self.connections:
                return
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
