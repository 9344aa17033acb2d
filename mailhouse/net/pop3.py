"""The asyncio side of POP3: streams, STLS, and the maildrop from the store (INBOX)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from .. import log
from ..context import Context
from ..pop3 import machine as pm
from ..store.models import Folder
from . import is_loopback, peer_ip
from .listeners import bind_args

logger = log.get("pop3")

IDLE_TIMEOUT = 600.0  # RFC 1939 §3: an autologout timer of at least 10 minutes


class POP3Listener:
    def __init__(self, ctx: Context, name: str, host: str, port: int) -> None:
        self.ctx = ctx
        self.name = name
        self.host = host
        self.port = port
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        implicit = self.name == "pop3s"
        self.server = await asyncio.start_server(
            self._session, **bind_args(self.host, self.port), ssl=self.ctx.tls if implicit else None, backlog=256,
        )

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def drain(self, grace: float = 5.0) -> None:
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        ip = peer_ip(writer.get_extra_info("peername"))
        try:
            await POP3Session(self.ctx, self.name, reader, writer, ip).run()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("session with [%s] failed", ip)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self.tasks.discard(task)


class POP3Session:
    def __init__(
        self, ctx: Context, listener: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ip: str
    ) -> None:
        self.ctx = ctx
        self.reader = reader
        self.writer = writer
        self.ip = ip
        implicit = listener == "pop3s"
        # Loopback counts as secured, as in Dovecot: a tool on the same host may log in.
        self.m = pm.POP3Connection(
            ctx.config.hostname, tls_active=implicit, tls_available=ctx.tls is not None,
            plaintext_ok=is_loopback(ip) or ctx.config.allow_plaintext_auth,
        )
        self.account_id: int | None = None
        self.folder: Folder | None = None
        self.address = ""

    async def flush(self) -> None:
        data = self.m.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def run(self) -> None:
        m = self.m
        logger.info("connect from [%s]", self.ip)
        m.greet()
        while True:
            ev = m.next_event()
            if ev is pm.NEED_DATA:
                await self.flush()
                if self.ctx.shutting_down.is_set():
                    self.writer.write(b"-ERR [SYS/TEMP] server shutting down\r\n")
                    return
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT):
                        data = await self.reader.read(65536)
                except TimeoutError:
                    self.writer.write(b"-ERR autologout: idle for too long\r\n")
                    return
                m.receive_data(data)
                continue
            if isinstance(ev, pm.Closed) or ev is pm.PAUSED:
                await self.flush()
                return
            if isinstance(ev, pm.Login):
                await self._login(ev)
            elif isinstance(ev, pm.Retrieve):
                await self._retrieve(ev)
            elif isinstance(ev, pm.Update):
                await self._update(ev)
                await self.flush()
                return
            elif isinstance(ev, pm.StartTLS):
                await self.flush()
                assert self.ctx.tls is not None
                try:
                    await self.writer.start_tls(self.ctx.tls)
                except (ssl.SSLError, OSError) as e:
                    logger.info("[%s]: TLS handshake failed: %s", self.ip, e)
                    return
                m.tls_started()
            if m.closed:
                await self.flush()
                return

    async def _login(self, ev: pm.Login) -> None:
        result = await self.ctx.auth.attempt(ev.username, ev.password, ip=self.ip, protocol="pop3")
        account = result.account
        if account is None:
            logger.info("[%s]: login failed for %r", self.ip, ev.username[:100])
            self.m.login_failed(temporary=result.locked)
            return
        folder = await self.ctx.store.get_folder(account.id, "INBOX")
        if folder is None:
            self.m.login_failed(temporary=True)
            return
        states = await self.ctx.store.folder_states(folder.id)
        self.account_id, self.folder, self.address = account.id, folder, account.address
        # UIDL is "UIDVALIDITY.UID": stable across sessions and the same message IMAP sees.
        self.m.login_ok([pm.Drop(s.uid, s.size, f"{folder.uidvalidity}.{s.uid}") for s in states])
        logger.info("[%s]: %s logged in, %d messages", self.ip, account.address, len(states))

    async def _retrieve(self, ev: pm.Retrieve) -> None:
        assert self.folder is not None
        found = await self.ctx.store.get_messages(self.folder.id, [ev.uid])
        if not found:
            self.m.message_unavailable()
            return
        raw = await self.ctx.store.read_blob(found[0].blob_id)
        self.m.send_message(raw, ev.lines)
        if ev.lines is None and "\\Seen" not in found[0].flags:
            await self.ctx.store.store_flags(self.folder.id, [ev.uid], "add", {"\\Seen"})
            if found[0].queue_id:  # the journey's last step: the recipient's agent read it
                await self.ctx.store.add_event(
                    found[0].queue_id, "read", {"account": self.address, "protocol": "POP3"}, found[0].message_id
                )

    async def _update(self, ev: pm.Update) -> None:
        assert self.folder is not None
        ok = True
        if ev.uids:
            try:
                await self.ctx.store.store_flags(self.folder.id, ev.uids, "add", {"\\Deleted"})
                await self.ctx.store.expunge(self.folder.id, ev.uids)
            except Exception:
                logger.exception("[%s]: deleting %d messages failed", self.ip, len(ev.uids))
                ok = False
        self.m.updated(ok)
