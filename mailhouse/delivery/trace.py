"""Trace header fields a receiving server adds (RFC 5321 §4.4): Received and Return-Path."""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass

_UNSAFE = re.compile(r"[^!-'*-\[\]-~]")  # printable ASCII but space, ( ) and backslash
_date_cache: tuple[int, str] = (-1, "")


@dataclass(frozen=True)
class TLSInfo:
    version: str
    cipher: str


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool) -> str:
    """The `with` keyword of RFC 3848: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA."""
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


def _clean(text: str) -> str:
    # A HELO name is the client's to choose: keep it from breaking the header.
    return _UNSAFE.sub("?", text[:255])


def _date(when: float) -> str:
    global _date_cache
    sec = int(when)
    if _date_cache[0] != sec:
        # "+0000", not formatdate's "-0000" which RFC 5322 reads as "zone unknown".
        _date_cache = (sec, email.utils.formatdate(sec, localtime=False)[:-5] + "+0000")
    return _date_cache[1]


def received_header(
    *,
    helo: str,
    client_ip: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    tls: TLSInfo | None,
    auth_user: str | None,
    recipient: str | None,
    when: float,
) -> bytes:
    lines = [f"Received: from {_clean(helo) or 'unknown'} ([{client_ip}])"]
    lines.append(f"\tby {hostname} (mailhouse) with {protocol} id {queue_id}")
    if tls is not None:
        lines.append(f"\t(version={_clean(tls.version)} cipher={_clean(tls.cipher)})")
    if auth_user:
        lines.append(f"\t(authenticated as {_clean(auth_user)})")
    date = _date(when)
    if recipient:
        lines.append(f"\tfor <{_clean(recipient)}>; {date}")
    else:
        lines[-1] += f"; {date}"
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def return_path_header(sender: str) -> bytes:
    return f"Return-Path: <{sender}>\r\n".encode()
