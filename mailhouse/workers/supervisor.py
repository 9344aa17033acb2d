"""The main process's side: bind, start, relay, restart and stop the workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import log
from ..auth.service import Authenticator
from ..config import Config, ConfigError
from ..imap.recent import SharedRecentMarks
from ..net.counts import SharedConnectionCounts, SharedConnectionRate
from ..net.listeners import listening_socket
from ..store.base import Store
from ..store.models import Change
from ..trust.limits import Greylist, SendLimits
from .link import Link

logger = log.get("workers")

# The listeners workers serve; http(s) stays in the main process. The workers also
# drain the queue, each its share (serve.outbound).
WORKER_LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")
STOP_GRACE = 20.0  # a worker drains its sessions (SMTP allows 10 s) before it is killed
RESTART_DELAY_MAX = 30.0


# Listeners whose per-address counts the workers share (SMTP's: counts_path).
COUNTED_LISTENERS = ("imap", "imaps")


def counts_path(config: Config, listener: str | None = None) -> Path:
    return config.data_dir / "run" / (f"{listener}-connections" if listener else "connections")


def recent_path(config: Config) -> Path:
    return config.data_dir / "run" / "recent"


def rate_path(config: Config) -> Path:
    return config.data_dir / "run" / "connection-rate"


def counted(config: Config) -> list[str | None]:
    return [None, *(n for n in COUNTED_LISTENERS if n in config.listen)]


@dataclass
class _Worker:
    slot: int
    proc: subprocess.Popen[bytes]
    link: Link
    started: float


class Workers:
    def __init__(
        self, config: Config, store: Store, auth: Authenticator, send_limits: SendLimits, greylist: Greylist,
    ) -> None:
        self.config = config
        self.store = store
        self.auth = auth
        # The one count of sending limits, and the one set of greylisting triplets,
        # for every worker (link.py).
        self.send_limits = send_limits
        self.greylist = greylist
        self.names = [n for n in WORKER_LISTENERS if n in config.listen]
        self.sockets: dict[str, socket.socket] = {}
        self.workers: dict[int, _Worker] = {}
        self.stopping = False
        self._delay: dict[int, float] = {}
        self._relaying_from: int | None = None
        self._pending: list[tuple[int | None, Change]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._snapshot: Path | None = None

    def snapshot_config(self) -> Path | None:
        """The configuration text as the main process read it, for every worker
        it will ever start (see worker.py)."""
        if self.config.path is None:
            return None
        snap = counts_path(self.config).parent / "config.toml"
        snap.parent.mkdir(parents=True, exist_ok=True)
        tmp = snap.with_suffix(".tmp")
        tmp.write_bytes(self.config.path.read_bytes())
        os.replace(tmp, snap)
        return snap

    def bind(self) -> None:
        for name in self.names:
            host, port = self.config.listen[name]
            try:
                self.sockets[name] = listening_socket(host, port)
            except OSError as e:
                self.close_sockets()
                raise ConfigError(f"cannot listen on {host}:{port} for {name}: {e.strerror}") from None
            logger.info("listening for %s on %s:%d (in %d workers)", name, host, port, self.config.workers)

    def close_sockets(self) -> None:
        for s in self.sockets.values():
            s.close()
        self.sockets.clear()

    async def start(self) -> None:
        for listener in counted(self.config):
            SharedConnectionCounts.create(counts_path(self.config, listener), self.config.workers)
        SharedRecentMarks.create(recent_path(self.config))
        SharedConnectionRate.create(rate_path(self.config))
        self._snapshot = self.snapshot_config()
        self._unsubscribe = self.store.subscribe_changes(self._changed_here)
        for slot in range(self.config.workers):
            await self._spawn(slot)

    async def _spawn(self, slot: int) -> None:
        parent, child = socket.socketpair()
        args = [
            sys.executable, "-m", "mailhouse.workers.worker",
            "--slot", str(slot), "--slots", str(self.config.workers), "--notice-fd", str(child.fileno()),
        ]
        if self.config.path is not None:
            args += ["--config", str(self.config.path)]
        if self._snapshot is not None:
            args += ["--config-snapshot", str(self._snapshot)]
        args += [f"--listen={name}:{s.fileno()}" for name, s in self.sockets.items()]
        try:
            # A session of its own: a terminal's Ctrl-C reaches the main process,
            # which stops the workers in order, not all of them at once.
            proc = subprocess.Popen(
                args, pass_fds=[child.fileno(), *(s.fileno() for s in self.sockets.values())],
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            child.close()
        loop = asyncio.get_running_loop()
        _, link = await loop.connect_accepted_socket(
            lambda: Link(
                lambda changes: self._from_worker(slot, changes), lambda: self.kick_all(but=slot), lambda: self._lost(slot),
                on_login=lambda *req: self._login(slot, *req),
                on_limit=lambda *req: self._limit(slot, *req),
                on_greylist=lambda *req: self._greylist(slot, *req),
            ),
            parent,
        )
        self.workers[slot] = _Worker(slot, proc, link, time.monotonic())
        logger.info("worker %d started: pid %d", slot, proc.pid)

    # ------------------------------------------------------------------ relaying
    def _from_worker(self, slot: int, changes: list[Change]) -> None:
        # Subscribers here (the web's event streams) hear of them, and so does
        # _changed_here, which passes them on to every worker but this one.
        self._relaying_from = slot
        try:
            self.store.announce_changes(changes)
        finally:
            self._relaying_from = None

    def _changed_here(self, change: Change) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((self._relaying_from, change))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for w in self.workers.values():
            changes = [c for src, c in pending if src != w.slot]
            if changes:
                w.link.send_changes(changes)

    def kick_all(self, but: int | None = None) -> None:
        """Mail was queued (here: the web's sending; or by worker `but`, which woke
        its own): every worker's queue manager may own it."""
        for w in self.workers.values():
            if w.slot != but:
                w.link.send(b"q\n")

    def _login(self, slot: int, request_id: int, user: str, password: str, ip: str, protocol: str) -> None:
        asker = self.workers.get(slot)
        if asker is None:
            return
        link = asker.link  # the answer goes to the process that asked, even if it died meanwhile

        async def check() -> None:
            result = await self.auth.attempt(user, password, ip=None if ip == "-" else ip, protocol=protocol)
            link.send_answer(request_id, result.account.address if result.account else None, result.retry_after)

        task = asyncio.get_running_loop().create_task(check())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _limit(self, slot: int, request_id: int, user: str, recipients: int) -> None:
        asker = self.workers.get(slot)
        if asker is not None:
            asker.link.send_limit_answer(request_id, self.send_limits.check(user, recipients))

    def _greylist(self, slot: int, request_id: int, ip: str, sender: str, recipient: str) -> None:
        asker = self.workers.get(slot)
        if asker is not None:
            asker.link.send_greylist_answer(request_id, self.greylist.check(ip, sender, recipient))

    # ------------------------------------------------------------------ lifecycle
    def _lost(self, slot: int) -> None:
        if not self.stopping:
            task = asyncio.get_running_loop().create_task(self._restart(slot))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _restart(self, slot: int) -> None:
        w = self.workers[slot]
        try:
            rc = await asyncio.wait_for(_exited(w.proc), timeout=STOP_GRACE)
        except TimeoutError:  # it closed its end but lives on: it is not serving
            w.proc.kill()
            rc = await _exited(w.proc)
        for listener in counted(self.config):
            SharedConnectionCounts.clear_slot(counts_path(self.config, listener), slot)
        if self.stopping:
            return
        # A worker that dies at once would die again: wait longer each time.
        lived = time.monotonic() - w.started
        delay = 0.0 if lived > 60 else min(max(self._delay.get(slot, 0.5) * 2, 1.0), RESTART_DELAY_MAX)
        self._delay[slot] = delay
        how = f"signal {-rc}" if rc < 0 else f"status {rc}"
        logger.warning("worker %d (pid %d) exited with %s; restarting it in %.0f s", slot, w.proc.pid, how, delay)
        await asyncio.sleep(delay)
        while not self.stopping:
            try:
                await self._spawn(slot)
                return
            except OSError as e:  # out of processes or descriptors: try again later
                delay = min(max(delay * 2, 1.0), RESTART_DELAY_MAX)
                logger.error("worker %d: cannot start: %s; trying again in %.0f s", slot, e, delay)
                await asyncio.sleep(delay)

    async def stop(self) -> None:
        """SIGTERM to every worker: they stop accepting, finish their sessions and exit."""
        self.stopping = True
        # The workers hold their own copies: closed here, a new connection is
        # refused as soon as they stop accepting, not left in a backlog.
        self.close_sockets()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for w in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)

        async def reap(w: _Worker) -> None:
            try:
                await asyncio.wait_for(_exited(w.proc), timeout=STOP_GRACE)
            except TimeoutError:
                logger.warning("worker %d (pid %d) did not stop: killed", w.slot, w.proc.pid)
                w.proc.kill()
                await _exited(w.proc)

        await asyncio.gather(*(reap(w) for w in self.workers.values()))
        for task in list(self._tasks):
            task.cancel()
        for w in self.workers.values():
            if w.link.transport is not None:
                w.link.transport.close()


async def _exited(proc: subprocess.Popen[bytes]) -> int:
    """The exit status, waited for on the event loop (a pidfd), not in the
    executor whose threads the logins' argon2 checks need."""
    if proc.poll() is not None:
        return proc.returncode
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):  # old kernel: a thread after all
        return await loop.run_in_executor(None, proc.wait)
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()
