"""The trust layer on the reception path.

`install(ctx, resolver)` puts the checks in front of every commit:
- `smtp` (MX): SPF on MAIL FROM and HELO, DKIM on every signature, ARC, DMARC;
  one Authentication-Results field, forged ones removed; p=reject refused,
  p=quarantine to Junk, DNS failures deferred (451 4.4.3); greylisting if on.
- `submission`, `submissions`, `http`, `https`: the envelope sender and header
  From must be the user's own (553 5.7.1), sending limits (451 4.7.1), then
  DKIM signatures for the From domain when it is local.
`may_send_as(ctx, user, address)` is the same ownership rule for the SMTP MAIL
command, and `allow_connection(ctx, ip)` the per-address connection rate.
"""

from __future__ import annotations

import asyncio
import email.utils
import fnmatch
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .. import log
from ..context import Context
from ..delivery.reception import Reception, Refusal
from ..delivery.recipients import resolve
from ..delivery.trace import protocol_name
from ..dns.resolver import Resolver
from . import arc as arc_mod
from . import dkim as dkim_mod
from . import dmarc as dmarc_mod
from .authresults import Result, claiming
from .authresults import header as ar_header
from .dnsq import DNSTempFail, LookupDNS, TrustDNS
from .keys import KeyRing
from .limits import ConnectionRate, Greylist, SendLimits
from .settings import TrustSettings
from .spf import SPFChecker, SPFResult, valid_domain

logger = log.get("trust")

SUBMISSION_LISTENERS = ("submission", "submissions", "http", "https")
_CTX_ATTR = "_mailhouse_trust"


@dataclass
class Verdict:
    """Everything the inbound checks found out about one message."""

    spf: SPFResult | None = None
    helo: SPFResult | None = None
    dkim: list[dkim_mod.DKIMResult] = field(default_factory=list)
    arc: arc_mod.ARCResult | None = None
    dmarc: list[dmarc_mod.DMARCResult] = field(default_factory=list)
    from_domains: list[str] = field(default_factory=list)
    action: str = "accept"  # accept, junk, reject, defer
    why: str = ""

    def event(self) -> dict[str, Any]:
        d: dict[str, Any] = {"action": self.action}
        if self.spf is not None:
            d["spf"] = self.spf.result
            d["spf_domain"] = self.spf.domain
        if self.helo is not None:
            d["spf_helo"] = self.helo.result
        d["dkim"] = [r.as_dict() for r in self.dkim] or "none"
        d["dmarc"] = self.dmarc[0].result if len(self.dmarc) == 1 else [r.as_dict() for r in self.dmarc] or "none"
        if self.dmarc:
            d["dmarc_policy"] = self.dmarc[0].policy
            d["dmarc_disposition"] = self.dmarc[0].disposition
        d["arc"] = self.arc.result if self.arc else "none"
        if self.why:
            d["why"] = self.why
        return d


_LOOSE_ADDRESS = re.compile(r"[^\s<>\"',;:()\[\]]+@[A-Za-z0-9.\-]+[A-Za-z0-9]")


def from_addresses(fields: list[dkim_mod.Field]) -> list[str]:
    """Every address of every From field (RFC 5322 §3.6.2), lower-cased. A field the
    parser cannot read still yields what looks like addresses in it: a forger must
    not escape the checks by writing a From that only mail readers understand."""
    out: list[str] = []
    for f in fields:
        if f.name != "from":
            continue
        value = f.value.decode("utf-8", "replace").replace("\r\n", "")
        found = [a.strip().lower() for _n, a in email.utils.getaddresses([value]) if a and "@" in a]
        out += found or [a.lower() for a in _LOOSE_ADDRESS.findall(value)]
    return out


