"""SEARCH evaluation over a mailbox view, loading only what the keys need.

Keys are evaluated in three-valued logic: a key whose data is not loaded yet
answers "unknown" (None), so ``UNSEEN FROM x`` decides most messages from
the flag array and reads header blocks only for the unseen ones. The levels:

0. the view's arrays: flags, keywords, UIDs, sequence numbers, sizes,
   mod-sequences;
1. ``Store.search_rows``: internal dates, and header blocks when a header
   or sent-date key is present;
2. the message bytes, for BODY and TEXT (decoded transfer encoding and
   charset, compared case-insensitively), read in batches.
"""

from __future__ import annotations

import email.utils
import re
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from mailhouse.imap.fetch import text_parts
from mailhouse.imap.mailbox import FLAG_BIT, RECENT, MailboxView
from mailhouse.imap.parser import (
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSequence,
    SearchSize,
    SearchText,
    SearchUid,
    SearchWithin,
)
from mailhouse.imap.sequence import SequenceSet
from mailhouse.mime.headers import codec_name, decode_bytes, decode_words, iter_fields, unfold
from mailhouse.mime.structure import parse_address_list
from mailhouse.store.models import SearchRow

TEXT_BATCH = 100
ROW_BATCH = 2000


class _Ranges:
    """Membership in sorted disjoint inclusive ranges, by bisection."""

    __slots__ = ("highs", "lows")

    def __init__(self, ranges: Sequence[tuple[int, int]]) -> None:
        self.lows = [lo for lo, _ in ranges]
        self.highs = [hi for _, hi in ranges]

    def __contains__(self, value: int) -> bool:
        k = bisect_right(self.lows, value) - 1
        return k >= 0 and value <= self.highs[k]


@dataclass
class Needs:
    rows: bool = False
    headers: bool = False


def needs(key: SearchKey) -> Needs:
    out = Needs()
    stack: list[SearchKey] = [key]
    while stack:
        k = stack.pop()
        if isinstance(k, SearchAnd):
            stack.extend(k.keys)
        elif isinstance(k, SearchOr):
            stack.extend((k.left, k.right))
        elif isinstance(k, SearchNot):
            stack.append(k.key)
        elif isinstance(k, SearchDate | SearchWithin):
            out.rows = True
            if isinstance(k, SearchDate) and k.field == "sent":
                out.headers = True
        elif isinstance(k, SearchHeader):
            out.rows = out.headers = True
    return out


def uses_modseq(key: SearchKey) -> bool:
    stack: list[SearchKey] = [key]
    while stack:
        k = stack.pop()
        if isinstance(k, SearchModSeq):
            return True
        if isinstance(k, SearchAnd):
            stack.extend(k.keys)
        elif isinstance(k, SearchOr):
            stack.extend((k.left, k.right))
        elif isinstance(k, SearchNot):
            stack.append(k.key)
    return False


@dataclass
class _Loaded:
    rows: dict[int, SearchRow] = field(default_factory=dict)
    headers: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    blocks: dict[int, bytes] = field(default_factory=dict)
    texts: dict[int, tuple[str, str]] = field(default_factory=dict)


def _decode_value(value: bytes, charset: str) -> str:
    return value.decode(charset, "replace").casefold()


ADDRESS_FIELDS = frozenset({"FROM", "TO", "CC", "BCC", "SENDER", "REPLY-TO"})
_ADDRESS_SPLIT = re.compile(r'[\s@<>"(),;:]+')


def _addresses_text(value: str) -> str:
    """An address field as parsed addresses (comments dropped, groups
    named): ``<user-from (c)@ (c) domain.org>`` must match
    ``user-from@domain.org``."""
    parts: list[str] = []
    for name, _adl, mailbox, host in parse_address_list(value):
        if name:
            parts.append(decode_words(name))
        if mailbox is not None:
            parts.append(f"<{mailbox}@{host}>" if host else mailbox)
    return " ".join(parts)


def _header_fields(block: bytes) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for raw_name, raw in iter_fields(block):
        name = raw_name.decode("latin-1").upper()
        text = unfold(raw)
        try:
            decoded = decode_words(text)
        except Exception:  # a broken encoded-word still searches as sent
            decoded = text
        if name in ADDRESS_FIELDS:
            try:
                decoded += "\n" + _addresses_text(text)
            except Exception:
                pass
        out.append((name, decoded.casefold()))
    return out


