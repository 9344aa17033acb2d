"""Server memory per idle IDLE connection (issue 4: under 50 KB each with 5,000 open).

    python -m benchmarks.imap_idle                  # 5,000 connections
    python -m benchmarks.imap_idle --count 1000 --tls

Starts a real ``mailhouse serve`` of this tree on 127.0.0.1 (IMAP, IMAPS and
SMTP listeners; 10 accounts of 5 messages), logs every account in once (the
first login of an account pays argon2: not what is measured), then opens
``--count`` connections that each LOGIN (to one of the 10 accounts), SELECT
INBOX and send IDLE, and reads the server's VmRSS (/proc/PID/status) before
the first and after the last, once things have settled: the difference
divided by the count is the figure. Then one message is delivered over SMTP
to user0 and the script checks that an IDLE connection of user0 gets its
``* n EXISTS``, and how long it took.

The server's configuration raises ``[limits] max_connections`` and
``max_connections_per_ip`` above the count (every connection comes from
127.0.0.1), and this process raises its RLIMIT_NOFILE to the hard limit,
which the server inherits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import smtplib
import ssl
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.imap_bench import DOMAIN, PASSWORD, Client, seed_store, server_rss  # noqa: E402
from benchmarks.postfix_peer import _descendants  # noqa: E402


def tree_rss(pid: int) -> int:
    """serve's resident memory and its workers' (with --workers the sessions
    live in the workers; what they share is counted in each, and cancels out
    of the per-connection difference)."""
    total = 0
    for p in [pid, *_descendants(pid)]:
        try:
            total += server_rss(p)
        except OSError:  # gone meanwhile
            pass
    return total
from mailhouse.world import MailServer  # noqa: E402

ACCOUNTS = 10


def raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        soft = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


async def open_idle(port: int, k: int, ctx: ssl.SSLContext | None) -> Client:
    c = await Client.connect(port, ctx)
    await c.cmd(f"LOGIN user{k % ACCOUNTS}@{DOMAIN} {PASSWORD}")
    await c.cmd("SELECT INBOX")
    c.writer.write(b"i IDLE\r\n")
    line = await c.reader.readline()
    if not line.startswith(b"+"):
        raise RuntimeError(f"IDLE refused: {line!r}")
    return c


async def run(srv: MailServer, count: int, tls: bool, parallel: int) -> int:
    assert srv.proc is not None
    pid = srv.proc.pid
    port = srv.port("imaps" if tls else "imap")
    ctx: ssl.SSLContext | None = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    # Every account logs in once first (argon2 once per account, then the
    # login cache), and a few sessions run so lazily built state exists.
    for a in range(ACCOUNTS):
        c = await Client.connect(port, ctx)
        await c.cmd(f"LOGIN user{a}@{DOMAIN} {PASSWORD}")
        await c.cmd("SELECT INBOX")
        await c.cmd("LOGOUT")
        c.close()
    await asyncio.sleep(1.0)
    before = tree_rss(pid)
    clients: dict[int, Client] = {}
    sem = asyncio.Semaphore(parallel)
    t0 = time.perf_counter()

    async def one(k: int) -> None:
        async with sem:
            clients[k] = await open_idle(port, k, ctx)

    await asyncio.gather(*(one(k) for k in range(count)))
    opened = time.perf_counter() - t0
    await asyncio.sleep(2.0)
    after = tree_rss(pid)
    per = (after - before) / count
    print(
        f"{count} idle IDLE connections{' (TLS)' if tls else ''} opened in {opened:.1f} s: server RSS "
        f"{before / 1e6:.1f} MB -> {after / 1e6:.1f} MB, {per / 1024:.1f} KB per connection"
        f" (goal: under 50 KB)"
    )

    # A delivery reaches an IDLE session of user0 (issue 4: within 100 ms of the commit).
    watcher = clients[0]  # connection 0 is user0's
    smtp = smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30)
    t1 = time.perf_counter()
    await asyncio.to_thread(
        smtp.sendmail, "someone@example.org", [f"user0@{DOMAIN}"],
        b"From: someone@example.org\r\nSubject: while idling\r\n\r\nhello\r\n",
    )
    accepted = time.perf_counter()
    smtp.quit()
    try:
        line = await asyncio.wait_for(watcher.reader.readline(), 10.0)
    except TimeoutError:
        print("delivery during IDLE: no EXISTS within 10 s")
        return 1
    got = time.perf_counter()
    ok = line.endswith(b"EXISTS\r\n")
    print(
        f"delivery during IDLE: {line.decode().strip()!r} {(got - accepted) * 1000:.0f} ms after the SMTP 250"
        f" ({(got - t1) * 1000:.0f} ms after sending)"
    )
    watcher.writer.write(b"DONE\r\n")
    for c in clients.values():
        c.close()
    return 0 if ok else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--tls", action="store_true", help="connect with implicit TLS (imaps)")
    ap.add_argument("--parallel", type=int, default=50, help="connections being set up at once")
    ap.add_argument("--workers", type=int, default=0, help="[server] workers = N for mailhouse (default 0)")
    args = ap.parse_args()
    limit = raise_nofile(2 * args.count + 200)
    if limit < args.count + 100:
        sys.exit(f"RLIMIT_NOFILE is {limit}: too low for {args.count} connections")
    root = Path(tempfile.mkdtemp(prefix="imap-idle-"))
    os.chmod(root, 0o755)
    srv = MailServer(
        root, DOMAIN, listeners=("imap", "imaps", "smtp"),
        extra={
            "limits": {"max_connections": args.count + 1000, "max_connections_per_ip": args.count + 1000},
            **({"server": {"workers": args.workers}} if args.workers else {}),
        },
    )
    try:
        asyncio.run(seed_store(srv.data_dir, ACCOUNTS, 5))
        srv.start()
        rc = asyncio.run(run(srv, args.count, args.tls, args.parallel))
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
