"""Counters that hold abuse off: sending limits, the login lockout, connection
rates, greylisting. In memory, per process: one mailhouse process serves every
protocol, so one Lockout sees SMTP, IMAP, POP3 and HTTP logins together. With
worker processes, the main process keeps the lockout, the sending limits and
greylisting's triplets (mailhouse.workers.link), and the connection rate is in shared memory
(mailhouse.net.counts.SharedConnectionRate). Plain data structures only, so `mailhouse.auth` can use
them without cycles; GreylistKeeper alone touches the store (its interface only).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .. import log
from ..store.base import Store, StoreError
from ..store.models import GreyTriplet
from .settings import LockoutPolicy, RateLimits

logger = log.get("greylist")

HOUR = 3600.0
DAY = 86400.0
_MAX_TRACKED = 100_000  # bounds memory under an address-spraying attack


# ------------------------------------------------------------------ sending limits
@dataclass
class _Usage:
    events: deque[tuple[float, int]] = field(default_factory=deque)  # (time, recipients)


class SendLimits:
    """Messages and recipients per authenticated user, per hour and per day
    (sliding windows)."""

    def __init__(self, default: RateLimits, per_user: dict[str, RateLimits] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.default = default
        self.per_user = per_user or {}
        self.clock = clock
        self._usage: dict[str, _Usage] = {}

    def limits_for(self, user: str) -> RateLimits:
        return self.per_user.get(user.lower(), self.default)

    def check(self, user: str, recipients: int) -> str | None:
        """Count one message to `recipients` recipients; a reason when over a limit
        (then nothing is counted)."""
        lim = self.limits_for(user)
        if not lim.any():
            return None
        now = self.clock()
        u = self._usage.setdefault(user.lower(), _Usage())
        while u.events and u.events[0][0] <= now - DAY:
            u.events.popleft()
        day_msgs = len(u.events)
        day_rcpts = sum(n for _, n in u.events)
        hour = [n for t, n in u.events if t > now - HOUR]
        checks = (
            (lim.messages_per_hour, len(hour) + 1, "messages per hour"),
            (lim.messages_per_day, day_msgs + 1, "messages per day"),
            (lim.recipients_per_hour, sum(hour) + recipients, "recipients per hour"),
            (lim.recipients_per_day, day_rcpts + recipients, "recipients per day"),
        )
        for limit, would_be, what in checks:
            if limit and would_be > limit:
                return f"sending limit reached: {limit} {what}"
        u.events.append((now, recipients))
        return None


# ------------------------------------------------------------------ login lockout
@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    strikes: int = 0  # lockouts so far: each one lasts twice the last
    last_strike: float = 0.0


@dataclass(frozen=True)
class LockState:
    locked: bool
    retry_after: float = 0.0  # seconds
    why: str = ""


class Lockout:
    """Failed logins counted per client address and per account, all protocols
    together. An address with too many failures gets no attempt checked for a
    cool-down that doubles on each repeat; an account under a spread-out attack
    accepts only addresses that have logged into it before."""

    def __init__(self, policy: LockoutPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or LockoutPolicy()
        self.clock = clock
        self._by_ip: dict[str, _Failures] = {}
        self._by_account: dict[str, _Failures] = {}
        self._known: dict[str, set[str]] = {}  # account -> addresses it succeeded from

    @staticmethod
    @functools.lru_cache(maxsize=4096)  # parsing an address is ~17% of a login check
    def _key(ip: str) -> str:
        # IPv6 clients get whole /64s from one provider: count them as one address.
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return ip
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
            return str(ipaddress.IPv6Network(f"{addr}/64", strict=False))
        return str(addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped else addr)

    def _prune(self, f: _Failures, now: float) -> None:
        while f.times and f.times[0] <= now - self.policy.window:
            f.times.popleft()

    def check(self, ip: str | None, account: str | None = None) -> LockState:
        """Before checking a password: may this attempt be checked at all?"""
        now = self.clock()
        p = self.policy
        if ip is not None and p.failures:
            f = self._by_ip.get(self._key(ip))
            if f is not None and f.locked_until > now:
                return LockState(True, f.locked_until - now, f"too many failed logins from {ip}")
        if account is not None and p.account_failures:
            acct = account.lower()
            a = self._by_account.get(acct)
            if a is not None and a.locked_until > now and (ip is None or self._key(ip) not in self._known.get(acct, ())):
                return LockState(True, a.locked_until - now, f"too many failed logins for {account}")
        return LockState(False)

    def failed(self, ip: str | None, account: str | None = None) -> LockState:
        now = self.clock()
        p = self.policy
        state = LockState(False)
        if ip is not None and p.failures:
            key = self._key(ip)
            if key not in self._by_ip and len(self._by_ip) >= _MAX_TRACKED:
                self._sweep(self._by_ip, now)
            f = self._by_ip.setdefault(key, _Failures())
            if self._count(f, now, p.failures):
                state = LockState(True, f.locked_until - now, f"too many failed logins from {ip}")
        if account is not None and p.account_failures:
            acct = account.lower()
            if acct not in self._by_account and len(self._by_account) >= _MAX_TRACKED:
                self._sweep(self._by_account, now)
            a = self._by_account.setdefault(acct, _Failures())
            self._count(a, now, p.account_failures)
        return state

    def _count(self, f: _Failures, now: float, threshold: int) -> bool:
        """One more failure; True when it starts a lockout."""
        self._prune(f, now)
        f.times.append(now)
        if len(f.times) < threshold or f.locked_until > now:
            return False
        p = self.policy
        if now - f.last_strike > p.max_cooldown + p.window:
            f.strikes = 0  # a long good spell forgets earlier lockouts
        f.locked_until = now + min(p.cooldown * (2 ** f.strikes), p.max_cooldown)
        f.strikes += 1
        f.last_strike = now
        f.times.clear()
        return True

    def succeeded(self, ip: str | None, account: str) -> None:
        if ip is not None:
            known = self._known.setdefault(account.lower(), set())
            if len(known) < 1000:
                known.add(self._key(ip))

    def _sweep(self, table: dict[str, _Failures], now: float) -> None:
        for k in [k for k, f in table.items() if f.locked_until <= now and (not f.times or f.times[-1] <= now - self.policy.window)]:
            del table[k]


# ------------------------------------------------------------------ connection rate
class ConnectionRate:
    """New connections per client address: a token bucket holding a minute's worth.
    Exempt addresses are the caller's business (`Trust.allow_connection`)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # ip -> (tokens, at)

    def allow(self, ip: str) -> bool:
        if not self.per_minute:
            return True
        now = self.clock()
        rate = self.per_minute / 60.0
        tokens, at = self._buckets.get(ip, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[ip] = (tokens, now)
            return False
        if len(self._buckets) >= _MAX_TRACKED:
            # Full buckets carry no state worth keeping.
            self._buckets = {k: v for k, v in self._buckets.items()
                             if v[0] + (now - v[1]) * rate < self.per_minute}
        self._buckets[ip] = (tokens - 1.0, now)
        return True


# ------------------------------------------------------------------ greylisting
class Greylist:
    """A first delivery attempt from an unknown (network, sender, recipient) is
    deferred; a retry after `delay` passes, and the triplet is remembered."""

    def __init__(self, delay: float, expire: float, keep: float, clock: Callable[[], float] = time.time) -> None:
        self.delay = delay
        self.expire = expire
        self.keep = keep
        self.clock = clock
        self._seen: dict[tuple[str, str, str], tuple[float, bool]] = {}  # -> (first seen, passed)
        self._changed: set[tuple[str, str, str]] = set()  # since changes() was last called

    def load(self, triplets: Iterable[GreyTriplet]) -> None:
        """Triplets kept by the store (GreylistKeeper), under any seen since."""
        for t in triplets:
            self._seen.setdefault((t.network, t.sender, t.recipient), (t.first, t.passed))

    def changes(self) -> list[GreyTriplet]:
        """The triplets first seen or passed since the last call, for the store."""
        out = [GreyTriplet(*k, *self._seen[k]) for k in self._changed if k in self._seen]
        self._changed = set()
        return out

    def retain(self, triplets: Iterable[GreyTriplet]) -> None:
        """Changes that were not saved after all: the next changes() has them again."""
        self._changed.update((t.network, t.sender, t.recipient) for t in triplets)

    @staticmethod
    def network(ip: str) -> str:
        # Large senders retry from another address of the same pool.
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return ip
        bits = 24 if addr.version == 4 else 64
        return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))

    def check(self, ip: str, sender: str, recipient: str) -> float:
        """0 when the triplet may pass; else the seconds still to wait."""
        now = self.clock()
        key = (self.network(ip), sender.lower(), recipient.lower())
        seen = self._seen.get(key)
        if seen is not None:
            first, passed = seen
            if passed and now - first < self.keep:
                return 0.0
            if not passed and now - first < self.expire:
                if now - first >= self.delay:
                    self._seen[key] = (now, True)
                    self._changed.add(key)
                    return 0.0
                return self.delay - (now - first)
        if len(self._seen) >= _MAX_TRACKED:
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < (self.keep if v[1] else self.expire)}
        self._seen[key] = (now, False)
        self._changed.add(key)
        return self.delay


