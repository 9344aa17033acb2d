"""The outbound driver starts the next message behind the dot (RFC 2920 §3.1).

A scripted SMTP peer on 127.0.0.1 (not mailhouse) records every read and answers
each message's end of data as the test says. One connection per destination, so
the messages queue up for it and each starts behind the previous one's dot.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest

from mailhouse.config import QueueSettings
from mailhouse.net.smtp_client import SMTPDeliverer
from mailhouse.queue.routing import Hop, Route
from mailhouse.store.models import QueueEntry, QueueRecipient

BODY = b"From: <a@crepes.fr>\r\nSubject: x\r\n\r\nhello\r\n"


class Peer:
    """PIPELINING, no STARTTLS. ``verdict(n)`` answers the n-th message's dot (from 1):
    a reply line, or None to close the connection instead."""

    def __init__(self, verdict: Callable[[int], bytes | None]) -> None:
        self.verdict = verdict
        self.reads: list[bytes] = []
        self.messages = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer.test ESMTP\r\n")
        buf = b""
        in_data = False
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                self.reads.append(chunk)
                buf += chunk
                out = b""
                while True:
                    if in_data:
                        end = buf.find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        buf = buf[end + 5 :]
                        in_data = False
                        self.messages += 1
                        verdict = self.verdict(self.messages)
                        if verdict is None:
                            writer.write(out)
                            writer.close()
                            return
                        out += verdict
                        continue
                    nl = buf.find(b"\r\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 2 :]
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        out += b"250-peer.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                    elif verb == b"DATA":
                        out += b"354 go\r\n"
                        in_data = True
                        buf = b"\r\n" + buf  # the message may end at once: "\r\n.\r\n"
                    elif verb == b"QUIT":
                        writer.write(out + b"221 bye\r\n")
                        writer.close()
                        return
                    else:
                        out += b"250 ok\r\n"
                writer.write(out)
        except ConnectionError:
            return

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


def entry(n: int) -> QueueEntry:
    rcpt = QueueRecipient(n, f"rcpt{n}@peer.test", None, None, "pending", None, None)
    return QueueEntry(f"Q{n}", "a@crepes.fr", None, 0.0, 0.0, 0, False, None, False, None, None, None,
                      False, None, len(BODY), [rcpt])


async def deliver_all(peer: Peer, count: int) -> list[tuple[str, str, list[str]]]:
    port = await peer.start()
    d = SMTPDeliverer("crepes.fr", QueueSettings(connections_per_destination=1, idle_timeout=2.0))
    route = Route("peer.test", "route", [Hop("127.0.0.1", port, ["127.0.0.1"])])
    entries = [entry(n) for n in range(1, count + 1)]
    try:
        atts = await asyncio.wait_for(
            asyncio.gather(*(d.deliver(route, e, e.recipients, BODY) for e in entries)), 30)
    finally:
        await d.close()
        await peer.stop()
    out = []
    for e, att in zip(entries, atts, strict=True):
        res = att.results[e.recipients[0].id]
        (_, event), = att.events
        out.append((res.state, res.reply, event["transcript"]))
    return out


def test_next_message_goes_with_the_dot_and_each_gets_its_own_reply() -> None:
    peer = Peer(lambda n: b"250 2.0.0 queued as M%d\r\n" % n)
    results = asyncio.run(deliver_all(peer, 4))
    assert [r[:2] for r in results] == [("delivered", f"250 2.0.0 queued as M{n}") for n in range(1, 5)]
    # Each transcript ends with its own reply, and the next one's begins with its MAIL.
    for n, (_, _, transcript) in enumerate(results, 1):
        assert transcript[-1] == f"S: 250 2.0.0 queued as M{n}"
        assert sum(line.startswith("S: 250 2.0.0 queued") for line in transcript) == 1
    # One connection, and a dot followed by the next MAIL in the same read.
    joined = b"".join(peer.reads)
    assert joined.count(b"EHLO") == 1
    assert any(re.search(rb"\r\n\.\r\nMAIL FROM:", chunk) for chunk in peer.reads)


def test_a_refused_message_does_not_touch_the_next() -> None:
    peer = Peer(lambda n: b"554 5.7.1 no\r\n" if n == 2 else b"250 2.0.0 ok %d\r\n" % n)
    results = asyncio.run(deliver_all(peer, 3))
    assert [r[0] for r in results] == ["delivered", "failed", "delivered"]
    assert results[1][1] == "554 5.7.1 no"


def test_a_connection_closed_after_a_dot_defers_that_message_and_retries_the_next() -> None:
    # The peer hangs up instead of answering message 2's dot: whether it was taken is
    # unknown, so it is deferred (not failed); message 3, started behind that dot, goes
    # over a fresh connection.
    peer = Peer(lambda n: None if n == 2 else b"250 2.0.0 ok %d\r\n" % n)
    results = asyncio.run(deliver_all(peer, 3))
    assert [r[0] for r in results] == ["delivered", "deferred", "delivered"]
    assert "closed" in results[1][1]


@pytest.mark.parametrize("count", [1, 2])
def test_a_lone_message_still_gets_its_reply(count: int) -> None:
    peer = Peer(lambda n: b"250 2.0.0 ok\r\n")
    results = asyncio.run(deliver_all(peer, count))
    assert [r[0] for r in results] == ["delivered"] * count
