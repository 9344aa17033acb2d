"""Transcript tests for the sans-I/O SMTP server (mailhouse.smtp.server)."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailhouse.smtp.grammar import dot_stuff, normalize_line_endings
from mailhouse.smtp.server import (
    NEED_DATA,
    PAUSED,
    AuthAttempt,
    ConnectionClosed,
    DataAborted,
    DataChunk,
    DataComplete,
    DataStart,
    Event,
    Hello,
    MailFrom,
    Quit,
    RcptTo,
    Reset,
    ServerConfig,
    ServerConnection,
    StartTLS,
    StateError,
)

HOST = "hamburger.edu"


@dataclass
class Driver:
    """Drives a ServerConnection and takes the application's decisions.

    Auto-decisions: every MAIL/RCPT accepted unless the address contains
    "reject"; AUTH succeeds for password "secret"; messages get queue id "ID";
    STARTTLS is completed at once. DataChunk events are folded into
    ``messages`` (the content of each completed message) and ``aborted``.
    """

    config: ServerConfig = field(default_factory=lambda: ServerConfig(HOST))
    tls: bool = False
    auto_tls: bool = True
    conn: ServerConnection = field(init=False)
    events: list[Event] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    chunk_sizes: list[int] = field(default_factory=list)
    _current: bytearray | None = None

    def __post_init__(self) -> None:
        self.conn = ServerConnection(self.config, tls_active=self.tls)

    def greet(self) -> bytes:
        self.conn.greet()
        return self.conn.data_to_send()

    def feed(self, data: bytes) -> bytes:
        self.conn.receive_data(data)
        self.pump()
        return self.conn.data_to_send()

    def pump(self) -> None:
        conn = self.conn
        while True:
            ev = conn.next_event()
            if ev is NEED_DATA or ev is PAUSED:
                return
            assert isinstance(ev, Event)
            if isinstance(ev, DataChunk):
                assert self._current is not None
                self._current += ev.data
                self.chunk_sizes.append(len(ev.data))
                continue
            self.events.append(ev)
            if isinstance(ev, ConnectionClosed):
                return
            if isinstance(ev, MailFrom | RcptTo):
                if "reject" in ev.address:
                    conn.reject(550, "5.7.1", "Rejected by policy")
                else:
                    conn.accept()
            elif isinstance(ev, AuthAttempt):
                if ev.password == "secret":
                    conn.auth_succeeded()
                else:
                    conn.auth_failed(temporary=ev.password == "later")
            elif isinstance(ev, DataStart):
                assert self._current is None
                self._current = bytearray()
            elif isinstance(ev, DataComplete):
                assert self._current is not None
                self.messages.append(bytes(self._current))
                self._current = None
                conn.message_accepted("ID")
            elif isinstance(ev, DataAborted):
                self.aborted.append(ev.reason)
                self._current = None
            elif isinstance(ev, StartTLS) and self.auto_tls:
                conn.tls_started()

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


def session(data: bytes, **kwargs: object) -> tuple[Driver, bytes]:
    d = Driver(**kwargs)  # type: ignore[arg-type]
    out = d.greet() + d.feed(data)
    return d, out


def codes(out: bytes) -> list[str]:
    """The final line of each reply, e.g. '250 2.1.0'."""
    result = []
    for line in out.decode("utf-8").split("\r\n"):
        if len(line) >= 4 and line[3] == " ":
            result.append(line[:3] + (" " + line[4:9] if line[4:5].isdigit() else ""))
        elif len(line) == 3:
            result.append(line)
    return result


EHLO_TX = b"EHLO crepes.fr\r\nMAIL FROM:<a@crepes.fr>\r\nRCPT TO:<b@hamburger.edu>\r\n"


# ---------------------------------------------------------------- textbook


def test_textbook_dialogue_byte_exact() -> None:
    d = Driver()
    transcript = [
        (None, b"220 hamburger.edu ESMTP mailhouse\r\n"),
        (b"HELO crepes.fr\r\n", b"250 hamburger.edu Hello crepes.fr, pleased to meet you\r\n"),
        (b"MAIL FROM: <alice@crepes.fr>\r\n", b"250 2.1.0 alice@crepes.fr ... Sender ok\r\n"),
        (b"RCPT TO: <bob@hamburger.edu>\r\n", b"250 2.1.5 bob@hamburger.edu ... Recipient ok\r\n"),
        (b"DATA\r\n", b'354 Enter mail, end with "." on a line by itself\r\n'),
        (b"Do you like ketchup?\r\n", b""),
        (b"How about pickles?\r\n", b""),
        (b".\r\n", b"250 2.0.0 Message accepted for delivery: queued as ID\r\n"),
        (b"QUIT\r\n", b"221 2.0.0 hamburger.edu closing connection\r\n"),
    ]
    for client, server in transcript:
        got = d.greet() if client is None else d.feed(client)
        assert got == server, client
    assert d.messages == [b"Do you like ketchup?\r\nHow about pickles?\r\n"]
    assert d.events[0] == Hello("crepes.fr", extended=False)
    assert d.events[1] == MailFrom("alice@crepes.fr", {})
    assert d.events[2] == RcptTo("bob@hamburger.edu", {})
    assert d.kinds()[3:] == ["DataStart", "DataComplete", "Quit", "ConnectionClosed"]
    assert d.conn.closed


def test_textbook_dialogue_pipelined_in_one_read() -> None:
    d, out = session(
        b"HELO crepes.fr\r\nMAIL FROM: <alice@crepes.fr>\r\nRCPT TO: <bob@hamburger.edu>\r\n"
        b"DATA\r\nDo you like ketchup?\r\nHow about pickles?\r\n.\r\nQUIT\r\n"
    )
    assert out == (
        b"220 hamburger.edu ESMTP mailhouse\r\n"
        b"250 hamburger.edu Hello crepes.fr, pleased to meet you\r\n"
        b"250 2.1.0 alice@crepes.fr ... Sender ok\r\n"
        b"250 2.1.5 bob@hamburger.edu ... Recipient ok\r\n"
        b'354 Enter mail, end with "." on a line by itself\r\n'
        b"250 2.0.0 Message accepted for delivery: queued as ID\r\n"
        b"221 2.0.0 hamburger.edu closing connection\r\n"
    )
    assert d.messages == [b"Do you like ketchup?\r\nHow about pickles?\r\n"]


# ---------------------------------------------------------------- EHLO


def test_ehlo_without_tls() -> None:
    _, out = session(b"EHLO crepes.fr\r\n")
    assert out.split(b"\r\n", 1)[1] == (
        b"250-hamburger.edu Hello crepes.fr, pleased to meet you\r\n"
        b"250-PIPELINING\r\n"
        b"250-SIZE 26214400\r\n"
        b"250-8BITMIME\r\n"
        b"250-SMTPUTF8\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n"
        b"250-CHUNKING\r\n"
        b"250-DSN\r\n"
        b"250 STARTTLS\r\n"
    )


def test_ehlo_variants() -> None:
    _, out = session(b"EHLO x\r\n", tls=True)
    assert b"STARTTLS" not in out and out.endswith(b"250 AUTH PLAIN LOGIN\r\n")
    cfg = ServerConfig(HOST, tls_available=False, auth_without_tls=True, max_message_size=1000)
    _, out = session(b"EHLO x\r\n", config=cfg)
    assert b"STARTTLS" not in out and b"250-SIZE 1000\r\n" in out
    assert out.endswith(b"250 AUTH PLAIN LOGIN\r\n")


def test_helo_ehlo_syntax() -> None:
    _, out = session(b"HELO\r\nEHLO\r\nEHLO a b\r\n")
    assert codes(out)[1:] == ["501 5.5.4"] * 3


def test_new_ehlo_resets_transaction() -> None:
    d, out = session(EHLO_TX + b"EHLO again\r\nRCPT TO:<c@d>\r\n")
    assert codes(out)[-1] == "503 5.5.1"
    assert d.kinds() == ["Hello", "MailFrom", "RcptTo", "Reset", "Hello"]


# ---------------------------------------------------------------- sequence


def test_commands_before_helo() -> None:
    _, out = session(
        b"MAIL FROM:<a@b>\r\nRCPT TO:<a@b>\r\nDATA\r\nNOOP\r\nRSET\r\nVRFY bob\r\nHELP\r\n"
    )
    assert codes(out)[1:] == [
        "503 5.5.1",
        "503 5.5.1",
        "503 5.5.1",
        "250 2.0.0",
        "250 2.0.0",
        "252 2.5.0",
        "214 2.0.0",
    ]
    assert b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n" in out


def test_unknown_and_malformed_commands() -> None:
    _, out = session(b"EHLO x\r\nFOO bar\r\n\r\nHE\x00LO\r\n\xff\xfe\xfd\r\nEXPN list\r\nVRFY\r\n")
    assert codes(out)[2:] == [
        "500 5.5.2",
        "500 5.5.2",
        "500 5.5.2",
        "500 5.5.2",
        "502 5.5.1",
        "501 5.5.4",
    ]


def test_nul_bytes_then_session_goes_on() -> None:
    d, out = session(b"\x00\x00\x00\r\nEHLO x\r\n" + EHLO_TX[len(b"EHLO crepes.fr\r\n") :])
    assert codes(out)[1:] == ["500 5.5.2", "250", "250 2.1.0", "250 2.1.5"]
    assert d.kinds() == ["Hello", "MailFrom", "RcptTo"]


def test_nested_mail_and_rset() -> None:
    d, out = session(EHLO_TX + b"MAIL FROM:<x@y>\r\nRSET\r\nRSET\r\nMAIL FROM:<x@y>\r\n")
    assert codes(out)[-4:] == ["503 5.5.1", "250 2.0.0", "250 2.0.0", "250 2.1.0"]
    # Reset only when a transaction was actually open.
    assert d.kinds() == ["Hello", "MailFrom", "RcptTo", "Reset", "MailFrom"]


def test_arguments_where_none_allowed() -> None:
    _, out = session(b"EHLO x\r\nRSET now\r\nQUIT now\r\nDATA x\r\nSTARTTLS x\r\n")
    assert codes(out)[2:] == ["501 5.5.4"] * 4


def test_lenient_bare_lf_command_terminator() -> None:
    _, out = session(b"EHLO x\nMAIL FROM:<a@b>\nNOOP\n")
    assert codes(out)[-2:] == ["250 2.1.0", "250 2.0.0"]


def test_decision_pauses_processing() -> None:
    conn = ServerConnection(ServerConfig(HOST))
    assert conn.next_event() is PAUSED  # nothing happens before greet()
    conn.greet()
    conn.receive_data(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
    assert isinstance(conn.next_event(), Hello)
    assert conn.next_event() == MailFrom("a@b", {})
    assert conn.next_event() is PAUSED
    assert conn.next_event() is PAUSED
    with pytest.raises(StateError):
        conn.message_accepted("x")
    conn.reject(451, "4.3.0", "Try later")
    # RCPT after a rejected MAIL has no transaction.
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send().endswith(
        b"451 4.3.0 Try later\r\n503 5.5.1 Error: need MAIL command\r\n"
    )
    with pytest.raises(StateError):
        conn.accept()
    with pytest.raises(StateError):
        conn.greet()


def test_custom_accept_text_and_rejections() -> None:
    conn = ServerConnection(ServerConfig(HOST))
    conn.greet()
    conn.receive_data(b"EHLO x\r\nMAIL FROM:<>\r\n")
    assert isinstance(conn.next_event(), Hello)
    assert conn.next_event() == MailFrom("", {})
    conn.accept("Bounce ok")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send().endswith(b"250 2.1.0 Bounce ok\r\n")
    with pytest.raises(ValueError):
        conn.receive_data(b"RCPT TO:<a@b>\r\n")
        conn.next_event()
        conn.reject(250, "2.0.0", "not an error")


def test_rejected_recipients_then_data() -> None:
    d, out = session(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<reject@b>\r\nDATA\r\nhello\r\n.\r\n")
    assert codes(out)[-4:] == ["550 5.7.1", "554 5.5.1", "500 5.5.2", "500 5.5.2"]
    assert b"554 5.5.1 No valid recipients\r\n" in out
    assert not d.messages


def test_null_sender_default_text() -> None:
    _, out = session(b"EHLO x\r\nMAIL FROM:<>\r\n")
    assert out.endswith(b"250 2.1.0 <> ... Sender ok\r\n")


# ---------------------------------------------------------------- MAIL/RCPT


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"MAIL FROM:a@b\r\n", b"501 5.1.7"),
        (b"MAIL FROM:<a@b\r\n", b"501 5.1.7"),
        (b"MAIL FROM:<a@@b>\r\n", b"501 5.1.7"),
        (b"MAIL TO:<a@b>\r\n", b"501 5.5.4"),
        (b"MAIL\r\n", b"501 5.5.4"),
        (b"MAIL FROM:<a@b> FOO=bar\r\n", b"555 5.5.4"),
        (b"MAIL FROM:<a@b> SIZE=abc\r\n", b"501 5.5.4"),
        (b"MAIL FROM:<a@b> SIZE\r\n", b"501 5.5.4"),
        (b"MAIL FROM:<a@b> SIZE=1 SIZE=2\r\n", b"501 5.5.4"),
        (b"MAIL FROM:<a@b> BODY=BINARYMIME\r\n", b"501 5.5.4"),
        (b"MAIL FROM:<a@b> SMTPUTF8=yes\r\n", b"501 5.5.4"),
        (b"MAIL FROM:<a@b> RET=ALL\r\n", b"501 5.5.4"),
        (b"MAIL FROM:<a@b> ENVID=a+zz\r\n", b"501 5.5.4"),
        (b"MAIL FROM:<a@b> ENVID=" + b"x" * 101 + b"\r\n", b"501 5.5.4"),
        (b"MAIL FROM:<a@b> AUTH=a+\r\n", b"501 5.5.4"),
        (b"MAIL FROM:<a@b> SIZE=26214401\r\n", b"552 5.3.4"),
        ("MAIL FROM:<jörg@b.de>\r\n".encode(), b"553 5.6.7"),
    ],
)
def test_mail_errors(line: bytes, reply: bytes) -> None:
    d, out = session(b"EHLO x\r\n" + line)
    assert out.split(b"\r\n")[-2].startswith(reply + b" ")
    assert not any(isinstance(e, MailFrom) for e in d.events)


def test_mail_size_error_text() -> None:
    _, out = session(b"EHLO x\r\nMAIL FROM:<a@b> SIZE=999999999\r\n")
    assert out.endswith(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")


def test_mail_params_passed_and_normalized() -> None:
    d, _ = session(
        b"EHLO x\r\nMAIL FROM:<a@b> size=100 body=8bitmime ret=hdrs ENVID=QQ+2B1 AUTH=<>\r\n"
    )
    assert d.events[-1] == MailFrom(
        "a@b", {"SIZE": "100", "BODY": "8BITMIME", "RET": "HDRS", "ENVID": "QQ+2B1", "AUTH": "<>"}
    )


def test_rcpt_params_dsn() -> None:
    d, out = session(
        b"EHLO x\r\nMAIL FROM:<a@b> RET=FULL\r\n"
        b"RCPT TO:<c@d> NOTIFY=success,delay ORCPT=rfc822;c+40d\r\n"
        b"RCPT TO:<e@d> NOTIFY=never\r\n"
        b"RCPT TO:<f@d> NOTIFY=NEVER,SUCCESS\r\n"
        b"RCPT TO:<f@d> NOTIFY=SUCCESS,SUCCESS\r\n"
        b"RCPT TO:<f@d> NOTIFY=\r\n"
        b"RCPT TO:<f@d> NOTIFY=BOGUS\r\n"
        b"RCPT TO:<f@d> ORCPT=rfc822\r\n"
        b"RCPT TO:<f@d> ORCPT=rfc822;a+zz\r\n"
        b"RCPT TO:<f@d> ORCPT=;a\r\n"
        b"RCPT TO:<f@d> SIZE=1\r\n"
    )
    assert d.events[2] == RcptTo("c@d", {"NOTIFY": "SUCCESS,DELAY", "ORCPT": "rfc822;c+40d"})
    assert d.events[3] == RcptTo("e@d", {"NOTIFY": "NEVER"})
    assert codes(out)[-8:] == ["501 5.5.4"] * 7 + ["555 5.5.4"]


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"RCPT TO:<>\r\n", b"501 5.1.3"),
        (b"RCPT TO:c@d\r\n", b"501 5.1.3"),
        (b"RCPT TO:<c@[999.1.1.1]>\r\n", b"501 5.1.3"),
        (b"RCPT FROM:<c@d>\r\n", b"501 5.5.4"),
        ("RCPT TO:<bö@d>\r\n".encode(), b"553 5.6.7"),
    ],
)
def test_rcpt_errors(line: bytes, reply: bytes) -> None:
    _, out = session(b"EHLO x\r\nMAIL FROM:<a@b>\r\n" + line)
    assert out.split(b"\r\n")[-2].startswith(reply + b" ")


def test_smtputf8_transaction() -> None:
    data = "EHLO x\r\nMAIL FROM:<jörg@bücher.de> SMTPUTF8\r\nRCPT TO:<bö@dö.de>\r\n"
    d, out = session(data.encode())
    assert d.events[1] == MailFrom("jörg@bücher.de", {"SMTPUTF8": None})
    assert d.events[2] == RcptTo("bö@dö.de", {})
    assert codes(out)[-1] == "250 2.1.5"


def test_postmaster_and_source_route() -> None:
    d, _ = session(b"EHLO x\r\nMAIL FROM:<@a.org,@b.org:x@c.org>\r\nRCPT TO:<Postmaster>\r\n")
    assert d.events[1] == MailFrom("x@c.org", {})
    assert d.events[2] == RcptTo("Postmaster", {})


def test_too_many_recipients() -> None:
    cfg = ServerConfig(HOST, max_recipients=2)
    d, out = session(
        b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<reject@x>\r\n"
        + b"".join(b"RCPT TO:<r%d@x>\r\n" % i for i in range(4)),
        config=cfg,
    )
    assert codes(out)[-5:] == ["550 5.7.1", "250 2.1.5", "250 2.1.5", "452 4.5.3", "452 4.5.3"]
    assert out.endswith(b"452 4.5.3 Too many recipients\r\n")
    assert sum(isinstance(e, RcptTo) for e in d.events) == 3  # none for the 452s


def test_too_many_errors() -> None:
    cfg = ServerConfig(HOST, max_errors=3)
    d, out = session(b"EHLO x\r\nBAD\r\nBAD\r\nBAD\r\nNOOP\r\n", config=cfg)
    assert out.endswith(
        b"500 5.5.2 Error: command not recognized\r\n"
        b"421 4.7.0 hamburger.edu Error: too many errors\r\n"
    )
    assert codes(out)[1:] == ["250", "500 5.5.2", "500 5.5.2", "500 5.5.2", "421 4.7.0"]
    assert d.conn.closed and d.kinds()[-1] == "ConnectionClosed"


def test_pipelining_replies_in_order() -> None:
    d, out = session(
        b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<reject@d>\r\nRCPT TO:<e@d>\r\n"
        b"DATA\r\nline\r\n.\r\nMAIL FROM:<f@g>\r\nRCPT TO:<h@i>\r\nBDAT 4 LAST\r\nbody"
        b"NOOP\r\nQUIT\r\n"
    )
    assert codes(out) == [
        "220", "250", "250 2.1.0", "250 2.1.5", "550 5.7.1", "250 2.1.5", "354",
        "250 2.0.0", "250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0", "221 2.0.0",
    ]  # fmt: skip
    assert d.messages == [b"line\r\n", b"body"]


# ---------------------------------------------------------------- DATA


def data_session(body: bytes, **kwargs: object) -> tuple[Driver, bytes]:
    return session(EHLO_TX + b"DATA\r\n" + body, **kwargs)


def test_empty_message() -> None:
    d, out = data_session(b".\r\n")
    assert d.messages == [b""]
    assert codes(out)[-1] == "250 2.0.0"


@pytest.mark.parametrize(
    ("body", "content"),
    [
        (b"..\r\n.\r\n", b".\r\n"),
        (b"a\r\n..b\r\n...\r\n.\r\n", b"a\r\n.b\r\n..\r\n"),
        (b".a\r\n.\r\n", b"a\r\n"),  # lone leading dot is removed (RFC 5321 §4.5.2)
        (b"\r\n.\r\n", b"\r\n"),
        (b"a\r\n\r\n.\r\n", b"a\r\n\r\n"),
        (b"a\nb\rc\r\n.\r\n", b"a\r\nb\r\nc\r\n"),  # bare LF/CR normalized
        (b"a\n.b\r\n.\r\n", b"a\r\n.b\r\n"),  # dot after bare LF is content
        (b"a\r\r\n.\r\n", b"a\r\n\r\n"),
    ],
)
def test_data_unstuffing_and_normalization(body: bytes, content: bytes) -> None:
    d, _ = data_session(body)
    assert d.messages == [content]


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r", b"\r\n.\r", b"\r\n. \r\n"],
)
def test_smuggling_sequences_do_not_end_data(fake_end: bytes) -> None:
    smuggled = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nforged\r\n.\r\n"
    d, out = data_session(b"hello" + fake_end + smuggled)
    # One message only: the smuggled commands are content of the first.
    assert len(d.messages) == 1
    assert sum(isinstance(e, MailFrom) for e in d.events) == 1
    content = d.messages[0]
    assert b"MAIL FROM:<evil@x>\r\n" in content
    assert b"\r" not in content.replace(b"\r\n", b"") and b"\n" not in content.replace(b"\r\n", b"")
    assert codes(out)[-1] == "250 2.0.0"


def test_data_terminator_byte_by_byte() -> None:
    d = Driver()
    d.greet()
    stream = EHLO_TX + b"DATA\r\n.leading\r\nx\r\n..\r\n.\r\nQUIT\r\n"
    out = b"".join(d.feed(stream[i : i + 1]) for i in range(len(stream)))
    assert d.messages == [b"leading\r\nx\r\n.\r\n"]
    assert codes(out)[-2:] == ["250 2.0.0", "221 2.0.0"]


def test_data_chunks_are_bounded_and_streamed() -> None:
    d = Driver(config=ServerConfig(HOST, max_message_size=10 * 1024 * 1024))
    d.greet()
    d.feed(EHLO_TX + b"DATA\r\n")
    body = b"\n".join([b"y" * 99] * 20000)  # ~2 MB of bare LFs: grows when normalized
    d.feed(body)
    assert d.chunk_sizes, "content must be emitted before the end of data"
    assert max(d.chunk_sizes) <= 256 * 1024
    assert d.conn.buffered_input <= 4
    d.feed(b"\r\n.\r\n")
    assert d.messages == [normalize_line_endings(body) + b"\r\n"]


def test_data_size_exceeded() -> None:
    cfg = ServerConfig(HOST, max_message_size=100)
    d, out = data_session(
        b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n" + b"z" * 500 + b"\r\n.\r\n", config=cfg
    )
    assert d.aborted == ["size"]
    assert not d.messages
    assert not any(isinstance(e, DataComplete) for e in d.events)
    assert out.endswith(
        b'354 Enter mail, end with "." on a line by itself\r\n'
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    )
    # The transaction is over; a new one works.
    out = d.feed(b"RCPT TO:<a@b>\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nok\r\n.\r\n")
    assert codes(out) == ["503 5.5.1", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
    assert d.messages == [b"ok\r\n"]


def test_data_size_boundary() -> None:
    cfg = ServerConfig(HOST, max_message_size=10)
    d, _ = data_session(b"12345678\r\n.\r\n", config=cfg)
    assert d.messages == [b"12345678\r\n"]


def test_eof_mid_data() -> None:
    d, _ = data_session(b"partial\r\n")
    d.feed(b"")
    assert d.kinds()[-2:] == ["DataAborted", "ConnectionClosed"]
    assert d.aborted == ["eof"]
    assert d.conn.closed


def test_eof_and_input_after_quit() -> None:
    d, out = session(b"EHLO x\r\nQUIT\r\nNOOP\r\n")
    assert codes(out)[-1] == "221 2.0.0"
    assert d.kinds() == ["Hello", "Quit", "ConnectionClosed"]
    assert d.feed(b"NOOP\r\n") == b""
    d2, _ = session(b"EHLO x\r\nNOO")
    d2.feed(b"")
    assert d2.kinds() == ["Hello", "ConnectionClosed"]


# ---------------------------------------------------------------- long lines


def test_long_line_rejected_and_memory_bounded() -> None:
    d = Driver(config=ServerConfig(HOST, max_command_line=512))
    d.greet()
    d.feed(b"EHLO x\r\n")
    chunk = b"A" * 65536
    peak = 0
    for _ in range(1600):  # 100 MB without a line end
        d.conn.receive_data(chunk)
        peak = max(peak, d.conn.buffered_input)
        d.pump()
    assert peak <= 65536 + 512
    assert d.conn.buffered_input == 0
    out = d.feed(b"still the same line\r\nNOOP\r\n")
    assert out == b"500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"


def test_long_line_with_terminator_in_same_read() -> None:
    cfg = ServerConfig(HOST, max_command_line=20)
    _, out = session(b"NOOP " + b"x" * 15 + b"\r\nNOOP " + b"x" * 16 + b"\r\nNOOP\r\n", config=cfg)
    assert codes(out)[1:] == ["250 2.0.0", "500 5.5.2", "250 2.0.0"]


# ---------------------------------------------------------------- BDAT


def test_bdat_single_and_multiple_chunks() -> None:
    d, out = session(EHLO_TX + b"BDAT 6\r\nhello\nBDAT 0\r\nBDAT 8 last\r\n world\r\n")
    assert codes(out)[-3:] == ["250 2.0.0", "250 2.0.0", "250 2.0.0"]
    assert b"250 2.0.0 6 octets received\r\n250 2.0.0 0 octets received\r\n" in out
    assert out.endswith(b"250 2.0.0 Message accepted for delivery: queued as ID\r\n")
    assert d.messages == [b"hello\r\n world\r\n"]
    assert d.kinds().count("DataStart") == 1


def test_bdat_raw_dots_and_cr_split_across_chunks() -> None:
    d, _ = session(EHLO_TX + b"BDAT 5\r\n.\r\na\rBDAT 4 LAST\r\n\n.\r\n")
    # No dot handling in BDAT; the CR ending chunk 1 pairs with chunk 2's LF.
    assert d.messages == [b".\r\na\r\n.\r\n"]


def test_bdat_empty_last() -> None:
    d, _ = session(EHLO_TX + b"BDAT 0 LAST\r\n")
    assert d.messages == [b""]


def test_bdat_trailing_cr_flushed() -> None:
    d, _ = session(EHLO_TX + b"BDAT 2 LAST\r\na\r")
    assert d.messages == [b"a\r\n"]


def test_bdat_without_transaction_consumes_bytes() -> None:
    _, out = session(
        b"EHLO x\r\nBDAT 10\r\nNOOP\r\nNOOPBDAT 12 LAST\r\nQUIT\r\nQUIT\r\n"
        b"MAIL FROM:<a@b>\r\nBDAT 6 LAST\r\nRSET\r\nNOOP\r\n"
    )
    assert codes(out)[1:] == [
        "250",
        "503 5.5.1",
        "503 5.5.1",
        "250 2.1.0",
        "503 5.5.1",
        "250 2.0.0",
    ]
    assert b"need MAIL command" in out and b"need RCPT command" in out


def test_bdat_before_helo_and_syntax() -> None:
    _, out = session(b"BDAT 3\r\nabcBDAT\r\nBDAT x\r\nBDAT 1 MORE\r\nBDAT -1\r\n")
    assert codes(out)[1:] == ["503 5.5.1"] + ["501 5.5.4"] * 4


def test_data_after_bdat_and_rcpt_after_bdat() -> None:
    _, out = session(EHLO_TX + b"BDAT 2\r\nabDATA\r\nRCPT TO:<x@y>\r\nBDAT 1 LAST\r\nc")
    assert codes(out)[-4:] == ["250 2.0.0", "503 5.5.1", "503 5.5.1", "250 2.0.0"]


def test_rset_during_bdat() -> None:
    d, out = session(EHLO_TX + b"BDAT 2\r\nabRSET\r\nBDAT 1 LAST\r\nc")
    assert d.kinds() == ["Hello", "MailFrom", "RcptTo", "DataStart", "DataAborted", "Reset"]
    assert d.aborted == ["rset"]
    assert codes(out)[-2:] == ["250 2.0.0", "503 5.5.1"]


def test_bdat_size_exceeded_declared_and_pipelined() -> None:
    cfg = ServerConfig(HOST, max_message_size=10)
    d, out = session(
        EHLO_TX + b"BDAT 6\r\n123456BDAT 6\r\n789012BDAT 2 LAST\r\nxx"
        b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3 LAST\r\nabc",
        config=cfg,
    )
    assert codes(out)[-6:] == [
        "250 2.0.0",
        "552 5.3.4",
        "552 5.3.4",
        "250 2.1.0",
        "250 2.1.5",
        "250 2.0.0",
    ]
    assert d.aborted == ["size"]
    assert d.messages == [b"abc"]


def test_bdat_size_exceeded_by_normalization() -> None:
    cfg = ServerConfig(HOST, max_message_size=10)
    d, out = session(EHLO_TX + b"BDAT 8 LAST\r\n\n\n\n\n\n\n\n\n", config=cfg)
    assert d.aborted == ["size"] and not d.messages
    assert codes(out)[-1] == "552 5.3.4"
    out = d.feed(b"BDAT 1 LAST\r\nx")
    assert codes(out) == ["503 5.5.1"]


def test_eof_mid_bdat() -> None:
    d, _ = session(EHLO_TX + b"BDAT 100 LAST\r\nabc")
    d.feed(b"")
    assert d.aborted == ["eof"]
    assert d.kinds()[-1] == "ConnectionClosed"


# ---------------------------------------------------------------- AUTH


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def auth_session(data: bytes, **kwargs: object) -> tuple[Driver, bytes]:
    kwargs.setdefault("tls", True)
    return session(b"EHLO x\r\n" + data, **kwargs)


def test_auth_plain_initial_response() -> None:
    d, out = auth_session(b"AUTH PLAIN " + b64(b"\x00alice\x00secret") + b"\r\n")
    assert out.endswith(b"235 2.7.0 Authentication successful\r\n")
    assert d.events[-1] == AuthAttempt("PLAIN", "", "alice", "secret")
    assert d.conn.authenticated_user == "alice"
    assert "secret" not in repr(d.events[-1])


def test_auth_plain_without_initial_response() -> None:
    d, out = auth_session(b"AUTH plain\r\n" + b64(b"admin\x00bob\x00wrong") + b"\r\n")
    assert out.endswith(b"334 \r\n535 5.7.8 Authentication credentials invalid\r\n")
    assert d.events[-1] == AuthAttempt("PLAIN", "admin", "bob", "wrong")
    assert d.conn.authenticated_user is None


def test_auth_login_both_forms() -> None:
    _, out = auth_session(b"AUTH LOGIN\r\n" + b64(b"alice") + b"\r\n" + b64(b"secret") + b"\r\n")
    assert out.split(b"\r\n", 1)[1].endswith(
        b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n"
    )
    d, out = auth_session(b"AUTH LOGIN " + b64(b"alice") + b"\r\n" + b64(b"later") + b"\r\n")
    assert out.endswith(b"334 UGFzc3dvcmQ6\r\n454 4.7.0 Temporary authentication failure\r\n")
    assert d.events[-1] == AuthAttempt("LOGIN", "", "alice", "later")


def test_auth_cancel_and_bad_responses() -> None:
    _, out = auth_session(
        b"AUTH PLAIN\r\n*\r\n"
        b"AUTH LOGIN\r\n" + b64(b"alice") + b"\r\n*\r\n"
        b"AUTH PLAIN\r\n!!notbase64\r\n"
        b"AUTH PLAIN " + b64(b"nonuls") + b"\r\n"
        b"AUTH PLAIN " + b64(b"\x00user\x00") + b"\r\n"
        b"AUTH PLAIN =\r\n"
        b"AUTH PLAIN " + b64(b"\x00\xff\x00pw") + b"\r\n"
        b"AUTH LOGIN =\r\n"
        b"AUTH CRAM-MD5\r\n"
        b"AUTH\r\n"
        b"AUTH PLAIN a b\r\n"
        b"NOOP\r\n"
    )
    assert [c for c in codes(out)[2:] if c != "334"] == [
        "501 5.0.0",
        "501 5.0.0",
        "501 5.5.2",
        "501 5.5.2",
        "501 5.5.2",
        "501 5.5.2",
        "501 5.5.2",
        "501 5.5.2",
        "504 5.5.4",
        "501 5.5.4",
        "501 5.5.4",
        "250 2.0.0",
    ]
    assert b"501 5.0.0 Authentication cancelled\r\n" in out


def test_auth_sequence_errors() -> None:
    plain = b"AUTH PLAIN " + b64(b"\x00alice\x00secret") + b"\r\n"
    _, out = auth_session(plain + plain)
    assert codes(out)[-1] == "503 5.5.1"
    _, out = auth_session(b"MAIL FROM:<a@b>\r\n" + plain)
    assert codes(out)[-1] == "503 5.5.1"
    _, out = session(plain, tls=True)
    assert codes(out)[-1] == "503 5.5.1"  # before EHLO
    _, out = auth_session(plain, tls=False)
    assert out.endswith(
        b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    )


def test_auth_line_too_long() -> None:
    cfg = ServerConfig(HOST, max_command_line=100)
    _, out = auth_session(b"AUTH PLAIN\r\n" + b"A" * 200 + b"\r\nNOOP\r\n", config=cfg)
    assert codes(out)[-2:] == ["500 5.5.6", "250 2.0.0"]


def test_submission_requires_auth() -> None:
    cfg = ServerConfig(HOST, submission=True)
    _, out = auth_session(
        b"MAIL FROM:<a@b>\r\nAUTH PLAIN "
        + b64(b"\x00alice\x00secret")
        + b"\r\nMAIL FROM:<a@b>\r\n",
        config=cfg,
    )
    assert b"530 5.7.0 Authentication required\r\n" in out
    assert codes(out)[-2:] == ["235 2.7.0", "250 2.1.0"]


def test_auth_reject_decision() -> None:
    conn = ServerConnection(ServerConfig(HOST), tls_active=True)
    conn.greet()
    conn.receive_data(b"EHLO x\r\nAUTH PLAIN " + b64(b"\x00a\x00b") + b"\r\n")
    assert isinstance(conn.next_event(), Hello)
    assert isinstance(conn.next_event(), AuthAttempt)
    assert conn.next_event() is PAUSED
    conn.reject(421, "4.7.0", "Too many failures")
    assert conn.data_to_send().endswith(b"421 4.7.0 Too many failures\r\n")


# ---------------------------------------------------------------- STARTTLS


def test_starttls_discards_pipelined_plaintext() -> None:
    d = Driver(auto_tls=False)
    d.greet()
    out = d.feed(
        b"EHLO x\r\nMAIL FROM:<a@b>\r\nSTARTTLS\r\nMAIL FROM:<injected@evil>\r\nRCPT TO:<x@y>\r\n"
    )
    assert out.endswith(b"250 2.1.0 a@b ... Sender ok\r\n220 2.0.0 Ready to start TLS\r\n")
    assert d.kinds() == ["Hello", "MailFrom", "Reset", "StartTLS"]
    assert d.conn.next_event() is PAUSED
    d.feed(b"RCPT TO:<more@evil>\r\n")  # arrives before the handshake: dropped too
    assert d.conn.buffered_input == 0
    d.conn.tls_started()
    out = d.feed(b"MAIL FROM:<a@b>\r\nEHLO x\r\nAUTH PLAIN " + b64(b"\x00u\x00secret") + b"\r\n")
    assert codes(out) == ["503 5.5.1", "250", "235 2.7.0"]  # EHLO forgotten
    assert b"STARTTLS" not in out and b"250 AUTH PLAIN LOGIN\r\n" in out
    assert d.conn.tls_active
    assert not any(isinstance(e, MailFrom) and "evil" in e.address for e in d.events)


def test_starttls_refusals() -> None:
    _, out = session(b"STARTTLS\r\nEHLO x\r\n")
    assert codes(out)[1] == "503 5.5.1"
    _, out = session(b"EHLO x\r\nSTARTTLS\r\n", tls=True)
    assert codes(out)[-1] == "503 5.5.1"
    _, out = session(b"EHLO x\r\nSTARTTLS\r\n", config=ServerConfig(HOST, tls_available=False))
    assert codes(out)[-1] == "502 5.5.1"


def test_starttls_forgets_authentication() -> None:
    d, _ = session(
        b"EHLO x\r\nAUTH PLAIN " + b64(b"\x00u\x00secret") + b"\r\nSTARTTLS\r\n",
        config=ServerConfig(HOST, auth_without_tls=True),
    )
    assert d.conn.authenticated_user is None and d.conn.helo_name is None


def test_eof_while_waiting_for_tls() -> None:
    d = Driver(auto_tls=False)
    d.greet()
    d.feed(b"EHLO x\r\nSTARTTLS\r\n")
    d.feed(b"")
    assert d.kinds()[-1] == "ConnectionClosed"


# ---------------------------------------------------------------- refuse


def test_refuse_at_greeting() -> None:
    conn = ServerConnection(ServerConfig(HOST))
    conn.receive_data(b"EHLO early\r\n")
    conn.refuse(421, "4.7.0", "too many connections")
    assert conn.data_to_send() == b"421 4.7.0 hamburger.edu too many connections\r\n"
    assert conn.closed
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_refuse_mid_data_aborts() -> None:
    d, _ = data_session(b"partial\r\n")
    d.conn.refuse(421, "4.4.2", "timeout")
    d.pump()
    assert d.aborted == ["closed"]
    assert d.conn.data_to_send() == b"421 4.4.2 hamburger.edu timeout\r\n"
    d.conn.accept()  # decisions after close are ignored, not errors


# ---------------------------------------------------------------- fuzzing


def _reference_data(raw: bytes) -> tuple[bytes, bytes] | None:
    """One-shot model of DATA: (content, rest) or None when unterminated."""
    idx = (b"\r\n" + raw).find(b"\r\n.\r\n")
    if idx < 0:
        return None
    content = (b"\r\n" + raw[:idx]).replace(b"\r\n.", b"\r\n")[2:]
    return normalize_line_endings(content), raw[idx + 3 :]


_BODY = st.lists(
    st.sampled_from(
        [b"a", b"b", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"\r\n.\r", b"\n.\n"]
    ),
    max_size=50,
).map(b"".join)


def _cuts(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in points:
        pieces.append(data[start:p])
        start = p
    pieces.append(data[start:])
    return [p for p in pieces if p]


@settings(max_examples=300)
@given(_BODY, st.lists(st.integers(0, 10_000), max_size=12))
def test_data_matches_reference_model(body: bytes, cuts: list[int]) -> None:
    raw = body + b"\r\n.\r\nNOOP\r\n"
    expected = _reference_data(raw)
    assert expected is not None
    content, _ = expected
    d = Driver()
    d.greet()
    d.feed(EHLO_TX + b"DATA\r\n")
    for piece in _cuts(raw, cuts):
        d.feed(piece)
    assert d.messages[0] == content
    assert b"\r" not in content.replace(b"\r\n", b"") and b"\n" not in content.replace(b"\r\n", b"")


@settings(max_examples=200)
@given(_BODY, st.lists(st.integers(0, 10_000), max_size=8))
def test_dot_stuff_round_trip_through_server(message: bytes, cuts: list[int]) -> None:
    wire = dot_stuff(message)
    d = Driver()
    d.greet()
    d.feed(EHLO_TX + b"DATA\r\n")
    for piece in _cuts(wire + b"NOOP\r\n", cuts):
        d.feed(piece)
    expected = normalize_line_endings(message)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert d.messages == [expected]


_SESSION = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<a@b> SIZE=100 BODY=8BITMIME\r\n"
    b"RCPT TO:<c@d> NOTIFY=FAILURE\r\nRCPT TO:<reject@d>\r\n"
    b"DATA\r\n.dot\r\nx\ny\rz\r\n..\r\n\r\n.\r\n"
    b"MAIL FROM:<>\r\nRCPT TO:<e@f>\r\n"
    b"BDAT 7\r\nab\r\n.\rcBDAT 3 LAST\r\n\nz\n"
    b"BOGUS\r\n\x00\x01\r\n"
    b"AUTH PLAIN\r\n*\r\n"
    b"MAIL FROM:<g@h>\r\nRCPT TO:<i@j>\r\nDATA\r\n" + b"L\r\n" * 300 + b".\r\n"
    b"RSET\r\nVRFY x\r\nQUIT\r\n"
)


def _run(pieces: list[bytes]) -> tuple[bytes, list[bytes], list[str], list[Event]]:
    d = Driver(config=ServerConfig(HOST, auth_without_tls=True))
    out = d.greet()
    for piece in pieces:
        out += d.feed(piece)
    return out, d.messages, d.aborted, d.events


@settings(max_examples=200)
@given(st.lists(st.integers(0, 100_000), max_size=20))
def test_session_independent_of_chunking(cuts: list[int]) -> None:
    reference = _run([_SESSION])
    assert _run(_cuts(_SESSION, cuts)) == reference


def test_session_reference_sanity() -> None:
    out, messages, aborted, events = _run([_SESSION])
    assert messages == [
        b"dot\r\nx\r\ny\r\nz\r\n.\r\n\r\n",
        b"ab\r\n.\r\nc\r\nz\r\n",
        b"L\r\n" * 300,
    ]
    assert not aborted
    assert isinstance(events[-2], Quit) and isinstance(events[-1], ConnectionClosed)
    assert any(isinstance(e, Reset) for e in events) is False
    assert codes(out)[-4:] == ["250 2.0.0", "250 2.0.0", "252 2.5.0", "221 2.0.0"]


@given(st.binary(max_size=300), st.lists(st.integers(0, 1000), max_size=8))
def test_garbage_never_crashes(garbage: bytes, cuts: list[int]) -> None:
    d = Driver(config=ServerConfig(HOST, max_command_line=64, auth_without_tls=True))
    d.greet()
    for piece in _cuts(b"EHLO x\r\n" + garbage, cuts):
        d.feed(piece)
    d.feed(b"")
    assert d.conn.closed


# ---------------------------------------------------------------- fast paths
# Plain ASCII lines take a one-match path (MAIL/RCPT with their address);
# the other spellings go through parse_command and the full address parser.
# Both must give the same replies and events.


@pytest.mark.parametrize(
    ("mail", "rcpt"),
    [
        (b"MAIL FROM:<a@b.c>", b"RCPT TO:<d@e.f>"),  # fast
        (b"mail from:<a@b.c>", b"rcpt to:<d@e.f>"),  # fast, other case
        (b"MAIL  FROM:<a@b.c>", b"RCPT  TO:<d@e.f>"),  # two spaces: general
        (b"MAIL FROM: <a@b.c>  ", b"RCPT TO:  <d@e.f> "),  # fast, trailing spaces
        (b"MAIL FROM:<@x.y:a@b.c>", b"RCPT TO:<@x.y,@z.w:d@e.f>"),  # source route: general
        (b"MAIL FROM:<a@b.c>\t", b"RCPT TO:<d@e.f>\t"),  # control character: 500
    ],
)
def test_mail_rcpt_spellings(mail: bytes, rcpt: bytes) -> None:
    for end in (b"\r\n", b"\n"):
        d, out = session(b"EHLO x\r\n" + mail + end + rcpt + end)
        if mail.endswith(b"\t"):
            assert codes(out)[-2:] == ["500 5.5.2", "500 5.5.2"]
            continue
        assert out.endswith(
            b"250 2.1.0 a@b.c ... Sender ok\r\n250 2.1.5 d@e.f ... Recipient ok\r\n"
        )
        assert d.events[1:] == [MailFrom("a@b.c", {}), RcptTo("d@e.f", {})]


def test_mail_rcpt_fast_path_checks() -> None:
    # Sequence and parameter checks apply whichever path parsed the line.
    _, out = session(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
    assert codes(out)[1:] == ["503 5.5.1", "503 5.5.1"]
    d, out = session(
        b"EHLO x\r\nMAIL FROM:<a@b> size=100 BODY=8bitmime\r\nMAIL FROM:<a@b>\r\n"
        b"RCPT TO:<c@d> NOTIFY=never\r\nRCPT TO:<c@d> FOO=1\r\nRCPT TO:<c@d>SIZE=1\r\n"
        b"RCPT TO:<>\r\nRCPT TO:<c@" + b"x" * 64 + b">\r\n"
    )
    assert d.events[1] == MailFrom("a@b", {"SIZE": "100", "BODY": "8BITMIME"})
    assert d.events[2] == RcptTo("c@d", {"NOTIFY": "NEVER"})
    assert codes(out)[2:] == [
        "250 2.1.0", "503 5.5.1", "250 2.1.5", "555 5.5.4", "501 5.5.4", "501 5.1.3", "501 5.1.3",
    ]  # fmt: skip
    _, out = session(b"EHLO x\r\nMAIL FROM:<a@b>\r\n", config=ServerConfig(HOST, submission=True))
    assert out.endswith(b"530 5.7.0 Authentication required\r\n")


@pytest.mark.parametrize("end", [b"\r\n", b"\n"])
def test_command_line_limit_on_both_paths(end: bytes) -> None:
    cfg = ServerConfig(HOST, max_command_line=20)
    fits = b"MAIL FROM:<ab@cd.ef>"  # 20 octets
    assert len(fits) == 20
    _, out = session(b"EHLO x\r\n" + fits + end + b"RSET\r\n", config=cfg)
    assert codes(out)[-2:] == ["250 2.1.0", "250 2.0.0"]
    _, out = session(
        b"EHLO x\r\n" + fits[:-1] + b"g>" + end + b"NOOP " + b"x" * 16 + end, config=cfg
    )
    assert codes(out)[-2:] == ["500 5.5.2", "500 5.5.2"]


def test_pipelined_and_partial_lines() -> None:
    d = Driver()
    d.greet()
    out = d.feed(b"EHLO x\r\nNOOP\r\nMAIL FROM:<a@b>\r\nRC")
    assert codes(out) == ["250", "250 2.0.0", "250 2.1.0"]
    assert d.conn.buffered_input == 2
    for byte in b"PT TO:<c@d>\r":
        assert d.feed(bytes([byte])) == b""
    assert d.conn.buffered_input == len(b"RCPT TO:<c@d>\r")
    out = d.feed(b"\nDATA\r\nx\r\n.\r\nQUIT\r\n")
    assert codes(out) == ["250 2.1.5", "354", "250 2.0.0", "221 2.0.0"]
    assert d.messages == [b"x\r\n"]
    assert d.kinds() == [
        "Hello", "MailFrom", "RcptTo", "DataStart", "DataComplete", "Quit", "ConnectionClosed",
    ]  # fmt: skip


def test_replies_follow_each_connections_config() -> None:
    plain = ServerConfig("a%s%d.example", max_message_size=1234)
    _, out = session(b"EHLO x%n\r\nHELO y\r\nQUIT\r\n", config=plain)
    assert out == (
        b"220 a%s%d.example ESMTP mailhouse\r\n"
        b"250-a%s%d.example Hello x%n, pleased to meet you\r\n"
        b"250-PIPELINING\r\n250-SIZE 1234\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-DSN\r\n250 STARTTLS\r\n"
        b"250 a%s%d.example Hello y, pleased to meet you\r\n"
        b"221 2.0.0 a%s%d.example closing connection\r\n"
    )
    # Same names, other settings: other replies.
    _, out = session(b"EHLO x\r\n", tls=True, config=ServerConfig("a%s%d.example"))
    assert b"250-SIZE 26214400\r\n" in out and out.endswith(b"250-DSN\r\n250 AUTH PLAIN LOGIN\r\n")
    # A hostname with a line break is left to format_reply, as before.
    _, out = session(b"HELO y\r\n", config=ServerConfig("one\ntwo"))
    assert (
        out
        == b"220-one\r\n220 two ESMTP mailhouse\r\n250-one\r\n250 two Hello y, pleased to meet you\r\n"
    )


@pytest.mark.parametrize("shift", range(-6, 3))
def test_data_end_marker_at_search_bound(shift: int) -> None:
    # The CRLF "." search is bounded to 128 KiB + 5 per step; a marker that
    # straddles the bound must be found on a later step, the content intact.
    first = b"x" * (128 * 1024 + shift)
    raw = first + b"\r\n.\r\nNOOP\r\n"
    d = Driver(config=ServerConfig(HOST, max_message_size=1024 * 1024))
    d.greet()
    d.feed(EHLO_TX + b"DATA\r\n")
    out = d.feed(raw)
    assert d.messages == [first + b"\r\n"]
    assert codes(out)[-2:] == ["250 2.0.0", "250 2.0.0"]
    stuffed = b"..y\r\n" + first[:-6] + b"\r\n.\r\n"
    d = Driver(config=ServerConfig(HOST, max_message_size=1024 * 1024))
    d.greet()
    d.feed(EHLO_TX + b"DATA\r\n")
    d.feed(stuffed)
    assert d.messages == [b".y\r\n" + first[:-6] + b"\r\n"]


# ---------------------------------------------------------------- speed


@pytest.mark.parametrize("bdat", [False, True])
def test_throughput_10mb(bdat: bool) -> None:
    line = b"x" * 76 + b"\r\n"
    body = line * (10 * 1024 * 1024 // len(line))
    d = Driver(config=ServerConfig(HOST, max_message_size=64 * 1024 * 1024))
    d.greet()
    d.feed(EHLO_TX + (b"BDAT %d LAST\r\n" % len(body) if bdat else b"DATA\r\n"))
    stream = body if bdat else body + b".\r\n"
    conn = d.conn
    received = 0
    start = time.perf_counter()
    for i in range(0, len(stream), 65536):
        conn.receive_data(stream[i : i + 65536])
        while True:
            ev = conn.next_event()
            if ev is NEED_DATA or ev is PAUSED:
                break
            if isinstance(ev, DataChunk):
                received += len(ev.data)
    elapsed = time.perf_counter() - start
    assert received == len(body)
    # Typically 200-300 MB/s; the bound only catches an accidental per-line loop.
    assert len(body) / elapsed > 40e6
