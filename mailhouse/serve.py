"""`mailhouse serve`: the listeners and the queue (and the workers, when configured)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from . import log
from .auth.service import Authenticator
from .config import LISTENER_NAMES, Config, ConfigError
from .context import Context
from .control import ControlSocket, control_path
from .dns.resolver import Resolver
from .net.listeners import Listener, listener_class
from .net.smtp_client import SMTPDeliverer
from .net.tls import server_context
from .queue.manager import QueueManager
from .queue.routing import Router
from .store import open_store
from .store.base import Store
from .trust.hooks import install as install_trust
from .trust.limits import GreylistKeeper
from .trust.tlspolicy import outbound_tls
from .workers.supervisor import Workers

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


async def start_listeners(ctx: Context, names: list[str]) -> list[Listener]:
    listeners: list[Listener] = []
    for name in names:
        host, port = ctx.config.listen[name]
        cls = listener_class(name)
        lst: Listener = cls(ctx, name, host, port)
        try:
            await lst.start()
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port} for {name}: {e.strerror}") from None
        listeners.append(lst)
        logger.info("listening for %s on %s:%d", name, host, port)
    return listeners


async def stop_listeners(ctx: Context, listeners: list[Listener], *more: Awaitable[Any]) -> None:
    """No new connections; the sessions in flight finish (or are cut at their grace)."""
    ctx.shutting_down.set()
    for lst in listeners:
        lst.stop_accepting()
    await asyncio.gather(*(lst.drain() for lst in listeners), *more)


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    # Everything made at start-up (modules, config, the directory snapshot) lives
    # as long as the process: out of the collector's sight, it is never rescanned.
    gc.collect()
    gc.freeze()
    await stop.wait()


def share_of(total: int, part: tuple[int, int] | None) -> int:
    """A share of a limit set for the whole server; the n shares add up to it."""
    if part is None:
        return total
    k, n = part
    return total // n + (1 if k < total % n else 0)


def queue_shares(config: Config) -> int:
    """How many workers drain the queue: all of them, unless a connection limit is
    lower (each drainer needs at least one connection of every limit, and the
    drainers together must keep to the configured limits)."""
    q = config.queue
    return max(1, min(config.workers, q.connections_per_destination, q.max_connections))


def outbound(
    config: Config, store: Store, resolver: Resolver, part: tuple[int, int] | None = None,
    on_queued: Callable[[], None] | None = None,
) -> tuple[QueueManager, SMTPDeliverer]:
    """The queue manager and its SMTP client. With part=(k, n) they drain the k-th
    of n shares of the queue, within that share of the connection limits: n
    processes together keep to the configured ones. on_queued: what wakes every
    queue manager when this one queues a DSN (which may be in another share)."""
    settings = config.queue
    if part is not None:
        settings = dataclasses.replace(
            settings,
            connections_per_destination=share_of(settings.connections_per_destination, part),
            max_connections=share_of(settings.max_connections, part),
        )
    deliverer = SMTPDeliverer(config.hostname, settings, config.tls_policy, tls=outbound_tls(config, resolver))
    router = Router(resolver, config.routes, settings.smtp_port)
    queue = QueueManager(store, router, deliverer, settings, config.hostname,
                         max_parallel=settings.max_connections, part=part, on_queued=on_queued)
    return queue, deliverer


async def stop_outbound(queue_task: asyncio.Task[None] | None, deliverer: SMTPDeliverer | None) -> None:
    """Once the queue manager has stopped (its attempts finished or cut): its
    task, and the outbound connections kept idle."""
    if queue_task is not None:
        queue_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await queue_task
    if deliverer is not None:
        await deliverer.close()


async def serve(config: Config) -> None:
    check_listeners(config)
    store = await open_store(config)
    try:
        tls = server_context(config)
        ctx = Context(config=config, store=store, auth=Authenticator(store), tls=tls)
        resolver = Resolver(config.nameservers, trust_ad=config.dns_trust_ad)
        trust = install_trust(ctx, resolver)
        # This process owns greylisting's triplets (workers ask it): it keeps them,
        # and has those from before the restart before any client is heard.
        keeper = GreylistKeeper(store, trust.greylist) if config.trust.greylisting else None
        if keeper is not None:
            await keeper.start()
        # With workers, they drain the queue (a share each) and this process only
        # wakes them; without, the queue is drained here.
        workers = Workers(config, store, ctx.auth, trust.limits, trust.greylist) if config.workers else None
        queue: QueueManager | None = None
        deliverer: SMTPDeliverer | None = None
        if workers is None:
            queue, deliverer = outbound(config, store, resolver)
            ctx.on_queued = queue.kick
        else:
            ctx.on_queued = workers.kick_all
        names = [n for n in LISTENER_NAMES if n in config.listen]
        if workers is not None:
            workers.bind()
            names = [n for n in names if n not in workers.names]
        try:
            listeners = await start_listeners(ctx, names)
        except BaseException:
            if workers is not None:
                workers.close_sockets()
            raise
        queue_task = asyncio.get_running_loop().create_task(queue.run()) if queue is not None else None
        if workers is not None:
            await workers.start()
        control = ControlSocket(control_path(config), lambda: ctx.on_queued())
        control.start()
        logger.info("mailhouse ready: hostname=%s data_dir=%s", config.hostname, config.data_dir)
        await until_signalled()
        logger.info("shutting down: no new connections; finishing sessions in flight")
        control.stop()
        await stop_listeners(ctx, listeners, *(x.stop() for x in (queue, workers) if x is not None))
        await stop_outbound(queue_task, deliverer)
        if keeper is not None:
            await keeper.stop()
    finally:
        await store.close()
    logger.info("stopped")


def tune_gc() -> None:
    """Collect cycles less often (startup's heap is frozen: see until_signalled).

    Nearly all garbage of a mail server is freed by reference counting; the cycle
    collector only walks live objects. At the default threshold (700) an outbound
    drain ran 658 young collections in 10,000 messages, 0.27 s in all (27 µs a
    message, ~4 % of its CPU); at 10,000, five. Cyclic garbage waits longer to go:
    a few MB at most."""
    gc.set_threshold(10_000, 10, 10)


def run(config: Config, main: Callable[[Config], Coroutine[Any, Any, None]] = serve) -> None:
    log.setup()
    tune_gc()
    try:
        import uvloop
    except ImportError:  # optional: stock asyncio works, at a higher CPU cost per read
        asyncio.run(main(config))
    else:
        uvloop.run(main(config))
