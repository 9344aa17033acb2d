"""Sans-I/O SMTP client state machine (RFC 5321 and extensions).

Bytes from the server go in with :meth:`ClientConnection.receive_data`,
events come out of :meth:`ClientConnection.next_event`, bytes for the server
come out of :meth:`ClientConnection.data_to_send`. No sockets, no clock: the
delivery layer does I/O and applies :attr:`ClientConnection.reply_timeout`.

Contract with the driver:

* Loop on ``next_event()``. ``NEED_DATA``: write ``data_to_send()`` and read
  more (``receive_data(b"")`` on EOF). Also write ``data_to_send()`` after
  every action method.
* ``Greeting`` comes first; the machine then says EHLO (HELO when EHLO gets
  a 5xx) and, when ``want_tls`` and the server offers STARTTLS, starts TLS by
  itself (``TLSRequired``).
* ``Ready`` is emitted every time the machine becomes idle: after the hello,
  after TLS was refused, after a login attempt, after each transaction and
  after ``reset()``/``noop()``. Only then are the actions (``send_envelope``,
  ``start_tls``, ``login``, ``reset``, ``noop``, ``quit``) allowed; taking one
  drops a ``Ready`` still waiting in the event queue.
* ``TLSRequired``: write ``data_to_send()``, do the handshake, call
  ``tls_established()`` *before* feeding any decrypted byte. Bytes received in
  between are dropped (plaintext injected after the 220).
* A transaction: ``send_envelope(env)`` → ``MailRejected`` or one
  ``RecipientResult`` per recipient → ``ReadyForContent`` → ``send_content``
  until ``final=True`` → ``MessageResult``; or, at any point,
  ``TransactionFailed``. Then ``Ready``. A recipient's outcome is the first
  negative reply on its path (MailRejected, its RecipientResult, then
  TransactionFailed/MessageResult).
* ``ConnectionFailed`` and ``Closed`` are terminal and returned again by every
  later ``next_event()``; actions are then ignored. After ``ConnectionFailed``
  write ``data_to_send()`` (a courtesy QUIT may be queued) and close.
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

from mailhouse.smtp.grammar import (
    AddressError,
    DotStuffer,
    LineEndingNormalizer,
    ProtocolError,
    Reply,
    ReplyParser,
    parse_ehlo_keywords,
    parse_path,
    xtext_encode,
)

__all__ = [
    "NEED_DATA",
    "AuthFailed",
    "AuthSucceeded",
    "ClientConnection",
    "Closed",
    "ConnectionFailed",
    "Envelope",
    "Event",
    "FailureReason",
    "Greeting",
    "MailRejected",
    "MessageResult",
    "Ready",
    "ReadyForContent",
    "RecipientResult",
    "RecipientSpec",
    "StateError",
    "TLSRefused",
    "TLSRequired",
    "TransactionFailed",
    "Transcript",
]


# --------------------------------------------------------------------------
# Envelope
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecipientSpec:
    """One forward-path with its DSN parameters (RFC 3461), all decoded.

    ``notify``: "NEVER" or a comma list of SUCCESS/FAILURE/DELAY.
    ``orcpt``: the original recipient, either a bare address (typed rfc822,
    or utf-8 when non-ASCII) or ``"type;address"``; the machine encodes it.
    """

    address: str
    notify: str | None = None
    orcpt: str | None = None


@dataclass(slots=True)
class Envelope:
    sender: str  # "" = null reverse-path <>
    recipients: list[RecipientSpec]
    size: int  # message size in octets, for SIZE=
    body_8bit: bool  # message has 8-bit content: needs BODY=8BITMIME
    smtputf8: bool  # needs SMTPUTF8 (non-ASCII addresses or headers)
    ret: str | None = None  # DSN RET: FULL or HDRS
    envid: str | None = None  # DSN ENVID, decoded


# --------------------------------------------------------------------------
# Sentinels and events
# --------------------------------------------------------------------------


class NEED_DATA:
    """Sentinel: all input is processed; write data_to_send() and read more."""


class StateError(RuntimeError):
    """The driver called an action that does not fit the machine's state."""


