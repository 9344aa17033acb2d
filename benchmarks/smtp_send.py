#!/usr/bin/env python3
"""Outbound (send) benchmark: how fast mailhouse drains a full queue to one remote
domain, against Postfix draining the same load to the same receiver, same run.

The receiver is Postfix's ``smtp-sink`` (accepts and discards, counts messages) on a
free 127.0.0.1 port: the remote domain ``sink.test``.  For each target:

  1. load:    N messages (4 KB) are injected while the target cannot deliver them;
  2. release: the target may deliver, and the clock starts;
  3. drain:   until smtp-sink has counted every message (and the queue is empty).

mailhouse: a fresh ``mailhouse serve`` with a ``submission`` listener and
  ``[routes] "sink.test" = 127.0.0.1:DEAD`` (a port where nothing listens) and
  ``retry_interval = "1h"``; the messages are submitted (STARTTLS + AUTH PLAIN) by S
  parallel sessions, each is tried once (connection refused: deferred for an
  hour).  Then ``serve`` is stopped (SIGTERM), the route is rewritten to the sink,
  ``serve`` is started again, and ``mailhouse queue retry`` releases the queue.
Postfix: a private Postfix (benchmarks/postfix_peer.py, relay mode, relayhost =
  [127.0.0.1]:SINK) takes the same messages over SMTP from 127.0.0.1 (mynetworks,
  no TLS/AUTH) and puts every one on hold (``smtpd_end_of_data_restrictions =
  check_client_access static:HOLD``; ``in_flow_delay = 0`` since nothing is
  delivered while loading); ``postsuper -H ALL`` + ``postqueue -f`` release them.

Figures per target: inject msg/s (not comparable between targets: TLS + AUTH and
the failing attempts for mailhouse, plain SMTP into hold for Postfix), the
release -> first message at the sink latency, the **drain rate** (messages / time
from the first to the last message at the sink) and the end-to-end rate
(messages / time from the release to the last message at the sink), and the
target's CPU per message during the drain.  Goal: mailhouse >= 2x Postfix.

    python3 benchmarks/smtp_send.py                  # 10,000 messages each, a few minutes
    python3 benchmarks/smtp_send.py --quick          # 1,000 messages
    python3 benchmarks/smtp_send.py --targets mailhouse --messages 3000
    python3 benchmarks/smtp_send.py --rcpts-per-message 100 --quick

Standard library only (uvloop used when importable).  Postfix's programs come from
Debian's ``postfix`` package; the postfix target needs root.  Only 127.0.0.1 is
ever connected to.  A global ``--timeout`` stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import email.utils
import functools
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

try:  # run as a file (python3 benchmarks/smtp_send.py) or as a module
    from benchmarks.postfix_peer import (
        PostfixInstance,
        postfix_available,
        postfix_version,
        proc_tree_cpu,
        wait_for_banner,
    )
    from benchmarks.smtp_receive import free_udp_port, make_body
except ImportError:  # pragma: no cover - depends on how it is started
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from postfix_peer import (  # type: ignore[no-redef]
        PostfixInstance,
        postfix_available,
        postfix_version,
        proc_tree_cpu,
        wait_for_banner,
    )
    from smtp_receive import free_udp_port, make_body  # type: ignore[no-redef]

REPO_ROOT = Path(__file__).resolve().parent.parent
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
POSTSUPER = shutil.which("postsuper") or "/usr/sbin/postsuper"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
SMTP_RECEIVE = Path(__file__).resolve().parent / "smtp_receive.py"

HOST = "127.0.0.1"
SINK_DOMAIN = "sink.test"
SENDER_DOMAIN = "client.bench.test"
SENDER = f"sender@{SENDER_DOMAIN}"
SENDER_PW = "send-bench-pw"
CLIENT_NAME = "client.bench.test"
SUBJECT = "mailhouse send benchmark"
DISTINCT_RCPTS = 100  # "100 recipients at one remote domain": rcpt0..rcpt99@sink.test
POSTFIX_RCPT_LIMIT = 50  # relay_destination_recipient_limit (Postfix's default)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------
# Messages: the same for both targets
# --------------------------------------------------------------------------------------


def recipients_for(idx: int, per_message: int) -> list[str]:
    """Message idx goes to per_message of rcpt0..rcpt99@sink.test, round robin."""
    start = (idx * per_message) % DISTINCT_RCPTS
    return [f"rcpt{(start + j) % DISTINCT_RCPTS}@{SINK_DOMAIN}" for j in range(per_message)]


class Messages:
    def __init__(self, size: int, per_message: int, tag: str) -> None:
        self.per_message = per_message
        self.tag = tag
        self.date = email.utils.formatdate(localtime=False)
        self.body = make_body(max(size - len(self._headers(99_999, ["x" * 20])), 64))

    def _headers(self, idx: int, rcpts: list[str]) -> bytes:
        to = rcpts[0] if len(rcpts) == 1 else f"undisclosed-recipients ({len(rcpts)})"
        return (
            f"From: Benchmark Sender <{SENDER}>\r\n"
            f"To: {to}\r\n"
            f"Subject: {SUBJECT} #{idx}\r\n"
            f"Date: {self.date}\r\n"
            f"Message-ID: <{self.tag}.{idx}@{CLIENT_NAME}>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "Content-Transfer-Encoding: 7bit\r\n"
            "\r\n"
        ).encode("ascii")

    def get(self, idx: int) -> tuple[list[str], bytes]:
        rcpts = recipients_for(idx, self.per_message)
        return rcpts, self._headers(idx, rcpts) + self.body + b".\r\n"


# --------------------------------------------------------------------------------------
# The injector: S asyncio sessions, optional STARTTLS + AUTH PLAIN, PIPELINING if offered
# --------------------------------------------------------------------------------------


class SMTPError(Exception):
    pass


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    lines = []
    while True:
        line = await reader.readuntil(b"\n")
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            break
    try:
        return int(lines[-1][:3]), b"".join(lines)
    except ValueError:
        return 0, b"".join(lines)


async def _expect(reader: asyncio.StreamReader, what: str, ok: tuple[int, ...]) -> bytes:
    code, text = await _reply(reader)
    if code not in ok:
        raise SMTPError(f"{what}: {text[:200]!r}")
    return text


async def _session_open(
    port: int, auth: tuple[str, str] | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 16)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await _expect(reader, "greeting", (220,))
    writer.write(f"EHLO {CLIENT_NAME}\r\n".encode())
    ehlo = await _expect(reader, "EHLO", (250,))
    if auth is not None:
        writer.write(b"STARTTLS\r\n")
        await _expect(reader, "STARTTLS", (220,))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        await writer.start_tls(ctx, server_hostname=None)
        writer.write(f"EHLO {CLIENT_NAME}\r\n".encode())
        ehlo = await _expect(reader, "EHLO after STARTTLS", (250,))
        token = base64.b64encode(f"\0{auth[0]}\0{auth[1]}".encode()).decode()
        writer.write(f"AUTH PLAIN {token}\r\n".encode())
        await _expect(reader, "AUTH", (235,))
    return reader, writer, b"PIPELINING" in ehlo.upper()


@dataclass
class InjectResult:
    seconds: float
    ok: int
    errors: int
    first_error: str


async def inject(
    port: int, messages: Messages, count: int, sessions: int, auth: tuple[str, str] | None,
    timeout: float,
) -> InjectResult:
    counter = iter(range(count))
    state = {"ok": 0, "errors": 0}
    first_error: list[str] = []

    async def session() -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter, bool] | None = None
        try:
            for idx in counter:
                rcpts, data = messages.get(idx)
                cmds = [f"MAIL FROM:<{SENDER}>\r\n".encode()]
                cmds += [f"RCPT TO:<{r}>\r\n".encode() for r in rcpts]
                cmds.append(b"DATA\r\n")
                try:
                    if conn is None:
                        conn = await _session_open(port, auth)
                    reader, writer, pipelining = conn
                    if pipelining:
                        writer.write(b"".join(cmds))
                        await _expect(reader, "MAIL", (250,))
                        for _ in rcpts:
                            await _expect(reader, "RCPT", (250, 251))
                        await _expect(reader, "DATA", (354,))
                    else:
                        for c in cmds:
                            writer.write(c)
                            await _expect(reader, c[:4].decode(), (250, 251, 354))
                    writer.write(data)
                    await _expect(reader, "end of data", (250,))
                    state["ok"] += 1
                except (SMTPError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                    # The message is lost (counted); the session starts afresh.
                    state["errors"] += 1
                    if not first_error:
                        first_error.append(f"{type(e).__name__}: {e}")
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn[1].close()
                        conn = None
                    if state["errors"] > 50:
                        return
                    await asyncio.sleep(0.05)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn[1].write(b"QUIT\r\n")
                    await asyncio.wait_for(_reply(conn[0]), 2)
                with contextlib.suppress(Exception):
                    conn[1].close()

    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(session()) for _ in range(sessions)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        first_error.append(f"injection timed out after {timeout:.0f}s")
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            first_error.append(f"{type(t.exception()).__name__}: {t.exception()}")
    seconds = time.perf_counter() - t0
    errors = max(state["errors"], count - state["ok"])
    return InjectResult(seconds, state["ok"], errors, first_error[0] if first_error else "")


def run_inject(*args: object, use_uvloop: bool) -> InjectResult:
    coro = inject(*args)  # type: ignore[arg-type]
    if use_uvloop:
        import uvloop

        return uvloop.run(coro)  # type: ignore[no-any-return,unused-ignore]
    return asyncio.run(coro)


# --------------------------------------------------------------------------------------
# The receiver: smtp-sink, with its running message counter read in a thread
# --------------------------------------------------------------------------------------


class Sink:
    """smtp-sink -c on a free port; ``count`` follows its mesg= counter, and the
    time each new count was first seen is kept for first/last arrival times."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.count = 0
        self._cond = threading.Condition()
        self._reached: list[tuple[int, float]] = []  # (count, perf_counter) at each change
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not os.path.exists(SMTP_SINK):
            raise BenchError("smtp-sink not found (apt-get install postfix)")
        cmd = [SMTP_SINK, "-4", "-c", "-h", f"mx.{SINK_DOMAIN}", "-m", "1000"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # required when run as root
        cmd += [f"{HOST}:{self.port}", "1000"]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        wait_for_banner(HOST, self.port, 15)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        buf = b""
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.perf_counter()
            buf += chunk
            # Only the last complete record counts (smtp-sink -c writes one per
            # message): found from the end, so this reader's CPU (taken from the
            # target on this machine) stays small: splitting every record cost
            # 36 µs a message, a twentieth of mailhouse's own.
            end = max(buf.rfind(b"\r"), buf.rfind(b"\n"))
            if end < 0:
                continue
            done, buf = buf[:end], buf[end + 1 :]
            n = None
            i = done.rfind(b"mesg=")
            if i >= 0:
                with contextlib.suppress(ValueError, IndexError):
                    n = int(done[i + 5 :].split()[0])
            if n is not None and n != self.count:
                with self._cond:
                    self.count = n
                    self._reached.append((n, now))
                    self._cond.notify_all()

    def wait_for(self, target: int, timeout: float) -> float:
        """Wait until the counter reaches target; perf_counter when it was seen."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.count < target:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    raise TimeoutError(f"smtp-sink counted {self.count} of {target} messages")
                self._cond.wait(min(left, 1.0))
            return next(t for n, t in self._reached if n >= target)

    def first_after(self, base: int) -> float | None:
        with self._cond:
            return next((t for n, t in self._reached if n > base), None)

    def stop(self) -> None:
        _stop_process(self.proc, 5)
        if self.proc is not None and self.proc.stdout is not None:
            with contextlib.suppress(Exception):
                self.proc.stdout.close()

    def cpu_seconds(self) -> float:
        return proc_tree_cpu(self.proc.pid) if self.proc else 0.0


def _stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0, group: bool = False) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass
class Result:
    target: str
    messages: int
    rcpts_per_message: int
    sessions: int
    size: int
    inject_seconds: float = 0.0
    inject_msgs_per_s: float = 0.0
    inject_errors: int = 0
    sink_transactions: int = 0  # what smtp-sink counted during the drain
    release_to_first_s: float = 0.0  # release -> first message at the sink
    first_to_last_s: float = 0.0  # first -> last message at the sink
    release_to_last_s: float = 0.0  # release -> last message at the sink
    drain_msgs_per_s: float = 0.0  # messages / first_to_last_s: THE figure
    end_to_end_msgs_per_s: float = 0.0  # messages / release_to_last_s
    queue_empty_after_s: float | None = None  # release -> queue seen empty (polled)
    cpu_us_per_msg: float | None = None  # the target's CPU during the drain, per message
    sink_cpu_us_per_msg: float | None = None
    note: str = ""


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------


class MailhouseSender:
    def __init__(
        self, workdir: Path, cmd: list[str], sink: Sink, start_timeout: float, concurrency: int = 20,
        workers: int = 0,
    ) -> None:
        self.workers = workers
        self.name = f"mailhouse-w{workers}" if workers else "mailhouse"
        self.dir = workdir / self.name
        self.concurrency = concurrency
        self.cmd = cmd
        self.sink = sink
        self.start_timeout = start_timeout
        self.port = free_port()  # submission
        self.dead_port = free_port()  # nothing listens here while loading
        self.dns_port = free_udp_port()
        self.config = self.dir / "mailhouse.toml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.dns_proc: subprocess.Popen[bytes] | None = None
        self.logf: BinaryIO | None = None
        self.description = (
            f"mailhouse ({shlex.join(cmd)}), submission on {HOST}:{self.port}, "
            f"connections_per_destination = {concurrency}"
            + (f", [server] workers = {workers}" if workers else "")
        )

    def _write_config(self, route_port: int) -> None:
        self.config.write_text(
            f'hostname = "mx.{SENDER_DOMAIN}"\n'
            f'domains = ["{SENDER_DOMAIN}"]\n'
            'data_dir = "data"\n'
            "\n[listen]\n"
            f'submission = "{HOST}:{self.port}"\n'
            "\n[queue]\n"
            'retry_interval = "1h"\n'
            'max_lifetime = "1d"\n'
            'delay_warning = "0"\n'
            f"connections_per_destination = {self.concurrency}\n"
            f"max_connections = {max(100, self.concurrency)}\n"
            'connect_timeout = "5s"\n'
            'idle_timeout = "5s"\n'
            "\n[routes]\n"
            f'"{SINK_DOMAIN}" = "{HOST}:{route_port}"\n'
            # The benchmark's sender is a bulk sender: the per-user sending limits
            # (200 messages an hour by default) would refuse most of the load.
            "\n[trust.rate_limits]\n"
            "messages_per_hour = 0\nmessages_per_day = 0\nrecipients_per_hour = 0\nrecipients_per_day = 0\n"
            "\n[dns]\n"
            f'nameservers = ["{HOST}:{self.dns_port}"]\n'
            # Workers split the queue and the connection limits between them.
            + (f"\n[server]\nworkers = {self.workers}\n" if self.workers else "")
        )

    def _env(self) -> dict[str, str]:
        # This tree after any PYTHONPATH given (so a snapshot can be benchmarked).
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(REPO_ROOT)) if p)
        # Compiled once, as an installed package is (pip compiles at install): with
        # PYTHONDONTWRITEBYTECODE in the environment, every `mailhouse queue retry`
        # compiled its modules again, 60-70 ms of the timed release.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.dir / "pycache")
        return env

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [*self.cmd, "-c", str(self.config), *args], cwd=self.dir, env=self._env(),
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if r.returncode != 0:
            raise BenchError(f"mailhouse {' '.join(args)} failed (rc={r.returncode}): "
                             f"{(r.stderr or r.stdout).strip()[-800:]}")
        return r

    def queue_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.cli("queue", "list", "--json").stdout or "[]")
        return rows

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_config(self.dead_port)
        self.dns_proc = subprocess.Popen(
            [sys.executable, str(SMTP_RECEIVE), "--dns-stub", str(self.dns_port),
             str(self.dir / "dns-stats.json")]
        )
        self.cli("user", "add", SENDER, "--password", SENDER_PW)
        self._serve()

    def _serve(self) -> None:
        self.logf = open(self.dir / "serve.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*self.cmd, "-c", str(self.config), "serve"], cwd=self.dir, env=self._env(),
            stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"mailhouse serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                wait_for_banner(HOST, self.port, 0.5)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise BenchError(f"mailhouse did not greet within {self.start_timeout:.0f}s:\n"
                                     f"{self.log_tail()}") from None

    def _stop_serve(self) -> None:
        _stop_process(self.proc, 30, group=True)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in its group
        self.proc = None
        with contextlib.suppress(Exception):
            if self.logf is not None:
                self.logf.close()

    def stop(self) -> None:
        self._stop_serve()
        _stop_process(self.dns_proc, 5)

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join((self.dir / "serve.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        return proc_tree_cpu(self.proc.pid) if self.proc is not None else 0.0

    def load(self, messages: Messages, count: int, sessions: int, use_uvloop: bool,
             timeout: float) -> InjectResult:
        res = run_inject(self.port, messages, count, sessions, (SENDER, SENDER_PW), timeout,
                         use_uvloop=use_uvloop)
        if res.ok:
            self._wait_all_deferred(res.ok, timeout)
        return res

    def _wait_all_deferred(self, count: int, timeout: float) -> None:
        """Every message queued and tried once (refused: next attempt in an hour), so
        nothing is due when serve comes back with the route to the sink."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.queue_rows()
            tried = sum(1 for r in rows if int(r.get("attempts") or 0) >= 1)
            if len(rows) >= count and tried == len(rows):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"after {timeout:.0f}s, {len(rows)} queued, {tried} tried once; "
                                 f"expected {count}:\n{self.log_tail()}")
            log(f"  mailhouse: {len(rows)} queued, {tried} tried once; waiting")
            time.sleep(2)

    def release(self) -> float:
        """Restart serve with the route to the sink, then `queue retry`: returns the
        perf_counter of the release (just before `queue retry`)."""
        self._stop_serve()
        self._write_config(self.sink.port)
        self._serve()
        t0 = time.perf_counter()
        self.cli("queue", "retry")
        return t0

    def queue_empty(self) -> bool:
        return self.queue_rows() == []


