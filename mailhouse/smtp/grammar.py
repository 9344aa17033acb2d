"""SMTP grammar shared by the server and the client.

Everything here is pure: bytes or text in, values out, no I/O and no state
beyond what an incremental parser needs. References: RFC 5321 (SMTP),
RFC 2034/3463 (enhanced status codes), RFC 3461 (DSN, xtext), RFC 6531
(SMTPUTF8), RFC 5322/6532 (atext).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "AddressError",
    "CommandError",
    "DotStuffer",
    "GrammarError",
    "LineEndingNormalizer",
    "ParameterError",
    "PathArgument",
    "ProtocolError",
    "Reply",
    "ReplyParser",
    "dot_stuff",
    "format_reply",
    "is_valid_domain",
    "is_xtext",
    "normalize_line_endings",
    "parse_command",
    "parse_ehlo_keywords",
    "parse_esmtp_params",
    "parse_mail_from",
    "parse_path",
    "parse_rcpt_to",
    "xtext_decode",
    "xtext_encode",
]


# --------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------


class GrammarError(ValueError):
    """Base of every parse failure here; ``reason`` is safe to show a peer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProtocolError(GrammarError):
    """The peer's reply stream is not SMTP: the connection cannot be trusted.

    ``completed``: the replies the same data completed before the garbage. They
    matter: a 250 to the end of DATA dropped here would mean a duplicate delivery."""

    completed: list[Reply]


class CommandError(GrammarError):
    """A command line, or the shape of its argument, is malformed."""


class AddressError(GrammarError):
    """A reverse-path / forward-path does not follow RFC 5321 §4.1.2."""


class ParameterError(GrammarError):
    """An ESMTP parameter list or an xtext value is malformed."""


# --------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------

_ENHANCED_RE = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")
# On the wire an enhanced code is only recognised when followed by a space or
# the end of the line, so a text such as "2.0.0.1 apples" is not mistaken.
_ENHANCED_PREFIX_RE = re.compile(r"([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: |$)")
# The common reply, one line with an enhanced code of its class ("250 2.1.0 Ok"),
# in one match: a client parses several per message.
_SIMPLE_REPLY_RE = re.compile(rb"([2-5])([0-9][0-9]) (\1\.[0-9]{1,3}\.[0-9]{1,3})(?: (.*)|)", re.S)
_LINE_SPLIT_RE = re.compile(r"\r\n|\r|\n")


def _reply_lines(text: str | list[str]) -> list[str]:
    # Splitting a str on any line break (rather than refusing it) keeps
    # application-supplied text from ever injecting a line without a code.
    lines = _LINE_SPLIT_RE.split(text) if isinstance(text, str) else list(text)
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError("reply line contains a line break")
    return lines or [""]


def format_reply(code: int, enhanced: str | None, text: str | list[str]) -> bytes:
    """Format an SMTP reply, multi-line when ``text`` has several lines.

    The enhanced status code, when given, is repeated on every line as
    RFC 2034 §3 requires. An empty text yields just the code.
    """
    if not 200 <= code <= 599:
        raise ValueError(f"SMTP reply code out of range: {code}")
    if enhanced is not None:
        if not _ENHANCED_RE.fullmatch(enhanced):
            raise ValueError(f"malformed enhanced status code: {enhanced!r}")
        if enhanced[0] != str(code)[0]:
            raise ValueError(f"enhanced status code {enhanced} does not match reply code {code}")
    if type(text) is str and "\n" not in text and "\r" not in text:
        # Single line (the usual case): same bytes as the general loop below.
        body = text if enhanced is None else (f"{enhanced} {text}" if text else enhanced)
        return (f"{code} {body}\r\n" if body else f"{code}\r\n").encode("utf-8")
    lines = _reply_lines(text)
    last = len(lines) - 1
    out: list[str] = []
    for i, line in enumerate(lines):
        body = " ".join(part for part in (enhanced, line) if part)
        if i < last:
            out.append(f"{code}-{body}\r\n")
        elif body:
            out.append(f"{code} {body}\r\n")
        else:
            # RFC 5321 §4.2: Reply-code [ SP textstring ] -- no dangling space.
            out.append(f"{code}\r\n")
    return "".join(out).encode("utf-8")


