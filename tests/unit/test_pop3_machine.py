"""POP3 machine transcripts (RFC 1939 examples and the extensions)."""

from __future__ import annotations

import base64

from mailhouse.pop3 import machine as pm


def drive(m: pm.POP3Connection, data: bytes, messages: dict[int, bytes] | None = None) -> bytes:
    m.receive_data(data)
    while True:
        ev = m.next_event()
        if ev is pm.NEED_DATA or isinstance(ev, pm.Closed):
            break
        if isinstance(ev, pm.Login):
            if ev.password == "secret":
                m.login_ok([pm.Drop(1, 120, "7.1"), pm.Drop(2, 200, "7.2")])
            else:
                m.login_failed()
        elif isinstance(ev, pm.Retrieve):
            m.send_message((messages or {})[ev.uid], ev.lines)
        elif isinstance(ev, pm.Update):
            assert ev.uids == [1]
            m.updated()
    return m.data_to_send()


def test_rfc1939_session() -> None:
    m = pm.POP3Connection("mail.example", tls_active=False, tls_available=True, plaintext_ok=True)
    m.greet()
    assert m.data_to_send() == b"+OK mail.example POP3 server ready\r\n"
    assert drive(m, b"USER mrose\r\n") == b"+OK send PASS\r\n"
    assert drive(m, b"PASS secret\r\n") == b"+OK maildrop has 2 messages (320 octets)\r\n"
    assert drive(m, b"STAT\r\n") == b"+OK 2 320\r\n"
    assert drive(m, b"LIST\r\n") == b"+OK listing follows\r\n1 120\r\n2 200\r\n.\r\n"
    assert drive(m, b"UIDL 2\r\n") == b"+OK 2 7.2\r\n"
    msgs = {1: b"Subject: a\r\n\r\n.hidden dot\r\nline2\r\nline3\r\n"}
    assert drive(m, b"RETR 1\r\n", msgs) == b"+OK message follows\r\nSubject: a\r\n\r\n..hidden dot\r\nline2\r\nline3\r\n.\r\n"
    assert drive(m, b"TOP 1 1\r\n", msgs) == b"+OK message follows\r\nSubject: a\r\n\r\n..hidden dot\r\n.\r\n"
    # More lines asked than the body has (fetchmail asks TOP n 99999999): exactly RETR's bytes.
    assert drive(m, b"TOP 1 99\r\n", msgs) == drive(m, b"RETR 1\r\n", msgs)
    assert drive(m, b"DELE 1\r\n") == b"+OK message 1 deleted\r\n"
    assert drive(m, b"RETR 1\r\n") == b"-ERR no such message\r\n"
    assert drive(m, b"STAT\r\n") == b"+OK 1 200\r\n"
    assert drive(m, b"RSET\r\nDELE 1\r\n") == b"+OK maildrop has 2 messages\r\n+OK message 1 deleted\r\n"
    assert drive(m, b"QUIT\r\n") == b"+OK mail.example POP3 server signing off\r\n"
    assert m.closed


def test_plaintext_refused_without_tls_and_stls_offered() -> None:
    m = pm.POP3Connection("h", tls_active=False, tls_available=True, plaintext_ok=False)
    m.greet()
    m.data_to_send()
    capa = drive(m, b"CAPA\r\n")
    assert b"STLS\r\n" in capa and b"USER" not in capa
    assert drive(m, b"USER a\r\n").startswith(b"-ERR [AUTH]")
    m.receive_data(b"STLS\r\nUSER injected\r\n")
    ev = m.next_event()
    assert isinstance(ev, pm.StartTLS)
    assert m.data_to_send() == b"+OK begin TLS negotiation\r\n"
    m.tls_started()  # the plaintext after STLS is dropped
    assert drive(m, b"CAPA\r\n").count(b"SASL PLAIN") == 1
    token = base64.b64encode(b"\x00bob\x00secret").decode()
    assert drive(m, f"AUTH PLAIN {token}\r\n".encode()).startswith(b"+OK maildrop has 2")


def test_bad_input_goes_on() -> None:
    m = pm.POP3Connection("h", tls_active=True, tls_available=False, plaintext_ok=True)
    m.greet()
    m.data_to_send()
    assert drive(m, b"\x00\xff garbage\r\n") == b"-ERR unknown command\r\n"
    assert drive(m, b"STAT\r\n") == b"-ERR not authenticated\r\n"
    assert drive(m, b"PASS x\r\n") == b"-ERR USER first\r\n"
    assert drive(m, b"USER a\r\nPASS wrong\r\n").endswith(b"-ERR [AUTH] authentication failed\r\n")
    assert drive(m, b"A" * 5000 + b"\r\n") == b"-ERR line too long\r\n"
    assert drive(m, b"QUIT\r\n") == b"+OK h POP3 server signing off\r\n"
