"""Header blocks of recently fetched messages, shared by the sessions of a process.

Clients list a mailbox with ``FETCH 1:* (... BODY.PEEK[HEADER.FIELDS (...)])``
and many (webmails over IMAP, phones on every reconnect) list the same
messages again and again. Dovecot keeps such fields in its per-mailbox
``dovecot.index.cache``; this is the in-memory equivalent: the header block
and internal date of a message, and the HEADER.FIELDS subsets cut from it,
so a repeated listing reads neither the store nor the header again.

Stored messages never change, so an entry never goes stale; it is keyed by
(folder id, UIDVALIDITY, UID), which names one message for good (RFC 9051
§2.3.1.1: UIDs are not reused within a UIDVALIDITY), and checked against the
size the session knows for the message as well. The cache is bounded by the
bytes it holds (least recently used first out).
"""

from __future__ import annotations

from collections import OrderedDict

MAX_BYTES = 16 * 1024 * 1024
ENTRY_OVERHEAD = 200  # the key, the entry, the dict slots: roughly, per message
MAX_HEADER = 64 * 1024  # longer header blocks are not kept


Key = tuple[int, int, int]  # folder id, UIDVALIDITY, UID


class CachedHeader:
    __slots__ = ("header", "internal_date", "internal_tz", "key", "size", "subsets")

    def __init__(self, key: Key, header: bytes, internal_date: float, size: int, internal_tz: int = 0) -> None:
        self.key = key
        self.header = header
        self.internal_date = internal_date
        self.internal_tz = internal_tz  # minutes east of UTC the internal date was stated in
        self.size = size
        self.subsets: dict[tuple[tuple[str, ...], bool], bytes] | None = None

    def cost(self) -> int:
        n = len(self.header) + ENTRY_OVERHEAD
        for v in (self.subsets or {}).values():
            n += len(v) + ENTRY_OVERHEAD // 2
        return n


class HeaderCache:
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[Key, CachedHeader] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key, size: int) -> CachedHeader | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.size != size:  # cannot happen for one message: be safe anyway
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: Key, header: bytes, internal_date: float, size: int, internal_tz: int = 0) -> CachedHeader:
        entry = CachedHeader(key, header, internal_date, size, internal_tz)
        if len(header) <= MAX_HEADER:
            self._drop(key)
            self._entries[key] = entry
            self.bytes += entry.cost()
            self._trim()
        return entry

    def subset(self, entry: CachedHeader, names: tuple[str, ...], exclude: bool, value: bytes) -> None:
        """Remember a HEADER.FIELDS (.NOT) result cut from ``entry``'s header."""
        if entry.subsets is None:
            entry.subsets = {}
        elif len(entry.subsets) >= 4:
            return  # a client asking for ever new field lists: keep the first few
        entry.subsets[(names, exclude)] = value
        if self._entries.get(entry.key) is entry:
            self.bytes += len(value) + ENTRY_OVERHEAD // 2
            self._trim()

    def _drop(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.cost()

    def _trim(self) -> None:
        while self.bytes > self.max_bytes and self._entries:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.cost()