@dataclass(slots=True)
class Reply:
    """One complete SMTP reply (possibly multi-line)."""

    code: int
    enhanced: str | None = None
    lines: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return format_reply(self.code, self.enhanced, self.lines)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_intermediate(self) -> bool:
        return 300 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return 500 <= self.code < 600


class ReplyParser:
    """Incremental parser for the replies a client reads.

    ``feed()`` returns every reply completed by the new data. Tolerated:
    bare LF line ends, a reply line with no text (``"250\\r\\n"``). Rejected
    with :class:`ProtocolError`: lines that do not start with a 2xx-5xx code
    followed by SP, "-" or the line end, a continuation line whose code
    differs, lines longer than ``max_line_length`` and replies of more than
    ``max_lines`` lines (both bound memory against a hostile server).

    Enhanced status codes are recognised when the first line carries one
    whose class matches the reply code (``detect_enhanced``); it is then
    removed from every line that repeats it.
    """

    def __init__(
        self,
        *,
        max_line_length: int = 4096,
        max_lines: int = 1000,
        detect_enhanced: bool = True,
    ) -> None:
        self._buf = bytearray()
        self._max_line = max_line_length
        self._max_lines = max_lines
        self.detect_enhanced = detect_enhanced
        self._code: int | None = None
        self._raw_lines: list[str] = []
        self._failed = False

    @property
    def pending(self) -> bool:
        """True when a reply has started (or bytes wait) but is not complete."""
        return bool(self._buf) or self._code is not None

    def feed(self, data: bytes | bytearray | memoryview) -> list[Reply]:
        if self._failed:
            raise ProtocolError("reply parser already failed")
        buf = self._buf
        buf += data
        replies: list[Reply] = []
        try:
            end = buf.rfind(b"\n")
            if end >= 0:
                # Every complete line at once: one copy and one split, not a copy
                # and a buffer shift per line.
                lines = bytes(buf[:end]).split(b"\n")
                del buf[: end + 1]
                for raw in lines:
                    if raw.endswith(b"\r"):
                        raw = raw[:-1]
                    if len(raw) > self._max_line:
                        raise ProtocolError("reply line too long")
                    reply = self._line(raw)
                    if reply is not None:
                        replies.append(reply)
            # +1: the CR of a CRLF may already be here without its LF.
            if len(buf) > self._max_line + 1:
                raise ProtocolError("reply line too long")
        except ProtocolError as e:
            self._failed = True
            e.completed = replies
            raise
        return replies

    def _line(self, raw: bytes) -> Reply | None:
        if self._code is None and self.detect_enhanced:
            m = _SIMPLE_REPLY_RE.fullmatch(raw)
            if m is not None:
                return Reply(int(raw[:3]), m[3].decode("ascii"), [(m[4] or b"").decode("utf-8", "replace")])
        if len(raw) < 3 or not raw[:3].isdigit() or raw[0:1] not in b"2345":
            raise ProtocolError(f"malformed reply line: {raw[:64]!r}")
        sep = raw[3:4]
        if sep not in (b"", b" ", b"-"):
            raise ProtocolError(f"malformed reply line: {raw[:64]!r}")
        code = int(raw[:3])
        if self._code is not None and code != self._code:
            raise ProtocolError(f"reply code changed inside a multi-line reply: {raw[:64]!r}")
        self._code = code
        self._raw_lines.append(raw[4:].decode("utf-8", "replace"))
        if len(self._raw_lines) > self._max_lines:
            raise ProtocolError("reply has too many lines")
        if sep == b"-":
            return None
        lines, self._raw_lines, self._code = self._raw_lines, [], None
        return self._build(code, lines)

    def _build(self, code: int, lines: list[str]) -> Reply:
        enhanced: str | None = None
        if self.detect_enhanced:
            m = _ENHANCED_PREFIX_RE.match(lines[0])
            if m is not None and m.group(1)[0] == str(code)[0]:
                enhanced = m.group(1)
                n = len(enhanced)
                lines = [
                    (
                        line[n + 1 :]
                        if line.startswith(enhanced) and line[n : n + 1] in ("", " ")
                        else line
                    )
                    for line in lines
                ]
        return Reply(code, enhanced, lines)


