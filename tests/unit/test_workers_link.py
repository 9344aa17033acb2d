"""The worker notice link's lines, the shared connection counts, [server] workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailhouse.config import ConfigError, config_from_toml
from mailhouse.net import peer_ip
from mailhouse.net.counts import ConnectionCounts, SharedConnectionCounts, SharedConnectionRate
from mailhouse.store.models import Change
from mailhouse.workers.link import Link, encode_changes


class _Sent:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


def _link(**kw: Any) -> tuple[Link, dict[str, list[Any]]]:
    got: dict[str, list[Any]] = {"changes": [], "kicks": [], "lost": [], "logins": [], "answers": []}
    link = Link(
        got["changes"].extend, lambda: got["kicks"].append(1), lambda: got["lost"].append(1),
        on_login=lambda *a: got["logins"].append(a), on_answer=lambda *a: got["answers"].append(a), **kw,
    )
    return link, got


def test_changes_and_kicks_round_trip_in_pieces() -> None:
    link, got = _link()
    data = encode_changes([Change(1, 2, "exists"), Change(3, 4, "flags")]) + b"q\n"
    for i in range(len(data)):  # one byte at a time: lines are reassembled
        link.data_received(data[i : i + 1])
    assert got["changes"] == [Change(1, 2, "exists"), Change(3, 4, "flags")]
    assert got["kicks"] == [1]


def test_bad_lines_are_dropped_not_fatal() -> None:
    link, got = _link()
    link.data_received(b"c 1 2 bogus\nc x 2 exists\nzzz\nc 5 6 expunge\n" + b"x" * 9000 + b"\nq\n")
    assert got["changes"] == [Change(5, 6, "expunge")]
    assert got["kicks"] == [1]


def test_login_request_and_answer() -> None:
    sender, _ = _link()
    sender.transport = _Sent()  # type: ignore[assignment]
    sender.send_login(7, "bob@hamburger.edu", "pä ss\nword", "192.0.2.1", "IMAP")
    sender.send_answer(7, "bob@hamburger.edu", 0.0)
    sender.send_answer(8, None, 12.5)
    receiver, got = _link()
    receiver.data_received(sender.transport.data)  # type: ignore[union-attr]
    assert got["logins"] == [(7, "bob@hamburger.edu", "pä ss\nword", "192.0.2.1", "IMAP")]
    assert got["answers"] == [(7, "bob@hamburger.edu", 0.0), (8, None, 12.5)]


def test_empty_user_or_password_keeps_the_framing() -> None:
    sender, _ = _link()
    sender.transport = _Sent()  # type: ignore[assignment]
    sender.send_login(1, "", "", "192.0.2.1", "POP3")
    sender.send_login(2, "u", "", "-", "IMAP")
    receiver, got = _link()
    receiver.data_received(sender.transport.data)  # type: ignore[union-attr]
    assert got["logins"] == [(1, "", "", "192.0.2.1", "POP3"), (2, "u", "", "-", "IMAP")]


def test_ipv4_clients_of_a_dual_stack_socket_look_like_ipv4() -> None:
    assert peer_ip(("::ffff:127.0.0.1", 25, 0, 0)) == "127.0.0.1"
    assert peer_ip(("::1", 25, 0, 0)) == "::1"
    assert peer_ip(("192.0.2.7", 25)) == "192.0.2.7"
    assert peer_ip(None) == "unknown"


def test_shared_counts_add_up_across_slots(tmp_path: Path) -> None:
    path = tmp_path / "run" / "connections"
    SharedConnectionCounts.create(path, 2)
    a = SharedConnectionCounts(path, 0, 2)
    b = SharedConnectionCounts(path, 1, 2)
    a.add("192.0.2.1")
    a.add("192.0.2.1")
    b.add("192.0.2.1")
    b.add("192.0.2.9")
    assert (a.of("192.0.2.1"), b.of("192.0.2.1"), a.total(), b.total()) == (3, 3, 4, 4)
    b.remove("192.0.2.1")
    b.remove("192.0.2.1")  # not counted here any more: no effect
    assert a.of("192.0.2.1") == 2
    SharedConnectionCounts.clear_slot(path, 0)  # slot 0's process died
    assert (b.of("192.0.2.1"), b.total()) == (0, 1)


@pytest.mark.parametrize("value", [-1, 65, "many", True, 1.5])
def test_workers_setting_is_checked(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match=r"server\.workers"):
        config_from_toml({"server": {"workers": value}}, tmp_path / "m.toml")


def test_workers_auto_and_greylisting(tmp_path: Path) -> None:
    assert config_from_toml({"server": {"workers": "auto"}}, tmp_path / "m.toml").workers >= 1
    assert config_from_toml({}, tmp_path / "m.toml").workers == 0
    # The main process keeps the triplets for every worker (link.py).
    cfg = config_from_toml({"server": {"workers": 2}, "trust": {"greylisting": True}}, tmp_path / "m.toml")
    assert cfg.workers == 2 and cfg.trust.greylisting


def test_imap_listeners_count_through_the_context_factory(tmp_path: Path) -> None:
    """A worker's IMAP listeners count addresses in the shared files (one per
    listener); without workers, each listener counts in its own process."""
    from mailhouse.context import Context

    path = tmp_path / "imap-connections"
    SharedConnectionCounts.create(path, 2)
    ctx = Context(config=None, store=None, auth=None, tls=None)  # type: ignore[arg-type]
    assert type(ctx.listener_counts("imap")) is ConnectionCounts
    a = Context(config=None, store=None, auth=None, tls=None)  # type: ignore[arg-type]
    b = Context(config=None, store=None, auth=None, tls=None)  # type: ignore[arg-type]
    a.make_counts = lambda name: SharedConnectionCounts(tmp_path / f"{name}-connections", 0, 2)
    b.make_counts = lambda name: SharedConnectionCounts(tmp_path / f"{name}-connections", 1, 2)
    a.listener_counts("imap").add("192.0.2.5")
    b.listener_counts("imap").add("192.0.2.5")
    assert a.listener_counts("imap") is a.listener_counts("imap")
    assert b.listener_counts("imap").of("192.0.2.5") == 2


def test_worker_log_lines_are_tagged_and_written_in_atomic_chunks() -> None:
    from mailhouse import log

    lines = [f"2026-11-29T06:00:00.000Z mailhouse/smtpd: line {i} {'x' * 100}\n" for i in range(100)]
    chunks = log._chunks(lines)
    assert "".join(chunks) == "".join(lines)
    assert all(len(c.encode()) <= log._ATOMIC_WRITE and c.endswith("\n") for c in chunks)
    assert len(chunks) > 1
    assert log._chunks(["y" * 5000 + "\n"]) == ["y" * 5000 + "\n"]  # a long line stays whole
    old = log._tag
    try:
        log.tag_process("w1")
        formatter = log._Formatter()
        import logging

        record = logging.LogRecord("mailhouse.smtpd", logging.INFO, __file__, 1, "connect from [%s]", ("1.2.3.4",), None)
        assert " mailhouse/smtpd[w1]: connect from [1.2.3.4]" in formatter.format(record)
    finally:
        log._tag = old


def test_shares_of_a_limit_add_up_to_it(tmp_path: Path) -> None:
    from mailhouse.serve import queue_shares, share_of

    assert share_of(20, None) == 20
    assert [share_of(20, (k, 2)) for k in range(2)] == [10, 10]
    assert [share_of(7, (k, 3)) for k in range(3)] == [3, 2, 2]

    def shares(**queue: object) -> int:
        return queue_shares(config_from_toml({"server": {"workers": 4}, "queue": queue}, tmp_path / "m.toml"))

    assert shares() == 4
    # Fewer drainers than workers when a limit is lower: each has at least one
    # connection, and together they keep to the limit.
    assert shares(connections_per_destination=1) == 1
    assert shares(max_connections=3) == 3


def test_queue_poll_interval(tmp_path: Path) -> None:
    assert config_from_toml({}, tmp_path / "m.toml").queue.poll_interval == 1.0
    assert config_from_toml({"queue": {"poll_interval": "5s"}}, tmp_path / "m.toml").queue.poll_interval == 5.0
    with pytest.raises(ConfigError, match=r"queue\.poll_interval"):
        config_from_toml({"queue": {"poll_interval": "0"}}, tmp_path / "m.toml")


def test_sending_limit_request_and_answer() -> None:
    got: list[Any] = []
    sender, _ = _link()
    sender.transport = _Sent()  # type: ignore[assignment]
    sender.send_limit(9, "bob@hamburger.edu", 3)
    sender.send_limit_answer(9, None)
    sender.send_limit_answer(10, "sending limit reached: 3 messages per hour")
    receiver, _ = _link(on_limit=lambda *a: got.append(("ask", *a)), on_limit_answer=lambda *a: got.append(("answer", *a)))
    data = sender.transport.data  # type: ignore[union-attr]
    for i in range(len(data)):  # one byte at a time: lines are reassembled
        receiver.data_received(data[i : i + 1])
    assert got == [
        ("ask", 9, "bob@hamburger.edu", 3),
        ("answer", 9, None),
        ("answer", 10, "sending limit reached: 3 messages per hour"),
    ]
    receiver.data_received(b"l 11 notbase64 3\nl x bYQ== 3\nL 12\n")  # malformed: dropped
    assert len(got) == 3


def test_greylisting_request_and_answer() -> None:
    got: list[Any] = []
    sender, _ = _link()
    sender.transport = _Sent()  # type: ignore[assignment]
    sender.send_greylist(5, "192.0.2.7", "", "bob+tag@hamburger.edu")  # the null sender too
    sender.send_greylist(6, "2001:db8::1", "a b@crepes.fr", "bob@hamburger.edu")
    sender.send_greylist_answer(5, 299.5)
    sender.send_greylist_answer(6, 0.0)
    receiver, _ = _link(on_greylist=lambda *a: got.append(("ask", *a)),
                        on_greylist_answer=lambda *a: got.append(("answer", *a)))
    data = sender.transport.data  # type: ignore[union-attr]
    for i in range(len(data)):  # one byte at a time: lines are reassembled
        receiver.data_received(data[i : i + 1])
    assert got == [
        ("ask", 5, "192.0.2.7", "", "bob+tag@hamburger.edu"),
        ("ask", 6, "2001:db8::1", "a b@crepes.fr", "bob@hamburger.edu"),
        ("answer", 5, 299.5),
        ("answer", 6, 0.0),
    ]
    receiver.data_received(b"g 7 1.2.3.4 notbase64 bYQ==\nG 8 soon\nG 9\n")  # malformed: dropped
    assert len(got) == 4


def test_connection_rate_shared_by_workers(tmp_path: Path) -> None:
    """Two SharedConnectionRate on one file (two worker processes) draw on one
    bucket per address: the rate is the server's."""
    now = [1000.0]
    path = tmp_path / "run" / "connection-rate"
    SharedConnectionRate.create(path)
    a = SharedConnectionRate(path, 6, clock=lambda: now[0])
    b = SharedConnectionRate(path, 6, clock=lambda: now[0])
    assert [(a if i % 2 else b).allow("192.0.2.1") for i in range(8)] == [True] * 6 + [False] * 2
    assert a.allow("192.0.2.2") and b.allow("192.0.2.3")  # other addresses have their own
    now[0] += 10  # a token a 10 s at 6 a minute
    assert b.allow("192.0.2.1") and not a.allow("192.0.2.1")
    SharedConnectionRate.create(path)  # a restart starts afresh (a new file)
    c = SharedConnectionRate(path, 6, clock=lambda: now[0])
    assert all(c.allow("192.0.2.1") for _ in range(6))
