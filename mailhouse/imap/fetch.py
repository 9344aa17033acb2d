"""FETCH item rendering from the cached parse (``Message.parse``).

ENVELOPE, BODY and BODYSTRUCTURE come from the parse alone; body sections
slice the raw message at the part offsets the parse recorded (see
:mod:`mailhouse.mime.structure`), so the message bytes are read only when a
section is asked for and never parsed again. BINARY decodes the part's
Content-Transfer-Encoding (RFC 3516).

Part numbering (RFC 9051 §6.4.5): numbers index a multipart's children; a
non-multipart entity has only part 1, itself; under a message/rfc822 part,
numbers refer to the encapsulated message's body.
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailhouse.imap.parser import (
    BinarySection,
    BodySection,
    FetchAttr,
    FetchItem,
    Section,
)

Part = Mapping[str, Any]

# Items whose values come from the view's arrays alone.
ARRAY_ATTRS = frozenset({"UID", "FLAGS", "MODSEQ", "RFC822.SIZE"})
PARSE_ATTRS = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE", "INTERNALDATE"})
BLOB_ATTRS = frozenset({"RFC822", "RFC822.HEADER", "RFC822.TEXT"})
SEEN_ATTRS = frozenset({"RFC822", "RFC822.TEXT"})


class UnknownEncoding(Exception):
    """BINARY of a part whose transfer encoding cannot be decoded."""


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """What a FETCH needs, worked out once per command."""

    items: tuple[FetchItem, ...]
    needs_message: bool  # the store row: parse, internal date, blob id
    needs_blob: bool  # the raw bytes
    sets_seen: bool  # a non-PEEK body item: \Seen is set implicitly
    wants_flags: bool
    wants_modseq: bool
    header_only: bool  # nothing but top-level header sections, INTERNALDATE, array items
    labels: tuple[bytes, ...]  # each item's name in the response, worked out once, not per message


_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


def _is_header_item(item: FetchItem) -> bool:
    if isinstance(item, FetchAttr):
        return item.name in ARRAY_ATTRS or item.name in ("INTERNALDATE", "RFC822.HEADER")
    return isinstance(item, BodySection) and not item.section.part and item.section.text in _HEADER_TEXTS


def plan(items: Sequence[FetchItem]) -> FetchPlan:
    needs_message = needs_blob = sets_seen = flags = modseq = False
    header_only = all(_is_header_item(i) for i in items)
    for item in items:
        if isinstance(item, FetchAttr):
            if item.name in PARSE_ATTRS:
                needs_message = True
            elif item.name in BLOB_ATTRS:
                needs_message = needs_blob = True
                sets_seen = sets_seen or item.name in SEEN_ATTRS
            elif item.name == "FLAGS":
                flags = True
            elif item.name == "MODSEQ":
                modseq = True
        else:
            needs_message = needs_blob = True
            if isinstance(item, BodySection | BinarySection) and not item.peek:
                sets_seen = True
    labels = tuple(item.response_name().encode("utf-8") for item in items)
    return FetchPlan(tuple(items), needs_message, needs_blob, sets_seen, flags, modseq, header_only, labels)


# --- part lookup ------------------------------------------------------------------------


def _is_message(part: Part) -> bool:
    return (
        str(part.get("type", "")).lower() == "message"
        and str(part.get("subtype", "")).lower() in ("rfc822", "global")
        and part.get("body") is not None
    )


def _is_multipart(part: Part) -> bool:
    return str(part.get("type", "")).lower() == "multipart" and bool(part.get("parts"))


def find_part(parse: Mapping[str, Any], path: Sequence[int]) -> Part | None:
    """The part a section number names, or None when it does not exist."""
    current: Part | None = None  # None: the message itself
    for n in path:
        if current is None:
            body: Part = parse.get("body") or {}
        elif _is_multipart(current):
            children = current["parts"]
            if not 1 <= n <= len(children):
                return None
            current = children[n - 1]
            continue
        elif _is_message(current):
            body = current["body"]
        else:
            return None
        if _is_multipart(body):
            children = body["parts"]
            if not 1 <= n <= len(children):
                return None
            current = children[n - 1]
        elif n == 1:
            current = body
        else:
            return None
    return current


_FIELD_START = re.compile(rb"(?m)^(?![ \t])")


def _header_fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, raw field with its line break) for each field."""
    out: list[tuple[bytes, bytes]] = []
    starts = [m.start() for m in _FIELD_START.finditer(block)]
    for k, s in enumerate(starts):
        e = starts[k + 1] if k + 1 < len(starts) else len(block)
        raw = block[s:e]
        colon = raw.find(b":")
        if colon <= 0 or not raw.strip():
            continue
        out.append((raw[:colon].strip().lower(), raw))
    return out


# Whitespace that bytes.strip() removes around a field name, a line break
# only where the field goes on (a continuation line).
_NAME_WS = rb"(?:[ \t\r\x0b\x0c]|\n(?=[ \t]))"


