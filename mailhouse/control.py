"""A running `serve`'s control socket: how the CLI tells it to look at the queue now.

`mailhouse queue retry` and `queue release` change the store from another
process; without a word the queue managers would see it at their next poll (up
to a second later), where `postqueue -f` acts at once. So `serve` listens on a
Unix datagram socket, ``data_dir/run/control``, mode 0600 (only the user it runs
as, and root, can send), and the CLI sends one word there after such a change.

    queue     mail is due: wake the queue manager(s)

Nothing is ever answered, and a CLI without a server running (no socket, or a
stale one) just carries on: the change is in the store either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

from . import log
from .config import Config

logger = log.get("serve")

WORDS = frozenset({b"queue"})


def control_path(config: Config) -> Path:
    return config.data_dir / "run" / "control"


MAX_PER_WAKE = 64  # datagrams read per readiness: a flood cannot hold the loop


class ControlSocket:
    def __init__(self, path: Path, on_queue: Callable[[], None]) -> None:
        self.path = path
        self.on_queue = on_queue
        self._sock: socket.socket | None = None
        self._inode = 0

    def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # left by a server that was killed
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            # Narrowed to the owner right after bind (writing is what sending
            # needs, which the usual umask already denies others); not by a
            # umask change, which would reach every thread of the process.
            try:
                sock.bind(str(self.path))
                os.chmod(self.path, 0o600)
                self._inode = os.stat(self.path).st_ino
            except OSError:
                sock.close()
                raise
        except OSError as e:
            logger.warning("no control socket at %s (%s): queue commands act at the next poll", self.path, e)
            return
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._sock is not None
        wake = False
        for _ in range(MAX_PER_WAKE):
            try:
                word = self._sock.recv(64)
            except OSError:  # BlockingIOError: all read
                break
            wake = wake or word.strip() in WORDS
        if wake:  # once for however many came
            self.on_queue()

    def stop(self) -> None:
        if self._sock is None:
            return
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        # Only our own: a server started since (the same data_dir) has its own there.
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()


def notify(config: Config, word: bytes = b"queue") -> bool:
    """Tell a running server (if any); True when the word was delivered."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            # Never waits: a full queue at the server means it has words to read already.
            s.sendto(word, socket.MSG_DONTWAIT, str(control_path(config)))
        except OSError:  # no server, a stale socket, not ours to write to, or full
            return False
    return True
