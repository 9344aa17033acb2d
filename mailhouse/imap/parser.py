"""Incremental, sans-I/O parser of IMAP client commands.

:class:`CommandParser` takes bytes with :meth:`~CommandParser.feed` and hands
out events with :meth:`~CommandParser.next`:

* a :class:`Command` subclass, fully parsed (``Fetch``, ``Search``,
  ``Append``...), never a token list the session has to re-read;
* :class:`NeedContinuation` when the client announced a synchronising
  literal ``{n}``: the server answers ``+ ...`` (``event.response()``) and
  the client then sends the ``n`` octets;
* :class:`ParseError`, carrying the tag when it was readable, so the server
  answers ``tag BAD reason`` (or ``* BAD`` without a tag) and goes on with
  the next command: one bad command never desynchronises the stream;
* ``None``: more bytes are needed.

Grammar: RFC 9051 (IMAP4rev2) and RFC 3501 (IMAP4rev1), with RFC 7888
(LITERAL+/LITERAL-), 4466, 7162 (CONDSTORE/QRESYNC), 4731 (ESEARCH), 5182
(SEARCHRES ``$``), 3516 (BINARY, ``~{n}``), 5256 (SORT/THREAD), 5267
(ESORT ``RETURN``), 5258/5819/6154 (LIST-EXTENDED, LIST-STATUS,
SPECIAL-USE), 6855 (UTF8=ACCEPT ``APPEND ... UTF8 (~{n})``), 4978
(COMPRESS), 2971 (ID), 9208 (QUOTA), 4959 (SASL-IR), 3502 (MULTIAPPEND),
5032 (WITHIN: ``OLDER``/``YOUNGER``).

How a command is read. Lines end at LF (CRLF or a bare LF). A line whose end
is a literal announcement ``{n}``, ``{n+}``, ``~{n}`` or ``~{n+}`` is
followed by exactly ``n`` octets of data and then more of the same command.
Only when the whole command is in does the grammar run, over the command
text (lines joined by CR, which a line itself may not contain) with the
literal data kept aside. Literal data are never scanned.

Limits and what happens when they are hit (``ParseError.code``):

* ``max_line``: octets of command text, literals excluded, per command.
  Beyond it the rest of the line is skipped without buffering and the
  command fails (``LIMIT``).
* ``max_literal``: octets of one literal. A synchronising literal that is
  too big fails at once (the client waits for ``+`` and will not send the
  data; APPEND gets ``NO [TOOBIG]``, anything else ``BAD [TOOBIG]``). A
  too-big non-synchronising literal (and, with ``literal_plus=False``, i.e.
  LITERAL-, any non-synchronising literal over 4096 octets) is read and
  dropped as RFC 7888 requires, as is the rest of its command, and only
  then reported, so the stream stays in step.
* ``max_command``: octets of text and literals of one command (MULTIAPPEND).
* ``max_depth``: nesting of parentheses, ``OR`` and ``NOT`` in SEARCH keys.

Strings are ``bytes`` as sent (mailbox names, LOGIN credentials, search
strings, APPEND data): decoding them (modified UTF-7 or UTF-8, the SEARCH
charset) is the session's choice, see :mod:`mailhouse.imap.utf7`.
Keywords and flags are ``str``. Leniencies beyond the ABNF: bare LF ends a
line, empty lines are ignored, 8-bit octets are accepted in quoted strings
(RFC 9051 allows UTF-8 there) and in atoms used as astrings (some clients
send raw UTF-8 mailbox names), and a one-digit day without its leading space
is taken in APPEND date-times.

After ``AUTHENTICATE`` (each SASL response) and ``IDLE`` (``DONE``) the
session reads raw lines with :meth:`CommandParser.read_line`. After
``STARTTLS`` and ``COMPRESS`` it must look at
:meth:`CommandParser.take_buffered`: octets that arrived before the switch
were not protected (STARTTLS: drop them, the command-injection attack of
CVE-2011-0411) or are already compressed (COMPRESS: inflate them).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime, timedelta, timezone
from typing import ClassVar, Final, Literal, NoReturn, TypeAlias, overload

from mailhouse.imap.sequence import STAR, SequenceSet

__all__ = [
    "Append",
    "AppendMessage",
    "Authenticate",
    "BinarySection",
    "BinarySize",
    "BodySection",
    "Capability",
    "Check",
    "Close",
    "Command",
    "CommandParser",
    "Compress",
    "Copy",
    "Create",
    "Delete",
    "Enable",
    "Examine",
    "Expunge",
    "Fetch",
    "FetchAttr",
    "FetchItem",
    "GetQuota",
    "GetQuotaRoot",
    "Id",
    "Idle",
    "List",
    "Login",
    "Logout",
    "Lsub",
    "Move",
    "Namespace",
    "NeedContinuation",
    "Noop",
    "ParseError",
    "Partial",
    "QresyncParams",
    "Rename",
    "Search",
    "SearchAll",
    "SearchAnd",
    "SearchDate",
    "SearchFlag",
    "SearchHeader",
    "SearchKey",
    "SearchModSeq",
    "SearchNot",
    "SearchOr",
    "SearchSequence",
    "SearchSize",
    "SearchText",
    "SearchUid",
    "SearchWithin",
    "Section",
    "Select",
    "SelectCommand",
    "SetQuota",
    "Sort",
    "SortCriterion",
    "StartTLS",
    "Status",
    "Store",
    "Subscribe",
    "Thread",
    "UidExpunge",
    "Unselect",
    "Unsubscribe",
    "decode_sasl_response",
    "is_idle_done",
]

MAX_NUMBER: Final = 0xFFFFFFFF
MAX_NUMBER64: Final = 0x7FFFFFFFFFFFFFFF
LITERAL_MINUS_MAX: Final = 4096
"""Largest non-synchronising literal a LITERAL- server accepts (RFC 7888)."""

SYSTEM_FLAGS: Final = {
    "\\ANSWERED": "\\Answered",
    "\\FLAGGED": "\\Flagged",
    "\\DELETED": "\\Deleted",
    "\\SEEN": "\\Seen",
    "\\DRAFT": "\\Draft",
    "\\RECENT": "\\Recent",
}

STATUS_ITEMS: Final = frozenset(
    {
        "MESSAGES",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "DELETED",
        "DELETED-STORAGE",
        "SIZE",
        "HIGHESTMODSEQ",
        "RECENT",
        "APPENDLIMIT",
    }
)
SEARCH_RETURN_OPTIONS: Final = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})
SORT_KEYS: Final = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)
SPECIAL_USES: Final = {
    name.upper(): name
    for name in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}
FETCH_SIMPLE: Final = frozenset(
    {
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
    }
)
FETCH_MACROS: Final = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}


# --- events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NeedContinuation:
    """The client announced a synchronising literal of ``size`` octets and
    waits for a command continuation request before sending it."""

    tag: str | None
    size: int
    binary: bool = False

    def response(self, text: str = "Ready for literal data") -> bytes:
        """The ``+`` line to send."""
        return b"+ " + _clean_text(text).encode("ascii", "replace") + b"\r\n"


@dataclass(frozen=True, slots=True)
class ParseError:
    """A command that cannot be executed; the stream is in step again.

    ``tag`` is None when no tag could be read (answer ``* BAD``). ``status``
    is ``"BAD"`` except for an APPEND whose literal is too big (``"NO"``).
    ``code`` is a response code to put in brackets (``TOOBIG``, ``LIMIT``) or
    None. ``command`` is the command name when it was readable.
    """

    tag: str | None
    reason: str
    command: str | None = None
    code: str | None = None
    status: Literal["BAD", "NO"] = "BAD"

    def response(self) -> bytes:
        """The full response line, e.g. ``b"a1 BAD [TOOBIG] ...\\r\\n"``."""
        status = self.status if self.tag is not None else "BAD"
        head = f"{self.tag if self.tag is not None else '*'} {status} "
        if self.code:
            head += f"[{self.code}] "
        return (head + _clean_text(self.reason)).encode("ascii", "replace") + b"\r\n"


# --- command values ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """A ``section-spec``: part path plus an optional text specifier.

    ``part`` is ``(1, 2)`` for ``1.2`` and ``()`` for the whole message;
    ``text`` is None, ``"HEADER"``, ``"HEADER.FIELDS"``,
    ``"HEADER.FIELDS.NOT"``, ``"TEXT"`` or ``"MIME"``; ``fields`` holds the
    header names for the HEADER.FIELDS forms, as the client spelled them.
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        out = ".".join(map(str, self.part))
        if self.text:
            out = f"{out}.{self.text}" if out else self.text
        if self.fields:
            out += " (" + " ".join(_astring_text(f) for f in self.fields) + ")"
        return out


