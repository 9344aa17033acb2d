"""The notices between the main process and one worker: one line each.

    c <account id> <folder id> <kind>    a commit changed that folder (a Change)
    q                                    mail was queued: wake the queue managers
                                         (worker to main; main to the other workers)
    a <id> <user> <password> <ip> <protocol>    a login to check (worker to main;
                                         user, password: "b" + base64), answered by
    A <id> <address or -> <retry after>  (main to worker)

Logins are checked by the main process so that every protocol of every process
shares one lockout and one cache of recent successes (auth/service.py): a
worker's own cache would cost an argon2 hash per account per worker.

Both ends run this protocol on their half of a socket pair. A lost connection
means the other side is gone: the worker exits, the main process restarts it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from typing import cast

from .. import log
from ..store.models import Change

logger = log.get("workers")

MAX_LINE = 8192  # a login line carries a user name and a password
KINDS = frozenset({"exists", "flags", "expunge", "folders"})
# Past this many bytes unsent (the other side stalls), change lines are dropped:
# sessions there still see changes at their next poll. Login lines never are.
MAX_BUFFERED = 1 << 20


def encode_changes(changes: list[Change]) -> bytes:
    return b"".join(f"c {c.account_id} {c.folder_id} {c.kind}\n".encode() for c in changes)


class Link(asyncio.Protocol):
    def __init__(
        self,
        on_changes: Callable[[list[Change]], None],
        on_kick: Callable[[], None],
        on_lost: Callable[[], None],
        on_login: Callable[[int, str, str, str, str], None] | None = None,
        on_answer: Callable[[int, str | None, float], None] | None = None,
    ) -> None:
        self.on_changes = on_changes
        self.on_kick = on_kick
        self.on_lost = on_lost
        self.on_login = on_login
        self.on_answer = on_answer
        self.transport: asyncio.Transport | None = None
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        lines = (self._buf + data).split(b"\n")
        self._buf = lines.pop()
        if len(self._buf) > MAX_LINE:
            logger.warning("notice link: over-long line dropped")
            self._buf = b""
        changes: list[Change] = []
        kick = False
        for line in lines:
            parts = line.split()
            if parts == [b"q"]:
                kick = True
            elif len(parts) == 4 and parts[0] == b"c" and parts[3].decode("ascii", "replace") in KINDS:
                try:
                    changes.append(Change(int(parts[1]), int(parts[2]), parts[3].decode()))
                except ValueError:
                    logger.warning("notice link: bad change line")
            elif parts and parts[0] in (b"a", b"A") and self._login_line(parts):
                pass
            elif line:  # never the line itself: it may carry a password
                logger.warning("notice link: bad line starting %r", parts[0][:8] if parts else b"")
        if changes:
            self.on_changes(changes)
        if kick:
            self.on_kick()

    def _login_line(self, parts: list[bytes]) -> bool:
        try:
            if parts[0] == b"a" and len(parts) == 6 and self.on_login is not None:
                if not (parts[2].startswith(b"b") and parts[3].startswith(b"b")):
                    return False
                user = base64.b64decode(parts[2][1:], validate=True).decode("utf-8", "surrogateescape")
                password = base64.b64decode(parts[3][1:], validate=True).decode("utf-8", "surrogateescape")
                self.on_login(int(parts[1]), user, password, parts[4].decode(), parts[5].decode())
                return True
            if parts[0] == b"A" and len(parts) == 4 and self.on_answer is not None:
                address = None if parts[2] == b"-" else parts[2].decode("utf-8", "surrogateescape")
                self.on_answer(int(parts[1]), address, float(parts[3]))
                return True
        except (ValueError, binascii.Error, UnicodeDecodeError):
            pass
        return False

    def send_login(self, request_id: int, user: str, password: str, ip: str, protocol: str) -> None:
        def b64(text: str) -> str:  # "b" first: an empty field must still be a field
            return "b" + base64.b64encode(text.encode("utf-8", "surrogateescape")).decode()

        self.send(f"a {request_id} {b64(user)} {b64(password)} {ip or '-'} {protocol or '-'}\n".encode())

    def send_answer(self, request_id: int, address: str | None, retry_after: float) -> None:
        self.send(f"A {request_id} {address or '-'} {retry_after:.3f}\n".encode("utf-8", "surrogateescape"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.on_lost()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_changes(self, changes: list[Change]) -> None:
        if self.transport is not None and self.transport.get_write_buffer_size() > MAX_BUFFERED:
            return
        self.send(encode_changes(changes))
