"""`mailhouse serve` with `[server] workers = N`: SMTP, IMAP and POP3 served by
worker processes sharing the listening sockets, the main process keeping the
queue and relaying folder changes and queue kicks between them.

Which process serves a connection is read from /proc (the server side of the
TCP connection, by its socket inode, among the serve process's children), so
the cross-process cases check that they are in fact cross-process. The latency
bounds sit below the fallbacks a missing relay would leave (IMAP's 2 s poll of
other processes' changes, the queue manager's 1 s poll), over several rounds,
so a server without the relay fails them.
"""

from __future__ import annotations

import contextlib
import os
import poplib
import re
import signal
import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailhouse.dns.testserver import DNSServer, Zone
from tests.integration.conftest import Line, inbox, queue, tls_context, wait_for
from tests.peer import FaultyPeer
from tests.world import MailServer

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads worker processes from /proc"
)

DOMAIN = "workers.test"
BOB, BOB_PW = f"bob@{DOMAIN}", "bob-pw"
CAROL, CAROL_PW = f"carol@{DOMAIN}", "carol-pw"
ALICE, ALICE_PW = f"alice@{DOMAIN}", "alice-pw"
DAVE, DAVE_PW = f"dave@{DOMAIN}", "dave-pw"  # sending limited to DAVE_PER_HOUR messages an hour
DAVE_PER_HOUR = 3
WORKERS = 2
NOTICE_WITHIN = 1.0  # a relayed notice; the poll of other processes' changes is every 2 s
KICK_WITHIN = 0.6  # a relayed queue kick; the queue manager's own poll is every 1 s

T = TypeVar("T")


# ------------------------------------------------------------------ processes and sockets
def _stat(pid: int | str) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def worker_pids(server: MailServer) -> set[int]:
    """The live `python -m mailhouse.workers.worker` children of the serve process."""
    assert server.proc is not None
    parent = server.proc.pid
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(entry)
        if st is None or st[1] != parent or st[0] == "Z":
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"mailhouse.workers.worker" in cmdline:
            found.add(int(entry))
    return found


def wait_workers(server: MailServer, n: int = WORKERS, timeout: float = 10.0) -> set[int]:
    def found() -> set[int] | None:
        pids = worker_pids(server)
        return pids if len(pids) == n else None

    pids: set[int] = wait_for(found, timeout=timeout, interval=0.05, msg=f"{n} worker processes")
    return pids


def wait_ready(server: MailServer) -> set[int]:
    """Workers running, and the main process past start-up (its signal handlers set)."""
    pids = wait_workers(server)
    wait_for(
        lambda: "mailhouse ready" in server.log(),
        timeout=10,
        interval=0.05,
        msg="'mailhouse ready' in the log",
    )
    return pids


def _server_inode(server_port: int, client_port: int) -> int | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            local, remote, inode = f[1], f[2], int(f[9])
            if (
                inode
                and int(local.rsplit(":", 1)[1], 16) == server_port
                and int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                return inode
    return None


def owner(server: MailServer, listener: str, sock: socket.socket) -> int:
    """The pid of the process holding the server side of this (accepted) connection."""
    assert server.proc is not None
    main_pid = server.proc.pid
    client_port = sock.getsockname()[1]
    inode = wait_for(
        lambda: _server_inode(server.port(listener), client_port),
        timeout=3,
        interval=0.01,
        msg=f"the server side of {listener} connection from port {client_port}",
    )
    target = f"socket:[{inode}]"

    def find() -> int | None:
        for pid in (*worker_pids(server), main_pid):
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        return None

    pid: int = wait_for(find, timeout=3, interval=0.01, msg=f"the process holding {target}")
    return pid


def spread(
    server: MailServer,
    listener: str,
    connect: Callable[[], T],
    sock_of: Callable[[T], socket.socket],
    at_least: int = 1,
    timeout: float = 15.0,
) -> list[tuple[T, int]]:
    """Connections (each with the pid serving it) until there are `at_least` and
    every worker serves one of them. Each must be served by a worker."""
    workers = worker_pids(server)
    assert len(workers) == WORKERS, workers
    got: list[tuple[T, int]] = []
    deadline = time.monotonic() + timeout
    while len(got) < at_least or {pid for _, pid in got} != workers:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(got)} {listener} connections were served by {sorted(p for _, p in got)}, "
                f"never by every worker of {sorted(workers)}"
            )
        conn = connect()
        pid = owner(server, listener, sock_of(conn))
        assert pid in workers, (
            f"{listener} connection served by pid {pid}, not by a worker {sorted(workers)}"
        )
        got.append((conn, pid))
    return got