@dataclass(frozen=True, slots=True)
class Partial:
    """``<offset.length>`` of a FETCH BODY[]/BINARY[] item."""

    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class FetchAttr:
    """A FETCH item without a section: ``FLAGS``, ``UID``, ``ENVELOPE``,
    ``BODYSTRUCTURE``, ``BODY``, ``INTERNALDATE``, ``RFC822``,
    ``RFC822.HEADER``, ``RFC822.SIZE``, ``RFC822.TEXT`` or ``MODSEQ``."""

    name: str

    def response_name(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class BodySection:
    """``BODY[section]<partial>`` or ``BODY.PEEK[...]`` (``peek``: leave
    ``\\Seen`` alone)."""

    section: Section = field(default_factory=Section)
    partial: Partial | None = None
    peek: bool = False

    def response_name(self) -> str:
        """The item name of the FETCH response: ``BODY[1.TEXT]<0>``, PEEK
        dropped and only the origin octet kept (RFC 9051 §7.5.2)."""
        out = f"BODY[{self.section}]"
        if self.partial is not None:
            out += f"<{self.partial.offset}>"
        return out


@dataclass(frozen=True, slots=True)
class BinarySection:
    """``BINARY[part]<partial>`` or ``BINARY.PEEK[...]`` (RFC 3516)."""

    part: tuple[int, ...] = ()
    partial: Partial | None = None
    peek: bool = False

    def response_name(self) -> str:
        out = "BINARY[" + ".".join(map(str, self.part)) + "]"
        if self.partial is not None:
            out += f"<{self.partial.offset}>"
        return out


@dataclass(frozen=True, slots=True)
class BinarySize:
    """``BINARY.SIZE[part]`` (RFC 3516)."""

    part: tuple[int, ...] = ()

    def response_name(self) -> str:
        return "BINARY.SIZE[" + ".".join(map(str, self.part)) + "]"


FetchItem: TypeAlias = FetchAttr | BodySection | BinarySection | BinarySize

# Immutable, so one shared instance per name spares an allocation per item.
_FETCH_ATTRS: Final = {name: FetchAttr(name) for name in FETCH_SIMPLE}


# --- search keys -----------------------------------------------------------------------
#
# The tree is normalised: the RFC's many keys map onto a few node kinds
# (ANSWERED -> SearchFlag("\\Answered", True), UNSEEN -> SearchFlag("\\Seen",
# False), NEW -> AND(\Recent, NOT \Seen), FROM x -> SearchHeader("FROM", x)...).


@dataclass(frozen=True, slots=True)
class SearchAll:
    """``ALL``."""


@dataclass(frozen=True, slots=True)
class SearchAnd:
    """Every key must match: a parenthesised list, or several top-level keys."""

    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class SearchOr:
    """``OR key1 key2``."""

    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchNot:
    """``NOT key``."""

    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """A flag (system flag in canonical case, or keyword as sent) that must be
    set (``present``) or not. ``RECENT``/``OLD`` use ``\\Recent``."""

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class SearchDate:
    """``BEFORE``/``ON``/``SINCE`` (``field="internal"``) and
    ``SENTBEFORE``/``SENTON``/``SENTSINCE`` (``field="sent"``, the Date:
    header); dates disregard time and time zone."""

    field: Literal["internal", "sent"]
    relation: Literal["before", "on", "since"]
    date: Date


@dataclass(frozen=True, slots=True)
class SearchWithin:
    """``OLDER n`` / ``YOUNGER n`` (RFC 5032): internal date more than / at
    most ``seconds`` seconds ago."""

    older: bool
    seconds: int


@dataclass(frozen=True, slots=True)
class SearchSize:
    """``LARGER n`` (``larger=True``) or ``SMALLER n``: RFC822.SIZE."""

    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """A header field contains ``value`` (case-insensitive substring).

    ``field`` is upper-cased: ``FROM``/``TO``/``CC``/``BCC``/``SUBJECT`` for
    those keys, the given name for ``HEADER name value``. An empty value
    matches every message having the field.
    """

    field: str
    value: bytes


@dataclass(frozen=True, slots=True)
class SearchText:
    """``BODY value`` (``body_only=True``) or ``TEXT value`` (header and body)."""

    body_only: bool
    value: bytes


@dataclass(frozen=True, slots=True)
class SearchSequence:
    """A bare sequence set: message sequence numbers (or ``$``)."""

    sequence_set: SequenceSet


@dataclass(frozen=True, slots=True)
class SearchUid:
    """``UID set``."""

    sequence_set: SequenceSet


@dataclass(frozen=True, slots=True)
class SearchModSeq:
    """``MODSEQ [entry type] n`` (RFC 7162): mod-sequence at least ``modseq``.

    ``entry`` is the flag of an ``"/flags/<flag>"`` entry name and
    ``entry_type`` one of ``priv``/``shared``/``all``, or both None.
    """

    modseq: int
    entry: str | None = None
    entry_type: str | None = None


SearchKey: TypeAlias = (
    SearchAll
    | SearchAnd
    | SearchOr
    | SearchNot
    | SearchFlag
    | SearchDate
    | SearchWithin
    | SearchSize
    | SearchHeader
    | SearchText
    | SearchSequence
    | SearchUid
    | SearchModSeq
)


# --- commands -----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Command:
    """Base of every parsed command; ``name`` is the upper-case command word
    (without ``UID``) and ``tag`` the client's tag.

    Commands are slotted dataclasses compared by value. They are not frozen
    (a frozen dataclass costs microseconds per command on the FETCH hot
    path); treat them as read-only all the same.
    """

    name: ClassVar[str] = ""
    tag: str

    @property
    def command_name(self) -> str:
        """``"UID FETCH"`` for a UID command, else ``name``."""
        return ("UID " if getattr(self, "uid", False) else "") + self.name


@dataclass(slots=True, kw_only=True)
class Capability(Command):
    name: ClassVar[str] = "CAPABILITY"


@dataclass(slots=True, kw_only=True)
class Noop(Command):
    name: ClassVar[str] = "NOOP"


@dataclass(slots=True, kw_only=True)
class Logout(Command):
    name: ClassVar[str] = "LOGOUT"


@dataclass(slots=True, kw_only=True)
class StartTLS(Command):
    name: ClassVar[str] = "STARTTLS"


@dataclass(slots=True, kw_only=True)
class Authenticate(Command):
    """``AUTHENTICATE mechanism [initial-response]`` (RFC 4959 SASL-IR).

    ``initial_response`` is the decoded response: None when absent, ``b""``
    for ``=``. Further responses come from :meth:`CommandParser.read_line`
    and :func:`decode_sasl_response`.
    """

    name: ClassVar[str] = "AUTHENTICATE"
    mechanism: str
    initial_response: bytes | None = None


@dataclass(slots=True, kw_only=True)
class Login(Command):
    name: ClassVar[str] = "LOGIN"
    username: bytes
    password: bytes


@dataclass(slots=True, kw_only=True)
class Enable(Command):
    """``ENABLE cap...``; capability names upper-cased."""

    name: ClassVar[str] = "ENABLE"
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QresyncParams:
    """``(QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]]))``."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    known_sequence_set: SequenceSet | None = None
    known_uid_set: SequenceSet | None = None


@dataclass(slots=True, kw_only=True)
class SelectCommand(Command):
    """Fields shared by SELECT and EXAMINE (``readonly`` tells them apart)."""

    readonly: ClassVar[bool] = False
    mailbox: bytes
    condstore: bool = False
    qresync: QresyncParams | None = None


@dataclass(slots=True, kw_only=True)
class Select(SelectCommand):
    name: ClassVar[str] = "SELECT"


@dataclass(slots=True, kw_only=True)
class Examine(SelectCommand):
    name: ClassVar[str] = "EXAMINE"
    readonly: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class Create(Command):
    """``CREATE name [(USE (\\Drafts ...))]``; known uses in canonical case."""

    name: ClassVar[str] = "CREATE"
    mailbox: bytes
    special_use: tuple[str, ...] = ()


@dataclass(slots=True, kw_only=True)
class Delete(Command):
    name: ClassVar[str] = "DELETE"
    mailbox: bytes


@dataclass(slots=True, kw_only=True)
class Rename(Command):
    name: ClassVar[str] = "RENAME"
    mailbox: bytes
    new_name: bytes


@dataclass(slots=True, kw_only=True)
class Subscribe(Command):
    name: ClassVar[str] = "SUBSCRIBE"
    mailbox: bytes


@dataclass(slots=True, kw_only=True)
class Unsubscribe(Command):
    name: ClassVar[str] = "UNSUBSCRIBE"
    mailbox: bytes


@dataclass(slots=True, kw_only=True)
class List(Command):
    """LIST, basic or extended (RFC 5258, 5819, 6154, 9051).

    ``patterns`` has one entry for the basic form. ``extended`` is True when
    selection options, several patterns or RETURN were given (then
    CHILDINFO/OLDNAME extended data may be sent). Selection options:
    ``select_subscribed``, ``select_remote``, ``select_recursive``
    (RECURSIVEMATCH), ``select_special_use``. Return options:
    ``return_subscribed`` (also implied by the SUBSCRIBED selection option),
    ``return_children``, ``return_special_use`` and ``return_status`` (the
    STATUS items to send per mailbox, or None).
    """

    name: ClassVar[str] = "LIST"
    reference: bytes
    patterns: tuple[bytes, ...]
    extended: bool = False
    select_subscribed: bool = False
    select_remote: bool = False
    select_recursive: bool = False
    select_special_use: bool = False
    return_subscribed: bool = False
    return_children: bool = False
    return_special_use: bool = False
    return_status: tuple[str, ...] | None = None


@dataclass(slots=True, kw_only=True)
class Lsub(Command):
    name: ClassVar[str] = "LSUB"
    reference: bytes
    pattern: bytes


@dataclass(slots=True, kw_only=True)
class Namespace(Command):
    name: ClassVar[str] = "NAMESPACE"


@dataclass(slots=True, kw_only=True)
class Status(Command):
    """``STATUS mailbox (items)``; items upper-cased, in the client's order."""

    name: ClassVar[str] = "STATUS"
    mailbox: bytes
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND (several with MULTIAPPEND, RFC 3502).

    ``binary`` is True when sent as literal8 ``~{n}`` (RFC 3516: may hold
    NUL and unencoded binary); ``utf8`` when wrapped as ``UTF8 (~{n})``
    (RFC 6855).
    """

    data: bytes
    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None
    binary: bool = False
    utf8: bool = False


@dataclass(slots=True, kw_only=True)
class Append(Command):
    name: ClassVar[str] = "APPEND"
    mailbox: bytes
    messages: tuple[AppendMessage, ...]


@dataclass(slots=True, kw_only=True)
class Idle(Command):
    """``IDLE``: the session then reads ``DONE`` with ``read_line``."""

    name: ClassVar[str] = "IDLE"


@dataclass(slots=True, kw_only=True)
class Check(Command):
    name: ClassVar[str] = "CHECK"


@dataclass(slots=True, kw_only=True)
class Close(Command):
    name: ClassVar[str] = "CLOSE"


@dataclass(slots=True, kw_only=True)
class Unselect(Command):
    name: ClassVar[str] = "UNSELECT"


@dataclass(slots=True, kw_only=True)
class Expunge(Command):
    name: ClassVar[str] = "EXPUNGE"


@dataclass(slots=True, kw_only=True)
class UidExpunge(Command):
    """``UID EXPUNGE set`` (UIDPLUS, RFC 9051)."""

    name: ClassVar[str] = "EXPUNGE"
    uid: bool = True
    sequence_set: SequenceSet


@dataclass(slots=True, kw_only=True)
class Search(Command):
    """SEARCH / UID SEARCH.

    ``criteria`` is one key (several top-level keys become a SearchAnd).
    ``charset`` as sent, or None. ``return_options`` is None without RETURN
    (answer with ``* SEARCH``), else the upper-cased options, ``RETURN ()``
    being normalised to ``("ALL",)`` (answer with ``* ESEARCH``).
    """

    name: ClassVar[str] = "SEARCH"
    uid: bool = False
    criteria: SearchKey
    charset: str | None = None
    return_options: tuple[str, ...] | None = None


@dataclass(slots=True, kw_only=True)
class Fetch(Command):
    """FETCH / UID FETCH.

    ``items`` in the client's order with macros expanded (``macro`` keeps
    ALL/FAST/FULL when one was used). UID FETCH must also return UID: that
    is left to the session. ``changed_since``/``vanished`` are the RFC 7162
    modifiers; VANISHED is only accepted with UID FETCH and CHANGEDSINCE.
    """

    name: ClassVar[str] = "FETCH"
    uid: bool = False
    sequence_set: SequenceSet
    items: tuple[FetchItem, ...]
    macro: str | None = None
    changed_since: int | None = None
    vanished: bool = False


@dataclass(slots=True, kw_only=True)
class Store(Command):
    """STORE / UID STORE: ``FLAGS``/``+FLAGS``/``-FLAGS`` (action ``set``,
    ``add``, ``remove``), ``.SILENT``, and UNCHANGEDSINCE (RFC 7162)."""

    name: ClassVar[str] = "STORE"
    uid: bool = False
    sequence_set: SequenceSet
    action: Literal["set", "add", "remove"]
    silent: bool = False
    flags: tuple[str, ...] = ()
    unchanged_since: int | None = None


@dataclass(slots=True, kw_only=True)
class Copy(Command):
    name: ClassVar[str] = "COPY"
    uid: bool = False
    sequence_set: SequenceSet
    mailbox: bytes


@dataclass(slots=True, kw_only=True)
class Move(Command):
    name: ClassVar[str] = "MOVE"
    uid: bool = False
    sequence_set: SequenceSet
    mailbox: bytes


@dataclass(frozen=True, slots=True)
class SortCriterion:
    key: str
    reverse: bool = False


@dataclass(slots=True, kw_only=True)
class Sort(Command):
    """SORT / UID SORT (RFC 5256), with ESORT ``RETURN`` (RFC 5267)."""

    name: ClassVar[str] = "SORT"
    uid: bool = False
    criteria: tuple[SortCriterion, ...]
    charset: str
    search: SearchKey
    return_options: tuple[str, ...] | None = None


@dataclass(slots=True, kw_only=True)
class Thread(Command):
    """THREAD / UID THREAD (RFC 5256); ``algorithm`` upper-cased."""

    name: ClassVar[str] = "THREAD"
    uid: bool = False
    algorithm: str
    charset: str
    search: SearchKey


@dataclass(slots=True, kw_only=True)
class Id(Command):
    """``ID (field value ...)`` or ``ID NIL`` (RFC 2971); decoded as UTF-8
    (invalid octets replaced), since the values are only for logs."""

    name: ClassVar[str] = "ID"
    parameters: tuple[tuple[str, str | None], ...] | None


@dataclass(slots=True, kw_only=True)
class GetQuota(Command):
    name: ClassVar[str] = "GETQUOTA"
    root: bytes


@dataclass(slots=True, kw_only=True)
class GetQuotaRoot(Command):
    name: ClassVar[str] = "GETQUOTAROOT"
    mailbox: bytes


@dataclass(slots=True, kw_only=True)
class SetQuota(Command):
    """``SETQUOTA root (RESOURCE limit ...)``; resource names upper-cased."""

    name: ClassVar[str] = "SETQUOTA"
    root: bytes
    limits: tuple[tuple[str, int], ...]


@dataclass(slots=True, kw_only=True)
class Compress(Command):
    """``COMPRESS mechanism`` (RFC 4978); upper-cased, e.g. ``DEFLATE``."""

    name: ClassVar[str] = "COMPRESS"
    mechanism: str


# --- helpers for the session ---------------------------------------------------------

_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def decode_sasl_response(line: bytes) -> bytes | None:
    """Decode one SASL client response line (RFC 9051 §6.2.2).

    Returns None for ``*`` (the client cancels: answer ``BAD``), ``b""`` for
    an empty line; raises ValueError for invalid base64.
    """
    line = line.strip(b" ")
    if line == b"*":
        return None
    if line == b"=":
        return b""
    if _BASE64.fullmatch(line) is None:
        raise ValueError("invalid base64 in SASL response")
    return base64.b64decode(line)


def is_idle_done(line: bytes) -> bool:
    """True when an IDLE continuation line is ``DONE`` (case-insensitive)."""
    return line.strip(b" ").upper() == b"DONE"


# --- tokenizer ------------------------------------------------------------------------------

_TAG = re.compile(rb"[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]+")
_ATOM = re.compile(rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e]+")
_ASTRING_ATOM = re.compile(rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5d-\x7a\x7c-\x7e\x80-\xff]+")
_LIST_ATOM = re.compile(rb"[\x21\x23-\x27\x2a-\x5b\x5d-\x7a\x7c-\x7e\x80-\xff]+")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_QUOTED_ESCAPE = re.compile(rb'\\(["\\])')
_LITERAL = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\r")
_TAIL_LITERAL = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\Z")
_DIGITS = re.compile(rb"[0-9]+")
_SEQ_TOKEN = re.compile(rb"[0-9:*,$]+")
_FLAG = re.compile(rb"\\?[\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e]+")
_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_PART = re.compile(rb"[1-9][0-9]{0,9}(?:\.[1-9][0-9]{0,9})*")
_SECTION_TEXT = re.compile(rb"HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME", re.I)
_PARTIAL = re.compile(rb"<([0-9]{1,19})\.([0-9]{1,19})>")
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_SEARCH_DATE = re.compile(rb'("?)([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})\1')
_DATE_TIME = re.compile(
    rb'"( [0-9]|[0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_HEAD = re.compile(
    rb"([\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]+) ([A-Za-z]+)(?: ([A-Za-z]+))?"
)
_ENTRY_FLAG = re.compile(r"/flags/(\\?[\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e]+)", re.I)
_MONTHS: Final = {
    m: i
    for i, m in enumerate(
        (
            b"JAN",
            b"FEB",
            b"MAR",
            b"APR",
            b"MAY",
            b"JUN",
            b"JUL",
            b"AUG",
            b"SEP",
            b"OCT",
            b"NOV",
            b"DEC",
        ),
        1,
    )
}
_NON_TEXT = re.compile(r"[^\x20-\x7e]+")
_SAFE_ASTRING = re.compile(r"[\x21\x23\x24\x26\x27\x2b-\x5b\x5d-\x7a\x7c-\x7e]+")


def _clean_text(text: str) -> str:
    # Response text must stay on one line and in printable ASCII.
    return _NON_TEXT.sub(" ", text)[:200]


def _show(data: bytes, limit: int = 32) -> str:
    text = data[:limit].decode("ascii", "replace")
    return _NON_TEXT.sub("?", text) + ("..." if len(data) > limit else "")


def _astring_text(value: str) -> str:
    if _SAFE_ASTRING.fullmatch(value) and value.upper() != "NIL":
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Syntax(Exception):
    """Raised inside the grammar; turned into a ParseError at the top."""

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class _Reader:
    """Cursor over one complete command: its text and its literals in order."""

    __slots__ = ("buf", "end", "li", "lits", "max_depth", "pos")

    def __init__(self, buf: bytes, lits: list[bytes], max_depth: int) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)
        self.lits = lits
        self.li = 0
        self.max_depth = max_depth

    # -- basics ----------------------------------------------------------------------------

    def fail(self, reason: str, code: str | None = None) -> NoReturn:
        raise _Syntax(reason, code)

    def peek(self) -> int:
        return self.buf[self.pos] if self.pos < self.end else -1

    def at_end(self) -> bool:
        return self.pos >= self.end

    def sp(self) -> None:
        if self.pos < self.end and self.buf[self.pos] == 0x20:
            self.pos += 1
        elif self.pos >= self.end:
            self.fail("Missing argument")
        else:
            self.fail(f"Expected a space at {_show(self.buf[self.pos :])}")

    def maybe_sp(self) -> bool:
        if self.pos < self.end and self.buf[self.pos] == 0x20:
            self.pos += 1
            return True
        return False

    def char(self, ch: int, what: str) -> None:
        if self.pos < self.end and self.buf[self.pos] == ch:
            self.pos += 1
        else:
            self.fail(f"Expected {what}")

    def eol(self) -> None:
        if self.pos < self.end:
            self.fail(f"Unexpected characters at end of command: {_show(self.buf[self.pos :])}")

    # -- tokens ---------------------------------------------------------------------------------

    def atom(self, what: str = "an atom") -> bytes:
        m = _ATOM.match(self.buf, self.pos)
        if m is None:
            self.fail(f"Expected {what}")
        self.pos = m.end()
        return m.group()

    def keyword(self, what: str = "a keyword") -> str:
        return self.atom(what).decode("ascii").upper()

    def literal(self, binary_ok: bool = False) -> tuple[bytes, bool]:
        m = _LITERAL.match(self.buf, self.pos)
        if m is None:
            self.fail("Invalid literal, or a literal not at the end of a line")
        if self.li >= len(self.lits):
            self.fail("Literal announced but not at the end of a line")
        data = self.lits[self.li]
        if len(data) != int(m.group(2)):
            self.fail("Literal length mismatch")
        binary = bool(m.group(1))
        if binary and not binary_ok:
            self.fail("literal8 is not allowed here")
        self.li += 1
        self.pos = m.end()
        return data, binary

    def quoted(self) -> bytes:
        m = _QUOTED.match(self.buf, self.pos)
        if m is None:
            self.fail("Unterminated quoted string or invalid character in it")
        self.pos = m.end()
        value = m.group(1)
        if b"\\" in value:
            value = _QUOTED_ESCAPE.sub(rb"\1", value)
        return value

    def string(self, what: str = "a string") -> bytes:
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()[0]
        self.fail(f"Expected {what}")

    def astring(self, what: str = "a string") -> bytes:
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()[0]
        m = _ASTRING_ATOM.match(self.buf, self.pos)
        if m is None:
            self.fail(f"Expected {what}")
        self.pos = m.end()
        return m.group()

    def nstring(self) -> bytes | None:
        if self.buf[self.pos : self.pos + 3].upper() == b"NIL":
            m = _ATOM.match(self.buf, self.pos)
            if m is not None and m.end() == self.pos + 3:
                self.pos += 3
                return None
        return self.string()

    def mailbox(self) -> bytes:
        return self.astring("a mailbox name")

    def list_mailbox(self) -> bytes:
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string()
        m = _LIST_ATOM.match(self.buf, self.pos)
        if m is None:
            self.fail("Expected a mailbox pattern")
        self.pos = m.end()
        return m.group()

    def number(
        self, maximum: int = MAX_NUMBER, *, nonzero: bool = False, what: str = "a number"
    ) -> int:
        m = _DIGITS.match(self.buf, self.pos)
        if m is None:
            self.fail(f"Expected {what}")
        digits = m.group()
        if len(digits) > 20:
            self.fail(f"{what[0].upper()}{what[1:]} is out of range")
        value = int(digits)
        if value > maximum or (nonzero and value == 0):
            self.fail(f"{what[0].upper()}{what[1:]} is out of range")
        self.pos = m.end()
        return value

    def sequence_set(self, *, star: bool = True, saved: bool = True) -> SequenceSet:
        m = _SEQ_TOKEN.match(self.buf, self.pos)
        if m is None:
            self.fail("Expected a sequence set")
        try:
            result = SequenceSet.parse(m.group())
        except ValueError as exc:
            self.fail(f"Invalid sequence set: {exc}")
        if result.saved and not saved:
            self.fail("'$' is not allowed here")
        if not star and any(hi == STAR for _, hi in result.ranges):
            self.fail("'*' is not allowed here")
        self.pos = m.end()
        return result

    def flag(self, *, allow_recent: bool = False) -> str:
        m = _FLAG.match(self.buf, self.pos)
        if m is None:
            self.fail("Expected a flag")
        self.pos = m.end()
        text = m.group().decode("ascii")
        if text[0] != "\\":
            return text
        canon = SYSTEM_FLAGS.get(text.upper())
        if canon is None:
            return text
        if canon == "\\Recent" and not allow_recent:
            self.fail("\\Recent cannot be set by clients")
        return canon

    def flag_list(self) -> tuple[str, ...]:
        self.char(0x28, "'('")
        flags: list[str] = []
        if self.peek() != 0x29:
            flags.append(self.flag())
            while self.maybe_sp():
                flags.append(self.flag())
        self.char(0x29, "')' after the flags")
        return tuple(flags)

    def mod_sequence(self, *, zero_ok: bool) -> int:
        return self.number(MAX_NUMBER64, nonzero=not zero_ok, what="a mod-sequence value")


# --- grammar: command by command -------------------------------------------------------------------

_Handler = Callable[[_Reader, str, bool], Command]


def _no_args(cls: type[Command]) -> _Handler:
    def parse(r: _Reader, tag: str, uid: bool) -> Command:
        return cls(tag=tag)

    return parse


def _p_authenticate(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    mech = r.keyword("a SASL mechanism")
    initial: bytes | None = None
    if r.maybe_sp():
        if r.peek() == 0x3D and r.pos + 1 == r.end:
            r.pos += 1
            initial = b""
        else:
            m = _BASE64.match(r.buf, r.pos)
            if m is None or m.end() == r.pos:
                r.fail("Invalid base64 in the initial response")
            r.pos = m.end()
            initial = base64.b64decode(m.group())
    return Authenticate(tag=tag, mechanism=mech, initial_response=initial)


def _p_login(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    user = r.astring("a user name")
    r.sp()
    password = r.astring("a password")
    return Login(tag=tag, username=user, password=password)


def _p_enable(r: _Reader, tag: str, uid: bool) -> Command:
    caps: list[str] = []
    r.sp()
    caps.append(r.keyword("a capability name"))
    while r.maybe_sp():
        caps.append(r.keyword("a capability name"))
    return Enable(tag=tag, capabilities=tuple(caps))


def _qresync(r: _Reader) -> QresyncParams:
    r.char(0x28, "'(' after QRESYNC")
    uidvalidity = r.number(nonzero=True, what="a UIDVALIDITY")
    r.sp()
    modseq = r.mod_sequence(zero_ok=False)
    known: SequenceSet | None = None
    seqs: SequenceSet | None = None
    uids: SequenceSet | None = None
    if r.maybe_sp():
        if r.peek() != 0x28:
            known = r.sequence_set(star=False, saved=False)
            if not r.maybe_sp():
                r.char(0x29, "')' after the QRESYNC parameters")
                return QresyncParams(uidvalidity, modseq, known)
        r.char(0x28, "'(' before the sequence match data")
        seqs = r.sequence_set(star=False, saved=False)
        r.sp()
        uids = r.sequence_set(star=False, saved=False)
        r.char(0x29, "')' after the sequence match data")
    r.char(0x29, "')' after the QRESYNC parameters")
    return QresyncParams(uidvalidity, modseq, known, seqs, uids)


def _select_common(r: _Reader) -> tuple[bytes, bool, QresyncParams | None]:
    r.sp()
    mailbox = r.mailbox()
    condstore = False
    qresync: QresyncParams | None = None
    if r.maybe_sp():
        r.char(0x28, "'(' before the SELECT parameters")
        seen: set[str] = set()
        while True:
            param = r.keyword("a SELECT parameter")
            if param in seen:
                r.fail(f"Duplicate parameter {param}")
            seen.add(param)
            if param == "CONDSTORE":
                condstore = True
            elif param == "QRESYNC":
                r.sp()
                qresync = _qresync(r)
            else:
                r.fail(f"Unknown SELECT parameter {_show(param.encode())}")
            if not r.maybe_sp():
                break
        r.char(0x29, "')' after the SELECT parameters")
    return mailbox, condstore, qresync


def _p_select(r: _Reader, tag: str, uid: bool) -> Command:
    mailbox, condstore, qresync = _select_common(r)
    return Select(tag=tag, mailbox=mailbox, condstore=condstore, qresync=qresync)


def _p_examine(r: _Reader, tag: str, uid: bool) -> Command:
    mailbox, condstore, qresync = _select_common(r)
    return Examine(tag=tag, mailbox=mailbox, condstore=condstore, qresync=qresync)


def _p_create(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    uses: list[str] = []
    if r.maybe_sp():
        r.char(0x28, "'(' before the CREATE parameters")
        while True:
            param = r.keyword("a CREATE parameter")
            if param != "USE":
                r.fail(f"Unknown CREATE parameter {_show(param.encode())}")
            r.sp()
            r.char(0x28, "'(' after USE")
            if r.peek() != 0x29:
                while True:
                    attr = r.flag(allow_recent=True)
                    if not attr.startswith("\\"):
                        r.fail("A special-use attribute starts with a backslash")
                    uses.append(SPECIAL_USES.get(attr.upper(), attr))
                    if not r.maybe_sp():
                        break
            r.char(0x29, "')' after the special-use attributes")
            if not r.maybe_sp():
                break
        r.char(0x29, "')' after the CREATE parameters")
    return Create(tag=tag, mailbox=mailbox, special_use=tuple(uses))


def _mailbox_only(cls: type[Delete] | type[Subscribe] | type[Unsubscribe]) -> _Handler:
    def parse(r: _Reader, tag: str, uid: bool) -> Command:
        r.sp()
        return cls(tag=tag, mailbox=r.mailbox())

    return parse


def _p_rename(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    old = r.mailbox()
    r.sp()
    new = r.mailbox()
    return Rename(tag=tag, mailbox=old, new_name=new)


def _status_items(r: _Reader) -> tuple[str, ...]:
    r.char(0x28, "'(' before the status items")
    items: list[str] = []
    while True:
        item = r.keyword("a status item")
        if item not in STATUS_ITEMS:
            r.fail(f"Unknown status item {_show(item.encode())}")
        items.append(item)
        if not r.maybe_sp():
            break
    r.char(0x29, "')' after the status items")
    return tuple(items)


def _p_status(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    return Status(tag=tag, mailbox=mailbox, items=_status_items(r))


def _p_list(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    extended = False
    sel: set[str] = set()
    if r.peek() == 0x28:
        extended = True
        r.pos += 1
        if r.peek() != 0x29:
            while True:
                opt = r.keyword("a LIST selection option")
                if opt not in ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"):
                    r.fail(f"Unknown LIST selection option {_show(opt.encode())}")
                sel.add(opt)
                if not r.maybe_sp():
                    break
        r.char(0x29, "')' after the selection options")
        r.sp()
        if "RECURSIVEMATCH" in sel and not sel & {"SUBSCRIBED", "SPECIAL-USE"}:
            # RFC 5258 §3: RECURSIVEMATCH only modifies a base selection option.
            r.fail("RECURSIVEMATCH needs another selection option")
    reference = r.mailbox()
    r.sp()
    patterns: list[bytes] = []
    if r.peek() == 0x28:
        extended = True
        r.pos += 1
        patterns.append(r.list_mailbox())
        while r.maybe_sp():
            patterns.append(r.list_mailbox())
        r.char(0x29, "')' after the patterns")
    else:
        patterns.append(r.list_mailbox())
    ret: set[str] = set()
    status: tuple[str, ...] | None = None
    if r.maybe_sp():
        if r.keyword("RETURN") != "RETURN":
            r.fail("Expected RETURN")
        extended = True
        r.sp()
        r.char(0x28, "'(' after RETURN")
        if r.peek() != 0x29:
            while True:
                opt = r.keyword("a LIST return option")
                if opt == "STATUS":
                    r.sp()
                    status = _status_items(r)
                elif opt in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
                    ret.add(opt)
                else:
                    r.fail(f"Unknown LIST return option {_show(opt.encode())}")
                if not r.maybe_sp():
                    break
        r.char(0x29, "')' after the return options")
    return List(
        tag=tag,
        reference=reference,
        patterns=tuple(patterns),
        extended=extended,
        select_subscribed="SUBSCRIBED" in sel,
        select_remote="REMOTE" in sel,
        select_recursive="RECURSIVEMATCH" in sel,
        select_special_use="SPECIAL-USE" in sel,
        return_subscribed="SUBSCRIBED" in ret or "SUBSCRIBED" in sel,
        return_children="CHILDREN" in ret,
        return_special_use="SPECIAL-USE" in ret,
        return_status=status,
    )


def _p_lsub(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    reference = r.mailbox()
    r.sp()
    return Lsub(tag=tag, reference=reference, pattern=r.list_mailbox())


def _date_time(r: _Reader) -> datetime:
    m = _DATE_TIME.match(r.buf, r.pos)
    if m is None:
        r.fail("Invalid date-time")
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    month = _MONTHS.get(mon.upper())
    if month is None:
        r.fail("Invalid month in date-time")
    try:
        offset = timedelta(hours=int(zh), minutes=int(zm))
        if int(zm) >= 60 or offset >= timedelta(hours=24):
            raise ValueError("zone")
        tz = timezone(-offset if sign == b"-" else offset)
        # A leap second cannot be represented; it is taken as :59.
        value = datetime(int(year), month, int(day), int(hh), int(mm), min(int(ss), 59), tzinfo=tz)
    except ValueError:
        r.fail("Invalid date-time")
    r.pos = m.end()
    return value


def _p_append(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    messages: list[AppendMessage] = []
    while True:
        r.sp()
        flags: tuple[str, ...] = ()
        when: datetime | None = None
        if r.peek() == 0x28:
            flags = r.flag_list()
            r.sp()
        if r.peek() == 0x22:
            when = _date_time(r)
            r.sp()
        utf8 = False
        if r.buf[r.pos : r.pos + 4].upper() == b"UTF8":
            r.pos += 4
            r.sp()
            r.char(0x28, "'(' after UTF8")
            data, binary = r.literal(binary_ok=True)
            if not binary:
                r.fail("UTF8 data must be a literal8")
            r.char(0x29, "')' after the UTF8 data")
            utf8 = True
        elif r.peek() in (0x7B, 0x7E):
            data, binary = r.literal(binary_ok=True)
        else:
            r.fail("Expected the message as a literal")
        messages.append(
            AppendMessage(data=data, flags=flags, internal_date=when, binary=binary, utf8=utf8)
        )
        if r.at_end():
            break
    return Append(tag=tag, mailbox=mailbox, messages=tuple(messages))


# -- SEARCH ---------------------------------------------------------------------------------------------

_FLAG_KEYS: Final[dict[str, SearchKey]] = {
    "ALL": SearchAll(),
    "ANSWERED": SearchFlag("\\Answered", True),
    "DELETED": SearchFlag("\\Deleted", True),
    "DRAFT": SearchFlag("\\Draft", True),
    "FLAGGED": SearchFlag("\\Flagged", True),
    "SEEN": SearchFlag("\\Seen", True),
    "RECENT": SearchFlag("\\Recent", True),
    "UNANSWERED": SearchFlag("\\Answered", False),
    "UNDELETED": SearchFlag("\\Deleted", False),
    "UNDRAFT": SearchFlag("\\Draft", False),
    "UNFLAGGED": SearchFlag("\\Flagged", False),
    "UNSEEN": SearchFlag("\\Seen", False),
    "OLD": SearchFlag("\\Recent", False),
    "NEW": SearchAnd((SearchFlag("\\Recent", True), SearchFlag("\\Seen", False))),
}
_STRING_KEYS: Final = {"FROM", "TO", "CC", "BCC", "SUBJECT"}
_DATE_KEYS: Final[
    dict[str, tuple[Literal["internal", "sent"], Literal["before", "on", "since"]]]
] = {
    "BEFORE": ("internal", "before"),
    "ON": ("internal", "on"),
    "SINCE": ("internal", "since"),
    "SENTBEFORE": ("sent", "before"),
    "SENTON": ("sent", "on"),
    "SENTSINCE": ("sent", "since"),
}


def _search_date(r: _Reader) -> Date:
    m = _SEARCH_DATE.match(r.buf, r.pos)
    if m is None:
        r.fail("Invalid date (expected dd-Mon-yyyy)")
    month = _MONTHS.get(m.group(3).upper())
    if month is None:
        r.fail("Invalid month in date")
    try:
        value = Date(int(m.group(4)), month, int(m.group(2)))
    except ValueError:
        r.fail("Invalid date")
    r.pos = m.end()
    return value


def _search_key(r: _Reader, depth: int) -> SearchKey:
    c = r.peek()
    if c == 0x28:
        if depth >= r.max_depth:
            r.fail("Search keys nested too deeply", "LIMIT")
        r.pos += 1
        keys = [_search_key(r, depth + 1)]
        while r.maybe_sp():
            keys.append(_search_key(r, depth + 1))
        r.char(0x29, "')' after the search keys")
        return keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
    if c in (0x24, 0x2A) or 0x30 <= c <= 0x39:
        return SearchSequence(r.sequence_set())
    word = r.keyword("a search key")
    simple = _FLAG_KEYS.get(word)
    if simple is not None:
        return simple
    if word in _STRING_KEYS:
        r.sp()
        return SearchHeader(word, r.astring())
    dated = _DATE_KEYS.get(word)
    if dated is not None:
        r.sp()
        return SearchDate(dated[0], dated[1], _search_date(r))
    if word in ("OR", "NOT"):
        if depth >= r.max_depth:
            r.fail("Search keys nested too deeply", "LIMIT")
        r.sp()
        first = _search_key(r, depth + 1)
        if word == "NOT":
            return SearchNot(first)
        r.sp()
        return SearchOr(first, _search_key(r, depth + 1))
    if word in ("KEYWORD", "UNKEYWORD"):
        r.sp()
        flag = r.flag()
        return SearchFlag(flag, word == "KEYWORD")
    if word in ("LARGER", "SMALLER"):
        r.sp()
        return SearchSize(word == "LARGER", r.number(MAX_NUMBER64, what="a size"))
    if word in ("BODY", "TEXT"):
        r.sp()
        return SearchText(word == "BODY", r.astring())
    if word == "HEADER":
        r.sp()
        name = r.astring("a header field name").decode("latin-1")
        if not _HEADER_NAME.fullmatch(name):
            r.fail("Invalid header field name")
        r.sp()
        return SearchHeader(name.upper(), r.astring())
    if word == "UID":
        r.sp()
        return SearchUid(r.sequence_set())
    if word in ("OLDER", "YOUNGER"):
        r.sp()
        return SearchWithin(word == "OLDER", r.number(nonzero=True, what="an interval"))
    if word == "MODSEQ":
        r.sp()
        entry: str | None = None
        entry_type: str | None = None
        if r.peek() == 0x22:
            raw = r.quoted().decode("ascii", "replace")
            m = _ENTRY_FLAG.fullmatch(raw)
            if m is None:
                r.fail("Invalid MODSEQ entry name")
            flag = m.group(1)
            entry = SYSTEM_FLAGS.get(flag.upper(), flag)
            r.sp()
            entry_type = r.keyword("an entry type").lower()
            if entry_type not in ("priv", "shared", "all"):
                r.fail("Invalid MODSEQ entry type")
            r.sp()
        return SearchModSeq(r.mod_sequence(zero_ok=True), entry, entry_type)
    r.fail(f"Unknown search key {_show(word.encode())}")


def _search_program(r: _Reader) -> SearchKey:
    keys = [_search_key(r, 0)]
    while r.maybe_sp():
        keys.append(_search_key(r, 0))
    return keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))


def _return_options(r: _Reader) -> tuple[str, ...] | None:
    """``RETURN (opts)`` if present (consumes the SP after it)."""
    if r.buf[r.pos : r.pos + 7].upper() != b"RETURN ":
        return None
    r.pos += 7
    r.char(0x28, "'(' after RETURN")
    opts: list[str] = []
    if r.peek() != 0x29:
        while True:
            opt = r.keyword("a RETURN option")
            if opt not in SEARCH_RETURN_OPTIONS:
                r.fail(f"Unknown RETURN option {_show(opt.encode())}")
            if opt not in opts:
                opts.append(opt)
            if not r.maybe_sp():
                break
    r.char(0x29, "')' after the RETURN options")
    r.sp()
    # RFC 4731 §3.1: RETURN () means RETURN (ALL).
    return tuple(opts) if opts else ("ALL",)


def _charset(r: _Reader) -> str:
    raw = r.quoted() if r.peek() == 34 else r.atom("a charset")
    return raw.decode("ascii", "replace")


def _p_search(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    ret = _return_options(r)
    charset: str | None = None
    if r.buf[r.pos : r.pos + 8].upper() == b"CHARSET ":
        r.pos += 8
        charset = _charset(r)
        r.sp()
    return Search(
        tag=tag, uid=uid, criteria=_search_program(r), charset=charset, return_options=ret
    )


def _p_sort(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    ret = _return_options(r)
    r.char(0x28, "'(' before the sort criteria")
    criteria: list[SortCriterion] = []
    while True:
        key = r.keyword("a sort key")
        reverse = False
        if key == "REVERSE":
            reverse = True
            r.sp()
            key = r.keyword("a sort key")
        if key not in SORT_KEYS:
            r.fail(f"Unknown sort key {_show(key.encode())}")
        criteria.append(SortCriterion(key, reverse))
        if not r.maybe_sp():
            break
    r.char(0x29, "')' after the sort criteria")
    r.sp()
    charset = _charset(r)
    r.sp()
    return Sort(
        tag=tag,
        uid=uid,
        criteria=tuple(criteria),
        charset=charset,
        search=_search_program(r),
        return_options=ret,
    )


def _p_thread(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    algorithm = r.keyword("a threading algorithm")
    r.sp()
    charset = _charset(r)
    r.sp()
    return Thread(tag=tag, uid=uid, algorithm=algorithm, charset=charset, search=_search_program(r))


# -- FETCH -------------------------------------------------------------------------------------------------


def _section_part(r: _Reader) -> tuple[int, ...]:
    m = _SECTION_PART.match(r.buf, r.pos)
    if m is None:
        return ()
    parts = tuple(int(p) for p in m.group().split(b"."))
    if any(p > MAX_NUMBER for p in parts):
        r.fail("Section part number out of range")
    r.pos = m.end()
    return parts


def _section(r: _Reader) -> Section:
    part = _section_part(r)
    text: str | None = None
    fields: list[str] = []
    if part:
        if r.peek() == 0x2E:
            r.pos += 1
            m = _SECTION_TEXT.match(r.buf, r.pos)
            if m is None:
                r.fail("Invalid section text")
            text = m.group().decode("ascii").upper()
            r.pos = m.end()
    elif r.peek() != 0x5D:
        m = _SECTION_TEXT.match(r.buf, r.pos)
        if m is None:
            r.fail("Invalid section")
        text = m.group().decode("ascii").upper()
        if text == "MIME":
            r.fail("MIME needs a part number")
        r.pos = m.end()
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.sp()
        r.char(0x28, "'(' before the header field names")
        while True:
            name = r.astring("a header field name").decode("latin-1")
            if not _HEADER_NAME.fullmatch(name):
                r.fail("Invalid header field name")
            fields.append(name)
            if not r.maybe_sp():
                break
        r.char(0x29, "')' after the header field names")
    r.char(0x5D, "']' after the section")
    return Section(part, text, tuple(fields))


def _partial(r: _Reader) -> Partial | None:
    if r.peek() != 0x3C:
        return None
    m = _PARTIAL.match(r.buf, r.pos)
    if m is None:
        r.fail("Invalid partial range (expected <offset.length>)")
    offset, length = int(m.group(1)), int(m.group(2))
    if offset > MAX_NUMBER64 or length > MAX_NUMBER64 or length == 0:
        r.fail("Partial range out of range")
    r.pos = m.end()
    return Partial(offset, length)


@overload
def _fetch_att(r: _Reader) -> FetchItem: ...
@overload
def _fetch_att(r: _Reader, *, macro_ok: bool) -> FetchItem | str: ...


def _fetch_att(r: _Reader, *, macro_ok: bool = False) -> FetchItem | str:
    """One fetch item; with ``macro_ok`` a macro name (ALL/FAST/FULL) too."""
    m = _FETCH_NAME.match(r.buf, r.pos)
    if m is None:
        r.fail("Expected a fetch item")
    name = m.group().decode("ascii").upper()
    r.pos = m.end()
    if r.peek() != 0x5B:
        simple = _FETCH_ATTRS.get(name)
        if simple is not None:
            return simple
        if macro_ok and name in FETCH_MACROS:
            return name
        if name in FETCH_MACROS:
            r.fail(f"{name} cannot be combined with other fetch items")
        r.fail(f"Unknown fetch item {_show(m.group())}")
    r.pos += 1
    if name in ("BODY", "BODY.PEEK"):
        section = _section(r)
        return BodySection(section, _partial(r), name == "BODY.PEEK")
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        part = _section_part(r)
        r.char(0x5D, "']' after the binary section")
        if name == "BINARY.SIZE":
            return BinarySize(part)
        return BinarySection(part, _partial(r), name == "BINARY.PEEK")
    r.fail(f"Unknown fetch item {_show(m.group())}")


def _p_fetch(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    seqs = r.sequence_set()
    r.sp()
    items: list[FetchItem] = []
    macro: str | None = None
    if r.peek() == 0x28:
        r.pos += 1
        items.append(_fetch_att(r))
        while r.maybe_sp():
            items.append(_fetch_att(r))
        r.char(0x29, "')' after the fetch items")
    else:
        item = _fetch_att(r, macro_ok=True)
        if isinstance(item, str):
            macro = item
            items.extend(_FETCH_ATTRS[a] for a in FETCH_MACROS[item])
        else:
            items.append(item)
    changed_since: int | None = None
    vanished = False
    if r.maybe_sp():
        r.char(0x28, "'(' before the fetch modifiers")
        while True:
            mod = r.keyword("a fetch modifier")
            if mod == "CHANGEDSINCE" and changed_since is None:
                r.sp()
                changed_since = r.mod_sequence(zero_ok=False)
            elif mod == "VANISHED" and not vanished:
                vanished = True
            else:
                r.fail(f"Unknown or repeated fetch modifier {_show(mod.encode())}")
            if not r.maybe_sp():
                break
        r.char(0x29, "')' after the fetch modifiers")
        if vanished and not uid:
            r.fail("VANISHED is only allowed with UID FETCH")
        if vanished and changed_since is None:
            r.fail("VANISHED needs CHANGEDSINCE")
    return Fetch(
        tag=tag,
        uid=uid,
        sequence_set=seqs,
        items=tuple(items),
        macro=macro,
        changed_since=changed_since,
        vanished=vanished,
    )


def _p_store(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    seqs = r.sequence_set()
    r.sp()
    unchanged: int | None = None
    if r.peek() == 0x28:
        r.pos += 1
        while True:
            mod = r.keyword("a store modifier")
            if mod != "UNCHANGEDSINCE" or unchanged is not None:
                r.fail(f"Unknown or repeated store modifier {_show(mod.encode())}")
            r.sp()
            unchanged = r.mod_sequence(zero_ok=True)
            if not r.maybe_sp():
                break
        r.char(0x29, "')' after the store modifiers")
        r.sp()
    action: Literal["set", "add", "remove"] = "set"
    c = r.peek()
    if c == 0x2B:
        action = "add"
        r.pos += 1
    elif c == 0x2D:
        action = "remove"
        r.pos += 1
    item = r.keyword("FLAGS")
    if item not in ("FLAGS", "FLAGS.SILENT"):
        r.fail("Expected FLAGS, +FLAGS or -FLAGS")
    r.sp()
    if r.peek() == 0x28:
        flags = r.flag_list()
    else:
        found = [r.flag()]
        while r.maybe_sp():
            found.append(r.flag())
        flags = tuple(found)
    return Store(
        tag=tag,
        uid=uid,
        sequence_set=seqs,
        action=action,
        silent=item == "FLAGS.SILENT",
        flags=flags,
        unchanged_since=unchanged,
    )


def _p_copy(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    seqs = r.sequence_set()
    r.sp()
    return Copy(tag=tag, uid=uid, sequence_set=seqs, mailbox=r.mailbox())


def _p_move(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    seqs = r.sequence_set()
    r.sp()
    return Move(tag=tag, uid=uid, sequence_set=seqs, mailbox=r.mailbox())


def _p_expunge(r: _Reader, tag: str, uid: bool) -> Command:
    if not uid:
        return Expunge(tag=tag)
    r.sp()
    return UidExpunge(tag=tag, sequence_set=r.sequence_set())


def _p_id(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    if r.peek() != 0x28:
        if r.atom("NIL or '('").upper() != b"NIL":
            r.fail("Expected NIL or a parameter list")
        return Id(tag=tag, parameters=None)
    r.pos += 1
    params: list[tuple[str, str | None]] = []
    if r.peek() != 0x29:
        while True:
            key = r.string("an ID field name").decode("utf-8", "replace")
            r.sp()
            value = r.nstring()
            params.append((key, None if value is None else value.decode("utf-8", "replace")))
            if not r.maybe_sp():
                break
    r.char(0x29, "')' after the ID parameters")
    return Id(tag=tag, parameters=tuple(params))


def _p_getquota(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    return GetQuota(tag=tag, root=r.astring("a quota root"))


def _p_getquotaroot(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    return GetQuotaRoot(tag=tag, mailbox=r.mailbox())


def _p_setquota(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    root = r.astring("a quota root")
    r.sp()
    r.char(0x28, "'(' before the quota limits")
    limits: list[tuple[str, int]] = []
    if r.peek() != 0x29:
        while True:
            resource = r.keyword("a resource name")
            r.sp()
            limits.append((resource, r.number(MAX_NUMBER64, what="a limit")))
            if not r.maybe_sp():
                break
    r.char(0x29, "')' after the quota limits")
    return SetQuota(tag=tag, root=root, limits=tuple(limits))


def _p_compress(r: _Reader, tag: str, uid: bool) -> Command:
    r.sp()
    return Compress(tag=tag, mechanism=r.keyword("a compression mechanism"))


_COMMANDS: Final[dict[str, _Handler]] = {
    "CAPABILITY": _no_args(Capability),
    "NOOP": _no_args(Noop),
    "LOGOUT": _no_args(Logout),
    "STARTTLS": _no_args(StartTLS),
    "AUTHENTICATE": _p_authenticate,
    "LOGIN": _p_login,
    "ENABLE": _p_enable,
    "SELECT": _p_select,
    "EXAMINE": _p_examine,
    "CREATE": _p_create,
    "DELETE": _mailbox_only(Delete),
    "RENAME": _p_rename,
    "SUBSCRIBE": _mailbox_only(Subscribe),
    "UNSUBSCRIBE": _mailbox_only(Unsubscribe),
    "LIST": _p_list,
    "LSUB": _p_lsub,
    "NAMESPACE": _no_args(Namespace),
    "STATUS": _p_status,
    "APPEND": _p_append,
    "IDLE": _no_args(Idle),
    "CHECK": _no_args(Check),
    "CLOSE": _no_args(Close),
    "UNSELECT": _no_args(Unselect),
    "EXPUNGE": _p_expunge,
    "SEARCH": _p_search,
    "FETCH": _p_fetch,
    "STORE": _p_store,
    "COPY": _p_copy,
    "MOVE": _p_move,
    "SORT": _p_sort,
    "THREAD": _p_thread,
    "ID": _p_id,
    "GETQUOTA": _p_getquota,
    "GETQUOTAROOT": _p_getquotaroot,
    "SETQUOTA": _p_setquota,
    "COMPRESS": _p_compress,
}
_UID_COMMANDS: Final = frozenset(
    {"FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD"}
)


def _parse_command(text: bytes, lits: list[bytes], max_depth: int) -> Command | ParseError:
    r = _Reader(text, lits, max_depth)
    tag: str | None = None
    name: str | None = None
    try:
        fast = _HEAD.match(text)
        if fast is not None and (fast.end() == r.end or text[fast.end()] == 0x20):
            tag = fast.group(1).decode("ascii")
            word = fast.group(2).decode("ascii").upper()
            r.pos = fast.end(2)
        else:
            m = _TAG.match(text)
            if m is None or (m.end() < r.end and text[m.end()] != 0x20):
                # "a* NOOP": the tag is not all tag characters, so there is none.
                return ParseError(None, "Missing or invalid tag")
            tag = m.group().decode("ascii")
            r.pos = m.end()
            r.sp()
            word = r.keyword("a command name")
        uid = False
        if word == "UID":
            uid = True
            name = "UID"
            r.sp()
            word = r.keyword("a command name after UID")
            if word not in _UID_COMMANDS:
                r.fail(f"Unknown UID command {_show(word.encode())}")
            name = "UID " + word
        else:
            name = word
        handler = _COMMANDS.get(word)
        if handler is None:
            name = None
            r.fail(f"Unknown command {_show(word.encode())}")
        cmd = handler(r, tag, uid)
        r.eol()
        if r.li != len(lits):
            r.fail("Literal not consumed by the command")
        return cmd
    except _Syntax as exc:
        return ParseError(tag, exc.reason, name, exc.code)
    except (ValueError, IndexError, RecursionError, UnicodeError) as exc:
        # Defence in depth: a grammar bug must cost one BAD, not the session.
        return ParseError(tag, f"Unparsable command ({type(exc).__name__})", name)


# --- the incremental machine ------------------------------------------------------------------------------


class CommandParser:
    """Incremental IMAP command parser (see the module docstring).

    ``max_line`` bounds the text of one command (literals excluded),
    ``max_literal`` one literal, ``max_command`` text plus literals of one
    command (default: four literals' worth), ``max_depth`` the nesting of
    search keys. ``literal_plus`` selects LITERAL+ (True: any size up to
    ``max_literal`` may be non-synchronising) or LITERAL- (False: 4096
    octets at most, RFC 7888).
    """

    def __init__(
        self,
        *,
        max_line: int = 65536,
        max_literal: int = 64 * 1024 * 1024,
        max_depth: int = 32,
        literal_plus: bool = True,
        max_command: int | None = None,
    ) -> None:
        if max_line < 64 or max_literal < 0 or max_depth < 1:
            raise ValueError("limits too small")
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_depth = max_depth
        self.literal_plus = literal_plus
        self.max_command = max_command if max_command is not None else 4 * max_literal + max_line
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0
        self._parts: list[bytes] = []
        self._lits: list[bytes] = []
        self._text = 0
        self._total = 0
        self._need = -1
        self._discard = 0
        self._skip_line = False
        self._skip_raw = False
        self._skip_tail = b""
        self._error: ParseError | None = None

    # -- input -------------------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received octets."""
        if self._discard and self._pos == len(self._buf):
            # Drop discarded literal data on arrival instead of buffering it.
            take = min(self._discard, len(data))
            self._discard -= take
            data = data[take:]
            if not self._discard:
                # As in next(): the command goes on up to the end of a line.
                self._skip_line = True
                self._skip_tail = b""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Octets received but not yet consumed."""
        return len(self._buf) - self._pos

    @property
    def in_command(self) -> bool:
        """True while part of a command has been read (useful at EOF)."""
        return bool(self._parts) or self._need >= 0 or self._pos < len(self._buf)

    def take_buffered(self) -> bytes:
        """Remove and return every unconsumed octet and forget any partial
        command: for STARTTLS (discard them) and COMPRESS (inflate them)."""
        data = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = self._scan = 0
        self._reset_command()
        self._discard = 0
        self._skip_line = self._skip_raw = False
        self._error = None
        return data

    # -- output ---------------------------------------------------------------------------------------

    def next(self) -> Command | NeedContinuation | ParseError | None:
        """The next event, or None when more input is needed."""
        buf = self._buf
        while True:
            if self._discard:
                avail = len(buf) - self._pos
                take = min(avail, self._discard)
                self._pos += take
                self._discard -= take
                if self._discard:
                    self._compact()
                    return None
                # The command goes on after the literal up to the end of a line.
                self._skip_line = True
                self._skip_tail = b""
                self._scan = self._pos
                continue
            if self._skip_line or self._skip_raw:
                lf = buf.find(b"\n", self._pos)
                if lf < 0:
                    self._skip_tail = (
                        self._skip_tail + bytes(buf[max(self._pos, len(buf) - 40) :])
                    )[-40:]
                    self._pos = self._scan = len(buf)
                    self._compact()
                    return None
                tail = (self._skip_tail + bytes(buf[max(self._pos, lf - 40) : lf]))[-40:]
                self._pos = self._scan = lf + 1
                self._skip_tail = b""
                if self._skip_raw:
                    self._skip_raw = False
                    continue
                self._skip_line = False
                if tail.endswith(b"\r"):
                    tail = tail[:-1]
                m = _TAIL_LITERAL.search(tail)
                if m is not None and m.group(3):
                    self._discard = int(m.group(2))
                    continue
                # No literal, or a synchronising one the client now waits for
                # in vain: either way the command is over.
                err = self._error
                self._reset_command()
                if err is not None:
                    return err
                continue
            if self._need >= 0:
                if len(buf) - self._pos < self._need:
                    self._compact()
                    return None
                end = self._pos + self._need
                self._lits.append(bytes(buf[self._pos : end]))
                self._pos = self._scan = end
                self._need = -1
                continue
            event = self._next_line()
            if event is _MORE:
                self._compact()
                return None
            if event is _AGAIN:
                continue
            assert not isinstance(event, _Marker)
            return event

    def read_line(self) -> bytes | ParseError | None:
        """One raw line without its line ending, for SASL responses and
        IDLE's DONE; None until a whole line is in. A line longer than
        ``max_line`` is skipped and reported as a ParseError."""
        if self._parts or self._need >= 0:
            raise RuntimeError("read_line() inside a partially read command")
        buf = self._buf
        while self._skip_raw:
            lf = buf.find(b"\n", self._pos)
            if lf < 0:
                self._pos = self._scan = len(buf)
                self._compact()
                return None
            self._pos = self._scan = lf + 1
            self._skip_raw = False
        lf = buf.find(b"\n", self._scan)
        if lf < 0:
            self._scan = len(buf)
            if len(buf) - self._pos > self.max_line:
                self._pos = self._scan = len(buf)
                self._skip_raw = True
                self._compact()
                return ParseError(None, "Line too long", code="LIMIT")
            self._compact()
            return None
        end = lf - 1 if lf > self._pos and buf[lf - 1] == 0x0D else lf
        line = bytes(buf[self._pos : end])
        self._pos = self._scan = lf + 1
        if len(line) > self.max_line:
            return ParseError(None, "Line too long", code="LIMIT")
        return line

    # -- internals --------------------------------------------------------------------------------------

    def _reset_command(self) -> None:
        self._parts = []
        self._lits = []
        self._text = 0
        self._total = 0
        self._need = -1
        self._error = None

    def _compact(self) -> None:
        if self._pos >= len(self._buf):
            self._buf.clear()
            self._pos = self._scan = 0
        elif self._pos > 65536:
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0

    def _head(self, first: bytes) -> tuple[str | None, str | None]:
        """Tag and command name of a command's first line, when readable."""
        m = _HEAD.match(first)
        if m is None:
            t = _TAG.match(first)
            if t is None or (t.end() < len(first) and first[t.end()] != 0x20):
                return None, None
            return t.group().decode("ascii"), None
        tag = m.group(1).decode("ascii")
        word = m.group(2).decode("ascii").upper()
        if word == "UID" and m.group(3):
            return tag, "UID " + m.group(3).decode("ascii").upper()
        return tag, word

    def _fail(self, line: bytes, reason: str, code: str | None) -> ParseError | _Marker:
        """Fail the command whose current line is ``line`` (already consumed)."""
        tag, name = self._head(self._parts[0] if self._parts else line)
        err = ParseError(tag, reason, name, code)
        m = _TAIL_LITERAL.search(line[-40:])
        if m is not None and m.group(3):
            self._error = err
            self._discard = int(m.group(2))
            self._parts = [b""]
            return _AGAIN
        self._reset_command()
        return err

    def _next_line(self) -> Command | NeedContinuation | ParseError | _Marker:
        buf = self._buf
        room = self.max_line - self._text
        lf = buf.find(b"\n", self._scan)
        if lf < 0:
            self._scan = len(buf)
            if len(buf) - self._pos > room + 1:
                first = self._parts[0] if self._parts else bytes(buf[self._pos : self._pos + 200])
                tag, name = self._head(first)
                self._error = ParseError(tag, "Command line too long", name, "LIMIT")
                self._skip_tail = bytes(buf[-40:])
                self._pos = self._scan = len(buf)
                self._skip_line = True
                self._parts = [b""]
                return _AGAIN
            return _MORE
        end = lf - 1 if lf > self._pos and buf[lf - 1] == 0x0D else lf
        line = bytes(buf[self._pos : end])
        self._pos = self._scan = lf + 1
        if not self._parts:
            if not line:
                return _AGAIN
            if len(line) <= room and not line.endswith(b"}") and b"\r" not in line:
                # The common case: a whole command on one line.
                return _parse_command(line, _NO_LITERALS, self.max_depth)
        if len(line) > room:
            return self._fail(line, "Command line too long", "LIMIT")
        if b"\r" in line:
            return self._fail(line, "Bare CR in command line", None)
        m = _TAIL_LITERAL.search(line, max(0, len(line) - 40)) if line.endswith(b"}") else None
        self._parts.append(line)
        self._text += len(line) + 1
        self._total += len(line)
        if m is None:
            text = self._parts[0] if len(self._parts) == 1 else b"\r".join(self._parts)
            lits = self._lits
            self._reset_command()
            return _parse_command(text, lits, self.max_depth)
        size = int(m.group(2))
        sync = not m.group(3)
        too_big = (
            size > self.max_literal
            or self._total + size > self.max_command
            or (not sync and not self.literal_plus and size > LITERAL_MINUS_MAX)
        )
        tag, name = self._head(self._parts[0])
        if too_big:
            if size > self.max_literal or self._total + size > self.max_command:
                reason = "Literal too big"
            else:
                reason = "Non-synchronizing literal over 4096 octets (LITERAL-)"
            status: Literal["BAD", "NO"] = "NO" if name == "APPEND" else "BAD"
            err = ParseError(tag, reason, name, "TOOBIG", status)
            if sync:
                # The client waits for "+" and sends nothing more for this command.
                self._reset_command()
                return err
            self._error = err
            self._discard = size
            return _AGAIN
        self._total += size
        self._need = size
        if sync:
            if tag is None or not _TAG.fullmatch(tag.encode("ascii")):
                self._reset_command()
                return ParseError(None, "Missing or invalid tag")
            if name is None or name.removeprefix("UID ") not in _COMMANDS:
                # Refusing now spares the client sending data we would reject.
                self._reset_command()
                return ParseError(tag, "Unknown command", name)
            return NeedContinuation(tag, size, bool(m.group(1)))
        return _AGAIN


_NO_LITERALS: Final[list[bytes]] = []


class _Marker:
    __slots__ = ()


_MORE: Final = _Marker()
_AGAIN: Final = _Marker()
