"""Mailbox names: validation, INBOX's case-insensitivity, LIST patterns.

Names are stored as Unicode text with ``/`` as the hierarchy delimiter; the
wire encoding (modified UTF-7 or UTF-8) is the session's business
(:mod:`mailhouse.imap.utf7`). ``INBOX`` is case-insensitive, also as the
first level of a hierarchy (``inbox/Work`` is ``INBOX/Work``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

DELIMITER = "/"
MAX_NAME = 512
MAX_LEVELS = 32


def normalize(name: str) -> str:
    """The stored form of a name: INBOX's first level upper-cased."""
    head, sep, rest = name.partition(DELIMITER)
    if head.upper() == "INBOX":
        return "INBOX" + sep + rest
    return name


def check_new_name(name: str) -> str | None:
    """Why ``name`` cannot be created, or None when it can. A trailing
    delimiter is dropped by the caller first (RFC 9051 §6.3.4)."""
    if not name:
        return "Empty mailbox name"
    if len(name) > MAX_NAME:
        return "Mailbox name too long"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "Control characters are not allowed in mailbox names"
    if "*" in name or "%" in name:
        return "Wildcards are not allowed in mailbox names"
    parts = name.split(DELIMITER)
    if any(not p for p in parts):
        return "Empty hierarchy level in mailbox name"
    if len(parts) > MAX_LEVELS:
        return "Mailbox name has too many levels"
    return None


def parents(name: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``."""
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


def canonical_pattern(reference: str, pattern: str) -> str:
    """Reference and pattern combined as RFC 3501 §6.3.8 describes."""
    if not reference:
        return pattern
    if pattern.startswith(DELIMITER):
        return pattern
    if reference.endswith(DELIMITER):
        return reference + pattern
    return reference + DELIMITER + pattern if pattern else reference


@functools.lru_cache(maxsize=256)
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches anything, ``%`` anything but the delimiter; a first
    level spelling INBOX in any case matches INBOX."""
    head, sep, rest = pattern.partition(DELIMITER)
    if head.upper() == "INBOX":
        pattern = "INBOX" + sep + rest
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.S)


def matches(pattern: str, name: str) -> bool:
    return pattern_regex(pattern).fullmatch(name) is not None


def with_parents(names: Iterable[str]) -> tuple[set[str], set[str]]:
    """(existing names, names that only exist as parents of others)."""
    existing = set(names)
    implied: set[str] = set()
    for n in existing:
        for p in parents(n):
            if p not in existing:
                implied.add(p)
    return existing, implied


def has_children(name: str, all_names: Iterable[str]) -> bool:
    prefix = name + DELIMITER
    return any(n.startswith(prefix) for n in all_names)
