"""A cache of recent successful logins, so a client that reconnects often
(mail clients open several connections, phones reconnect all day) does not
pay an argon2 verification (~0.1-0.5 s of CPU) each time.

Only successes are cached, under an HMAC of the credentials keyed with a
secret made at process start (the password itself is never kept), for a few
minutes, and only while the account's stored password hash is unchanged: a
password change or a removed account invalidates the entry at once.
Failures always go through the Authenticator and its delay.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

from mailhouse.auth.service import Authenticator
from mailhouse.store.models import Account

TTL = 600.0
MAX_ENTRIES = 10_000

_SECRET = secrets.token_bytes(32)
_cache: OrderedDict[bytes, tuple[str, str, float]] = OrderedDict()


def _key(username: str, password: str) -> bytes:
    msg = username.strip().lower().encode("utf-8", "surrogatepass") + b"\0" + password.encode(
        "utf-8", "surrogatepass"
    )
    return hmac.new(_SECRET, msg, hashlib.sha256).digest()


async def login(auth: Authenticator, username: str, password: str) -> Account | None:
    key = _key(username, password)
    hit = _cache.get(key)
    now = time.monotonic()
    if hit is not None:
        address, pw_hash, expires = hit
        account = auth.store.find_account(address)
        if now < expires and account is not None and account.password_hash == pw_hash:
            _cache.move_to_end(key)
            return account
        _cache.pop(key, None)
    account = await auth.login(username, password)
    if account is not None:
        _cache[key] = (account.address, account.password_hash, now + TTL)
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
    return account
