"""The selected mailbox as one session sees it.

A session's view of a mailbox is the list of messages the client knows about,
numbered 1..n by ascending UID. It is kept as parallel arrays (UIDs, flag
bits, mod-sequences, sizes) plus a dict for the few messages with keywords:
about 21 bytes a message, so 100,000 messages cost ~2 MB and a SELECT is one
query (``Store.folder_columns``).

The store changes under the view (other sessions, deliveries, the CLI). A
refresh (``Store.folder_changes`` since the view's mod-sequence) records what
changed as *pending*: new messages, flag changes, and expunged messages that
stay in the view, with their old sequence numbers, until the session may
announce them (RFC 9051 §7.5.1 forbids EXPUNGE during FETCH, STORE and
SEARCH). The session renders the announcements; this module only keeps the
books.

``\\Recent`` (IMAP4rev1): the first session to select a folder read-write after
a message arrived, or to be told of it, sees it as recent; the others do not,
in whichever worker process they are (recent.py).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable

from mailhouse.imap.recent import RecentMarks
from mailhouse.store.models import FolderColumns, FolderDelta

SEEN = 1
ANSWERED = 2
FLAGGED = 4
DELETED = 8
DRAFT = 16
RECENT = 32
"""Session-local bit: never stored, never sent to the store."""

SYSTEM_BITS = 31
FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (SEEN, "\\Seen"),
    (ANSWERED, "\\Answered"),
    (FLAGGED, "\\Flagged"),
    (DELETED, "\\Deleted"),
    (DRAFT, "\\Draft"),
)
FLAG_BIT = {name.upper(): bit for bit, name in FLAG_NAMES}


_RECENT_TABLE = bytes(1 if b & RECENT else 0 for b in range(256))
_SEEN_TABLE = bytes(1 if b & SEEN else 0 for b in range(256))
_ADD_RECENT = bytes(b | RECENT for b in range(256))
_BIT_TABLES: dict[int, bytes] = {}


def _bit_table(bit: int) -> bytes:
    table = _BIT_TABLES.get(bit)
    if table is None:
        table = _BIT_TABLES[bit] = bytes(1 if b & bit else 0 for b in range(256))
    return table


def claim_recent(marks: RecentMarks, folder_id: int, uid: int, floor: int = 0) -> bool:
    """True if ``uid`` is recent for the caller (the first to ask about it)."""
    return marks.claim(folder_id, uid + 1, floor) <= uid


class MailboxView:
    """Parallel arrays of the client's messages plus pending changes."""

    __slots__ = (
        "_flag_text",
        "flags",
        "folder_id",
        "gone",
        "highestmodseq",
        "keyword_names",
        "keywords",
        "modseqs",
        "name",
        "pending_flags",
        "pending_new",
        "readonly",
        "recent_floor",
        "recent_marks",
        "recent_moved",
        "recent_saved",
        "sizes",
        "uidnext",
        "uids",
        "uidvalidity",
    )

    def __init__(self, cols: FolderColumns, *, readonly: bool, recent_marks: RecentMarks) -> None:
        f = cols.folder
        self.recent_marks = recent_marks
        # The store's mark (where the live one starts after a restart), the mark
        # this view moved the live one to, and what of that the store has been told.
        self.recent_floor = self.recent_saved = f.recent_uid
        self.recent_moved = 0
        self.folder_id = f.id
        self.name = f.name
        self.uidvalidity = f.uidvalidity
        self.uidnext = f.uidnext
        self.highestmodseq = f.highestmodseq
        self.readonly = readonly
        self.uids: array[int] = cols.uids
        self.flags: bytearray = cols.flags
        self.modseqs: array[int] = cols.modseqs
        self.sizes: array[int] = cols.sizes
        self.keywords: dict[int, str] = cols.keywords
        self.keyword_names: set[str] = set()
        for kw in self.keywords.values():
            self.keyword_names.update(kw.split())
        self.gone: set[int] = set()
        self.pending_flags: set[int] = set()
        self.pending_new: dict[int, tuple[int, str, int, int]] = {}
        self._flag_text: dict[tuple[int, str], str] = {}
        if not readonly and self.uids:
            # Only read-write selection claims \Recent (RFC 3501 §6.3.2).
            upto = self.uids[-1] + 1
            mark = recent_marks.claim(self.folder_id, upto, self.recent_floor)
            if mark < upto:
                self.recent_moved = upto
            start = bisect_left(self.uids, mark)
            self.flags[start:] = self.flags[start:].translate(_ADD_RECENT)

    # -- lookups ----------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.uids)

    @property
    def last_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def index_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i
        return None

    def flag_text(self, i: int, *, recent: bool) -> str:
        """``\\Seen $Label`` for message index i, cached per combination:
        a FETCH FLAGS of 100,000 messages sees only a handful of them."""
        bits = self.flags[i] if recent else self.flags[i] & SYSTEM_BITS
        kw = self.keywords.get(self.uids[i], "")
        key = (bits, kw)
        text = self._flag_text.get(key)
        if text is None:
            names = [name for bit, name in FLAG_NAMES if bits & bit]
            if kw:
                names.extend(kw.split())
            if bits & RECENT:
                names.append("\\Recent")
            text = " ".join(names)
            self._flag_text[key] = text
        return text

    def recent_count(self) -> int:
        return self.flags.translate(_RECENT_TABLE).count(1)

    def first_unseen(self) -> int:
        """Sequence number of the first message without \\Seen, 0 if none."""
        return self.flags.translate(_SEEN_TABLE).find(0) + 1

    def bit_indexes(self, bit: int, present: bool) -> list[int]:
        """Indexes of the messages with (or without) a flag bit, at C speed:
        the flag bytes map to "1"/"0" and the positions are searched."""
        table = _bit_table(bit)
        text = self.flags.translate(table)
        want = 1 if present else 0
        out: list[int] = []
        find = text.find
        i = find(want)
        while i >= 0:
            out.append(i)
            i = find(want, i + 1)
        return out

    # -- changes --------------------------------------------------------------------------

    def set_flags(self, uid: int, bits: int, keywords: str, modseq: int) -> bool:
        """Record a message's new flags (our own STORE or a refresh); True if
        they differ from what the view had."""
        i = self.index_of(uid)
        if i is None:
            pending = self.pending_new.get(uid)
            if pending is not None:
                self.pending_new[uid] = (bits, keywords, modseq, pending[3])
            return False
        if modseq > self.modseqs[i]:
            self.modseqs[i] = modseq
        old_bits = self.flags[i]
        old_kw = self.keywords.get(uid, "")
        if (old_bits & SYSTEM_BITS) == bits and old_kw == keywords:
            return False
        self.flags[i] = bits | (old_bits & RECENT)
        if keywords:
            self.keywords[uid] = keywords
            self.keyword_names.update(keywords.split())
        else:
            self.keywords.pop(uid, None)
        return True

    def apply(self, delta: FolderDelta) -> None:
        """Take in what changed in the store; nothing is announced here."""
        f = delta.folder
        last = max(self.last_uid, max(self.pending_new, default=0))
        for uid, bits, kw, modseq, size in delta.changed:
            if uid in self.gone:
                continue
            if self.index_of(uid) is not None:
                if self.set_flags(uid, bits & SYSTEM_BITS, kw, modseq):
                    self.pending_flags.add(uid)
            elif uid > last or uid in self.pending_new:
                self.pending_new[uid] = (bits & SYSTEM_BITS, kw, modseq, size)
                last = max(last, uid)
        for uid in delta.vanished:
            if self.index_of(uid) is not None:
                self.gone.add(uid)
                self.pending_flags.discard(uid)
            else:
                self.pending_new.pop(uid, None)
        self.highestmodseq = max(self.highestmodseq, f.highestmodseq)
        self.uidnext = max(self.uidnext, f.uidnext)
        self.name = f.name

    def recent_to_save(self) -> int:
        """The mark this view moved and the store has not been told of (then
        counted as told), or 0."""
        if self.recent_moved <= self.recent_saved:
            return 0
        self.recent_saved = self.recent_moved
        return self.recent_moved

    def take_new(self, *, claim: bool) -> int:
        """Append the pending new messages to the view; their count."""
        if not self.pending_new:
            return 0
        items = sorted(self.pending_new.items())
        self.pending_new.clear()
        for uid, (bits, kw, modseq, size) in items:
            recent = claim and not self.readonly and claim_recent(
                self.recent_marks, self.folder_id, uid, self.recent_floor
            )
            if recent:
                self.recent_moved = uid + 1
            self.uids.append(uid)
            self.flags.append(bits | (RECENT if recent else 0))
            self.modseqs.append(modseq)
            self.sizes.append(size)
            if kw:
                self.keywords[uid] = kw
                self.keyword_names.update(kw.split())
        return len(items)

    def take_flag_changes(self) -> list[int]:
        """Indexes of messages whose flags changed since last announced."""
        if not self.pending_flags:
            return []
        out = sorted(i for i in map(self.index_of, self.pending_flags) if i is not None)
        self.pending_flags.clear()
        return out

    def remove(self, uids: Iterable[int]) -> list[int]:
        """Drop messages from the view; the EXPUNGE sequence numbers to send,
        in order (each one as numbered after the previous ones went)."""
        indexes = sorted(i for i in map(self.index_of, set(uids)) if i is not None)
        if not indexes:
            return []
        for i in indexes:
            uid = self.uids[i]
            self.gone.discard(uid)
            self.pending_flags.discard(uid)
            self.keywords.pop(uid, None)
        if len(indexes) <= 32:
            for i in reversed(indexes):
                del self.uids[i]
                del self.flags[i]
                del self.modseqs[i]
                del self.sizes[i]
        else:
            drop = set(indexes)
            keep = [i for i in range(len(self.uids)) if i not in drop]
            self.uids = array("I", (self.uids[i] for i in keep))
            self.flags = bytearray(self.flags[i] for i in keep)
            self.modseqs = array("Q", (self.modseqs[i] for i in keep))
            self.sizes = array("Q", (self.sizes[i] for i in keep))
        return [i + 1 - k for k, i in enumerate(indexes)]

    def take_gone(self) -> list[int]:
        """UIDs expunged in the store and not yet removed from the view."""
        return sorted(self.gone)