def _sent_date(fields: list[tuple[str, str]], row: SearchRow) -> date:
    for name, value in fields:
        if name == "DATE":
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                try:
                    return date(parsed[0], parsed[1], parsed[2])
                except ValueError:
                    break
            break
    # No usable Date: the internal date stands in (as RFC 5256 does for SORT).
    return _internal_day(row)


def _internal_day(row: SearchRow) -> date:
    """The internal date's calendar date as it states it, in its own offset
    (RFC 9051 §6.4.4: "disregarding time and timezone")."""
    return datetime.fromtimestamp(row.internal_date + row.internal_tz * 60, UTC).date()


class Evaluator:
    """Evaluates one search program against a view."""

    def __init__(
        self,
        view: MailboxView,
        key: SearchKey,
        *,
        charset: str,
        saved: Sequence[int] | None,
        load_rows: Callable[[list[int], bool], Awaitable[list[SearchRow]]],
        load_raw: Callable[[list[int]], Awaitable[dict[int, tuple[bytes, dict[str, Any]]]]],
    ) -> None:
        self.view = view
        self.key = key
        self.charset = charset
        self.saved = frozenset(saved or ())
        self.load_rows = load_rows
        self.load_raw = load_raw
        self.needs = needs(key)
        self.data = _Loaded()
        self.now = time.time()
        self._sets: dict[int, _Ranges] = {}
        self._strings: dict[int, str] = {}
        self._flat: dict[int, bytes] = {}

    # -- the three levels ----------------------------------------------------------------

    async def run(self) -> list[int]:
        """Indexes (0-based) of the matching messages, ascending."""
        view = self.view
        n = view.count
        key = self.key
        # The commonest searches (UNSEEN, DELETED, ALL...) at C speed.
        if isinstance(key, SearchAll):
            return list(range(n))
        if isinstance(key, SearchFlag):
            flag = key.flag.upper()
            bit = RECENT if flag == "\\RECENT" else FLAG_BIT.get(flag)
            if bit is not None:
                return view.bit_indexes(bit, key.present)
        level = 0
        decided: list[int] = []
        undecided: list[int] = []
        ev = self._eval
        for i in range(n):
            r = ev(self.key, i, level)
            if r is None:
                undecided.append(i)
            elif r:
                decided.append(i)
        # The rest in batches, so header blocks and texts of a big mailbox are
        # never all in memory at once.
        for start in range(0, len(undecided), ROW_BATCH):
            batch = undecided[start : start + ROW_BATCH]
            still = batch
            if self.needs.rows or self.needs.headers:
                uids = [view.uids[i] for i in batch]
                for row in await self.load_rows(uids, self.needs.headers):
                    self.data.rows[row.uid] = row
                    if row.header is not None:
                        self.data.blocks[row.uid] = row.header
                still = []
                for i in batch:
                    if view.uids[i] not in self.data.rows:
                        continue  # expunged meanwhile
                    r = ev(self.key, i, 1)
                    if r is None:
                        still.append(i)
                    elif r:
                        decided.append(i)
            for sub in range(0, len(still), TEXT_BATCH):
                part = still[sub : sub + TEXT_BATCH]
                raws = await self.load_raw([view.uids[i] for i in part])
                for uid, (raw, parse) in raws.items():
                    self.data.texts[uid] = _message_text(raw, parse)
                for i in part:
                    if view.uids[i] in self.data.texts and ev(self.key, i, 2):
                        decided.append(i)
                self.data.texts.clear()
            self.data.blocks.clear()
            self.data.headers.clear()
            self._flat.clear()
        decided.sort()
        return decided

    # -- one key for one message -----------------------------------------------------------

    def _set(self, key: SearchSequence | SearchUid) -> _Ranges | frozenset[int]:
        s: SequenceSet = key.sequence_set
        if s.saved:
            return self.saved
        cached = self._sets.get(id(key))
        if cached is None:
            largest = self.view.last_uid if isinstance(key, SearchUid) else self.view.count
            cached = _Ranges(s.resolve(largest))
            self._sets[id(key)] = cached
        return cached

    def _string(self, key: SearchHeader | SearchText) -> str:
        s = self._strings.get(id(key))
        if s is None:
            s = _decode_value(key.value, self.charset)
            self._strings[id(key)] = s
        return s

    def _fields(self, uid: int) -> list[tuple[str, str]] | None:
        fields = self.data.headers.get(uid)
        if fields is None:
            block = self.data.blocks.get(uid)
            if block is None:
                return None
            fields = self.data.headers[uid] = _header_fields(block)
        return fields

    def _may_contain(self, uid: int, key: SearchHeader, wanted: str) -> bool:
        """A C-speed prefilter: an ASCII header block without encoded words
        that does not hold the (ASCII) string, unfolded and lower-cased,
        cannot match; only the others are parsed field by field."""
        block = self.data.blocks.get(uid)
        if block is None or not wanted.isascii() or not block.isascii() or b"=?" in block:
            return True
        flat = self._flat.get(uid)
        if flat is None:
            flat = self._flat[uid] = block.replace(b"\r\n", b"").replace(b"\n", b"").lower()
        if key.field in ADDRESS_FIELDS:
            # Parsing may drop comments and quotes between the parts of an
            # address, so only each part must occur.
            return all(part.encode() in flat for part in _ADDRESS_SPLIT.split(wanted) if part)
        return wanted.encode() in flat

    def _eval(self, key: SearchKey, i: int, level: int) -> bool | None:
        view = self.view
        if isinstance(key, SearchFlag):
            bit = FLAG_BIT.get(key.flag.upper())
            if bit is not None:
                return bool(view.flags[i] & bit) == key.present
            if key.flag.upper() == "\\RECENT":
                return bool(view.flags[i] & RECENT) == key.present
            kws = view.keywords.get(view.uids[i], "")
            has = bool(kws) and key.flag.upper() in kws.upper().split()
            return has == key.present
        if isinstance(key, SearchAnd):
            unknown = False
            for k in key.keys:
                r = self._eval(k, i, level)
                if r is False:
                    return False
                if r is None:
                    unknown = True
            return None if unknown else True
        if isinstance(key, SearchOr):
            left = self._eval(key.left, i, level)
            if left:
                return True
            right = self._eval(key.right, i, level)
            if right:
                return True
            if left is None or right is None:
                return None
            return False
        if isinstance(key, SearchNot):
            r = self._eval(key.key, i, level)
            return None if r is None else not r
        if isinstance(key, SearchAll):
            return True
        if isinstance(key, SearchUid):
            members = self._set(key)
            return view.uids[i] in members
        if isinstance(key, SearchSequence):
            if key.sequence_set.saved:
                return view.uids[i] in self.saved
            return (i + 1) in self._set(key)
        if isinstance(key, SearchSize):
            size = view.sizes[i]
            return size > key.size if key.larger else size < key.size
        if isinstance(key, SearchModSeq):
            return view.modseqs[i] >= key.modseq
        if level < 1:
            return None
        uid = view.uids[i]
        row = self.data.rows.get(uid)
        if isinstance(key, SearchDate):
            if row is None:
                return None
            if key.field == "internal":
                day = _internal_day(row)
            else:
                day = _sent_date(self._fields(uid) or [], row)
            if key.relation == "before":
                return day < key.date
            if key.relation == "on":
                return day == key.date
            return day >= key.date
        if isinstance(key, SearchWithin):
            if row is None:
                return None
            age = self.now - row.internal_date
            return age > key.seconds if key.older else age <= key.seconds
        if isinstance(key, SearchHeader):
            wanted = self._string(key)
            if wanted and not self._may_contain(uid, key, wanted):
                return False
            fields = self._fields(uid)
            if fields is None:
                return None
            return any(name == key.field and wanted in value for name, value in fields)
        if isinstance(key, SearchText):
            if level < 2:
                return None
            text = self.data.texts.get(uid)
            if text is None:
                return None
            wanted = self._string(key)
            head, body = text
            return wanted in body or (not key.body_only and wanted in head)
        return False


def _message_text(raw: bytes, parse: dict[str, Any]) -> tuple[str, str]:
    """(header text, body text), decoded and case-folded, for BODY/TEXT."""
    top = parse.get("body") or {}
    head_block = raw[int(top.get("header_start", 0)) : int(top.get("body_start", 0))]
    head = " ".join(f"{n} {v}" for n, v in _header_fields(head_block))
    pieces: list[str] = []
    for part, data in text_parts(raw, parse):
        charset = (part.get("params") or {}).get("charset")
        if codec_name(charset) is None:
            charset = "utf-8"
        pieces.append(decode_bytes(data, charset))
    return head, "\n".join(pieces).casefold()


def parse_charset(name: str | None) -> str | None:
    """The Python codec for a SEARCH charset we accept, or None."""
    if name is None:
        return "utf-8"
    upper = name.upper()
    if upper in ("UTF-8", "UTF8"):
        return "utf-8"
    if upper in ("US-ASCII", "ASCII"):
        return "utf-8"  # ASCII is a subset; 8-bit octets are taken as UTF-8
    return None

