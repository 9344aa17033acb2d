"""Logging: one line per event on stderr, in the spirit of Postfix's maillog.

Lines carry the queue id first where there is one, so `grep QUEUEID` follows a
message through every stage.

A mail server logs several lines per message, so the costs add up: the
caller lookup and thread/process fields of `logging` are turned off, the time
prefix is formatted once per second, and lines written from the event loop are
gathered and written once per loop iteration instead of one syscall each.
`info()` on our loggers skips `logging`'s record machinery altogether (a
LogRecord, handler locks, filters: ~10 µs a line) when our handler is the only
one that would see the line: the line is formatted and queued directly.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import time
from typing import Any, TextIO


class _Formatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""

    def stamp(self, when: float) -> str:
        """"2026-11-29T02:30:00.123Z": the strftime only once per second."""
        sec = int(when)
        if sec != self._second:
            self._second = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{int((when - sec) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        sec = int(record.created)
        if sec != self._second:
            self._second = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        msg = record.msg % record.args if record.args else str(record.msg)
        text = f"{self._prefix}.{int(record.msecs):03d}Z {record.name.replace('.', '/')}{_tag}: {msg}"
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
        # The loop last seen running and its thread: asyncio.get_running_loop()
        # makes a getpid() system call each time (Python 3.11), get_ident() none.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        atexit.register(self.flush)

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        loop = self._loop
        if loop is not None and threading.get_ident() == self._loop_thread and loop.is_running():
            return loop
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        self._loop, self._loop_thread = loop, threading.get_ident()
        return loop

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self.emit_line(line)

    def emit_line(self, line: str) -> None:
        loop = self._running_loop()
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
            lines, self._pending = self._pending, []
            try:
                for data in _chunks(lines) if _tag else ["".join(lines)]:
                    self.stream.write(data)
                    self.stream.flush()
            except (OSError, ValueError):
                pass

    def flush(self) -> None:
        with self._lock_:
            self._write()


# "[w0]" after the program name in a worker process's lines (mailhouse/smtpd[w0]: ...),
# as Postfix names the process that logged; "" in the main process.
_tag = ""
# Processes sharing a pipe (workers on the main process's stderr): a write of
# at most this many bytes is never interleaved with another's (PIPE_BUF).
_ATOMIC_WRITE = 4096


def tag_process(tag: str) -> None:
    global _tag
    _tag = f"[{tag}]"


def _chunks(lines: list[str]) -> list[str]:
    """Whole lines, grouped into writes of at most _ATOMIC_WRITE bytes where possible."""
    out: list[str] = []
    group: list[str] = []
    size = 0
    for line in lines:
        n = len(line.encode("utf-8", "surrogateescape"))
        if group and size + n > _ATOMIC_WRITE:
            out.append("".join(group))
            group, size = [], 0
        group.append(line)
        size += n
    if group:
        out.append("".join(group))
    return out


_root = logging.getLogger("mailhouse")
_fast: _BatchingHandler | None = None  # set by setup(): our handler, for the fast path


class _Logger(logging.Logger):
    """`info()` without a LogRecord when only our handler would see the line."""

    _mh_name = ""  # "smtpd", "store/sqlite": the name as the line shows it

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        h = _fast
        if (
            h is not None
            and not kwargs
            and not self.handlers
            and not self.filters
            and self.parent is _root
            and len(_root.handlers) == 1
            and _root.handlers[0] is h
            and not h.filters
            and self.isEnabledFor(logging.INFO)
        ):
            try:
                text = msg % args if args else str(msg)  # type: ignore[operator]
            except Exception:  # let logging report the bad format as usual (below)
                text = None
            fmt = h.formatter
            if text is not None and isinstance(fmt, _Formatter):
                h.emit_line(f"{fmt.stamp(time.time())} {self._mh_name}{_tag}: {text}\n")
                return
        super().info(msg, *args, **kwargs)


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
    global _fast
    _fast = handler


def flush() -> None:
    for h in logging.getLogger("mailhouse").handlers:
        h.flush()


def get(name: str) -> logging.Logger:
    logger = logging.getLogger(f"mailhouse.{name}")
    if type(logger) is logging.Logger:
        # Same layout, one method more: our fast info() (see _Logger).
        logger.__class__ = _Logger
        logger._mh_name = logger.name.replace(".", "/")  # type: ignore[attr-defined]
    return logger
