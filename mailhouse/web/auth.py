"""Who is asking: webmail sessions, API bearer tokens, HTTP Basic, CSRF, login limits.

Sessions live in this process's memory: a restart logs everyone out, which is
the safe direction; a session is a random 256-bit id in an HttpOnly,
SameSite=Strict cookie (Secure under TLS) and carries its own CSRF token.

Passwords cost ~150 ms of argon2 each (and a failure a second more), so HTTP
Basic would make every API call slow: a successful check is remembered for a
few minutes under a keyed hash of (address, password), and forgotten as soon as
the account's password hash changes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from ..context import Context
from ..store.models import Account

SESSION_IDLE = 2 * 3600.0  # an unused session ends after this
SESSION_MAX = 24 * 3600.0  # and any session after this
BASIC_CACHE_TTL = 300.0
TOKEN_CACHE_TTL = 30.0  # a token revoked on another node stops working within this
TOKEN_TOUCH_INTERVAL = 300.0
TOKEN_PREFIX = "mh_"
SESSION_COOKIE = "mh_session"
LOGIN_COOKIE = "mh_login"  # the login form's CSRF token, before there is a session

LOGIN_WINDOW = 900.0  # failed logins are counted over this window, per client IP
LOGIN_MAX_FAILURES = 10


@dataclass
class Session:
    id: str
    account_id: int
    address: str
    csrf: str
    created: float
    last_seen: float
    flash: list[str] = field(default_factory=list)


class Sessions:
    def __init__(self, idle: float = SESSION_IDLE, maximum: float = SESSION_MAX) -> None:
        self.idle = idle
        self.maximum = maximum
        self._by_id: dict[str, Session] = {}

    def create(self, account: Account) -> Session:
        self._sweep()
        now = time.monotonic()
        s = Session(secrets.token_urlsafe(32), account.id, account.address, secrets.token_urlsafe(32), now, now)
        self._by_id[s.id] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self._by_id.get(sid)
        if s is None:
            return None
        now = time.monotonic()
        if now - s.last_seen > self.idle or now - s.created > self.maximum:
            self._by_id.pop(sid, None)
            return None
        s.last_seen = now
        return s

    def end(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def _sweep(self) -> None:
        if len(self._by_id) < 1000:
            return
        now = time.monotonic()
        for sid, s in list(self._by_id.items()):
            if now - s.last_seen > self.idle or now - s.created > self.maximum:
                del self._by_id[sid]


class LoginLimiter:
    """Failed logins per client IP over a sliding window: past the limit, further
    attempts are refused before any password is checked."""

    def __init__(self, window: float = LOGIN_WINDOW, limit: int = LOGIN_MAX_FAILURES) -> None:
        self.window = window
        self.limit = limit
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, ip: str) -> deque[float] | None:
        q = self._failures.get(ip)
        if q is None:
            return None
        cutoff = time.monotonic() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        if not q:
            del self._failures[ip]
            return None
        return q

    def blocked(self, ip: str) -> bool:
        q = self._recent(ip)
        return q is not None and len(q) >= self.limit

    def failed(self, ip: str) -> None:
        if len(self._failures) > 100_000:  # a flood of addresses must not exhaust memory
            self._failures.clear()
        self._failures.setdefault(ip, deque()).append(time.monotonic())

    def retry_after(self, ip: str) -> int:
        q = self._recent(ip)
        if not q:
            return 0
        return max(1, int(q[0] + self.window - time.monotonic()) + 1)


def hash_token_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(token_id: int, secret: str) -> str:
    return f"{TOKEN_PREFIX}{token_id}_{secret}"


def split_token(token: str) -> tuple[int, str] | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    ident, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not ident.isdigit() or len(ident) > 18 or not secret:
        return None
    return int(ident), secret


class Credentials:
    """Checks API credentials (Basic and bearer) with the caches described above."""

    def __init__(self, ctx: Context, limiter: LoginLimiter) -> None:
        self.ctx = ctx
        self.limiter = limiter
        self._key = secrets.token_bytes(32)
        self._basic: dict[bytes, tuple[str, str, float]] = {}  # digest -> (address, hash, until)
        self._tokens: dict[str, tuple[str, int, int, float]] = {}  # token -> (address, account id, token id, until)
        self._touched: dict[int, float] = {}

    def _digest(self, address: str, password: str) -> bytes:
        return hmac.new(self._key, address.lower().encode() + b"\0" + password.encode(), hashlib.sha256).digest()

    async def password(self, address: str, password: str, ip: str) -> Account | None:
        """A password check (webmail login or Basic); None when wrong or limited."""
        if self.ctx.auth.locked(ip) > 0:
            return None  # the shared cross-protocol lockout comes before any cache
        digest = self._digest(address, password)
        hit = self._basic.get(digest)
        if hit is not None:
            addr, phash, until = hit
            account = self.ctx.store.find_account(addr)
            if account is not None and account.password_hash == phash and until > time.monotonic():
                return account
            del self._basic[digest]
        if self.limiter.blocked(ip):
            return None
        account = await self.ctx.auth.login(address, password, ip=ip, protocol="http")
        if account is None:
            self.limiter.failed(ip)
            return None
        if len(self._basic) > 10_000:
            self._basic.clear()
        self._basic[digest] = (account.address, account.password_hash, time.monotonic() + BASIC_CACHE_TTL)
        return account

    async def token(self, token: str) -> Account | None:
        now = time.monotonic()
        hit = self._tokens.get(token)
        if hit is not None and hit[3] > now:
            return self._account(hit[0], hit[1])
        parts = split_token(token)
        if parts is None:
            return None
        token_id, secret = parts
        row = await self.ctx.store.get_api_token(token_id)
        if row is None or not hmac.compare_digest(row.hash, hash_token_secret(secret)):
            self._tokens.pop(token, None)
            return None
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[token] = (row.address, row.account_id, row.id, now + TOKEN_CACHE_TTL)
        if now - self._touched.get(row.id, -TOKEN_TOUCH_INTERVAL) >= TOKEN_TOUCH_INTERVAL:
            self._touched[row.id] = now
            await self.ctx.store.touch_api_token(row.id, time.time())
        return self._account(row.address, row.account_id)

    def forget_token(self, token_id: int) -> None:
        for k, v in list(self._tokens.items()):
            if v[2] == token_id:
                del self._tokens[k]

    def _account(self, address: str, account_id: int) -> Account | None:
        # Through the directory snapshot, so a removed account loses access at once.
        account = self.ctx.store.find_account(address)
        return account if account is not None and account.id == account_id else None
