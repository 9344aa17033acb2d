"""Logging: one line per event on stderr, in the spirit of Postfix's maillog.

Lines carry the queue id first where there is one, so `grep QUEUEID` follows a
message through every stage.
"""

from __future__ import annotations

import logging
import sys
import time


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ms = int(record.msecs)
        text = f"{ts}.{ms:03d}Z {record.name.replace('.', '/')}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup(level: int = logging.INFO) -> None:
    root = logging.getLogger("mailhouse")
    if any(getattr(h, "_mailhouse", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    handler._mailhouse = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"mailhouse.{name}")