# ------------------------------------------------------------------ a raw IMAP client
class Imap:
    """IMAP as bytes: commands without literals, lines read against deadlines."""

    def __init__(self, port: int, user: str, password: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.n = 0
        self.idle_tag: str | None = None
        greeting = self.line()
        assert greeting.startswith(b"* OK"), greeting
        self.command(f'LOGIN "{user}" "{password}"')  # plaintext: allowed from loopback

    def line(self, deadline: float | None = None) -> bytes:
        """One line, CRLF included; TimeoutError once past `deadline` with none complete."""
        while b"\r\n" not in self.buf:
            if deadline is None:
                self.sock.settimeout(self.timeout)
            else:
                # Past the deadline, still take what had arrived (a short wait only).
                self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = self.sock.recv(65536)  # socket.timeout is TimeoutError
            if not chunk:
                raise AssertionError(f"IMAP connection closed; pending {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def command(self, text: str) -> list[bytes]:
        """Send one command; its untagged lines (the tagged OK checked)."""
        self.n += 1
        tag = f"w{self.n}"
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        lines = []
        while True:
            line = self.line()
            if line.startswith(tag.encode() + b" "):
                assert line.startswith(tag.encode() + b" OK"), (text, line, lines)
                return lines
            lines.append(line)

    def select(self, folder: str = "INBOX") -> int:
        """SELECT; the EXISTS count."""
        for line in self.command(f"SELECT {folder}"):
            if line.endswith(b" EXISTS\r\n"):
                return int(line.split()[1])
        raise AssertionError("SELECT without EXISTS")

    def idle(self) -> None:
        self.n += 1
        self.idle_tag = f"w{self.n}"
        self.sock.sendall(f"{self.idle_tag} IDLE\r\n".encode())
        while True:
            line = self.line()
            if line.startswith(b"+ "):
                return
            assert line.startswith(b"* "), line

    def done(self) -> list[bytes]:
        assert self.idle_tag is not None
        tag, self.idle_tag = self.idle_tag.encode(), None
        self.sock.sendall(b"DONE\r\n")
        lines = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                assert line.startswith(tag + b" OK"), line
                return lines
            lines.append(line)

    def expect(self, pred: Callable[[bytes], bool], deadline: float, what: str) -> bytes:
        """The first line matching `pred` that arrived by `deadline` (others skipped)."""
        seen = []
        while True:
            try:
                line = self.line(deadline)
            except TimeoutError:
                raise AssertionError(f"no {what} by the deadline; got {seen}") from None
            if pred(line):
                return line
            seen.append(line)

    def search(self, criteria: str, uid: bool = False) -> list[int]:
        lines = self.command(("UID " if uid else "") + f"SEARCH {criteria}")
        found = [ln for ln in lines if ln.startswith(b"* SEARCH")]
        assert len(found) == 1, lines
        return [int(n) for n in found[0].split()[2:]]

    def close(self) -> None:
        try:
            if self.idle_tag is not None:
                self.sock.sendall(b"DONE\r\n")
            self.sock.sendall(b"z LOGOUT\r\n")
        except OSError:
            pass
        self.sock.close()


def idlers(server: MailServer, user: str, password: str, at_least: int) -> list[tuple[Imap, int]]:
    """IMAP sessions in IDLE on INBOX, served by every worker between them."""
    got = spread(
        server,
        "imap",
        lambda: Imap(server.port("imap"), user, password),
        lambda s: s.sock,
        at_least,
    )
    for s, _ in got:
        s.select("INBOX")
        s.idle()
    return got


def smtp_line(server: MailServer) -> Line:
    """A raw SMTP connection past its 220 (so a worker has accepted it)."""
    ln = Line(server.port("smtp"))
    greeting = ln.reply()
    assert greeting.startswith(b"220 "), greeting
    return ln


def deliver(server: MailServer, rcpt: str, subjects: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=20) as c:
        for subject in subjects:
            c.sendmail(
                "sender@example.org", [rcpt], f"Subject: {subject}\r\n\r\n{subject}\r\n".encode()
            )


# ------------------------------------------------------------------ the server
@pytest.fixture(scope="module")
def peer() -> Iterator[FaultyPeer]:
    p = FaultyPeer().start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, peer: FaultyPeer) -> Iterator[MailServer]:
    server = MailServer(
        tmp_path_factory.mktemp("workers"),
        DOMAIN,
        extra={
            "server": {"workers": WORKERS},
            "limits": {"max_connections_per_ip": 100, "command_timeout": "20s"},
            "queue": {"retry_interval": "1h", "connect_timeout": "3s", "reply_timeout": "5s"},
            "routes": {"peer.test": f"127.0.0.1:{peer.port}"},
            "trust": {
                "trusted_networks": ["127.0.0.0/8", "::1/128"],  # as the harness sets without a [trust]
                "rate_limits": {"users": {DAVE: {"messages_per_hour": DAVE_PER_HOUR}}},
            },
        },
    )
    server.cli("user", "add", DAVE, "--password", DAVE_PW)
    server.cli("user", "add", BOB, "--password", BOB_PW)
    server.cli("user", "add", CAROL, "--password", CAROL_PW)
    server.cli("user", "add", ALICE, "--password", ALICE_PW)
    try:
        server.start()
        wait_ready(server)
        deliver(server, BOB, [f"seed {i}" for i in range(3)])
        yield server
    finally:
        pids = worker_pids(server) if server.proc is not None else set()
        rc = server.stop()
    assert rc == 0, server.log()
    assert not [p for p in pids if alive(p)], f"workers left behind: {pids}"


# ------------------------------------------------------------------ the cases
def test_mx_deliveries_over_many_connections(srv: MailServer) -> None:
    """30 messages on 10 concurrent connections: each in INBOX once, UIDs 1..30."""

    def one_connection(i: int) -> int:
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=20) as c:
            pid = owner(srv, "smtp", c.sock)
            for j in range(3):
                subject = f"mx {i * 3 + j}"
                refused = c.sendmail(
                    "sender@example.org",
                    [CAROL],
                    f"Subject: {subject}\r\n\r\n{subject}\r\n".encode(),
                )
                assert refused == {}
            return pid

    with ThreadPoolExecutor(10) as pool:
        served_by = list(pool.map(one_connection, range(10)))
    assert set(served_by) <= worker_pids(srv), served_by

    def arrived() -> list[dict[str, object]] | None:
        rows = inbox(srv, CAROL)
        return rows if len(rows) >= 30 else None

    rows = wait_for(arrived, interval=0.2, msg="30 messages in INBOX")
    assert len(rows) == 30, [r["subject"] for r in rows]
    assert sorted(r["subject"] for r in rows) == sorted(f"mx {i}" for i in range(30))
    assert sorted(int(r["uid"]) for r in rows) == list(range(1, 31))