def parse_ehlo_keywords(lines: list[str]) -> dict[str, list[str]]:
    """Map the keywords of an EHLO reply to their parameters.

    ``lines`` are the text lines of the 250 reply (``Reply.lines``); the first
    one is the server's greeting and is skipped. Keywords are upper-cased;
    lines that are not ``ehlo-keyword *(SP ehlo-param)`` (e.g. the historic
    ``AUTH=LOGIN``) are ignored.
    """
    result: dict[str, list[str]] = {}
    for line in lines[1:]:
        parts = line.split()
        if not parts or not _KEYWORD_RE.fullmatch(parts[0]):
            continue
        result.setdefault(parts[0].upper(), []).extend(parts[1:])
    return result


# --------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------

_VERB_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_CONTROL_RE = re.compile(rb"[\x00-\x1f\x7f]")
# A printable-ASCII command line: verb, then optionally SP and the argument.
# Whatever does not match takes the general path (errors, UTF-8).
_ASCII_COMMAND_RE = re.compile(rb"([A-Za-z][A-Za-z0-9-]*)(?: ([ -~]*))?")


def parse_command(line: bytes) -> tuple[str, str]:
    """Split a command line into (upper-cased verb, argument).

    A trailing CRLF or LF is removed. Surrounding spaces of the argument are
    stripped (trailing spaces are common in the wild). Control characters
    (NUL, bare CR, TAB...) and invalid UTF-8 raise :class:`CommandError`;
    UTF-8 is accepted because SMTPUTF8 addresses travel in MAIL/RCPT.
    """
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    m = _ASCII_COMMAND_RE.fullmatch(line)
    if m is not None:
        verb_b, arg_b = m.groups()
        return verb_b.decode("ascii").upper(), arg_b.decode("ascii").strip(" ") if arg_b else ""
    if not line:
        raise CommandError("empty command line")
    if _CONTROL_RE.search(line):
        raise CommandError("control character in command line")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("command line is not valid UTF-8") from None
    verb, _, arg = text.partition(" ")
    if not _VERB_RE.fullmatch(verb):
        raise CommandError("malformed command verb")
    return verb.upper(), arg.strip(" ")


# --------------------------------------------------------------------------
# Addresses (RFC 5321 §4.1.2, RFC 6531 §3.3)
# --------------------------------------------------------------------------

_ATEXT_ASCII = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_LDH_ASCII = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_IPV4_RE = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")

