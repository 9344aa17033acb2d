"""Small, fast helpers for RFC 5322 header sections.

These work on raw bytes and never hand a whole message to :mod:`email`: the
server calls them on every delivery and on IMAP/webmail paths, where parsing a
large body just to read a header costs tens of milliseconds.

Text policy (shared with :mod:`mailhouse.mime.structure`): header bytes are
decoded as UTF-8 when they are valid UTF-8 (RFC 6532 allows it), otherwise as
Latin-1. Latin-1 maps every byte to one code point, so decoding never fails,
the result is always valid Unicode (safe for JSON and SQLite), and the original
bytes can be recovered with ``.encode("latin-1")`` when that branch was taken.

Public API:

* :func:`find_header_end` / :func:`split_header`: where the header section ends
  and the body starts, on ``bytes``, ``mmap`` or ``memoryview`` without copying.
* :func:`has_header_section`: does a message start with a header field?
* :func:`iter_fields` / :func:`get_header`: header fields of a header block.
* :func:`decode_words`: RFC 2047 encoded-word decoding.
* :func:`decode_bytes` / :func:`codec_name`: charset decoding with sane fallbacks.
* :func:`parse_content_type` / :func:`parse_disposition` / :func:`param_text`:
  MIME header values with RFC 2231 parameter continuations.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import mmap
import re
import urllib.parse
from collections.abc import Iterator
from typing import TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap

# A header section is a run of field lines ("name:" then anything) and their
# continuation lines (starting with SP/HTAB). Field names are printable ASCII
# except ":" (RFC 5322 ftext); WSP before the colon is obsolete syntax that is
# still seen. The last field may end without a line break (at the end of the
# buffer or of the window given by `endpos`, so this works inside a part).
#
# Rather than matching the block line by line (slow in `re`), the first line
# is checked once and then a single search finds the first line that is
# neither a field nor a continuation: `re` skips to each LF at C speed and
# only looks at the start of the following line.
_FIRST_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_BAD_LINE = re.compile(rb"\n(?![ \t]|[\x21-\x39\x3b-\x7e]+[ \t]*:)")
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.M)


def _block_end(buf: Buffer, start: int, end: int) -> int:
    """End of the run of header field lines at ``buf[start:end]``.

    The offset of the first line that is neither a field nor a continuation
    (``start`` when the first line is not a field), or ``end``.
    """
    if _FIRST_FIELD.match(buf, start, end) is None:
        return start
    m = _BAD_LINE.search(buf, start, end)
    return end if m is None else m.end()


def find_header_end(buf: Buffer, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """Return ``(fields_end, body_start)`` for the entity at ``buf[start:end]``.

    ``buf[start:fields_end]`` holds the header fields (each with its line
    break); ``buf[start:body_start]`` additionally includes the empty line that
    ends the header section, which is what IMAP's ``BODY[HEADER]`` and
    ``BODY[n.MIME]`` return. When the entity does not start with a header field
    (a "message" such as ``Do you like ketchup?``) the header is empty and
    ``fields_end == body_start == start``. A line that is neither a field nor a
    continuation ends the header without an empty line, like stdlib ``email``.
    """
    if end is None:
        end = len(buf)
    e = _block_end(buf, start, end)
    if e >= end:
        return end, end
    c = buf[e]
    if c == 10:
        return e, e + 1
    if c == 13 and e + 1 < end and buf[e + 1] == 10:
        return e, e + 2
    return e, e


def split_header(raw: Buffer) -> tuple[bytes, int]:
    """Return ``(header_bytes, body_offset)``.

    ``header_bytes`` is the header fields including their line breaks but not
    the empty separator line; ``raw[body_offset:]`` is the body.
    """
    fields_end, body_start = find_header_end(raw)
    return bytes(raw[:fields_end]), body_start


def has_header_section(raw_prefix: bytes) -> bool:
    """Can a header field be prepended to this message as it is?

    True when the message starts with a header field, or with the empty line
    that ends an (empty) header section, or is empty. False when the first
    line is body text (the textbook message starting ``Do you like
    ketchup?``): a server adding ``Received:`` must then insert an empty line
    first, or the body's first line would become part of the header.

    Pass at least the first line (1000 bytes is plenty).
    """
    if not raw_prefix or raw_prefix.startswith((b"\n", b"\r\n")):
        return True
    return _FIRST_FIELD.match(raw_prefix) is not None


def text(value: bytes) -> str:
    """Decode header bytes per the module's text policy (UTF-8, else Latin-1)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def unfold(value: bytes) -> str:
    """Unfold a raw field value (drop line breaks, keep the WSP), strip, decode."""
    # `10 in value`, not `b"\n" in value`: the latter costs an internal
    # TypeError on every call.
    if 10 in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    value = value.strip()
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def iter_fields(header_bytes: Buffer) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(name, raw_value)`` for each field, in order.

    ``raw_value`` is everything after the colon, still folded; use
    :func:`unfold` for the text. Only the leading run of well-formed fields is
    considered, so stray body text after a missing separator is ignored.
    """
    end = _block_end(header_bytes, 0, len(header_bytes))
    for fm in _FIELD.finditer(header_bytes, 0, end):
        yield fm.group(1), fm.group(2)


def field_map(header_bytes: Buffer, validated: bool = False) -> dict[bytes, bytes]:
    """First occurrence of each field, keyed by lower-cased name.

    ``validated=True`` skips re-checking the block when it is known to come
    from :func:`find_header_end` (``buf[start:fields_end]``).
    """
    end = len(header_bytes)
    if not validated:
        end = _block_end(header_bytes, 0, end)
    # Reversed so the first occurrence of a repeated field wins.
    return {name.lower(): value for name, value in reversed(_FIELD.findall(header_bytes, 0, end))}


def get_header(header_bytes: Buffer, name: str) -> str | None:
    """The first field called ``name`` (any case), unfolded; None if absent.

    Encoded-words are left as sent; pass the result to :func:`decode_words`
    for display.
    """
    wanted = name.lower().encode("ascii", "replace")
    for fname, value in iter_fields(header_bytes):
        if fname.lower() == wanted:
            return unfold(value)
    return None


# --- charsets -----------------------------------------------------------------

# Labels seen in mail that Python spells differently or that should map to a
# superset (GB2312 mail is routinely GBK/GB18030 in practice).
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "x-user-defined": "latin-1",
    "unknown-8bit": "latin-1",
    "x-unknown": "latin-1",
    "us-ascii": "ascii",
    "ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
    "windows-874": "cp874",
    "x-mac-roman": "mac-roman",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "big5": "big5hkscs",
}


def _codec(charset: str) -> str | None:
    """A Python text codec name for a MIME charset label, or None."""
    # Labels come from messages: cache only short ones, to bound the memory.
    return _cached_codec(charset) if len(charset) <= 64 else _find_codec(charset)


def _find_codec(charset: str) -> str | None:
    name = charset.strip().strip("\"'").lower().split("*", 1)[0]
    if not name:
        return None
    name = _CHARSET_ALIASES.get(name, name)
    # Codecs that are not character sets (or behave surprisingly on untrusted
    # input) must not be selectable from a message.
    if "escape" in name or name in ("idna", "punycode", "raw-unicode-escape"):
        return None
    try:
        info = codecs.lookup(name)
        b"a".decode(info.name)
    except Exception:
        return None
    if info.name in ("base64", "hex", "quopri", "uu", "zlib", "bz2", "rot-13"):
        return None
    return info.name


_cached_codec = functools.lru_cache(maxsize=256)(_find_codec)


# Codecs without state or multi-byte sequences other than UTF-8's: when a
# whole (possibly truncated) prefix decodes, the incremental decoder would
# return the same text, so it is only needed when the plain decode fails.
_PREFIX_DECODABLE = frozenset(
    ["utf-8", "ascii", "koi8-r", "koi8-u"]
    + [f"iso8859-{n}" for n in (*range(1, 12), *range(13, 17))]
    + [f"cp125{n}" for n in range(9)]
)


def codec_name(charset: str | None) -> str | None:
    """The Python codec :func:`decode_bytes` tries first for ``charset``, or None."""
    return _codec(charset) if charset else None


def decode_bytes(data: bytes, charset: str | None, final: bool = True) -> str:
    """Decode text in ``charset``; never raises.

    Tries the declared charset, then UTF-8 (the most common mislabel), then
    the declared charset with replacement characters (Latin-1 when the label
    is unknown). With ``final=False`` an incomplete multi-byte sequence at the
    end (a truncated prefix) is dropped rather than treated as an error.
    """
    codec = _codec(charset) if charset else None
    for name in (codec, "utf-8"):
        if name is None:
            continue
        if final or name in _PREFIX_DECODABLE:
            try:
                return data.decode(name)
            except Exception:  # some codecs raise other errors on garbage
                if final:
                    continue
        try:
            return codecs.getincrementaldecoder(name)("strict").decode(data, False)
        except Exception:
            continue
    try:
        return data.decode(codec or "latin-1", "replace")
    except Exception:
        return data.decode("latin-1")


# --- RFC 2047 -----------------------------------------------------------------

# Encoded-text may not contain "?" or whitespace; decoding anywhere (also inside
# quoted strings and glued to other text) matches what mail clients do.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def _b64(data: bytes) -> bytes:
    data = _B64_JUNK.sub(b"", data)
    rem = len(data) % 4
    if rem == 1:
        data = data[:-1]
    elif rem:
        data += b"=" * (4 - rem)
    return binascii.a2b_base64(data)


def decode_words(s: str) -> str:
    """Decode RFC 2047 encoded-words in ``s``; text that is not one is kept.

    Whitespace between adjacent encoded-words is dropped, and adjacent words in
    the same charset are joined before decoding so a multi-byte character split
    across two words survives. Malformed words are left as they are.
    """
    if "=?" not in s:
        return s
    out: list[str] = []
    pending: list[tuple[str, bytes]] = []
    pos = 0

    def flush() -> None:
        for cs, data in pending:
            out.append(decode_bytes(data, cs))
        pending.clear()

    for m in _ENCODED_WORD.finditer(s):
        between = s[pos : m.start()]
        charset, enc, payload = m.group(1), m.group(2), m.group(3)
        try:
            raw = payload.encode("utf-8")
            data = _b64(raw) if enc in "bB" else binascii.a2b_qp(raw, header=True)
        except (binascii.Error, ValueError):
            continue  # leave the malformed word as literal text
        if not (pending and (not between or between.isspace())):
            flush()
            out.append(between)
        charset = charset.split("*", 1)[0].lower()
        if pending and pending[-1][0] == charset:
            pending[-1] = (charset, pending[-1][1] + data)
        else:
            pending.append((charset, data))
        pos = m.end()
    flush()
    out.append(s[pos:])
    return "".join(out)


# --- MIME parameters (RFC 2045, RFC 2231) ---------------------------------------

_TOKEN = r"[^\s;/()<>@,:\\\"\[\]?=]+"
_CONTENT_TYPE = re.compile(r"\s*(" + _TOKEN + r")\s*/\s*(" + _TOKEN + r")")
_DISPOSITION = re.compile(r"\s*(" + _TOKEN + r")")
_PARAM = re.compile(r';\s*([^\s;="]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))', re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_SECTION = re.compile(r"(.+)\*(\d{1,3})")
# attribute-char of RFC 2231: what may appear unencoded in an extended value.
_ATTR_SAFE = "!#$&+-.^_`|~"


def _params(value: str, pos: int) -> dict[str, str]:
    if "*" not in value:
        out: dict[str, str] = {}
        for name, quoted, bare in _PARAM.findall(value, pos):
            name = name.lower()
            if name in out:
                continue
            if quoted or not bare:
                out[name] = _QUOTED_PAIR.sub(r"\1", quoted) if "\\" in quoted else quoted
            else:
                bare = bare.strip()
                out[name] = bare[1:] if bare.startswith('"') else bare
        return out
    return _params_2231(value, pos)


def _params_2231(value: str, pos: int) -> dict[str, str]:
    simple: dict[str, str] = {}
    # base name -> section -> (extended, value); insertion order is kept so
    # the output follows the header.
    sections: dict[str, dict[int, tuple[bool, str]]] = {}
    order: list[tuple[str, bool]] = []
    for m in _PARAM.finditer(value, pos):
        name = m.group(1).lower()
        quoted = m.group(2)
        if quoted is not None:
            val = _QUOTED_PAIR.sub(r"\1", quoted) if "\\" in quoted else quoted
        else:
            val = m.group(3).strip()
            if val.startswith('"'):  # unterminated quoted-string
                val = val[1:]
        if "*" not in name:
            if name not in simple:
                simple[name] = val
                order.append((name, False))
            continue
        extended = name.endswith("*")
        base = name[:-1] if extended else name
        sm = _SECTION.fullmatch(base)
        if sm is not None:
            base, number = sm.group(1), int(sm.group(2))
        elif extended:
            number = 0
        else:
            # A "*" that is not a section marker: keep it as an opaque name.
            if name not in simple:
                simple[name] = val
                order.append((name, False))
            continue
        if base not in sections:
            sections[base] = {}
            order.append((base, True))
        sections[base].setdefault(number, (extended, val))

    out: dict[str, str] = {}
    for name, is_2231 in order:
        if not is_2231:
            out.setdefault(name, simple[name])
            continue
        parts = [sections[name][k] for k in sorted(sections[name])]
        if any(ext for ext, _ in parts):
            # Keep RFC 2231 form ("name*" = charset'lang'%XX...) with the
            # continuations merged: IMAP clients expect it in BODYSTRUCTURE.
            chunks: list[str] = []
            for i, (ext, val) in enumerate(parts):
                if ext:
                    chunks.append(val)
                else:
                    enc = urllib.parse.quote(val, safe=_ATTR_SAFE)
                    chunks.append(("''" + enc) if i == 0 else enc)
            out.setdefault(name + "*", "".join(chunks))
        else:
            out.setdefault(name, "".join(val for _, val in parts))
    return out


def parse_content_type(value: str) -> tuple[str | None, str | None, dict[str, str]]:
    """``(type, subtype, params)`` with lower-cased type, subtype and names.

    type/subtype are None when the value is not ``type/subtype`` (the caller
    applies the RFC 2045 default); parameters are still parsed so a charset on
    a broken Content-Type is not lost. RFC 2231 continuations are merged; an
    extended value stays encoded under the ``name*`` key (see
    :func:`param_text`).
    """
    m = _CONTENT_TYPE.match(value)
    if m is None:
        return None, None, _params(value, 0)
    return m.group(1).lower(), m.group(2).lower(), _params(value, m.end())


def parse_disposition(value: str) -> tuple[str | None, dict[str, str]]:
    """``(disposition_type, params)`` for a Content-Disposition value."""
    m = _DISPOSITION.match(value)
    if m is None:
        return None, _params(value, 0)
    return m.group(1).lower(), _params(value, m.end())


def param_text(params: dict[str, str], name: str) -> str | None:
    """The decoded value of parameter ``name``, for display.

    Prefers the RFC 2231 extended form (``name*``, charset-decoded), then the
    plain value with RFC 2047 encoded-words decoded, which many mailers use in
    filenames although the RFC forbids it.
    """
    ext = params.get(name + "*")
    if ext is not None:
        charset: str | None = None
        data = ext
        pieces = ext.split("'", 2)
        if len(pieces) == 3:
            charset, data = pieces[0] or None, pieces[2]
        return decode_bytes(urllib.parse.unquote_to_bytes(data), charset)
    plain = params.get(name)
    if plain is None:
        return None
    return decode_words(plain)