def test_idle_hears_deliveries_from_other_workers(srv: MailServer) -> None:
    sessions = idlers(srv, BOB, BOB_PW, at_least=6)
    try:
        exists = None
        for round_ in range(3):  # several rounds: a 2 s poll cannot pass them all by luck
            with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=20) as c:
                smtp_pid = owner(srv, "smtp", c.sock)
                # The sessions cover every worker: some are in another process.
                assert any(pid != smtp_pid for _, pid in sessions)
                c.sendmail(
                    "sender@example.org", [BOB], f"Subject: idle {round_}\r\n\r\nx\r\n".encode()
                )
                deadline = time.monotonic() + NOTICE_WITHIN
            counts = set()
            for s, pid in sessions:
                line = s.expect(
                    lambda ln: ln.startswith(b"* ") and ln.endswith(b" EXISTS\r\n"),
                    deadline,
                    f"EXISTS in the session of pid {pid} (SMTP in pid {smtp_pid}), round {round_}",
                )
                counts.add(int(line.split()[1]))
            assert len(counts) == 1, counts  # every session sees the same mailbox
            (now,) = counts
            assert exists is None or now == exists + 1, (exists, now)
            exists = now
        for s, _ in sessions:
            s.done()
            assert s.search("ALL")[-1] == exists  # the same count once out of IDLE
    finally:
        for s, _ in sessions:
            s.close()


