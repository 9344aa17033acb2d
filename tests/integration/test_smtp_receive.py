"""The real `mailhouse serve`, spoken to as clients do: raw sockets, smtplib, swaks."""

from __future__ import annotations

import json
import re
import shutil
import smtplib
import subprocess
import time

import pytest

from tests.integration.conftest import ALICE_PW, BOB_PW, Line, inbox, show, tls_context
from tests.world import MailServer


def test_textbook_dialogue_byte_for_byte(mx: MailServer) -> None:
    before = len(inbox(mx, "bob@hamburger.edu"))
    c = Line(mx.port("smtp"))
    assert c.reply() == b"220 mail.hamburger.edu ESMTP mailhouse\r\n"
    assert c.cmd(b"HELO crepes.fr\r\n") == b"250 mail.hamburger.edu Hello crepes.fr, pleased to meet you\r\n"
    assert c.cmd(b"MAIL FROM: <alice@crepes.fr>\r\n") == b"250 2.1.0 alice@crepes.fr ... Sender ok\r\n"
    assert c.cmd(b"RCPT TO: <bob@hamburger.edu>\r\n") == b"250 2.1.5 bob@hamburger.edu ... Recipient ok\r\n"
    assert c.cmd(b"DATA\r\n") == b'354 Enter mail, end with "." on a line by itself\r\n'
    c.send(b"Do you like ketchup?\r\n")
    c.send(b"How about pickles?\r\n")
    final = c.cmd(b".\r\n")
    m = re.fullmatch(rb"250 2\.0\.0 Message accepted for delivery: queued as ([0-9A-Z]+)\r\n", final)
    assert m, final
    assert c.cmd(b"QUIT\r\n") == b"221 2.0.0 mail.hamburger.edu closing connection\r\n"
    c.close()
    rows = inbox(mx, "bob@hamburger.edu")
    assert len(rows) == before + 1
    raw = show(mx, "bob@hamburger.edu", rows[-1]["uid"])
    assert raw.startswith(b"Return-Path: <alice@crepes.fr>\r\nReceived: from crepes.fr ([127.0.0.1])\r\n")
    assert m.group(1) in raw  # the queue id is in the Received header
    # The body had no header section: it must stay body, not glue onto our headers.
    assert raw.endswith(b"\r\n\r\nDo you like ketchup?\r\nHow about pickles?\r\n")
    # The queue id from the 250 reply leads through the log.
    assert m.group(1).decode() in mx.log()


def test_ehlo_lists_extensions(mx: MailServer) -> None:
    with smtplib.SMTP("127.0.0.1", mx.port("smtp"), timeout=10) as s:
        code, _ = s.ehlo("client.example")
        assert code == 250
        for ext in ("pipelining", "8bitmime", "smtputf8", "enhancedstatuscodes", "chunking", "dsn", "starttls", "size"):
            assert s.has_extn(ext), ext
        assert not s.has_extn("auth")  # no AUTH before TLS
        s.starttls(context=tls_context())
        s.ehlo("client.example")
        assert not s.has_extn("starttls")


def test_unknown_user_and_relay_denied(mx: MailServer) -> None:
    c = Line(mx.port("smtp"))
    c.reply()
    c.cmd(b"EHLO client.example\r\n")
    assert c.cmd(b"MAIL FROM:<x@example.org>\r\n").startswith(b"250 2.1.0")
    assert c.cmd(b"RCPT TO:<nobody@hamburger.edu>\r\n").startswith(b"550 5.1.1")
    assert c.cmd(b"RCPT TO:<victim@elsewhere.example>\r\n").startswith(b"554 5.7.1")
    assert c.cmd(b"DATA\r\n").startswith(b"554 5.5.1")
    c.cmd(b"QUIT\r\n")
    c.close()


def test_plus_alias_and_catch_all(mx: MailServer) -> None:
    bob0, alice0, catch0 = (len(inbox(mx, a)) for a in ("bob@hamburger.edu", "alice@hamburger.edu", "catcher@catchall.test"))
    with smtplib.SMTP("127.0.0.1", mx.port("smtp"), timeout=10) as s:
        s.sendmail("x@example.org", ["bob+lists@hamburger.edu"], b"Subject: plus\r\n\r\nhi\r\n")
        s.sendmail("x@example.org", ["ketchup@hamburger.edu"], b"Subject: alias\r\n\r\nhi\r\n")
        s.sendmail("x@example.org", ["anything@catchall.test"], b"Subject: catch\r\n\r\nhi\r\n")
    assert len(inbox(mx, "bob@hamburger.edu")) == bob0 + 2
    assert len(inbox(mx, "alice@hamburger.edu")) == alice0 + 1
    assert len(inbox(mx, "catcher@catchall.test")) == catch0 + 1
    assert inbox(mx, "catcher@catchall.test")[-1]["subject"] == "catch"


