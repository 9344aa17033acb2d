"""One mail transaction as the server receives it, whatever brought it in.

SMTP (MX and submission) and the webmail/API's "send" go through this same
path: recipient checks, trace fields, the cached parse, the durable commit,
the journey event, the log lines. The network layers only translate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .. import log
from ..context import Context
from ..ids import new_queue_id
from ..mime.structure import analyze
from ..smtp.grammar import normalize_line_endings
from ..store.base import BlobWriter, StoreError
from ..store.models import Delivered, Incoming, LocalTarget, RemoteTarget
from .assemble import Assembler
from .recipients import resolve
from .trace import TLSInfo, protocol_name, received_header, return_path_header

logger = log.get("smtpd")

ANALYZE_INLINE_MAX = 64 * 1024  # larger: parse in a thread so the loop keeps turning


@dataclass(frozen=True)
class Refusal:
    code: int
    enhanced: str
    text: str


@dataclass
class Client:
    """Who is talking to us: what the Received field and the journey say."""

    listener: str
    ip: str
    helo: str = ""
    esmtp: bool = True
    tls: TLSInfo | None = None
    auth_user: str | None = None


@dataclass
class Accepted:
    queue_id: str
    message_id: str | None
    delivered: list[Delivered]
    remote: list[RemoteTarget]
    size: int


# A hook that inspects a complete message before it is committed (SPF/DKIM/DMARC
# on the MX side, DKIM signing on submission); it may refuse it, add header
# fields in front, or file it elsewhere.
MessageHook = Callable[["Reception", memoryview], Awaitable[Refusal | None]]


@dataclass
class Reception:
    ctx: Context
    client: Client
    sender: str
    params: dict[str, str | None]
    submission: bool = False
    queue_id: str = field(default_factory=new_queue_id)
    local: list[LocalTarget] = field(default_factory=list)
    remote: list[RemoteTarget] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    blob: BlobWriter | None = None
    assembler: Assembler | None = None
    extra_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    junk: bool = False  # file into Junk instead of INBOX
    # Local recipients that asked for NOTIFY=SUCCESS: (address, ORCPT).
    notify_success: list[tuple[str, str | None]] = field(default_factory=list)

    # ------------------------------------------------------------------ envelope
    def add_recipient(self, address: str, params: dict[str, str | None]) -> Refusal | None:
        res = resolve(self.ctx.store, address, orcpt=params.get("ORCPT"), notify=params.get("NOTIFY"))
        if res.foreign and self.client.auth_user is None:
            logger.info("%s: reject RCPT from [%s]: <%s> relay access denied", self.queue_id, self.client.ip, address)
            return Refusal(554, "5.7.1", f"<{address}>: Relay access denied")
        if res.unknown:
            logger.info("%s: reject RCPT from [%s]: <%s> user unknown", self.queue_id, self.client.ip, address)
            return Refusal(550, "5.1.1", f"<{address}>: Recipient address rejected: User unknown in virtual mailbox table")
        for t in res.local:
            if all(x.account_id != t.account_id for x in self.local):
                self.local.append(t)
        for r in res.remote:
            if all(x.address.lower() != r.address.lower() for x in self.remote):
                self.remote.append(r)
        if res.local and "SUCCESS" in (params.get("NOTIFY") or "").upper() and self.sender:
            self.notify_success.append((address, params.get("ORCPT")))
        self.recipients.append(address)
        return None

    # ------------------------------------------------------------------ content
    def start_data(self) -> None:
        c = self.client
        proto = protocol_name(esmtp=c.esmtp, tls=c.tls is not None, authenticated=c.auth_user is not None)
        prefix = return_path_header(self.sender) if self.local else b""
        prefix += received_header(
            helo=c.helo, client_ip=c.ip, hostname=self.ctx.config.hostname, protocol=proto,
            queue_id=self.queue_id, tls=c.tls, auth_user=c.auth_user,
            recipient=self.recipients[0] if len(self.recipients) == 1 else None, when=time.time(),
        )
        self.blob = self.ctx.store.new_blob()
        self.assembler = Assembler(self.blob, prefix, submission=self.submission, hostname=self.ctx.config.hostname)

    def feed(self, data: bytes) -> None:
        if self.assembler is not None:
            self.assembler.feed(data)

    def discard(self) -> None:
        if self.blob is not None:
            self.blob.discard()
        self.blob = None
        self.assembler = None

    async def complete(self, hooks: list[MessageHook] | None = None) -> Accepted | Refusal:
        """Make the message durable; only then may the caller say 250."""
        if self.blob is None or self.assembler is None:
            return Refusal(451, "4.3.0", "Error: no transaction")
        self.assembler.finish()
        blob = self.blob
        for hook in hooks or []:
            refusal = await hook(self, blob.view())
            if refusal is not None:
                self.discard()
                return refusal
        try:
            if blob.size > ANALYZE_INLINE_MAX:
                parse = await asyncio.get_running_loop().run_in_executor(None, lambda: analyze(blob.view()))
            else:
                parse = analyze(blob.view())
        except Exception:
            logger.exception("%s: analysis failed", self.queue_id)
            parse = {}
        mid = parse.get("message_id")
        message_id = mid.strip().removeprefix("<").removesuffix(">") or None if isinstance(mid, str) else None
        c = self.client
        received = {
            "listener": c.listener,
            "client_ip": c.ip,
            "helo": c.helo,
            "tls": {"version": c.tls.version, "cipher": c.tls.cipher} if c.tls else None,
            "auth_user": c.auth_user,
            "sender": self.sender,
            "recipients": self.recipients,
            "size": blob.size,
            "server": self.ctx.config.hostname,
        }
        local = self.local
        if self.junk:
            local = [LocalTarget(t.account_id, t.address, t.recipient, "Junk") for t in local]
        p = self.params
        incoming = Incoming(
            queue_id=self.queue_id, sender=self.sender, local=local, remote=self.remote, parse=parse,
            message_id=message_id, internal_date=time.time(), events=[("received", received), *self.extra_events],
            ret=p.get("RET"), envid=p.get("ENVID"), body_type=p.get("BODY"), smtputf8="SMTPUTF8" in p,
            auth_user=c.auth_user,
        )
        try:
            delivered = await self.ctx.store.deliver(blob, incoming)
        except StoreError as e:
            logger.warning("%s: not stored: %s", self.queue_id, e)
            self.discard()
            return Refusal(451, "4.3.0", "Error: local delivery failed, try again later")
        except Exception:
            logger.exception("%s: not stored", self.queue_id)
            self.discard()
            return Refusal(451, "4.3.0", "Error: local delivery failed, try again later")
        self.blob = None  # committed: the store owns it now
        logger.info(
            "%s: from=<%s>, size=%d, nrcpt=%d, client=[%s], helo=%s, listener=%s%s%s, message-id=<%s>",
            self.queue_id, self.sender, blob.size, len(self.recipients), c.ip, c.helo or "-", c.listener,
            f", tls={c.tls.version}" if c.tls else "", f", sasl_username={c.auth_user}" if c.auth_user else "",
            message_id or "",
        )
        for d in delivered:
            logger.info("%s: to=<%s>, relay=local, folder=%s, uid=%d, status=delivered",
                        self.queue_id, d.address, d.folder, d.uid)
        if self.remote:
            logger.info("%s: queued for %s", self.queue_id, ", ".join(f"<{r.address}>" for r in self.remote))
            self.ctx.on_queued()
        if self.notify_success:
            await self._success_notice(blob, incoming)
        return Accepted(self.queue_id, message_id, delivered, list(self.remote), blob.size)

    async def _success_notice(self, blob: BlobWriter, incoming: Incoming) -> None:
        """RFC 3461 NOTIFY=SUCCESS for a local delivery: a "delivered" DSN to the sender."""
        from ..queue.dsn import RecipientStatus, build_dsn

        try:
            original = blob.head(256 * 1024)  # the header is what the notice quotes
            raw, mid = build_dsn(
                kind="delivered", hostname=self.ctx.config.hostname, queue_id=self.queue_id, sender=self.sender,
                envid=incoming.envid, arrival=incoming.internal_date,
                statuses=[RecipientStatus(a, o, "delivered", "2.0.0", None, "delivered to the mailbox")
                          for a, o in self.notify_success],
                original=original, ret_full=False, now=time.time(),
            )
            res = resolve(self.ctx.store, self.sender)
            notice = self.ctx.store.new_blob()
            notice.write((b"Return-Path: <>\r\n" if res.local else b"") + raw)
            await self.ctx.store.deliver(notice, Incoming(
                queue_id=new_queue_id(), sender="", local=res.local, remote=[] if res.local else res.remote,
                parse=analyze(raw), message_id=mid.strip("<>"), internal_date=time.time(),
                events=[("dsn", {"kind": "delivered", "about": self.queue_id, "to": self.sender})],
            ))
            if res.remote and not res.local:
                self.ctx.on_queued()
        except Exception:
            logger.exception("%s: success notice failed", self.queue_id)


async def submit_message(
    ctx: Context,
    client: Client,
    sender: str,
    recipients: list[str],
    raw: bytes,
    hooks: list[MessageHook] | None = None,
) -> Accepted | Refusal:
    """A whole message handed over at once (webmail, API): the SMTP path, unchanged."""
    rec = Reception(ctx, client, sender, {}, submission=True)
    for r in recipients:
        refusal = rec.add_recipient(r, {})
        if refusal is not None:
            return refusal
    if not rec.recipients:
        return Refusal(554, "5.5.1", "No valid recipients")
    rec.start_data()
    rec.feed(normalize_line_endings(raw))
    return await rec.complete(hooks)