# ASCII fast paths: a match means the general per-character check would
# accept too; no match falls back to it (UTF-8, errors).
_ATEXT_CLASS = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ATOM_ASCII_RE = re.compile(_ATEXT_CLASS + "+")
_DOT_ATOM_ASCII_RE = re.compile(rf"{_ATEXT_CLASS}+(?:\.{_ATEXT_CLASS}+)*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_LABEL_ASCII_RE = re.compile(_LABEL)
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_DOMAIN_ASCII_RE = re.compile(_DOMAIN)
# An ASCII dot-atom@domain (groups: mailbox, domain). Possessive quantifiers:
# what they refuse to give back could not be followed by "@" or ">" anyway,
# so they only save the engine work. The server matches it in bytes too.
_PLAIN_MAILBOX = rf"({_ATEXT_CLASS}++(?:\.{_ATEXT_CLASS}++)*+@({_LABEL}(?:\.{_LABEL})*+))"
# "FROM:" / "TO:", spaces, then <mailbox> (or <>), then nothing or SP and
# parameters. Groups: mailbox, domain, parameter tail.
_PLAIN_PATH = rf" *<{_PLAIN_MAILBOX}?>( .*)?"
_PLAIN_FROM_RE = re.compile("[Ff][Rr][Oo][Mm]:" + _PLAIN_PATH, re.DOTALL)
_PLAIN_TO_RE = re.compile("[Tt][Oo]:" + _PLAIN_PATH, re.DOTALL)


def _utf8_char_ok(ch: str) -> bool:
    # RFC 6531 admits UTF8-non-ascii; separators and invisible controls
    # (U+0085, U+00A0, U+2028...) are refused because they only serve spoofing.
    return not ch.isascii() and ch.isprintable() and not ch.isspace()


def _is_atom(s: str) -> bool:
    if _ATOM_ASCII_RE.fullmatch(s) is not None:
        return True
    return bool(s) and all(ch in _ATEXT_ASCII or _utf8_char_ok(ch) for ch in s)


def _is_label(label: str) -> bool:
    if not label or label[0] == "-" or label[-1] == "-":
        return False
    if label.isascii():
        return _LABEL_ASCII_RE.fullmatch(label) is not None
    return all(ch in _LDH_ASCII or _utf8_char_ok(ch) for ch in label)


def is_valid_domain(domain: str) -> bool:
    """RFC 5321 ``Domain`` (plus RFC 6531 U-labels), within DNS length limits."""
    if _DOMAIN_ASCII_RE.fullmatch(domain) is not None:
        return len(domain) <= 255  # ASCII: characters are octets
    if not domain or len(domain.encode("utf-8")) > 255:
        return False
    return all(_is_label(label) for label in domain.split("."))


def _is_address_literal(lit: str) -> bool:
    # lit excludes the brackets.
    m = _IPV4_RE.fullmatch(lit)
    if m is not None:
        return all(int(g) <= 255 for g in m.groups())
    tag, sep, rest = lit.partition(":")
    if sep and tag.lower() == "ipv6":
        if "%" in rest or not rest:
            return False  # zone ids are host-local, meaningless on the wire
        try:
            ipaddress.IPv6Address(rest)
        except ValueError:
            return False
        return True
    # General-address-literal tags must be IANA-registered; none besides IPv6
    # exist, so anything else cannot be routed and is refused as syntax.
    return False


def _parse_local_part(mailbox: str) -> int:
    """Return the index of the "@" ending the local part, or raise."""
    if mailbox.startswith('"'):
        i = 1
        n = len(mailbox)
        while i < n:
            ch = mailbox[i]
            if ch == "\\":
                if i + 1 >= n:
                    raise AddressError("unterminated quoted local part")
                nxt = mailbox[i + 1]
                if not (" " <= nxt <= "~" or _utf8_char_ok(nxt)):
                    raise AddressError("invalid quoted-pair in local part")
                i += 2
                continue
            if ch == '"':
                break
            if not (" " <= ch <= "~" or _utf8_char_ok(ch)):
                raise AddressError("invalid character in quoted local part")
            i += 1
        else:
            raise AddressError("unterminated quoted local part")
        at = i + 1
        if at >= n or mailbox[at] != "@":
            raise AddressError("missing @ after quoted local part")
        return at
    at = mailbox.find("@")
    if at < 0:
        raise AddressError("missing @ in address")
    local = mailbox[:at]
    if not local:
        raise AddressError("empty local part")
    if _DOT_ATOM_ASCII_RE.fullmatch(local) is not None:
        return at
    if not all(_is_atom(atom) for atom in local.split(".")):
        raise AddressError("invalid local part")
    return at


# Mail goes to and comes from the same few thousand addresses: a hit costs a tenth
# of the ~4 µs a check takes. Only valid addresses are kept (an exception is not
# cached), and the bound holds against a client that sends a new one each time.
@functools.lru_cache(maxsize=4096)
def _parse_mailbox(mailbox: str) -> str:
    at = _parse_local_part(mailbox)
    domain = mailbox[at + 1 :]
    if domain.startswith("["):
        if not domain.endswith("]") or not _is_address_literal(domain[1:-1]):
            raise AddressError("invalid address literal")
    elif not is_valid_domain(domain):
        raise AddressError("invalid domain")
    return mailbox


# _tuple_new(PathArgument, (a, p, u)) is PathArgument(a, p, u) without the
# Python-level __new__ that NamedTuple generates: the fast paths below use it.
_tuple_new = tuple.__new__


class PathArgument(NamedTuple):
    """Result of parsing the argument of MAIL FROM: / RCPT TO:.

    ``address`` is the mailbox without angle brackets and without any source
    route ("" for the null reverse-path); ``params`` the ESMTP parameters
    (keys upper-cased, values as sent); ``utf8`` is True when the address
    holds non-ASCII characters, which RFC 6531 allows only when the
    transaction was started with SMTPUTF8.
    """

    address: str
    params: dict[str, str | None]
    utf8: bool


def _closing_bracket(s: str) -> int:
    """Index of the ">" closing a path that starts at s[0] == "<"."""
    i = 1
    n = len(s)
    quoted = False
    literal = False
    while i < n:
        ch = s[i]
        if quoted:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                quoted = False
        elif literal:
            if ch == "]":
                literal = False
        elif ch == '"':
            quoted = True
        elif ch == "[":
            literal = True
        elif ch == ">":
            return i
        i += 1
    raise AddressError("missing closing > in path")


def parse_path(path: str, *, allow_null: bool = False, allow_postmaster: bool = False) -> str:
    """Validate the inside of ``<...>`` and return the bare mailbox.

    A source route (``@a,@b:``) is validated and dropped (RFC 5321 §C says
    servers SHOULD ignore it).
    """
    if not path:
        if allow_null:
            return ""
        raise AddressError("null path not allowed here")
    if allow_postmaster and path.lower() == "postmaster":
        return path
    if path.startswith("@"):
        colon = path.find(":")
        if colon < 0:
            raise AddressError("source route without ':'")
        for hop in path[:colon].split(","):
            if not hop.startswith("@") or not is_valid_domain(hop[1:]):
                raise AddressError("invalid source route")
        path = path[colon + 1 :]
    return _parse_mailbox(path)


def _parse_path_argument(
    arg: str, keyword: str, *, allow_null: bool, allow_postmaster: bool
) -> PathArgument:
    prefix = keyword + ":"
    if arg[: len(prefix)].upper() != prefix:
        raise CommandError(f"expected {prefix}<address>")
    # Real clients (and the textbook) put a space after the colon.
    rest = arg[len(prefix) :].lstrip(" ")
    if not rest.startswith("<"):
        raise AddressError("address must be enclosed in <>")
    end = _closing_bracket(rest)
    address = parse_path(rest[1:end], allow_null=allow_null, allow_postmaster=allow_postmaster)
    tail = rest[end + 1 :]
    if tail and not tail.startswith(" "):
        raise ParameterError("expected a space between the path and its parameters")
    params = parse_esmtp_params(tail)
    return PathArgument(address, params, not address.isascii())


def parse_mail_from(arg: str) -> PathArgument:
    """Parse the argument of MAIL (``FROM:<reverse-path> [params]``)."""
    m = _PLAIN_FROM_RE.fullmatch(arg)
    if m is not None:
        # The ordinary case: <> or an ASCII dot-atom@domain, in one match.
        mailbox, domain, tail = m.groups()
        if mailbox is None:
            return _tuple_new(PathArgument, ("", parse_esmtp_params(tail) if tail else {}, False))
        if len(domain) <= 255:
            return _tuple_new(
                PathArgument, (mailbox, parse_esmtp_params(tail) if tail else {}, False)
            )
    return _parse_path_argument(arg, "FROM", allow_null=True, allow_postmaster=False)


def parse_rcpt_to(arg: str) -> PathArgument:
    """Parse the argument of RCPT (``TO:<forward-path> [params]``)."""
    m = _PLAIN_TO_RE.fullmatch(arg)
    if m is not None:
        mailbox, domain, tail = m.groups()
        if mailbox is not None and len(domain) <= 255:
            return _tuple_new(
                PathArgument, (mailbox, parse_esmtp_params(tail) if tail else {}, False)
            )
    return _parse_path_argument(arg, "TO", allow_null=False, allow_postmaster=True)


# --------------------------------------------------------------------------
# ESMTP parameters and xtext
# --------------------------------------------------------------------------

_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


_ESMTP_VALUE_ASCII_RE = re.compile(r"[!-<>-~]+")


def _is_esmtp_value(value: str) -> bool:
    # esmtp-value: %d33-60 / %d62-126, plus UTF8-non-ascii under RFC 6531.
    if _ESMTP_VALUE_ASCII_RE.fullmatch(value) is not None:
        return True
    return bool(value) and all(
        ("!" <= ch <= "~" and ch != "=") or _utf8_char_ok(ch) for ch in value
    )


def parse_esmtp_params(s: str) -> dict[str, str | None]:
    """Parse ``esmtp-param *(SP esmtp-param)`` into {KEYWORD: value-or-None}.

    Runs of spaces are tolerated; a repeated keyword is an error because the
    meaning of the second occurrence is undefined.
    """
    params: dict[str, str | None] = {}
    for token in s.split(" "):
        if not token:
            continue
        key, sep, value = token.partition("=")
        if not _KEYWORD_RE.fullmatch(key):
            raise ParameterError(f"malformed parameter keyword: {key[:40]!r}")
        if sep and not _is_esmtp_value(value):
            raise ParameterError(f"malformed value for parameter {key.upper()}")
        upper = key.upper()
        if upper in params:
            raise ParameterError(f"duplicate parameter {upper}")
        params[upper] = value if sep else None
    return params


_XTEXT_RE = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*")
_HEXCHAR_RE = re.compile(rb"\+([0-9A-Fa-f]{2})")


def is_xtext(value: str) -> bool:
    """True when ``value`` is well-formed RFC 3461 xtext."""
    return value.isascii() and _XTEXT_RE.fullmatch(value) is not None


def xtext_encode(text: str) -> str:
    """Encode text as RFC 3461 xtext; non-ASCII goes as its UTF-8 octets."""
    out: list[str] = []
    for b in text.encode("utf-8"):
        if 33 <= b <= 126 and b not in (0x2B, 0x3D):  # "+" and "=" must be escaped
            out.append(chr(b))
        else:
            out.append(f"+{b:02X}")
    return "".join(out)


def xtext_decode(value: str) -> str:
    """Decode RFC 3461 xtext (hex digits accepted in either case)."""
    if not is_xtext(value):
        raise ParameterError("malformed xtext")
    raw = _HEXCHAR_RE.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("ascii"))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParameterError("xtext does not decode to UTF-8") from None


