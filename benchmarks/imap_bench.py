"""IMAP figures: a mixed workload, a big mailbox, memory per idle connection.

    python -m benchmarks.imap_bench                 # 10 clients x 100 accounts, commands/s and p99
    python -m benchmarks.imap_bench --dovecot       # the same workload against Dovecot too
    python -m benchmarks.imap_bench --big 100000    # SELECT / FETCH / SEARCH / QRESYNC times
    python -m benchmarks.imap_bench --idle 5000     # server memory per idle IDLE connection (--tls: imaps)

Each workload session: LOGIN, LIST, SELECT INBOX, FETCH headers of all,
FETCH two bodies, STORE flags, EXPUNGE, APPEND, LOGOUT. The server is a real
`mailhouse serve` on 127.0.0.1 (Dovecot: `dovecot -F` with service_count=0
on a free port), the clients asyncio sockets in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import ssl
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from mailhouse.auth.passwords import hash_password
from mailhouse.store.models import AppendItem, LocalTarget
from mailhouse.store.sqlite import SQLiteStore
from mailhouse.world import MailServer, free_port

PASSWORD = "bench-pw"
DOMAIN = "bench.test"
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


def sample(n: int, size: int = 2000) -> bytes:
    body = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * (size // 56 + 1))[:size]
    return (
        f"From: Sender {n} <sender{n}@example.org>\r\nTo: user@{DOMAIN}\r\nSubject: message {n}\r\n"
        f"Date: Mon, 7 Feb 2022 21:52:25 -0800\r\nMessage-ID: <{n}@example.org>\r\n\r\n{body}\r\n"
    ).encode()


class Client:
    """A minimal IMAP client: one command at a time, literals read whole."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.n = 0

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24, ssl=tls)
        await reader.readline()
        return cls(reader, writer)

    async def cmd(self, text: str, literal: bytes | None = None) -> tuple[bytes, list[bytes]]:
        self.n += 1
        tag = f"t{self.n}"
        if literal is None:
            self.writer.write(f"{tag} {text}\r\n".encode())
        else:
            self.writer.write(f"{tag} {text} {{{len(literal)}+}}\r\n".encode() + literal + b"\r\n")
        lines: list[bytes] = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("closed")
            m = _LITERAL.search(line)
            if m is not None:
                line += await self.reader.readexactly(int(m.group(1)))
                lines.append(line)
                continue
            if line.startswith(tag.encode() + b" "):
                if not line.startswith(tag.encode() + b" OK"):
                    raise RuntimeError(f"{text[:40]}: {line!r}")
                return line, lines
            lines.append(line)

    def close(self) -> None:
        self.writer.close()


# --- servers ------------------------------------------------------------------------------------


async def seed_store(data_dir: Path, accounts: int, per_account: int, big: int = 0) -> None:
    store = SQLiteStore(data_dir)
    await store.open()
    try:
        await store.add_domain(DOMAIN, exist_ok=True)
        h = hash_password(PASSWORD)
        for a in range(accounts):
            acc = await store.add_account(f"user{a}@{DOMAIN}", h)
            target = LocalTarget(acc.id, acc.address, acc.address, "INBOX")
            if per_account:
                await store.append_many(target, [AppendItem(sample(i)) for i in range(per_account)])
            if big:
                start = time.perf_counter()
                for base in range(0, big, 2000):
                    items = [
                        AppendItem(sample(i, 300), ("\\Seen",) if i % 3 else ())
                        for i in range(base, min(big, base + 2000))
                    ]
                    await store.append_many(target, items)
                print(f"seeded {big} messages in {time.perf_counter() - start:.1f}s")
    finally:
        await store.close()


def start_mailhouse(root: Path, accounts: int, per_account: int, big: int = 0) -> MailServer:
    srv = MailServer(root, DOMAIN, listeners=("imap", "imaps"))
    asyncio.run(seed_store(srv.data_dir, accounts, per_account, big))
    return srv.start()


