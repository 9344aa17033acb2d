"""IMAP figures: a mixed workload against mailhouse and Dovecot, a big mailbox.

    python -m benchmarks.imap_bench                 # 10 clients x 100 accounts, commands/s and p99
    python -m benchmarks.imap_bench --dovecot       # the same workload against Dovecot in the same run
    python -m benchmarks.imap_bench --dovecot --rounds 3   # alternate the targets 3 times
    python -m benchmarks.imap_bench --big 100000    # SELECT / FETCH / SEARCH / QRESYNC times
    python -m benchmarks.imap_bench --workers 2     # mailhouse with [server] workers = 2
    python -m benchmarks.imap_idle --count 5000     # memory per idle IDLE connection (own script)

Each workload session (a new connection each time, as issue 4 asks): LOGIN,
LIST "" "*", SELECT INBOX, FETCH the headers of all, FETCH two bodies (BODY[],
which sets \\Seen), STORE +FLAGS (\\Deleted), EXPUNGE, APPEND, LOGOUT: 10
commands (FETCH body counts twice). The clients are asyncio sockets in this process (one command at a
time per client); the targets run one after the other, never together, on
127.0.0.1:

* mailhouse: a real ``mailhouse serve`` of this tree, its store seeded with
  100 accounts of 20 messages (argon2id password hashes).
* Dovecot (``--dovecot``): ``dovecot -F`` with a private config on a free
  port, ``service_count = 0`` (process reuse) for imap and imap-login, the
  same accounts and messages in Maildirs, a passwd-file with ``{PLAIN}``
  passwords.

Fairness, and what each side pays:

* Durability. mailhouse answers APPEND (and COPY) after an fsync'd commit
  (SQLite WAL, ``synchronous=FULL``, group commit); flag changes (STORE, the
  implicit \\Seen) and EXPUNGE commit without waiting for an fsync (durable
  at the next fsync'd commit; a crash can bring an expunged message back,
  never lose one). Dovecot runs with its
  default ``mail_fsync = optimized`` (written out in the config). Traced with
  strace, one session of this workload against it (November 2026, Dovecot
  2.3.19): APPEND fsyncs the new message file and fdatasyncs two index files
  before its OK; STORE and EXPUNGE fsync nothing (Maildir renames and
  unlinks); LIST, SELECT and a FETCH BODY[] sometimes fdatasync an index or
  cache file (~1 fsync + ~3 fdatasync per session in all). So both make
  APPEND durable before answering, and neither EXPUNGE; ``--dovecot-strace`` counts Dovecot's calls during a run
  (strace slows it down: not for the figures).
* Passwords. Dovecot checks ``{PLAIN}`` passwords (no hashing); mailhouse
  verifies argon2id once per account and then remembers the success
  (``mailhouse.auth.service``; Dovecot's ``auth_cache`` is the same idea).
  A warm-up logs every account in once before timing, for both targets.
* CPU. The load generator shares the machine's cores with the target; the
  server's own CPU per command is printed too (for mailhouse: ``serve`` and
  its workers; for Dovecot: the master and every child; reaped ones included).

Other work on the machine moves every figure: the load average is printed
at the start and the end; compare the targets within one run (``--rounds``
alternates them to spread the noise).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# `mailhouse serve` runs as `python -m mailhouse` in its own folder: it must
# import this tree, whatever is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.postfix_peer import proc_tree_cpu  # noqa: E402
from mailhouse.auth.passwords import hash_password  # noqa: E402
from mailhouse.store.models import AppendItem, LocalTarget  # noqa: E402
from mailhouse.store.sqlite import SQLiteStore  # noqa: E402
from mailhouse.world import MailServer, free_port  # noqa: E402

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
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> Client:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 24, ssl=tls)
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
        btag = tag.encode() + b" "
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("closed")
            m = _LITERAL.search(line)
            if m is not None:
                line += await self.reader.readexactly(int(m.group(1)))
                lines.append(line)
                continue
            if line.startswith(btag):
                if not line.startswith(btag + b"OK"):
                    raise RuntimeError(f"{text[:40]}: {line!r}")
                return line, lines
            lines.append(line)

    def close(self) -> None:
        self.writer.close()


# --- processes ----------------------------------------------------------------------------------------


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def server_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


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


def start_mailhouse(
    root: Path, accounts: int, per_account: int, big: int = 0,
    extra: dict[str, dict[str, object]] | None = None,
) -> MailServer:
    srv = MailServer(root, DOMAIN, listeners=("imap", "imaps"), extra=extra)
    asyncio.run(seed_store(srv.data_dir, accounts, per_account, big))
    return srv.start()


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
        # mail_fsync = optimized is Dovecot's default, written out because the
        # comparison depends on it (see the module docstring). The auth
        # service's client_limit covers imap's process_limit (else doveconf warns).
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
mail_fsync = optimized
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
service auth {{
  client_limit = 2000
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
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the workload ---------------------------------------------------------------------------------------

COMMANDS = ("LOGIN", "LIST", "SELECT", "FETCH headers", "FETCH body", "STORE", "EXPUNGE", "APPEND", "LOGOUT")


@dataclass
class Result:
    name: str
    seconds: float
    count: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cpu: float = 0.0  # server CPU seconds during the timed part
    client_cpu: float = 0.0  # this process (the load generator)
    load: str = ""

    @property
    def all(self) -> list[float]:
        return sorted(x for v in self.latencies.values() for x in v)

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not xs:
        return 0.0
    return xs[max(0, min(len(xs) - 1, int(len(xs) * p + 0.999999) - 1))]


async def warm_up(port: int, clients: int, accounts: int) -> float:
    """Log every account in once: mailhouse's first login of an account pays
    argon2 (~0.15 s of CPU), later ones hit its cache, as a client
    reconnecting would."""
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


async def workload(
    name: str, port: int, pid: int, clients: int, accounts: int, seconds: float, spy: str | None = None
) -> Result:
    warm = await warm_up(port, clients, accounts)
    print(f"  {name}: first login of {accounts} accounts took {warm:.1f} s (not timed)", file=sys.stderr)
    with py_spy(pid, spy):
        return await _timed_load(name, port, pid, clients, accounts, seconds)


async def _timed_load(name: str, port: int, pid: int, clients: int, accounts: int, seconds: float) -> Result:
    res = Result(name, seconds, load=loadavg())
    stop = time.monotonic() + seconds

    async def timed(c: Client, label: str, text: str, literal: bytes | None = None) -> list[bytes]:
        t0 = time.perf_counter()
        _, lines = await c.cmd(text, literal)
        res.latencies[label].append(time.perf_counter() - t0)
        res.count += 1
        return lines

    async def one(k: int) -> None:
        # Client k uses accounts k, k + clients, ...: no two clients share an
        # account at the same time.
        a = k
        while time.monotonic() < stop:
            a = (a + clients) % accounts
            c = await Client.connect(port)
            try:
                await timed(c, "LOGIN", f"LOGIN user{a}@{DOMAIN} {PASSWORD}")
                await timed(c, "LIST", 'LIST "" "*"')
                lines = await timed(c, "SELECT", "SELECT INBOX")
                exists = max((int(x.split()[1]) for x in lines if x.endswith(b"EXISTS\r\n")), default=0)
                if exists:
                    await timed(
                        c, "FETCH headers",
                        "FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])",
                    )
                    await timed(c, "FETCH body", f"FETCH {exists} BODY[]")
                    await timed(c, "FETCH body", f"FETCH {max(1, exists - 1)} BODY[]")
                    await timed(c, "STORE", f"STORE {exists} +FLAGS (\\Deleted)")
                    await timed(c, "EXPUNGE", "EXPUNGE")
                await timed(c, "APPEND", "APPEND INBOX (\\Seen)", sample(a))
                await timed(c, "LOGOUT", "LOGOUT")
            finally:
                c.close()

    cpu0 = proc_tree_cpu(pid)
    own0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(clients)))
    res.seconds = time.perf_counter() - t0  # the last sessions finish after `stop`
    res.cpu = proc_tree_cpu(pid) - cpu0
    res.client_cpu = time.process_time() - own0
    return res


def report(res: Result) -> None:
    xs = res.all
    med = statistics.median(xs) if xs else 0.0
    print(
        f"{res.name:12s} {res.rate:7.0f} commands/s  p50 {med * 1000:6.2f} ms  p99 {pct(xs, 0.99) * 1000:7.2f} ms"
        f"  CPU/cmd server {res.cpu / max(1, res.count) * 1e6:4.0f} us, clients"
        f" {res.client_cpu / max(1, res.count) * 1e6:4.0f} us  ({res.count} in {res.seconds:.1f} s, load {res.load})"
    )


def report_commands(results: list[Result]) -> None:
    print(f"{'p50 / p99 ms':14s}" + "".join(f"{r.name:>22s}" for r in results))
    for label in COMMANDS:
        cells = []
        for r in results:
            xs = sorted(r.latencies.get(label, []))
            cells.append(f"{pct(xs, 0.5) * 1000:9.2f} / {pct(xs, 0.99) * 1000:8.2f}" if xs else f"{'-':>21s}")
        print(f"{label:14s}" + "".join(f"{c:>22s}" for c in cells))


@contextlib.contextmanager
def py_spy(pid: int, out: str | None) -> Iterator[subprocess.Popen[bytes] | None]:
    """Record the server with py-spy while the load runs (--py-spy FILE)."""
    if not out:
        yield None
        return
    fmt = "speedscope" if out.endswith(".json") else "raw" if out.endswith(".txt") else "flamegraph"
    # --subprocesses: with [server] workers the IMAP sessions run in serve's children.
    spy = subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "-o", out, "-f", fmt, "-r", "250", "--threads", "--nonblocking",
         "--subprocesses"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    try:
        yield spy
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


def mailhouse_extra(workers: int) -> dict[str, dict[str, object]] | None:
    """Config tables for ``--workers``; 0 (the default) is left out of the config."""
    return {"server": {"workers": workers}} if workers else None


def mailhouse_name(workers: int) -> str:
    return f"mailhouse-w{workers}" if workers else "mailhouse"


def run_mailhouse(args: argparse.Namespace, root: Path) -> Result:
    srv = start_mailhouse(root, args.accounts, args.messages, extra=mailhouse_extra(args.workers))
    try:
        assert srv.proc is not None
        # srv.proc is `serve`: proc_tree_cpu counts it and its workers (found anew at each call).
        return asyncio.run(
            workload(
                mailhouse_name(args.workers), srv.port("imap"), srv.proc.pid, args.clients, args.accounts,
                args.seconds, args.py_spy,
            )
        )
    finally:
        srv.stop()


def run_dovecot(args: argparse.Namespace, root: Path) -> Result:
    dc = Dovecot(root, args.accounts, args.messages)
    strace: subprocess.Popen[bytes] | None = None
    try:
        if args.dovecot_strace:
            strace = subprocess.Popen(
                ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync,sync_file_range", "-o", str(root / "strace.txt"),
                 "-p", str(dc.pid)],
            )
            time.sleep(0.5)
        return asyncio.run(workload("dovecot", dc.port, dc.pid, args.clients, args.accounts, args.seconds))
    finally:
        if strace is not None:
            strace.send_signal(signal.SIGINT)
            strace.wait(10)
            print((root / "strace.txt").read_text(), file=sys.stderr)
        dc.stop()


def run_workload(args: argparse.Namespace, root: Path) -> None:
    have_dovecot = args.dovecot and shutil.which("dovecot") is not None
    if args.dovecot and not have_dovecot:
        print("dovecot: not installed (apt-get install dovecot-imapd)")
    print(f"load average at start: {loadavg()}  ({os.cpu_count()} CPUs)")
    results: list[Result] = []
    for r in range(args.rounds):
        mh = run_mailhouse(args, root / f"mh{r}")
        report(mh)
        results.append(mh)
        if have_dovecot:
            dc = run_dovecot(args, root / f"dovecot{r}")
            report(dc)
            results.append(dc)
            print(f"  round {r + 1}: mailhouse / Dovecot = {mh.rate / dc.rate:.2f}x commands/s")
    print(f"load average at end: {loadavg()}")
    if have_dovecot and args.rounds > 1:
        mhs = [x.rate for x in results if x.name.startswith("mailhouse")]
        dcs = [x.rate for x in results if x.name == "dovecot"]
        print(
            f"median over {args.rounds} rounds: mailhouse {statistics.median(mhs):.0f}, Dovecot"
            f" {statistics.median(dcs):.0f} commands/s: {statistics.median(mhs) / statistics.median(dcs):.2f}x"
        )
    if args.per_command:
        report_commands(results[-2:] if have_dovecot else results[-1:])


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--messages", type=int, default=20, help="messages per account at the start")
    ap.add_argument("--seconds", type=float, default=15.0, help="timed load per target and round")
    ap.add_argument("--rounds", type=int, default=1, help="run the targets this many times, alternating")
    ap.add_argument("--dovecot", action="store_true", help="also run the workload against Dovecot")
    ap.add_argument("--dovecot-strace", action="store_true", help="count Dovecot's fsync calls (strace -c)")
    ap.add_argument("--per-command", action="store_true", help="p50 / p99 per command (last round)")
    ap.add_argument("--py-spy", metavar="FILE", help="record mailhouse with py-spy (.json: speedscope, .svg)")
    ap.add_argument("--big", type=int, default=0, help="time a mailbox of this many messages instead")
    ap.add_argument("--workers", type=int, default=0, help="mailhouse's [server] workers (default 0: one process)")
    args = ap.parse_args()
    if args.workers < 0:
        ap.error("--workers wants a number >= 0")
    root = Path(tempfile.mkdtemp(prefix="imap-bench-"))
    os.chmod(root, 0o755)
    try:
        if args.big:
            srv = start_mailhouse(root / "mh", 1, 0, args.big, extra=mailhouse_extra(args.workers))
            try:
                asyncio.run(big_mailbox(srv.port("imap"), args.big))
            finally:
                srv.stop()
        else:
            run_workload(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