def test_flag_changes_reach_idle_sessions_in_other_workers(srv: MailServer) -> None:
    sessions = idlers(srv, BOB, BOB_PW, at_least=4)
    storer = Imap(srv.port("imap"), BOB, BOB_PW)
    try:
        store_pid = owner(srv, "imap", storer.sock)
        assert any(pid != store_pid for _, pid in sessions)
        assert storer.select("INBOX") >= 1
        for flag in ("\\Flagged", "\\Answered", "\\Draft"):
            wanted = flag.encode()
            own = storer.command(f"STORE 1 +FLAGS ({flag})")
            deadline = time.monotonic() + NOTICE_WITHIN
            assert any(ln.startswith(b"* 1 FETCH") and wanted in ln for ln in own), own
            for s, pid in sessions:
                s.expect(
                    lambda ln, f=wanted: ln.startswith(b"* 1 FETCH") and f in ln,
                    deadline,
                    f"FETCH with {flag} in the session of pid {pid} (STORE in pid {store_pid})",
                )
    finally:
        storer.close()
        for s, _ in sessions:
            s.close()


def test_submission_kicks_the_main_process_queue(srv: MailServer, peer: FaultyPeer) -> None:
    """retry_interval is 1h: only the worker's kick (or the 1 s poll) starts the attempt."""
    latencies = []
    for i in range(3):  # after one poll-started delivery the next poll is a second away
        before = len(peer.messages)
        with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=20) as c:
            c.starttls(context=tls_context())
            c.login(ALICE, ALICE_PW)
            c.sendmail(
                ALICE,
                [f"far{i}@peer.test"],
                f"From: {ALICE}\r\nTo: far{i}@peer.test\r\nSubject: kick {i}\r\n\r\nout\r\n".encode(),
            )
            sent = time.monotonic()
        wait_for(
            lambda b=before: len(peer.messages) > b,
            timeout=10,
            interval=0.01,
            msg=f"the peer receiving kick {i}",
        )
        latencies.append(time.monotonic() - sent)
        got = peer.messages[-1]
        assert got.recipients == [f"far{i}@peer.test"] and f"Subject: kick {i}".encode() in got.data
    assert max(latencies) < KICK_WITHIN, latencies
    wait_for(lambda: queue(srv) == [], interval=0.2)


def test_sending_limits_count_every_worker(srv: MailServer) -> None:
    """A user's messages per hour are counted once for the server: per worker, two
    workers would let twice the limit through."""
    port = srv.port("submission")
    by_worker: dict[int, smtplib.SMTP] = {}
    spare: list[smtplib.SMTP] = []
    deadline = time.monotonic() + 15
    try:
        while len(by_worker) < WORKERS:
            assert time.monotonic() < deadline, f"no submission session in every worker: {sorted(by_worker)}"
            c = smtplib.SMTP("127.0.0.1", port, timeout=20)
            pid = owner(srv, "submission", c.sock)
            if pid in by_worker:
                spare.append(c)
            else:
                by_worker[pid] = c
        sessions = list(by_worker.values())
        for c in sessions:
            c.starttls(context=tls_context())
            c.login(DAVE, DAVE_PW)
        replies = []
        for i in range(DAVE_PER_HOUR + 3):  # in turn on each worker's session
            c = sessions[i % len(sessions)]
            msg = f"From: {DAVE}\r\nTo: {BOB}\r\nSubject: limit {i}\r\n\r\nx\r\n"
            try:
                c.sendmail(DAVE, [BOB], msg.encode())
                replies.append(250)
            except smtplib.SMTPDataError as e:
                assert e.smtp_code == 451 and b"4.7.1" in e.smtp_error and b"messages per hour" in e.smtp_error, e
                replies.append(e.smtp_code)
        assert replies == [250] * DAVE_PER_HOUR + [451] * 3, replies
    finally:
        for c in [*by_worker.values(), *spare]:
            with contextlib.suppress(Exception):
                c.close()


