"""`mailhouse send`: a command-line user agent.

It builds a proper MIME message with the standard library's `email` (UTF-8 subject
and names encoded per RFC 2047, attachments with detected types, Date and
Message-ID) and submits it like any mail client: STARTTLS, AUTH, then the
transaction. It talks to the configured submission listener, or any server.
"""

from __future__ import annotations

import argparse
import email.policy
import email.utils
import mimetypes
import os
import re
import smtplib
import socket
import ssl
import sys
from email.message import EmailMessage
from pathlib import Path

from ..config import Config, parse_hostport
from .main import CommandError


def build_message(args: argparse.Namespace, body: str) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = args.sender
    msg["To"] = ", ".join(args.to)
    if args.cc:
        msg["Cc"] = ", ".join(args.cc)
    msg["Subject"] = args.subject or ""
    msg["Date"] = email.utils.formatdate(localtime=True)
    domain = email.utils.parseaddr(args.sender)[1].rpartition("@")[2] or socket.getfqdn()
    msg["Message-ID"] = email.utils.make_msgid(domain=domain)
    msg.set_content(body)
    for name in args.attach or []:
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise CommandError(f"cannot attach {name}: {e.strerror}") from None
        ctype, encoding = mimetypes.guess_type(path.name)
        if ctype is None or encoding is not None:
            ctype = "application/octet-stream"
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return msg


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _env_password() -> str:
    pw = os.environ.get("MAILHOUSE_PASSWORD")
    if not pw:
        raise CommandError("no password: give --password-stdin or set $MAILHOUSE_PASSWORD")
    return pw


def _context(config: Config, host: str, insecure: bool, own_server: bool) -> ssl.SSLContext:
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if own_server:
        # Our own listener: trust exactly the certificate it serves (self-signed or not).
        cert = config.tls_cert or config.data_dir / "cert.pem"
        ctx = ssl.create_default_context(cafile=str(cert)) if Path(cert).exists() else ssl.create_default_context()
        ctx.check_hostname = False
        return ctx
    return ssl.create_default_context()


async def cmd_send(config: Config, args: argparse.Namespace) -> None:
    if args.password_stdin:
        lines = sys.stdin.read().split("\n", 1)
        password, body = lines[0].rstrip("\r"), (lines[1] if len(lines) > 1 else "")
    else:
        password, body = _env_password(), sys.stdin.read()
    if not password:
        raise CommandError("the password is empty")
    for addr in [args.sender, *args.to, *(args.cc or []), *(args.bcc or [])]:
        if "@" not in email.utils.parseaddr(addr)[1]:
            raise CommandError(f"{addr!r} is not an address")
    msg = build_message(args, body)
    if args.server:
        host, port = parse_hostport(args.server, "--server")
        own = False
    else:
        if "submission" not in config.listen:
            raise CommandError("no submission listener in the configuration; give --server HOST:PORT")
        host, port = config.listen["submission"]
        own = True
    host = host or "127.0.0.1"
    user = args.user or email.utils.parseaddr(args.sender)[1]
    envelope_from = email.utils.parseaddr(args.sender)[1]
    rcpts = [email.utils.parseaddr(a)[1] for a in [*args.to, *(args.cc or []), *(args.bcc or [])]]
    data = msg.as_bytes()
    try:
        with smtplib.SMTP(host, port, timeout=args.timeout) as s:
            s.ehlo()
            if s.has_extn("starttls"):
                s.starttls(context=_context(config, host, args.insecure, own))
                s.ehlo()
            elif not args.insecure:
                raise CommandError(f"{host}:{port} does not offer STARTTLS; refusing to send the password in clear")
            s.login(user, password)
            opts = ["SMTPUTF8"] if not data.isascii() and s.has_extn("smtputf8") else []
            if not data.isascii() and s.has_extn("8bitmime"):
                opts.append("BODY=8BITMIME")
            code, reply = s.mail(envelope_from, opts)
            if code != 250:
                raise CommandError(f"sender {envelope_from} refused: {code} {reply.decode(errors='replace')}")
            for r in rcpts:
                code, reply = s.rcpt(r)
                if code not in (250, 251):
                    raise CommandError(f"recipient {r} refused: {code} {reply.decode(errors='replace')}")
            code, reply = s.data(data)
            if code != 250:
                raise CommandError(f"message refused: {code} {reply.decode(errors='replace')}")
    except smtplib.SMTPAuthenticationError as e:
        raise CommandError(f"authentication failed for {user}: {e.smtp_code} {_text(e.smtp_error)}") from None
    except smtplib.SMTPResponseException as e:
        raise CommandError(f"{host}:{port} said {e.smtp_code} {_text(e.smtp_error)}") from None
    except smtplib.SMTPException as e:
        raise CommandError(f"{host}:{port}: {e}") from None
    except ssl.SSLError as e:
        raise CommandError(f"TLS with {host}:{port} failed: {e.reason or e}") from None
    except (TimeoutError, ConnectionRefusedError, OSError) as e:
        raise CommandError(f"cannot reach {host}:{port}: {e.strerror or e}") from None
    m = re.search(r"queued as (\S+)", reply.decode(errors="replace"))
    print(f"queue id: {m.group(1) if m else '-'}")
    print(f"message-id: {msg['Message-ID']}")
