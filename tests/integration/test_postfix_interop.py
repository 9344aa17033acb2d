"""Interoperability with a real Postfix, both directions, on 127.0.0.1 only.

* mailhouse -> Postfix: alice@crepes.fr submits to user@pf.test; crepes' `[routes]`
  sends pf.test to a private Postfix (benchmarks/postfix_peer.py, maildir mode) that
  offers STARTTLS, PIPELINING, 8BITMIME and DSN. The message must land in Postfix's
  Maildir byte for byte (8-bit body included), with mailhouse's Received line, sent
  over TLS, with the DSN request passed on, and mailhouse's queue must empty; messages
  sent one after the other share one cached connection (one TLS session).
* Postfix -> mailhouse: a private Postfix in relay mode (`relayhost` = mailhouse's
  smtp listener, STARTTLS opportunistic) takes a message injected with smtplib and
  relays it; it must land in bob@hamburger.edu's INBOX intact, received over TLS.

Skipped (with the reason) when Postfix is not installed or we are not root
(`postfix start` needs root). Every Postfix started is stopped, whatever happens.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.postfix_peer import PostfixInstance, postfix_available
from mailhouse.net.tls import make_self_signed
from tests.integration.conftest import inbox, queue, tls_context, wait_for
from tests.world import MailServer, free_port

pytestmark = pytest.mark.skipif(
    not postfix_available(),
    reason="Postfix is not installed (apt-get install postfix) or we are not root: "
    "a private Postfix instance needs both",
)

ALICE_PW = "crepes-au-sucre"
BOB_PW = "ketchup-and-pickles"

# 8-bit text (UTF-8) in the body: only 8BITMIME lets it through unchanged.
BODY_8BIT = "Crème brûlée ou crêpe Suzette ? Ça dépend du chef.\r\n".encode()


def tls_main_cf(root: Path, hostname: str) -> dict[str, str]:
    """main.cf settings for STARTTLS on Postfix's smtpd (self-signed) and smtp client."""
    root.mkdir(parents=True, exist_ok=True)
    cert, key = root / "cert.pem", root / "key.pem"
    make_self_signed(cert, key, hostname)
    return {
        "smtpd_tls_security_level": "may",
        "smtpd_tls_chain_files": f"{key}, {cert}",
        "smtpd_tls_loglevel": "1",
        "smtp_tls_security_level": "may",
        "smtp_tls_loglevel": "1",
    }


def maildir_files(pf: PostfixInstance, local: str) -> list[Path]:
    out: list[Path] = []
    for sub in ("new", "cur"):
        d = pf.maildir(local) / sub
        if d.is_dir():
            out += sorted(d.iterdir())
    return out


def header_block(raw: bytes) -> bytes:
    """The header of a message (CRLF or LF line ends), with LF line ends."""
    raw = raw.replace(b"\r\n", b"\n")
    return raw.split(b"\n\n", 1)[0] + b"\n"


def unfold(header: bytes) -> bytes:
    return re.sub(rb"\n[ \t]+", b" ", header)


