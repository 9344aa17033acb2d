"""Printing rows: aligned columns for people, a JSON array with --json for scripts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def fmt_age(seconds: float) -> str:
    """A compact age: `45s`, `12m`, `3h`, `2d`."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, as_json: bool, empty: str = "") -> None:
    if as_json:
        json.dump(list(rows), sys.stdout, ensure_ascii=False, indent=None)
        sys.stdout.write("\n")
        return
    if not rows:
        if empty:
            print(empty, file=sys.stderr)
        return

    def cell(v: Any) -> str:
        if isinstance(v, list | tuple | set):
            return ",".join(str(x) for x in v) if v else "-"
        return "-" if v is None or v == "" else str(v)

    table = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())