class Trust:
    """The checks and the state they share (keys, counters), one per server."""

    def __init__(self, ctx: Context, dns: LookupDNS, settings: TrustSettings | None = None) -> None:
        self.ctx = ctx
        self.dns = dns
        s = self.settings = settings or ctx.config.trust
        self.authserv_id = s.authserv_id or ctx.config.hostname
        self.spf = SPFChecker(dns, receiver=ctx.config.hostname)
        self.keys = KeyRing(ctx.store, rsa_bits=s.dkim_rsa_bits)
        self.limits = SendLimits(s.rate_limits, s.user_limits)
        # Worker processes count against the main process's limits (set by
        # mailhouse.workers.worker): one count per user for the whole server.
        self.count_sending: Callable[[str, int], Awaitable[str | None]] | None = None
        self.greylist = Greylist(s.greylist_delay, s.greylist_expire, s.greylist_pass)
        # Worker processes check the main process's triplets (set by
        # mailhouse.workers.worker): a retry may reach another worker.
        self.greylist_wait: Callable[[str, str, list[str]], Awaitable[float]] = self._greylist_here
        self.connections = ConnectionRate(s.connections_per_minute)
        self.connection_exempt = s.connection_exempt + s.trusted_networks
        # Per client address, whether it is in trusted_networks / exempt from the
        # connection rate: parsing the address and walking the networks cost more
        # than the rest of a trusted client's checks, on every message.
        self._trusted_ips: dict[str, bool] = {}
        self._exempt_ips: dict[str, bool] = {}

    async def _greylist_here(self, ip: str, sender: str, recipients: list[str]) -> float:
        # Every recipient is checked (and so remembered), not only up to the first wait.
        return max([self.greylist.check(ip, sender, r) for r in recipients], default=0.0)

    # ------------------------------------------------------------------ ownership
    def may_send_as(self, user: str, address: str) -> bool:
        """The user's own address (with any +tag), an address that delivers to the
        user (their aliases, a catch-all they receive), or one the configuration
        grants them (`[trust] send_as`)."""
        address = address.strip().lower()
        user = user.strip().lower()
        if not address or address == user:
            return True
        local, _, domain = address.rpartition("@")
        if f"{local.split('+', 1)[0]}@{domain}" == user:
            return True
        store = self.ctx.store
        account = store.find_account(user)
        if account is not None and store.is_local_domain(domain):
            res = resolve(store, address)
            if any(t.account_id == account.id for t in res.local):
                return True
        patterns = self.settings.send_as.get(user, []) + self.settings.send_as.get("*", [])
        return any(fnmatch.fnmatchcase(address, p) for p in patterns)

    # ------------------------------------------------------------------ submission
    async def outbound(self, rec: Reception, view: memoryview) -> Refusal | None:
        try:
            return await self._outbound(rec, view)
        except Exception:
            # A bug or a store failure must not pass a message unchecked or unsigned.
            logger.exception("%s: submission checks failed", rec.queue_id)
            return Refusal(451, "4.3.0", "Temporary failure while checking the message, try again later")

    async def _outbound(self, rec: Reception, view: memoryview) -> Refusal | None:
        user = rec.client.auth_user
        blob = rec.blob
        if user is None or blob is None:
            return None
        data = bytes(view)
        view.release()  # the blob cannot grow or shrink while a view is held
        hend = dkim_mod.header_end(data)
        fields = dkim_mod.parse_fields(data[:hend])
        if rec.sender and not self.may_send_as(user, rec.sender):
            logger.info("%s: refused: %s may not send as <%s>", rec.queue_id, user, rec.sender)
            return Refusal(553, "5.7.1", f"<{rec.sender}>: Sender address rejected: not owned by user {user}")
        for addr in from_addresses(fields):
            if not self.may_send_as(user, addr):
                logger.info("%s: refused: %s may not write From: <%s>", rec.queue_id, user, addr)
                return Refusal(553, "5.7.1", f"From: <{addr}>: address not owned by user {user}")
        n = len(rec.recipients)
        if self.count_sending is not None and self.limits.limits_for(user).any():
            reason = await self.count_sending(user, n)
        else:
            reason = self.limits.check(user, n)
        if reason is not None:
            logger.info("%s: deferred: %s: %s", rec.queue_id, user, reason)
            return Refusal(451, "4.7.1", f"{reason}; try again later")
        s = self.settings
        if s.received_privacy:
            data = self._private_received(rec, data, fields)
            hend = dkim_mod.header_end(data)
            fields = dkim_mod.parse_fields(data[:hend])
        if s.dkim_sign:
            domain = self._signing_domain(rec, fields)
            if domain is not None:
                t0 = time.perf_counter()
                keys = await self.keys.keys(domain, ed25519=s.dkim_ed25519)
                sig = dkim_mod.sign(data, keys, now=int(time.time()))
                at = _after_return_path(fields)
                blob.splice(at, at, sig)
                rec.extra_events.append(("dkim_signed", {
                    "d": domain, "s": [k.selector for k in keys], "a": [k.algorithm for k in keys],
                    "ms": round((time.perf_counter() - t0) * 1000, 2),
                }))
        return None

    def _signing_domain(self, rec: Reception, fields: list[dkim_mod.Field]) -> str | None:
        """The From domain when it is local (DMARC alignment), else the sender's."""
        store = self.ctx.store
        for addr in from_addresses(fields)[:1] + ([rec.sender.lower()] if rec.sender else []):
            domain = addr.rpartition("@")[2].rstrip(".")
            if domain and store.is_local_domain(domain):
                return domain
        return None

    async def signature_for(self, raw: bytes) -> bytes:
        """DKIM-Signature fields for a message we write ourselves (a DSN from
        MAILER-DAEMON@hostname): signed for the nearest local domain at or above
        the From domain, so DMARC's relaxed alignment holds; b"" when there is none."""
        if not self.settings.dkim_sign:
            return b""
        fields = dkim_mod.parse_fields(raw[: dkim_mod.header_end(raw)])
        addrs = from_addresses(fields)
        if not addrs:
            return b""
        labels = addrs[0].rpartition("@")[2].rstrip(".").split(".")
        for i in range(len(labels) - 1):
            domain = ".".join(labels[i:])
            if self.ctx.store.is_local_domain(domain):
                keys = await self.keys.keys(domain, ed25519=self.settings.dkim_ed25519)
                return dkim_mod.sign(raw, keys, now=int(time.time()))
        return b""

    def _private_received(self, rec: Reception, data: bytes, fields: list[dkim_mod.Field]) -> bytes:
        """Our Received field without the client's address, HELO name or login."""
        ours = next((f for f in fields if f.name == "received"), None)
        blob = rec.blob
        if ours is None or blob is None:
            return data
        c = rec.client
        proto = protocol_name(esmtp=c.esmtp, tls=c.tls is not None, authenticated=c.auth_user is not None)
        date = ours.raw.rstrip(b"\r\n").rpartition(b";")[2].strip().decode("ascii", "replace")
        new = f"Received: by {self.ctx.config.hostname} (mailhouse) with {proto} id {rec.queue_id}; {date}\r\n"
        blob.splice(ours.start, ours.end, new.encode())
        return data[:ours.start] + new.encode() + data[ours.end:]

    # ------------------------------------------------------------------ MX
    def _trusted(self, ip: str) -> bool:
        known = self._trusted_ips.get(ip)
        if known is None:
            known = _in_networks(ip, self.settings.trusted_networks)
            _remember(self._trusted_ips, ip, known)
        return known

    def allow_connection(self, ip: str) -> bool:
        """The connection rate, for addresses not exempt from it."""
        exempt = self._exempt_ips.get(ip)
        if exempt is None:
            exempt = _in_networks(ip, self.connection_exempt)
            _remember(self._exempt_ips, ip, exempt)
        return exempt or self.connections.allow(ip)

    async def inbound(self, rec: Reception, view: memoryview) -> Refusal | None:
        try:
            return await self._inbound(rec, view)
        except Exception:
            logger.exception("%s: sender checks failed", rec.queue_id)
            return Refusal(451, "4.3.0", "Temporary failure while checking the message, try again later")

    async def _inbound(self, rec: Reception, view: memoryview) -> Refusal | None:
        blob = rec.blob
        if blob is None:
            return None
        data = bytes(view)
        view.release()  # the blob cannot grow or shrink while a view is held
        prefix = len(rec.assembler.prefix) if rec.assembler is not None else 0
        hend = dkim_mod.header_end(data)
        s = self.settings
        c = rec.client
        check = s.inbound_checks and c.auth_user is None and not self._trusted(c.ip)
        if not check and b"authentication-results" not in data[prefix:hend].lower():
            # No checks to run (trusted or authenticated client) and no field that
            # could claim our authserv-id: the field parse below would find nothing.
            return None
        fields = dkim_mod.parse_fields(data[:hend])
        # Fields claiming our authserv-id came from outside: a reader must not take
        # them for our verdict (RFC 8601 §5).
        forged = [f for f in claiming(fields, self.authserv_id) if f.start >= prefix]
        verdict: Verdict | None = None
        if check:
            if s.greylisting:
                wait = await self.greylist_wait(c.ip, rec.sender, rec.recipients)
                if wait > 0:
                    logger.info("%s: greylisted [%s] <%s>", rec.queue_id, c.ip, rec.sender)
                    return Refusal(451, "4.7.1", f"Greylisted, please try again in {int(wait) + 1} seconds")
            message = data[prefix:]
            mfields = [f for f in fields if f.start >= prefix]
            verdict = await self.evaluate(c.ip, c.helo, rec.sender, message, mfields)
            refusal = self._decide(verdict)
            if refusal is not None:
                logger.info("%s: %s from [%s] <%s>: %s", rec.queue_id,
                            "deferred" if refusal.code < 500 else "refused", c.ip, rec.sender, verdict.event())
                return refusal
            if verdict.action == "junk":
                rec.junk = True
        for f in sorted(forged, key=lambda f: f.start, reverse=True):
            blob.splice(f.start, f.end, b"")
        if forged:
            logger.info("%s: removed %d Authentication-Results claiming %s", rec.queue_id, len(forged), self.authserv_id)
        if verdict is not None:
            at = _after_return_path(fields)
            blob.splice(at, at, ar_header(self.authserv_id, self._results(rec, verdict)))
            event = verdict.event()
            if forged:
                event["forged_removed"] = len(forged)
            rec.extra_events.append(("checks", event))
            logger.info("%s: checks: %s", rec.queue_id, event)
        return None

    async def evaluate(
        self, ip: str, helo: str, sender: str, message: bytes, fields: list[dkim_mod.Field]
    ) -> Verdict:
        """SPF, DKIM, ARC and DMARC for one message, the DNS questions in parallel."""
        v = Verdict()
        v.from_domains = sorted({a.rpartition("@")[2].rstrip(".") for a in from_addresses(fields)})

        async def records() -> list[dmarc_mod.DMARCRecord | DNSTempFail | None]:
            out: list[dmarc_mod.DMARCRecord | DNSTempFail | None] = []
            for d in v.from_domains:
                try:
                    out.append(await dmarc_mod.find_record(self.dns, d))
                except DNSTempFail as e:
                    out.append(e)
            return out

        async def helo_check() -> SPFResult | None:
            # For the null sender the MAIL FROM check already is the HELO check.
            if not sender or not valid_domain(helo):
                return None
            return await self.spf.check_helo(ip, helo)

        v.spf, v.helo, v.dkim, v.arc, recs = await asyncio.gather(
            self.spf.check(ip, sender, helo), helo_check(), dkim_mod.verify(message, self.dns),
            arc_mod.verify(message, self.dns), records(),
        )
        for d, rec in zip(v.from_domains, recs, strict=True):
            if isinstance(rec, DNSTempFail):
                v.dmarc.append(dmarc_mod.DMARCResult("temperror", d, reason=f"DNS failure: {rec}"))
            else:
                v.dmarc.append(dmarc_mod.evaluate(d, rec, v.spf, v.dkim))
        return v

    def _decide(self, v: Verdict) -> Refusal | None:
        s = self.settings
        dmarc_pass = any(d.result == "pass" for d in v.dmarc)
        temp = []
        if v.spf is not None and v.spf.result == "temperror":
            temp.append(f"SPF: {v.spf.reason}")
        temp += [f"DKIM {r.domain}: {r.reason}" for r in v.dkim if r.result == "temperror"]
        temp += [f"DMARC {d.domain}: {d.reason}" for d in v.dmarc if d.result == "temperror"]
        if temp and not dmarc_pass:
            # Not knowing is not passing: the sender retries once DNS answers again.
            v.action, v.why = "defer", "; ".join(temp)
            return Refusal(451, "4.4.3", f"Temporary DNS failure while checking the sender: {v.why[:200]}")
        if s.dmarc_enforce:
            worst = max((d for d in v.dmarc if d.result == "fail"),
                        key=lambda d: dmarc_mod.POLICIES.index(d.disposition), default=None)
            if worst is not None and worst.disposition == "reject":
                v.action = "reject"
                v.why = f"{worst.domain} DMARC policy (p={worst.policy})"
                return Refusal(550, "5.7.1", f"Message rejected: it fails the DMARC policy of {worst.domain} "
                               f"(SPF {v.spf.result if v.spf else 'none'}, no aligned DKIM signature)")
            if worst is not None and worst.disposition == "quarantine":
                v.action, v.why = "junk", f"{worst.domain} DMARC policy (p={worst.policy})"
                return None
        if v.spf is not None and v.spf.result == "fail" and not dmarc_pass:
            if s.spf_fail == "reject":
                v.action, v.why = "reject", "SPF fail"
                return Refusal(550, "5.7.1", f"SPF: {v.spf.explanation or 'sender not permitted'}"[:300])
            if s.spf_fail == "junk":
                v.action, v.why = "junk", "SPF fail"
        return None

    def _results(self, rec: Reception, v: Verdict) -> list[Result]:
        ip = rec.client.ip
        out: list[Result] = []
        if v.spf is not None:
            spf = v.spf
            prop = ("smtp.mailfrom", spf.sender if spf.identity == "mailfrom" else spf.domain)
            if spf.identity == "helo":
                prop = ("smtp.helo", spf.domain)
            out.append(Result("spf", spf.result, f"{self.authserv_id}: {spf.comment(ip)}", [prop]))
        if v.helo is not None and v.helo.result != "none":
            out.append(Result("spf", v.helo.result, f"{self.authserv_id}: {v.helo.comment(ip)}",
                              [("smtp.helo", v.helo.domain)]))
        if not v.dkim:
            out.append(Result("dkim", "none", "no signature"))
        for d in v.dkim:
            props = [("header.d", d.domain), ("header.s", d.selector)]
            if d.algorithm:
                props.append(("header.a", d.algorithm))
            if d.b:
                props.append(("header.b", d.b))
            out.append(Result("dkim", d.result, d.reason if d.result != "pass" else "", props))
        if not v.dmarc:
            out.append(Result("dmarc", "none", "no From domain"))
        for m in v.dmarc:
            out.append(Result("dmarc", m.result, m.comment(), [("header.from", m.domain)]))
        if v.arc is not None:
            note = f"i={v.arc.instances}" if v.arc.instances else ""
            if v.arc.result not in ("pass", "none") and v.arc.reason:
                note = f"{note} {v.arc.reason}".strip()
            out.append(Result("arc", v.arc.result, note))
        return out


