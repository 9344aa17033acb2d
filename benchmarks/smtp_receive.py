#!/usr/bin/env python3
"""SMTP receive benchmark: mailhouse against Postfix and Postfix's smtp-sink.

Drives N concurrent SMTP sessions sending M realistic RFC 5322 messages (4 KB and
100 KB by default) into each target in turn, with the same load for every target,
and prints messages/s and, for the asyncio generator, p50/p99 of the time from
MAIL FROM to the final 250 after the end-of-data dot.

Targets (``--targets``, run one after the other, each on its own free port):
  sink       Postfix's smtp-sink: accepts and discards (the ceiling).
  postfix    a private Postfix (benchmarks/postfix_peer.py) delivering with
             virtual(8) into a Maildir (the durable peer); "durable" = every
             message is in the Maildir.
  mailhouse  ``mailhouse -c CONFIG serve`` started here on a fresh data dir;
             ``--mailhouse-workers 0,2`` runs it once per value of ``[server]
             workers`` (labelled mailhouse, mailhouse-w2).
  floor      benchmarks/bare_smtp.py: the SMTP dialogue on uvloop and nothing
             else (no parse, no store): what Python alone costs (not a default).
  external   whatever listens on --host/--port (loopback only); nothing started.

Load generators (``--loads``):
  source-new   Postfix's smtp-source, a new connection per message (timed by the
               wall clock).
  source-kept  smtp-source -d: N sessions kept, messages sent back to back.
  async-kept   this script's asyncio generator (uvloop if installed): N kept
               sessions, no pipelining, per-message latency MAIL -> final 250.
  async-new    the same with a new connection per message (not in the defaults).

    python3 benchmarks/smtp_receive.py                 # ~2-3 min, all targets
    python3 benchmarks/smtp_receive.py --quick         # ~30 s
    python3 benchmarks/smtp_receive.py --targets sink,postfix --json out.json
    python3 benchmarks/smtp_receive.py --targets external --port 2525

Standard library only (uvloop used when importable).  Postfix's programs
(postfix, smtp-source, smtp-sink) come from Debian's ``postfix`` package; the
postfix target needs root.  Only loopback addresses are ever connected to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import itertools
import json
import math
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

try:  # run as a file (python3 benchmarks/smtp_receive.py) or as a module
    from benchmarks.postfix_peer import (
        PostfixInstance,
        postfix_available,
        postfix_version,
        proc_tree_cpu,
        wait_for_banner,
    )
except ImportError:  # pragma: no cover - depends on how it is started
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from postfix_peer import (  # type: ignore[no-redef]
        PostfixInstance,
        postfix_available,
        postfix_version,
        proc_tree_cpu,
        wait_for_banner,
    )

REPO_ROOT = Path(__file__).resolve().parent.parent
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"

DOMAIN = "bench.test"
RCPT = f"rcpt@{DOMAIN}"
SENDER = "sender@client.bench.test"
CLIENT_NAME = "client.bench.test"
SUBJECT = "mailhouse receive benchmark"

ALL_TARGETS = ("sink", "floor", "postfix", "postfix-noflow", "mailhouse", "external")
ALL_LOADS = ("source-new", "source-kept", "async-kept", "async-new")
DEFAULT_LOADS = ("source-new", "source-kept", "async-kept")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loopback_only(host: str) -> str:
    """Only 127.0.0.1 is ever a target ('localhost' is taken to mean it)."""
    if host in ("127.0.0.1", "localhost"):
        return "127.0.0.1"
    raise SystemExit(f"--host must be 127.0.0.1: no other address is ever a target ({host!r})")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------

_TEXT = (
    "the quarterly report is attached and the figures for the northern region look better "
    "than we expected after the changes to the delivery schedule please review section "
    "three before the meeting on thursday where we will decide on the budget for next "
    "year and whether to move the archive to the new storage cluster thanks again for the "
    "quick turnaround on the invoices regards from the operations team mail server queue "
    "latency throughput durable message mailbox recipient sender "
)
_WORDS = _TEXT.split()


def make_body(size: int, seed: int = 5322) -> bytes:
    """A text body of roughly ``size`` bytes: CRLF lines of at most 76 characters,
    dot-stuffed (no line starts with '.' anyway), ending with CRLF."""
    rnd = random.Random(seed)
    out: list[str] = []
    total = 0
    para = 0
    while total < size:
        line_words: list[str] = []
        n = 0
        while n < 68:
            w = rnd.choice(_WORDS)
            line_words.append(w)
            n += len(w) + 1
        line = " ".join(line_words)
        if para == 0:
            line = line.capitalize()
        para = (para + 1) % 6
        if para == 0:
            line += "."
        if total + len(line) + 2 > size:
            line = line[: max(size - total - 2, 0)]
        if line.startswith("."):
            line = "." + line
        out.append(line)
        total += len(line) + 2
        if para == 0 and total + 2 <= size:
            out.append("")
            total += 2
    return ("\r\n".join(out) + "\r\n").encode("ascii")


class MessageFactory:
    """RFC 5322 messages of about ``size`` bytes (headers + body), unique
    Message-ID per message, ready for DATA (dot-stuffed, terminator added)."""

    def __init__(self, size: int, run_tag: str) -> None:
        self.size = size
        self.run_tag = run_tag
        self.date = email.utils.formatdate(localtime=True)
        sample = self._headers(999_999)
        self.body = make_body(max(size - len(sample), 64))

    def _headers(self, idx: int) -> bytes:
        return (
            f"From: Benchmark Sender <{SENDER}>\r\n"
            f"To: Benchmark Recipient <{RCPT}>\r\n"
            f"Subject: {SUBJECT} #{idx}\r\n"
            f"Date: {self.date}\r\n"
            f"Message-ID: <{self.run_tag}.{idx}@{CLIENT_NAME}>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "Content-Transfer-Encoding: 7bit\r\n"
            "\r\n"
        ).encode("ascii")

    def data(self, idx: int) -> bytes:
        return self._headers(idx) + self.body + b".\r\n"


def smtp_source_body_len(size: int) -> int:
    """smtp-source's -l is the body only; its headers (From, To, Date, Message-Id,
    Subject) take about this much."""
    hdr = (
        f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\n"
        "Date: Sat, 28 Nov 2026 23:29:27 +0000 (UTC)\r\n"
        f"Message-Id: <1063.0003.0000@{CLIENT_NAME}>\r\nSubject: {SUBJECT}\r\n\r\n"
    )
    return max(size - len(hdr), 80)


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass
class Result:
    target: str
    generator: str  # "smtp-source" | "asyncio"
    connections: str  # "new" (one per message) | "kept"
    sessions: int
    size: int
    messages: int  # sent in all (batch size x repeats)
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0  # wall clock, generator start to last final 250
    msgs_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    durable_seconds: float | None = None  # postfix: start to last message in Maildir
    durable_msgs_per_s: float | None = None
    server_cpu_us_per_msg: float | None = None  # target's processes, incl. delivery
    repeats: int = 0  # the batch of `messages` was sent this many times
    note: str = ""

    @property
    def load(self) -> str:
        return f"{'source' if self.generator == 'smtp-source' else 'async'}-{self.connections}"


def percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


# --------------------------------------------------------------------------------------
# Load generator (a): Postfix's smtp-source
# --------------------------------------------------------------------------------------


def run_smtp_source(
    host: str, port: int, sessions: int, messages: int, size: int, kept: bool, timeout: float
) -> tuple[float, int, str]:
    cmd = [
        SMTP_SOURCE,
        "-4",
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(smtp_source_body_len(size)),
        "-S",
        SUBJECT,
        "-f",
        SENDER,
        "-t",
        RCPT,
        "-M",
        CLIENT_NAME,
    ]
    if kept:
        cmd.append("-d")
    cmd.append(f"{host}:{port}")
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        rc, err = r.returncode, (r.stderr or "").strip()
    except subprocess.TimeoutExpired:
        rc, err = -1, f"smtp-source timed out after {timeout:.0f}s"
    return time.perf_counter() - t0, rc, err


# --------------------------------------------------------------------------------------
# Load generator (b): asyncio, N sessions, no pipelining, per-message latency
# --------------------------------------------------------------------------------------


class SMTPReplyError(Exception):
    def __init__(self, stage: str, code: int, text: bytes) -> None:
        super().__init__(f"{stage}: {code} {text[:120]!r}")
        self.code = code


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    lines = []
    while True:
        line = await reader.readuntil(b"\n")
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            break
    try:
        code = int(lines[-1][:3])
    except ValueError:
        code = 0
    return code, b"".join(lines)


async def _expect(reader: asyncio.StreamReader, stage: str, ok: tuple[int, ...]) -> None:
    code, text = await _reply(reader)
    if code not in ok:
        raise SMTPReplyError(stage, code, text)


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 16)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await _expect(reader, "greeting", (220,))
    writer.write(f"EHLO {CLIENT_NAME}\r\n".encode())
    await _expect(reader, "EHLO", (250,))
    return reader, writer


async def _close(writer: asyncio.StreamWriter | None, reader: asyncio.StreamReader | None) -> None:
    if writer is None:
        return
    with contextlib.suppress(Exception):
        writer.write(b"QUIT\r\n")
        if reader is not None:
            await asyncio.wait_for(_reply(reader), 2)
    with contextlib.suppress(Exception):
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2)


@dataclass
class _LoadState:
    ok: int = 0
    errors: int = 0
    first_error: str = ""


async def async_load(
    host: str,
    port: int,
    sessions: int,
    messages: int,
    size: int,
    kept: bool,
    timeout: float,
    run_tag: str,
) -> tuple[float, int, int, list[float], str]:
    """Returns (wall seconds, ok, errors, latencies in s, first error text)."""
    factory = MessageFactory(size, run_tag)
    mail_cmd = f"MAIL FROM:<{SENDER}>\r\n".encode()
    rcpt_cmd = f"RCPT TO:<{RCPT}>\r\n".encode()
    latencies: list[float] = []
    counter = iter(range(messages))
    state = _LoadState()

    def fail(e: BaseException) -> None:
        state.errors += 1
        if not state.first_error:
            state.first_error = f"{type(e).__name__}: {e}"

    async def session() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        conn_failures = 0
        try:
            for idx in counter:
                try:
                    if writer is None:
                        reader, writer = await _open(host, port)
                    assert reader is not None
                    data = factory.data(idx)
                    t0 = time.perf_counter()
                    writer.write(mail_cmd)
                    await _expect(reader, "MAIL", (250,))
                    writer.write(rcpt_cmd)
                    await _expect(reader, "RCPT", (250, 251))
                    writer.write(b"DATA\r\n")
                    await _expect(reader, "DATA", (354,))
                    writer.write(data)
                    if len(data) > 65536:
                        await writer.drain()
                    await _expect(reader, "end of data", (250,))
                    latencies.append(time.perf_counter() - t0)
                    state.ok += 1
                    if not kept:
                        await _close(writer, reader)
                        reader = writer = None
                except SMTPReplyError as e:
                    fail(e)
                    if e.code in (421, 0):
                        await _close(writer, None)
                        reader = writer = None
                    else:
                        with contextlib.suppress(Exception):
                            assert writer is not None and reader is not None
                            writer.write(b"RSET\r\n")
                            await _reply(reader)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                    fail(e)
                    conn_failures += 1
                    await _close(writer, None)
                    reader = writer = None
                    if conn_failures >= 10:
                        return
                    await asyncio.sleep(0.05)
        finally:
            await _close(writer, reader)

    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(session()) for _ in range(sessions)]

    # Inside the loop a plain signal.signal() handler's SystemExit can be lost
    # (uvloop): stop the sessions and let run_async_load() raise it afterwards.
    def on_signal(signum: int) -> None:
        global _pending_signal
        _pending_signal = signum
        for t in tasks:
            t.cancel()

    loop = asyncio.get_running_loop()
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        state.first_error = state.first_error or f"timed out after {timeout:.0f}s"
    if state.ok < messages:  # unsent messages count as errors too
        state.errors = max(state.errors, messages - state.ok)
    wall = time.perf_counter() - t0
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            fail(t.exception())  # type: ignore[arg-type,unused-ignore]
    return wall, state.ok, state.errors, latencies, state.first_error


def run_async_load(*args: object, use_uvloop: bool) -> tuple[float, int, int, list[float], str]:
    coro = async_load(*args)  # type: ignore[arg-type]
    try:
        if use_uvloop:
            import uvloop

            return uvloop.run(coro)  # type: ignore[no-any-return,unused-ignore]
        return asyncio.run(coro)
    finally:
        # Closing the loop reset its signals to the defaults: put ours back.
        if _handlers_installed:
            install_signal_handlers()
        if _pending_signal is not None and not _cleanup_depth:
            raise SystemExit(128 + _pending_signal)


# --------------------------------------------------------------------------------------
# A loopback DNS stub for mailhouse: NXDOMAIN for every name
# --------------------------------------------------------------------------------------

# The only resolver in /etc/resolv.conf is off this machine, and a benchmark must
# send nothing but loopback traffic: mailhouse gets `[dns] nameservers` pointing
# at this stub (a separate process, so it takes no CPU from the generator's GIL).
# Every answer is NXDOMAIN with a root SOA (negative TTL 300 s), so SPF / DMARC /
# PTR look-ups for the benchmark's names find nothing, as they would for a sender
# without records, and can be cached.

_ROOT_SOA = (
    b"\x00"  # owner: the root
    + (6).to_bytes(2, "big")  # SOA
    + (1).to_bytes(2, "big")  # IN
    + (300).to_bytes(4, "big")  # TTL
    + (22).to_bytes(2, "big")  # rdlength: 1 + 1 + 5 * 4
    + b"\x00\x00"  # mname ".", rname "."
    + b"".join(n.to_bytes(4, "big") for n in (1, 3600, 600, 86400, 300))
)


def dns_stub_answer(query: bytes) -> bytes | None:
    if len(query) < 12:
        return None
    flags = int.from_bytes(query[2:4], "big")
    if flags & 0x8000 or int.from_bytes(query[4:6], "big") != 1:
        return None  # a response, or not exactly one question
    i = 12
    while i < len(query) and query[i] != 0:
        if query[i] & 0xC0:
            return None
        i += 1 + query[i]
    end = i + 5  # the zero label, QTYPE, QCLASS
    if end > len(query):
        return None
    rd = flags & 0x0100
    header = (
        query[0:2]
        + (0x8000 | 0x0400 | rd | 0x0080 | 3).to_bytes(2, "big")  # QR AA RD RA NXDOMAIN
        + (1).to_bytes(2, "big")
        + (0).to_bytes(2, "big")
        + (1).to_bytes(2, "big")
        + (0).to_bytes(2, "big")
    )
    return header + query[12:end] + _ROOT_SOA


def dns_stub_main(port: int, stats_path: str) -> int:
    """Serve NXDOMAIN on 127.0.0.1:port (UDP) until SIGTERM; then write the number
    of queries and the most frequent names to stats_path (JSON)."""
    from collections import Counter

    counts: Counter[str] = Counter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))

    def done(*_: object) -> None:
        Path(stats_path).write_text(
            json.dumps({"queries": sum(counts.values()), "top": counts.most_common(8)})
        )
        os._exit(0)

    signal.signal(signal.SIGTERM, done)
    signal.signal(signal.SIGINT, done)
    while True:
        try:
            data, addr = sock.recvfrom(4096)
        except InterruptedError:
            continue
        reply = dns_stub_answer(data)
        if reply is None:
            continue
        qname, qtype = _dns_question(data)
        counts[f"{qname} {qtype}"] += 1
        with contextlib.suppress(OSError):
            sock.sendto(reply, addr)


def _dns_question(query: bytes) -> tuple[str, int]:
    labels, i = [], 12
    while query[i] != 0:
        labels.append(query[i + 1 : i + 1 + query[i]].decode("ascii", "replace"))
        i += 1 + query[i]
    return ".".join(labels) + ".", int.from_bytes(query[i + 1 : i + 3], "big")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------


# SIGTERM/SIGHUP/SIGINT become SystemExit so that every target is stopped by the finally
# blocks; a signal that arrives while a target is being stopped waits until that
# is done (otherwise it would interrupt the stop and leave the server running).
_cleanup_depth = 0
_pending_signal: int | None = None
_handlers_installed = False


def install_signal_handlers() -> None:
    global _handlers_installed
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _on_signal)
    _handlers_installed = True


def _on_signal(signum: int, _frame: object) -> None:
    global _pending_signal
    if _cleanup_depth:
        _pending_signal = signum
        return
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    global _cleanup_depth
    _cleanup_depth += 1
    try:
        yield
    finally:
        _cleanup_depth -= 1
        if not _cleanup_depth and _pending_signal is not None:
            raise SystemExit(128 + _pending_signal)


class Target:
    name = "?"
    host = "127.0.0.1"
    port = 0
    description = ""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def cpu_seconds(self) -> float | None:
        return None

    def before_run(self) -> object:
        return None

    def durable_time(
        self, token: object, expected: int | None, timeout: float
    ) -> tuple[float, int] | None:
        """For targets that deliver after the 250: wait until ``expected``
        messages (or, if None, all queued ones) are delivered; return
        (perf_counter when seen, number delivered during the run)."""
        return None

    def settle(self) -> None:
        """Between runs: let background work (queues) finish."""

    @contextlib.contextmanager
    def running(self) -> Iterator[Target]:
        try:
            self.start()
            yield self
        finally:
            with _shielded():
                self.stop()


def _stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


class _ProgramTarget(Target):
    """A program started here on a free port, its output in workdir/LOG."""

    log_name = "target.log"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        cmd = self.command()
        self.log = open(self.workdir / self.log_name, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_banner(self.host, self.port, 15)

    def stop(self) -> None:
        _stop_process(self.proc, 5)
        with contextlib.suppress(Exception):
            self.log.close()

    def cpu_seconds(self) -> float | None:
        return proc_tree_cpu(self.proc.pid) if self.proc else None


class SinkTarget(_ProgramTarget):
    name = "sink"
    log_name = "smtp-sink.log"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.description = f"Postfix smtp-sink on {self.host}:{self.port} (accepts and discards)"

    def command(self) -> list[str]:
        if not os.path.exists(SMTP_SINK):
            raise RuntimeError("smtp-sink not found (apt-get install postfix)")
        cmd = [SMTP_SINK, "-4", "-h", "sink.bench.test", "-m", "1000"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # required when run as root
        return [*cmd, f"{self.host}:{self.port}", "1000"]


class FloorTarget(_ProgramTarget):
    name = "floor"
    log_name = "floor.log"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.description = (
            f"benchmarks/bare_smtp.py on {self.host}:{self.port} (the dialogue alone in Python, discards)"
        )

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).with_name("bare_smtp.py")), str(self.port)]


class PostfixTarget(Target):
    name = "postfix"  # or "postfix-noflow"

    def __init__(
        self, workdir: Path, drain_timeout: float, extra: dict[str, str], name: str = "postfix"
    ) -> None:
        self.name = name
        self.port = free_port()
        if name == "postfix-noflow":
            # Postfix with smtpd's inbound flow control off: in_flow_delay (default
            # 1s) pauses each new message while arrivals outpace deliveries.
            extra = {"in_flow_delay": "0", **extra}
        self.pf = PostfixInstance(
            workdir / name, self.port, mode="maildir", domain=DOMAIN, extra_main=extra
        )
        self.drain_timeout = drain_timeout
        self.description = (
            f"Postfix {postfix_version()} on {self.host}:{self.port}, virtual(8) into a Maildir"
            + "".join(f", {k}={v}" for k, v in extra.items())
        )

    def start(self) -> None:
        self.pf.start()

    def stop(self) -> None:
        self.pf.stop()

    def cpu_seconds(self) -> float | None:
        return self.pf.cpu_seconds()

    def before_run(self) -> object:
        return self.pf.delivered_count("rcpt")

    def durable_time(
        self, token: object, expected: int | None, timeout: float
    ) -> tuple[float, int] | None:
        base = int(token)  # type: ignore[call-overload]
        if expected is None:
            with contextlib.suppress(TimeoutError):
                self.pf.wait_queue_empty(timeout)
            return time.perf_counter(), self.pf.delivered_count("rcpt") - base
        t = self.pf.wait_delivered(base + expected, "rcpt", timeout=timeout)
        return t, self.pf.delivered_count("rcpt") - base

    def settle(self) -> None:
        self.pf.wait_queue_empty(self.drain_timeout)
        # Keep the Maildir small: counting it is then cheap, and runs start alike.
        self.pf.clear_maildir("rcpt")


def mailhouse_label(workers: int) -> str:
    """The target's name: ``mailhouse`` for one process, ``mailhouse-wN`` with N workers."""
    return "mailhouse" if workers == 0 else f"mailhouse-w{workers}"


