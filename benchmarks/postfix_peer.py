"""A private, throw-away Postfix instance for benchmarks and tests.

    from benchmarks.postfix_peer import PostfixInstance

    with PostfixInstance(tmpdir, smtp_port=2525) as pf:          # mode="maildir"
        ...send mail for rcpt@bench.test to 127.0.0.1:2525...
        pf.wait_delivered(n, local="rcpt")                    # files in its Maildir

    with PostfixInstance(tmpdir, 2526, mode="relay", relayhost="[127.0.0.1]:2527") as pf:
        ...everything accepted on 2526 is relayed to 127.0.0.1:2527...
        pf.wait_queue_empty()

Everything lives under ``tmpdir``: its own config_directory (main.cf, master.cf),
queue_directory, data_directory, the Maildir base and the log file.  The system's
Postfix (if any) is neither read nor touched: the instance listens only on
127.0.0.1:smtp_port, runs no chroot, does no DNS look-up (numeric next hops, no
peer-name look-up), and logs to ``tmpdir/maillog`` through postlogd
(``maillog_file``, Postfix >= 3.4), since there is no syslog here.

Postfix must be run as root (``postfix start`` needs it); the programs come from
Debian's ``postfix`` package (daemon_directory /usr/lib/postfix/sbin, meta_directory
/etc/postfix, where postfix-files lives).  Standard library only.

Stopping: ``stop()`` (called by ``__exit__`` whatever happened) runs
``postfix -c DIR stop``, waits for the master to exit, falls back to
``postfix -c DIR abort`` and finally to SIGKILL of the master pid and the
processes it started (by pid, found through their parent pid).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["PostfixError", "PostfixInstance", "postfix_available", "postfix_version"]

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"

# Queue sub-directories that hold messages not yet delivered.
_QUEUE_DIRS = ("maildrop", "incoming", "active", "deferred", "hold")

# A master.cf with every service Postfix needs and no chroot (the instance has no
# chroot jail populated).  {listen} is replaced by "127.0.0.1:PORT".
_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{listen}    inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixError(RuntimeError):
    """The instance could not be configured, started or stopped."""


def postfix_available() -> bool:
    """True when Postfix's programs are installed and we may start them (root)."""
    return (
        os.path.exists(POSTFIX)
        and os.path.exists("/usr/lib/postfix/sbin/master")
        and os.geteuid() == 0
    )