FailureReason = Literal[
    "bad_sender",  # local: the reverse-path is not a valid address
    "smtputf8_unsupported",  # local: needs SMTPUTF8, the server lacks it
    "8bitmime_unsupported",  # local: 8-bit body, server lacks 8BITMIME (convert first)
    "size_exceeded",  # local: larger than the server's SIZE
    "mail_rejected",  # MAIL FROM refused (MailRejected was emitted too)
    "no_valid_recipients",  # every RCPT refused (or, local, every address invalid)
    "data_refused",  # DATA refused although recipients were accepted
    "content_refused",  # a non-final BDAT chunk refused
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every event."""


@dataclass(frozen=True, slots=True)
class Greeting(Event):
    """The server's 220 banner; EHLO is already queued."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Ready(Event):
    """Idle: the driver may take an action.

    ``extensions`` maps upper-cased EHLO keywords to their parameters (empty
    after a HELO fallback); ``tls`` tells whether the session is under TLS.
    """

    extensions: dict[str, list[str]]
    tls: bool


@dataclass(frozen=True, slots=True)
class TLSRequired(Event):
    """The server said 220 to STARTTLS: handshake now, then tls_established()."""


@dataclass(frozen=True, slots=True)
class TLSRefused(Event):
    """STARTTLS got a non-220 reply; ``Ready`` follows (still in clear text).

    Opportunistic TLS just carries on; a policy requiring TLS calls quit().
    """

    reply: Reply


@dataclass(frozen=True, slots=True)
class AuthSucceeded(Event):
    reply: Reply


@dataclass(frozen=True, slots=True)
class AuthFailed(Event):
    reply: Reply


@dataclass(frozen=True, slots=True)
class RecipientResult(Event):
    """The reply to one RCPT (or a local 553 for an invalid address)."""

    address: str
    reply: Reply

    @property
    def accepted(self) -> bool:
        return self.reply.is_positive


@dataclass(frozen=True, slots=True)
class MailRejected(Event):
    """MAIL FROM was refused: the reply applies to every recipient."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class ReadyForContent(Event):
    """Call send_content() with the message (CRLF lines) until final=True."""


@dataclass(frozen=True, slots=True)
class MessageResult(Event):
    """The server's verdict on the whole message, for every accepted recipient."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class TransactionFailed(Event):
    """The transaction ended before a verdict on the message.

    The reply applies to every recipient without a negative result yet.
    ``local`` is True when nothing was sent: the machine refused the envelope
    itself and ``reply`` is synthetic (see ``reason``).
    """

    reply: Reply
    reason: FailureReason
    local: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionFailed(Event):
    """Terminal: the session is unusable. ``reply`` is the server's, if any
    (4xx/5xx greeting, 421...); it applies to every unfinished recipient."""

    reason: str
    reply: Reply | None = None


@dataclass(frozen=True, slots=True)
class Closed(Event):
    """Terminal: QUIT was answered (or the server closed after QUIT)."""


# --------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------


class _State(enum.Enum):
    CONNECTING = enum.auto()  # greeting, EHLO/HELO, STARTTLS in flight
    READY = enum.auto()
    BUSY = enum.auto()  # commands in flight, no action allowed
    TLS_HANDSHAKE = enum.auto()
    CONTENT = enum.auto()  # send_content() allowed
    CLOSING = enum.auto()  # QUIT sent
    DONE = enum.auto()  # terminal event emitted


class _Kind(enum.Enum):
    GREETING = enum.auto()
    EHLO = enum.auto()
    HELO = enum.auto()
    STARTTLS = enum.auto()
    AUTH = enum.auto()
    AUTH_CANCEL = enum.auto()
    MAIL = enum.auto()
    RCPT = enum.auto()
    DATA = enum.auto()
    DATA_END = enum.auto()
    DOT_ABORT = enum.auto()
    BDAT = enum.auto()
    BDAT_LAST = enum.auto()
    RSET = enum.auto()
    NOOP = enum.auto()
    QUIT = enum.auto()


# RFC 5321 §4.5.3.2. Commands it does not name get the 5 minutes it gives
# MAIL/RCPT; a BDAT LAST is a message termination.
_TIMEOUTS: Final[dict[_Kind, float]] = {
    _Kind.DATA: 120.0,
    _Kind.DATA_END: 600.0,
    _Kind.BDAT_LAST: 600.0,
}
_DEFAULT_TIMEOUT: Final = 300.0
_DATA_BLOCK_TIMEOUT: Final = 180.0

_NOTIFY_VALUES: Final = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_ADDR_TYPE_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*);(.*)", re.DOTALL)
_HELO_NAME_RE = re.compile(r"[!-~]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# Transcript bounds: the head keeps the session set-up and first envelope,
# the tail keeps how it ended; the middle of a huge dialogue is dropped.
_TRANSCRIPT_HEAD_LINES: Final = 150
_TRANSCRIPT_HEAD_CHARS: Final = 16 * 1024
_TRANSCRIPT_TAIL_LINES: Final = 32
_TRANSCRIPT_LINE_MAX: Final = 512

# ESMTP EHLO failures meaning "I only speak HELO" (RFC 5321 §3.2, §4.1.4).
_EHLO_FALLBACK_MIN: Final = 500


@dataclass(slots=True)
class _Expect:
    kind: _Kind
    index: int = -1  # recipient index for RCPT
    # DATA_END: its transaction, which may no longer be the current one when the
    # reply comes (the next one was started behind it: see can_start_next).
    txn: _Txn | None = None


@dataclass(slots=True)
class _Txn:
    env: Envelope
    rcpts: list[RecipientSpec]  # the ones actually sent (syntactically valid)
    pipelining: bool
    use_bdat: bool
    utf8: bool
    rcpt_lines: list[str] = field(default_factory=list)
    mail_failed: bool = False
    accepted: int = 0
    failed: bool = False
    done: bool = False
    needs_rset: bool = False
    final_sent: bool = False
    content_bytes: int = 0
    ends_crlf: bool = True  # BDAT: what was sent so far ends a line
    stuffer: DotStuffer = field(default_factory=DotStuffer)
    norm: LineEndingNormalizer = field(default_factory=LineEndingNormalizer)
    transcript: Transcript | None = None  # the record its end-of-data reply goes to


def _reply(code: int, enhanced: str, text: str) -> Reply:
    return Reply(code, enhanced, [text])


def _reply_lines(reply: Reply) -> list[str]:
    """The reply as wire lines (no CRLF), for the transcript.

    Rebuilt from the parsed reply (the parser strips the enhanced code); it
    mirrors format_reply but never raises on what a server managed to send.
    """
    lines = reply.lines or [""]
    last = len(lines) - 1
    if not last:  # nearly every reply: one line, no generator
        enhanced, line = reply.enhanced, lines[0]
        body = f"{enhanced} {line}" if enhanced and line else enhanced or line
        return [f"{reply.code} {body}" if body else str(reply.code)]
    out: list[str] = []
    for i, line in enumerate(lines):
        body = " ".join(part for part in (reply.enhanced, line) if part)
        sep = "-" if i < last else " "
        out.append(f"{reply.code}{sep}{body}" if body or i < last else str(reply.code))
    return out


def _format_reply_short(reply: Reply) -> str:
    text = " ".join(
        part for part in (reply.enhanced, reply.lines[0] if reply.lines else "") if part
    )
    return f"{reply.code} {text}".rstrip()


def _valid_notify(notify: str) -> str:
    value = notify.upper()
    if value == "NEVER":
        return value
    items = value.split(",")
    if not items or len(set(items)) != len(items) or not set(items) <= _NOTIFY_VALUES:
        raise ValueError(f"invalid DSN NOTIFY value: {notify!r}")
    return value


def _utf8_addr_text(addr: str, *, raw_utf8: bool) -> str:
    """RFC 6533 utf-8-addr-xtext (or -unitext when ``raw_utf8``).

    Printable ASCII other than "+", "=", "\\" goes as is; everything else as
    ``\\x{HEX}``, except non-ASCII which unitext carries raw.
    """
    out: list[str] = []
    for ch in addr:
        cp = ord(ch)
        plain = 0x21 <= cp <= 0x7E and ch not in "+=\\"
        if plain or (cp > 0x7F and raw_utf8 and ch.isprintable()):
            out.append(ch)
        else:
            out.append(f"\\x{{{cp:X}}}")
    return "".join(out)


def _orcpt_param(orcpt: str, *, utf8_session: bool) -> str:
    m = _ADDR_TYPE_RE.fullmatch(orcpt)
    # An address's local part may hold ";" only when quoted, and then the
    # text before it starts with '"', which the addr-type pattern refuses.
    addr_type, addr = (m.group(1), m.group(2)) if m else ("rfc822", orcpt)
    if not addr:
        raise ValueError(f"invalid DSN ORCPT value: {orcpt!r}")
    if addr_type.lower() == "utf-8" or (addr_type.lower() == "rfc822" and not addr.isascii()):
        return "utf-8;" + _utf8_addr_text(addr, raw_utf8=utf8_session)
    return f"{addr_type};{xtext_encode(addr)}"


class Transcript:
    """A bounded record of the dialogue: head, omitted count, tail."""

    __slots__ = ("_head", "_head_chars", "_omitted", "_tail")

    def __init__(self) -> None:
        self._head: list[tuple[str, str]] = []
        self._head_chars = 0
        self._tail: deque[tuple[str, str]] = deque(maxlen=_TRANSCRIPT_TAIL_LINES)
        self._omitted = 0

    def add(self, direction: str, line: str) -> None:
        # Server text ends up in logs and the web UI: no terminal escapes. Nearly every
        # line is printable (which excludes every control character): skip the regex.
        if not line.isprintable():
            line = _CONTROL_RE.sub("?", line)
        if len(line) > _TRANSCRIPT_LINE_MAX:
            line = (
                f"{line[:_TRANSCRIPT_LINE_MAX]}...[{len(line) - _TRANSCRIPT_LINE_MAX} more chars]"
            )
        if (
            not self._omitted
            and not self._tail
            and len(self._head) < _TRANSCRIPT_HEAD_LINES
            and self._head_chars + len(line) <= _TRANSCRIPT_HEAD_CHARS
        ):
            self._head.append((direction, line))
            self._head_chars += len(line)
            return
        if len(self._tail) == self._tail.maxlen:
            self._omitted += 1
        self._tail.append((direction, line))

    def lines(self) -> list[tuple[str, str]]:
        out = list(self._head)
        if self._omitted:
            out.append(("!", f"[{self._omitted} lines omitted]"))
        out.extend(self._tail)
        return out


# --------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------


class ClientConnection:
    """One SMTP client session. See the module docstring for the contract."""

    def __init__(self, helo_name: str, *, want_tls: bool = True, chunking: bool = True) -> None:
        # EHLO takes a domain or an address literal, always ASCII (RFC 6531
        # §3.7.1 keeps it so even under SMTPUTF8).
        if not _HELO_NAME_RE.fullmatch(helo_name):
            raise ValueError(f"invalid EHLO name: {helo_name!r}")
        self.helo_name = helo_name
        self.want_tls = want_tls
        # Off for next hops whose BDAT is known to be broken.
        self.chunking = chunking
        self._parser = ReplyParser()
        self._replies: deque[Reply] = deque()
        self._input_error: str | None = None
        self._eof = False
        self._discard_input = False
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._terminal: Event | None = None
        self._state = _State.CONNECTING
        self._expect: deque[_Expect] = deque([_Expect(_Kind.GREETING)])
        self._extensions: dict[str, list[str]] = {}
        self._esmtp = False
        self._tls = False
        self._tls_tried = False
        self._authenticated = False
        self._txn: _Txn | None = None
        self._transcript = Transcript()

    # ------------------------------------------------------------------ props

    @property
    def extensions(self) -> dict[str, list[str]]:
        """EHLO keywords of the current session (empty before/after HELO)."""
        return dict(self._extensions)

    def offers(self, keyword: str) -> bool:
        """Whether the server's EHLO offered this (upper-case) keyword; no copy made."""
        return keyword in self._extensions

    @property
    def tls_active(self) -> bool:
        return self._tls

    @property
    def esmtp(self) -> bool:
        """True when the session was opened with EHLO, not the HELO fallback."""
        return self._esmtp

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def ready(self) -> bool:
        """True when an action may be taken."""
        return self._state is _State.READY

    @property
    def closed(self) -> bool:
        """True once ConnectionFailed or Closed was produced."""
        return self._terminal is not None

    @property
    def reply_timeout(self) -> float | None:
        """Seconds to wait for the server's next reply (RFC 5321 §4.5.3.2).

        While DATA content is being sent with no reply awaited, the "data
        block" timeout for each write; None when idle.
        """
        if self._terminal is not None:
            return None
        if self._expect:
            return _TIMEOUTS.get(self._expect[0].kind, _DEFAULT_TIMEOUT)
        if self._state is _State.CONTENT:
            return _DATA_BLOCK_TIMEOUT
        return None

    @property
    def transcript(self) -> list[tuple[str, str]]:
        """The dialogue as ("S"|"C", line) pairs, bounded in size.

        Message content is elided as ``<message content: N bytes>``, AUTH
        credentials as ``<redacted>``. Lines ``("!", note)`` are the machine's
        own notes: omitted lines, local refusals, why the connection failed.
        """
        return self._transcript.lines()

    def transcript_record(self) -> Transcript:
        """The record being written: a transaction whose successor was started
        (can_start_next) keeps it, and its end-of-data reply still goes there
        after restart_transcript(). ``lines()`` gives what ``transcript`` would."""
        return self._transcript

    def restart_transcript(self) -> None:
        """Forget the dialogue so far: the next transaction on a reused session gets
        a record of its own, with the whole size budget (head and tail) for itself."""
        self._transcript = Transcript()

    # -------------------------------------------------------------- plumbing

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the server; ``b""`` signals EOF."""
        if self._terminal is not None or self._eof or self._input_error is not None:
            return
        if not data:
            self._eof = True
            return
        if self._discard_input:
            return  # clear text between the STARTTLS 220 and the handshake
        try:
            self._replies.extend(self._parser.feed(data))
        except ProtocolError as e:
            self._replies.extend(getattr(e, "completed", ()))  # see ProtocolError
            self._input_error = e.reason

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""  # the driver asks before every read: no copy for nothing
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | type[NEED_DATA]:
        if self._events:
            return self._events.popleft()
        if self._terminal is None and not self.has_event():
            return NEED_DATA
        if self._events:
            return self._events.popleft()
        assert self._terminal is not None
        return self._terminal

    def has_event(self) -> bool:
        """Act on the replies received so far; True when next_event() has an event.

        A driver that feeds bytes from a callback asks this to wake the task that
        pulls events only when there is one (not for a reply that only moves the
        machine on, like a pipelined MAIL's 250); when False, output the machine
        produced meanwhile (a non-pipelined RCPT) is in data_to_send().
        """
        while True:
            if self._events or self._terminal is not None:
                return True
            if self._replies:
                self._handle(self._replies.popleft())
                continue
            if self._input_error is not None:
                self._fail(f"protocol error: {self._input_error}")
                continue
            if self._eof:
                self._on_eof()
                continue
            return False

    # ---------------------------------------------------------------- actions

    def _begin_action(self) -> bool:
        """False when terminal (actions are then no-ops); raise unless READY."""
        if self._terminal is not None:
            return False
        if self._state is not _State.READY:
            raise StateError(f"action not allowed now (state {self._state.name})")
        # The driver may act on the state without pulling the queued Ready.
        if self._events:
            self._events = deque(e for e in self._events if not isinstance(e, Ready))
        return True

    def start_tls(self) -> None:
        """Send STARTTLS (when Ready, offered and not yet under TLS)."""
        if not self._begin_action():
            return
        if self._tls or "STARTTLS" not in self._extensions:
            raise StateError("STARTTLS is not available in this session")
        self._send_starttls()

    def tls_established(self) -> None:
        """The handshake succeeded: forget the clear-text session, EHLO again."""
        if self._terminal is not None:
            return
        if self._state is not _State.TLS_HANDSHAKE:
            raise StateError("no TLS handshake pending")
        self._tls = True
        self._discard_input = False
        self._parser = ReplyParser()
        # RFC 3207 §4.2: nothing learnt before the handshake can be trusted.
        self._extensions = {}
        self._esmtp = False
        self._state = _State.CONNECTING
        self._send_command(f"EHLO {self.helo_name}", _Expect(_Kind.EHLO))

    def login(self, username: str, password: str, *, require_tls: bool = True) -> None:
        """AUTH PLAIN with an initial response (RFC 4954, RFC 4616)."""
        if not self._begin_action():
            return
        if require_tls and not self._tls:
            raise StateError("refusing to send credentials without TLS")
        mechanisms = [m.upper() for m in self._extensions.get("AUTH", [])]
        if "PLAIN" not in mechanisms:
            raise StateError("the server does not offer AUTH PLAIN")
        if "\x00" in username or "\x00" in password:
            raise ValueError("NUL in credentials")
        token = base64.b64encode(f"\x00{username}\x00{password}".encode()).decode("ascii")
        self._state = _State.BUSY
        self._send_command(
            f"AUTH PLAIN {token}", _Expect(_Kind.AUTH), record="AUTH PLAIN <redacted>"
        )

    def reset(self) -> None:
        if not self._begin_action():
            return
        self._state = _State.BUSY
        self._send_command("RSET", _Expect(_Kind.RSET))

    def noop(self) -> None:
        """A liveness check, e.g. before reusing a cached connection."""
        if not self._begin_action():
            return
        self._state = _State.BUSY
        self._send_command("NOOP", _Expect(_Kind.NOOP))

    def quit(self) -> None:
        if not self._begin_action():
            return
        self._state = _State.CLOSING
        self._send_command("QUIT", _Expect(_Kind.QUIT))

    def can_start_next(self) -> bool:
        """True when send_envelope() may start the next transaction now, before the
        reply to the last one's end of data: the server offered PIPELINING, and
        that reply is all the machine waits for. RFC 2920 §3.1 lets message content
        begin a group, so the dot and the next MAIL, RCPTs and DATA travel in one
        write. Not after BDAT: a refused BDAT LAST needs an RSET."""
        txn = self._txn
        return (
            self._terminal is None
            and self._state is _State.BUSY
            and txn is not None
            and txn.final_sent
            and txn.pipelining
            and not txn.use_bdat
            and not txn.failed
            and len(self._expect) == 1
            and self._expect[0].kind is _Kind.DATA_END
        )

    def send_envelope(self, env: Envelope) -> None:
        """Start a transaction: MAIL, RCPTs (and DATA), pipelined when offered.

        Allowed when Ready, or when can_start_next(): the last transaction's
        MessageResult then comes before any event of this one.
        Raises ValueError for malformed DSN values; invalid addresses and
        envelopes this server cannot take are refused locally with events.
        """
        if self._terminal is not None:
            return
        if not self.can_start_next() and not self._begin_action():
            return
        if not env.recipients:
            raise ValueError("envelope without recipients")
        ret = env.ret.upper() if env.ret is not None else None
        if ret is not None and ret not in ("FULL", "HDRS"):
            raise ValueError(f"invalid DSN RET value: {env.ret!r}")
        notifies = [
            _valid_notify(r.notify) if r.notify is not None else None for r in env.recipients
        ]

        ext = self._extensions
        txn = _Txn(
            env,
            [],
            pipelining="PIPELINING" in ext,
            # BDAT without PIPELINING costs a round trip per chunk; DATA is
            # then faster and always available.
            use_bdat=self.chunking and "CHUNKING" in ext and "PIPELINING" in ext,
            utf8=env.smtputf8,
            transcript=self._transcript,
        )
        self._txn = txn

        # Addresses come from the queue, but a CR/LF or stray ">" here would
        # inject commands: run them through the same grammar the server uses.
        try:
            parse_path(env.sender, allow_null=True)
        except AddressError as e:
            self._fail_local(
                _reply(553, "5.1.7", f"Bad sender address syntax: {e.reason}"), "bad_sender"
            )
            return
        last_bad: Reply | None = None
        valid_notifies: list[str | None] = []
        for spec, notify in zip(env.recipients, notifies, strict=True):
            try:
                parse_path(spec.address, allow_postmaster=True)
            except AddressError as e:
                last_bad = _reply(553, "5.1.3", f"Bad recipient address syntax: {e.reason}")
                self._note(f"local refusal of <{spec.address}>: {_format_reply_short(last_bad)}")
                self._events.append(RecipientResult(spec.address, last_bad))
                continue
            txn.rcpts.append(spec)
            valid_notifies.append(notify)
        if not txn.rcpts:
            assert last_bad is not None
            self._fail_local(last_bad, "no_valid_recipients")
            return

        if not env.sender.isascii() or any(not r.address.isascii() for r in txn.rcpts):
            txn.utf8 = True
        if txn.utf8 and "SMTPUTF8" not in ext:
            self._fail_local(
                _reply(553, "5.6.7", "Message needs SMTPUTF8, which the server does not support"),
                "smtputf8_unsupported",
            )
            return
        if env.body_8bit and "8BITMIME" not in ext:
            self._fail_local(
                _reply(554, "5.6.3", "8-bit message and the server does not support 8BITMIME"),
                "8bitmime_unsupported",
            )
            return
        limit = self._declared_size()
        if limit and env.size > limit:
            self._fail_local(
                _reply(552, "5.3.4", f"Message size exceeds fixed maximum message size ({limit})"),
                "size_exceeded",
            )
            return

        dsn = "DSN" in ext
        params: list[str] = []
        if "SIZE" in ext:
            params.append(f"SIZE={env.size}")
        if env.body_8bit:
            params.append("BODY=8BITMIME")
        if txn.utf8:
            params.append("SMTPUTF8")
        if dsn and ret is not None:
            params.append(f"RET={ret}")
        if dsn and env.envid is not None:
            params.append(f"ENVID={xtext_encode(env.envid)}")
        txn.rcpt_lines = [
            self._rcpt_line(spec, notify, dsn=dsn, utf8=txn.utf8)
            for spec, notify in zip(txn.rcpts, valid_notifies, strict=True)
        ]
        self._state = _State.BUSY
        self._send_command(" ".join([f"MAIL FROM:<{env.sender}>", *params]), _Expect(_Kind.MAIL))
        if txn.pipelining:
            # RFC 2920 §3.1: MAIL and RCPT may go anywhere in a group, DATA
            # only last; BDAT waits for the RCPT verdicts so a message is
            # never sent to nobody.
            for i in range(len(txn.rcpts)):
                self._send_rcpt(txn, i)
            if not txn.use_bdat:
                self._send_command("DATA", _Expect(_Kind.DATA))

    def send_content(self, chunk: bytes, final: bool = False) -> None:
        """Message bytes (CRLF line ends); ``final=True`` ends the message.

        Dot-stuffed for DATA; one ``BDAT n`` (``BDAT n LAST``) per call under
        CHUNKING. Ignored after the transaction failed (so a driver streaming
        a large message can stop at its leisure) or after a terminal event.
        """
        if self._terminal is not None:
            return
        txn = self._txn
        if txn is not None and txn.failed:
            return
        if self._state is not _State.CONTENT or txn is None:
            raise StateError("not expecting message content")
        txn.content_bytes += len(chunk)
        if txn.use_bdat:
            self._send_bdat(txn, chunk, final)
        else:
            self._out += txn.stuffer.dot_stuff(chunk)
            if final:
                self._out += txn.stuffer.finish()
                self._transcript.add("C", f"<message content: {txn.content_bytes} bytes>")
                self._transcript.add("C", ".")
                self._expect.append(_Expect(_Kind.DATA_END, txn=txn))
        if final:
            txn.final_sent = True
            self._state = _State.BUSY

    # -------------------------------------------------------------- sending

    def _send_command(
        self, line: str, expect: _Expect | None, *, record: str | None = None
    ) -> None:
        # Everything reaching here was validated or built from validated
        # parts; this is the last line of defence against injection.
        if "\r" in line or "\n" in line:
            raise ValueError("line break in an SMTP command")
        self._out += line.encode("utf-8") + b"\r\n"
        self._transcript.add("C", line if record is None else record)
        if expect is not None:
            self._expect.append(expect)

    def _send_starttls(self) -> None:
        self._tls_tried = True
        self._state = _State.CONNECTING
        self._send_command("STARTTLS", _Expect(_Kind.STARTTLS))

    def _rcpt_line(self, spec: RecipientSpec, notify: str | None, *, dsn: bool, utf8: bool) -> str:
        parts = [f"RCPT TO:<{spec.address}>"]
        if dsn and notify is not None:
            parts.append(f"NOTIFY={notify}")
        if dsn and spec.orcpt is not None:
            parts.append(f"ORCPT={_orcpt_param(spec.orcpt, utf8_session=utf8)}")
        return " ".join(parts)

    def _send_rcpt(self, txn: _Txn, index: int) -> None:
        self._send_command(txn.rcpt_lines[index], _Expect(_Kind.RCPT, index))

    def _send_bdat(self, txn: _Txn, chunk: bytes, final: bool) -> None:
        # Normalizing keeps BDAT content identical to what DATA would
        # deliver, so the next hop stores the same bytes either way.
        data = txn.norm.feed(chunk)
        if final:
            data += txn.norm.flush()
        if data:
            txn.ends_crlf = data.endswith(b"\r\n")
        if final and not txn.ends_crlf:
            data += b"\r\n"
        if not data and not final:
            return
        command = f"BDAT {len(data)}" + (" LAST" if final else "")
        self._send_command(command, _Expect(_Kind.BDAT_LAST if final else _Kind.BDAT))
        if data:
            self._out += data
            self._transcript.add("C", f"<message content: {len(data)} bytes>")

    # -------------------------------------------------------------- helpers

    def _declared_size(self) -> int:
        values = self._extensions.get("SIZE", [])
        # RFC 1870 §4: no value or 0 means "no fixed maximum".
        if values and values[0].isdigit():
            return int(values[0])
        return 0

    def _note(self, text: str) -> None:
        self._transcript.add("!", text)

    def _become_ready(self) -> None:
        self._state = _State.READY
        self._events.append(Ready(dict(self._extensions), self._tls))

    def _fail(self, reason: str, reply: Reply | None = None) -> None:
        if self._terminal is not None:
            return
        txn = self._txn
        if (
            self._state is _State.CONTENT
            and txn is not None
            and not txn.use_bdat
            and not txn.failed
        ):
            self._transcript.add("C", f"<message content: {txn.content_bytes} bytes, incomplete>")
        self._note(f"connection failed: {reason}")
        self._state = _State.DONE
        self._expect.clear()
        self._replies.clear()
        self._terminal = ConnectionFailed(reason, reply)
        self._events.append(self._terminal)

    def _fail_local(self, reply: Reply, reason: FailureReason) -> None:
        assert self._txn is not None
        self._txn.failed = True
        self._note(f"local refusal: {_format_reply_short(reply)}")
        self._events.append(TransactionFailed(reply, reason, local=True))
        self._become_ready()

    def _txn_fail(self, txn: _Txn, reply: Reply, reason: FailureReason, *, rset: bool) -> None:
        if not txn.failed:
            txn.failed = True
            self._events.append(TransactionFailed(reply, reason))
        txn.needs_rset = txn.needs_rset or rset

    def _txn_settle(self, txn: _Txn) -> None:
        """Once every reply of a finished transaction is in: RSET or Ready."""
        if self._expect or not (txn.failed or txn.done):
            return
        if txn.failed and txn.needs_rset:
            txn.needs_rset = False
            self._state = _State.BUSY
            self._send_command("RSET", _Expect(_Kind.RSET))
        else:
            self._become_ready()

    def _on_eof(self) -> None:
        if self._state is _State.CLOSING:
            self._state = _State.DONE
            self._terminal = Closed()
            self._events.append(self._terminal)
            return
        if self._parser.pending:
            self._fail("connection closed by the server in the middle of a reply")
        else:
            self._fail("connection closed by the server")

    # ------------------------------------------------------------- replies

    def _handle(self, reply: Reply) -> None:
        record = self._transcript
        if self._expect:
            owner = self._expect[0].txn
            if owner is not None and owner.transcript is not None:
                record = owner.transcript  # an earlier transaction's end-of-data reply
        for line in _reply_lines(reply):
            record.add("S", line)
        if not self._expect:
            if reply.code == 421:
                self._fail("server closing the connection", reply)
            else:
                self._fail(f"unexpected reply: {_format_reply_short(reply)}", reply)
            return
        expect = self._expect.popleft()
        kind = expect.kind
        if kind is _Kind.QUIT:
            # Whatever it says, the session is over.
            self._state = _State.DONE
            self._terminal = Closed()
            self._events.append(self._terminal)
            return
        if reply.code == 421:
            self._fail("server closing the connection", reply)
            return
        if kind is _Kind.GREETING:
            self._on_greeting(reply)
        elif kind is _Kind.EHLO:
            self._on_ehlo(reply)
        elif kind is _Kind.HELO:
            self._on_helo(reply)
        elif kind is _Kind.STARTTLS:
            self._on_starttls(reply)
        elif kind is _Kind.AUTH:
            self._on_auth(reply)
        elif kind is _Kind.AUTH_CANCEL:
            self._events.append(AuthFailed(reply))
            self._become_ready()
        elif kind is _Kind.RSET or kind is _Kind.NOOP:
            if reply.is_positive:
                self._become_ready()
            else:
                self._fail(f"{kind.name} refused: {_format_reply_short(reply)}", reply)
        else:
            txn = expect.txn or self._txn
            assert txn is not None
            self._on_txn_reply(txn, expect, reply)
            if self._terminal is None:
                self._txn_settle(txn)

    def _on_greeting(self, reply: Reply) -> None:
        if reply.code != 220:
            self._fail(f"server refused the session: {_format_reply_short(reply)}", reply)
            if reply.is_permanent:
                # RFC 5321 §3.1: after a 554 greeting the server waits for QUIT.
                self._send_command("QUIT", None)
            return
        self._events.append(Greeting(reply))
        self._send_command(f"EHLO {self.helo_name}", _Expect(_Kind.EHLO))

    def _on_ehlo(self, reply: Reply) -> None:
        if reply.is_positive:
            self._extensions = parse_ehlo_keywords(reply.lines)
            self._esmtp = True
            self._after_hello()
        elif reply.code >= _EHLO_FALLBACK_MIN:
            self._send_command(f"HELO {self.helo_name}", _Expect(_Kind.HELO))
        else:
            self._fail(f"EHLO refused: {_format_reply_short(reply)}", reply)

    def _on_helo(self, reply: Reply) -> None:
        if not reply.is_positive:
            self._fail(f"HELO refused: {_format_reply_short(reply)}", reply)
            return
        self._extensions = {}
        self._esmtp = False
        self._after_hello()

    def _after_hello(self) -> None:
        if (
            self.want_tls
            and not self._tls
            and not self._tls_tried
            and "STARTTLS" in self._extensions
        ):
            self._send_starttls()
        else:
            self._become_ready()

    def _on_starttls(self, reply: Reply) -> None:
        if reply.code != 220:
            self._events.append(TLSRefused(reply))
            self._become_ready()
            return
        # Anything after the 220 arrived in clear text and would be read as
        # the first replies inside TLS: a response injection. Drop it.
        if self._replies or self._parser.pending or self._input_error is not None:
            self._note("discarded clear-text data received after the STARTTLS 220")
        self._replies.clear()
        self._input_error = None  # garbage in that injected tail is dropped as well
        self._parser = ReplyParser()
        self._discard_input = True
        self._state = _State.TLS_HANDSHAKE
        self._events.append(TLSRequired())

    def _on_auth(self, reply: Reply) -> None:
        if reply.code == 235:
            self._authenticated = True
            self._events.append(AuthSucceeded(reply))
            self._become_ready()
        elif reply.code == 334:
            # A challenge although the initial response was sent: cancel
            # (RFC 4954 §4) and report the reply to the cancellation.
            self._send_command("*", _Expect(_Kind.AUTH_CANCEL))
        else:
            self._events.append(AuthFailed(reply))
            self._become_ready()

    def _on_txn_reply(self, txn: _Txn, expect: _Expect, reply: Reply) -> None:
        kind = expect.kind
        if kind is _Kind.MAIL:
            if reply.is_positive:
                if not txn.pipelining:
                    self._send_rcpt(txn, 0)
                return
            txn.mail_failed = True
            self._events.append(MailRejected(reply))
            self._txn_fail(txn, reply, "mail_rejected", rset=False)
        elif kind is _Kind.RCPT:
            self._on_rcpt(txn, expect.index, reply)
        elif kind is _Kind.DATA:
            if reply.code == 354:
                if txn.failed:
                    # RFC 2920 §3.1: DATA may succeed even though every RCPT
                    # failed; end the empty message at once.
                    txn.needs_rset = True
                    self._out += b".\r\n"
                    self._transcript.add("C", ".")
                    self._expect.append(_Expect(_Kind.DOT_ABORT))
                    return
                self._state = _State.CONTENT
                self._events.append(ReadyForContent())
            elif not txn.failed:
                self._txn_fail(txn, reply, "data_refused", rset=True)
        elif kind is _Kind.DATA_END:
            txn.done = True
            self._events.append(MessageResult(reply))
        elif kind is _Kind.BDAT:
            if not reply.is_positive:
                # RFC 3030 §2: no further chunk may be sent, and the server
                # state is unclear: RSET once the pipeline has drained.
                self._txn_fail(txn, reply, "content_refused", rset=True)
        elif kind is _Kind.BDAT_LAST:
            if txn.failed:
                return
            txn.done = True
            self._events.append(MessageResult(reply))
            if not reply.is_positive:
                txn.failed = True  # lets _txn_settle send RSET
                txn.needs_rset = True
        # DOT_ABORT: consumed, nothing to report.

    def _on_rcpt(self, txn: _Txn, index: int, reply: Reply) -> None:
        if txn.mail_failed:
            # Pipelined behind a refused MAIL: the MAIL reply already
            # answered for every recipient.
            if reply.is_positive:
                txn.needs_rset = True
            return
        spec = txn.rcpts[index]
        self._events.append(RecipientResult(spec.address, reply))
        if reply.is_positive:
            txn.accepted += 1
        if index < len(txn.rcpts) - 1:
            if not txn.pipelining:
                self._send_rcpt(txn, index + 1)
            return
        if txn.accepted == 0:
            self._txn_fail(txn, reply, "no_valid_recipients", rset=True)
        elif not txn.pipelining:
            self._send_command("DATA", _Expect(_Kind.DATA))
        elif txn.use_bdat:
            self._state = _State.CONTENT
            self._events.append(ReadyForContent())