def is_subject(target: str) -> bool:
    """A target the ratios are computed for: mailhouse (any variant) or external."""
    return target in ("mailhouse", "external") or target.startswith("mailhouse-w")


class MailhouseTarget(Target):
    name = "mailhouse"  # or "mailhouse-wN"

    def __init__(
        self,
        workdir: Path,
        cmd: list[str],
        start_timeout: float,
        dns_stub: bool = True,
        workers: int = 0,
    ) -> None:
        self.workers = workers
        self.name = mailhouse_label(workers)
        self.dir = workdir / self.name
        self.port = free_port()
        self.cmd = cmd
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.dns_proc: subprocess.Popen[bytes] | None = None
        self.dns_port = free_udp_port() if dns_stub else None
        self.dns_stats: dict[str, object] | None = None
        self.config = self.dir / "mailhouse.toml"
        self.description = (
            f"mailhouse ({shlex.join(cmd)}) on {self.host}:{self.port}"
            + (f", [server] workers = {workers}" if workers else ", one process")
            + (f", DNS: NXDOMAIN stub on 127.0.0.1:{self.dns_port}" if dns_stub else ", system DNS")
        )

    def _start_dns_stub(self) -> None:
        if self.dns_port is None:
            return
        self.dns_proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--dns-stub",
                str(self.dns_port),
                str(self.dir / "dns-stats.json"),
            ]
        )
        # Ready when it answers.
        q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05probe\x04test\x00\x00\x01\x00\x01"
        deadline = time.monotonic() + 10
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    s.sendto(q, ("127.0.0.1", self.dns_port))
                    if s.recv(512)[:2] == b"\x12\x34":
                        return
        raise RuntimeError("the DNS stub did not answer")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        return env

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'hostname = "mx.{DOMAIN}"\n'
            f'domains = ["{DOMAIN}"]\n'
            'data_dir = "data"\n'
            "\n[listen]\n"
            f'smtp = "{self.host}:{self.port}"\n'
            # Like the Postfix peer (no policy service): the load generator's address
            # is trusted, so no SPF/DKIM/DMARC checks and no connection-rate limit.
            '\n[trust]\ntrusted_networks = ["127.0.0.0/8"]\n'
            # workers = 0 is the default: left out, so trees without the key still run.
            + (f"\n[server]\nworkers = {self.workers}\n" if self.workers else "")
            + (
                f'\n[dns]\nnameservers = ["127.0.0.1:{self.dns_port}"]\n'
                if self.dns_port is not None
                else ""
            )
        )
        self._start_dns_stub()
        base = [*self.cmd, "-c", str(self.config)]
        r = subprocess.run(
            [*base, "user", "add", RCPT, "--password", "x"],
            cwd=self.dir,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"`{shlex.join([*base, 'user', 'add', RCPT, '--password', 'x'])}` failed "
                f"(rc={r.returncode}): {(r.stderr or r.stdout).strip()[-800:]}"
            )
        self.logf = open(self.dir / "serve.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*base, "serve"],
            cwd=self.dir,
            env=self._env(),
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mailhouse serve exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                wait_for_banner(self.host, self.port, 0.5)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mailhouse did not greet with 220 on {self.host}:{self.port} "
                        f"within {self.start_timeout:.0f}s:\n{self.log_tail()}"
                    ) from None

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = (self.dir / "serve.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        # serve runs in its own session: stop its whole process group (by its id).
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.proc is not None:
                os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in its group
        with contextlib.suppress(Exception):
            self.logf.close()
        if self.dns_proc is not None:
            _stop_process(self.dns_proc, 5)
            with contextlib.suppress(OSError, ValueError):
                self.dns_stats = json.loads((self.dir / "dns-stats.json").read_text())
                log(f"  {self.name} DNS queries (to the stub): {self.dns_stats}")

    def cpu_seconds(self) -> float | None:
        # serve and all its descendants (the workers), enumerated again at each call.
        return proc_tree_cpu(self.proc.pid) if self.proc and self.proc.poll() is None else None


class ExternalTarget(Target):
    name = "external"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.description = f"external listener on {host}:{port} (not started here)"

    def start(self) -> None:
        wait_for_banner(self.host, self.port, 10)


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


@dataclass
class Plan:
    sizes: list[int]
    sessions: list[int]
    loads: list[str]
    counts: dict[int, int]  # size -> messages per run
    run_timeout: float
    use_uvloop: bool
    warmup: int
    min_seconds: float
    max_repeats: int
    results: list[Result] = field(default_factory=list)


def run_one(target: Target, plan: Plan, load: str, sessions: int, size: int, tag: str) -> Result:
    """One load against one target; the same batch is repeated (after the target
    settles) until ``plan.min_seconds`` of generator time has accumulated, so fast
    targets are not measured over a few milliseconds."""
    generator, conn = (
        ("smtp-source" if load.startswith("source") else "asyncio"),
        load.split("-")[1],
    )
    kept = conn == "kept"
    messages = plan.counts[size]
    res = Result(target.name, generator, conn, sessions, size, messages)
    latencies: list[float] = []
    notes: list[str] = []
    durable_secs = 0.0
    delivered_total = 0
    durable_ok = True
    cpu0 = target.cpu_seconds()
    while True:
        token = target.before_run()
        t_start = time.perf_counter()
        expected: int | None
        if generator == "smtp-source":
            wall, rc, err = run_smtp_source(
                target.host, target.port, sessions, messages, size, kept, plan.run_timeout
            )
            ok, errors = (messages, 0) if rc == 0 else (0, 1)
            expected = messages if rc == 0 else None  # None: count what arrived
            if rc != 0:
                notes.append(f"smtp-source rc={rc}: {err[-200:]}")
        else:
            wall, ok, errors, lat, first_err = run_async_load(
                target.host,
                target.port,
                sessions,
                messages,
                size,
                kept,
                plan.run_timeout,
                f"{tag}.{res.repeats}",
                use_uvloop=plan.use_uvloop,
            )
            latencies += lat
            expected = ok
            if first_err:
                notes.append(first_err[:200])
        try:
            d = target.durable_time(token, expected, plan.run_timeout)
        except TimeoutError as e:
            d, durable_ok = None, False
            notes.append(str(e).splitlines()[0])
        if d is not None:
            t_durable, delivered = d
            durable_secs += t_durable - t_start
            delivered_total += delivered
            if expected is None:
                ok = delivered  # smtp-source failed part-way: what reached the Maildir
        res.repeats += 1
        res.seconds += wall
        res.ok += ok
        res.errors += errors
        target.settle()
        if res.errors or res.seconds >= plan.min_seconds or res.repeats >= plan.max_repeats:
            break
    cpu1 = target.cpu_seconds()
    res.messages = messages * res.repeats
    res.msgs_per_s = res.ok / res.seconds if res.seconds > 0 else 0.0
    if latencies:
        latencies.sort()
        res.p50_ms = percentile(latencies, 50) * 1000
        res.p99_ms = percentile(latencies, 99) * 1000
    if durable_ok and durable_secs > 0:
        res.durable_seconds = durable_secs
        res.durable_msgs_per_s = delivered_total / durable_secs
    if cpu0 is not None and cpu1 is not None and res.ok:
        res.server_cpu_us_per_msg = (cpu1 - cpu0) / res.ok * 1e6
    res.note = "; ".join(dict.fromkeys(notes))
    return res


def describe(r: Result) -> str:
    s = (
        f"  {r.target:<14} {r.load:<11} s={r.sessions:<3} {fmt_size(r.size):>6} "
        f"{r.ok}/{r.messages} ({r.repeats}x) in {r.seconds:6.2f}s = {r.msgs_per_s:8.1f} msg/s"
    )
    if r.p50_ms is not None:
        s += f"  p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:7.2f} ms"
    if r.durable_msgs_per_s is not None:
        s += f"  durable {r.durable_msgs_per_s:7.1f} msg/s"
    if r.errors:
        s += f"  ERRORS {r.errors}: {r.note}"
    return s


def warm_up(target: Target, plan: Plan) -> None:
    if plan.warmup <= 0:
        return
    token = target.before_run()
    _wall, rc, err = run_smtp_source(
        target.host, target.port, max(plan.sessions), plan.warmup, 4096, True, plan.run_timeout
    )
    if rc != 0:
        raise RuntimeError(f"warm-up against {target.name} failed: {err[-300:]}")
    with contextlib.suppress(TimeoutError):
        target.durable_time(token, plan.warmup, plan.run_timeout)
    target.settle()


def run_target(target: Target, plan: Plan) -> None:
    log(f"== {target.name}: {target.description}")
    with target.running():
        warm_up(target, plan)
        for size in plan.sizes:
            for sessions in plan.sessions:
                for load in plan.loads:
                    tag = f"{int(time.time())}.{os.getpid()}.{target.name}.{load}.{sessions}.{size}"
                    r = run_one(target, plan, load, sessions, size, tag)
                    plan.results.append(r)
                    log(describe(r))
                    target.settle()


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def fmt_size(n: int) -> str:
    return f"{n // 1024}KB" if n % 1024 == 0 else f"{n}B"


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(results: list[Result]) -> str:
    head = (
        f"{'target':<14} {'generator':<11} {'conn':<4} {'sess':>4} {'size':>6} "
        f"{'ok/sent':>11} {'secs':>7} {'msg/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'durable/s':>9} {'srv CPU us/msg':>14}"
    )
    out = [head, "-" * len(head)]
    for r in results:
        out.append(
            f"{r.target:<14} {r.generator:<11} {r.connections:<4} {r.sessions:>4} "
            f"{fmt_size(r.size):>6} {f'{r.ok}/{r.messages}':>11} {r.seconds:>7.2f} "
            f"{r.msgs_per_s:>8.1f} {fmt(r.p50_ms, '.2f'):>7} {fmt(r.p99_ms, '.2f'):>7} "
            f"{fmt(r.durable_msgs_per_s, '.1f'):>9} {fmt(r.server_cpu_us_per_msg, '.0f'):>14}"
            + (f"  ! {r.errors} errors" if r.errors else "")
        )
    return "\n".join(out)


def ratios(results: list[Result], size: int, sessions: int) -> list[dict[str, object]]:
    """mailhouse/Postfix and mailhouse/smtp-sink for each load at (size, sessions), for
    each mailhouse variant (mailhouse, mailhouse-wN) and external."""
    by = {(r.target, r.load): r for r in results if r.size == size and r.sessions == sessions}
    subjects = list(dict.fromkeys(r.target for r in results if is_subject(r.target)))
    out: list[dict[str, object]] = []
    for load, subject in itertools.product(ALL_LOADS, subjects):
        mh = by.get((subject, load))
        if mh is None or mh.errors:
            continue
        row: dict[str, object] = {
            "load": load,
            "size": size,
            "sessions": sessions,
            "subject": mh.target,
            "msgs_per_s": round(mh.msgs_per_s, 1),
        }
        pf, sink = by.get(("postfix", load)), by.get(("sink", load))
        if pf is not None and pf.durable_msgs_per_s:
            row["vs_postfix_durable"] = round(mh.msgs_per_s / pf.durable_msgs_per_s, 2)
        if pf is not None and pf.msgs_per_s:
            row["vs_postfix_accepted"] = round(mh.msgs_per_s / pf.msgs_per_s, 2)
        if sink is not None and sink.msgs_per_s:
            row["vs_sink"] = round(mh.msgs_per_s / sink.msgs_per_s, 2)
        nf = by.get(("postfix-noflow", load))
        if nf is not None and nf.durable_msgs_per_s:
            row["vs_postfix_noflow_durable"] = round(mh.msgs_per_s / nf.durable_msgs_per_s, 2)
        if any(k.startswith("vs_") for k in row):
            out.append(row)
    return out


def ratio_text(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "(no ratios: mailhouse (or external) and a reference were not both measured)"
    out = []
    width = max(len(str(r["subject"])) for r in rows)
    for r in rows:
        size = fmt_size(int(r["size"]))  # type: ignore[call-overload]
        parts = [f"{r['subject']!s:<{width}} {r['load']:<11} {size} s={r['sessions']}:"]
        if "vs_postfix_durable" in r:
            v = float(r["vs_postfix_durable"])  # type: ignore[arg-type]
            parts.append(f"/Postfix(durable) {v:5.2f}x [{'ok' if v >= 3 else 'below'} goal >=3x]")
        if "vs_postfix_accepted" in r:
            parts.append(f"/Postfix(250s) {float(r['vs_postfix_accepted']):5.2f}x")  # type: ignore[arg-type]
        if "vs_sink" in r:
            v = float(r["vs_sink"])  # type: ignore[arg-type]
            parts.append(f"/smtp-sink {v:4.2f} [{'ok' if v >= 0.5 else 'below'} goal >=0.5]")
        if "vs_postfix_noflow_durable" in r:
            parts.append(f"/Postfix-noflow(durable) {float(r['vs_postfix_noflow_durable']):5.2f}x")  # type: ignore[arg-type]
        out.append("  ".join(parts))
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See benchmarks/README.md for what each figure means.",
    )
    p.add_argument(
        "--targets",
        help=f"comma list of {','.join(ALL_TARGETS)} (default: sink,postfix,mailhouse;"
        " with --port: sink,postfix,external)",
    )
    p.add_argument("--host", default="127.0.0.1", help="external target host: 127.0.0.1 only")
    p.add_argument("--port", type=int, help="external target port: adds target 'external'")
    p.add_argument(
        "--loads",
        default=",".join(DEFAULT_LOADS),
        help=f"comma list of {','.join(ALL_LOADS)} (default: %(default)s)",
    )
    p.add_argument("--sessions", default="20", help="comma list of session counts (default: 20)")
    p.add_argument(
        "--sizes", default="4096,102400", help="message sizes in bytes (default: %(default)s)"
    )
    p.add_argument(
        "--messages",
        type=int,
        help="messages per batch, every size (default: 2500 at"
        " <=16 KB, 800 above; --quick: 400 and 100)",
    )
    p.add_argument("--quick", action="store_true", help="fewer messages: about 30 s in all")
    p.add_argument(
        "--warmup", type=int, help="warm-up messages per target (default: 200, quick 60)"
    )
    p.add_argument(
        "--min-seconds",
        type=float,
        help="repeat a batch until this much generator time is spent (default 5, quick 1)",
    )
    p.add_argument("--max-repeats", type=int, default=30, help="cap on those repeats (default 30)")
    p.add_argument("--run-timeout", type=float, default=180.0, help="seconds allowed per run")
    p.add_argument(
        "--postfix-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra main.cf setting for the Postfix target, e.g. in_flow_delay=0"
        " (repeatable; default: Postfix's defaults)",
    )
    p.add_argument(
        "--mailhouse-cmd",
        help="command that starts mailhouse (default: `mailhouse` on"
        " PATH, else `python -m mailhouse` from this tree)",
    )
    p.add_argument(
        "--mailhouse-workers",
        default="0",
        metavar="LIST",
        help="comma list of [server] workers values: the mailhouse target is run once per"
        " value, labelled mailhouse (0) or mailhouse-wN (default: %(default)s)",
    )
    p.add_argument(
        "--mailhouse-dns",
        choices=("stub", "system"),
        default="stub",
        help="stub (default): mailhouse's [dns] nameservers is a loopback stub answering"
        " NXDOMAIN; system: leave DNS unset (NOT loopback-only)",
    )
    p.add_argument(
        "--start-timeout", type=float, default=60.0, help="seconds for mailhouse to greet"
    )
    p.add_argument(
        "--no-uvloop", action="store_true", help="stock asyncio for the asyncio generator"
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="write JSON results to PATH ('-' or nothing: stdout, table then on stderr)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, Maildir)")
    a = p.parse_args(argv)
    a.host = loopback_only(a.host)
    if a.targets is None:
        a.targets = "sink,postfix,external" if a.port else "sink,postfix,mailhouse"
    a.targets = [t for t in a.targets.split(",") if t]
    if a.port and "external" not in a.targets:
        a.targets.append("external")
    for t in a.targets:
        if t not in ALL_TARGETS:
            p.error(f"unknown target {t!r}")
    if "external" in a.targets and not a.port:
        p.error("target 'external' needs --port")
    a.loads = [x for x in a.loads.split(",") if x]
    for x in a.loads:
        if x not in ALL_LOADS:
            p.error(f"unknown load {x!r}")
    try:
        a.postfix_set = dict(kv.split("=", 1) for kv in a.postfix_set)
    except ValueError:
        p.error("--postfix-set wants NAME=VALUE")
    a.postfix_set = {k.strip(): v.strip() for k, v in a.postfix_set.items()}
    a.sessions = [int(x) for x in a.sessions.split(",") if x]
    a.sizes = [int(x) for x in a.sizes.split(",") if x]
    try:
        workers = [int(x) for x in a.mailhouse_workers.split(",") if x.strip()]
    except ValueError:
        p.error("--mailhouse-workers wants a comma list of whole numbers, e.g. 0,2")
    if not workers or min(workers) < 0:
        p.error("--mailhouse-workers wants numbers >= 0, e.g. 0,2")
    a.mailhouse_workers = list(dict.fromkeys(workers))
    if max(a.sessions) > 200:
        p.error("at most 200 sessions (2-core machine)")
    return a


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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--dns-stub"]:  # internal: the DNS stub process
        return dns_stub_main(int(args[1]), args[2])
    a = parse_args(argv)
    if a.quick:
        small, large = 400, 100
        warmup = 60 if a.warmup is None else a.warmup
    else:
        small, large = 2500, 800
        warmup = 200 if a.warmup is None else a.warmup
    counts = {s: (a.messages or (small if s <= 16384 else large)) for s in a.sizes}
    use_uvloop = not a.no_uvloop and uvloop_version() is not None
    min_seconds = a.min_seconds if a.min_seconds is not None else (1.0 if a.quick else 5.0)
    plan = Plan(
        a.sizes,
        a.sessions,
        a.loads,
        counts,
        a.run_timeout,
        use_uvloop,
        warmup,
        min_seconds,
        a.max_repeats,
    )

    install_signal_handlers()

    if any(x.startswith("source") for x in a.loads) and not os.path.exists(SMTP_SOURCE):
        log("smtp-source not found (apt-get install postfix): dropping source-* loads")
        plan.loads = [x for x in plan.loads if not x.startswith("source")]

    workdir = Path(tempfile.mkdtemp(prefix="mailhouse-bench-"))
    os.chmod(workdir, 0o755)
    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "uvloop": uvloop_version() if use_uvloop else None,
        "postfix": postfix_version(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "sizes": plan.sizes,
        "sessions": plan.sessions,
        "loads": plan.loads,
        "messages_per_run": {str(k): v for k, v in counts.items()},
        "workdir": str(workdir),
        "postfix_settings": a.postfix_set,
    }
    log(
        f"receive benchmark: sizes {plan.sizes}, sessions {plan.sessions}, loads {plan.loads}, "
        f"messages/run {counts}, asyncio loop: {'uvloop' if use_uvloop else 'stock'}"
    )
    if os.getloadavg()[0] > 1.0:
        log(
            f"note: load average {os.getloadavg()[0]:.2f} at start: other work on this machine "
            "will lower every figure; compare targets within one run only"
        )
    skipped: dict[str, str] = {}
    mailhouse_targets: list[MailhouseTarget] = []
    # "mailhouse" stands for one target per --mailhouse-workers value, in that order.
    runs = [
        (name, w)
        for name in a.targets
        for w in (a.mailhouse_workers if name == "mailhouse" else [0])
    ]
    meta["mailhouse_workers"] = a.mailhouse_workers
    t_all = time.perf_counter()
    try:
        for name, workers in runs:
            target: Target
            try:
                if name == "sink":
                    target = SinkTarget(workdir)
                elif name == "floor":
                    target = FloorTarget(workdir)
                elif name in ("postfix", "postfix-noflow"):
                    if not postfix_available():
                        raise RuntimeError("Postfix not installed or not root")
                    target = PostfixTarget(workdir, a.run_timeout, a.postfix_set, name)
                elif name == "mailhouse":
                    target = MailhouseTarget(
                        workdir,
                        mailhouse_command(a.mailhouse_cmd),
                        a.start_timeout,
                        dns_stub=a.mailhouse_dns == "stub",
                        workers=workers,
                    )
                    mailhouse_targets.append(target)
                else:
                    target = ExternalTarget(a.host, a.port)
                run_target(target, plan)
            except (RuntimeError, OSError, TimeoutError, subprocess.SubprocessError) as e:
                label = mailhouse_label(workers) if name == "mailhouse" else name
                skipped[label] = str(e)
                log(f"!! {label} skipped/aborted: {e}")
    finally:
        with _shielded():
            if not a.keep:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                log(f"kept {workdir}")
    meta["total_seconds"] = round(time.perf_counter() - t_all, 1)
    if len(mailhouse_targets) == 1:
        meta["mailhouse_dns_stub"] = mailhouse_targets[0].dns_stats
    elif mailhouse_targets:  # several variants: one entry per label
        meta["mailhouse_dns_stub"] = {t.name: t.dns_stats for t in mailhouse_targets}

    ratio_sessions = 20 if 20 in plan.sessions else max(plan.sessions)
    ratio_size = 4096 if 4096 in plan.sizes else min(plan.sizes)
    rows = ratios(plan.results, ratio_size, ratio_sessions)
    text = (
        "\n"
        + table(plan.results)
        + "\n\n"
        + f"Ratios at {fmt_size(ratio_size)}, {ratio_sessions} sessions "
        "(goals: >=3x Postfix durable, >=0.5x smtp-sink):\n"
        + ratio_text(rows)
        + "\n"
        + "".join(f"skipped {k}: {v.splitlines()[0] if v else ''}\n" for k, v in skipped.items())
        + f"total {meta['total_seconds']} s\n"
    )
    doc = {
        "meta": meta,
        "results": [asdict(r) | {"load": r.load} for r in plan.results],
        "ratios": rows,
        "skipped": skipped,
    }
    if a.json:
        print(text, file=sys.stderr)
        if a.json == "-":
            json.dump(doc, sys.stdout, indent=2)
            print()
        else:
            Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
            log(f"JSON written to {a.json}")
    else:
        print(text)
    failed = any(r.errors for r in plan.results)
    return 1 if failed or (skipped and not plan.results) else 0


if __name__ == "__main__":
    sys.exit(main())
