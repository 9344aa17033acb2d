"""Which class serves which listener name of the configuration.

Each protocol package provides a listener class with the same small interface
(`start()`, `stop_accepting()`, `drain()`); serve only knows this table. A
listener whose module is not part of this build is refused at start.
"""

from __future__ import annotations

import importlib
import socket
from typing import Any, Protocol


class Listener(Protocol):
    name: str

    async def start(self) -> None: ...

    def stop_accepting(self) -> None: ...

    async def drain(self, grace: float = ...) -> None: ...


# listener name -> (module, class); the class is built as cls(ctx, name, host, port)
REGISTRY: dict[str, tuple[str, str]] = {
    "smtp": ("mailhouse.net.smtp", "SMTPListener"),
    "submission": ("mailhouse.net.smtp", "SMTPListener"),
    "submissions": ("mailhouse.net.smtp", "SMTPListener"),
    "pop3": ("mailhouse.net.pop3", "POP3Listener"),
    "pop3s": ("mailhouse.net.pop3", "POP3Listener"),
    "imap": ("mailhouse.net.imap", "IMAPListener"),
    "imaps": ("mailhouse.net.imap", "IMAPListener"),
    "http": ("mailhouse.web.server", "HTTPListener"),
    "https": ("mailhouse.web.server", "HTTPListener"),
}


def listener_class(name: str) -> Any:
    module, cls = REGISTRY[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            return None  # not built in this version
        raise
    return getattr(mod, cls, None)


# Listening sockets a worker process got from the main process, by (host, port):
# every worker accepts on the same socket (see mailhouse/workers).
INHERITED: dict[tuple[str, int], socket.socket] = {}


def bind_args(host: str, port: int) -> dict[str, Any]:
    """Where a listener's server listens: the inherited socket, else its own."""
    sock = INHERITED.get((host, port))
    if sock is not None:
        return {"sock": sock}
    return {"host": host or None, "port": port, "reuse_address": True}


def listening_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """The socket the main process binds for its workers. "" (all addresses)
    is one dual-stack IPv6 socket where the system has IPv6 (peer_ip shows
    its IPv4 clients as IPv4)."""
    if not host:
        host = "::" if socket.has_ipv6 else "0.0.0.0"
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
