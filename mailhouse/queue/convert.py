"""8-bit to 7-bit conversion for a next hop without 8BITMIME (RFC 6152 §3).

Rare today, so it may be slow: stdlib `email` re-encodes every 8-bit leaf part as
quoted-printable. Headers with raw 8-bit bytes cannot be converted (that needs
SMTPUTF8): the caller fails the recipients with 5.6.3.
"""

from __future__ import annotations

import email.encoders
import email.parser
import email.policy
import io
from email.generator import BytesGenerator
from email.message import Message


def has_8bit(data: bytes) -> bool:
    return not data.isascii()


def header_is_8bit(raw: bytes) -> bool:
    end = raw.find(b"\r\n\r\n")
    return not (raw[:end] if end >= 0 else raw).isascii()


def to_7bit(raw: bytes) -> bytes | None:
    """The message with every 8-bit body part made quoted-printable; None if impossible."""
    if header_is_8bit(raw):
        return None
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    for part in msg.walk():
        if part.is_multipart():
            continue
        _convert_part(part)
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=email.policy.compat32.clone(linesep="\r\n")).flatten(msg)
    data = out.getvalue()
    return data if data.isascii() else None


def _convert_part(part: Message) -> None:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or payload.isascii():
        return
    cte = (part.get("Content-Transfer-Encoding") or "").lower()
    if cte in ("base64", "quoted-printable"):
        return
    del part["Content-Transfer-Encoding"]
    part.set_payload(payload)
    email.encoders.encode_quopri(part)
