"""What the admin commands share: opening the store, reading passwords."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator

from ..config import Config
from ..store import Store, open_store
from .main import CommandError


@contextlib.asynccontextmanager
async def store_for(config: Config) -> AsyncIterator[Store]:
    store = await open_store(config)
    try:
        yield store
    finally:
        await store.close()


def read_password(args: argparse.Namespace) -> str | None:
    """--password PW, --password-stdin (first line), or None when neither is given."""
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline()
        pw = line.rstrip("\r\n")
        if not pw:
            raise CommandError("no password on standard input")
        return pw
    pw = getattr(args, "password", None)
    if pw is not None and not pw:
        raise CommandError("the password must not be empty")
    return pw


def check_address(address: str) -> str:
    local, _, domain = address.rpartition("@")
    if not local or not domain or " " in address or ("." not in domain and domain != "localhost"):
        raise CommandError(f"{address!r} is not an address like user@example.org")
    return address.lower()