def test_alias_to_remote_target_is_queued(mx: MailServer) -> None:
    with smtplib.SMTP("127.0.0.1", mx.port("smtp"), timeout=10) as s:
        s.sendmail("x@example.org", ["far@hamburger.edu"], b"Subject: forward\r\n\r\nhi\r\n")
    q = json.loads(mx.cli("queue", "list", "--json").stdout)
    assert any("someone@crepes.fr" in e["recipients"] for e in q)


def test_submission_requires_tls_and_auth(mx: MailServer) -> None:
    c = Line(mx.port("submission"))
    c.reply()
    c.cmd(b"EHLO client.example\r\n")
    assert c.cmd(b"MAIL FROM:<bob@hamburger.edu>\r\n").startswith(b"530 5.7.0")
    assert c.cmd(b"AUTH PLAIN AGJvYkBoYW1idXJnZXIuZWR1AHg=\r\n").startswith(b"538 5.7.11")
    c.cmd(b"QUIT\r\n")
    c.close()
    with smtplib.SMTP("127.0.0.1", mx.port("submission"), timeout=10) as s:
        s.starttls(context=tls_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("bob@hamburger.edu", "wrong")
        assert e.value.smtp_code == 535


def test_submission_delivers_local_and_queues_remote(mx: MailServer) -> None:
    before = len(inbox(mx, "alice@hamburger.edu"))
    with smtplib.SMTP("127.0.0.1", mx.port("submission"), timeout=10) as s:
        s.starttls(context=tls_context())
        s.login("bob@hamburger.edu", BOB_PW)
        refused = s.sendmail(
            "bob@hamburger.edu",
            ["alice@hamburger.edu", "alice@crepes.fr"],
            b"From: bob@hamburger.edu\r\nTo: alice@hamburger.edu\r\nSubject: lunch\r\n\r\nKetchup?\r\n",
        )
        assert refused == {}
    rows = inbox(mx, "alice@hamburger.edu")
    assert len(rows) == before + 1
    raw = show(mx, "alice@hamburger.edu", rows[-1]["uid"])
    header = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nDate: " in header and b"\r\nMessage-ID: <" in header  # added on submission
    assert b"with ESMTPSA" in header and b"authenticated as bob@hamburger.edu" in header
    q = json.loads(mx.cli("queue", "list", "--json").stdout)
    entry = next(e for e in q if e["recipients"] == ["alice@crepes.fr"])
    assert entry["sender"] == "bob@hamburger.edu" and entry["attempts"] == 0


def test_submissions_implicit_tls(mx: MailServer) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", mx.port("submissions"), timeout=10, context=tls_context()) as s:
        s.login("alice@hamburger.edu", ALICE_PW)
        s.sendmail("alice@hamburger.edu", ["bob@hamburger.edu"], b"Subject: tls\r\n\r\nsecure\r\n")


def test_pipelining_and_bdat(mx: MailServer) -> None:
    before = len(inbox(mx, "bob@hamburger.edu"))
    c = Line(mx.port("smtp"))
    c.reply()
    c.cmd(b"EHLO client.example\r\n")
    c.send(b"MAIL FROM:<p@example.org> BODY=8BITMIME\r\nRCPT TO:<bob@hamburger.edu> NOTIFY=SUCCESS,FAILURE\r\n"
           b"RCPT TO:<nobody@hamburger.edu>\r\nDATA\r\n")
    assert c.reply().startswith(b"250 2.1.0")
    assert c.reply().startswith(b"250 2.1.5")
    assert c.reply().startswith(b"550 5.1.1")
    assert c.reply().startswith(b"354")
    assert c.cmd(b"Subject: piped\r\n\r\n..dot line\r\n.\r\n").startswith(b"250 2.0.0")
    body = b"Subject: chunked\r\n\r\nin two chunks\r\n"
    c.send(b"MAIL FROM:<p@example.org>\r\nRCPT TO:<bob@hamburger.edu>\r\n")
    c.send(b"BDAT %d\r\n%s" % (10, body[:10]))
    c.send(b"BDAT %d LAST\r\n%s" % (len(body) - 10, body[10:]))
    assert c.reply().startswith(b"250 2.1.0")
    assert c.reply().startswith(b"250 2.1.5")
    assert c.reply().startswith(b"250 2.0.0")
    assert c.reply().startswith(b"250 2.0.0 Message accepted")
    c.cmd(b"QUIT\r\n")
    rows = inbox(mx, "bob@hamburger.edu")
    assert len(rows) == before + 2
    assert show(mx, "bob@hamburger.edu", rows[-2]["uid"]).endswith(b"\r\n\r\n.dot line\r\n")
    assert show(mx, "bob@hamburger.edu", rows[-1]["uid"]).endswith(body[-30:])


def test_smuggling_bare_lf_does_not_end_data(mx: MailServer) -> None:
    before = len(inbox(mx, "bob@hamburger.edu"))
    c = Line(mx.port("smtp"))
    c.reply()
    c.cmd(b"EHLO client.example\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<bob@hamburger.edu>\r\n")
    c.cmd(b"DATA\r\n")
    c.send(b"Subject: smuggle\r\n\r\nfirst\n.\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@hamburger.edu>\r\n"
           b"DATA\r\nsmuggled\r\n.\r\n")
    assert c.reply().startswith(b"250 2.0.0")  # one message only
    c.cmd(b"QUIT\r\n")
    rows = inbox(mx, "bob@hamburger.edu")
    assert len(rows) == before + 1
    raw = show(mx, "bob@hamburger.edu", rows[-1]["uid"])
    assert b"\r\nfirst\r\n.\r\nMAIL FROM:<evil@example.org>\r\n" in raw  # bare LF stored as CRLF
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_oversized_message_refused_and_not_stored(mx: MailServer) -> None:
    before = len(inbox(mx, "bob@hamburger.edu"))
    c = Line(mx.port("smtp"))
    c.reply()
    assert b"SIZE 1048576" in c.cmd(b"EHLO client.example\r\n")
    assert c.cmd(b"MAIL FROM:<a@example.org> SIZE=2000000\r\n").startswith(b"552 5.3.4")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<bob@hamburger.edu>\r\n")
    c.cmd(b"DATA\r\n")
    line = b"X-Big: " + b"a" * 990 + b"\r\n"
    for _ in range(2000):  # a 2 MB header, over the 1 MB limit
        c.send(line)
    assert c.cmd(b"\r\nbody\r\n.\r\n").startswith(b"552 5.3.4")
    assert c.cmd(b"NOOP\r\n").startswith(b"250")  # the session goes on
    c.cmd(b"QUIT\r\n")
    assert len(inbox(mx, "bob@hamburger.edu")) == before


def test_disconnect_mid_data_stores_nothing(mx: MailServer) -> None:
    before = len(inbox(mx, "bob@hamburger.edu"))
    c = Line(mx.port("smtp"))
    c.reply()
    c.cmd(b"EHLO client.example\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<bob@hamburger.edu>\r\n")
    c.cmd(b"DATA\r\n")
    c.send(b"Subject: half\r\n\r\n" + b"x" * 300_000)  # past the in-memory part: a spool file exists
    c.close()
    time.sleep(0.5)
    assert len(inbox(mx, "bob@hamburger.edu")) == before
    blobs = [p for p in (mx.data_dir / "blobs").rglob("*") if p.is_file()]
    sizes = [p.stat().st_size for p in blobs]
    assert all(s < 300_000 for s in sizes), sizes  # the partial spool file is gone


def test_garbage_nul_and_long_lines(mx: MailServer) -> None:
    c = Line(mx.port("smtp"))
    c.reply()
    assert c.cmd(b"\x00\x01\x02\xff\xfe garbage\r\n").startswith(b"500 5.5.2")
    assert c.cmd(b"EHLO \x00x\r\n")[:1] in (b"2", b"5")
    assert c.cmd(b"A" * 100_000 + b"\r\n").startswith(b"500 5.5.2")
    assert c.cmd(b"EHLO client.example\r\n").startswith(b"250")
    assert c.cmd(b"MAIL FROM:<not an address\r\n").startswith(b"501")
    assert c.cmd(b"NOOP\r\n").startswith(b"250 2.0.0")
    assert c.cmd(b"VRFY bob\r\n").startswith(b"252 2.5.0")
    c.cmd(b"QUIT\r\n")


def test_ten_thousand_recipients(mx: MailServer) -> None:
    c = Line(mx.port("smtp"), timeout=30)
    c.reply()
    c.cmd(b"EHLO client.example\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.send(b"".join(b"RCPT TO:<bob+%d@hamburger.edu>\r\n" % i for i in range(10_000)))
    replies = [c.reply() for _ in range(10_000)]
    assert replies[:100] == [b"250 2.1.5 bob+%d@hamburger.edu ... Recipient ok\r\n" % i for i in range(100)]
    assert all(r.startswith(b"452 4.5.3") for r in replies[100:])
    assert c.cmd(b"RSET\r\n").startswith(b"250")  # the session goes on
    c.cmd(b"QUIT\r\n")
    c.close()
    # The server is still fine.
    with smtplib.SMTP("127.0.0.1", mx.port("smtp"), timeout=10) as s:
        assert s.noop()[0] == 250


def test_slow_loris_times_out(mx: MailServer) -> None:
    c = Line(mx.port("smtp"), timeout=15)
    c.reply()
    start = time.monotonic()
    c.send(b"EH")
    time.sleep(1)
    c.send(b"L")
    reply = c.reply()
    assert reply.startswith(b"421 4.4.2"), reply
    assert time.monotonic() - start < 8
    assert c.closed_by_peer()


def test_swaks_plain_pipelining_and_auth(mx: MailServer) -> None:
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks is installed by tests/run.sh")
    before = len(inbox(mx, "bob@hamburger.edu"))
    r = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{mx.port('smtp')}", "--to", "bob@hamburger.edu", "--from", "s@example.org",
         "--pipeline", "--header", "Subject: via swaks"],
        capture_output=True, timeout=60,
    )
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    r = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{mx.port('submission')}", "--to", "bob@hamburger.edu",
         "--from", "alice@hamburger.edu", "--tls", "--auth", "LOGIN", "--auth-user", "alice@hamburger.edu",
         "--auth-password", ALICE_PW, "--header", "Subject: via swaks auth"],
        capture_output=True, timeout=60,
    )
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    subjects = [row["subject"] for row in inbox(mx, "bob@hamburger.edu")[before:]]
    assert subjects == ["via swaks", "via swaks auth"]


