"""The http and https listeners: uvicorn serving the web app in serve's own loop.

uvicorn runs as a task of the running loop (no process or thread of its own) and
is kept from installing signal handlers: `mailhouse serve` owns SIGTERM and tells
each listener to stop. The socket is bound here, so a port in use is an OSError
at start like for every other listener (uvicorn would call sys.exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn

from .. import log
from ..context import Context
from ..net.tls import cert_paths
from .app import Web, build_app

logger = log.get("http")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # serve handles signals for the whole process

    def install_signal_handlers(self) -> None:
        pass  # the same, for uvicorn releases before capture_signals


class HTTPListener:
    def __init__(self, ctx: Context, name: str, host: str, port: int) -> None:
        self.ctx = ctx
        self.name = name
        self.host = host
        self.port = port
        self.server: _Server | None = None
        self.task: asyncio.Task[None] | None = None
        self.web: Web | None = None
        self.sock: socket.socket | None = None

    async def start(self) -> None:
        secure = self.name == "https"
        app, self.web = build_app(self.ctx, self.name, secure=secure)
        certfile = keyfile = None
        if secure:
            cert, key = cert_paths(self.ctx.config)
            certfile, keyfile = str(cert), str(key)
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, server_header=False,
            http="httptools", ws="none", loop="none", proxy_headers=False,
            ssl_certfile=certfile, ssl_keyfile=keyfile, timeout_keep_alive=30,
            timeout_graceful_shutdown=5, limit_concurrency=2000, backlog=1024,
        )
        # uvicorn logs startup chatter at INFO through its own loggers: keep errors only.
        for name in ("uvicorn", "uvicorn.error"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.sock = self._bind()
        self.server = _Server(config)
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()  # re-raises why it stopped
                raise OSError(f"the {self.name} listener stopped at start")
            await asyncio.sleep(0.01)

    def _bind(self) -> socket.socket:
        infos = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        return sock

    def stop_accepting(self) -> None:
        if self.web is not None:
            self.web.hub.stop()  # ends the event streams, which would never finish
        if self.server is not None:
            self.server.should_exit = True

    async def drain(self, grace: float = 5.0) -> None:
        if self.task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace + 1.0)
        except TimeoutError:
            if self.server is not None:
                self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        except Exception:
            logger.exception("the %s listener failed while stopping", self.name)