class GreylistKeeper:
    """Keeps a Greylist's triplets in the store: loaded at start, the changes
    written every `interval` seconds and at the end, the expired ones dropped
    hourly. Without it a restart forgets every sender that passed (for
    `greylist_pass`, 36 days by default), and each is deferred once more."""

    FORGET_EVERY = HOUR

    def __init__(self, store: Store, greylist: Greylist, interval: float = 30.0) -> None:
        self.store = store
        self.greylist = greylist
        self.interval = interval
        self._forgot = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the triplets kept from before, then save changes in the background."""
        g = self.greylist
        triplets = await self.store.greylist_triplets(g.clock(), g.expire, g.keep)
        g.load(triplets)
        logger.info("%d triplets kept from before", len(triplets))
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """The background saving stops; what changed since is saved now."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.save()
        except StoreError as e:
            logger.warning("triplets not saved: %s", e)

    async def save(self) -> None:
        g = self.greylist
        now = g.clock()
        forget = None
        if now - self._forgot >= self.FORGET_EVERY:
            forget, self._forgot = (now, g.expire, g.keep), now
        changes = g.changes()
        if changes or forget is not None:
            try:
                await self.store.save_greylist(changes, forget=forget)
            except BaseException:
                g.retain(changes)
                raise

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.save()
            except StoreError as e:  # kept in memory: the next round tries again
                logger.warning("triplets not saved: %s", e)
