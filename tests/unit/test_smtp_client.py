"""The sans-I/O SMTP client machine, against scripted replies and the server machine."""

from __future__ import annotations

import pytest

from mailhouse.smtp import server as sm
from mailhouse.smtp.client import (
    NEED_DATA,
    AuthFailed,
    AuthSucceeded,
    ClientConnection,
    Closed,
    ConnectionFailed,
    Envelope,
    Event,
    Greeting,
    MailRejected,
    MessageResult,
    Ready,
    ReadyForContent,
    RecipientResult,
    RecipientSpec,
    StateError,
    TLSRefused,
    TLSRequired,
    TransactionFailed,
)

GREETING = b"220 hamburger.edu ESMTP\r\n"
EHLO_FULL = (
    b"250-hamburger.edu\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 1000000\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250 DSN\r\n"
)
EHLO_PLAIN = b"250-hamburger.edu\r\n250 8BITMIME\r\n"


def drain(conn: ClientConnection) -> list[Event]:
    """Every event available now, up to NEED_DATA or a terminal event."""
    events: list[Event] = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA:
            return events
        assert isinstance(ev, Event)
        events.append(ev)
        if isinstance(ev, (ConnectionFailed, Closed)):
            return events


def feed(conn: ClientConnection, data: bytes) -> list[Event]:
    conn.receive_data(data)
    return drain(conn)


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def connect(ehlo: bytes = EHLO_FULL, **kwargs: bool) -> ClientConnection:
    kwargs.setdefault("want_tls", False)
    conn = ClientConnection("crepes.fr", **kwargs)
    assert conn.data_to_send() == b""
    events = feed(conn, GREETING)
    assert kinds(events) == ["Greeting"]
    assert conn.data_to_send() == b"EHLO crepes.fr\r\n"
    events = feed(conn, ehlo)
    assert kinds(events) == ["Ready"]
    return conn