def server_pid_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Dovecot:
    """Dovecot on a free 127.0.0.1 port with a passwd-file of the bench users."""

    def __init__(self, root: Path, accounts: int, per_account: int) -> None:
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        users = root / "users"
        users.write_text(
            "".join(f"user{a}@{DOMAIN}:{{PLAIN}}{PASSWORD}:::::\n" for a in range(accounts))
        )
        mail = root / "mail"
        for a in range(accounts):
            cur = mail / f"user{a}@{DOMAIN}" / "Maildir"
            for sub in ("cur", "new", "tmp"):
                (cur / sub).mkdir(parents=True, exist_ok=True)
            for i in range(per_account):
                (cur / "cur" / f"{i}.bench:2,").write_bytes(sample(i))
        subprocess.run(["chown", "-R", "dovenull:dovenull", str(root)], check=False)
        self.conf = root / "dovecot.conf"
        self.conf.write_text(
            f"""
base_dir = {root}/run
state_dir = {root}/state
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{mail}/%u/Maildir
mail_uid = dovenull
mail_gid = dovenull
first_valid_uid = 1
log_path = {root}/dovecot.log
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = static
  args = uid=dovenull gid=dovenull home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  service_count = 0
}}
service imap {{
  service_count = 0
}}
"""
        )
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.conf)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import socket

                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --- workloads --------------------------------------------------------------------------------------


async def warm_up(port: int, clients: int, accounts: int) -> float:
    """Log every account in once: the first login pays argon2 (~0.3 s of CPU),
    later ones hit the login cache, as a client reconnecting would."""
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(clients)

    async def one(a: int) -> None:
        async with sem:
            c = await Client.connect(port)
            await c.cmd(f"LOGIN user{a}@{DOMAIN} {PASSWORD}")
            await c.cmd("LOGOUT")
            c.close()

    await asyncio.gather(*(one(a) for a in range(accounts)))
    return time.perf_counter() - t0


async def workload(port: int, clients: int, accounts: int, seconds: float) -> tuple[int, list[float]]:
    warm = await warm_up(port, clients, accounts)
    print(f"(first login of {accounts} accounts: {warm:.1f} s)")
    latencies: list[float] = []
    count = 0
    stop = time.monotonic() + seconds

    async def timed(c: Client, text: str, literal: bytes | None = None) -> list[bytes]:
        nonlocal count
        t0 = time.perf_counter()
        _, lines = await c.cmd(text, literal)
        latencies.append(time.perf_counter() - t0)
        count += 1
        return lines

    async def one(k: int) -> None:
        a = k
        while time.monotonic() < stop:
            a = (a + clients) % accounts
            c = await Client.connect(port)
            try:
                await timed(c, f"LOGIN user{a}@{DOMAIN} {PASSWORD}")
                await timed(c, 'LIST "" "*"')
                lines = await timed(c, "SELECT INBOX")
                exists = max((int(x.split()[1]) for x in lines if x.endswith(b"EXISTS\r\n")), default=0)
                if exists:
                    await timed(c, "FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])")
                    await timed(c, f"FETCH {exists} BODY[]")
                    await timed(c, f"FETCH {max(1, exists - 1)} BODY[]")
                    await timed(c, f"STORE {exists} +FLAGS (\\Deleted)")
                    await timed(c, "EXPUNGE")
                await timed(c, "APPEND INBOX (\\Seen)", sample(a))
                await timed(c, "LOGOUT")
            finally:
                c.close()

    await asyncio.gather(*(one(k) for k in range(clients)))
    return count, latencies


def report(name: str, count: int, latencies: list[float], seconds: float) -> None:
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    med = statistics.median(latencies) if latencies else 0.0
    print(f"{name:10s} {count / seconds:8.0f} commands/s   median {med * 1000:6.2f} ms   p99 {p99 * 1000:6.2f} ms")