def test_the_workers_share_the_queue(srv: MailServer, peer: FaultyPeer) -> None:
    """Each worker drains its share of the queue: a backlog of outbound mail leaves
    through both (the log names the process of each delivery), once each.

    A backlog, not a trickle: the peer defers them all first. Shares go by rowid,
    and a message sent before the next one is queued frees its rowid for it, so
    mail that trickles in may all fall in one share (no harm: it is light)."""
    before = len(peer.messages)
    rcpts = [f"share{i}@peer.test" for i in range(8)]
    peer.mode = "rcpt4xx"
    try:
        with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=20) as c:
            c.starttls(context=tls_context())
            c.login(ALICE, ALICE_PW)
            for r in rcpts:
                c.sendmail(ALICE, [r], f"From: {ALICE}\r\nTo: {r}\r\nSubject: share\r\n\r\nout\r\n".encode())
        wait_for(lambda: sum(e["attempts"] >= 1 and e["recipients"][0] in rcpts for e in queue(srv)) == len(rcpts),
                 timeout=10, interval=0.05, msg="every message deferred once")
    finally:
        peer.mode = "accept"
    srv.cli("queue", "retry")
    wait_for(lambda: len(peer.messages) >= before + len(rcpts), timeout=10, interval=0.05, msg="the peer receiving 8")
    got = [r for m in peer.messages[before:] for r in m.recipients]
    assert sorted(got) == sorted(rcpts)  # each once
    senders = {
        m.group(1)
        for m in re.finditer(r"mailhouse/queue\[(w\d+)\]: \w+: to=<share\d@peer\.test>.*status=sent", srv.log())
    }
    assert senders == {f"w{k}" for k in range(WORKERS)}, senders
    wait_for(lambda: queue(srv) == [], interval=0.2)


def test_a_new_message_is_recent_in_one_session_whatever_its_worker(srv: MailServer) -> None:
    """RFC 3501 §2.3.2: \\Recent in exactly one session. Claims are shared by the
    workers, so a session in another process does not see the same message as
    recent again, at SELECT or when told of it."""
    deliver(srv, CAROL, ["recent a", "recent b"])
    sessions = spread(srv, "imap", lambda: Imap(srv.port("imap"), CAROL, CAROL_PW), lambda s: s.sock, at_least=4)
    try:
        counts = []
        for s, _ in sessions:
            lines = s.command("SELECT INBOX")
            (recent,) = [int(ln.split()[1]) for ln in lines if ln.endswith(b" RECENT\r\n")]
            counts.append(recent)
        assert counts[0] >= 2 and counts[1:] == [0] * (len(sessions) - 1), counts
        deliver(srv, CAROL, ["recent c"])
        time.sleep(NOTICE_WITHIN)
        seen = []
        for s, pid in sessions:
            s.command("NOOP")  # told of the new message here
            seen.append((pid, s.search("RECENT")))
        holders = [pid for pid, recent in seen if recent]
        assert len(holders) == 1, seen
    finally:
        for s, _ in sessions:
            s.close()


def test_pop3_delete_seen_by_imap_in_another_worker(srv: MailServer) -> None:
    sessions = idlers(srv, BOB, BOB_PW, at_least=2)
    try:
        # A POP3 session: the IDLE sessions cover every worker, so some are elsewhere.
        p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
        pop_pid = owner(srv, "pop3", p.sock)
        assert any(pid != pop_pid for _, pid in sessions)
        p.user(BOB)
        p.pass_(BOB_PW)
        count, _ = p.stat()
        probe = Imap(srv.port("imap"), BOB, BOB_PW)
        assert probe.select("INBOX") == count  # POP3 and IMAP see the same INBOX
        first_uid = int(probe.command("FETCH 1 (UID)")[0].split(b"UID ")[1].split(b")")[0])
        probe.close()
        assert count >= 1
        p.dele(1)
        p.quit()
        deadline = time.monotonic() + NOTICE_WITHIN
        for s, pid in sessions:
            s.expect(
                lambda ln: ln == b"* 1 EXPUNGE\r\n",
                deadline,
                f"EXPUNGE in the session of pid {pid} (POP3 in pid {pop_pid})",
            )
        for s, _ in sessions:
            s.done()
            s.command("NOOP")
            uids = s.search("ALL", uid=True)
            assert len(uids) == count - 1 and first_uid not in uids, (first_uid, uids)
    finally:
        for s, _ in sessions:
            s.close()


def test_killed_worker_is_restarted(srv: MailServer) -> None:
    old = wait_workers(srv)
    victim = min(old)
    (survivor,) = old - {victim}
    mark = len(srv.log())
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(
        lambda: "restart" in srv.log()[mark:].lower(),
        timeout=5,
        interval=0.05,
        msg="a restart line in the log",
    )

    def replaced() -> set[int] | None:
        pids = worker_pids(srv)
        return pids if len(pids) == WORKERS and victim not in pids else None

    new: set[int] = wait_for(replaced, timeout=5, interval=0.05, msg="the worker replaced")
    assert survivor in new
    assert time.monotonic() - killed < 5
    (fresh,) = new - {survivor}
    subjects = [f"after restart {i}" for i in range(10)]
    for subject in subjects:
        deliver(srv, CAROL, [subject])
    rows = [r["subject"] for r in inbox(srv, CAROL) if r["subject"].startswith("after restart ")]
    assert sorted(rows) == sorted(subjects)
    # And the new worker takes connections of its own.
    served = spread(srv, "smtp", lambda: smtp_line(srv), lambda ln: ln.sock)
    for ln, _ in served:
        ln.close()
    assert fresh in {pid for _, pid in served}


