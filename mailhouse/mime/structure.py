"""The structure of a message, computed once at delivery and cached as JSON.

:func:`analyze` walks the raw message with ``find`` and small regular
expressions, parsing only header blocks and a bounded prefix of one text part.
Bodies are never copied or decoded wholesale, so a 1 MB message with a large
attachment costs about as much as a small one. The result serves IMAP FETCH
ENVELOPE / BODYSTRUCTURE / BODY[section] (by slicing ``raw`` at the stored
offsets), SEARCH and the webmail list without parsing the message again.

It never raises: any input, however broken, yields a well-formed result.

Result schema (``SCHEMA_VERSION`` 1; every value is JSON-serialisable)::

    {
      "v": 1,                      # schema version
      "size": int,                 # len(raw), RFC822.SIZE
      "envelope": Envelope,        # of the message itself
      "body": Part,                # the MIME tree; its header is the message header
      # summary for lists and search, decoded for display
      "subject": str,              # RFC 2047-decoded Subject, "" if absent
      "from_name": str,            # decoded display name of the first From address, or ""
      "from_address": str,         # "mailbox@host" of the first From address, or ""
      "to": [str], "cc": [str],    # "mailbox@host" for every address (groups flattened)
      "date": int | None,          # Date: as a UNIX timestamp, None if missing/unparsable
      "message_id": str | None,    # first <...> of Message-ID (the value if it has none)
      "in_reply_to": str | None,   # first <...> of In-Reply-To
      "references": [str],         # every <...> of References
      "has_attachments": bool,     # a leaf outside encapsulated messages that is
                                   # disposition attachment, message/rfc822, has a
                                   # filename, or is non-text -- except inline parts of
                                   # multipart/related, alternatives and report parts
      "preview": str,              # first 200 chars of the first non-attachment
                                   # text/plain (else text/html, tags, head, style and
                                   # script dropped), transfer- and charset-decoded,
                                   # whitespace collapsed; "" if none
    }

    Envelope = {                   # RFC 3501 ENVELOPE, in IMAP order
      "date": str | None, "subject": str | None,   # unfolded, encoded-words as sent
      "from": Addr, "sender": Addr, "reply_to": Addr,
      "to": Addr, "cc": Addr, "bcc": Addr,
      "in_reply_to": str | None, "message_id": str | None,
    }
    Addr = None | [[name, adl, mailbox, host], ...]
      # None (NIL) when the field is absent or holds no address. sender and
      # reply_to default to from when absent or empty (RFC 3501). name and adl
      # are None when absent; name keeps encoded-words as sent. A group is
      # [None, None, "group name", None], its members, then [None, None, None,
      # None] (RFC 3501). A missing host is "" (never None, which would read
      # as a group marker); "<>" gives mailbox "" and host "".

    Part = {
      "section": str,              # IMAP part number: "1", "2.1", ... ; a multipart
                                   # has its container's number ("" at top level)
      "type": str, "subtype": str, # lower-cased
      "params": {str: str},        # Content-Type parameters, names lower-cased;
                                   # RFC 2231 continuations merged, an extended value
                                   # kept encoded under "name*" ("utf-8''%E2%82%AC");
                                   # text/* gets charset=us-ascii when none is given
      "id": str | None, "description": str | None,   # Content-ID / -Description
      "encoding": str,             # Content-Transfer-Encoding, lower-cased, "7bit" default
      "size": int,                 # octets of the body: body_end - body_start
      "lines": int | None,         # text/* and message/rfc822|global only: LF count,
                                   # plus one for a final line without LF
      "md5": str | None,           # Content-MD5
      "disposition": None | {"type": str, "params": {str: str}},
      "language": [str] | None, "location": str | None,
      "filename": str | None,      # decoded filename (disposition) or name (type)
      "header_start": int,         # raw[header_start:body_start] = BODY[n.MIME] /
      "body_start": int,           #   BODY[HEADER]: the header incl. its empty line
      "body_end": int,             # raw[body_start:body_end] = BODY[n] / BODY[TEXT]
      # multipart/* only:
      "boundary": str, "parts": [Part, ...],   # always at least one part
      # message/rfc822 and message/global only (the encapsulated message):
      "envelope": Envelope, "body": Part,      # body.header_start == body_start
    }

Slicing for IMAP: BODY[HEADER] is ``raw[body["header_start"]:body["body_start"]]``
and BODY[TEXT] ``raw[body["body_start"]:body["body_end"]]``. For a
message/rfc822 part P, BODY[P.HEADER] and BODY[P.TEXT] use ``P["body"]`` the
same way, and BODY[P] is ``raw[P["body_start"]:P["body_end"]]``.

Decisions for broken input:

* Header bytes that are not UTF-8 are decoded as Latin-1 (see
  :mod:`mailhouse.mime.headers`), so strings are always valid Unicode.
* A message that does not start with a header field has an empty header; the
  whole message is its text/plain body.
* multipart without a boundary parameter is reported as text/plain; a
  multipart whose boundary never occurs gets one header-less text/plain part
  spanning its whole body; a missing close delimiter ends the last part at
  the end of the enclosing body. Only lines that are exactly a delimiter (plus
  optional trailing blanks) count, so an inner boundary that extends an outer
  one is not mistaken for it.
* Beyond ``MAX_DEPTH`` nested multipart/message levels, or once
  ``MAX_PARTS`` parts exist, a container is reported as an opaque
  application/octet-stream leaf (and further delimiters are ignored).
"""

from __future__ import annotations