def env(*rcpts: str, size: int = 1234, **kwargs: object) -> Envelope:
    specs = [RecipientSpec(r) for r in rcpts] or [RecipientSpec("bob@hamburger.edu")]
    return Envelope(
        sender=str(kwargs.pop("sender", "alice@crepes.fr")),
        recipients=specs,
        size=size,
        body_8bit=bool(kwargs.pop("body_8bit", False)),
        smtputf8=bool(kwargs.pop("smtputf8", False)),
        **kwargs,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------
# Session set-up
# --------------------------------------------------------------------------


def test_greeting_and_ehlo_extensions() -> None:
    conn = ClientConnection("crepes.fr", want_tls=False)
    (greeting,) = feed(conn, GREETING)
    assert isinstance(greeting, Greeting)
    assert greeting.reply.code == 220
    assert conn.data_to_send() == b"EHLO crepes.fr\r\n"
    # A reply split anywhere, even inside a line, is reassembled.
    assert feed(conn, EHLO_FULL[:30]) == []
    (ready,) = feed(conn, EHLO_FULL[30:])
    assert isinstance(ready, Ready)
    assert ready.tls is False
    assert ready.extensions == {
        "PIPELINING": [],
        "SIZE": ["1000000"],
        "8BITMIME": [],
        "SMTPUTF8": [],
        "ENHANCEDSTATUSCODES": [],
        "DSN": [],
    }
    assert conn.ready and conn.esmtp


@pytest.mark.parametrize("code", [b"500", b"502", b"504", b"550"])
def test_helo_fallback(code: bytes) -> None:
    conn = ClientConnection("crepes.fr", want_tls=False)
    feed(conn, GREETING)
    conn.data_to_send()
    assert feed(conn, code + b" 5.5.1 what is EHLO?\r\n") == []
    assert conn.data_to_send() == b"HELO crepes.fr\r\n"
    (ready,) = feed(conn, b"250 hamburger.edu\r\n")
    assert isinstance(ready, Ready) and ready.extensions == {}
    assert not conn.esmtp
    # A HELO session: no parameters, one command at a time.
    conn.send_envelope(env())
    assert conn.data_to_send() == b"MAIL FROM:<alice@crepes.fr>\r\n"


def test_ehlo_4xx_fails_the_connection() -> None:
    conn = ClientConnection("crepes.fr", want_tls=False)
    feed(conn, GREETING)
    (failed,) = feed(conn, b"451 4.3.0 try later\r\n")
    assert isinstance(failed, ConnectionFailed) and failed.reply is not None
    assert failed.reply.code == 451


@pytest.mark.parametrize(
    ("greeting", "courtesy_quit"),
    [(b"554 5.7.1 go away\r\n", b"QUIT\r\n"), (b"421 4.3.2 busy\r\n", b"")],
)
def test_refusing_greeting(greeting: bytes, courtesy_quit: bytes) -> None:
    conn = ClientConnection("crepes.fr")
    (failed,) = feed(conn, greeting)
    assert isinstance(failed, ConnectionFailed)
    assert failed.reply is not None and failed.reply.code == int(greeting[:3])
    assert conn.data_to_send() == courtesy_quit
    # Terminal: repeated, and actions are ignored.
    assert conn.next_event() == failed
    conn.quit()
    assert conn.data_to_send() == b""


# --------------------------------------------------------------------------
# STARTTLS and AUTH
# --------------------------------------------------------------------------


def test_starttls_flow_discards_injected_plaintext() -> None:
    conn = ClientConnection("crepes.fr")  # want_tls by default
    feed(conn, GREETING)
    conn.data_to_send()
    assert feed(conn, b"250-hamburger.edu\r\n250-PIPELINING\r\n250 STARTTLS\r\n") == []
    assert conn.data_to_send() == b"STARTTLS\r\n"
    # A man in the middle appends a reply to the 220: it must not be read
    # as the first reply inside TLS.
    (required,) = feed(conn, b"220 2.0.0 go ahead\r\n250 injected\r\n")
    assert isinstance(required, TLSRequired)
    assert not conn.ready
    assert feed(conn, b"250 more injected\r\n") == []
    conn.tls_established()
    assert conn.data_to_send() == b"EHLO crepes.fr\r\n"
    (ready,) = feed(conn, b"250-hamburger.edu\r\n250 PIPELINING\r\n")
    assert isinstance(ready, Ready) and ready.tls is True
    assert ready.extensions == {"PIPELINING": []}
    assert conn.tls_active
    assert ("!", "discarded clear-text data received after the STARTTLS 220") in conn.transcript


def test_starttls_injected_garbage_is_dropped_too() -> None:
    conn = ClientConnection("crepes.fr")
    feed(conn, GREETING)
    feed(conn, b"250-hamburger.edu\r\n250 STARTTLS\r\n")
    assert kinds(feed(conn, b"220 go\r\nnot smtp\r\n")) == ["TLSRequired"]
    conn.tls_established()
    assert kinds(feed(conn, b"250 hamburger.edu\r\n")) == ["Ready"]


def test_starttls_refused_continues_in_clear() -> None:
    conn = ClientConnection("crepes.fr")
    feed(conn, GREETING)
    conn.data_to_send()
    feed(conn, b"250-hamburger.edu\r\n250 STARTTLS\r\n")
    assert conn.data_to_send() == b"STARTTLS\r\n"
    refused, ready = feed(conn, b"454 4.7.0 TLS not available\r\n")
    assert isinstance(refused, TLSRefused) and refused.reply.code == 454
    assert isinstance(ready, Ready) and ready.tls is False
    conn.send_envelope(env())
    assert conn.data_to_send() == b"MAIL FROM:<alice@crepes.fr>\r\n"


def test_manual_start_tls() -> None:
    conn = connect(b"250-hamburger.edu\r\n250 STARTTLS\r\n")
    conn.start_tls()
    assert conn.data_to_send() == b"STARTTLS\r\n"
    assert kinds(feed(conn, b"220 ready\r\n")) == ["TLSRequired"]
    with pytest.raises(StateError):
        conn.quit()
    conn.tls_established()
    assert conn.data_to_send() == b"EHLO crepes.fr\r\n"
    assert kinds(feed(conn, b"250 hamburger.edu\r\n")) == ["Ready"]
    with pytest.raises(StateError):
        conn.start_tls()  # not offered any more (and already under TLS)


def _tls_session_with_auth() -> ClientConnection:
    conn = ClientConnection("crepes.fr")
    feed(conn, GREETING)
    feed(conn, b"250-smart.host\r\n250-AUTH LOGIN\r\n250 STARTTLS\r\n")
    feed(conn, b"220 go\r\n")
    conn.tls_established()
    conn.data_to_send()
    feed(conn, b"250-smart.host\r\n250 AUTH LOGIN PLAIN\r\n")
    return conn


def test_auth_plain_redacted_in_transcript() -> None:
    conn = _tls_session_with_auth()
    conn.login("alice", "s3cret")
    assert conn.data_to_send() == b"AUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n"
    ok, ready = feed(conn, b"235 2.7.0 ok\r\n")
    assert isinstance(ok, AuthSucceeded) and isinstance(ready, Ready)
    assert conn.authenticated
    assert ("C", "AUTH PLAIN <redacted>") in conn.transcript
    assert not any("AGFsaWNl" in line for _, line in conn.transcript)


def test_auth_failure_and_unexpected_challenge() -> None:
    conn = _tls_session_with_auth()
    conn.login("alice", "wrong")
    conn.data_to_send()
    failed, _ = feed(conn, b"535 5.7.8 no\r\n")
    assert isinstance(failed, AuthFailed) and failed.reply.code == 535
    conn.login("alice", "pw")
    conn.data_to_send()
    assert feed(conn, b"334 \r\n") == []
    assert conn.data_to_send() == b"*\r\n"
    failed, ready = feed(conn, b"501 5.0.0 cancelled\r\n")
    assert isinstance(failed, AuthFailed) and failed.reply.code == 501
    assert isinstance(ready, Ready)


def test_auth_refused_without_tls() -> None:
    conn = connect(b"250-hamburger.edu\r\n250 AUTH PLAIN\r\n")
    with pytest.raises(StateError):
        conn.login("alice", "pw")


# --------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------


def test_pipelined_transaction_byte_exact_with_transcript() -> None:
    conn = connect()
    conn.send_envelope(env("bob@hamburger.edu", "carol@hamburger.edu"))
    assert conn.data_to_send() == (
        b"MAIL FROM:<alice@crepes.fr> SIZE=1234\r\n"
        b"RCPT TO:<bob@hamburger.edu>\r\n"
        b"RCPT TO:<carol@hamburger.edu>\r\n"
        b"DATA\r\n"
    )
    events = feed(
        conn,
        b"250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.1.5 Recipient ok\r\n"
        b"354 Enter mail\r\n",
    )
    assert kinds(events) == ["RecipientResult", "RecipientResult", "ReadyForContent"]
    assert all(isinstance(e, RecipientResult) and e.accepted for e in events[:2])
    conn.send_content(b"Subject: hi\r\n\r\nHello Bob\r\n", final=True)
    assert conn.data_to_send() == b"Subject: hi\r\n\r\nHello Bob\r\n.\r\n"
    result, ready = feed(conn, b"250 2.0.0 queued as X1\r\n")
    assert isinstance(result, MessageResult)
    assert result.reply.code == 250 and result.reply.enhanced == "2.0.0"
    assert isinstance(ready, Ready)
    conn.quit()
    assert conn.data_to_send() == b"QUIT\r\n"
    assert kinds(feed(conn, b"221 2.0.0 bye\r\n")) == ["Closed"]
    assert conn.transcript == [
        ("S", "220 hamburger.edu ESMTP"),
        ("C", "EHLO crepes.fr"),
        ("S", "250-hamburger.edu"),
        ("S", "250-PIPELINING"),
        ("S", "250-SIZE 1000000"),
        ("S", "250-8BITMIME"),
        ("S", "250-SMTPUTF8"),
        ("S", "250-ENHANCEDSTATUSCODES"),
        ("S", "250 DSN"),
        ("C", "MAIL FROM:<alice@crepes.fr> SIZE=1234"),
        ("C", "RCPT TO:<bob@hamburger.edu>"),
        ("C", "RCPT TO:<carol@hamburger.edu>"),
        ("C", "DATA"),
        ("S", "250 2.1.0 Sender ok"),
        ("S", "250 2.1.5 Recipient ok"),
        ("S", "250 2.1.5 Recipient ok"),
        ("S", "354 Enter mail"),
        ("C", "<message content: 26 bytes>"),
        ("C", "."),
        ("S", "250 2.0.0 queued as X1"),
        ("C", "QUIT"),
        ("S", "221 2.0.0 bye"),
    ]


def test_next_transaction_starts_behind_the_dot() -> None:
    """RFC 2920 §3.1: content may begin a group, so the next MAIL, RCPT and DATA
    go in the same write as the dot; replies are matched in order, and the first
    transaction's end-of-data reply lands in its own transcript."""
    conn = connect()
    conn.send_envelope(env("bob@hamburger.edu"))
    conn.data_to_send()
    feed(conn, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n")
    assert not conn.can_start_next()
    conn.send_content(b"one\r\n", final=True)
    assert conn.can_start_next()
    first = conn.transcript_record()
    conn.restart_transcript()
    conn.send_envelope(env("carol@hamburger.edu"))
    assert not conn.can_start_next()
    assert conn.data_to_send() == (
        b"one\r\n.\r\nMAIL FROM:<alice@crepes.fr> SIZE=1234\r\nRCPT TO:<carol@hamburger.edu>\r\nDATA\r\n"
    )
    events = feed(conn, b"250 2.0.0 queued as A\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n")
    # No Ready between the two: the second transaction is under way.
    assert kinds(events) == ["MessageResult", "RecipientResult", "ReadyForContent"]
    assert isinstance(events[0], MessageResult) and events[0].reply.text == "queued as A"
    conn.send_content(b"two\r\n", final=True)
    assert conn.data_to_send() == b"two\r\n.\r\n"
    events = feed(conn, b"250 2.0.0 queued as B\r\n")
    assert kinds(events) == ["MessageResult", "Ready"]
    assert first.lines()[-3:] == [
        ("C", "<message content: 5 bytes>"), ("C", "."), ("S", "250 2.0.0 queued as A"),
    ]
    assert conn.transcript == [
        ("C", "MAIL FROM:<alice@crepes.fr> SIZE=1234"), ("C", "RCPT TO:<carol@hamburger.edu>"), ("C", "DATA"),
        ("S", "250 2.1.0 Ok"), ("S", "250 2.1.5 Ok"), ("S", "354 Go"),
        ("C", "<message content: 5 bytes>"), ("C", "."), ("S", "250 2.0.0 queued as B"),
    ]


def test_next_transaction_behind_the_dot_when_the_first_fails() -> None:
    conn = connect()
    conn.send_envelope(env("bob@hamburger.edu"))
    conn.data_to_send()
    feed(conn, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n")
    conn.send_content(b"one\r\n", final=True)
    conn.send_envelope(env("carol@hamburger.edu"))
    conn.data_to_send()
    # A refused message does not disturb the next transaction (no RSET after a dot).
    events = feed(conn, b"554 5.7.1 no thanks\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n")
    assert kinds(events) == ["MessageResult", "RecipientResult", "ReadyForContent"]
    assert isinstance(events[0], MessageResult) and events[0].reply.code == 554
    assert conn.data_to_send() == b""
    # A 421 instead fails the session, and with it the transaction behind.
    conn.send_content(b"two\r\n", final=True)
    conn.send_envelope(env("dave@hamburger.edu"))
    conn.data_to_send()
    events = feed(conn, b"421 4.3.0 going down\r\n")
    assert kinds(events) == ["ConnectionFailed"]


def test_next_transaction_refused_locally_behind_the_dot() -> None:
    """A next envelope this server cannot take (SMTPUTF8 not offered) is refused
    without a byte sent; the first message's reply still reaches it in order."""
    conn = connect(EHLO_FULL.replace(b"250-SMTPUTF8\r\n", b""))
    conn.send_envelope(env("bob@hamburger.edu"))
    conn.data_to_send()
    feed(conn, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n")
    conn.send_content(b"one\r\n", final=True)
    conn.send_envelope(env("j\u00f6rg@hamburger.edu"))
    assert kinds(drain(conn)) == ["TransactionFailed", "Ready"]
    assert conn.data_to_send() == b"one\r\n.\r\n"
    events = feed(conn, b"250 2.0.0 queued as A\r\n")
    assert kinds(events)[0] == "MessageResult"
    # The connection is usable again, and the next transaction goes as usual.
    conn.send_envelope(env("carol@hamburger.edu"))
    assert conn.data_to_send().startswith(b"MAIL FROM:<alice@crepes.fr>")


def test_no_next_transaction_behind_the_dot_without_pipelining_or_after_bdat() -> None:
    conn = connect(EHLO_PLAIN)
    conn.send_envelope(env("bob@hamburger.edu"))
    conn.data_to_send()
    feed(conn, b"250 Ok\r\n")
    conn.data_to_send()
    feed(conn, b"250 Ok\r\n")
    conn.data_to_send()
    feed(conn, b"354 Go\r\n")
    conn.send_content(b"one\r\n", final=True)
    assert not conn.can_start_next()
    with pytest.raises(StateError):
        conn.send_envelope(env("carol@hamburger.edu"))
    conn = connect(EHLO_FULL.replace(b"250 DSN", b"250-DSN\r\n250 CHUNKING"))
    conn.send_envelope(env("bob@hamburger.edu"))
    conn.data_to_send()
    feed(conn, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n")
    conn.send_content(b"one\r\n", final=True)
    assert not conn.can_start_next()


def test_without_pipelining_one_command_at_a_time() -> None:
    conn = connect(b"250-hamburger.edu\r\n250 SIZE\r\n")
    conn.send_envelope(env("bob@hamburger.edu", "carol@hamburger.edu", sender=""))
    # SIZE without a value: no limit, but the parameter is still welcome.
    assert conn.data_to_send() == b"MAIL FROM:<> SIZE=1234\r\n"
    assert feed(conn, b"250 ok\r\n") == []
    assert conn.data_to_send() == b"RCPT TO:<bob@hamburger.edu>\r\n"
    assert kinds(feed(conn, b"550 5.1.1 no such user\r\n")) == ["RecipientResult"]
    assert conn.data_to_send() == b"RCPT TO:<carol@hamburger.edu>\r\n"
    assert kinds(feed(conn, b"250 ok\r\n")) == ["RecipientResult"]
    assert conn.data_to_send() == b"DATA\r\n"
    assert kinds(feed(conn, b"354 go\r\n")) == ["ReadyForContent"]


def test_mixed_recipient_results() -> None:
    conn = connect()
    conn.send_envelope(env("a@hamburger.edu", "b@hamburger.edu", "c@hamburger.edu"))
    conn.data_to_send()
    events = feed(
        conn,
        b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user here\r\n"
        b"452 4.2.2 mailbox full\r\n354 go\r\n",
    )
    results = [e for e in events if isinstance(e, RecipientResult)]
    assert [(r.address, r.reply.code, r.reply.enhanced, r.accepted) for r in results] == [
        ("a@hamburger.edu", 250, "2.1.5", True),
        ("b@hamburger.edu", 550, "5.1.1", False),
        ("c@hamburger.edu", 452, "4.2.2", False),
    ]
    assert results[1].reply.lines == ["no such", "user here"]
    assert isinstance(events[-1], ReadyForContent)
    conn.send_content(b"x\r\n", final=True)
    assert kinds(feed(conn, b"250 ok\r\n")) == ["MessageResult", "Ready"]


def test_zero_accepted_recipients_with_pipelining() -> None:
    conn = connect()
    conn.send_envelope(env("a@hamburger.edu", "b@hamburger.edu"))
    conn.data_to_send()
    events = feed(
        conn, b"250 ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n"
    )
    assert kinds(events) == ["RecipientResult", "RecipientResult", "TransactionFailed"]
    failed = events[-1]
    assert isinstance(failed, TransactionFailed)
    assert failed.reason == "no_valid_recipients" and not failed.local
    # No content: the open MAIL transaction is cleared instead.
    assert conn.data_to_send() == b"RSET\r\n"
    with pytest.raises(StateError):
        conn.send_envelope(env())
    assert kinds(feed(conn, b"250 ok\r\n")) == ["Ready"]


def test_zero_accepted_but_data_says_354() -> None:
    conn = connect()
    conn.send_envelope(env())
    conn.data_to_send()
    events = feed(conn, b"250 ok\r\n550 5.1.1 no\r\n354 go ahead anyway\r\n")
    assert kinds(events) == ["RecipientResult", "TransactionFailed"]
    # RFC 2920: end the (empty) message at once, then clear the transaction.
    assert conn.data_to_send() == b".\r\n"
    assert feed(conn, b"554 5.5.1 no recipients\r\n") == []
    assert conn.data_to_send() == b"RSET\r\n"
    assert kinds(feed(conn, b"250 ok\r\n")) == ["Ready"]


def test_mail_rejected_pipelined() -> None:
    conn = connect()
    conn.send_envelope(env("a@hamburger.edu", "b@hamburger.edu"))
    conn.data_to_send()
    events = feed(
        conn,
        b"550 5.7.1 sender blocked\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n"
        b"503 5.5.1 need MAIL\r\n",
    )
    assert kinds(events) == ["MailRejected", "TransactionFailed", "Ready"]
    assert isinstance(events[0], MailRejected) and events[0].reply.enhanced == "5.7.1"
    assert isinstance(events[1], TransactionFailed) and events[1].reason == "mail_rejected"
    assert events[1].reply.code == 550
    assert conn.data_to_send() == b""  # no transaction at the server: no RSET


def test_data_refused_after_accepted_recipient() -> None:
    conn = connect()
    conn.send_envelope(env())
    conn.data_to_send()
    events = feed(conn, b"250 ok\r\n250 ok\r\n451 4.3.0 try later\r\n")
    assert kinds(events) == ["RecipientResult", "TransactionFailed"]
    assert isinstance(events[1], TransactionFailed) and events[1].reason == "data_refused"
    assert conn.data_to_send() == b"RSET\r\n"


def test_message_refused_at_end_of_data() -> None:
    conn = connect()
    conn.send_envelope(env())
    conn.data_to_send()
    feed(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    conn.send_content(b"spam\r\n", final=True)
    assert conn.data_to_send() == b"spam\r\n.\r\n"
    result, ready = feed(conn, b"550 5.7.1 spam\r\n")
    assert isinstance(result, MessageResult) and result.reply.code == 550
    assert isinstance(ready, Ready)
    assert conn.data_to_send() == b""  # the end of DATA closed the transaction: no RSET


def test_dsn_parameters_xtext_encoded() -> None:
    conn = connect()
    envelope = Envelope(
        sender="alice@crepes.fr",
        recipients=[
            RecipientSpec(
                "bob@hamburger.edu", notify="success,failure", orcpt="bob+tag=1@hamburger.edu"
            ),
            RecipientSpec(
                "carol@hamburger.edu", notify="NEVER", orcpt="rfc822;Carol@Hamburger.edu"
            ),
            RecipientSpec("dave@hamburger.edu", orcpt="utf-8;dävé@hamburger.edu"),
        ],
        size=10,
        body_8bit=False,
        smtputf8=False,
        ret="hdrs",
        envid="Q1 id=+x",
    )
    conn.send_envelope(envelope)
    assert conn.data_to_send() == (
        b"MAIL FROM:<alice@crepes.fr> SIZE=10 RET=HDRS ENVID=Q1+20id+3D+2Bx\r\n"
        b"RCPT TO:<bob@hamburger.edu> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Btag+3D1@hamburger.edu\r\n"
        b"RCPT TO:<carol@hamburger.edu> NOTIFY=NEVER ORCPT=rfc822;Carol@Hamburger.edu\r\n"
        b"RCPT TO:<dave@hamburger.edu> ORCPT=utf-8;d\\x{E4}v\\x{E9}@hamburger.edu\r\n"
        b"DATA\r\n"
    )


def test_dsn_parameters_omitted_when_not_offered() -> None:
    conn = connect(b"250-hamburger.edu\r\n250 PIPELINING\r\n")
    conn.send_envelope(
        Envelope(
            "alice@crepes.fr",
            [RecipientSpec("bob@hamburger.edu", notify="SUCCESS", orcpt="bob@hamburger.edu")],
            10,
            False,
            False,
            ret="FULL",
            envid="x",
        )
    )
    assert (
        conn.data_to_send()
        == b"MAIL FROM:<alice@crepes.fr>\r\nRCPT TO:<bob@hamburger.edu>\r\nDATA\r\n"
    )


def test_bad_dsn_values_raise() -> None:
    conn = connect()
    with pytest.raises(ValueError):
        conn.send_envelope(
            Envelope("a@crepes.fr", [RecipientSpec("b@x.org", notify="SOMETIMES")], 1, False, False)
        )
    with pytest.raises(ValueError):
        conn.send_envelope(env(ret="PARTIAL"))


def test_size_refused_locally() -> None:
    conn = connect()
    failed, ready = drain_after(conn, lambda: conn.send_envelope(env(size=2_000_000)))
    assert isinstance(failed, TransactionFailed)
    assert failed.local and failed.reason == "size_exceeded"
    assert (failed.reply.code, failed.reply.enhanced) == (552, "5.3.4")
    assert isinstance(ready, Ready)
    assert conn.data_to_send() == b""
    # The session is still good for the next message.
    conn.send_envelope(env(size=999_999))
    assert conn.data_to_send().startswith(b"MAIL FROM:<alice@crepes.fr> SIZE=999999\r\n")


def drain_after(conn: ClientConnection, action: object) -> list[Event]:
    assert callable(action)
    action()
    return drain(conn)


def test_8bitmime_and_smtputf8_params() -> None:
    conn = connect()
    conn.send_envelope(env("bøb@hamburger.edu", body_8bit=True, smtputf8=True))
    assert (
        conn.data_to_send()
        == (
            "MAIL FROM:<alice@crepes.fr> SIZE=1234 BODY=8BITMIME SMTPUTF8\r\n"
            "RCPT TO:<bøb@hamburger.edu>\r\n"
            "DATA\r\n"
        ).encode()
    )


def test_non_ascii_address_implies_smtputf8() -> None:
    conn = connect()
    conn.send_envelope(env("bøb@hamburger.edu"))
    assert conn.data_to_send().startswith(b"MAIL FROM:<alice@crepes.fr> SIZE=1234 SMTPUTF8\r\n")


@pytest.mark.parametrize(
    ("kwargs", "reason", "code"),
    [
        ({"smtputf8": True}, "smtputf8_unsupported", (553, "5.6.7")),
        ({"body_8bit": True}, "8bitmime_unsupported", (554, "5.6.3")),
    ],
)
def test_missing_extension_refused_locally(
    kwargs: dict[str, bool], reason: str, code: tuple[int, str]
) -> None:
    conn = connect(b"250-hamburger.edu\r\n250 PIPELINING\r\n")
    failed, ready = drain_after(conn, lambda: conn.send_envelope(env(**kwargs)))
    assert isinstance(failed, TransactionFailed) and failed.local
    assert failed.reason == reason
    assert (failed.reply.code, failed.reply.enhanced) == code
    assert isinstance(ready, Ready)
    assert conn.data_to_send() == b""


def test_invalid_addresses_refused_locally() -> None:
    conn = connect()
    events = drain_after(
        conn,
        lambda: conn.send_envelope(env("bob@hamburger.edu>\r\nRSET", "carol@hamburger.edu")),
    )
    assert kinds(events) == ["RecipientResult"]
    assert isinstance(events[0], RecipientResult) and events[0].reply.code == 553
    assert conn.data_to_send() == (
        b"MAIL FROM:<alice@crepes.fr> SIZE=1234\r\nRCPT TO:<carol@hamburger.edu>\r\nDATA\r\n"
    )


def test_invalid_sender_refused_locally() -> None:
    conn = connect()
    failed, _ready = drain_after(conn, lambda: conn.send_envelope(env(sender="alice@@crepes.fr")))
    assert isinstance(failed, TransactionFailed) and failed.reason == "bad_sender" and failed.local
    assert conn.data_to_send() == b""


# --------------------------------------------------------------------------
# Content: DATA and BDAT
# --------------------------------------------------------------------------


def _ready_for_content(ehlo: bytes = EHLO_FULL, **kwargs: bool) -> ClientConnection:
    conn = connect(ehlo, **kwargs)
    conn.send_envelope(env())
    sent = conn.data_to_send()
    replies = b"250 ok\r\n250 ok\r\n" + (b"354 go\r\n" if sent.endswith(b"DATA\r\n") else b"")
    assert kinds(feed(conn, replies)) == ["RecipientResult", "ReadyForContent"]
    return conn


def test_dot_stuffing_across_chunk_boundaries() -> None:
    conn = _ready_for_content()
    out = b""
    chunks = (b".first\r\n", b"line\r", b"\n.", b"second\r\n..", b"third\r\nno final newline")
    for chunk in chunks:
        conn.send_content(chunk)
        out += conn.data_to_send()
    conn.send_content(b"", final=True)
    out += conn.data_to_send()
    assert out == b"..first\r\nline\r\n..second\r\n...third\r\nno final newline\r\n.\r\n"
    assert ("C", f"<message content: {sum(map(len, chunks))} bytes>") in conn.transcript


def test_empty_message_and_lone_dot() -> None:
    conn = _ready_for_content()
    conn.send_content(b".\r\n", final=True)
    assert conn.data_to_send() == b"..\r\n.\r\n"


def test_bdat_chunking() -> None:
    ehlo = EHLO_FULL.replace(b"250 DSN", b"250-DSN\r\n250 CHUNKING")
    conn = connect(ehlo)
    conn.send_envelope(env())
    # No DATA: content waits for the RCPT verdicts.
    assert (
        conn.data_to_send()
        == b"MAIL FROM:<alice@crepes.fr> SIZE=1234\r\nRCPT TO:<bob@hamburger.edu>\r\n"
    )
    assert kinds(feed(conn, b"250 ok\r\n250 ok\r\n")) == ["RecipientResult", "ReadyForContent"]
    conn.send_content(b"Subject: x\r\n\r\n")
    conn.send_content(b".no stuffing\r\n")
    conn.send_content(b"")  # nothing to frame
    conn.send_content(b"", final=True)
    assert conn.data_to_send() == (
        b"BDAT 14\r\nSubject: x\r\n\r\nBDAT 14\r\n.no stuffing\r\nBDAT 0 LAST\r\n"
    )
    assert feed(conn, b"250 2.0.0 14 octets\r\n250 2.0.0 14 octets\r\n") == []
    result, ready = feed(conn, b"250 2.0.0 queued\r\n")
    assert isinstance(result, MessageResult) and isinstance(ready, Ready)
    assert ("C", "BDAT 0 LAST") in conn.transcript
    assert ("C", "<message content: 14 bytes>") in conn.transcript


def test_bdat_last_adds_missing_crlf() -> None:
    conn = _ready_for_content(EHLO_FULL.replace(b"250 DSN", b"250 CHUNKING"))
    conn.send_content(b"abc\r", final=True)
    assert conn.data_to_send() == b"BDAT 5 LAST\r\nabc\r\n"
    conn2 = _ready_for_content(EHLO_FULL.replace(b"250 DSN", b"250 CHUNKING"))
    conn2.send_content(b"abc", final=True)
    assert conn2.data_to_send() == b"BDAT 5 LAST\r\nabc\r\n"


def test_bdat_not_used_without_pipelining() -> None:
    conn = connect(b"250-hamburger.edu\r\n250 CHUNKING\r\n")
    conn.send_envelope(env())
    conn.data_to_send()
    feed(conn, b"250 ok\r\n")
    conn.data_to_send()
    feed(conn, b"250 ok\r\n")
    assert conn.data_to_send() == b"DATA\r\n"


def test_bdat_chunk_refused_mid_message() -> None:
    conn = _ready_for_content(EHLO_FULL.replace(b"250 DSN", b"250 CHUNKING"))
    conn.send_content(b"a" * 10 + b"\r\n")
    conn.send_content(b"b" * 10 + b"\r\n")
    conn.data_to_send()
    events = feed(conn, b"552 5.3.4 too big\r\n")
    assert kinds(events) == ["TransactionFailed"]
    assert isinstance(events[0], TransactionFailed) and events[0].reason == "content_refused"
    # Further chunks are dropped; RSET waits for the chunk still in flight.
    conn.send_content(b"c" * 10, final=True)
    assert conn.data_to_send() == b""
    assert feed(conn, b"552 5.3.4 too big\r\n") == []
    assert conn.data_to_send() == b"RSET\r\n"
    assert kinds(feed(conn, b"250 ok\r\n")) == ["Ready"]


# --------------------------------------------------------------------------
# Several messages, broken servers
# --------------------------------------------------------------------------


def test_two_messages_on_one_connection() -> None:
    conn = connect()
    for n in (1, 2):
        conn.send_envelope(env(f"user{n}@hamburger.edu"))
        assert conn.data_to_send() == (
            f"MAIL FROM:<alice@crepes.fr> SIZE=1234\r\nRCPT TO:<user{n}@hamburger.edu>\r\nDATA\r\n".encode()
        )
        feed(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
        conn.send_content(f"message {n}\r\n".encode(), final=True)
        assert conn.data_to_send() == f"message {n}\r\n.\r\n".encode()
        events = feed(conn, f"250 2.0.0 queued as Q{n}\r\n".encode())
        assert kinds(events) == ["MessageResult", "Ready"]
    conn.quit()
    assert conn.data_to_send() == b"QUIT\r\n"
    # A server that just hangs up after QUIT is fine too.
    assert kinds(feed(conn, b"")) == ["Closed"]


def test_acting_before_pulling_ready_drops_the_stale_ready() -> None:
    conn = connect()
    conn.send_envelope(env())
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    drain(conn)
    conn.send_content(b"x\r\n", final=True)
    conn.receive_data(b"250 ok\r\n")
    assert isinstance(conn.next_event(), MessageResult)
    assert conn.ready
    conn.send_envelope(env())  # the Ready still queued is now stale
    assert conn.next_event() is NEED_DATA


def test_421_mid_session() -> None:
    conn = connect()
    conn.send_envelope(env("a@hamburger.edu", "b@hamburger.edu"))
    conn.data_to_send()
    events = feed(conn, b"250 ok\r\n250 ok\r\n421 4.3.2 shutting down\r\n")
    assert kinds(events) == ["RecipientResult", "ConnectionFailed"]
    failed = events[-1]
    assert isinstance(failed, ConnectionFailed) and failed.reply is not None
    assert failed.reply.code == 421
    assert conn.next_event() == failed
    conn.send_content(b"ignored")
    assert conn.data_to_send() == b""


def test_421_while_idle() -> None:
    conn = connect()
    (failed,) = feed(conn, b"421 4.4.2 idle timeout\r\n")
    assert isinstance(failed, ConnectionFailed) and failed.reason == "server closing the connection"


def test_unexpected_reply_while_idle() -> None:
    conn = connect()
    (failed,) = feed(conn, b"250 surprise\r\n")
    assert isinstance(failed, ConnectionFailed) and "unexpected" in failed.reason


def test_garbage_reply() -> None:
    conn = ClientConnection("crepes.fr")
    (failed,) = feed(conn, b"HTTP/1.1 400 Bad Request\r\n")
    assert isinstance(failed, ConnectionFailed) and failed.reason.startswith("protocol error")
    assert failed.reply is None


def test_replies_before_garbage_are_honoured() -> None:
    conn = _ready_for_content()
    conn.send_content(b"x\r\n", final=True)
    # The message was accepted: that must not be lost (or it would be sent
    # twice) because garbage follows in the same read.
    events = feed(conn, b"250 2.0.0 queued\r\nxyz\r\n")
    assert kinds(events) == ["MessageResult", "Ready", "ConnectionFailed"]


def test_over_long_reply_line() -> None:
    conn = connect()
    conn.send_envelope(env())
    (failed,) = feed(conn, b"250-" + b"x" * 10_000)
    assert isinstance(failed, ConnectionFailed) and "too long" in failed.reason


def test_eof_mid_reply() -> None:
    conn = ClientConnection("crepes.fr")
    feed(conn, GREETING)
    assert feed(conn, b"250-hamburger.edu\r\n250-PIPEL") == []
    (failed,) = feed(conn, b"")
    assert isinstance(failed, ConnectionFailed) and "middle of a reply" in failed.reason


def test_eof_while_waiting() -> None:
    conn = connect()
    conn.send_envelope(env())
    (failed,) = feed(conn, b"")
    assert (
        isinstance(failed, ConnectionFailed) and failed.reason == "connection closed by the server"
    )


# --------------------------------------------------------------------------
# API guards, timeouts, transcript bounds
# --------------------------------------------------------------------------


def test_actions_out_of_state_raise() -> None:
    conn = ClientConnection("crepes.fr")
    with pytest.raises(StateError):
        conn.send_envelope(env())
    with pytest.raises(StateError):
        conn.send_content(b"x")
    with pytest.raises(StateError):
        conn.tls_established()
    with pytest.raises(ValueError):
        ClientConnection("crepes fr")
    ready = connect()
    with pytest.raises(ValueError):
        ready.send_envelope(Envelope("a@crepes.fr", [], 1, False, False))


def test_reply_timeouts() -> None:
    conn = ClientConnection("crepes.fr", want_tls=False)
    assert conn.reply_timeout == 300.0
    feed(conn, GREETING)
    feed(conn, EHLO_FULL)
    assert conn.reply_timeout is None
    conn.send_envelope(env())
    assert conn.reply_timeout == 300.0  # MAIL
    feed(conn, b"250 ok\r\n250 ok\r\n")
    assert conn.reply_timeout == 120.0  # DATA initiation
    feed(conn, b"354 go\r\n")
    assert conn.reply_timeout == 180.0  # data block
    conn.send_content(b"x\r\n", final=True)
    assert conn.reply_timeout == 600.0  # DATA termination


def test_reset_and_noop() -> None:
    conn = connect()
    conn.reset()
    assert conn.data_to_send() == b"RSET\r\n"
    assert kinds(feed(conn, b"250 ok\r\n")) == ["Ready"]
    conn.noop()
    assert conn.data_to_send() == b"NOOP\r\n"
    assert kinds(feed(conn, b"250 ok\r\n")) == ["Ready"]


def test_transcript_is_bounded_and_sanitized() -> None:
    conn = connect()
    for _ in range(400):
        conn.noop()
        feed(conn, b"250 " + b"y" * 2000 + b"\x1b[31m\r\n")
    lines = conn.transcript
    assert len(lines) < 200
    assert sum(len(line) for _, line in lines) < 64 * 1024
    assert lines[0] == ("S", "220 hamburger.edu ESMTP")
    assert any(d == "!" and "omitted" in line for d, line in lines)
    assert lines[-1][0] == "S" and lines[-1][1].endswith("more chars]")
    assert not any("\x1b" in line for _, line in lines)


def test_restart_transcript_gives_each_transaction_its_own_record() -> None:
    # A reused connection's journey shows only its own transaction, even after the
    # bounded transcript's head filled up with earlier ones.
    conn = connect()
    for n in range(100):
        conn.restart_transcript()
        conn.send_envelope(env(f"user{n}@hamburger.edu"))
        conn.data_to_send()
        feed(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
        conn.send_content(b"hello\r\n", final=True)
        conn.data_to_send()
        assert kinds(feed(conn, b"250 2.0.0 queued\r\n")) == ["MessageResult", "Ready"]
        lines = conn.transcript
        assert lines[0] == ("C", "MAIL FROM:<alice@crepes.fr> SIZE=1234")
        assert ("C", f"RCPT TO:<user{n}@hamburger.edu>") in lines
        assert lines[-1] == ("S", "250 2.0.0 queued")
        assert len(lines) == 9


def test_transcript_sanitizes_every_control_character() -> None:
    conn = connect()
    conn.noop()
    feed(conn, b"250 a\x00b\x7fc\x1bd\x85e \xc3\xa9\r\n")
    direction, line = conn.transcript[-1]
    assert direction == "S"
    assert not any(ch in line for ch in "\x00\x7f\x1b")


# --------------------------------------------------------------------------
# End to end against the server machine, entirely in memory
# --------------------------------------------------------------------------


def _deliver_in_memory(
    messages: list[tuple[Envelope, list[bytes]]], *, chunking: bool
) -> tuple[list[tuple[str, list[str], bytes]], list[Event], list[tuple[str, str]], bytes]:
    server = sm.ServerConnection(sm.ServerConfig(hostname="hamburger.edu", tls_available=False))
    server.greet()
    client = ClientConnection("crepes.fr", want_tls=False, chunking=chunking)
    todo = list(messages)
    chunks: list[bytes] = []
    stored: list[tuple[str, list[str], bytes]] = []
    sender = ""
    rcpts: list[str] = []
    body = bytearray()
    events: list[Event] = []
    wire = bytearray()  # every byte the client sent

    for _ in range(1000):
        client.receive_data(server.data_to_send())
        while True:
            ev = client.next_event()
            if ev is NEED_DATA:
                break
            assert isinstance(ev, Event)
            events.append(ev)
            if isinstance(ev, Ready):
                if todo:
                    envelope, chunks = todo.pop(0)
                    client.send_envelope(envelope)
                else:
                    client.quit()
            elif isinstance(ev, ReadyForContent):
                for i, chunk in enumerate(chunks):
                    client.send_content(chunk, final=i == len(chunks) - 1)
            elif isinstance(ev, (Closed, ConnectionFailed)):
                return stored, events, client.transcript, bytes(wire)
        out = client.data_to_send()
        wire += out
        server.receive_data(out)
        while True:
            sev = server.next_event()
            if sev is sm.NEED_DATA or sev is sm.PAUSED:
                break
            if isinstance(sev, sm.MailFrom):
                sender, rcpts = sev.address, []
                server.accept()
            elif isinstance(sev, sm.RcptTo):
                rcpts.append(sev.address)
                server.accept()
            elif isinstance(sev, sm.DataChunk):
                body += sev.data
            elif isinstance(sev, sm.DataComplete):
                stored.append((sender, rcpts, bytes(body)))
                body.clear()
                server.message_accepted(f"Q{len(stored)}")
            elif isinstance(sev, (sm.Quit, sm.ConnectionClosed)):
                break
    raise AssertionError("dialogue did not finish")


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
def test_end_to_end_with_server_machine(chunking: bool) -> None:
    message = b"From: alice@crepes.fr\r\nSubject: crepes\r\n\r\n.leading dot\r\nBonjour Bob\r\n"
    split = [message[:45], message[45:47], message[47:]]  # the dot line straddles chunks
    utf8_message = "Subject: café\r\n\r\nÇa va ?\r\n".encode()
    messages = [
        (
            Envelope(
                "alice@crepes.fr",
                [
                    RecipientSpec(
                        "bob@hamburger.edu", notify="SUCCESS,FAILURE", orcpt="bob@hamburger.edu"
                    ),
                    RecipientSpec("carol@hamburger.edu"),
                ],
                len(message),
                False,
                False,
                ret="HDRS",
                envid="Q-42",
            ),
            split,
        ),
        (
            Envelope("", [RecipientSpec("dåve@hamburger.edu")], len(utf8_message), True, True),
            [utf8_message],
        ),
    ]
    stored, events, transcript, wire = _deliver_in_memory(messages, chunking=chunking)
    assert stored == [
        ("alice@crepes.fr", ["bob@hamburger.edu", "carol@hamburger.edu"], message),
        ("", ["dåve@hamburger.edu"], utf8_message),
    ]
    results = [e for e in events if isinstance(e, MessageResult)]
    assert [r.reply.code for r in results] == [250, 250]
    assert results[1].reply.lines == ["Message accepted for delivery: queued as Q2"]
    assert isinstance(events[-1], Closed)
    assert (b"BDAT" in wire) is chunking
    assert (b"\r\nDATA\r\n" in wire) is not chunking
    assert ("C", "QUIT") in transcript