def test_connections_per_ip_limited(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    with MailServer(tmp_path, "limits.test", listeners=("smtp",),
                    extra={"limits": {"max_connections_per_ip": 3}}) as srv:
        conns = [Line(srv.port("smtp")) for _ in range(3)]
        for c in conns:
            assert c.reply().startswith(b"220")
        extra = Line(srv.port("smtp"))
        assert extra.reply().startswith(b"421 4.7.0")
        for c in conns:
            c.close()


def test_kill_after_250_loses_nothing(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    srv = MailServer(tmp_path, "durable.test", listeners=("smtp",))
    srv.cli("user", "add", "bob@durable.test", "--password", "pw")
    srv.start()
    c = Line(srv.port("smtp"))
    c.reply()
    c.cmd(b"EHLO client.example\r\n")
    c.cmd(b"MAIL FROM:<a@example.org>\r\n")
    c.cmd(b"RCPT TO:<bob@durable.test>\r\n")
    c.cmd(b"DATA\r\n")
    reply = c.cmd(b"Subject: durable\r\n\r\nkeep me\r\n.\r\n")
    assert reply.startswith(b"250 2.0.0")
    srv.kill()  # SIGKILL right after the 250
    c.close()
    rows = json.loads(srv.cli("mailbox", "list", "bob@durable.test", "--json").stdout)
    assert [r["subject"] for r in rows] == ["durable"]
    srv.start()
    rows = json.loads(srv.cli("mailbox", "list", "bob@durable.test", "--json").stdout)
    assert [r["subject"] for r in rows] == ["durable"]
    assert srv.stop() == 0


def test_sigterm_stops_cleanly(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    srv = MailServer(tmp_path, "stop.test", listeners=("smtp",)).start()
    c = Line(srv.port("smtp"))
    c.reply()
    c.cmd(b"EHLO client.example\r\n")
    assert srv.stop() == 0
    assert c.reply().startswith(b"421 4.3.2")


def test_notify_success_for_local_delivery(mx: MailServer) -> None:
    before = len(inbox(mx, "alice@hamburger.edu"))
    c = Line(mx.port("smtp"))
    c.reply()
    c.cmd(b"EHLO client.example\r\n")
    c.cmd(b"MAIL FROM:<alice@hamburger.edu> ENVID=abc123\r\n")
    assert c.cmd(b"RCPT TO:<bob@hamburger.edu> NOTIFY=SUCCESS ORCPT=rfc822;bob@hamburger.edu\r\n").startswith(b"250")
    c.cmd(b"DATA\r\n")
    assert c.cmd(b"Subject: tell me\r\n\r\nhi\r\n.\r\n").startswith(b"250")
    c.cmd(b"QUIT\r\n")
    rows = inbox(mx, "alice@hamburger.edu")[before:]
    assert [r["subject"] for r in rows] == ["Successful Mail Delivery Report"]
    raw = show(mx, "alice@hamburger.edu", rows[0]["uid"])
    assert b"Action: delivered" in raw and b"Original-Envelope-Id: abc123" in raw
    assert b"Original-Recipient: rfc822;bob@hamburger.edu" in raw