import binascii
import codecs
import datetime
import email.utils
import functools
import html
import mmap
import re
from collections.abc import Callable
from typing import Any

from mailhouse.mime.headers import (
    Buffer,
    codec_name,
    decode_bytes,
    decode_words,
    param_text,
    parse_content_type,
    parse_disposition,
    unfold,
)

SCHEMA_VERSION = 1
MAX_DEPTH = 50
MAX_PARTS = 5000
PREVIEW_CHARS = 200

Address = list[str | None]
_GROUP_END: Address = [None, None, None, None]


# --- buffer access ------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _literal(sub: bytes) -> re.Pattern[bytes]:
    return re.compile(re.escape(sub))


def _view_finder(view: memoryview) -> Callable[[bytes, int, int], int]:
    # memoryview has no find(); a literal regex searches it in place, slower
    # than find() but without copying the body.
    def find(sub: bytes, start: int, end: int) -> int:
        m = _literal(sub).search(view, start, end)
        return -1 if m is None else m.start()

    return find


def _chunked_count(data: Buffer) -> Callable[[bytes, int, int], int]:
    # mmap and memoryview have no count(): count in bounded chunks.
    def count(sub: bytes, start: int, end: int) -> int:
        n = 0
        step = 1 << 20
        for pos in range(start, end, step):
            n += bytes(data[pos : min(end, pos + step)]).count(sub)
        return n

    return count


class _Buf:
    """Uniform find/slice/count over bytes, bytearray, mmap and memoryview."""

    __slots__ = ("count", "data", "find", "size")
    data: Buffer
    find: Callable[[bytes, int, int], int]
    count: Callable[[bytes, int, int], int]
    size: int

    def __init__(self, raw: Buffer) -> None:
        if type(raw) is bytes:
            self.data = raw
            self.find = raw.find
            self.count = raw.count
            self.size = len(raw)
            return
        data: Buffer
        find: Callable[[bytes, int, int], int]
        if isinstance(raw, bytes | bytearray | mmap.mmap):
            data, find = raw, raw.find
        else:
            mv = raw
            if mv.ndim != 1 or not mv.c_contiguous:
                copy = mv.tobytes()
                data, find = copy, copy.find
            else:
                if mv.format != "B":
                    mv = mv.cast("B")
                obj = mv.obj
                if isinstance(obj, bytes | bytearray | mmap.mmap) and len(obj) == mv.nbytes:
                    # A view of a whole object: the object has a fast find()
                    # and identical offsets.
                    data, find = obj, obj.find
                else:
                    data, find = mv, _view_finder(mv)
        self.data = data
        self.find = find
        self.count = data.count if isinstance(data, bytes | bytearray) else _chunked_count(data)
        self.size = len(data)

    def slice(self, start: int, end: int) -> bytes:
        data = self.data
        return data[start:end] if type(data) is bytes else bytes(data[start:end])

    def lines(self, start: int, end: int) -> int:
        if end <= start:
            return 0
        n: int = self.count(b"\n", start, end)
        return n if self.data[end - 1] == 10 else n + 1


# --- addresses (ENVELOPE) -------------------------------------------------------

# Quoted strings and domain literals may be unterminated (then they run to the
# end); `\Z` makes their match always succeed so the ambiguous `\\.?` never
# backtracks. Comments nest one level; deeper or unterminated ones degrade to
# separate tokens.
_ADDR_TOKEN = re.compile(
    r"""(?P<ws>[ \t\r\n]+)
      |(?P<qs>"(?:[^"\\]|\\.?)*(?:"|\Z))
      |(?P<dl>\[(?:[^\]\\]|\\.?)*(?:\]|\Z))
      |(?P<cm>\((?:[^()\\]|\\.|\((?:[^()\\]|\\.)*\))*\))
      |(?P<sp>[<>@,;:])
      |(?P<atom>[^ \t\r\n"\[()<>@,;:\\]+)
      |(?P<other>.)""",
    re.X | re.S,
)
_QPAIR = re.compile(r"\\(.)", re.S)

_Token = tuple[str, str, bool]  # kind, text, preceded by whitespace


def _tokenize(s: str) -> list[_Token]:
    toks: list[_Token] = []
    space = False
    for m in _ADDR_TOKEN.finditer(s):
        kind = m.lastgroup or "other"
        if kind == "ws":
            space = True
            continue
        toks.append((kind, m.group(), space))
        space = False
    return toks


def _unquote(t: str) -> str:
    body = t[1:]
    # Terminated when the final quote is not itself escaped (an even number
    # of backslashes before it).
    if body.endswith('"') and (len(body) - 1 - len(body[:-1].rstrip("\\"))) % 2 == 0:
        body = body[:-1]
    t = body
    return _QPAIR.sub(r"\1", t) if "\\" in t else t


def _phrase(toks: list[_Token]) -> str:
    out: list[str] = []
    for kind, t, space in toks:
        if out and space:
            out.append(" ")
        out.append(_unquote(t) if kind == "qs" else t)
    return "".join(out)


def _comment_text(t: str) -> str:
    inner = t[1:-1]
    return (_QPAIR.sub(r"\1", inner) if "\\" in inner else inner).strip()


def _addr_spec(toks: list[_Token]) -> tuple[str | None, str, str]:
    """``(adl, mailbox, host)`` from the tokens of an addr-spec or angle-addr."""
    adl: str | None = None
    colon = -1
    for i, (kind, t, _) in enumerate(toks):
        if kind == "sp" and t == ":":
            colon = i
    if colon >= 0:
        adl = "".join(t for _, t, _ in toks[:colon]) or None
        toks = toks[colon + 1 :]
    for i, (kind, t, _) in enumerate(toks):
        if kind == "sp" and t == "@":
            local = "".join(t for _, t, _ in toks[:i])
            host = "".join(t for _, t, _ in toks[i + 1 :])
            return adl, local, host
    return adl, "".join(t for _, t, _ in toks), ""


