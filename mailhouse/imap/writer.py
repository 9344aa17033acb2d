"""Serialisation of IMAP server responses (RFC 9051 §7, RFC 3501 §7).

Every function returns the exact octets to send, CRLF included, so the
session only concatenates and writes. Values are encoded by :func:`encode`:

=====================  ==========================================================
Python value           IMAP form
=====================  ==========================================================
``None``               ``NIL``
``int``                a number
``str`` / ``bytes``    a string: quoted when safe, else a literal ``{n}``
:class:`Atom`          the text as it is (flags, keywords, names)
:class:`Raw`           pre-encoded octets (a nested ENVELOPE, a flag list)
:class:`IMAPLiteral`   always a literal (``~{n}`` literal8 when ``binary``)
list / tuple           a parenthesised list
=====================  ==========================================================

A string goes quoted only when it is printable US-ASCII (tab allowed)
without ``"`` or ``\\``, or, when the session enabled UTF8=ACCEPT or
IMAP4rev2 (``utf8=True``), also valid UTF-8 without control characters.
Anything else (CR, LF, NUL, quotes, backslashes, 8-bit octets under rev1)
goes as a literal, which every client reads without escaping rules.

ENVELOPE, BODY and BODYSTRUCTURE are built from the cached parse of
:func:`mailhouse.mime.structure.analyze` (its docstring has the schema):
:func:`envelope` takes ``result["envelope"]`` and :func:`body_structure`
takes ``result["body"]``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Final, TypeAlias

from mailhouse.imap.sequence import SequenceSet, format_numbers
from mailhouse.imap.utf7 import encode_mailbox_name

__all__ = [
    "Atom",
    "Code",
    "IMAPLiteral",
    "Raw",
    "ThreadNode",
    "Value",
    "bad",
    "binary_literal",
    "body_structure",
    "capability",
    "continuation",
    "enabled",
    "encode",
    "envelope",
    "esearch",
    "exists",
    "expunge",
    "fetch",
    "flag_list",
    "flags",
    "format_internal_date",
    "id_response",
    "list_response",
    "lsub_response",
    "mailbox_name",
    "namespace",
    "no",
    "offset_zone",
    "ok",
    "quota",
    "quotaroot",
    "recent",
    "search",
    "sort",
    "status",
    "string",
    "tagged",
    "thread",
    "untagged",
    "untagged_status",
    "vanished",
]

CRLF: Final = b"\r\n"


class Atom(str):
    """Text sent verbatim, unquoted (flags, capability names, keywords)."""

    __slots__ = ()


class Raw(bytes):
    """Octets already in IMAP syntax, inserted as they are."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class IMAPLiteral:
    """Data always sent as a literal; ``binary`` makes it a literal8 ``~{n}``
    (RFC 3516: only in BINARY[] FETCH data)."""

    data: bytes
    binary: bool = False


Value: TypeAlias = int | str | bytes | Atom | Raw | IMAPLiteral | Sequence["Value"] | None
"""Anything :func:`encode` accepts (lists nest)."""

SetArg: TypeAlias = str | SequenceSet | Iterable[int]
"""A set of numbers for a response: pre-formatted text, a SequenceSet, or
the numbers themselves (compacted into ranges)."""

_QUOTABLE: Final = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e\t]*")
_QUOTABLE_UTF8: Final = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e\t\x80-\xff]*")
_ASTRING_ATOM: Final = re.compile(rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5d-\x7a\x7c-\x7e]+")
_TEXT_UNSAFE: Final = re.compile(r"[\x00-\x1f\x7f]+")
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


# --- values -------------------------------------------------------------------------


def _literal(data: bytes, binary: bool = False) -> bytes:
    return b"%s{%d}\r\n%s" % (b"~" if binary else b"", len(data), data)


