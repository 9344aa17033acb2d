"""What every listener of a running server shares."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .auth.service import Authenticator
from .config import Config
from .net.counts import ConnectionCounts
from .store.base import Store


@dataclass
class Context:
    config: Config
    store: Store
    auth: Authenticator
    tls: ssl.SSLContext | None
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)
    connections: ConnectionCounts = field(default_factory=ConnectionCounts)  # SMTP, per client IP
    # IMAP's, per listener (see listener_counts); workers share theirs.
    make_counts: Callable[[str], ConnectionCounts] = lambda name: ConnectionCounts()
    _listener_counts: dict[str, ConnectionCounts] = field(default_factory=dict)
    on_queued: Callable[[], None] = lambda: None  # wakes the queue manager
    # Checks run on every complete message before commit, per listener
    # (trust checks on smtp, signing on submission); filled in by serve.
    hooks: dict[str, list[Any]] = field(default_factory=dict)

    def message_hooks(self, listener: str) -> list[Any]:
        return self.hooks.get(listener, [])

    def listener_counts(self, name: str) -> ConnectionCounts:
        counts = self._listener_counts.get(name)
        if counts is None:
            counts = self._listener_counts[name] = self.make_counts(name)
        return counts

    @property
    def total_connections(self) -> int:
        return self.connections.total()