# The common shapes -- `"Name" <a@b>`, `Name <a@b>`, `<a@b>`, `a@b` -- in a
# single regex; anything else (groups, comments, routes, escapes) goes to the
# tokenizer. Both paths must give identical results (tested).
_ATEXT = r'[^ \t\r\n"<>,;:@()\\\[\]]'
# Possessive: no piece can give back characters the next one could use
# (an atext run is followed by a blank or a special), so backtracking into
# one could only fail again, slowly.
_SIMPLE_ADDRESS = re.compile(
    r'[ \t\r\n]*+(?:(?:"([^"\\]*+)"|(' + _ATEXT + r"++(?:[ \t\r\n]++" + _ATEXT + r"++)*+))?+"
    r"[ \t\r\n]*+<(" + _ATEXT + r"++)@(" + _ATEXT + r"++)>"
    r"|(" + _ATEXT + r"++)@(" + _ATEXT + r"++))[ \t\r\n]*+(?:,|\Z)"
)
_WS_RUN = re.compile(r"[ \t\r\n]+")


def _simple_address(m: re.Match[str]) -> Address:
    quoted, phrase, local, host, bare_local, bare_host = m.groups()
    if bare_local is not None:
        return [None, None, bare_local, bare_host]
    if quoted:
        name: str | None = quoted
    elif phrase:
        # Single spaces between words (the usual case) stay as they are.
        name = phrase if phrase.isprintable() and "  " not in phrase else _WS_RUN.sub(" ", phrase)
    else:
        name = None
    return [name or None, None, local, host]


def _simple_addresses(value: str) -> list[Address] | None:
    n = len(value)
    m = _SIMPLE_ADDRESS.match(value)
    if m is not None and m.end() == n:
        return [_simple_address(m)]  # the usual single address
    out: list[Address] = []
    pos = 0
    while pos < n:
        m = _SIMPLE_ADDRESS.match(value, pos)
        if m is None:
            if value[pos:].strip(" \t\r\n"):
                return None
            break
        out.append(_simple_address(m))
        pos = m.end()
    return out


def parse_address_list(value: str) -> list[Address]:
    """Parse an address-list leniently into IMAP ENVELOPE address structures.

    Returns ``[name, adl, mailbox, host]`` entries with RFC 3501 group
    markers. Never raises; unparsable fragments become a mailbox with host
    ``""`` or are dropped when empty. When a mailbox has no display name, a
    comment next to it is used as the name, as other servers do.
    """
    simple = _simple_addresses(value)
    if simple is not None:
        return simple
    return _parse_address_list(value)


def _parse_address_list(value: str) -> list[Address]:
    toks = _tokenize(value)
    out: list[Address] = []
    in_group = False
    n = len(toks)
    i = 0
    while i < n:
        phrase: list[_Token] = []
        angle: list[_Token] | None = None
        comment: str | None = None
        group_start = False
        while i < n:
            kind, t, _ = toks[i]
            if kind == "sp":
                if t in ",;":
                    break
                if t == ":" and angle is None and not any(p[1] == "@" for p in phrase):
                    group_start = True
                    i += 1
                    break
                if t == "<" and angle is None:
                    angle = []
                    i += 1
                    while i < n and not (toks[i][0] == "sp" and toks[i][1] == ">"):
                        if toks[i][0] != "cm":
                            angle.append(toks[i])
                        i += 1
                    i += 1
                    continue
            if kind == "cm":
                comment = _comment_text(t) or comment
            elif angle is None:
                phrase.append(toks[i])
            i += 1
        if group_start:
            if in_group:
                out.append(list(_GROUP_END))
            out.append([None, None, _phrase(phrase), None])
            in_group = True
            continue
        if angle is not None:
            adl, mailbox, host = _addr_spec(angle)
            out.append([_phrase(phrase) or comment or None, adl, mailbox, host])
        elif phrase:
            if any(k == "sp" and t == "@" for k, t, _ in phrase):
                adl, mailbox, host = _addr_spec(phrase)
                out.append([comment or None, adl, mailbox, host])
            else:
                out.append([comment or None, None, _phrase(phrase), ""])
        if i < n:
            if toks[i][1] == ";" and in_group:
                out.append(list(_GROUP_END))
                in_group = False
            i += 1
    if in_group:
        out.append(list(_GROUP_END))
    return out


def address_string(addr: Address) -> str:
    """``mailbox@host`` (or just the mailbox when the host is empty)."""
    mailbox = addr[2] or ""
    return f"{mailbox}@{addr[3]}" if addr[3] else mailbox


def _addresses(raw: bytes | None) -> list[Address] | None:
    if raw is None:
        return None
    return parse_address_list(unfold(raw)) or None


