"""`mailhouse serve`: every configured listener and the queue in one process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal

from . import log
from .auth.service import Authenticator
from .config import LISTENER_NAMES, Config, ConfigError
from .context import Context
from .dns.resolver import Resolver
from .net.listeners import Listener, listener_class
from .net.smtp_client import SMTPDeliverer
from .net.tls import server_context
from .queue.manager import QueueManager
from .queue.routing import Router
from .store import open_store
from .trust.hooks import install as install_trust
from .trust.tlspolicy import outbound_tls

logger = log.get("serve")


def check_listeners(config: Config) -> None:
    if not config.listen:
        raise ConfigError("no listener configured: add a [listen] table (e.g. smtp = \"127.0.0.1:2525\")")
    for name in LISTENER_NAMES:
        if name in config.listen and listener_class(name) is None:
            raise ConfigError(
                f"listener {name!r} is not available in this version of mailhouse; "
                f"remove [listen] {name} from the configuration"
            )


async def serve(config: Config) -> None:
    check_listeners(config)
    store = await open_store(config)
    try:
        tls = server_context(config)
        ctx = Context(config=config, store=store, auth=Authenticator(store), tls=tls)
        resolver = Resolver(config.nameservers, trust_ad=config.dns_trust_ad)
        install_trust(ctx, resolver)
        deliverer = SMTPDeliverer(config.hostname, config.queue, config.tls_policy,
                                  tls=outbound_tls(config, resolver))
        router = Router(resolver, config.routes, config.queue.smtp_port)
        queue = QueueManager(store, router, deliverer, config.queue, config.hostname,
                             max_parallel=config.queue.max_connections)
        ctx.on_queued = queue.kick
        queue_task = asyncio.get_running_loop().create_task(queue.run())
        listeners: list[Listener] = []
        for name in LISTENER_NAMES:
            if name in config.listen:
                host, port = config.listen[name]
                cls = listener_class(name)
                lst: Listener = cls(ctx, name, host, port)
                try:
                    await lst.start()
                except OSError as e:
                    raise ConfigError(f"cannot listen on {host}:{port} for {name}: {e.strerror}") from None
                listeners.append(lst)
                logger.info("listening for %s on %s:%d", name, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        # Everything made at start-up (modules, config, the directory snapshot) lives
        # as long as the process: out of the collector's sight, it is never rescanned.
        gc.collect()
        gc.freeze()
        logger.info("mailhouse ready: hostname=%s data_dir=%s", config.hostname, config.data_dir)
        await stop.wait()
        logger.info("shutting down: no new connections; finishing sessions in flight")
        ctx.shutting_down.set()
        for lst in listeners:
            lst.stop_accepting()
        await asyncio.gather(*(lst.drain() for lst in listeners), queue.stop())
        queue_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await queue_task
        await deliverer.close()
    finally:
        await store.close()
    logger.info("stopped")


def run(config: Config) -> None:
    log.setup()
    try:
        import uvloop
    except ImportError:  # optional: stock asyncio works, at a higher CPU cost per read
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
