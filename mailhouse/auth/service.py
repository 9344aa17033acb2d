"""Checking a login against the store; shared by SMTP AUTH, and later IMAP, POP3, HTTP."""

from __future__ import annotations

import asyncio

from ..store.base import Store
from ..store.models import Account
from .passwords import verify_async

# Failed logins answer after this pause, so a guesser gets a few tries per second
# per connection at most; the cross-protocol lockout builds on the same place.
FAILURE_DELAY = 1.0


class Authenticator:
    def __init__(self, store: Store, failure_delay: float = FAILURE_DELAY) -> None:
        self.store = store
        self.failure_delay = failure_delay

    async def login(self, username: str, password: str) -> Account | None:
        account = self.store.find_account(username.strip()) if "@" in username else None
        ok = await verify_async(account.password_hash if account else None, password)
        if ok and account is not None:
            return account
        await asyncio.sleep(self.failure_delay)
        return None
