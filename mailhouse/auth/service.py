"""Checking a login against the store; shared by SMTP AUTH, IMAP, POP3 and HTTP.

One Authenticator serves every protocol of the process, so its lockout counts
failures across all of them: an address that guessed wrong too often gets no
further attempts anywhere for a cool-down, and its passwords are not even
checked meanwhile (argon2 costs ~150 ms of CPU per check: rate-limit first).
The lockout comes before everything, the cache of recent successes included.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from .. import log
from ..store.base import Store
from ..store.models import Account
from ..trust.limits import Lockout
from ..trust.settings import LockoutPolicy
from .passwords import verify_async

logger = log.get("auth")

# Failed logins answer after this pause, so a guesser gets a few tries per second
# per connection at most; the lockout bounds the total.
FAILURE_DELAY = 1.0
# Clients reconnect all day (several IMAP connections, phones, the webmail's Basic
# auth): a success is remembered this long, under an HMAC of the credentials (never
# the password), while the stored hash is unchanged, so argon2 runs once, not per login.
# Dovecot's auth cache (auth_cache_size, auth_cache_ttl = 1 hour by default) does the
# same. A password change (the CLI in another process included) changes the stored
# hash, which the directory snapshot picks up within 0.1 s: the old entry then misses.
SUCCESS_CACHE_TTL = 600.0
SUCCESS_CACHE_MAX = 10_000


@dataclass(frozen=True)
class LoginResult:
    account: Account | None
    # Seconds until this client may try again; > 0 means the attempt was not checked
    # and the protocol should answer with its temporary failure (SMTP 454 4.7.0,
    # IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP], HTTP 429 with Retry-After).
    retry_after: float = 0.0

    @property
    def locked(self) -> bool:
        return self.retry_after > 0


class Authenticator:
    def __init__(self, store: Store, failure_delay: float = FAILURE_DELAY,
                 lockout: LockoutPolicy | None = None) -> None:
        self.store = store
        self.failure_delay = failure_delay
        self.lockout = Lockout(lockout)
        self._secret = secrets.token_bytes(32)
        self._ok: OrderedDict[bytes, tuple[str, str, float]] = OrderedDict()  # -> (address, hash, until)

    def configure_lockout(self, policy: LockoutPolicy) -> None:
        self.lockout.policy = policy

    def locked(self, ip: str) -> float:
        """Seconds this address must still wait (0: it may try); for a check at connect time."""
        return self.lockout.check(ip).retry_after

    async def attempt(self, username: str, password: str, *, ip: str | None = None,
                      protocol: str = "") -> LoginResult:
        """A login with the lockout applied; `ip` is the client's address."""
        user = username.strip()
        state = self.lockout.check(ip, user.lower() if "@" in user else None)
        if state.locked:
            logger.info("[%s]: %s login for %r refused unchecked: %s (%.0fs left)",
                        ip, protocol or "-", user[:100], state.why, state.retry_after)
            await asyncio.sleep(self.failure_delay)
            return LoginResult(None, state.retry_after)
        account = self.store.find_account(user) if "@" in user else None
        # hmac.digest: the one-shot C path, a few µs against ~20 for hmac.new() on every login.
        key = hmac.digest(self._secret, user.lower().encode("utf-8", "surrogatepass") + b"\0"
                          + password.encode("utf-8", "surrogatepass"), "sha256")
        hit = self._ok.get(key)
        now = time.monotonic()
        if hit is not None:
            if account is not None and account.password_hash == hit[1] and now < hit[2]:
                self._ok.move_to_end(key)
                self.lockout.succeeded(ip, account.address)
                return LoginResult(account)
            del self._ok[key]  # expired, password changed, account gone
        ok = await verify_async(account.password_hash if account else None, password)
        if ok and account is not None:
            self.lockout.succeeded(ip, account.address)
            self._ok[key] = (account.address, account.password_hash, now + SUCCESS_CACHE_TTL)
            while len(self._ok) > SUCCESS_CACHE_MAX:
                self._ok.popitem(last=False)
            return LoginResult(account)
        now_locked = self.lockout.failed(ip, user.lower() if "@" in user else None)
        if now_locked.locked:
            logger.warning("[%s]: locked out for %.0fs after repeated failed logins (last: %s for %r)",
                           ip, now_locked.retry_after, protocol or "-", user[:100])
        await asyncio.sleep(self.failure_delay)
        return LoginResult(None)

    async def login(self, username: str, password: str, *, ip: str | None = None,
                    protocol: str = "") -> Account | None:
        """The account, or None for a wrong password and for a locked-out client alike."""
        return (await self.attempt(username, password, ip=ip, protocol=protocol)).account