def _envelope(fields: _Fields) -> dict[str, Any]:
    frm = fields[_F_FROM]
    sender = fields[_F_SENDER]
    reply_to = fields[_F_REPLY_TO]
    date = fields[_F_DATE]
    subject = fields[_F_SUBJECT]
    to = fields[_F_TO]
    cc = fields[_F_CC]
    bcc = fields[_F_BCC]
    in_reply_to = fields[_F_IN_REPLY_TO]
    message_id = fields[_F_MESSAGE_ID]
    from_addrs = None if frm is None else (parse_address_list(unfold(frm)) or None)
    return {
        "date": None if date is None else unfold(date),
        "subject": None if subject is None else unfold(subject),
        "from": from_addrs,
        "sender": from_addrs if sender is None else (_addresses(sender) or from_addrs),
        "reply_to": from_addrs if reply_to is None else (_addresses(reply_to) or from_addrs),
        "to": None if to is None else _addresses(to),
        "cc": None if cc is None else _addresses(cc),
        "bcc": None if bcc is None else _addresses(bcc),
        "in_reply_to": None if in_reply_to is None else unfold(in_reply_to),
        "message_id": None if message_id is None else unfold(message_id),
    }


# --- header fields --------------------------------------------------------------

# The header fields the analysis reads; a header is parsed into a tuple with
# the raw value (as headers.field_map gives it) of the first occurrence of
# each, or None, at these indices. Names with the same first letter are
# adjacent (see _header_pattern).
_WANTED = (
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
    "content-description",
    "content-md5",
    "content-language",
    "content-location",
    "cc",
    "date",
    "subject",
    "sender",
    "from",
    "reply-to",
    "references",
    "to",
    "bcc",
    "in-reply-to",
    "message-id",
)
(
    _F_CONTENT_TYPE,
    _F_ENCODING,
    _F_DISPOSITION,
    _F_ID,
    _F_DESCRIPTION,
    _F_MD5,
    _F_LANGUAGE,
    _F_LOCATION,
    _F_CC,
    _F_DATE,
    _F_SUBJECT,
    _F_SENDER,
    _F_FROM,
    _F_REPLY_TO,
    _F_REFERENCES,
    _F_TO,
    _F_BCC,
    _F_IN_REPLY_TO,
    _F_MESSAGE_ID,
) = range(len(_WANTED))

_Fields = tuple[bytes | None, ...]
_NO_FIELDS: _Fields = (None,) * len(_WANTED)
_NO_RARE_FIELDS = (None,) * (_F_LOCATION + 1 - _F_DISPOSITION)


def _header_pattern() -> re.Pattern[bytes]:
    # One match() consumes the whole header block -- exactly the lines
    # headers.find_header_end counts as fields and continuations -- and
    # captures each wanted field in group index + 1. The conditional
    # (?(n)(?!)) refuses a field whose group has matched already, so a
    # repeated field falls through to the catch-all alternative and the
    # first occurrence is kept, as field_map does. (A single pass: with
    # `re`, searching for each line start costs more than the whole match.)
    #
    # The alternatives are grouped by first letter, each group behind a
    # character class like [Cc] that `re` rejects cheaply; groups are
    # numbered in the order of their opening parentheses, hence the order
    # of _WANTED.
    value = rb"[^\n]*+(?:\n[ \t][^\n]*+)*+"
    letters: dict[str, list[bytes]] = {}
    for group, name in enumerate(_WANTED, 1):
        rest = b"(?i:%s)(?(%d)(?!))[ \t]*+:(%s)" % (re.escape(name[1:]).encode(), group, value)
        assert name[0] not in letters or list(letters)[-1] == name[0], "not adjacent"
        letters.setdefault(name[0], []).append(rest)
    alternatives = [
        b"[%s%s]" % (first.upper().encode(), first.encode())
        + (rests[0] if len(rests) == 1 else b"(?:" + b"|".join(rests) + b")")
        for first, rests in letters.items()
    ]
    alternatives.append(rb"[\x21-\x39\x3b-\x7e]++[ \t]*+:" + value)
    return re.compile(rb"(?:(?:" + b"|".join(alternatives) + rb")(?:\n|\Z))*+")


_HEADER = _header_pattern()


def _header(data: Buffer, start: int, end: int) -> tuple[int, _Fields]:
    """``(body_start, fields)`` for the entity at ``data[start:end]``.

    ``body_start`` is that of :func:`mailhouse.mime.headers.find_header_end`.
    """
    m = _HEADER.match(data, start, end)
    assert m is not None  # zero fields match too
    e = m.end()
    if e >= end:
        body_start = end
    else:
        c = data[e]
        if c == 10:
            body_start = e + 1
        elif c == 13 and e + 1 < end and data[e + 1] == 10:
            body_start = e + 2
        else:
            body_start = e
    # (Groups are bytes whatever the buffer type.)
    return body_start, (m.groups() if e > start else _NO_FIELDS)


# --- MIME tree ------------------------------------------------------------------

_WSP = re.compile(rb"[ \t]*")
_FIRST_TOKEN = re.compile(r"\s*([^\s;()]+)")


def _parse_content_type(raw: bytes) -> tuple[str | None, str | None, tuple[tuple[str, str], ...]]:
    ctype, subtype, params = parse_content_type(unfold(raw))
    return ctype, subtype, tuple(params.items())


# The same few Content-Type values (text/plain; charset=utf-8, ...) are in
# most messages: parse each once. Only short ones, to bound the memory.
_cached_content_type = functools.lru_cache(maxsize=512)(_parse_content_type)


def _content_type(raw: bytes) -> tuple[str | None, str | None, tuple[tuple[str, str], ...]]:
    if len(raw) <= 200:
        return _cached_content_type(raw)
    return _parse_content_type(raw)


# The usual Content-Transfer-Encoding values, stripped and lower-cased.
_ENCODINGS = {e.encode(): e for e in ("7bit", "8bit", "base64", "quoted-printable", "binary")}


def _join(section: str, n: int) -> str:
    return f"{section}.{n}" if section else str(n)


