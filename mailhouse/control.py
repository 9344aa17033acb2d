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


class ControlSocket:
    def __init__(self, path: Path, on_queue: Callable[[], None]) -> None:
        self.path = path
        self.on_queue = on_queue
        self._sock: socket.socket | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a server that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        old = os.umask(0o177)  # created 0600, never briefly open to others
        try:
            sock.bind(str(self.path))
        except OSError as e:
            sock.close()
            logger.warning("no control socket at %s (%s): queue commands act at the next poll", self.path, e)
            return
        finally:
            os.umask(old)
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                word = self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if word.strip() in WORDS:
                self.on_queue()

    def stop(self) -> None:
        if self._sock is None:
            return
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with contextlib.suppress(OSError):
            self.path.unlink()


def notify(config: Config, word: bytes = b"queue") -> bool:
    """Tell a running server (if any); True when the word was delivered."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(word, str(control_path(config)))
        except OSError:  # no server, a stale socket, or not ours to write to
            return False
    return True