class PostfixSender:
    name = "postfix"

    def __init__(self, workdir: Path, sink: Sink, extra: dict[str, str], concurrency: int = 20) -> None:
        self.port = free_port()
        self.sink = sink
        main = {
            # Postfix's default (default_destination_concurrency_limit = 20), or the
            # --destination-concurrency given, like mailhouse's connections_per_destination.
            "relay_destination_concurrency_limit": str(concurrency),
            # Loading: every message goes straight to the hold queue, and smtpd does not
            # wait for deliveries to catch up (there are none while loading).
            "smtpd_end_of_data_restrictions": "check_client_access static:HOLD",
            "in_flow_delay": "0",
            **extra,
        }
        self.pf = PostfixInstance(
            workdir / "postfix", self.port, mode="relay", relayhost=f"[{HOST}]:{sink.port}",
            domain=SINK_DOMAIN, hostname=f"mx.{SENDER_DOMAIN}", extra_main=main,
        )
        self.description = (
            f"Postfix {postfix_version()} relay, relayhost [{HOST}]:{sink.port}"
            + "".join(f", {k}={v}" for k, v in extra.items())
        )

    def start(self) -> None:
        self.pf.start()

    def stop(self) -> None:
        self.pf.stop()

    def cpu_seconds(self) -> float:
        return self.pf.cpu_seconds()

    def held(self) -> int:
        n = 0
        for _root, _dirs, files in os.walk(self.pf.queue_dir / "hold"):
            n += len(files)
        return n

    def load(self, messages: Messages, count: int, sessions: int, use_uvloop: bool,
             timeout: float) -> InjectResult:
        res = run_inject(self.port, messages, count, sessions, None, timeout, use_uvloop=use_uvloop)
        deadline = time.monotonic() + timeout
        while res.ok and not (self.held() >= res.ok and self.pf.queued_count() == self.held()):
            if time.monotonic() > deadline:
                raise BenchError(f"{self.held()} of {res.ok} messages on hold\n{self.pf.log_tail()}")
            time.sleep(0.2)
        return res

    def _run(self, *cmd: str) -> None:
        env = dict(os.environ, MAIL_CONFIG=str(self.pf.config_dir))
        r = subprocess.run([*cmd], capture_output=True, text=True, timeout=120, env=env, check=False)
        if r.returncode != 0:
            raise BenchError(f"{shlex.join(cmd)} failed (rc={r.returncode}): {r.stderr.strip()}")

    def release(self) -> float:
        t0 = time.perf_counter()
        self._run(POSTSUPER, "-c", str(self.pf.config_dir), "-H", "ALL")
        self._run(POSTQUEUE, "-c", str(self.pf.config_dir), "-f")
        return t0

    def queue_empty(self) -> bool:
        return self.pf.queued_count() == 0


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def run_target(
    target: MailhouseSender | PostfixSender, sink: Sink, count: int, per_message: int,
    sessions: int, size: int, use_uvloop: bool, timeout: float,
) -> Result:
    res = Result(target.name, count, per_message, sessions, size)
    messages = Messages(size, per_message, f"{int(time.time())}.{os.getpid()}.{target.name}")
    log(f"== {target.name}: {target.description}")
    target.start()
    base = sink.count
    log(f"  loading {count} messages ({per_message} recipient(s) each, {size} B) over {sessions} sessions")
    inj = target.load(messages, count, sessions, use_uvloop, timeout)
    res.inject_seconds = inj.seconds
    res.inject_errors = inj.errors
    res.inject_msgs_per_s = inj.ok / inj.seconds if inj.seconds else 0.0
    log(f"  injected {inj.ok}/{count} in {inj.seconds:.2f}s = {res.inject_msgs_per_s:.1f} msg/s"
        + (f"  ERRORS {inj.errors}: {inj.first_error}" if inj.errors else ""))
    if inj.ok == 0:
        raise BenchError(f"nothing could be injected into {target.name}: {inj.first_error}")
    # The rates are over what was actually queued, not what was asked for.
    res.messages = inj.ok
    if sink.count != base:
        raise BenchError(f"{sink.count - base} messages reached the sink while loading {target.name}")
    # Postfix splits more than relay_destination_recipient_limit (50) recipients into
    # several transactions (smtp-sink counts transactions); mailhouse sends one.
    per_msg_tx = math.ceil(per_message / POSTFIX_RCPT_LIMIT) if isinstance(target, PostfixSender) else 1
    expected = inj.ok * per_msg_tx
    log(f"  releasing; waiting for {expected} transactions at the sink")
    base = sink.count
    cpu0, sink_cpu0 = target.cpu_seconds(), sink.cpu_seconds()
    t_release = target.release()
    if isinstance(target, MailhouseSender):  # the restarted serve: count from here
        cpu0 = target.cpu_seconds()
    t_last = sink.wait_for(base + expected, timeout)
    cpu1, sink_cpu1 = target.cpu_seconds(), sink.cpu_seconds()
    t_first = sink.first_after(base) or t_last
    res.sink_transactions = sink.count - base
    res.release_to_first_s = t_first - t_release
    res.first_to_last_s = t_last - t_first
    res.release_to_last_s = t_last - t_release
    res.drain_msgs_per_s = inj.ok / res.first_to_last_s if res.first_to_last_s > 0 else 0.0
    res.end_to_end_msgs_per_s = inj.ok / res.release_to_last_s if res.release_to_last_s > 0 else 0.0
    res.cpu_us_per_msg = (cpu1 - cpu0) / inj.ok * 1e6
    res.sink_cpu_us_per_msg = (sink_cpu1 - sink_cpu0) / inj.ok * 1e6
    # The queue must be empty too (polled only now, so the polling takes no CPU from
    # the drain; the figure is an upper bound).
    deadline = time.monotonic() + 60
    while not target.queue_empty():
        if time.monotonic() > deadline:
            res.note = "queue not empty 60 s after the last message reached the sink"
            break
        time.sleep(0.1)
    else:
        res.queue_empty_after_s = time.perf_counter() - t_release
    if sink.count - base != expected:
        res.note = (res.note + "; " if res.note else "") + (
            f"smtp-sink counted {sink.count - base} transactions, expected {expected}")
    log(describe(res))
    return res


