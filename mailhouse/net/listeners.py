"""Which class serves which listener name of the configuration.

Each protocol package provides a listener class with the same small interface
(`start()`, `stop_accepting()`, `drain()`); serve only knows this table. A
listener whose module is not part of this build is refused at start.
"""

from __future__ import annotations

import importlib
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