def postfix_version() -> str:
    try:
        out = subprocess.run(
            [POSTCONF, "-d", "-h", "mail_version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out or "unknown"


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split("."):
        if not p.isdigit():
            break
        parts.append(int(p))
    return tuple(parts)


class PostfixInstance:
    """A private Postfix on 127.0.0.1:``smtp_port``, everything under ``tmpdir``.

    mode="maildir": mail for ``domain`` (virtual_mailbox_domains) is delivered by
        virtual(8) into ``tmpdir/vmail/<domain>/<local>/`` (a Maildir) for each of
        ``mailboxes``; other recipients are refused (relay from 127.0.0.0/8 is not
        configured, so nothing leaves).
    mode="relay": everything accepted (from 127.0.0.0/8 for any domain, and from
        anywhere for ``domain``) is relayed over SMTP to ``relayhost``, e.g.
        "[127.0.0.1]:2527" (square brackets: no MX look-up; only numeric
        loopback addresses are accepted).

    ``extra_main`` adds or overrides main.cf parameters (e.g.
    ``{"smtpd_tls_security_level": "may", ...}``).
    """

    def __init__(
        self,
        tmpdir: str | os.PathLike[str],
        smtp_port: int,
        mode: str = "maildir",
        relayhost: str | None = None,
        *,
        domain: str = "bench.test",
        mailboxes: Iterable[str] = ("rcpt",),
        hostname: str = "mx.postfix.bench.test",
        listen_host: str = "127.0.0.1",
        extra_main: Mapping[str, str] | None = None,
        uid: int = 5000,
        gid: int = 5000,
        start_timeout: float = 30.0,
    ) -> None:
        if mode not in ("maildir", "relay"):
            raise ValueError(f"mode must be 'maildir' or 'relay', not {mode!r}")
        if mode == "relay" and not relayhost:
            raise ValueError("mode='relay' needs relayhost, e.g. '[127.0.0.1]:2527'")
        if relayhost is not None:
            _check_loopback_nexthop(relayhost)
        if not listen_host.startswith("127."):
            raise ValueError("a benchmark Postfix listens on loopback only")
        self.root = Path(tmpdir).resolve()
        self.smtp_port = int(smtp_port)
        self.mode = mode
        self.relayhost = relayhost
        self.domain = domain
        self.mailboxes = list(mailboxes)
        self.hostname = hostname
        self.listen_host = listen_host
        self.extra_main = dict(extra_main or {})
        self.uid = uid
        self.gid = gid
        self.start_timeout = start_timeout
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.data_dir = self.root / "data"
        self.maildir_base = self.root / "vmail"
        self.maillog = self.root / "maillog"
        self._started = False

    # -- configuration -------------------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        """The main.cf parameters this instance is written with."""
        p: dict[str, str] = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": f"postfix-bench-{self.smtp_port}",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "myhostname": self.hostname,
            "mydomain": self.hostname.split(".", 1)[-1],
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": self.listen_host,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_banner": "$myhostname ESMTP Postfix (bench)",
            "biff": "no",
            "append_dot_mydomain": "no",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtputf8_enable": "no",
            # No DNS at all: the only resolver here is off-machine.
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "lmtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "message_size_limit": str(50 * 1024 * 1024),
            "delay_warning_time": "0",
            "notify_classes": "",
            "mailbox_size_limit": "0",
            "virtual_mailbox_limit": "0",
        }
        if self.mode == "maildir":
            p.update(
                virtual_mailbox_domains=self.domain,
                virtual_mailbox_base=str(self.maildir_base),
                virtual_mailbox_maps=f"texthash:{self.config_dir / 'vmailbox'}",
                virtual_uid_maps=f"static:{self.uid}",
                virtual_gid_maps=f"static:{self.gid}",
                virtual_minimum_uid="100",
                relay_domains="",
                default_transport="error:this benchmark instance does not relay",
            )
        else:
            nexthop = self.relayhost or ""
            p.update(
                relay_domains=self.domain,
                relayhost=nexthop,
                # Explicit next hops so no transport ever looks at DNS.
                relay_transport=f"relay:{nexthop}",
                default_transport=f"smtp:{nexthop}",
            )
        p.update(self.extra_main)
        return p

    def _make_traversable(self) -> None:
        """Postfix's daemons (user postfix, and the virtual uid) must reach the
        instance directory: add o+x to its ancestors that lie under the system
        temp dir (mkdtemp and pytest's tmp_path make 0700 directories); refuse
        elsewhere."""
        import tempfile

        tmp = Path(tempfile.gettempdir()).resolve()
        for d in reversed(self.root.parents):
            if d == Path("/"):
                continue
            mode = d.stat().st_mode
            if mode & 0o001:
                continue
            if d == tmp or tmp in d.parents:
                os.chmod(d, (mode & 0o7777) | 0o011)
            else:
                raise PostfixError(
                    f"{d} is not traversable by other users; Postfix's daemons "
                    "could not reach the instance (chmod o+x it, or use a temp dir)"
                )

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._make_traversable()
        for d in (self.root, self.config_dir, self.queue_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, 0, 0)
            os.chmod(d, 0o755)  # postfix-owned daemons must traverse these
        lines = [f"{k} = {v}" for k, v in self.main_cf().items()]
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n")
        listen = f"{self.listen_host}:{self.smtp_port}"
        (self.config_dir / "master.cf").write_text(_MASTER_CF.format(listen=listen))
        if self.mode == "maildir":
            self.maildir_base.mkdir(parents=True, exist_ok=True)
            (self.maildir_base / self.domain).mkdir(exist_ok=True)
            for d in (self.maildir_base, self.maildir_base / self.domain):
                os.chown(d, self.uid, self.gid)
                os.chmod(d, 0o755)
            vmap = "".join(f"{m}@{self.domain} {self.domain}/{m}/\n" for m in self.mailboxes)
            (self.config_dir / "vmailbox").write_text(vmap)
        self.maillog.touch()

    # -- life cycle ------------------------------------------------------------------

    def _postfix(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, MAIL_CONFIG=str(self.config_dir))
        return subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )

    def start(self) -> None:
        if not postfix_available():
            raise PostfixError("Postfix is not installed, or we are not root")
        if _version_tuple(postfix_version()) < (3, 4):
            raise PostfixError("Postfix >= 3.4 is needed (maillog_file / postlogd)")
        self.write_config()
        # Creates the queue sub-directories and data_directory with their owners.
        r = self._postfix("post-install", "create-missing")
        if r.returncode != 0:
            raise PostfixError(f"post-install create-missing failed: {r.stderr.strip()}")
        self._started = True  # from here on, stop() cleans up whatever did start
        r = self._postfix("start")
        if r.returncode != 0:
            self.stop(timeout=5)
            raise PostfixError(
                f"postfix start failed (rc={r.returncode}): {r.stderr.strip()}\n" + self.log_tail()
            )
        try:
            wait_for_banner(self.listen_host, self.smtp_port, self.start_timeout)
        except Exception:
            self.stop()
            raise

    def master_pid(self) -> int | None:
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the instance, whatever state it is in.  Safe to call twice."""
        if not self._started:
            return
        pid = self.master_pid()
        children = _descendants(pid) if pid else []
        with contextlib.suppress(Exception):
            self._postfix("stop", timeout=timeout)
        if pid and not _wait_gone(pid, timeout):
            with contextlib.suppress(Exception):
                self._postfix("abort", timeout=timeout)
            if not _wait_gone(pid, 5):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 5)
        # Daemons exit when the master goes; make sure of it (by pid only).
        deadline = time.monotonic() + 5
        for c in children:
            while _alive(c) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(c):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(c, signal.SIGKILL)
        self._started = False

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observation -------------------------------------------------------------------

    def maildir(self, local: str = "rcpt") -> Path:
        return self.maildir_base / self.domain / local

    def delivered_count(self, local: str = "rcpt") -> int:
        """Messages in the Maildir of local@domain (new/ and cur/)."""
        n = 0
        for sub in ("new", "cur"):
            with (
                contextlib.suppress(FileNotFoundError),
                os.scandir(self.maildir(local) / sub) as it,
            ):
                n += sum(1 for _ in it)
        return n

    def wait_delivered(
        self, count: int, local: str = "rcpt", timeout: float = 120.0, poll: float = 0.01
    ) -> float:
        """Wait until the Maildir holds at least ``count`` messages.

        Returns time.perf_counter() at which that was seen; raises TimeoutError.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.delivered_count(local) >= count:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {self.delivered_count(local)} of {count} messages delivered"
                    f" after {timeout:.0f}s\n" + self.log_tail()
                )
            time.sleep(poll)

    def clear_maildir(self, local: str = "rcpt") -> int:
        """Delete the delivered messages of local@domain; return how many."""
        n = 0
        for sub in ("new", "cur"):
            with (
                contextlib.suppress(FileNotFoundError),
                os.scandir(self.maildir(local) / sub) as it,
            ):
                for e in it:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(e.path)
                        n += 1
        return n

    def queued_count(self) -> int:
        """Queue files not yet delivered (maildrop, incoming, active, deferred, hold)."""
        n = 0
        for q in _QUEUE_DIRS:
            for _root, _dirs, files in os.walk(self.queue_dir / q):
                n += len(files)
        return n

    def wait_queue_empty(self, timeout: float = 120.0, poll: float = 0.02) -> float:
        deadline = time.monotonic() + timeout
        while True:
            if self.queued_count() == 0:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.queued_count()} messages still queued after {timeout:.0f}s\n"
                    + self.log_tail()
                )
            time.sleep(poll)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.maillog.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def cpu_seconds(self) -> float:
        """CPU (user+system) used so far by the master and all its daemons,
        live and reaped."""
        pid = self.master_pid()
        return proc_tree_cpu(pid) if pid else 0.0


