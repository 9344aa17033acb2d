"""IMAP sequence sets (RFC 9051 §9 ``sequence-set``, RFC 5182 ``$``).

A :class:`SequenceSet` keeps the ranges as the client sent them, with ``*``
as the sentinel :data:`STAR`; nothing is ever expanded into a list of
numbers, so ``1:*`` on a 100,000-message mailbox costs one tuple. Resolving
against a mailbox gives sorted, merged, inclusive ``(low, high)`` ranges:

* :meth:`SequenceSet.resolve` against the largest value (the message count
  for sequence numbers, the last UID for UIDs);
* :meth:`SequenceSet.uid_slices` against the mailbox's ascending UID list,
  giving half-open index slices (``i`` is message sequence number ``i + 1``)
  found by bisection.

The reverse direction, :func:`format_ranges` / :func:`format_numbers`, builds
the compact text used in responses (``VANISHED``, ``COPYUID``, ``MODIFIED``,
``ESEARCH ALL``).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

__all__ = [
    "MAX_NUMBER",
    "STAR",
    "SequenceSet",
    "format_numbers",
    "format_ranges",
    "merge_ranges",
]

MAX_NUMBER: Final = 0xFFFFFFFF
"""Largest ``nz-number``: sequence numbers and UIDs are 32-bit unsigned."""

STAR: Final = MAX_NUMBER + 1
"""Sentinel for ``*``. Larger than any real number, so a range normalised as
``(low, high)`` keeps ``*`` at the high end before it is resolved."""

_SET = re.compile(
    rb"(?:[1-9][0-9]*|\*)(?::(?:[1-9][0-9]*|\*))?(?:,(?:[1-9][0-9]*|\*)(?::(?:[1-9][0-9]*|\*))?)*"
)


def _number(token: bytes) -> int:
    if token == b"*":
        return STAR
    if len(token) > 10:
        raise ValueError("number out of range")
    value = int(token)
    if value > MAX_NUMBER:
        raise ValueError("number out of range")
    return value


class SequenceSet:
    """A parsed ``sequence-set``: ranges with ``*`` unresolved, or ``$``.

    ``ranges`` holds ``(low, high)`` pairs with ``low <= high`` where ``*`` is
    :data:`STAR`; ``saved`` is True for ``$`` (RFC 5182), the result saved by
    an earlier ``SEARCH RETURN (SAVE)``, which only the session can resolve.
    """

    __slots__ = ("ranges", "saved")

    ranges: tuple[tuple[int, int], ...]
    saved: bool

    def __init__(self, ranges: Iterable[tuple[int, int]] = (), *, saved: bool = False) -> None:
        norm: list[tuple[int, int]] = []
        for a, b in ranges:
            if not (1 <= a <= STAR and 1 <= b <= STAR):
                raise ValueError("sequence number out of range")
            norm.append((a, b) if a <= b else (b, a))
        if saved and norm:
            raise ValueError("'$' cannot be combined with other numbers")
        if not saved and not norm:
            raise ValueError("empty sequence set")
        self.ranges = tuple(norm)
        self.saved = saved

    @classmethod
    def _make(cls, ranges: tuple[tuple[int, int], ...], saved: bool) -> SequenceSet:
        # Trusted constructor for already normalised ranges: parsing is on
        # the hot path of every FETCH/STORE/SEARCH.
        obj = object.__new__(cls)
        obj.ranges = ranges
        obj.saved = saved
        return obj

    @classmethod
    def parse(cls, text: bytes | str) -> SequenceSet:
        """Parse ``1:3,5,7:*`` or ``$``; raise ValueError when it is not one."""
        data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
        cached = _CACHE.get(data)
        if cached is not None:
            return cached
        if data == b"$":
            result = cls._make((), True)
        elif _SET.fullmatch(data) is None:
            raise ValueError("invalid sequence set")
        else:
            out: list[tuple[int, int]] = []
            for item in data.split(b","):
                lo, sep, hi = item.partition(b":")
                a = _number(lo)
                b = _number(hi) if sep else a
                out.append((a, b) if a <= b else (b, a))
            result = cls._make(tuple(out), False)
        if len(data) <= 32:
            if len(_CACHE) >= 256:
                _CACHE.clear()
            _CACHE[data] = result
        return result

    @classmethod
    def of(cls, values: Iterable[int]) -> SequenceSet:
        """The compact set holding exactly ``values`` (for tests and replies)."""
        return cls(merge_ranges((v, v) for v in values))

    # -- inspection -----------------------------------------------------------------

    @property
    def has_star(self) -> bool:
        """True when ``*`` occurs anywhere in the set."""
        return any(hi == STAR for _, hi in self.ranges)

    def largest_explicit(self) -> int:
        """The largest number written in the set (``*`` excluded), 0 if none."""
        best = 0
        for lo, hi in self.ranges:
            if hi != STAR:
                best = max(best, hi)
            elif lo != STAR:
                best = max(best, lo)
        return best

    def exceeds(self, largest: int) -> bool:
        """True if the set names a message beyond ``largest``.

        RFC 9051 §9 asks for a tagged BAD when a message *sequence number*
        is larger than the message count, ``*`` in an empty mailbox included.
        UID sets never fail this way: they are simply clipped.
        """
        if self.saved:
            return False
        if largest <= 0:
            return True
        return self.largest_explicit() > largest

    # -- resolution -------------------------------------------------------------------

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive ranges within ``1..largest``.

        ``*`` stands for ``largest``; a range reaching past it is clipped, so
        UID ``559:*`` with a last UID of 500 gives ``[(500, 500)]`` as RFC
        9051 requires. Raises ValueError for ``$``.
        """
        if self.saved:
            raise ValueError("'$' must be resolved by the session")
        if largest <= 0:
            return []
        out: list[tuple[int, int]] = []
        for lo, hi in self.ranges:
            if lo == STAR:
                lo = largest
            if hi == STAR:
                hi = largest
            if lo > hi:
                lo, hi = hi, lo
            if lo > largest:
                continue
            out.append((lo, min(hi, largest)))
        return merge_ranges(out)

    def uid_slices(self, uids: Sequence[int]) -> list[tuple[int, int]]:
        """Half-open index slices of ``uids`` (ascending) that the set selects.

        Slice ``(i, j)`` covers messages with sequence numbers ``i+1 .. j``.
        Costs O(k log n) for k ranges, whatever the mailbox size.
        """
        if not uids:
            return []
        out: list[tuple[int, int]] = []
        prev_end = -1
        for lo, hi in self.resolve(uids[-1]):
            i = bisect_left(uids, lo)
            j = bisect_right(uids, hi, i)
            if i >= j:
                continue
            if i == prev_end:
                out[-1] = (out[-1][0], j)
            else:
                out.append((i, j))
            prev_end = j
        return out

    def select_uids(self, uids: Sequence[int]) -> list[int]:
        """The UIDs of ``uids`` (ascending) in the set, in ascending order."""
        out: list[int] = []
        for i, j in self.uid_slices(uids):
            out.extend(uids[i:j])
        return out

    def iter_values(self, largest: int) -> Iterator[int]:
        """Every selected number within ``1..largest``, ascending, lazily."""
        for lo, hi in self.resolve(largest):
            yield from range(lo, hi + 1)

    def contains(self, value: int, largest: int) -> bool:
        """Whether ``value`` is selected once ``*`` means ``largest``."""
        return any(lo <= value <= hi for lo, hi in self.resolve(largest))

    def count(self, largest: int) -> int:
        """How many numbers within ``1..largest`` the set selects."""
        return sum(hi - lo + 1 for lo, hi in self.resolve(largest))

    # -- dunder ----------------------------------------------------------------------------

    def __str__(self) -> str:
        if self.saved:
            return "$"

        def num(n: int) -> str:
            return "*" if n == STAR else str(n)

        return ",".join(num(lo) if lo == hi else f"{num(lo)}:{num(hi)}" for lo, hi in self.ranges)

    def __repr__(self) -> str:
        return f"SequenceSet({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SequenceSet):
            return NotImplemented
        return self.saved == other.saved and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash((self.saved, self.ranges))


# Clients repeat the same few sets ("1:*", "1", "$"...); SequenceSet is
# never mutated, so parsed instances are shared.
_CACHE: dict[bytes, SequenceSet] = {}


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort inclusive ranges and merge overlapping or adjacent ones."""
    items = sorted((a, b) if a <= b else (b, a) for a, b in ranges)
    out: list[tuple[int, int]] = []
    for lo, hi in items:
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def format_ranges(ranges: Iterable[tuple[int, int]]) -> str:
    """``[(1, 3), (5, 5)]`` -> ``"1:3,5"`` (merged first; "" when empty)."""
    return ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in merge_ranges(ranges))


def format_numbers(values: Iterable[int]) -> str:
    """``[5, 1, 2, 3]`` -> ``"1:3,5"``: the compact form of a set of numbers."""
    vals = sorted(set(values))
    if not vals:
        return ""
    parts: list[str] = []
    start = prev = vals[0]
    for v in vals[1:]:
        if v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = v
    parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)