def string(value: str | bytes, *, utf8: bool = False) -> bytes:
    """A ``string``: quoted when that is safe, otherwise a literal."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if _QUOTABLE.fullmatch(data) is not None:
        return b'"' + data + b'"'
    if utf8 and _QUOTABLE_UTF8.fullmatch(data) is not None:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return b'"' + data + b'"'
    if b"\0" in data:
        data = data.replace(b"\0", b"\x80")  # a plain literal has no NUL (RFC 9051 §9)
    return _literal(data)


def _set_text(value: SetArg, *, keep_order: bool = False) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, SequenceSet):
        return str(value)
    if keep_order:
        return _ordered_ranges(value)
    return format_numbers(value)


def _ordered_ranges(values: Iterable[int]) -> str:
    # COPYUID pairs source and destination UIDs by position, so runs are only
    # merged where they ascend consecutively; the order is never changed.
    parts: list[str] = []
    start = prev = -2
    for v in values:
        if v == prev + 1:
            prev = v
            continue
        if start >= 0:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = v
    if start >= 0:
        parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)


def _encode_into(out: list[bytes], value: Value, utf8: bool) -> None:
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, Raw):
        out.append(value)
    elif isinstance(value, Atom):
        out.append(value.encode("utf-8"))
    elif isinstance(value, int):
        out.append(b"%d" % value)
    elif isinstance(value, str | bytes):
        out.append(string(value, utf8=utf8))
    elif isinstance(value, IMAPLiteral):
        out.append(_literal(value.data, value.binary))
    else:
        out.append(b"(")
        first = True
        for item in value:
            if not first:
                out.append(b" ")
            first = False
            _encode_into(out, item, utf8)
        out.append(b")")


def encode(value: Value, *, utf8: bool = False) -> bytes:
    """Encode one value (see the module docstring for the mapping)."""
    out: list[bytes] = []
    _encode_into(out, value, utf8)
    return b"".join(out)


def flag_list(flag_names: Iterable[str]) -> Raw:
    """``(\\Seen $Forwarded)``: flags are atoms, never quoted."""
    return Raw(b"(" + " ".join(flag_names).encode("utf-8") + b")")


def binary_literal(data: bytes) -> IMAPLiteral:
    """The value of a ``BINARY[...]`` item: literal8 only when the content
    has NUL, which a plain literal may not carry (RFC 3516 §4.2)."""
    return IMAPLiteral(data, binary=b"\x00" in data)


@functools.lru_cache(maxsize=64)
def offset_zone(minutes: int) -> tzinfo:
    """The fixed zone `minutes` east of UTC (an internal date's stated offset)."""
    if not minutes or not -1440 < minutes < 1440:
        return UTC  # none, or not a valid offset (a damaged row): UTC
    return timezone(timedelta(minutes=minutes))


def format_internal_date(when: datetime) -> str:
    """``17-Jul-1996 02:44:25 -0700`` (``date-time``, day padded with a space).

    A naive datetime is taken as UTC.
    """
    offset = when.utcoffset()
    minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (
        f"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    )


def mailbox_name(name: str | bytes, *, utf8: bool = False) -> bytes:
    """A mailbox name as it goes in LIST, STATUS...

    A ``str`` is encoded (modified UTF-7, or UTF-8 when ``utf8``); ``bytes``
    are taken as already encoded. The result is an atom when every octet
    allows it, else a quoted string or a literal.
    """
    data = encode_mailbox_name(name, utf8=utf8) if isinstance(name, str) else bytes(name)
    if _ASTRING_ATOM.fullmatch(data) is not None and data.upper() != b"NIL":
        return data
    return string(data, utf8=utf8)


# --- response lines ---------------------------------------------------------------------


def _text(text: str) -> bytes:
    # Free text must stay on its line: controls would let a value inject lines.
    return _TEXT_UNSAFE.sub(" ", text).encode("utf-8")


@functools.lru_cache(maxsize=1024)
def _status_tail(status: str, text: str, code: str | None) -> bytes:
    # Most status lines repeat ("OK FETCH completed"): built once, not per command.
    out = b" " + status.encode("ascii")
    if code:
        out += b" [" + _text(code) + b"]"
    if text or not code:
        out += b" " + _text(text)
    return out + CRLF


def _status_line(prefix: bytes, status: str, text: str, code: str | None) -> bytes:
    return prefix + _status_tail(status, text, code)


def tagged(tag: str, status: str, text: str = "", code: str | None = None) -> bytes:
    """``tag OK [code] text``; status is OK, NO or BAD."""
    return _status_line(tag.encode("ascii", "replace"), status, text or f"{status} completed", code)


def ok(tag: str, text: str = "completed", code: str | None = None) -> bytes:
    return tagged(tag, "OK", text, code)


def no(tag: str, text: str = "failed", code: str | None = None) -> bytes:
    return tagged(tag, "NO", text, code)


def bad(tag: str | None, text: str = "invalid command", code: str | None = None) -> bytes:
    """``tag BAD ...``, or ``* BAD ...`` without a tag."""
    if tag is None:
        return _status_line(b"*", "BAD", text, code)
    return tagged(tag, "BAD", text, code)


def untagged_status(status: str, text: str = "", code: str | None = None) -> bytes:
    """``* OK [UIDVALIDITY 1] UIDs valid``; also NO, BAD, BYE, PREAUTH."""
    return _status_line(b"*", status, text, code)


def untagged(*items: Value, utf8: bool = False) -> bytes:
    """``* item item ...``: a generic untagged data line."""
    out: list[bytes] = [b"*"]
    for item in items:
        out.append(b" ")
        _encode_into(out, item, utf8)
    out.append(CRLF)
    return b"".join(out)


def continuation(text: str | bytes = "Ready") -> bytes:
    """``+ text``; bytes are a SASL challenge already base64-encoded."""
    if isinstance(text, bytes):
        return b"+ " + text + CRLF
    return b"+ " + _text(text) + CRLF


class Code:
    """Response codes for the ``code`` argument of the status functions.

    Constants for the codes without arguments, builders for the others.
    """

    ALERT: Final = "ALERT"
    ALREADYEXISTS: Final = "ALREADYEXISTS"
    AUTHENTICATIONFAILED: Final = "AUTHENTICATIONFAILED"
    AUTHORIZATIONFAILED: Final = "AUTHORIZATIONFAILED"
    CANNOT: Final = "CANNOT"
    CLIENTBUG: Final = "CLIENTBUG"
    CLOSED: Final = "CLOSED"
    COMPRESSIONACTIVE: Final = "COMPRESSIONACTIVE"
    CONTACTADMIN: Final = "CONTACTADMIN"
    CORRUPTION: Final = "CORRUPTION"
    EXPIRED: Final = "EXPIRED"
    EXPUNGEISSUED: Final = "EXPUNGEISSUED"
    HASCHILDREN: Final = "HASCHILDREN"
    INUSE: Final = "INUSE"
    LIMIT: Final = "LIMIT"
    NOMODSEQ: Final = "NOMODSEQ"
    NONEXISTENT: Final = "NONEXISTENT"
    NOPERM: Final = "NOPERM"
    NOTSAVED: Final = "NOTSAVED"
    OVERQUOTA: Final = "OVERQUOTA"
    PARSE: Final = "PARSE"
    PRIVACYREQUIRED: Final = "PRIVACYREQUIRED"
    READ_ONLY: Final = "READ-ONLY"
    READ_WRITE: Final = "READ-WRITE"
    SERVERBUG: Final = "SERVERBUG"
    TOOBIG: Final = "TOOBIG"
    TRYCREATE: Final = "TRYCREATE"
    UIDNOTSTICKY: Final = "UIDNOTSTICKY"
    UNAVAILABLE: Final = "UNAVAILABLE"
    UNKNOWN_CTE: Final = "UNKNOWN-CTE"
    USEATTR: Final = "USEATTR"

    @staticmethod
    def uidvalidity(value: int) -> str:
        return f"UIDVALIDITY {value}"

    @staticmethod
    def uidnext(value: int) -> str:
        return f"UIDNEXT {value}"

    @staticmethod
    def unseen(seq: int) -> str:
        return f"UNSEEN {seq}"

    @staticmethod
    def highestmodseq(value: int) -> str:
        return f"HIGHESTMODSEQ {value}"

    @staticmethod
    def appendlimit(value: int) -> str:
        return f"APPENDLIMIT {value}"

    @staticmethod
    def permanentflags(flag_names: Iterable[str]) -> str:
        """``PERMANENTFLAGS (\\Seen \\*)``."""
        return "PERMANENTFLAGS (" + " ".join(flag_names) + ")"

    @staticmethod
    def capability(caps: Iterable[str]) -> str:
        return "CAPABILITY " + " ".join(caps)

    @staticmethod
    def badcharset(charsets: Iterable[str] = ()) -> str:
        names = list(charsets)
        if not names:
            return "BADCHARSET"
        return "BADCHARSET (" + " ".join(string(c).decode("ascii", "replace") for c in names) + ")"

    @staticmethod
    def appenduid(uidvalidity: int, uids: SetArg) -> str:
        """``APPENDUID 38505 3955`` (several UIDs after MULTIAPPEND, in order)."""
        return f"APPENDUID {uidvalidity} {_set_text(uids, keep_order=True)}"

    @staticmethod
    def copyuid(uidvalidity: int, source: SetArg, destination: SetArg) -> str:
        """``COPYUID 38505 304,319:320 3956:3958``: the two sets correspond by
        position, so iterables keep their order."""
        src = _set_text(source, keep_order=True)
        dst = _set_text(destination, keep_order=True)
        return f"COPYUID {uidvalidity} {src} {dst}"

    @staticmethod
    def modified(numbers: SetArg) -> str:
        """``MODIFIED 7,9`` (RFC 7162, STORE with UNCHANGEDSINCE)."""
        return f"MODIFIED {_set_text(numbers)}"

    @staticmethod
    def referral(url: str) -> str:
        return f"REFERRAL {url}"


# --- untagged data -----------------------------------------------------------------------


def exists(count: int) -> bytes:
    return b"* %d EXISTS\r\n" % count


def recent(count: int) -> bytes:
    return b"* %d RECENT\r\n" % count


def expunge(seq: int) -> bytes:
    return b"* %d EXPUNGE\r\n" % seq


def flags(flag_names: Iterable[str]) -> bytes:
    """``* FLAGS (\\Answered \\Flagged ...)``."""
    return b"* FLAGS " + flag_list(flag_names) + CRLF


def capability(caps: Iterable[str]) -> bytes:
    return b"* CAPABILITY " + " ".join(caps).encode("ascii") + CRLF


def enabled(caps: Iterable[str]) -> bytes:
    """``* ENABLED CONDSTORE`` (also with nothing enabled: ``* ENABLED``)."""
    names = " ".join(caps)
    return b"* ENABLED" + (b" " + names.encode("ascii") if names else b"") + CRLF


def _delimiter(delimiter: str | None) -> bytes:
    if delimiter is None:
        return b"NIL"
    if delimiter in ('"', "\\"):
        # QUOTED-CHAR: the delimiter is always a quoted string, so escape.
        return b'"\\' + delimiter.encode("ascii") + b'"'
    return b'"' + delimiter.encode("utf-8") + b'"'


def list_response(
    attributes: Iterable[str],
    delimiter: str | None,
    name: str | bytes,
    *,
    utf8: bool = False,
    extended: Mapping[str, Value] | None = None,
    command: str = "LIST",
) -> bytes:
    """``* LIST (\\HasNoChildren) "/" INBOX``.

    ``extended`` items are sent after the name as RFC 5258 extended data,
    e.g. ``{"CHILDINFO": ["SUBSCRIBED"]}`` or ``{"OLDNAME": ["old"]}``.
    """
    out = [
        b"* ",
        command.encode("ascii"),
        b" ",
        flag_list(attributes),
        b" ",
        _delimiter(delimiter),
        b" ",
        mailbox_name(name, utf8=utf8),
    ]
    if extended:
        items: list[Value] = []
        for key, val in extended.items():
            items.append(key)
            items.append(val)
        out.append(b" ")
        _encode_into(out, items, utf8)
    out.append(CRLF)
    return b"".join(out)


def lsub_response(
    attributes: Iterable[str], delimiter: str | None, name: str | bytes, *, utf8: bool = False
) -> bytes:
    return list_response(attributes, delimiter, name, utf8=utf8, command="LSUB")


def status(
    name: str | bytes,
    items: Mapping[str, int] | Iterable[tuple[str, int]],
    *,
    utf8: bool = False,
) -> bytes:
    """``* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)``."""
    pairs = items.items() if isinstance(items, Mapping) else items
    body = " ".join(f"{key} {val}" for key, val in pairs)
    return b"* STATUS " + mailbox_name(name, utf8=utf8) + b" (" + body.encode("ascii") + b")" + CRLF


def search(numbers: Iterable[int], *, modseq: int | None = None) -> bytes:
    """``* SEARCH 2 84 882`` (``(MODSEQ n)`` appended for CONDSTORE)."""
    text = " ".join(map(str, numbers))
    out = b"* SEARCH" + (b" " + text.encode("ascii") if text else b"")
    if modseq is not None:
        out += b" (MODSEQ %d)" % modseq
    return out + CRLF


def sort(numbers: Iterable[int], *, modseq: int | None = None) -> bytes:
    """``* SORT 2 84 882`` (RFC 5256)."""
    text = " ".join(map(str, numbers))
    out = b"* SORT" + (b" " + text.encode("ascii") if text else b"")
    if modseq is not None:
        out += b" (MODSEQ %d)" % modseq
    return out + CRLF


def esearch(
    tag: str | None,
    *,
    uid: bool = False,
    min_value: int | None = None,
    max_value: int | None = None,
    count: int | None = None,
    all_set: SetArg | None = None,
    modseq: int | None = None,
) -> bytes:
    """``* ESEARCH (TAG "a") UID MIN 1 MAX 9 COUNT 4 ALL 1:3,9`` (RFC 4731).

    Items that are None are left out; an empty ``all_set`` is left out too,
    as RFC 4731 §3.1 requires when nothing matched.
    """
    out = b"* ESEARCH"
    if tag is not None:
        out += b' (TAG "' + tag.encode("ascii", "replace") + b'")'
    if uid:
        out += b" UID"
    if min_value is not None:
        out += b" MIN %d" % min_value
    if max_value is not None:
        out += b" MAX %d" % max_value
    if count is not None:
        out += b" COUNT %d" % count
    if all_set is not None:
        text = _set_text(all_set)
        if text:
            out += b" ALL " + text.encode("ascii")
    if modseq is not None:
        out += b" MODSEQ %d" % modseq
    return out + CRLF


def vanished(uids: SetArg, *, earlier: bool = False) -> bytes:
    """``* VANISHED (EARLIER) 41,43:116`` (RFC 7162)."""
    head = b"* VANISHED (EARLIER) " if earlier else b"* VANISHED "
    return head + _set_text(uids).encode("ascii") + CRLF


def id_response(params: Mapping[str, str | None] | None, *, utf8: bool = False) -> bytes:
    """``* ID ("name" "mailhouse" ...)`` or ``* ID NIL`` (RFC 2971)."""
    if not params:
        return b"* ID NIL\r\n"
    items: list[Value] = []
    for key, val in params.items():
        items.append(key)
        items.append(val)
    return b"* ID " + encode(items, utf8=utf8) + CRLF


def quota(
    root: str | bytes, resources: Iterable[tuple[str, int, int]], *, utf8: bool = False
) -> bytes:
    """``* QUOTA "" (STORAGE 10 512)``: (resource, usage, limit) triples."""
    body = " ".join(f"{name} {usage} {limit}" for name, usage, limit in resources)
    return b"* QUOTA " + string(root, utf8=utf8) + b" (" + body.encode("ascii") + b")" + CRLF


def quotaroot(name: str | bytes, roots: Iterable[str | bytes], *, utf8: bool = False) -> bytes:
    """``* QUOTAROOT INBOX ""``."""
    out = b"* QUOTAROOT " + mailbox_name(name, utf8=utf8)
    for root in roots:
        out += b" " + string(root, utf8=utf8)
    return out + CRLF


NamespaceList: TypeAlias = Sequence[tuple[str, str | None]] | None


def namespace(
    personal: NamespaceList, other: NamespaceList, shared: NamespaceList, *, utf8: bool = False
) -> bytes:
    """``* NAMESPACE (("" "/")) NIL NIL``: each a list of (prefix, delimiter)."""
    out = [b"* NAMESPACE"]
    for group in (personal, other, shared):
        if not group:
            out.append(b" NIL")
            continue
        out.append(b" (")
        for prefix, delim in group:
            out.append(b"(" + string(encode_mailbox_name(prefix, utf8=utf8), utf8=utf8))
            out.append(b" " + _delimiter(delim) + b")")
        out.append(b")")
    out.append(CRLF)
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class ThreadNode:
    """A message of a THREAD tree (``id`` None for a missing parent)."""

    id: int | None
    children: Sequence[ThreadNode] = ()


def thread(threads: Iterable[ThreadNode]) -> bytes:
    """``* THREAD (2)(3 6 (4 23)(44 7 96))`` (RFC 5256 §4).

    Written without recursion: a reply chain is as long as a mailbox.
    """
    out: list[str] = ["* THREAD "]
    # Stack items: a node to write, or a literal string to emit.
    stack: list[ThreadNode | str] = []
    for root in reversed(list(threads)):
        stack.append(")")
        stack.append(root)
        stack.append("(")
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        node: ThreadNode = item
        ids: list[str] = []
        # A chain of single replies is written flat, without recursion.
        while True:
            if node.id is not None:
                ids.append(str(node.id))
            if len(node.children) != 1:
                break
            node = node.children[0]
        out.append(" ".join(ids))
        if node.children:
            if ids:
                out.append(" ")
            for child in reversed(node.children):
                stack.append(")")
                stack.append(child)
                stack.append("(")
    out.append("\r\n")
    return "".join(out).encode("ascii")


def fetch(
    seq: int, items: Mapping[str, Value] | Iterable[tuple[str, Value]], *, utf8: bool = False
) -> bytes:
    """``* 12 FETCH (FLAGS (\\Seen) UID 4827313 ...)``.

    Keys are item names as they go on the wire (``UID``,
    ``BODY[HEADER]<0>``: see ``response_name()`` of the parser's fetch
    items); values are encoded by :func:`encode`, so pass
    :func:`flag_list` for FLAGS, :func:`envelope` / :func:`body_structure`
    results, an :class:`IMAPLiteral` for body sections and a list ``[n]``
    for ``MODSEQ (n)``.
    """
    out: list[bytes] = [b"* %d FETCH (" % seq]
    pairs = items.items() if isinstance(items, Mapping) else items
    first = True
    for key, val in pairs:
        if not first:
            out.append(b" ")
        first = False
        out.append(key.encode("ascii"))
        out.append(b" ")
        _encode_into(out, val, utf8)
    out.append(b")\r\n")
    return b"".join(out)


# --- ENVELOPE and BODYSTRUCTURE ---------------------------------------------------------


def _nstring(value: str | None, utf8: bool) -> bytes:
    return b"NIL" if value is None else string(value, utf8=utf8)


def _addresses(addrs: Sequence[Sequence[str | None]] | None, utf8: bool) -> bytes:
    if not addrs:
        # "(" 1*address ")" / nil: an empty list must be NIL.
        return b"NIL"
    parts = [b"("]
    for addr in addrs:
        name, adl, mailbox, host = [*addr, None, None, None, None][:4]
        parts.append(
            b"("
            + _nstring(name, utf8)
            + b" "
            + _nstring(adl, utf8)
            + b" "
            + _nstring(mailbox, utf8)
            + b" "
            + _nstring(host, utf8)
            + b")"
        )
    parts.append(b")")
    return b"".join(parts)


def envelope(env: Mapping[str, Any] | None, *, utf8: bool = False) -> Raw:
    """``ENVELOPE`` from an analyze() envelope (RFC 9051 §7.5.2 order)."""
    env = env or {}
    return Raw(
        b"("
        + b" ".join(
            (
                _nstring(env.get("date"), utf8),
                _nstring(env.get("subject"), utf8),
                _addresses(env.get("from"), utf8),
                _addresses(env.get("sender"), utf8),
                _addresses(env.get("reply_to"), utf8),
                _addresses(env.get("to"), utf8),
                _addresses(env.get("cc"), utf8),
                _addresses(env.get("bcc"), utf8),
                _nstring(env.get("in_reply_to"), utf8),
                _nstring(env.get("message_id"), utf8),
            )
        )
        + b")"
    )


def _params(params: Mapping[str, str] | None, utf8: bool) -> bytes:
    if not params:
        return b"NIL"
    return (
        b"("
        + b" ".join(
            string(k.upper(), utf8=utf8) + b" " + string(v, utf8=utf8) for k, v in params.items()
        )
        + b")"
    )


def _disposition(dsp: Mapping[str, Any] | None, utf8: bool) -> bytes:
    if not dsp or not dsp.get("type"):
        return b"NIL"
    return (
        b"("
        + string(str(dsp["type"]).upper(), utf8=utf8)
        + b" "
        + _params(dsp.get("params"), utf8)
        + b")"
    )


def _language(lang: Sequence[str] | str | None, utf8: bool) -> bytes:
    if not lang:
        return b"NIL"
    if isinstance(lang, str):
        return string(lang, utf8=utf8)
    if len(lang) == 1:
        return string(lang[0], utf8=utf8)
    return b"(" + b" ".join(string(tag, utf8=utf8) for tag in lang) + b")"


def _body(part: Mapping[str, Any], extensible: bool, utf8: bool, out: list[bytes]) -> None:
    ctype = str(part.get("type") or "application").lower()
    subtype = str(part.get("subtype") or "octet-stream")
    children = part.get("parts")
    if ctype == "multipart" and children:
        out.append(b"(")
        for child in children:
            _body(child, extensible, utf8, out)
        out.append(b" " + string(subtype.upper(), utf8=utf8))
        if extensible:
            out.append(b" " + _params(part.get("params"), utf8))
            out.append(b" " + _disposition(part.get("disposition"), utf8))
            out.append(b" " + _language(part.get("language"), utf8))
            out.append(b" " + _nstring(part.get("location"), utf8))
        out.append(b")")
        return
    if ctype == "multipart":
        # A multipart without parts cannot be expressed (1*body); the
        # structure module never produces one, but stay well-formed anyway.
        ctype, subtype = "application", "octet-stream"
    out.append(b"(")
    out.append(string(ctype.upper(), utf8=utf8))
    out.append(b" " + string(subtype.upper(), utf8=utf8))
    out.append(b" " + _params(part.get("params"), utf8))
    out.append(b" " + _nstring(part.get("id"), utf8))
    out.append(b" " + _nstring(part.get("description"), utf8))
    out.append(b" " + string(str(part.get("encoding") or "7bit").upper(), utf8=utf8))
    out.append(b" %d" % int(part.get("size") or 0))
    lines = int(part.get("lines") or 0)
    sub = subtype.lower()
    if ctype == "message" and sub in ("rfc822", "global") and part.get("body") is not None:
        out.append(b" " + envelope(part.get("envelope"), utf8=utf8) + b" ")
        _body(part["body"], extensible, utf8, out)
        out.append(b" %d" % lines)
    elif ctype == "text":
        out.append(b" %d" % lines)
    if extensible:
        out.append(b" " + _nstring(part.get("md5"), utf8))
        out.append(b" " + _disposition(part.get("disposition"), utf8))
        out.append(b" " + _language(part.get("language"), utf8))
        out.append(b" " + _nstring(part.get("location"), utf8))
    out.append(b")")


def body_structure(part: Mapping[str, Any], *, extensible: bool = True, utf8: bool = False) -> Raw:
    """``BODYSTRUCTURE`` (``extensible=True``) or ``BODY`` (False) from an
    analyze() part, normally ``result["body"]``.

    Types, subtypes, encodings, parameter names and disposition types are
    upper-cased, as in the RFC examples; values are sent as stored.
    """
    out: list[bytes] = []
    _body(part, extensible, utf8, out)
    return Raw(b"".join(out))
