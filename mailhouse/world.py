"""A small mail world on one machine: real `mailhouse serve` processes on free
127.0.0.1 ports, each with its own configuration and data folder.

`mailhouse demo` builds its two servers with it, and so do the tests (and users'
own tests can):

    with MailServer(tmp_path, "hamburger.edu") as mx:
        mx.cli("user", "add", "bob@hamburger.edu", "--password", "pw")
        smtplib.SMTP("127.0.0.1", mx.port("smtp"))

With `mailhouse.dns.testserver` for MX records on 127.0.0.1, two of them form the
textbook's crepes.fr / hamburger.edu pair.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

LISTENERS = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps", "http", "https")


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before by this process: the kernel may
    offer a just-closed port again, and two listeners of one server (or two
    servers of one test) must never be given the same one."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table
        return "{ " + ", ".join(f"{_toml_value(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return str(v)


class MailServer:
    def __init__(
        self,
        root: Path,
        domain: str = "hamburger.edu",
        *,
        hostname: str | None = None,
        listeners: tuple[str, ...] = LISTENERS,
        extra: dict[str, dict[str, Any]] | None = None,
        ports: dict[str, int] | None = None,
    ) -> None:
        self.root = root / domain
        self.root.mkdir(parents=True, exist_ok=True)
        self.domain = domain
        self.hostname = hostname or f"mail.{domain}"
        self.ports = {name: (ports or {}).get(name) or free_port() for name in listeners}
        self.config_path = self.root / "mailhouse.toml"
        self.log_path = self.root / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"hostname = {_toml_value(self.hostname)}",
            f"domains = {_toml_value([domain])}",
            'data_dir = "data"',
            "[listen]",
        ]
        lines += [f'{name} = "127.0.0.1:{port}"' for name, port in self.ports.items()]
        extra = dict(extra or {})
        # Tests never ask a resolver off this machine: without a zone of their own, DNS
        # goes to a loopback port where nothing listens, and fails fast (temporarily).
        if "dns" not in extra:
            # With no zone every sender check could only fail (4.4.3): trust this machine.
            extra.setdefault("trust", {"trusted_networks": ["127.0.0.0/8", "::1/128"]})
        extra.setdefault("dns", {"nameservers": ["127.0.0.1:9"]})
        # MAILHOUSE_TEST_WORKERS=N runs every server of a test run with N worker
        # processes.
        workers = os.environ.get("MAILHOUSE_TEST_WORKERS")
        if workers and "server" not in extra:
            extra["server"] = {"workers": int(workers)}
        for table, values in extra.items():
            lines.append(f"[{table}]")
            lines += [f"{_toml_value(k) if not k.isidentifier() else k} = {_toml_value(v)}" for k, v in values.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def port(self, name: str) -> int:
        return self.ports[name]

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MAILHOUSE_CONFIG"] = str(self.config_path)
        return env

    def cli(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        r = subprocess.run(
            [sys.executable, "-m", "mailhouse", *args],
            input=input, capture_output=True, env=self.env(), cwd=self.root, timeout=60,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"mailhouse {' '.join(args)} exited {r.returncode}: {r.stderr.decode()}")
        return r

    def start(self, timeout: float = 20.0) -> MailServer:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailhouse", "serve"],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.root,
        )
        deadline = time.monotonic() + timeout
        # Every port, not the first: serve opens its listeners one after the
        # other, and a test may go straight to the last one.
        waiting = list(self.ports.values())
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mailhouse serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", waiting[0]), timeout=1):
                    waiting.pop(0)
                if not waiting:
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mailhouse serve did not listen on {waiting} in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self._log.close()
        return rc

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> MailServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
