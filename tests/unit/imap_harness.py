"""A session over a real SQLite store in a temp dir, without sockets: the
transcript tests feed it client lines and read back exactly what it wrote."""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailhouse.auth.passwords import hash_password
from mailhouse.auth.service import Authenticator
from mailhouse.config import Config
from mailhouse.context import Context
from mailhouse.imap.session import IMAPSession
from mailhouse.store.models import LocalTarget
from mailhouse.store.sqlite import SQLiteStore

PASSWORD = "secret"
_HASH: list[str] = []


def password_hash() -> str:
    if not _HASH:
        _HASH.append(hash_password(PASSWORD))
    return _HASH[0]


class FakeIO:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.deflater: zlib._Compress | None = None
        self.inflater: zlib._Decompress | None = None

    def write(self, data: bytes) -> None:
        if self.deflater is not None:
            data = self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        self.data += data

    async def drain(self) -> None:
        return None

    async def start_tls(self) -> bool:
        return False

    def start_compression(self, pending: bytes) -> bytes:
        self.deflater = zlib.compressobj(wbits=-15)
        self.inflater = zlib.decompressobj(wbits=-15)
        return self.inflater.decompress(pending) if pending else b""

    def close(self) -> None:
        self.closed = True

    def resume(self) -> None:
        return None


class Client:
    """One client connection to the session under test."""

    def __init__(self, ctx: Context, *, secure: bool = True, tls: bool = False) -> None:
        self.io = FakeIO()
        self.session = IMAPSession(ctx, self.io, peer="192.0.2.1", secure_peer=secure, tls_active=tls)
        self.session.greeting()
        self.greeting = b"".join(self.session.out).decode()
        self.session.out.clear()
        self.session.out_size = 0

    async def raw(self, data: bytes) -> bytes:
        if self.io.inflater is not None:
            data = self.io.inflater.decompress(data)
        self.session.feed(data)
        await self.session.run_until_idle()
        out = bytes(self.io.data)
        self.io.data.clear()
        return out

    async def send(self, line: str | bytes) -> str:
        data = line.encode() if isinstance(line, str) else line
        if not data.endswith(b"\n"):
            data += b"\r\n"
        return (await self.raw(data)).decode("utf-8", "replace")

    async def ok(self, line: str | bytes) -> str:
        """Send a command and assert its tagged response is OK."""
        out = await self.send(line)
        text = line if isinstance(line, str) else line.decode("utf-8", "replace")
        tag = text.split(" ", 1)[0]
        assert re.search(rf"^{re.escape(tag)} OK", out, re.M), out
        return out

    async def login(self, user: str = "bob@example.test") -> None:
        await self.ok(f"L1 LOGIN {user} {PASSWORD}")


class World:
    def __init__(self, store: SQLiteStore, ctx: Context) -> None:
        self.store = store
        self.ctx = ctx

    async def client(self, *, login: bool = True, secure: bool = True, tls: bool = False) -> Client:
        c = Client(self.ctx, secure=secure, tls=tls)
        if login:
            await c.login()
        return c

    async def deliver(
        self, raw: bytes, folder: str = "INBOX", user: str = "bob@example.test", flags: tuple[str, ...] = ()
    ) -> int:
        acc = self.store.find_account(user)
        assert acc is not None
        d = await self.store.append(LocalTarget(acc.id, acc.address, acc.address, folder), raw, flags=flags)
        return d.uid


def message(n: int, subject: str | None = None, body: str = "hello world", extra: str = "") -> bytes:
    subject = subject if subject is not None else f"message {n}"
    return (
        f"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.test>\r\nSubject: {subject}\r\n"
        f"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <m{n}@example.org>\r\n{extra}\r\n{body}\r\n"
    ).encode()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SQLiteStore(tmp_path / "data")
    await store.open()
    await store.add_domain("example.test")
    await store.add_account("bob@example.test", password_hash())
    await store.add_account("carol@example.test", password_hash())
    config = Config(hostname="mail.example.test", domains=["example.test"], data_dir=tmp_path / "data")
    ctx = Context(config=config, store=store, auth=Authenticator(store, failure_delay=0.0), tls=None)
    try:
        yield World(store, ctx)
    finally:
        await store.close()
