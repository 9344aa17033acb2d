"""Logging: one line per event on stderr, in the spirit of Postfix's maillog.

Lines carry the queue id first where there is one, so `grep QUEUEID` follows a
message through every stage.

A mail server logs several lines per message, so the costs add up: the
caller lookup and thread/process fields of `logging` are turned off, the time
prefix is formatted once per second, and lines written from the event loop are
gathered and written once per loop iteration instead of one syscall each.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import time
from typing import TextIO


class _Formatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""

    def format(self, record: logging.LogRecord) -> str:
        sec = int(record.created)
        if sec != self._second:
            self._second = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        msg = record.msg % record.args if record.args else str(record.msg)
        text = f"{self._prefix}.{int(record.msecs):03d}Z {record.name.replace('.', '/')}: {msg}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _BatchingHandler(logging.Handler):
    """Writes lines at once off the loop; on the loop, once per iteration."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._pending: list[str] = []
        self._lock_ = threading.Lock()
        self._loop_thread: int | None = None
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            with self._lock_:
                self._pending.append(line)
                self._write()
            return
        with self._lock_:
            first = not self._pending
            self._pending.append(line)
        if first:
            loop.call_soon(self.flush)

    def _write(self) -> None:
        if self._pending:
            data, self._pending = "".join(self._pending), []
            try:
                self.stream.write(data)
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def flush(self) -> None:
        with self._lock_:
            self._write()


def setup(level: int = logging.INFO) -> None:
    root = logging.getLogger("mailhouse")
    if any(getattr(h, "_mailhouse", False) for h in root.handlers):
        return
    logging._srcfile = None  # type: ignore[attr-defined]  # no caller lookup per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = _BatchingHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    handler._mailhouse = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def flush() -> None:
    for h in logging.getLogger("mailhouse").handlers:
        h.flush()


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"mailhouse.{name}")