def run_workload(args: argparse.Namespace, root: Path) -> None:
    srv = start_mailhouse(root / "mh", args.accounts, args.messages)
    try:
        count, lat = asyncio.run(workload(srv.port("imap"), args.clients, args.accounts, args.seconds))
        report("mailhouse", count, lat, args.seconds)
    finally:
        srv.stop()
    if args.dovecot:
        if shutil.which("dovecot") is None:
            print("dovecot: not installed (apt-get install dovecot-imapd)")
            return
        dc = Dovecot(root / "dovecot", args.accounts, args.messages)
        try:
            count, lat = asyncio.run(workload(dc.port, args.clients, args.accounts, args.seconds))
            report("dovecot", count, lat, args.seconds)
        finally:
            dc.stop()


async def big_mailbox(port: int, size: int) -> None:
    c = await Client.connect(port)
    await c.cmd(f"LOGIN user0@{DOMAIN} {PASSWORD}")
    await c.cmd("ENABLE QRESYNC")

    async def timed(label: str, text: str) -> list[bytes]:
        t0 = time.perf_counter()
        _, lines = await c.cmd(text)
        print(f"{label:34s} {(time.perf_counter() - t0) * 1000:8.1f} ms  ({len(lines)} lines)")
        return lines

    lines = await timed(f"SELECT INBOX ({size} messages)", "SELECT INBOX")
    head = b"".join(lines).decode()
    validity = re.search(r"UIDVALIDITY (\d+)", head)
    modseq = re.search(r"HIGHESTMODSEQ (\d+)", head)
    assert validity and modseq
    await timed("UID FETCH 1:* (UID FLAGS)", "UID FETCH 1:* (UID FLAGS)")
    await timed("UID SEARCH UNSEEN", "UID SEARCH UNSEEN")
    await timed("UID STORE 1:100 +FLAGS (\\Flagged)", "UID STORE 1:100 +FLAGS.SILENT (\\Flagged)")
    await c.cmd("STORE 5 +FLAGS.SILENT (\\Deleted)")
    await c.cmd("EXPUNGE")
    await c.cmd("UNSELECT")
    await timed(
        "SELECT (QRESYNC ...) resync",
        f"SELECT INBOX (QRESYNC ({validity.group(1)} {modseq.group(1)} 1:{size}))",
    )
    await timed("UID SEARCH SUBJECT (headers)", 'UID SEARCH SUBJECT "message 99999"')
    await c.cmd("LOGOUT")
    c.close()


async def idle_connections(port: int, n: int, pid: int, tls: bool) -> None:
    before = server_pid_rss(pid)
    clients: list[Client] = []
    ctx: ssl.SSLContext | None = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    for k in range(n):
        c = await Client.connect(port, ctx)
        await c.cmd(f"LOGIN user{k % 10}@{DOMAIN} {PASSWORD}")
        await c.cmd("SELECT INBOX")
        c.writer.write(b"i IDLE\r\n")
        await c.reader.readline()
        clients.append(c)
    await asyncio.sleep(1.0)
    after = server_pid_rss(pid)
    print(f"{n} idle IDLE connections{' (TLS)' if tls else ''}: server RSS {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB, "
          f"{(after - before) / n / 1024:.1f} KB per connection")
    for c in clients:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--messages", type=int, default=20, help="messages per account at the start")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--dovecot", action="store_true")
    ap.add_argument("--big", type=int, default=0, help="time a mailbox of this many messages instead")
    ap.add_argument("--idle", type=int, default=0, help="measure memory of this many IDLE connections instead")
    ap.add_argument("--tls", action="store_true", help="with --idle: connect with implicit TLS (imaps)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="imap-bench-"))
    os.chmod(root, 0o755)
    try:
        if args.big:
            srv = start_mailhouse(root / "mh", 1, 0, args.big)
            try:
                asyncio.run(big_mailbox(srv.port("imap"), args.big))
            finally:
                srv.stop()
        elif args.idle:
            srv = start_mailhouse(root / "mh", 10, 5)
            try:
                assert srv.proc is not None
                port = srv.port("imaps" if args.tls else "imap")
                asyncio.run(idle_connections(port, args.idle, srv.proc.pid, args.tls))
            finally:
                srv.stop()
        else:
            run_workload(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