# --------------------------------------------------------------------------
# Message content
# --------------------------------------------------------------------------


def normalize_line_endings(data: bytes) -> bytes:
    """Turn every bare CR and bare LF into CRLF.

    Must not be given data split inside a CRLF pair (see
    :class:`LineEndingNormalizer` for streams).
    """
    lf = data.count(b"\n")
    # Counting is cheaper than three replace passes, and almost all real
    # mail is already CRLF-clean.
    if lf == data.count(b"\r") and lf == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


class LineEndingNormalizer:
    """Streaming :func:`normalize_line_endings`, correct across chunk splits."""

    __slots__ = ("_cr",)

    def __init__(self) -> None:
        self._cr = False

    def feed(self, data: bytes) -> bytes:
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r"):
            # The LF completing this CR may be the next chunk's first byte.
            data = data[:-1]
            self._cr = True
        return normalize_line_endings(data) if data else b""

    def flush(self) -> bytes:
        """End of stream: a held-back trailing CR becomes a CRLF."""
        if self._cr:
            self._cr = False
            return b"\r\n"
        return b""


class DotStuffer:
    """Streaming DATA encoder for the client side (RFC 5321 §4.5.2).

    ``dot_stuff(chunk)`` returns the bytes to send for each piece of the
    message; ``finish()`` returns the tail and the ``.CRLF`` terminator (a
    CRLF is added first when the message does not end with one). Line endings
    are normalized to CRLF on the way, so what a bare-LF-splitting receiver
    and a CRLF-only receiver see as "a line starting with a dot" is the same.
    """

    __slots__ = ("_bol", "_norm")

    def __init__(self) -> None:
        self._norm = LineEndingNormalizer()
        self._bol = True  # the message starts at the beginning of a line

    def dot_stuff(self, chunk: bytes) -> bytes:
        data = self._norm.feed(chunk)
        if not data:
            return b""
        data = data.replace(b"\r\n.", b"\r\n..")
        if self._bol and data[:1] == b".":
            data = b"." + data
        self._bol = data.endswith(b"\r\n")
        return data

    def finish(self) -> bytes:
        tail = self._norm.flush()
        if tail:
            self._bol = True
        if not self._bol:
            tail += b"\r\n"
        self._bol = True
        return tail + b".\r\n"


def dot_stuff(message: bytes) -> bytes:
    """One-shot :class:`DotStuffer`: the full DATA payload with terminator."""
    stuffer = DotStuffer()
    return stuffer.dot_stuff(message) + stuffer.finish()
