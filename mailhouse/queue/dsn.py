"""Delivery Status Notifications (RFC 3464): the bounce, the delay warning, the
success notice a sender asked for with NOTIFY=SUCCESS.

Built by hand rather than with email.message: the report's layout is fixed by the
RFC, the original message must be included byte for byte, and hand-building
keeps it exact.
"""

from __future__ import annotations

import email.utils
import re
import secrets
from dataclasses import dataclass

from ..ids import new_message_id
from ..smtp.grammar import xtext_decode

FULL_MAX = 10 * 1024 * 1024  # RET=FULL above this returns the headers only


@dataclass(frozen=True)
class RecipientStatus:
    address: str
    orcpt: str | None
    action: str  # failed / delayed / delivered / relayed / expanded
    status: str  # 5.1.1, 4.4.1, 2.0.0 ...
    remote_mta: str | None
    diagnostic: str | None  # the far side's reply, as text
    will_retry_until: float | None = None


def _date(ts: float) -> str:
    return email.utils.formatdate(ts, localtime=False)


def _original_recipient(orcpt: str | None) -> str | None:
    if not orcpt or ";" not in orcpt:
        return None
    addr_type, _, value = orcpt.partition(";")
    try:
        value = xtext_decode(value)
    except ValueError:
        pass
    return f"{addr_type.strip()};{value}"


def _header_block(original: bytes) -> bytes:
    end = original.find(b"\r\n\r\n")
    head = original[: end + 2] if end >= 0 else original
    # A leading Return-Path of ours says nothing to the sender.
    if head.lower().startswith(b"return-path:"):
        nl = head.find(b"\r\n")
        head = head[nl + 2 :] if nl >= 0 else b""
    return head


_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}


def _human(kind: str, hostname: str, statuses: list[RecipientStatus], arrival: float) -> str:
    lines = [f"This is the mail system at host {hostname}.", ""]
    if kind == "failed":
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. It's attached below.",
            "",
        ]
    elif kind == "delayed":
        lines += [
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            f"Your message, received {_date(arrival)}, could not be delivered yet.",
            "The mail system will keep trying to deliver it.",
            "",
        ]
    else:
        lines += ["Your message was successfully delivered to the destination(s) listed below.", ""]
    for s in statuses:
        where = f" (the mail server {s.remote_mta} said: {s.diagnostic})" if s.remote_mta and s.diagnostic else (
            f" ({s.diagnostic})" if s.diagnostic else ""
        )
        lines.append(f"<{s.address}>: {s.action}{where}")
        if s.will_retry_until is not None:
            lines.append(f"    will keep trying until {_date(s.will_retry_until)}")
    return "\r\n".join(lines) + "\r\n"


def build_dsn(
    *,
    kind: str,
    hostname: str,
    queue_id: str,
    sender: str,
    envid: str | None,
    arrival: float,
    statuses: list[RecipientStatus],
    original: bytes,
    ret_full: bool,
    now: float,
) -> tuple[bytes, str]:
    """(message bytes, Message-ID) of a report to `sender` about `statuses`."""
    boundary = f"{queue_id}.{secrets.token_hex(6)}/{hostname}"
    message_id = new_message_id(hostname)
    subject = _SUBJECTS.get(kind, "Delivery Status Notification")
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 8bit",
    ]
    per_message = [f"Reporting-MTA: dns; {hostname}", f"X-Mailhouse-Queue-ID: {queue_id}"]
    if envid:
        try:
            per_message.append(f"Original-Envelope-Id: {xtext_decode(envid)}")
        except ValueError:
            per_message.append(f"Original-Envelope-Id: {envid}")
    per_message.append(f"Arrival-Date: {_date(arrival)}")
    blocks = ["\r\n".join(per_message)]
    for s in statuses:
        f = [f"Final-Recipient: rfc822; {s.address}"]
        orig = _original_recipient(s.orcpt)
        if orig:
            f.append(f"Original-Recipient: {orig}")
        f.append(f"Action: {s.action}")
        f.append(f"Status: {s.status}")
        if s.remote_mta:
            f.append(f"Remote-MTA: dns; {s.remote_mta}")
        if s.diagnostic:
            diag = re.sub(r"[\r\n]+", " ", s.diagnostic)
            f.append(f"Diagnostic-Code: smtp; {diag}")
        f.append(f"Last-Attempt-Date: {_date(now)}")
        if s.will_retry_until is not None:
            f.append(f"Will-Retry-Until: {_date(s.will_retry_until)}")
        blocks.append("\r\n".join(f))
    status_part = "\r\n\r\n".join(blocks) + "\r\n"

    full = ret_full and len(original) <= FULL_MAX and kind == "failed"
    if full:
        body = original
        if body.lower().startswith(b"return-path:"):
            nl = body.find(b"\r\n")
            body = body[nl + 2 :]
        third = (b"Content-Type: message/rfc822\r\nContent-Description: Undelivered Message\r\n\r\n" + body)
    else:
        third = (
            b"Content-Type: text/rfc822-headers\r\nContent-Description: "
            + (b"Undelivered Message Headers" if kind == "failed" else b"Message Headers")
            + b"\r\n\r\n" + _header_block(original)
        )
    b = boundary.encode()
    msg = (
        ("\r\n".join(head) + "\r\n\r\n").encode()
        + b"This is a MIME-encapsulated message.\r\n\r\n"
        + b"--" + b + b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Description: Notification\r\n\r\n"
        + _human(kind, hostname, statuses, arrival).encode("utf-8")
        + b"\r\n--" + b + b"\r\nContent-Type: message/delivery-status\r\nContent-Description: Delivery report\r\n\r\n"
        + status_part.encode("utf-8")
        + b"\r\n--" + b + b"\r\n" + third
        + (b"" if third.endswith(b"\r\n") else b"\r\n")
        + b"\r\n--" + b + b"--\r\n"
    )
    return msg, message_id