def describe(r: Result) -> str:
    return (
        f"  {r.target}: drain {r.drain_msgs_per_s:.1f} msg/s ({r.messages} in {r.first_to_last_s:.2f}s, "
        f"first at the sink {r.release_to_first_s:.2f}s after the release), end to end "
        f"{r.end_to_end_msgs_per_s:.1f} msg/s, CPU {fmt(r.cpu_us_per_msg, '.0f')} us/msg"
        + (f"  NOTE: {r.note}" if r.note else "")
    )


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(results: list[Result]) -> str:
    head = (
        f"{'target':<10} {'msgs':>6} {'rcpt':>4} {'inject/s':>9} {'rel->1st s':>10} "
        f"{'1st->last s':>11} {'drain/s':>8} {'end2end/s':>9} {'q empty s':>9} "
        f"{'CPU us/msg':>10} {'sink us/msg':>11}"
    )
    out = [head, "-" * len(head)]
    for r in results:
        out.append(
            f"{r.target:<10} {r.messages:>6} {r.rcpts_per_message:>4} {r.inject_msgs_per_s:>9.1f} "
            f"{r.release_to_first_s:>10.2f} {r.first_to_last_s:>11.2f} {r.drain_msgs_per_s:>8.1f} "
            f"{r.end_to_end_msgs_per_s:>9.1f} {fmt(r.queue_empty_after_s, '.2f'):>9} "
            f"{fmt(r.cpu_us_per_msg, '.0f'):>10} {fmt(r.sink_cpu_us_per_msg, '.0f'):>11}"
            + (f"  ! {r.note}" if r.note else "")
        )
    return "\n".join(out)