def _boundary_bytes(value: str, raw_header: bytes) -> bytes:
    # The boundary must be searched for as the bytes that were sent: undo the
    # header text policy (UTF-8 if the header was valid UTF-8, else Latin-1).
    try:
        raw_header.decode("utf-8")
    except UnicodeDecodeError:
        return value.encode("latin-1", "replace")
    return value.encode("utf-8")


class _Walker:
    def __init__(self, buf: _Buf) -> None:
        self.buf = buf
        self.data = buf.data
        self.parts = 0

    def entity(
        self,
        start: int,
        end: int,
        depth: int,
        leaf_section: str,
        mp_section: str,
        digest: bool,
        headerless: bool = False,
    ) -> tuple[dict[str, Any], _Fields]:
        """Parse the entity at [start, end); returns its node and header fields."""
        if headerless:
            body_start, fields = start, _NO_FIELDS
        else:
            body_start, fields = _header(self.data, start, end)
        self.parts += 1
        room = depth < MAX_DEPTH and self.parts < MAX_PARTS

        ctype: str | None = None
        subtype: str | None = None
        params: dict[str, str]
        raw_ct = fields[_F_CONTENT_TYPE]
        if raw_ct is not None:
            ctype, subtype, items = _content_type(raw_ct)
            params = dict(items)
        else:
            params = {}
        if ctype is None or subtype is None:
            ctype, subtype = ("message", "rfc822") if digest else ("text", "plain")

        is_multipart = encapsulated = False
        boundary: str | None = None
        if ctype == "text":
            if "charset" not in params and "charset*" not in params:
                params["charset"] = "us-ascii"
        elif ctype == "multipart":
            boundary = params.get("boundary")
            if boundary and room:
                is_multipart = True
            elif boundary:
                ctype, subtype, params = "application", "octet-stream", {}
            else:
                ctype, subtype = "text", "plain"
                params = {"charset": params.get("charset", "us-ascii")}
        elif ctype == "message" and subtype in ("rfc822", "global"):
            if room:
                encapsulated = True
            else:
                ctype, subtype, params = "application", "octet-stream", {}

        encoding = "7bit"
        raw_cte = fields[_F_ENCODING]
        if raw_cte is not None:
            known = _ENCODINGS.get(raw_cte.strip().lower())
            if known is not None:
                encoding = known
            else:
                m = _FIRST_TOKEN.match(unfold(raw_cte))
                if m is not None:
                    encoding = m.group(1).lower()

        disposition: dict[str, Any] | None = None
        filename = cid = description = md5 = location = None
        language: list[str] | None = None
        rare = fields[_F_DISPOSITION : _F_LOCATION + 1]
        if rare != _NO_RARE_FIELDS:
            raw_cd, raw_id, raw_description, raw_md5, raw_language, raw_location = rare
            if raw_cd is not None:
                dtype, dparams = parse_disposition(unfold(raw_cd))
                if dtype is not None:
                    disposition = {"type": dtype, "params": dparams}
                filename = param_text(dparams, "filename")
            if raw_id is not None:
                cid = unfold(raw_id)
            if raw_description is not None:
                description = unfold(raw_description)
            if raw_md5 is not None:
                md5 = unfold(raw_md5)
            if raw_language is not None:
                language = [t.strip() for t in unfold(raw_language).split(",") if t.strip()] or None
            if raw_location is not None:
                location = "".join(unfold(raw_location).split()) or None
        if filename is None and ("name" in params or "name*" in params):
            filename = param_text(params, "name")

        node: dict[str, Any] = {
            "section": mp_section if is_multipart else leaf_section,
            "type": ctype,
            "subtype": subtype,
            "params": params,
            "id": cid,
            "description": description,
            "encoding": encoding,
            "size": end - body_start,
            "lines": None,
            "md5": md5,
            "disposition": disposition,
            "language": language,
            "location": location,
            "filename": filename,
            "header_start": start,
            "body_start": body_start,
            "body_end": end,
        }
        if is_multipart and boundary and raw_ct is not None:
            node["boundary"] = boundary
            node["parts"] = self.multipart(
                body_start,
                end,
                _boundary_bytes(boundary, raw_ct),
                depth + 1,
                mp_section,
                subtype == "digest",
            )
        elif encapsulated:
            node["lines"] = self.buf.lines(body_start, end)
            inner, inner_fields = self.entity(
                body_start, end, depth + 1, _join(leaf_section, 1), leaf_section, False
            )
            node["envelope"] = _envelope(inner_fields)
            node["body"] = inner
        elif ctype == "text":
            node["lines"] = self.buf.lines(body_start, end)
        return node, fields

    def multipart(
        self, start: int, end: int, boundary: bytes, depth: int, section: str, digest: bool
    ) -> list[dict[str, Any]]:
        find = self.buf.find
        data = self.data
        delim = b"--" + boundary
        dlen = len(delim)
        children: list[dict[str, Any]] = []
        part_start = -1  # -1: in the preamble (or after the budget ran out)
        pos = start
        while True:
            i = find(delim, pos, end)
            if i < 0:
                break
            pos = i + 1
            if i > start and data[i - 1] != 10:
                continue
            j = i + dlen
            close = j + 2 <= end and data[j] == 45 and data[j + 1] == 45
            k = j + 2 if close else j
            c = data[k] if k < end else -1
            if c == 32 or c == 9:
                ws = _WSP.match(data, k, end)
                if ws is not None:
                    k = ws.end()
                c = data[k] if k < end else -1
            if c == -1:
                eol = end
            elif c == 10:
                eol = k + 1
            elif c == 13 and k + 1 < end and data[k + 1] == 10:
                eol = k + 2
            else:
                continue  # text that merely starts like a delimiter
            if part_start >= 0:
                # The line break before a delimiter belongs to the delimiter.
                part_end = i
                if part_end > part_start and data[part_end - 1] == 10:
                    part_end -= 1
                    if part_end > part_start and data[part_end - 1] == 13:
                        part_end -= 1
                num = _join(section, len(children) + 1)
                children.append(self.entity(part_start, part_end, depth, num, num, digest)[0])
            if close or self.parts >= MAX_PARTS:
                part_start = -1
                break
            part_start = eol
            pos = eol
        if part_start >= 0:
            num = _join(section, len(children) + 1)
            children.append(self.entity(part_start, end, depth, num, num, digest)[0])
        if not children:
            num = _join(section, 1)
            children.append(self.entity(start, end, depth, num, num, False, True)[0])
        return children


