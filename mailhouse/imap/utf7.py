"""Mailbox-name encodings: modified UTF-7 (RFC 3501 §5.1.3) and UTF-8.

IMAP4rev1 clients name mailboxes in modified UTF-7: printable US-ASCII
stands for itself except ``&``, which is written ``&-``; any other run of
characters is UTF-16BE in modified base64 (``,`` instead of ``/``, no
padding) between ``&`` and ``-``. After ``ENABLE UTF8=ACCEPT`` (RFC 6855)
or ``ENABLE IMAP4rev2`` (RFC 9051) names travel as plain UTF-8 and ``&`` is
an ordinary character. The parser hands names over as the raw bytes that
were sent; the session picks the decoding with :func:`decode_mailbox_name`.

Decoding never raises unless ``strict`` is asked for: broken input (an
unterminated ``&``, bad base64, odd byte counts, lone surrogates, 8-bit
bytes in a rev1 name) is kept or repaired rather than rejected. The
session decodes strictly (RFC 3501 §5.1.3): a repaired name would let two
spellings alias one mailbox. A mailbox whose stored name is strange stays
reachable under the canonical encoding LIST shows for it.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = [
    "decode_mailbox_name",
    "decode_modified_utf7",
    "encode_mailbox_name",
    "encode_modified_utf7",
    "is_modified_utf7",
]

_SEGMENT = re.compile(r"&([A-Za-z0-9+,]*)-")
_PRINTABLE = re.compile(r"[\x20-\x25\x27-\x7e]+")


def _b64_utf16(run: str) -> str:
    raw = run.encode("utf-16-be", "surrogatepass")
    return base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")


def encode_modified_utf7(name: str) -> str:
    """Encode a Unicode mailbox name in modified UTF-7."""
    out: list[str] = []
    pos = 0
    size = len(name)
    while pos < size:
        m = _PRINTABLE.match(name, pos)
        if m is not None:
            out.append(m.group())
            pos = m.end()
            continue
        if name[pos] == "&":
            out.append("&-")
            pos += 1
            continue
        end = pos + 1
        while end < size and not ("\x20" <= name[end] <= "\x7e"):
            end += 1
        out.append("&" + _b64_utf16(name[pos:end]) + "-")
        pos = end
    return "".join(out)


class _Invalid(ValueError):
    pass


def _decode_segment(b64: str) -> str:
    if len(b64) % 4 == 1:
        raise _Invalid("truncated base64")
    data = b64.replace(",", "/")
    padded = data + "=" * (-len(data) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Invalid("invalid base64") from exc
    if len(raw) % 2:
        raise _Invalid("odd number of UTF-16 octets")
    # Canonical encoders leave the bits after the last octet zero; anything
    # else means the run was truncated or forged.
    if base64.b64encode(raw).decode("ascii").rstrip("=") != data:
        raise _Invalid("non-canonical base64")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise _Invalid("invalid UTF-16") from exc
    if any("\x20" <= ch <= "\x7e" for ch in text):
        raise _Invalid("printable ASCII must not be base64-encoded")
    return text


def decode_modified_utf7(data: str | bytes, *, strict: bool = False) -> str:
    """Decode modified UTF-7.

    With ``strict`` any deviation from RFC 3501 §5.1.3 raises ValueError.
    Otherwise each malformed ``&...`` run is kept verbatim, and 8-bit input
    (which modified UTF-7 forbids) is taken as UTF-8 when it is valid UTF-8,
    else Latin-1, so the result is always a usable name.
    """
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("ascii")
        except UnicodeDecodeError:
            if strict:
                raise ValueError("8-bit octets in a modified UTF-7 name") from None
            try:
                text = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                text = bytes(data).decode("latin-1")
    else:
        text = data
    if "&" not in text:
        if strict and any(not ("\x20" <= ch <= "\x7e") for ch in text):
            raise ValueError("characters outside printable US-ASCII")
        return text
    out: list[str] = []
    pos = 0
    prev_encoded_end = -1
    while True:
        amp = text.find("&", pos)
        if amp < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:amp])
        m = _SEGMENT.match(text, amp)
        if m is None:
            if strict:
                raise ValueError("unterminated or malformed '&' sequence")
            out.append("&")
            pos = amp + 1
            continue
        b64 = m.group(1)
        if not b64:
            out.append("&")
        else:
            try:
                if strict and prev_encoded_end == amp:
                    raise _Invalid("adjacent encoded runs must be merged")
                out.append(_decode_segment(b64))
                prev_encoded_end = m.end()
            except _Invalid as exc:
                if strict:
                    raise ValueError(str(exc)) from None
                out.append(m.group())
        pos = m.end()
    result = "".join(out)
    if strict and any(not ("\x20" <= ch <= "\x7e") for ch in text):
        raise ValueError("characters outside printable US-ASCII")
    return result


def is_modified_utf7(data: str | bytes) -> bool:
    """True when ``data`` is valid, canonical modified UTF-7."""
    try:
        decode_modified_utf7(data, strict=True)
    except ValueError:
        return False
    return True


def decode_mailbox_name(raw: bytes, *, utf8: bool, strict: bool = False) -> str:
    """The mailbox name the client meant by ``raw``.

    ``utf8`` is True once UTF8=ACCEPT or IMAP4rev2 is enabled: the name is
    UTF-8 as is. Otherwise it is modified UTF-7. ``strict`` raises
    ValueError on malformed input (so the session can answer NO/BAD)
    instead of repairing it; without it the name is decoded best-effort.
    """
    if utf8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if strict:
                raise ValueError("mailbox name is not valid UTF-8") from None
            return raw.decode("utf-8", "replace")
    return decode_modified_utf7(raw, strict=strict)


def encode_mailbox_name(name: str, *, utf8: bool) -> bytes:
    """The octets that name a mailbox on the wire (before quoting)."""
    if utf8:
        return name.encode("utf-8", "surrogatepass")
    return encode_modified_utf7(name).encode("ascii")