_MAX_REMEMBERED = 4096


def _in_networks(ip: str, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    if not nets:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in n for n in nets)


def _remember(cache: dict[str, bool], ip: str, value: bool) -> None:
    if len(cache) >= _MAX_REMEMBERED:
        cache.clear()  # many addresses: start over rather than grow without bound
    cache[ip] = value


def _after_return_path(fields: list[dkim_mod.Field]) -> int:
    """Where our new fields go: after our Return-Path, if there is one."""
    if fields and fields[0].name == "return-path" and fields[0].start == 0:
        return fields[0].end
    return 0


# ------------------------------------------------------------------ entry points
def install(
    ctx: Context,
    resolver: Resolver | None = None,
    settings: TrustSettings | None = None,
    *,
    dns: LookupDNS | None = None,
) -> Trust:
    """Add the trust hooks to `ctx.hooks` and set up the login lockout; called once by serve."""
    if dns is None:
        dns = TrustDNS.from_resolver(resolver) if resolver is not None else TrustDNS.from_config(ctx.config.nameservers)
    trust = Trust(ctx, dns, settings)
    ctx.hooks.setdefault("smtp", []).append(trust.inbound)
    for name in SUBMISSION_LISTENERS:
        ctx.hooks.setdefault(name, []).append(trust.outbound)
    ctx.auth.configure_lockout(trust.settings.lockout)
    setattr(ctx, _CTX_ATTR, trust)
    return trust


def trust_of(ctx: Context) -> Trust:
    """The server's Trust; one without hooks when install() was not called (CLI, tests)."""
    t = getattr(ctx, _CTX_ATTR, None)
    if isinstance(t, Trust):
        return t
    t = Trust(ctx, TrustDNS.from_config(ctx.config.nameservers))
    setattr(ctx, _CTX_ATTR, t)
    return t


def may_send_as(ctx: Context, auth_user: str, address: str) -> bool:
    """For the SMTP MAIL command of an authenticated session: False → 553 5.7.1."""
    return trust_of(ctx).may_send_as(auth_user, address)


def allow_connection(ctx: Context, ip: str) -> bool:
    """For every listener's accept: False → refuse (SMTP 421 4.7.0) and close."""
    return trust_of(ctx).allow_connection(ip)