@pytest.fixture
def pf_dir() -> Iterator[Path]:
    """A directory for a Postfix instance, NOT under pytest's tmp_path: Postfix's
    unprivileged daemons (and master, for its lock file) must traverse every
    ancestor, and any pytest session that starts meanwhile (another run on the same
    machine) chmods /tmp/pytest-of-USER back to 0700, which breaks a running
    Postfix ("open lock file ...: Permission denied", deliveries deferred)."""
    d = Path(tempfile.mkdtemp(prefix="mailhouse-interop-pf-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def crepes_and_postfix(tmp_path: Path, pf_dir: Path) -> Iterator[tuple[MailServer, PostfixInstance]]:
    pf_port = free_port()
    pf = PostfixInstance(
        pf_dir / "postfix", pf_port, mode="maildir", domain="pf.test", mailboxes=("user",),
        hostname="mx.pf.test", extra_main=tls_main_cf(pf_dir / "tls", "mx.pf.test"),
    )
    crepes = MailServer(tmp_path, "crepes.fr", listeners=("smtp", "submission"), extra={
        "queue": {"retry_interval": "1s", "max_lifetime": "1h", "delay_warning": "0",
                  "connect_timeout": "3s", "reply_timeout": "10s", "idle_timeout": "10s"},
        "routes": {"pf.test": f"127.0.0.1:{pf_port}"},
    })
    crepes.cli("user", "add", "alice@crepes.fr", "--password", ALICE_PW)
    with pf, crepes:
        yield crepes, pf


def test_mailhouse_relays_into_postfix(crepes_and_postfix: tuple[MailServer, PostfixInstance]) -> None:
    crepes, pf = crepes_and_postfix
    message = (
        b"From: Alice <alice@crepes.fr>\r\n"
        b"To: User <user@pf.test>\r\n"
        b"Subject: interop to Postfix\r\n"
        b"Message-ID: <interop-1@crepes.fr>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        + BODY_8BIT
        + b"..a line that starts with a dot\r\n"
        b"last line\r\n"
    )
    with smtplib.SMTP("127.0.0.1", crepes.port("submission"), timeout=20) as s:
        s.starttls(context=tls_context())
        s.login("alice@crepes.fr", ALICE_PW)
        # smtplib dot-stuffs ("..a line" goes as "...a line"): each hop must unstuff once.
        refused = s.sendmail("alice@crepes.fr", ["user@pf.test"], message,
                             mail_options=["BODY=8BITMIME"], rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
        assert refused == {}

    files = wait_for(lambda: maildir_files(pf, "user"), timeout=30, msg="the message in Postfix's Maildir")
    assert len(files) == 1
    raw = files[0].read_bytes()  # Postfix stores with LF line ends
    head = header_block(raw)
    flat = unfold(head)
    # Postfix's own trace on top: it received from mailhouse over ESMTP with TLS.
    assert head.startswith(b"Return-Path: <alice@crepes.fr>\n"), head
    assert re.search(rb"^Received: from mail\.crepes\.fr \(\S+ \[127\.0\.0\.1\]\) by mx\.pf\.test "
                     rb"\(Postfix\) with ESMTPS id \w+ for <user@pf\.test>;", flat, re.M), head
    # mailhouse's Received (from the authenticated submission) travelled unchanged.
    assert re.search(rb"^Received: from .*by mail\.crepes\.fr \(mailhouse\) with ESMTPSA id ", flat, re.M), head
    assert flat.count(b"Return-Path:") == 1  # mailhouse's own Return-Path stayed home
    body = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]
    expected_body = message.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
    assert body == expected_body  # 8-bit intact (BODY=8BITMIME, not converted to QP), dots intact
    for line in (b"From: Alice <alice@crepes.fr>", b"To: User <user@pf.test>", b"Subject: interop to Postfix",
                 b"Message-ID: <interop-1@crepes.fr>", b"Content-Transfer-Encoding: 8bit"):
        assert line + b"\n" in head

    wait_for(lambda: queue(crepes) == [], msg="mailhouse's queue to empty")
    log = crepes.log()
    assert re.search(r"to=<user@pf\.test>, relay=127\.0\.0\.1, status=sent \(250 ", log), log[-2000:]
    maillog = pf.maillog.read_text(errors="replace")
    assert re.search(r"TLS connection established from \S*\[127\.0\.0\.1\]", maillog), pf.log_tail(40)
    # The DSN request went on to Postfix (it offers DSN), so the success notice is
    # Postfix's to send (after its delivery), not mailhouse's (on relaying).
    wait_for(lambda: "sender delivery status notification" in pf.maillog.read_text(errors="replace"),
             timeout=10, msg="Postfix's success DSN in its log")
    assert inbox(crepes, "alice@crepes.fr") == []  # no "relayed" DSN from mailhouse


def test_mailhouse_reuses_connections_into_postfix(
    crepes_and_postfix: tuple[MailServer, PostfixInstance],
) -> None:
    crepes, pf = crepes_and_postfix
    n = 5
    with smtplib.SMTP("127.0.0.1", crepes.port("submission"), timeout=20) as s:
        s.starttls(context=tls_context())
        s.login("alice@crepes.fr", ALICE_PW)
        # One after the other, each delivered and out of mailhouse's queue (by then
        # its connection is back in the cache) before the next is sent: the next one
        # finds that connection idle (idle_timeout 10s). Sent all at once they would
        # go out in parallel, one connection each.
        for i in range(n):
            s.sendmail("alice@crepes.fr", ["user@pf.test"],
                       f"Subject: burst {i}\r\nMessage-ID: <burst-{i}@crepes.fr>\r\n\r\nmessage {i}\r\n".encode())
            wait_for(lambda: len(maildir_files(pf, "user")) > i, timeout=30,  # noqa: B023 (called at once)
                     msg=f"message {i} in the Maildir")
            wait_for(lambda: queue(crepes) == [], msg="mailhouse's queue to empty")
    wait_for(lambda: queue(crepes) == [], msg="mailhouse's queue to empty")
    subjects = sorted(re.search(rb"(?m)^Subject: (.*)$", f.read_bytes()).group(1)  # type: ignore[union-attr]
                      for f in maildir_files(pf, "user"))
    assert subjects == sorted(f"burst {i}".encode() for i in range(n))
    # One TLS session for all: mailhouse kept the connection open for the next message.
    maillog = pf.maillog.read_text(errors="replace")
    # (mailhouse starts TLS on every connection to a Postfix offering it.)
    assert len(re.findall(r"TLS connection established from", maillog)) == 1, pf.log_tail(40)


def test_postfix_relays_into_mailhouse(tmp_path: Path, pf_dir: Path) -> None:
    hamburger = MailServer(tmp_path, "hamburger.edu", listeners=("smtp",))
    hamburger.cli("user", "add", "bob@hamburger.edu", "--password", BOB_PW)
    pf_port = free_port()
    pf = PostfixInstance(
        pf_dir / "postfix", pf_port, mode="relay", relayhost=f"[127.0.0.1]:{hamburger.port('smtp')}",
        domain="hamburger.edu", hostname="mx.relay.test",
        extra_main=tls_main_cf(pf_dir / "tls", "mx.relay.test"),
    )
    message = (
        b"From: Carol <carol@relay.test>\r\n"
        b"To: Bob <bob@hamburger.edu>\r\n"
        b"Subject: interop from Postfix\r\n"
        b"Message-ID: <interop-2@relay.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        + BODY_8BIT
        + b"..dotted\r\n"
        b"end\r\n"
    )
    with hamburger, pf:
        with smtplib.SMTP("127.0.0.1", pf_port, timeout=20) as s:
            code, ehlo = s.ehlo("client.relay.test")
            assert code == 250
            for ext in (b"PIPELINING", b"8BITMIME", b"DSN"):  # what Postfix offers us
                assert ext in ehlo, ehlo
            s.sendmail("carol@relay.test", ["bob@hamburger.edu"], message, mail_options=["BODY=8BITMIME"])
        rows = wait_for(lambda: inbox(hamburger, "bob@hamburger.edu"), timeout=30,
                        msg="the message in bob's INBOX")
        assert len(rows) == 1
        assert rows[0]["subject"] == "interop from Postfix"
        assert "carol@relay.test" in rows[0]["from"]
        raw = hamburger.cli("mailbox", "show", "bob@hamburger.edu", str(rows[0]["uid"])).stdout
        head, body = raw.split(b"\r\n\r\n", 1)
        flat = unfold(head.replace(b"\r\n", b"\n") + b"\n")
        assert flat.startswith(b"Return-Path: <carol@relay.test>\nReceived: from mx.relay.test ([127.0.0.1])"
                               b" by mail.hamburger.edu (mailhouse) with ESMTPS id "), flat
        # Postfix's Received (from our smtplib injection) came along, and so did every header.
        assert re.search(rb"^Received: from client\.relay\.test \(\S+ \[127\.0\.0\.1\]\) by mx\.relay\.test "
                         rb"\(Postfix\) with ESMTP id \w+", flat, re.M), flat
        for line in (b"From: Carol <carol@relay.test>", b"To: Bob <bob@hamburger.edu>",
                     b"Message-ID: <interop-2@relay.test>", b"Content-Transfer-Encoding: 8bit"):
            assert line + b"\n" in flat
        assert body == message.split(b"\r\n\r\n", 1)[1]  # 8-bit and leading dots intact
        pf.wait_queue_empty(timeout=20)
        maillog = pf.maillog.read_text(errors="replace")
        assert re.search(r"to=<bob@hamburger\.edu>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=sent \(250 ",
                         maillog), pf.log_tail(40)
        assert re.search(r"TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:\d+", maillog), pf.log_tail(40)
        assert queue(hamburger) == []