# ------------------------------------------------------------------ servers of their own
@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    yield from _smtp_only(tmp_path_factory, "limits.test", {"limits": {"max_connections_per_ip": 4, "max_connections": 6}})


def _smtp_only(tmp_path_factory: pytest.TempPathFactory, domain: str, extra: dict[str, Any]) -> Iterator[MailServer]:
    """A server with workers and only the smtp listener, for the limit tests."""
    server = MailServer(tmp_path_factory.mktemp(domain), domain, listeners=("smtp",),
                        extra={"server": {"workers": WORKERS}, **extra})
    try:
        server.start()
        wait_ready(server)
        yield server
    finally:
        rc = server.stop()
    assert rc == 0, server.log()


def _reply(sock: socket.socket) -> bytes:
    """One whole SMTP reply (b"" if the server closed without one)."""
    buf = b""
    while True:
        while not buf.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                return buf
            buf += chunk
        last = buf[:-2].rsplit(b"\r\n", 1)[-1]
        if len(last) < 4 or last[3:4] != b"-":
            return buf


def _greeting(port: int, source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock, _reply(sock)


def _hold(port: int, source: str, held: list[socket.socket]) -> None:
    """One more connection welcomed with 220 and kept open: closes of earlier
    connections are noticed asynchronously, so a 421 meanwhile is retried."""

    def welcomed() -> bool:
        sock, reply = _greeting(port, source)
        if reply.startswith(b"220 "):
            held.append(sock)
            return True
        sock.close()
        return False

    wait_for(welcomed, timeout=5, interval=0.05, msg=f"a 220 for a connection from {source}")


def _hold_in_each_worker(
    server: MailServer, per_worker: int, source: Callable[[int], str], held: list[socket.socket]
) -> dict[int, int]:
    """Open connections, keeping `per_worker` welcomed ones in every worker (the
    others closed again): counted per process, no worker would be at a limit of
    `per_worker * WORKERS`, so only shared counts refuse the next connection."""
    port = server.port("smtp")
    on = dict.fromkeys(worker_pids(server), 0)
    assert len(on) == WORKERS, on
    deadline = time.monotonic() + 15
    attempt = 0
    while any(n < per_worker for n in on.values()):
        if time.monotonic() > deadline:
            raise AssertionError(f"could not hold {per_worker} connections in every worker: {on}")
        sock, reply = _greeting(port, source(attempt))
        attempt += 1
        if not reply.startswith(b"220 "):  # a connection closed here is not noticed yet
            sock.close()
            time.sleep(0.05)
            continue
        pid = owner(server, "smtp", sock)
        assert pid in on, f"served by pid {pid}, not by a worker {sorted(on)}"
        if on[pid] < per_worker:
            on[pid] += 1
            held.append(sock)
        else:
            sock.close()
    time.sleep(0.2)  # the extra connections closed: their closes noticed
    return on


def test_per_ip_limit_is_shared_by_workers(limited: MailServer) -> None:
    port = limited.port("smtp")
    held: list[socket.socket] = []
    try:
        # max_connections_per_ip = 4: two connections held in each of the two workers.
        where = _hold_in_each_worker(limited, 2, lambda _: "127.0.0.1", held)
        for _ in range(8):
            sock, reply = _greeting(port)
            sock.close()
            assert reply.startswith(b"421 4.7.0"), (reply, where)
        held.pop(0).close()
        _hold(port, "127.0.0.1", held)  # room again once the close is noticed
        sock, reply = _greeting(port)  # and the newcomer counts: at the limit again
        sock.close()
        assert reply.startswith(b"421 4.7.0"), reply
    finally:
        for s in held:
            s.close()


def test_total_limit_is_shared_by_workers(limited: MailServer) -> None:
    port = limited.port("smtp")
    held: list[socket.socket] = []
    try:
        # max_connections = 6: three held in each worker, from many addresses
        # (so none is at the per-IP limit of 4).
        where = _hold_in_each_worker(limited, 3, lambda i: f"127.0.0.{2 + i % 40}", held)
        for i in range(6):
            sock, reply = _greeting(port, f"127.0.0.{100 + i}")
            sock.close()
            assert reply.startswith(b"421 4.7.0"), (reply, where)
    finally:
        for s in held:
            s.close()


RATE = 6  # connections a minute from one address


@pytest.fixture(scope="module")
def rated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    # No trusted network: loopback is not exempt from the rate here.
    yield from _smtp_only(tmp_path_factory, "rated.test", {"trust": {"connections_per_minute": RATE}})


def test_connection_rate_is_shared_by_workers(rated: MailServer) -> None:
    """connections_per_minute counts an address's connections in every worker
    together: per worker, two would let twice the rate in."""
    port = rated.port("smtp")
    replies: list[bytes] = []
    served_by: set[int] = set()
    for _ in range(2 * RATE):
        sock, reply = _greeting(port, "127.0.0.3")  # not the harness's address, which start() used
        if reply.startswith(b"220 "):
            served_by.add(owner(rated, "smtp", sock))
        sock.close()
        replies.append(reply[:9] if reply.startswith(b"421") else reply[:3])
    assert replies == [b"220"] * RATE + [b"421 4.7.0"] * RATE, (replies, served_by)


def test_stop_leaves_no_worker(tmp_path: Path) -> None:
    server = MailServer(
        tmp_path,
        "stop.test",
        listeners=("smtp", "imap", "http"),
        extra={"server": {"workers": WORKERS}},
    )
    try:
        server.start()
        pids = wait_ready(server)
        # A session in flight in each worker: an idle one is told the server stops.
        smtp = spread(server, "smtp", lambda: smtp_line(server), lambda ln: ln.sock)
        imap = socket.create_connection(("127.0.0.1", server.port("imap")), timeout=10)
        assert imap.recv(4096).startswith(b"* OK")
        # SIGTERM, and watch for serve's exit: by then its workers must be gone
        # (stopped and reaped by it, not merely about to go on their own).
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while server.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        left = [p for p in pids if alive(p)]
    finally:
        rc = server.stop()
    assert rc == 0, server.log()
    assert not left, f"workers outlived serve: {left}\n{server.log()}"
    for ln, _ in smtp:
        assert ln.reply().startswith(b"421 4.3.2"), server.log()
        ln.close()
    rest = b""
    while chunk := imap.recv(4096):
        rest += chunk
    assert b"* BYE" in rest, rest
    imap.close()


def test_greylisting_with_workers_lets_the_retry_through_on_any_worker(tmp_path: Path) -> None:
    """The main process keeps the triplets: once the delay has passed, a retry is let
    through whichever worker accepts its connection (kept per worker, one landing
    on the other worker would be deferred again)."""
    zone = Zone()
    zone.add("sender.test", "TXT", "v=spf1 ip4:127.0.0.1 -all", ttl=0)  # SPF passes; no DMARC
    dns = DNSServer(zone)
    dns.start_in_thread()
    server = MailServer(
        tmp_path,
        "grey.test",
        listeners=("smtp",),
        extra={
            "server": {"workers": WORKERS},
            "dns": {"nameservers": [f"127.0.0.1:{dns.port}"]},
            "trust": {"greylisting": True, "greylist_delay": "1s"},  # 127.0.0.1 untrusted
        },
    )
    server.cli("user", "add", "bob@grey.test", "--password", "bob-grey-pw")
    body = b"From: <a@sender.test>\r\nTo: <bob@grey.test>\r\nSubject: grey\r\n\r\nhello\r\n"
    try:
        server.start()
        with (smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=20) as s,
              pytest.raises(smtplib.SMTPDataError) as first):
            s.sendmail("a@sender.test", ["bob@grey.test"], body)
        assert first.value.smtp_code == 451 and b"4.7.1" in first.value.smtp_error
        time.sleep(1.2)
        for _ in range(8):  # new connections: the kernel spreads them over the workers
            with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=20) as s:
                s.sendmail("a@sender.test", ["bob@grey.test"], body)
        assert len(inbox(server, "bob@grey.test")) == 8
    finally:
        rc = server.stop()
        dns.stop_thread()
    assert rc == 0, server.log()
    log = server.log()
    assert len([ln for ln in log.splitlines() if "greylisted" in ln]) == 1, log
    # Both workers took connections (this test would not show much otherwise).
    assert re.search(r"smtpd\[w0\]: connect from", log) and re.search(r"smtpd\[w1\]: connect from", log), log