# --- summary --------------------------------------------------------------------

_MSGID = re.compile(r"<[^<>]*>")
_HTML_DROP = re.compile(
    r"<(script|style|head|title|template)\b.*?(?:</\1\s*>|\Z)|<!--.*?(?:-->|\Z)", re.S | re.I
)
_HTML_TAG = re.compile(r"<[A-Za-z/!?][^>]*(?:>|\Z)")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u200b\ufeff]")
# In ASCII text, what _collapse squeezes into single spaces (str.split()
# white space and _CONTROL) is exactly the controls, SP and DEL.
_ASCII_BLANKS = bytes.maketrans(bytes([*range(0x21), 0x7F]), b" " * 0x22)
_REPORT_PARTS = ("delivery-status", "disposition-notification", "feedback-report")


def _first_msgid(value: str | None) -> str | None:
    if value is None:
        return None
    m = _MSGID.search(value)
    return m.group() if m is not None else (value.strip() or None)


def _msgids(raw: bytes | None) -> list[str]:
    if raw is None:
        return []
    value = unfold(raw)
    return _MSGID.findall(value) or value.split()


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
# The RFC 5322 shape nearly every Date: has; email.utils handles the rest.
# (Possessive where giving back characters cannot lead to a match.) The
# ASCII variant is tried first, as its character classes are cheaper than
# Unicode \s and \d: when it matches, every run stops where the Unicode one
# would (each is followed by an ASCII-only element), so the groups agree.
_RFC5322_DATE_ASCII = re.compile(
    r"[ \t\n\r\f\v]*+(?:[A-Za-z]{3},[ \t\n\r\f\v]*+)?+"
    r"([0-9]{1,2}+[ \t\n\r\f\v]++[A-Za-z]{3}[ \t\n\r\f\v]++[0-9]{4})[ \t\n\r\f\v]++"
    r"([0-9][0-9]):([0-9][0-9])(?::([0-9][0-9]))?+[ \t\n\r\f\v]++([+-][0-9]{4})\b"
)
_RFC5322_DATE = re.compile(
    r"\s*+(?:[A-Za-z]{3},\s*+)?+(\d{1,2}+\s++[A-Za-z]{3}\s++\d{4})\s++(\d\d):(\d\d)(?::(\d\d))?+"
    r"\s++([+-]\d{4})\b"
)
_DMY = re.compile(r"(\d+)\s+(\S+)\s+(\d+)")
# Memos for the parts of a date that repeat across messages: the day
# ("28 Nov 2026" -> days since the epoch, or one of the markers below) and
# the zone ("+0100" -> seconds to subtract).
_NO_DATE = -(1 << 40)  # the date is invalid
_NOT_RFC5322 = -(1 << 41)  # not the usual shape: email.utils decides
_DAYS: dict[str, int] = {}
_ZONES: dict[str, int] = {}


class _Digits(dict[str, int]):
    """int() of two-digit strings, by lookup: int() itself is slow."""

    def __missing__(self, key: str) -> int:
        return int(key)  # other digits (\d matches any decimal digit)


_TWO_DIGITS = _Digits((f"{i:02d}", i) for i in range(100))


def _day(dmy: str) -> int:
    m = _DMY.fullmatch(dmy)
    assert m is not None
    month = _MONTHS.get(m.group(2).lower())
    day = int(m.group(1))
    if month is None or not 1 <= day <= 31:
        return _NOT_RFC5322
    year = int(m.group(3))
    if not year:
        return _NO_DATE  # datetime's range (calendar.timegm's) starts at year 1
    # As calendar.timegm: day 31 of a short month runs into the next.
    return datetime.date(year, month, 1).toordinal() - _EPOCH_ORDINAL + day - 1