# -- helpers shared with the benchmark ---------------------------------------------------


def _check_loopback_nexthop(nexthop: str) -> None:
    host = nexthop.split("]")[0].lstrip("[") if nexthop.startswith("[") else nexthop
    host = host.split(":")[0] if not nexthop.startswith("[") else host
    if not host.startswith("127."):
        raise ValueError(f"relayhost must be a numeric loopback address, not {nexthop!r}")


def wait_for_banner(host: str, port: int, timeout: float = 30.0) -> str:
    """Wait until host:port accepts a connection and greets with 220; return it."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                s.settimeout(5)
                data = b""
                while b"\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"220"):
                    with contextlib.suppress(OSError):
                        s.sendall(b"QUIT\r\n")
                        s.recv(4096)
                    return data.decode(errors="replace").strip()
                last = PostfixError(f"unexpected greeting {data[:100]!r}")
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"no 220 greeting on {host}:{port} after {timeout:.0f}s: {last}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _proc_stat(int(name))
        if st is None:
            continue
        kids.setdefault(int(st[1]), []).append(int(name))
    return kids


def _descendants(pid: int) -> list[int]:
    kids = _children_map()
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_tree_cpu(pid: int) -> float:
    """CPU seconds of pid (own + reaped children) plus its live descendants'."""
    total = 0
    for p in [pid, *_descendants(pid)]:
        st = _proc_stat(p)
        if st is None:
            continue
        # fields after ")": state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
        total += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
    return total / _TICK