# SIGTERM/SIGHUP/SIGINT/SIGALRM (the --timeout) become SystemExit, so the finally
# blocks stop every process started.
def _on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGALRM):
        signal.signal(sig, _on_signal)


def _block_signals() -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def cm() -> Iterator[None]:
        sigs = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGALRM}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    return cm()


def mailhouse_command(arg: str | None) -> list[str]:
    if arg:
        return shlex.split(arg)
    exe = shutil.which("mailhouse")
    return [exe] if exe else [sys.executable, "-m", "mailhouse"]


def uvloop_version() -> str | None:
    try:
        import uvloop
    except ImportError:
        return None
    return str(getattr(uvloop, "__version__", "?"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See benchmarks/README.md for what each figure means.",
    )
    p.add_argument("--targets", default="mailhouse,postfix", help="comma list of mailhouse,postfix (default: %(default)s)")
    p.add_argument("--messages", type=int, help="messages per target (default 10000; --quick 1000)")
    p.add_argument("--quick", action="store_true", help="1,000 messages")
    p.add_argument("--size", type=int, default=4096, help="message size in bytes (default: %(default)s)")
    p.add_argument(
        "--rcpts-per-message", type=int, default=1, metavar="K",
        help="recipients per message, round robin over rcpt0..rcpt99@sink.test (default 1:"
        " the messages are spread over the 100 recipients; 100: each message to all 100)",
    )
    p.add_argument("--sessions", type=int, default=10, help="parallel injection sessions (default: %(default)s)")
    p.add_argument(
        "--destination-concurrency", type=int, default=20, metavar="N",
        help="connections to the sink, for both: mailhouse's connections_per_destination and"
        " Postfix's relay_destination_concurrency_limit (default: %(default)s, both defaults)",
    )
    p.add_argument("--timeout", type=float, help="stop everything after this many seconds (default 900; --quick 300)")
    p.add_argument("--phase-timeout", type=float, default=600.0, help="seconds allowed for loading or draining")
    p.add_argument("--mailhouse-cmd", help="command that starts mailhouse (default: `mailhouse` on PATH,"
                   " else `python -m mailhouse` from this tree)")
    p.add_argument("--start-timeout", type=float, default=60.0, help="seconds for mailhouse to greet")
    p.add_argument("--mailhouse-workers", default="0", metavar="N,M",
                   help="run the mailhouse target once per value of [server] workers (0: one process;"
                   " N: N workers drain the queue, a share each), labelled mailhouse / mailhouse-wN"
                   " (default: %(default)s)")
    p.add_argument("--postfix-set", action="append", default=[], metavar="NAME=VALUE",
                   help="extra main.cf setting for the Postfix target (repeatable)")
    p.add_argument("--no-uvloop", action="store_true", help="stock asyncio for the injector")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH ('-': stdout)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, queues)")
    a = p.parse_args(argv)
    a.targets = [t for t in a.targets.split(",") if t]
    try:
        a.mailhouse_workers = [int(x) for x in a.mailhouse_workers.split(",") if x.strip()]
    except ValueError:
        p.error("--mailhouse-workers wants numbers, e.g. 0,2")
    if not a.mailhouse_workers or not all(0 <= n <= 16 for n in a.mailhouse_workers):
        p.error("--mailhouse-workers: 0..16")
    for t in a.targets:
        if t not in ("mailhouse", "postfix"):
            p.error(f"unknown target {t!r}")
    if not 1 <= a.rcpts_per_message <= DISTINCT_RCPTS:
        p.error(f"--rcpts-per-message must be 1..{DISTINCT_RCPTS}")
    if not 1 <= a.sessions <= 50:
        p.error("--sessions must be 1..50")
    if not 1 <= a.destination_concurrency <= 200:
        p.error("--destination-concurrency must be 1..200")
    try:
        a.postfix_set = {k.strip(): v.strip() for k, v in (kv.split("=", 1) for kv in a.postfix_set)}
    except ValueError:
        p.error("--postfix-set wants NAME=VALUE")
    a.count = a.messages or (1000 if a.quick else 10000)
    if not 1 <= a.count <= 50000:
        p.error("--messages must be 1..50000")
    a.timeout = a.timeout or (300.0 if a.quick else 900.0)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    use_uvloop = not a.no_uvloop and uvloop_version() is not None
    install_signal_handlers()
    signal.setitimer(signal.ITIMER_REAL, a.timeout)
    workdir = Path(tempfile.mkdtemp(prefix="mailhouse-send-bench-"))
    os.chmod(workdir, 0o755)
    meta: dict[str, object] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "uvloop": uvloop_version() if use_uvloop else None,
        "postfix": postfix_version(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "messages": a.count,
        "rcpts_per_message": a.rcpts_per_message,
        "size": a.size,
        "sessions": a.sessions,
        "destination_concurrency": a.destination_concurrency,
        "workdir": str(workdir),
    }
    log(f"send benchmark: {a.count} messages of {a.size} B, {a.rcpts_per_message} recipient(s) each "
        f"at {SINK_DOMAIN}, injected over {a.sessions} sessions; targets {a.targets}; timeout {a.timeout:.0f}s")
    if os.getloadavg()[0] > 1.0:
        log(f"note: load average {os.getloadavg()[0]:.2f} at start: compare targets within one run only")
    results: list[Result] = []
    skipped: dict[str, str] = {}
    sink = Sink(workdir)
    t_all = time.perf_counter()
    try:
        sink.start()
        meta["sink"] = shlex.join(sink.cmd)
        log(f"receiver: {shlex.join(sink.cmd)}")
        def postfix() -> PostfixSender:
            if not postfix_available():
                raise BenchError("Postfix not installed, or not root")
            return PostfixSender(workdir, sink, a.postfix_set, a.destination_concurrency)

        def mailhouse(workers: int) -> MailhouseSender:
            return MailhouseSender(workdir, mailhouse_command(a.mailhouse_cmd), sink,
                                   a.start_timeout, a.destination_concurrency, workers)

        # One run per target, and per value of --mailhouse-workers for mailhouse.
        plan: list[tuple[str, Callable[[], MailhouseSender | PostfixSender]]] = []
        for name in a.targets:
            if name == "postfix":
                plan.append((name, postfix))
            else:
                plan += [(f"mailhouse-w{n}" if n else "mailhouse", functools.partial(mailhouse, n))
                         for n in a.mailhouse_workers]
        for name, make in plan:
            target: MailhouseSender | PostfixSender | None = None
            try:
                target = make()
                results.append(run_target(target, sink, a.count, a.rcpts_per_message, a.sessions,
                                          a.size, use_uvloop, a.phase_timeout))
            except (BenchError, OSError, TimeoutError, subprocess.SubprocessError) as e:
                skipped[name] = str(e)
                log(f"!! {name} skipped/aborted: {e}")
            finally:
                if target is not None:
                    with _block_signals():
                        target.stop()
    except SystemExit as e:
        log(f"!! stopped ({'timeout' if e.code == 128 + signal.SIGALRM else f'exit {e.code}'}): cleaning up")
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        with _block_signals():
            sink.stop()
            if a.keep:
                log(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    meta["total_seconds"] = round(time.perf_counter() - t_all, 1)

    by = {r.target: r for r in results}
    ratio: dict[str, float] = {}
    text = "\n" + table(results) + "\n\n"
    mh_names = [r.target for r in results if r.target.startswith("mailhouse")]
    if mh_names and "postfix" in by and by["postfix"].drain_msgs_per_s:
        pf = by["postfix"]
        for name in mh_names:
            mh = by[name]
            # The first mailhouse variant keeps the plain keys (as before --mailhouse-workers).
            key = "" if name == mh_names[0] else f"{name}_"
            d = ratio[f"{key}drain"] = round(mh.drain_msgs_per_s / pf.drain_msgs_per_s, 2)
            e = None
            if pf.end_to_end_msgs_per_s:
                e = ratio[f"{key}end_to_end"] = round(mh.end_to_end_msgs_per_s / pf.end_to_end_msgs_per_s, 2)
            text += (
                f"{name} / Postfix drain: {d:.2f}x [{'ok' if d >= 2 else 'below'} goal >= 2x]"
                + (f";  end to end (release -> last at the sink): {e:.2f}x" if e is not None else "")
                + "\n"
            )
    else:
        text += "(no ratio: mailhouse and Postfix were not both measured)\n"
    text += "".join(f"skipped {k}: {v.splitlines()[0] if v else ''}\n" for k, v in skipped.items())
    text += f"total {meta['total_seconds']} s\n"
    doc = {"meta": meta, "results": [asdict(r) for r in results], "ratio": ratio, "skipped": skipped}
    if a.json == "-":
        print(text, file=sys.stderr)
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        print(text)
        if a.json:
            Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
            log(f"JSON written to {a.json}")
    failed = bool(skipped) or any(r.note or r.inject_errors for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