@functools.lru_cache(maxsize=256)
def _fields_pattern(names: tuple[str, ...]) -> re.Pattern[bytes] | None:
    """One regex finding the fields named ``names`` in a header block, whole
    (continuation lines and line break included), at C speed: what
    :func:`_header_fields` then a name test would keep, without splitting
    every field in Python (``FETCH 1:* BODY.PEEK[HEADER.FIELDS (...)]`` does
    this for every message). None for names this cannot express exactly."""
    wanted = sorted({n.lower().encode("latin-1", "replace") for n in names}, key=len, reverse=True)
    if not wanted or any(not w or re.search(rb"[\s:\x0b\x0c]", w) for w in wanted):
        return None
    alternatives = b"|".join(re.escape(w) for w in wanted)
    return re.compile(
        rb"(?m)^(?![ \t])" + _NAME_WS + rb"*(?:" + alternatives + rb")" + _NAME_WS
        + rb"*:[^\n]*(?:\n[ \t][^\n]*)*\n?",
        re.IGNORECASE,
    )


def header_subset(block: bytes, names: Sequence[str], *, exclude: bool) -> bytes:
    """HEADER.FIELDS / HEADER.FIELDS.NOT: the chosen fields as sent, then the
    empty line that ends a header (RFC 9051 §6.4.5)."""
    pattern = None if exclude else _fields_pattern(tuple(names))
    if pattern is not None:
        kept = pattern.findall(block)
    else:
        wanted = {n.lower().encode("latin-1", "replace") for n in names}
        # The block includes the empty separator line; fields stop before it.
        kept = [raw for name, raw in _header_fields(block) if (name in wanted) != exclude]
    out = b"".join(k if k.endswith(b"\n") else k + b"\r\n" for k in kept)
    return out + b"\r\n"


def section_bytes(raw: bytes, parse: Mapping[str, Any], section: Section) -> bytes | None:
    """The octets of ``BODY[section]``, or None for a part that does not exist."""
    text = section.text
    if not section.part:
        top: Part = parse.get("body") or {}
        hs = int(top.get("header_start", 0))
        bs = int(top.get("body_start", 0))
        be = int(top.get("body_end", len(raw)))
        if text is None:
            return raw
        if text == "TEXT":
            return raw[bs:be]
        block = raw[hs:bs]
        if text == "HEADER":
            return block
        return header_subset(block, section.fields, exclude=text == "HEADER.FIELDS.NOT")
    part = find_part(parse, section.part)
    if part is None:
        return None
    if text is None:
        return raw[int(part["body_start"]) : int(part["body_end"])]
    if text == "MIME":
        return raw[int(part["header_start"]) : int(part["body_start"])]
    if not _is_message(part):
        # HEADER/TEXT of a part that is no message: nothing (RFC 9051 §6.4.5
        # only defines them for message/rfc822 parts).
        return b""
    inner: Part = part["body"]
    hs, bs, be = int(inner["header_start"]), int(inner["body_start"]), int(inner["body_end"])
    if text == "TEXT":
        return raw[bs:be]
    block = raw[hs:bs]
    if text == "HEADER":
        return block
    return header_subset(block, section.fields, exclude=text == "HEADER.FIELDS.NOT")


def decode_transfer(data: bytes, encoding: str) -> bytes:
    enc = encoding.lower()
    if enc in ("7bit", "8bit", "binary", ""):
        return data
    if enc == "base64":
        return binascii.a2b_base64(re.sub(rb"[^A-Za-z0-9+/=]", b"", data) or b"")
    if enc == "quoted-printable":
        return binascii.a2b_qp(data)
    raise UnknownEncoding(encoding)


def binary_bytes(raw: bytes, parse: Mapping[str, Any], path: Sequence[int]) -> bytes | None:
    """``BINARY[path]``: the part's content with its transfer encoding undone."""
    if not path:
        return raw
    part = find_part(parse, path)
    if part is None:
        return None
    data = raw[int(part["body_start"]) : int(part["body_end"])]
    if _is_multipart(part) or _is_message(part):
        return data
    try:
        return decode_transfer(data, str(part.get("encoding") or "7bit"))
    except (binascii.Error, ValueError):
        raise UnknownEncoding(str(part.get("encoding"))) from None


def partial(data: bytes, item: BodySection | BinarySection) -> bytes:
    p = item.partial
    if p is None:
        return data
    return data[p.offset : p.offset + p.length]


def text_parts(raw: bytes, parse: Mapping[str, Any]) -> list[tuple[Part, bytes]]:
    """Every leaf text part (with its decoded-transfer bytes), for SEARCH."""
    out: list[tuple[Part, bytes]] = []
    stack: list[Part] = [parse.get("body") or {}]
    while stack:
        part = stack.pop()
        if _is_multipart(part):
            stack.extend(reversed(part["parts"]))
            continue
        if _is_message(part):
            inner = part["body"]
            # The encapsulated header is text a TEXT search should see too.
            out.append((inner, raw[int(inner["header_start"]) : int(inner["body_start"])]))
            stack.append(inner)
            continue
        if str(part.get("type", "text")).lower() != "text":
            continue
        data = raw[int(part.get("body_start", 0)) : int(part.get("body_end", len(raw)))]
        try:
            data = decode_transfer(data, str(part.get("encoding") or "7bit"))
        except (UnknownEncoding, binascii.Error, ValueError):
            pass
        out.append((part, data))
    return out
