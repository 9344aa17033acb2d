"""The notices between the main process and one worker: one line each.

    c <account id> <folder id> <kind>    a commit changed that folder (a Change)
    q                                    mail was queued: wake the queue managers
                                         (worker to main; main to the other workers)
    a <id> <user> <password> <ip> <protocol>    a login to check (worker to main;
                                         user, password: "b" + base64), answered by
    A <id> <address or -> <retry after>  (main to worker)
    l <id> <user> <recipients>           a message to count against the user's
                                         sending limits (worker to main), answered by
    L <id> <reason or ->                 (main to worker; reason: "b" + base64)
    g <id> <ip> <sender> <recipient>     a greylisting triplet to check (worker to
                                         main; sender, recipient: "b" + base64),
    G <id> <seconds>                     answered by the seconds still to wait (0: pass)

Logins are checked by the main process so that every protocol of every process
shares one lockout and one cache of recent successes (auth/service.py): a
worker's own cache would cost an argon2 hash per account per worker. Sending
limits are counted there too: per worker, a user could send N times the limit.
So are greylisting's triplets: a retry landing on another worker than the first
attempt must find the triplet seen.

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


def _b64(text: str) -> str:
    # "b" first: an empty field must still be a field
    return "b" + base64.b64encode(text.encode("utf-8", "surrogateescape")).decode()


def _unb64(field: bytes) -> str:
    if not field.startswith(b"b"):
        raise ValueError("not a base64 field")
    return base64.b64decode(field[1:], validate=True).decode("utf-8", "surrogateescape")


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
        on_limit: Callable[[int, str, int], None] | None = None,
        on_limit_answer: Callable[[int, str | None], None] | None = None,
        on_greylist: Callable[[int, str, str, str], None] | None = None,
        on_greylist_answer: Callable[[int, float], None] | None = None,
    ) -> None:
        self.on_changes = on_changes
        self.on_kick = on_kick
        self.on_lost = on_lost
        self.on_login = on_login
        self.on_answer = on_answer
        self.on_limit = on_limit
        self.on_limit_answer = on_limit_answer
        self.on_greylist = on_greylist
        self.on_greylist_answer = on_greylist_answer
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
            elif parts and self._request_line(parts):
                pass
            elif line:  # never the line itself: it may carry a password
                logger.warning("notice link: bad line starting %r", parts[0][:8] if parts else b"")
        if changes:
            self.on_changes(changes)
        if kick:
            self.on_kick()

    def _request_line(self, parts: list[bytes]) -> bool:
        if parts[0] in (b"a", b"A"):
            return self._login_line(parts)
        if parts[0] in (b"g", b"G"):
            return self._greylist_line(parts)
        return parts[0] in (b"l", b"L") and self._limit_line(parts)

    def _login_line(self, parts: list[bytes]) -> bool:
        try:
            if parts[0] == b"a" and len(parts) == 6 and self.on_login is not None:
                user, password = _unb64(parts[2]), _unb64(parts[3])
                self.on_login(int(parts[1]), user, password, parts[4].decode(), parts[5].decode())
                return True
            if parts[0] == b"A" and len(parts) == 4 and self.on_answer is not None:
                address = None if parts[2] == b"-" else parts[2].decode("utf-8", "surrogateescape")
                self.on_answer(int(parts[1]), address, float(parts[3]))
                return True
        except (ValueError, binascii.Error, UnicodeDecodeError):
            pass
        return False

    def _limit_line(self, parts: list[bytes]) -> bool:
        try:
            if parts[0] == b"l" and len(parts) == 4 and self.on_limit is not None:
                self.on_limit(int(parts[1]), _unb64(parts[2]), int(parts[3]))
                return True
            if parts[0] == b"L" and len(parts) == 3 and self.on_limit_answer is not None:
                self.on_limit_answer(int(parts[1]), None if parts[2] == b"-" else _unb64(parts[2]))
                return True
        except (ValueError, binascii.Error, UnicodeDecodeError):
            pass
        return False

    def _greylist_line(self, parts: list[bytes]) -> bool:
        try:
            if parts[0] == b"g" and len(parts) == 5 and self.on_greylist is not None:
                self.on_greylist(int(parts[1]), parts[2].decode("ascii"), _unb64(parts[3]), _unb64(parts[4]))
                return True
            if parts[0] == b"G" and len(parts) == 3 and self.on_greylist_answer is not None:
                self.on_greylist_answer(int(parts[1]), float(parts[2]))
                return True
        except (ValueError, binascii.Error, UnicodeDecodeError):
            pass
        return False

    def send_greylist(self, request_id: int, ip: str, sender: str, recipient: str) -> None:
        self.send(f"g {request_id} {ip or '-'} {_b64(sender)} {_b64(recipient)}\n".encode())

    def send_greylist_answer(self, request_id: int, wait: float) -> None:
        self.send(f"G {request_id} {wait:.3f}\n".encode())

    def send_login(self, request_id: int, user: str, password: str, ip: str, protocol: str) -> None:
        self.send(f"a {request_id} {_b64(user)} {_b64(password)} {ip or '-'} {protocol or '-'}\n".encode())

    def send_limit(self, request_id: int, user: str, recipients: int) -> None:
        self.send(f"l {request_id} {_b64(user)} {recipients}\n".encode())

    def send_limit_answer(self, request_id: int, reason: str | None) -> None:
        self.send(f"L {request_id} {'-' if reason is None else _b64(reason)}\n".encode())

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
