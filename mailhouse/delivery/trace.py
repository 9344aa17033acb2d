"""Trace header fields a receiving server adds (RFC 5321 §4.4): Received and Return-Path."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass


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
    return "".join(ch if 32 < ord(ch) < 127 and ch not in "()\\" else "?" for ch in text)[:255]


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
    date = email.utils.formatdate(when, localtime=False, usegmt=False)
    if recipient:
        lines.append(f"\tfor <{_clean(recipient)}>; {date}")
    else:
        lines[-1] += f"; {date}"
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def return_path_header(sender: str) -> bytes:
    return f"Return-Path: <{sender}>\r\n".encode()
