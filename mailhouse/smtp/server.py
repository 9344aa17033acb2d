"""Sans-I/O SMTP server state machine (RFC 5321 and extensions).

Bytes go in with :meth:`ServerConnection.receive_data`, events come out of
:meth:`ServerConnection.next_event`, reply bytes out of
:meth:`ServerConnection.data_to_send`. No sockets, no clock: the glue layer
in ``mailhouse.net`` does I/O and timeouts.

Contract with the glue:

* Call :meth:`~ServerConnection.greet` (or ``refuse``) first; until then
  ``next_event`` returns ``PAUSED``.
* Loop on ``next_event``. ``NEED_DATA``: flush ``data_to_send()`` and read
  more. ``PAUSED``: a decision event (``MailFrom``, ``RcptTo``,
  ``AuthAttempt``, ``DataComplete``, ``StartTLS``) awaits its answer.
  ``Quit``/``ConnectionClosed`` (or ``closed`` turning True): flush and close.
* After ``StartTLS``: flush, upgrade, then call ``tls_started()`` *before*
  feeding any decrypted byte; anything passed to ``receive_data`` between
  the event and ``tls_started()`` is discarded as plaintext injection.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mailhouse.smtp.grammar import _PLAIN_MAILBOX as _PLAIN_MAILBOX_PATTERN
from mailhouse.smtp.grammar import (
    AddressError,
    CommandError,
    GrammarError,
    LineEndingNormalizer,
    ParameterError,
    format_reply,
    is_xtext,
    normalize_line_endings,
    parse_command,
    parse_esmtp_params,
    parse_mail_from,
    parse_rcpt_to,
    xtext_decode,
)

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "AuthAttempt",
    "ConnectionClosed",
    "DataAborted",
    "DataChunk",
    "DataComplete",
    "DataStart",
    "Event",
    "Hello",
    "MailFrom",
    "Quit",
    "RcptTo",
    "Reset",
    "ServerConfig",
    "ServerConnection",
    "StartTLS",
    "StateError",
]


# --------------------------------------------------------------------------
# Configuration, sentinels, events
# --------------------------------------------------------------------------


@dataclass
class ServerConfig:
    """Settings of a session. The reply texts built from hostname, software,
    max_message_size, tls_available and auth_without_tls are fixed when a
    ServerConnection is created (and shared by sessions with equal values)."""

    hostname: str  # banner/EHLO name
    submission: bool = False  # True: AUTH required before MAIL (530 5.7.0)
    tls_available: bool = True  # STARTTLS offered (when TLS not already active)
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 100  # then 452 4.5.3
    max_errors: int = 20  # error replies before 421 4.7.0 and close
    max_command_line: int = 4096  # longer: 500 5.5.2, line discarded up to its CRLF
    auth_without_tls: bool = False  # AUTH is offered/accepted only under TLS unless this
    software: str = "mailhouse"


class NEED_DATA:
    """Sentinel: all buffered input is processed; flush output and read more."""


class PAUSED:
    """Sentinel: a decision is awaited (or greet()/refuse() was not called yet)."""


class StateError(RuntimeError):
    """The application called a method that does not fit the machine's state."""


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every event."""


@dataclass(frozen=True, slots=True)
class Hello(Event):
    """HELO/EHLO accepted (informational; the reply is already queued)."""

    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class MailFrom(Event):
    """Decision: call ``accept()`` or ``reject()``. ``address`` is "" for <>."""

    address: str
    params: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class RcptTo(Event):
    """Decision: call ``accept()`` or ``reject()``."""

    address: str
    params: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class AuthAttempt(Event):
    """Decision: ``auth_succeeded()``, ``auth_failed()`` or ``reject()``."""

    mechanism: str
    authzid: str
    username: str
    password: str

    def __repr__(self) -> str:
        # Events end up in logs; the password must not.
        return (
            f"AuthAttempt(mechanism={self.mechanism!r}, authzid={self.authzid!r}, "
            f"username={self.username!r}, password=<hidden>)"
        )


@dataclass(frozen=True, slots=True)
class StartTLS(Event):
    """220 queued and pipelined input discarded: flush, upgrade, ``tls_started()``."""


@dataclass(frozen=True, slots=True)
class DataStart(Event):
    """A message body begins (354 sent, or first BDAT chunk)."""


@dataclass(frozen=True, slots=True)
class DataChunk(Event):
    """Message content: dot-unstuffed, every line ending a CRLF."""

    data: bytes


@dataclass(frozen=True, slots=True)
class DataComplete(Event):
    """Decision: ``message_accepted(queue_id)`` or ``reject()``."""


@dataclass(frozen=True, slots=True)
class DataAborted(Event):
    """The body in progress is void; discard what was stored.

    ``reason``: "size", "rset", "ehlo", "starttls", "quit", "eof", "closed".
    """

    reason: str


@dataclass(frozen=True, slots=True)
class Reset(Event):
    """An open transaction was ended by RSET, HELO/EHLO or STARTTLS."""


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """QUIT received; 221 queued, the machine is closed."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The machine is closed (peer EOF, refuse(), too many errors, after Quit)."""


# --------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------


class _Mode(enum.Enum):
    COMMAND = enum.auto()
    SASL = enum.auto()  # next line is a SASL client response
    LONG_LINE = enum.auto()  # discarding an over-long line up to its LF
    DATA = enum.auto()
    BDAT = enum.auto()


class _Pending(enum.Enum):
    GREETING = enum.auto()
    MAIL = enum.auto()
    RCPT = enum.auto()
    AUTH = enum.auto()
    DATA = enum.auto()
    STARTTLS = enum.auto()


# Raw bytes handled per DATA/BDAT step. Normalizing bare LFs can at most
# double it, so a DataChunk never exceeds 256 KiB.
_SEGMENT: Final = 128 * 1024
_SMALL_SEGMENT: Final = 16 * 1024
_DATA_END: Final = b"\r\n.\r\n"
# CRLF "." starts both the end marker and a stuffed line; the regex engine's
# literal search finds it faster than bytes.find does.
_CRLF_DOT_RE: Final = re.compile(rb"\r\n\.")