def _zone(zone: str) -> int:
    z = int(zone)
    if z < 0:
        z = -z
    offset = (z // 100 * 60 + z % 100) * 60
    return offset if zone[0] == "+" else -offset


def _timestamp(value: str | None) -> int | None:
    if not value:
        return None
    m = _RFC5322_DATE_ASCII.match(value) or _RFC5322_DATE.match(value)
    if m is not None:
        dmy, hour, minute, second, zone = m.groups()
        days = _DAYS.get(dmy)
        if days is None:
            if len(_DAYS) >= 1024:
                _DAYS.clear()
            days = _DAYS[dmy] = _day(dmy)
        if days > _NO_DATE:
            offset = _ZONES.get(zone)
            if offset is None:
                if len(_ZONES) >= 1024:
                    _ZONES.clear()
                offset = _ZONES[zone] = _zone(zone)
            digits = _TWO_DIGITS
            stamp = days * 86400 + digits[hour] * 3600 + digits[minute] * 60 - offset
            return stamp + digits[second] if second else stamp
        if days == _NO_DATE:
            return None
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return int(email.utils.mktime_tz(parsed))
    except Exception:  # parsedate_tz/mktime_tz raise assorted errors on junk
        return None


def _is_attachment(node: dict[str, Any], parent: str) -> bool:
    ctype, subtype = node["type"], node["subtype"]
    disposition = node["disposition"]["type"] if node["disposition"] else None
    if disposition == "attachment":
        return True
    if ctype == "message":
        return subtype in ("rfc822", "global") or (
            parent != "report" and subtype not in _REPORT_PARTS
        )
    if parent == "related":
        return False  # resources of an HTML body (inline images)
    if node["filename"] is not None:
        return True
    return ctype != "text" and parent != "alternative"


def _b64_prefix(chunk: bytes, truncated: bool) -> bytes:
    clean = _B64_JUNK.sub(b"", chunk)
    if truncated:
        clean = clean[: len(clean) // 4 * 4]
    else:
        rem = len(clean) % 4
        clean = clean[:-1] if rem == 1 else clean + b"=" * ((4 - rem) % 4)
    try:
        return binascii.a2b_base64(clean)
    except (binascii.Error, ValueError):
        return b""


# Codecs that decode ASCII bytes to the same characters wherever they are,
# whatever the rest of the text: ASCII itself, UTF-8 and single-byte sets.
# With them (or an unknown label: UTF-8, else Latin-1), an ASCII prefix of
# a body decodes the same whichever way decode_bytes ends up going.
_ASCII_TRANSPARENT = frozenset(
    ["ascii", "utf-8", "koi8-r", "koi8-u"]
    + [f"iso8859-{n}" for n in (*range(1, 12), *range(13, 17))]
    + [f"cp125{n}" for n in range(9)]
)
_QUICK_PREFIX = 512


def _quick_preview(buf: _Buf, start: int, end: int, encoding: str, codec: str | None) -> str | None:
    """The preview of a plain text body from its first few hundred bytes.

    None unless that prefix alone decides what :func:`_preview` returns:
    its text, collapsed, is a prefix of the collapsed text of the first
    window and already longer than PREVIEW_CHARS. Saves decoding kilobytes
    (and the quoted-printable decoding of all of them) for 200 characters.
    """
    stop = start + _QUICK_PREFIX
    if stop >= min(end, start + 2048) or encoding == "base64":
        return None  # the prefix would be the whole first window
    if codec is not None and codec not in _ASCII_TRANSPARENT:
        return None
    data = buf.slice(start, stop)
    if encoding == "quoted-printable":
        # a2b_qp works line by line: decoding whole lines gives a prefix.
        cut = data.rfind(b"\n") + 1
        if not cut:
            return None
        data = binascii.a2b_qp(data[:cut])
    if data.isascii():
        text = _collapse_bytes(data, "ascii")
    elif codec == "utf-8":
        # A valid prefix decodes the same even if the text turns out
        # invalid further on (decode_bytes then replaces the bad bytes).
        try:
            _, valid = codecs.utf_8_decode(data, "strict", False)
        except UnicodeDecodeError:
            return None
        text = _collapse_bytes(data[:valid], "utf-8")
    else:
        return None
    return text[:PREVIEW_CHARS] if len(text) > PREVIEW_CHARS else None


def _preview(buf: _Buf, node: dict[str, Any]) -> str:
    start, end = node["body_start"], node["body_end"]
    is_html = node["subtype"] == "html"
    params = node["params"]
    charset = params.get("charset")
    if "charset*" in params or (charset is not None and "=?" in charset):
        charset = param_text(params, "charset")
    encoding = node["encoding"]
    codec = codec_name(charset)
    if not is_html:
        quick = _quick_preview(buf, start, end, encoding, codec)
        if quick is not None:
            return quick
    return _window_preview(buf, start, end, is_html, charset, codec, encoding)


def _window_preview(
    buf: _Buf,
    start: int,
    end: int,
    is_html: bool,
    charset: str | None,
    codec: str | None,
    encoding: str,
) -> str:
    text = ""
    # Most previews come out of the first few KB; HTML may hide its text
    # behind a large <head>, so retry once with a bigger window.
    for limit in (2048, 16384, 131072):
        stop = min(end, start + limit)
        truncated = stop < end
        chunk = buf.slice(start, stop)
        if encoding == "base64":
            chunk = _b64_prefix(chunk, truncated)
        elif encoding == "quoted-printable":
            if truncated:
                chunk = chunk[: chunk.rfind(b"\n") + 1] or chunk
            chunk = binascii.a2b_qp(chunk)
        if is_html:
            text = decode_bytes(chunk, charset, final=not truncated)
            text = _collapse(html.unescape(_HTML_TAG.sub(" ", _HTML_DROP.sub(" ", text))))
        elif chunk.isascii() and (codec is None or codec in _ASCII_TRANSPARENT):
            text = _collapse_bytes(chunk, "ascii")
        elif codec in (None, "ascii", "utf-8") and _is_utf8(chunk):
            # What decode_bytes would return: UTF-8 is the declared codec or
            # the first fallback (ASCII fails on any non-ASCII byte). Without
            # an incomplete final character, the same for a truncated window.
            text = _collapse_bytes(chunk, "utf-8")
        else:
            text = _collapse(decode_bytes(chunk, charset, final=not truncated))
        if len(text) >= PREVIEW_CHARS or not truncated:
            break
    return text[:PREVIEW_CHARS]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _collapse(text: str) -> str:
    # Collapsing a prefix gives a prefix of the collapsed text, and only
    # PREVIEW_CHARS are kept: avoid splitting kilobytes of words.
    size = PREVIEW_CHARS + PREVIEW_CHARS // 4
    while True:
        out = " ".join(_CONTROL.sub(" ", text[:size]).split())
        if len(out) > PREVIEW_CHARS or size >= len(text):
            return out
        size *= 4


def _collapse_bytes(chunk: bytes, encoding: str) -> str:
    """``_collapse(chunk.decode(encoding))`` for valid ASCII or UTF-8 ``chunk``.

    Like :func:`_collapse` a prefix of the collapsed text that is longer than
    PREVIEW_CHARS, or all of it. The ASCII blanks are squeezed as bytes, with
    replace() rather than by splitting words and joining them; text with
    other blanks (NBSP, U+2000..., all non-printable) takes the slow way.
    """
    size = PREVIEW_CHARS + PREVIEW_CHARS // 4
    while True:
        out = chunk[:size].translate(_ASCII_BLANKS)
        while out.find(b"  ") >= 0:
            out = out.replace(b"  ", b" ")
        # A multi-byte character cut at the end of the piece is dropped.
        text = out.strip(b" ").decode(encoding, "ignore")
        if not (text.isascii() or text.isprintable()):
            return _collapse(chunk.decode(encoding))
        if len(text) > PREVIEW_CHARS or size >= len(chunk):
            return text
        size *= 4


def _flat(addrs: list[Address] | None) -> list[str]:
    # address_string() of every address (not group markers), if not empty
    if not addrs:
        return []
    return [
        s
        for _, _, mailbox, host in addrs
        if host is not None and (s := f"{mailbox or ''}@{host}" if host else (mailbox or ""))
    ]


def _add_summary(
    result: dict[str, Any],
    buf: _Buf,
    envelope: dict[str, Any],
    fields: _Fields,
    body: dict[str, Any],
) -> None:
    subject = envelope["subject"]
    from_name = from_address = ""
    for name, _, mailbox, host in envelope["from"] or ():
        if mailbox is not None and host is not None:  # not a group marker
            from_name = decode_words(name) if name else ""
            from_address = f"{mailbox}@{host}" if host else mailbox  # address_string()
            break

    has_attachments = False
    plain: dict[str, Any] | None = None
    rich: dict[str, Any] | None = None
    # The leaves in order, each with the subtype of its multipart parent.
    stack: list[tuple[dict[str, Any], str]] = [(body, "")]
    while stack:
        node, parent = stack.pop()
        parts = node.get("parts")
        if parts is not None:
            subtype = node["subtype"]
            stack.extend((child, subtype) for child in reversed(parts))
        elif _is_attachment(node, parent):
            has_attachments = True
        elif node["type"] == "text":
            if node["subtype"] == "plain":
                if plain is None:
                    plain = node
            elif node["subtype"] == "html" and rich is None:
                rich = node
    preview = ""
    for candidate in (plain, rich):
        if candidate is not None:
            preview = _preview(buf, candidate)
            if preview:
                break
    result["subject"] = decode_words(subject) if subject is not None else ""
    result["from_name"] = from_name
    result["from_address"] = from_address
    result["to"] = _flat(envelope["to"])
    result["cc"] = _flat(envelope["cc"])
    result["date"] = _timestamp(envelope["date"])
    result["message_id"] = _first_msgid(envelope["message_id"])
    result["in_reply_to"] = _first_msgid(envelope["in_reply_to"])
    result["references"] = _msgids(fields[_F_REFERENCES])
    result["has_attachments"] = has_attachments
    result["preview"] = preview


# --- entry point ----------------------------------------------------------------


def analyze(raw: bytes | memoryview | mmap.mmap) -> dict[str, Any]:
    """Analyse a raw message once; see the module docstring for the result."""
    try:
        return _analyze(raw)
    except Exception:  # the contract is "never raise": degrade to an opaque body
        return _fallback(raw)


def _analyze(raw: bytes | memoryview | mmap.mmap) -> dict[str, Any]:
    buf = _Buf(raw)
    body, fields = _Walker(buf).entity(0, buf.size, 0, "1", "", False)
    envelope = _envelope(fields)
    result: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "size": buf.size,
        "envelope": envelope,
        "body": body,
    }
    _add_summary(result, buf, envelope, fields, body)
    return result


def _fallback(raw: bytes | memoryview | mmap.mmap) -> dict[str, Any]:
    size = len(raw)
    envelope: dict[str, Any] = dict.fromkeys(
        ("date", "subject", "from", "sender", "reply_to", "to", "cc", "bcc", "in_reply_to", "message_id")
    )
    body: dict[str, Any] = {
        "section": "1",
        "type": "application",
        "subtype": "octet-stream",
        "params": {},
        "id": None,
        "description": None,
        "encoding": "7bit",
        "size": size,
        "lines": None,
        "md5": None,
        "disposition": None,
        "language": None,
        "location": None,
        "filename": None,
        "header_start": 0,
        "body_start": 0,
        "body_end": size,
    }
    return {
        "v": SCHEMA_VERSION,
        "size": size,
        "envelope": envelope,
        "body": body,
        "subject": "",
        "from_name": "",
        "from_address": "",
        "to": [],
        "cc": [],
        "date": None,
        "message_id": None,
        "in_reply_to": None,
        "references": [],
        "has_attachments": False,
        "preview": "",
    }
