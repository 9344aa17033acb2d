from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.world import MailServer

BOB_PW = "ketchup-and-pickles"
ALICE_PW = "crepes-au-sucre"


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    """hamburger.edu with bob, an alias, a catch-all domain, and short timeouts."""
    root: Path = tmp_path_factory.mktemp("mx")
    server = MailServer(
        root,
        "hamburger.edu",
        extra={"limits": {"command_timeout": "3s", "max_message_size": "1MB", "max_connections_per_ip": 30}},
    )
    server.cli("user", "add", "bob@hamburger.edu", "--password", BOB_PW)
    server.cli("user", "add", "alice@hamburger.edu", "--password", ALICE_PW)
    server.cli("alias", "add", "ketchup@hamburger.edu", "bob@hamburger.edu", "alice@hamburger.edu")
    server.cli("alias", "add", "far@hamburger.edu", "someone@crepes.fr")
    server.cli("domain", "add", "catchall.test")
    server.cli("user", "add", "catcher@catchall.test", "--password", "x")
    server.cli("alias", "add", "@catchall.test", "catcher@catchall.test")
    server.start()
    yield server
    rc = server.stop()
    assert rc == 0, server.log()


class Line:
    """A raw SMTP client: bytes exactly as sent, replies exactly as received."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One whole (possibly multi-line) reply, CRLFs included."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; got so far {out + self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            out += line + b"\r\n"
            if len(line) < 4 or line[3:4] != b"-":
                return out

    def cmd(self, data: bytes) -> bytes:
        self.send(data)
        return self.reply()

    def starttls(self) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock)

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return True

    def close(self) -> None:
        self.sock.close()


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wait_for(what: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, msg: str = "") -> Any:
    """Poll `what` until it returns something truthy (and return that), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {msg or what}")
        time.sleep(interval)


def inbox(server: MailServer, address: str, folder: str = "INBOX") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        server.cli("mailbox", "list", address, "--folder", folder, "--json").stdout)
    return rows


def show(server: MailServer, address: str, uid: object, folder: str = "INBOX") -> bytes:
    return server.cli("mailbox", "show", address, str(uid), "--folder", folder).stdout


def queue(server: MailServer) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(server.cli("queue", "list", "--json").stdout)
    return rows