_DIGITS_RE = re.compile(r"[0-9]{1,20}")
_ATOM_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_MAIL_PARAMS: Final = frozenset({"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH"})
_RCPT_PARAMS: Final = frozenset({"NOTIFY", "ORCPT"})
_NOTIFY_VALUES: Final = frozenset({"SUCCESS", "FAILURE", "DELAY"})

_LOGIN_USER_PROMPT: Final = base64.b64encode(b"Username:").decode("ascii")
_LOGIN_PASS_PROMPT: Final = base64.b64encode(b"Password:").decode("ascii")

_HELP_TEXT: Final = "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH"

# Enum members as module constants: one global lookup instead of two.
_COMMAND: Final = _Mode.COMMAND
_SASL: Final = _Mode.SASL
_LONG_LINE: Final = _Mode.LONG_LINE
_DATA: Final = _Mode.DATA
_BDAT: Final = _Mode.BDAT
_P_GREETING: Final = _Pending.GREETING
_P_MAIL: Final = _Pending.MAIL
_P_RCPT: Final = _Pending.RCPT
_P_AUTH: Final = _Pending.AUTH
_P_DATA: Final = _Pending.DATA
_P_STARTTLS: Final = _Pending.STARTTLS

# A printable-ASCII command line and its end (CRLF, or LF alone as the
# lenient reading allows): verb, then optionally SP and the argument.
# Anything else (UTF-8, control characters, malformed verbs) goes through
# grammar.parse_command, which gives the same result or the error.
_LINE_RE = re.compile(rb"([A-Za-z][A-Za-z0-9-]*)(?: ([ -~]*))?\r?\n")
# The ordinary MAIL and RCPT lines, address included, in one match: what
# parse_mail_from/parse_rcpt_to accept on their own fast path, as bytes.
# Groups: mailbox (None for <>), domain, parameter tail.
_MAILBOX_B = _PLAIN_MAILBOX_PATTERN.encode("ascii")
_MAIL_LINE_RE = re.compile(
    rb"[Mm][Aa][Ii][Ll] [Ff][Rr][Oo][Mm]: *<" + _MAILBOX_B + rb"?>( [ -~]*)?\r?\n"
)
_RCPT_LINE_RE = re.compile(rb"[Rr][Cc][Pp][Tt] [Tt][Oo]: *<" + _MAILBOX_B + rb">( [ -~]*)?\r?\n")

# Replies that never vary, formatted once by format_reply itself.
_R_OK: Final = format_reply(250, "2.0.0", "Ok")
_R_354: Final = format_reply(354, None, 'Enter mail, end with "." on a line by itself')
_R_TOO_BIG: Final = format_reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
_R_VRFY: Final = format_reply(
    252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"
)
_R_HELP: Final = format_reply(214, "2.0.0", _HELP_TEXT)
_R_STARTTLS: Final = format_reply(220, "2.0.0", "Ready to start TLS")
_R_AUTH_OK: Final = format_reply(235, "2.7.0", "Authentication successful")
_R_AUTH_TEMP: Final = format_reply(454, "4.7.0", "Temporary authentication failure")
_R_AUTH_BAD: Final = format_reply(535, "5.7.8", "Authentication credentials invalid")

# Events without fields are immutable: one instance each serves every session.
_EV_DATA_START: Final = DataStart()
_EV_DATA_COMPLETE: Final = DataComplete()
_EV_RESET: Final = Reset()
_EV_QUIT: Final = Quit()
_EV_CLOSED: Final = ConnectionClosed()
_EV_STARTTLS: Final = StartTLS()

# Error replies: a few dozen distinct texts, each formatted once.
_error_reply: Final = functools.lru_cache(maxsize=256)(format_reply)


def _text_reply(prefix: bytes, code: int, enhanced: str | None, text: str) -> bytes:
    """``format_reply(code, enhanced, text)``; ``prefix`` is "<code> <enhanced> "."""
    if type(text) is str and text and "\n" not in text and "\r" not in text:
        return prefix + text.encode("utf-8") + b"\r\n"
    return format_reply(code, enhanced, text)


class _Replies:
    """The replies that depend only on the configuration, formatted once."""

    __slots__ = (
        "closing",
        "ehlo_keywords",
        "ehlo_template",
        "greeting",
        "helo_template",
        "too_many_errors",
    )

    def __init__(
        self,
        hostname: str,
        software: str,
        max_message_size: int,
        tls_available: bool,
        auth_without_tls: bool,
    ) -> None:
        self.greeting = format_reply(220, None, f"{hostname} ESMTP {software}")
        self.closing = format_reply(221, "2.0.0", f"{hostname} closing connection")
        self.too_many_errors = format_reply(421, "4.7.0", f"{hostname} Error: too many errors")
        # HELO/EHLO first line "<hostname> Hello <name>, pleased to meet you":
        # the name never holds a line break (control characters are refused),
        # so with a plain hostname the reply is a template for "%" and the
        # name; otherwise (None) format_reply does it.
        plain = "\r" not in hostname and "\n" not in hostname
        head = f"{hostname} Hello ".encode().replace(b"%", b"%%") + b"%s, pleased to meet you\r\n"
        self.helo_template: bytes | None = b"250 " + head if plain else None
        # EHLO keyword lines and replies, indexed by "TLS active".
        keywords: list[tuple[str, ...]] = []
        templates: list[bytes | None] = []
        for tls in (False, True):
            lines = [
                "PIPELINING",
                f"SIZE {max_message_size}",
                "8BITMIME",
                "SMTPUTF8",
                "ENHANCEDSTATUSCODES",
                "CHUNKING",
                "DSN",
            ]
            if tls_available and not tls:
                lines.append("STARTTLS")
            if tls or auth_without_tls:
                lines.append("AUTH PLAIN LOGIN")
            keywords.append(tuple(lines))
            tail = format_reply(250, None, ["-", *lines])[len(b"250--\r\n") :]
            templates.append(b"250-" + head + tail.replace(b"%", b"%%") if plain else None)
        self.ehlo_keywords: tuple[tuple[str, ...], ...] = tuple(keywords)
        self.ehlo_template: tuple[bytes | None, ...] = tuple(templates)


