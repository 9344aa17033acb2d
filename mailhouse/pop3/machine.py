"""POP3 (RFC 1939, CAPA RFC 2449, STLS RFC 2595, SASL PLAIN RFC 5034) as a sans-I/O
state machine: bytes in, events and bytes out.

The machine owns the session's view of the maildrop (numbers, sizes, unique ids,
deletion marks); the application answers the decisions: a login, the text of a
message to retrieve, the deletions to apply when the client QUITs.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

MAX_LINE = 512  # RFC 2449 allows 255 octets for a command; some slack for long user names
MAX_ERRORS = 20


class NEED_DATA:
    pass


class PAUSED:
    pass


@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class Login(Event):
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class StartTLS(Event):
    pass


@dataclass(frozen=True)
class Retrieve(Event):
    """The application calls `send_message(raw)`; `lines` is TOP's line count."""

    number: int
    uid: int
    lines: int | None


@dataclass(frozen=True)
class Update(Event):
    """The client QUIT from TRANSACTION: apply these deletions, then `updated()`."""

    uids: list[int]


@dataclass(frozen=True)
class Closed(Event):
    pass


@dataclass
class Drop:
    uid: int
    size: int
    unique_id: str
    deleted: bool = False


class POP3Connection:
    def __init__(self, hostname: str, *, tls_active: bool, tls_available: bool, plaintext_ok: bool) -> None:
        self.hostname = hostname
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.plaintext_ok = plaintext_ok
        self.state = "AUTHORIZATION"
        self.user: str | None = None
        self.drops: list[Drop] = []
        self._in = bytearray()
        self._out: list[bytes] = []
        self._pending: Event | None = None
        self._sasl_wait = False
        self._errors = 0
        self._eof = False
        self.closed = False

    # ------------------------------------------------------------------ I/O
    def greet(self) -> None:
        self._ok(f"{self.hostname} POP3 server ready")

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        self._in += data

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _ok(self, text: str = "") -> None:
        self._out.append(b"+OK" + (b" " + text.encode() if text else b"") + b"\r\n")

    def _err(self, text: str, *, counts: bool = True) -> None:
        self._out.append(b"-ERR " + text.encode() + b"\r\n")
        if counts:
            self._errors += 1
            if self._errors >= MAX_ERRORS:
                self._out.append(b"-ERR too many errors, closing\r\n")
                self.closed = True

    # ------------------------------------------------------------------ events
    def next_event(self) -> Event | type[NEED_DATA] | type[PAUSED]:
        if self._pending is not None:
            return PAUSED
        while not self.closed:
            end = self._in.find(b"\n")
            if end < 0:
                if len(self._in) > MAX_LINE:
                    self._in.clear()
                    self._err("line too long")
                    continue
                if self._eof:
                    self.closed = True
                    return Closed()
                return NEED_DATA
            line = bytes(self._in[:end]).rstrip(b"\r")
            del self._in[: end + 1]
            if len(line) > MAX_LINE:
                self._err("line too long")
                continue
            ev = self._line(line)
            if ev is not None:
                if not isinstance(ev, Closed):
                    self._pending = ev
                return ev
        return Closed()

    def _line(self, line: bytes) -> Event | None:
        text = line.decode("utf-8", "replace")
        if self._sasl_wait:
            self._sasl_wait = False
            return self._sasl_plain(text)
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        handler = getattr(self, f"_cmd_{verb.lower()}", None) if verb.isalpha() else None
        if handler is None:
            self._err("unknown command")
            return None
        result: Event | None = handler(arg)
        return result

    # ------------------------------------------------------------------ decisions
    def login_ok(self, drops: list[Drop]) -> None:
        self._pending = None
        self.drops = drops
        self.state = "TRANSACTION"
        self._ok(f"maildrop has {len(drops)} messages ({sum(d.size for d in drops)} octets)")

    def login_failed(self, *, temporary: bool = False) -> None:
        self._pending = None
        self.user = None
        if temporary:
            self._err("[SYS/TEMP] try again later", counts=False)
        else:
            self._err("[AUTH] authentication failed")

    def send_message(self, raw: bytes, lines: int | None = None) -> None:
        """The message (or its header and `lines` body lines), dot-stuffed."""
        self._pending = None
        if lines is not None:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                head, body = raw, b""
            else:
                head, body = raw[: end + 4], raw[end + 4 :]
            body_lines = body.split(b"\r\n")
            if body_lines[-1] == b"":  # the CRLF ending the last line starts no new line
                body_lines.pop()
            kept = body_lines[:lines] if lines > 0 else []
            raw = head + b"\r\n".join(kept) + (b"\r\n" if kept else b"")
        self._ok("message follows")
        if raw.startswith(b"."):
            raw = b"." + raw
        raw = raw.replace(b"\r\n.", b"\r\n..")
        if raw and not raw.endswith(b"\r\n"):
            raw += b"\r\n"
        self._out.append(raw + b".\r\n")

    def message_unavailable(self) -> None:
        self._pending = None
        self._err("message no longer exists", counts=False)

    def tls_started(self) -> None:
        self._pending = None
        self.tls_active = True
        self._in.clear()  # nothing sent in clear before the handshake counts

    def updated(self, ok: bool = True) -> None:
        self._pending = None
        if ok:
            self._ok(f"{self.hostname} POP3 server signing off")
        else:
            self._err("some deleted messages not removed")
        self.closed = True

    # ------------------------------------------------------------------ commands
    def _may_login(self) -> bool:
        return self.tls_active or self.plaintext_ok

    def _cmd_capa(self, arg: str) -> None:
        caps = ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "IMPLEMENTATION mailhouse"]
        if self.state == "AUTHORIZATION":
            if self.tls_available and not self.tls_active:
                caps.append("STLS")
            if self._may_login():
                caps += ["USER", "SASL PLAIN"]
        self._out.append(b"+OK capability list follows\r\n" + "".join(c + "\r\n" for c in caps).encode() + b".\r\n")

    def _cmd_stls(self, arg: str) -> Event | None:
        if self.state != "AUTHORIZATION" or self.tls_active or not self.tls_available:
            self._err("STLS not available now")
            return None
        self._ok("begin TLS negotiation")
        return StartTLS()

    def _cmd_user(self, arg: str) -> None:
        if self.state != "AUTHORIZATION":
            self._err("already authenticated")
        elif not self._may_login():
            self._err("[AUTH] plaintext authentication requires TLS: use STLS first")
        elif not arg:
            self._err("USER needs a name")
        else:
            self.user = arg.strip()
            self._ok("send PASS")

    def _cmd_pass(self, arg: str) -> Event | None:
        if self.state != "AUTHORIZATION" or self.user is None:
            self._err("USER first")
            return None
        user, self.user = self.user, None
        return Login(user, arg)

    def _cmd_auth(self, arg: str) -> Event | None:
        if self.state != "AUTHORIZATION":
            self._err("already authenticated")
            return None
        mech, _, initial = arg.strip().partition(" ")
        if not mech:
            self._out.append(b"+OK\r\nPLAIN\r\n.\r\n")
            return None
        if mech.upper() != "PLAIN":
            self._err("unsupported mechanism")
            return None
        if not self._may_login():
            self._err("[AUTH] authentication requires TLS: use STLS first")
            return None
        if not initial:
            self._out.append(b"+ \r\n")
            self._sasl_wait = True
            return None
        return self._sasl_plain(initial)

    def _sasl_plain(self, text: str) -> Event | None:
        if text.strip() == "*":
            self._err("authentication cancelled")
            return None
        try:
            parts = base64.b64decode(text.strip(), validate=True).decode("utf-8").split("\x00")
        except (binascii.Error, UnicodeDecodeError):
            self._err("invalid base64")
            return None
        if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):
            self._err("[AUTH] authentication failed")
            return None
        return Login(parts[1], parts[2])

    def _cmd_quit(self, arg: str) -> Event | None:
        if self.state == "TRANSACTION":
            self.state = "UPDATE"
            return Update([d.uid for d in self.drops if d.deleted])
        self._ok(f"{self.hostname} POP3 server signing off")
        self.closed = True
        return Closed()

    def _transaction(self) -> bool:
        if self.state != "TRANSACTION":
            self._err("not authenticated")
            return False
        return True

    def _msg(self, arg: str) -> tuple[int, Drop] | None:
        try:
            n = int(arg.split()[0])
        except (ValueError, IndexError):
            self._err("a message number is needed")
            return None
        if not 1 <= n <= len(self.drops) or self.drops[n - 1].deleted:
            self._err("no such message")
            return None
        return n, self.drops[n - 1]

    def _cmd_stat(self, arg: str) -> None:
        if self._transaction():
            live = [d for d in self.drops if not d.deleted]
            self._ok(f"{len(live)} {sum(d.size for d in live)}")

    def _listing(self, arg: str, value: str) -> None:
        if not self._transaction():
            return
        if arg.strip():
            found = self._msg(arg)
            if found:
                n, d = found
                self._ok(f"{n} {d.size if value == 'size' else d.unique_id}")
            return
        rows = [
            f"{i} {d.size if value == 'size' else d.unique_id}\r\n"
            for i, d in enumerate(self.drops, 1) if not d.deleted
        ]
        self._out.append(b"+OK listing follows\r\n" + "".join(rows).encode() + b".\r\n")

    def _cmd_list(self, arg: str) -> None:
        self._listing(arg, "size")

    def _cmd_uidl(self, arg: str) -> None:
        self._listing(arg, "uid")

    def _cmd_retr(self, arg: str) -> Event | None:
        if not self._transaction():
            return None
        found = self._msg(arg)
        return Retrieve(found[0], found[1].uid, None) if found else None

    def _cmd_top(self, arg: str) -> Event | None:
        if not self._transaction():
            return None
        parts = arg.split()
        if len(parts) != 2 or not parts[1].isdigit():
            self._err("TOP needs a message number and a line count")
            return None
        found = self._msg(parts[0])
        return Retrieve(found[0], found[1].uid, int(parts[1])) if found else None

    def _cmd_dele(self, arg: str) -> None:
        if self._transaction():
            found = self._msg(arg)
            if found:
                found[1].deleted = True
                self._ok(f"message {found[0]} deleted")

    def _cmd_rset(self, arg: str) -> None:
        if self._transaction():
            for d in self.drops:
                d.deleted = False
            self._ok(f"maildrop has {len(self.drops)} messages")

    def _cmd_noop(self, arg: str) -> None:
        if self._transaction():
            self._ok()