_REPLIES: dict[tuple[str, str, int, bool, bool], _Replies] = {}


def _replies_for(config: ServerConfig) -> _Replies:
    key = (
        config.hostname,
        config.software,
        config.max_message_size,
        config.tls_available,
        config.auth_without_tls,
    )
    replies = _REPLIES.get(key)
    if replies is None:
        if len(_REPLIES) >= 64:
            _REPLIES.clear()
        replies = _REPLIES[key] = _Replies(*key)
    return replies


class _Reject(Exception):
    """Internal: abort a command with this reply."""

    def __init__(self, code: int, enhanced: str, text: str, *, counts: bool = True) -> None:
        super().__init__(text)
        self.code = code
        self.enhanced = enhanced
        self.text = text
        self.counts = counts


def _b64decode(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _Reject(501, "5.5.2", "Error: cannot decode base64 response") from None


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Reject(501, "5.5.2", "Error: credentials are not UTF-8") from None


# --------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------


class ServerConnection:
    """One SMTP server session. See the module docstring for the contract."""

    # Slots: a session holds more attributes than a key-sharing instance dict
    # takes, and every command reads a dozen of them.
    __slots__ = (
        "__weakref__",
        "_auth_user",
        "_bdat_error",
        "_bdat_failed",
        "_bdat_last",
        "_bdat_raw_total",
        "_bdat_remaining",
        "_bdat_size",
        "_bdat_used",
        "_bol",
        "_buf",
        "_closed",
        "_data_open",
        "_eof",
        "_errors",
        "_events",
        "_extended",
        "_helo",
        "_mail_from",
        "_mode",
        "_norm",
        "_out",
        "_oversize",
        "_pending",
        "_pending_address",
        "_pending_auth",
        "_pending_smtputf8",
        "_pos",
        "_r",
        "_rcpt_count",
        "_sasl_mech",
        "_sasl_user",
        "_scan",
        "_size",
        "_smtputf8",
        "_tls",
        "config",
    )

    def __init__(self, config: ServerConfig, *, tls_active: bool = False) -> None:
        self.config = config
        self._r = _replies_for(config)
        self._tls = tls_active
        # Unconsumed input is _buf[_pos:]; no LF in _buf[_pos:_scan].
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0
        self._out: list[bytes] = []  # replies not yet taken by data_to_send()
        self._events: deque[Event] = deque()
        self._mode = _Mode.COMMAND
        self._pending: _Pending | None = _Pending.GREETING
        self._closed = False
        self._eof = False
        self._errors = 0

        # Session.
        self._helo: str | None = None
        self._extended = False
        self._auth_user: str | None = None

        # SASL exchange in progress.
        self._sasl_mech = ""
        self._sasl_user: str | None = None
        self._pending_auth: AuthAttempt | None = None

        # Transaction. _mail_from is None when no transaction is open.
        self._mail_from: str | None = None
        self._smtputf8 = False
        self._rcpt_count = 0
        self._pending_address = ""
        self._pending_smtputf8 = False

        # Message body.
        self._data_open = False  # DataStart emitted, not yet complete/aborted
        self._size = 0
        self._oversize = False
        self._bol = True  # DATA: the unconsumed raw input starts a line
        self._bdat_used = False
        self._bdat_failed = False
        self._bdat_remaining = 0
        self._bdat_size = 0
        self._bdat_last = False
        self._bdat_raw_total = 0
        self._bdat_error: _Reject | None = None
        self._norm: LineEndingNormalizer | None = None  # made by the first BDAT

    # ------------------------------------------------------------------ props

    @property
    def buffered_input(self) -> int:
        return len(self._buf) - self._pos

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def tls_active(self) -> bool:
        return self._tls

    @property
    def helo_name(self) -> str | None:
        return self._helo

    @property
    def extended(self) -> bool:
        """True when the session was opened with EHLO."""
        return self._extended

    @property
    def authenticated_user(self) -> str | None:
        return self._auth_user

    @property
    def in_transaction(self) -> bool:
        return self._mail_from is not None

    # -------------------------------------------------------------- plumbing

    def greet(self) -> None:
        if self._closed:
            return  # refuse() came first
        if self._pending is not _P_GREETING:
            raise StateError("greet() called twice")
        self._pending = None
        self._out.append(self._r.greeting)

    def refuse(self, code: int, enhanced: str, text: str) -> None:
        """Send a final reply and close; usable at any time (greeting, shutdown).

        RFC 5321 wants the server's domain in a 421/554 greeting, so the
        hostname is prefixed to ``text``.
        """
        if self._closed:
            return
        if not 400 <= code <= 599:
            raise ValueError("refuse() needs a 4xx or 5xx code")
        self._reply(code, enhanced, f"{self.config.hostname} {text}")
        self._close("closed")

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the peer; ``b""`` signals EOF."""
        if self._closed:
            return
        if not data:
            self._eof = True
            return
        if self._pending is _P_STARTTLS:
            return  # still plaintext: injection attempt (CVE-2011-0411)
        if self._mode is _LONG_LINE and not self._buf:
            # Discard here, not in next_event, so a huge line never lands in
            # the buffer even if the glue feeds several reads in a row.
            idx = bytes(data).find(b"\n")
            if idx < 0:
                return
            data = memoryview(data)[idx:]
        self._buf += data

    def data_to_send(self) -> bytes:
        out = self._out
        data = b"".join(out)  # a single reply is returned as it is, no copy
        out.clear()
        return data

    def next_event(self) -> Event | type[NEED_DATA] | type[PAUSED]:
        events = self._events
        while True:
            if events:
                return events.popleft()
            if self._closed:
                return _EV_CLOSED
            pending = self._pending
            if pending is not None:
                if pending is _P_STARTTLS and self._eof:
                    self._close("eof")
                    continue
                return PAUSED
            mode = self._mode
            if mode is not _COMMAND:
                if self._pos:
                    del self._buf[: self._pos]
                    self._pos = 0
                self._scan = 0
                if mode is _DATA:
                    progressed = self._step_data()
                elif mode is _BDAT:
                    progressed = self._step_bdat()
                else:
                    progressed = self._step_line()
                if progressed:
                    continue
            elif self._buf:
                # Command lines. The hot path, inline: a plain printable-ASCII
                # line, found and split by one match at the start of the input.
                buf = self._buf
                pos = self._pos
                if self._scan != pos:
                    m = None  # a partial line was searched already
                else:
                    first = buf[pos] | 0x20  # ASCII letters in lower case
                    if first == 0x6D or first == 0x72:  # "m", "r"
                        mail = first == 0x6D
                        m = (_MAIL_LINE_RE if mail else _RCPT_LINE_RE).match(buf, pos)
                        if m is not None:
                            nxt = m.end()
                            mailbox, domain, tail = m.groups()
                            if nxt - pos <= self.config.max_command_line + 1 and (
                                domain is None or len(domain) <= 255
                            ):
                                if nxt >= len(buf):
                                    buf.clear()
                                    self._pos = self._scan = 0
                                else:
                                    self._pos = self._scan = nxt
                                address = mailbox.decode("ascii") if mailbox else ""
                                params = tail.decode("ascii") if tail else ""
                                try:
                                    if mail:
                                        self._mail("", address, params)
                                    else:
                                        self._rcpt("", address, params)
                                except _Reject as r:
                                    self._error(r.code, r.enhanced, r.text, counts=r.counts)
                                continue
                    m = _LINE_RE.match(buf, pos)
                if m is not None:
                    nxt = m.end()
                    if nxt - pos <= self.config.max_command_line + 1:
                        # Take the groups first: a match slices its subject lazily.
                        verb, arg = m.groups()
                        if nxt >= len(buf):
                            buf.clear()
                            self._pos = self._scan = 0
                        else:
                            self._pos = self._scan = nxt
                        handler = _VERBS.get(verb) or _VERBS.get(verb.upper())
                        try:
                            if handler is None:
                                raise _Reject(500, "5.5.2", "Error: command not recognized")
                            handler(self, arg.decode("ascii").strip(" ") if arg else "")
                        except _Reject as r:
                            self._error(r.code, r.enhanced, r.text, counts=r.counts)
                        continue
                if self._command_line():
                    continue
            if self._eof:
                self._close("eof")
                continue
            return NEED_DATA

    def _command_line(self) -> bool:
        """Command mode, every other case: a partial line, a long one, one that
        is not plain ASCII (parse_command decides). False: more input needed."""
        buf = self._buf
        pos = self._pos
        limit = self.config.max_command_line
        idx = buf.find(b"\n", self._scan)
        if idx < 0:
            n = len(buf)
            self._scan = n  # not searched again
            # +1 leaves room for the CR of a CRLF whose LF is still in flight.
            if n - pos > limit + 1:
                self._discard_input()
                self._mode = _LONG_LINE
                return True
            return False
        end = idx - 1 if idx > pos and buf[idx - 1] == 0x0D else idx
        line = bytes(buf[pos:end]) if end - pos <= limit else None
        self._consumed(idx + 1)
        if line is None:
            self._line_too_long()
        else:
            self._command(line)
        return True

    def _consumed(self, nxt: int) -> None:
        """Input up to ``nxt`` is used up (command mode)."""
        if nxt >= len(self._buf):
            self._buf.clear()
            self._pos = self._scan = 0
        else:
            self._pos = self._scan = nxt

    def _discard_input(self) -> None:
        self._buf.clear()
        self._pos = self._scan = 0

    # -------------------------------------------------------------- decisions

    def _decide(self, *allowed: _Pending) -> _Pending | None:
        if self._closed:
            return None  # e.g. refuse() raced the application's decision
        if self._pending not in allowed:
            raise StateError(f"no {'/'.join(p.name for p in allowed)} decision pending")
        pending = self._pending
        self._pending = None
        return pending

    def accept(self, text: str | None = None) -> None:
        """Accept the pending MailFrom (250 2.1.0) or RcptTo (250 2.1.5)."""
        if self._closed:
            return  # e.g. refuse() raced the application's decision
        pending = self._pending
        if pending is _P_MAIL:
            self._pending = None
            address = self._pending_address
            self._mail_from = address
            self._smtputf8 = self._pending_smtputf8
            self._rcpt_count = 0
            if text:
                self._out.append(_text_reply(b"250 2.1.0 ", 250, "2.1.0", text))
            else:
                # A parsed address holds no line break: one line, as format_reply makes it.
                self._out.append(f"250 2.1.0 {address or '<>'} ... Sender ok\r\n".encode())
        elif pending is _P_RCPT:
            self._pending = None
            self._rcpt_count += 1
            if text:
                self._out.append(_text_reply(b"250 2.1.5 ", 250, "2.1.5", text))
            else:
                self._out.append(f"250 2.1.5 {self._pending_address} ... Recipient ok\r\n".encode())
        else:
            self._decide(_P_MAIL, _P_RCPT)  # raises StateError

    def reject(self, code: int, enhanced: str, text: str) -> None:
        """Refuse the pending MailFrom/RcptTo/AuthAttempt/DataComplete."""
        if not 400 <= code <= 599:
            raise ValueError("reject() needs a 4xx or 5xx code")
        pending = self._decide(_P_MAIL, _P_RCPT, _P_AUTH, _P_DATA)
        if pending is None:
            return
        if pending is _P_DATA:
            self._clear_transaction()
        elif pending is _P_AUTH:
            self._pending_auth = None
        self._reply(code, enhanced, text)

    def auth_succeeded(self) -> None:
        if self._decide(_P_AUTH) is None:
            return
        assert self._pending_auth is not None
        self._auth_user = self._pending_auth.username
        self._pending_auth = None
        self._out.append(_R_AUTH_OK)

    def auth_failed(self, temporary: bool = False) -> None:
        if self._decide(_P_AUTH) is None:
            return
        self._pending_auth = None
        self._out.append(_R_AUTH_TEMP if temporary else _R_AUTH_BAD)

    def message_accepted(self, queue_id: str) -> None:
        if self._closed:
            return
        if self._pending is not _P_DATA:
            self._decide(_P_DATA)  # raises StateError
        self._pending = None
        self._clear_transaction()
        self._out.append(
            _text_reply(
                b"250 2.0.0 ", 250, "2.0.0", f"Message accepted for delivery: queued as {queue_id}"
            )
        )

    def tls_started(self) -> None:
        """TLS is up: back to just-connected state, without a new greeting.

        RFC 3207 §4.2: everything learnt before the handshake (EHLO name,
        authentication) is forgotten.
        """
        if self._decide(_P_STARTTLS) is None:
            return
        self._tls = True
        self._helo = None
        self._extended = False
        self._auth_user = None
        self._discard_input()
        self._mode = _COMMAND

    # -------------------------------------------------------------- helpers

    def _reply(self, code: int, enhanced: str | None, text: str | list[str]) -> None:
        self._out.append(format_reply(code, enhanced, text))

    def _error(self, code: int, enhanced: str, text: str, *, counts: bool = True) -> None:
        self._out.append(_error_reply(code, enhanced, text))
        if not counts:
            return
        self._errors += 1
        if self._errors >= self.config.max_errors:
            self._out.append(self._r.too_many_errors)
            self._close("closed")

    def _close(self, reason: str) -> None:
        if self._data_open:
            self._events.append(DataAborted(reason))
            self._data_open = False
        self._closed = True
        self._pending = None
        self._discard_input()

    def _clear_transaction(self) -> None:
        self._mail_from = None
        self._smtputf8 = False
        self._rcpt_count = 0
        self._data_open = False
        self._oversize = False
        self._size = 0
        self._bdat_used = False
        self._bdat_failed = False
        self._bdat_raw_total = 0

    def _end_transaction(self, reason: str) -> None:
        """RSET/EHLO/STARTTLS: tell the application if something was open."""
        if self._data_open:
            self._events.append(DataAborted(reason))
            self._data_open = False
        if self._mail_from is not None:
            self._events.append(_EV_RESET)
        self._clear_transaction()

    def _auth_offered(self) -> bool:
        return self._tls or self.config.auth_without_tls

    # -------------------------------------------------------------- stepping

    def _step_line(self) -> bool:
        """Over-long line or SASL response; False when more input is needed."""
        buf = self._buf
        idx = buf.find(b"\n")
        if self._mode is _LONG_LINE:
            if idx < 0:
                buf.clear()
                return False
            del buf[: idx + 1]
            self._line_too_long()
            return True
        # _SASL: a client response line.
        limit = self.config.max_command_line
        if idx < 0:
            # +1 leaves room for the CR of a CRLF whose LF is still in flight.
            if len(buf) > limit + 1:
                buf.clear()
                self._mode = _LONG_LINE
                return True
            return False
        end = idx - 1 if idx > 0 and buf[idx - 1] == 0x0D else idx
        if end > limit:
            del buf[: idx + 1]
            self._line_too_long()
            return True
        line = bytes(buf[:end])
        del buf[: idx + 1]
        try:
            self._sasl_line(line)
        except _Reject as r:
            self._error(r.code, r.enhanced, r.text, counts=r.counts)
        return True

    def _line_too_long(self) -> None:
        # One reply per over-long line, sent when its end arrives, keeps
        # replies in step with a pipelining client.
        self._mode = _COMMAND
        if self._sasl_mech:
            self._sasl_mech = ""
            self._sasl_user = None
            self._error(500, "5.5.6", "Authentication Exchange line is too long")
        else:
            self._error(500, "5.5.2", "Line too long")

    # ------------------------------------------------------------- commands

    def _command(self, line: bytes) -> None:
        """A command line that is not plain printable ASCII (next_event has the rest)."""
        try:
            try:
                verb, arg = parse_command(line)
            except CommandError:
                raise _Reject(500, "5.5.2", "Error: bad syntax") from None
            handler = self._handlers.get(verb)
            if handler is None:
                raise _Reject(500, "5.5.2", "Error: command not recognized")
            handler(self, arg)
        except _Reject as r:
            self._error(r.code, r.enhanced, r.text, counts=r.counts)

    def _require_helo(self) -> None:
        if self._helo is None:
            raise _Reject(503, "5.5.1", "Error: send HELO/EHLO first")

    def _cmd_helo(self, arg: str) -> None:
        self._hello(arg, False)

    def _cmd_ehlo(self, arg: str) -> None:
        self._hello(arg, True)

    def _hello(self, arg: str, extended: bool) -> None:
        if not arg or " " in arg:
            raise _Reject(501, "5.5.4", f"Syntax: {'EHLO' if extended else 'HELO'} hostname")
        # RFC 5321 §4.1.4: a new EHLO resets the state like RSET.
        self._end_transaction("ehlo")
        self._helo = arg
        self._extended = extended
        r = self._r
        template = r.ehlo_template[self._tls] if extended else r.helo_template
        if template is not None:
            self._out.append(template % arg.encode())
        else:  # the hostname holds a line break: format_reply decides
            first = f"{self.config.hostname} Hello {arg}, pleased to meet you"
            keywords = r.ehlo_keywords[self._tls]
            self._reply(250, None, [first, *keywords] if extended else first)
        self._events.append(Hello(arg, extended))

    def _cmd_mail(self, arg: str) -> None:
        self._mail(arg, None, "")

    def _mail(self, arg: str, address: str | None, tail: str) -> None:
        """MAIL; ``address`` not None: next_event's match has parsed the path
        already (``tail``: the parameter text), else ``arg`` is parsed here."""
        if self._helo is None:
            raise _Reject(503, "5.5.1", "Error: send HELO/EHLO first")
        if self.config.submission and self._auth_user is None:
            raise _Reject(530, "5.7.0", "Authentication required")
        if self._mail_from is not None:
            raise _Reject(503, "5.5.1", "Error: nested MAIL command")
        try:
            if address is None:
                address, params, utf8 = parse_mail_from(arg)
            else:
                params = parse_esmtp_params(tail) if tail else {}
                utf8 = False
        except (CommandError, AddressError, ParameterError) as e:
            raise self._path_error(e, "MAIL FROM", "5.1.7", "sender") from None
        smtputf8 = False
        if params:
            unknown = params.keys() - _MAIL_PARAMS
            if unknown:
                raise _Reject(555, "5.5.4", f"Unsupported parameter: {sorted(unknown)[0]}")
            self._check_mail_params(params)
            smtputf8 = "SMTPUTF8" in params
        if utf8 and not smtputf8:
            raise _Reject(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
        if params:
            size = params.get("SIZE")
            if size is not None and int(size) > self.config.max_message_size:
                raise _Reject(
                    552, "5.3.4", "Message size exceeds fixed maximum message size", counts=False
                )
        self._pending_address = address
        self._pending_smtputf8 = smtputf8
        self._pending = _P_MAIL
        self._events.append(MailFrom(address, params))

    def _cmd_rcpt(self, arg: str) -> None:
        self._rcpt(arg, None, "")

    def _rcpt(self, arg: str, address: str | None, tail: str) -> None:
        """RCPT, as :meth:`_mail`."""
        if self._mail_from is None:
            raise _Reject(503, "5.5.1", "Error: need MAIL command")
        if self._bdat_used:
            raise _Reject(503, "5.5.1", "Error: RCPT not allowed after BDAT")
        try:
            if address is None:
                address, params, utf8 = parse_rcpt_to(arg)
            else:
                params = parse_esmtp_params(tail) if tail else {}
                utf8 = False
        except (CommandError, AddressError, ParameterError) as e:
            raise self._path_error(e, "RCPT TO", "5.1.3", "recipient") from None
        if params:
            unknown = params.keys() - _RCPT_PARAMS
            if unknown:
                raise _Reject(555, "5.5.4", f"Unsupported parameter: {sorted(unknown)[0]}")
            self._check_rcpt_params(params)
        if utf8 and not self._smtputf8:
            raise _Reject(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
        if self._rcpt_count >= self.config.max_recipients:
            raise _Reject(452, "4.5.3", "Too many recipients", counts=False)
        self._pending_address = address
        self._pending = _P_RCPT
        self._events.append(RcptTo(address, params))

    @staticmethod
    def _path_error(e: GrammarError, verb: str, enhanced: str, what: str) -> _Reject:
        if isinstance(e, AddressError):
            return _Reject(501, enhanced, f"Bad {what} address syntax: {e.reason}")
        if isinstance(e, ParameterError):
            return _Reject(501, "5.5.4", f"Syntax error in parameters: {e.reason}")
        return _Reject(501, "5.5.4", f"Syntax: {verb}:<address>")

    @staticmethod
    def _bad_param(name: str) -> _Reject:
        return _Reject(501, "5.5.4", f"Bad {name} parameter value")

    def _check_mail_params(self, params: dict[str, str | None]) -> None:
        for key, value in params.items():
            if key == "SMTPUTF8":
                if value is not None:
                    raise self._bad_param(key)
                continue
            if value is None:
                raise self._bad_param(key)
            if key == "SIZE":
                if not _DIGITS_RE.fullmatch(value):
                    raise self._bad_param(key)
            elif key == "BODY":
                value = value.upper()
                if value not in ("7BIT", "8BITMIME"):
                    raise self._bad_param(key)
                params[key] = value
            elif key == "RET":
                value = value.upper()
                if value not in ("FULL", "HDRS"):
                    raise self._bad_param(key)
                params[key] = value
            elif key == "ENVID":
                try:
                    envid = xtext_decode(value)
                except GrammarError:
                    raise self._bad_param(key) from None
                if len(envid) > 100:  # RFC 3461 §4.4
                    raise self._bad_param(key)
            elif key == "AUTH" and value != "<>" and not is_xtext(value):
                raise self._bad_param(key)

    def _check_rcpt_params(self, params: dict[str, str | None]) -> None:
        for key, value in params.items():
            if value is None:
                raise self._bad_param(key)
            if key == "NOTIFY":
                items = value.upper().split(",")
                if items == ["NEVER"]:
                    params[key] = "NEVER"
                    continue
                if len(set(items)) != len(items) or not set(items) <= _NOTIFY_VALUES:
                    raise self._bad_param(key)
                params[key] = ",".join(items)
            elif key == "ORCPT":
                addr_type, sep, addr = value.partition(";")
                if not sep or not _ATOM_RE.fullmatch(addr_type) or not addr:
                    raise self._bad_param(key)
                # RFC 6533 utf-8-addr-unitext carries raw UTF-8 under SMTPUTF8.
                raw_utf8 = self._smtputf8 and addr_type.lower() == "utf-8"
                if not is_xtext(addr) and not (raw_utf8 and not addr.isascii()):
                    raise self._bad_param(key)

    def _cmd_data(self, arg: str) -> None:
        if arg:
            raise _Reject(501, "5.5.4", "Syntax: DATA")
        if self._mail_from is None:
            raise _Reject(503, "5.5.1", "Error: need MAIL command")
        if self._bdat_used:
            raise _Reject(503, "5.5.1", "Error: DATA not allowed after BDAT")
        if self._rcpt_count == 0:
            raise _Reject(554, "5.5.1", "No valid recipients")
        self._out.append(_R_354)
        self._mode = _DATA
        self._bol = True
        self._size = 0
        self._oversize = False
        self._data_open = True
        self._events.append(_EV_DATA_START)

    def _cmd_bdat(self, arg: str) -> None:
        parts = arg.split(" ")
        if (
            not 1 <= len(parts) <= 2
            or not _DIGITS_RE.fullmatch(parts[0])
            or (len(parts) == 2 and parts[1].upper() != "LAST")
        ):
            raise _Reject(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]")
        size = int(parts[0])
        last = len(parts) == 2
        self._mode = _BDAT
        self._bdat_remaining = size
        self._bdat_size = size
        self._bdat_last = last
        self._bdat_error = None
        # RFC 3030 §2: the chunk is consumed whatever the verdict, otherwise
        # its bytes would be read as commands.
        if self._bdat_failed:
            # Chunks already in the pipeline after a failed one (RFC 3030 §2).
            self._bdat_error = _Reject(
                552, "5.3.4", "Message size exceeds fixed maximum message size", counts=False
            )
        elif self._helo is None:
            self._bdat_error = _Reject(503, "5.5.1", "Error: send HELO/EHLO first")
        elif self._mail_from is None:
            self._bdat_error = _Reject(503, "5.5.1", "Error: need MAIL command")
        elif self._rcpt_count == 0:
            self._bdat_error = _Reject(503, "5.5.1", "Error: need RCPT command")
        else:
            if not self._bdat_used:
                self._bdat_used = True
                self._data_open = True
                self._size = 0
                self._oversize = False
                self._norm = LineEndingNormalizer()
                self._events.append(_EV_DATA_START)
            self._bdat_raw_total += size
            # CRLF normalization only grows content, so the declared size is
            # a lower bound: refuse at once instead of after reading it all.
            if not self._oversize and self._bdat_raw_total > self.config.max_message_size:
                self._overflow()

    def _cmd_rset(self, arg: str) -> None:
        if arg:
            raise _Reject(501, "5.5.4", "Syntax: RSET")
        self._end_transaction("rset")
        self._out.append(_R_OK)

    def _cmd_noop(self, arg: str) -> None:
        self._out.append(_R_OK)

    def _cmd_quit(self, arg: str) -> None:
        if arg:
            raise _Reject(501, "5.5.4", "Syntax: QUIT")
        self._out.append(self._r.closing)
        if self._data_open:
            self._events.append(DataAborted("quit"))
            self._data_open = False
        self._events.append(_EV_QUIT)
        self._closed = True
        self._discard_input()

    def _cmd_vrfy(self, arg: str) -> None:
        if not arg:
            raise _Reject(501, "5.5.4", "Syntax: VRFY address")
        # Never confirm: VRFY is an address-harvesting oracle (RFC 5321 §7.3).
        self._out.append(_R_VRFY)

    def _cmd_expn(self, arg: str) -> None:
        raise _Reject(502, "5.5.1", "Error: EXPN not supported", counts=False)

    def _cmd_help(self, arg: str) -> None:
        self._out.append(_R_HELP)

    def _cmd_starttls(self, arg: str) -> None:
        if arg:
            raise _Reject(501, "5.5.4", "Syntax: STARTTLS")
        if self._tls:
            raise _Reject(503, "5.5.1", "Error: TLS already active")
        if not self.config.tls_available:
            raise _Reject(502, "5.5.1", "Error: command not implemented")
        self._require_helo()
        self._end_transaction("starttls")
        self._out.append(_R_STARTTLS)
        # Anything pipelined behind STARTTLS arrived in clear text and must
        # not be executed inside the TLS session (CVE-2011-0411).
        self._discard_input()
        self._pending = _P_STARTTLS
        self._events.append(_EV_STARTTLS)

    # ----------------------------------------------------------------- AUTH

    def _cmd_auth(self, arg: str) -> None:
        self._require_helo()
        if self._auth_user is not None:
            raise _Reject(503, "5.5.1", "Error: already authenticated")
        if self._mail_from is not None:
            raise _Reject(503, "5.5.1", "Error: MAIL transaction in progress")
        if not self._auth_offered():
            raise _Reject(
                538, "5.7.11", "Encryption required for requested authentication mechanism"
            )
        parts = arg.split(" ")
        if not parts[0] or len(parts) > 2:
            raise _Reject(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
        mech = parts[0].upper()
        if mech not in ("PLAIN", "LOGIN"):
            raise _Reject(504, "5.5.4", "Unrecognized authentication type")
        initial: bytes | None = None
        if len(parts) == 2:
            # RFC 4954 §4: "=" stands for an empty initial response.
            initial = b"" if parts[1] == "=" else _b64decode(parts[1].encode("ascii", "replace"))
        self._sasl_mech = mech
        self._sasl_user = None
        if mech == "PLAIN":
            if initial is None:
                self._sasl_challenge("")
            else:
                self._sasl_plain(initial)
        elif initial is None:
            self._sasl_challenge(_LOGIN_USER_PROMPT)
        else:
            self._sasl_login(initial)

    def _sasl_challenge(self, challenge: str) -> None:
        # RFC 4954 §4: "334" SP [base64] -- the space stays even when empty,
        # which format_reply would (rightly, for ordinary replies) drop.
        self._out.append(f"334 {challenge}\r\n".encode("ascii"))
        self._mode = _SASL

    def _sasl_line(self, line: bytes) -> None:
        self._mode = _COMMAND
        if line == b"*":
            self._sasl_mech = ""
            raise _Reject(501, "5.0.0", "Authentication cancelled", counts=False)
        try:
            response = _b64decode(line)
        except _Reject:
            self._sasl_mech = ""
            raise
        if self._sasl_mech == "PLAIN":
            self._sasl_plain(response)
        else:
            self._sasl_login(response)

    def _sasl_plain(self, response: bytes) -> None:
        self._sasl_mech = ""
        parts = response.split(b"\x00")
        # RFC 4616: [authzid] NUL authcid NUL passwd, the last two non-empty.
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise _Reject(501, "5.5.2", "Error: malformed PLAIN response")
        authzid, user, password = (_utf8(p) for p in parts)
        self._auth_attempt(AuthAttempt("PLAIN", authzid, user, password))

    def _sasl_login(self, response: bytes) -> None:
        if self._sasl_user is None:
            if not response:
                self._sasl_mech = ""
                raise _Reject(501, "5.5.2", "Error: empty user name")
            try:
                self._sasl_user = _utf8(response)
            except _Reject:
                self._sasl_mech = ""
                raise
            self._sasl_challenge(_LOGIN_PASS_PROMPT)
            return
        self._sasl_mech = ""
        user, self._sasl_user = self._sasl_user, None
        self._auth_attempt(AuthAttempt("LOGIN", "", user, _utf8(response)))

    def _auth_attempt(self, attempt: AuthAttempt) -> None:
        self._pending_auth = attempt
        self._pending = _P_AUTH
        self._events.append(attempt)

    # ------------------------------------------------------------ DATA body

    def _content(self, content: bytes) -> None:
        if self._oversize or not content:
            return
        self._size += len(content)
        if self._size > self.config.max_message_size:
            self._overflow()
            return
        self._events.append(DataChunk(content))

    def _overflow(self) -> None:
        self._oversize = True
        self._data_open = False
        self._events.append(DataAborted("size"))

    def _step_data(self) -> bool:
        buf = self._buf
        n = len(buf)
        if not n:
            return False
        if self._bol and buf.startswith(b".\r\n"):
            # The terminator right at a line start (also: empty message).
            del buf[:3]
            self._data_finished()
            return True
        # The marker search is bounded like the segment so a huge buffer is
        # not rescanned on every step. The first CRLF "." is either the end
        # marker, and then no line before it needs unstuffing, or a stuffed
        # dot; only the latter costs a second search.
        limit = _SEGMENT + len(_DATA_END)
        m = _CRLF_DOT_RE.search(buf, 0, limit)
        idx = -1 if m is None else m.start()
        stuffed = False
        if idx >= 0 and (idx + len(_DATA_END) > limit or not buf.startswith(b"\r\n", idx + 3)):
            stuffed = True
            idx = buf.find(_DATA_END, idx + 1, limit)
        if idx >= 0:
            seg_end = idx + 2  # keep the CRLF: it ends the last content line
            consume = idx + len(_DATA_END)
        else:
            # Hold back 4 bytes: any prefix of the 5-byte marker fits in them,
            # and a marker starting earlier would have been found.
            seg_end = min(n - 4, _SEGMENT)
            if seg_end > 0 and buf[seg_end - 1] == 0x0D:
                seg_end -= 1  # never split a CRLF: its halves would become 2 lines
            if seg_end <= 0:
                return False
            consume = seg_end
        if seg_end <= _SMALL_SEGMENT:
            seg = bytes(buf[:seg_end])  # two copies, still cheaper than a view
        else:
            with memoryview(buf) as view:
                seg = bytes(view[:seg_end])
        del buf[:consume]
        raw_ends_line = seg.endswith(b"\r\n")
        if not self._oversize:
            # Unstuff only dots that follow a real CRLF; bare CR/LF are not line
            # ends for this purpose (SMTP smuggling).
            if self._bol and seg[:1] == b".":
                seg = seg[1:]
            if stuffed:
                seg = seg.replace(b"\r\n.", b"\r\n")
            self._content(normalize_line_endings(seg))
        self._bol = raw_ends_line
        if idx >= 0:
            self._data_finished()
        return True

    def _data_finished(self) -> None:
        self._mode = _COMMAND
        if self._oversize:
            self._clear_transaction()
            self._out.append(_R_TOO_BIG)
            return
        self._data_open = False
        self._pending = _P_DATA
        self._events.append(_EV_DATA_COMPLETE)

    def _normalizer(self) -> LineEndingNormalizer:
        norm = self._norm
        if norm is None:
            norm = self._norm = LineEndingNormalizer()
        return norm

    def _step_bdat(self) -> bool:
        buf = self._buf
        if self._bdat_remaining > 0:
            if not buf:
                return False
            take = min(self._bdat_remaining, len(buf), _SEGMENT)
            with memoryview(buf) as view:
                piece = bytes(view[:take])
            del buf[:take]
            self._bdat_remaining -= take
            if self._bdat_error is None and not self._oversize:
                self._content(self._normalizer().feed(piece))
            return True
        self._mode = _COMMAND
        error, self._bdat_error = self._bdat_error, None
        if error is not None:
            if self._bdat_failed and self._bdat_last:
                self._clear_transaction()
            self._error(error.code, error.enhanced, error.text, counts=error.counts)
            return True
        if self._bdat_last and not self._oversize:
            self._content(self._normalizer().flush())
        if self._oversize:
            if self._bdat_last:
                self._clear_transaction()
            else:
                self._bdat_failed = True
            self._out.append(_R_TOO_BIG)
        elif self._bdat_last:
            self._data_open = False
            self._pending = _P_DATA
            self._events.append(_EV_DATA_COMPLETE)
        else:
            self._out.append(b"250 2.0.0 %d octets received\r\n" % self._bdat_size)
        return True

    _handlers: Final = {
        "HELO": _cmd_helo,
        "EHLO": _cmd_ehlo,
        "MAIL": _cmd_mail,
        "RCPT": _cmd_rcpt,
        "DATA": _cmd_data,
        "BDAT": _cmd_bdat,
        "RSET": _cmd_rset,
        "NOOP": _cmd_noop,
        "QUIT": _cmd_quit,
        "VRFY": _cmd_vrfy,
        "EXPN": _cmd_expn,
        "HELP": _cmd_help,
        "STARTTLS": _cmd_starttls,
        "AUTH": _cmd_auth,
    }


# The fast path's verb table: what _COMMAND_RE captured, as sent or upper-cased.
_VERBS: Final[dict[bytes, Callable[[ServerConnection, str], None]]] = {
    verb.encode("ascii"): handler for verb, handler in ServerConnection._handlers.items()
}
