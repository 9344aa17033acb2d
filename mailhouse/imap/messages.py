"""Commands on the messages of the selected mailbox: FETCH, STORE, SEARCH,
SORT, THREAD, COPY, MOVE, EXPUNGE (and their UID forms)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from mailhouse.imap import fetch as fx
from mailhouse.imap import writer as w
from mailhouse.imap.headercache import CachedHeader
from mailhouse.imap.mailbox import SEEN, MailboxView
from mailhouse.imap.ordering import Item, sort_items, thread_ordered_subject, thread_references
from mailhouse.imap.parser import (
    BinarySection,
    BinarySize,
    BodySection,
    Copy,
    Expunge,
    Fetch,
    FetchAttr,
    FetchItem,
    Move,
    Search,
    Section,
    Sort,
    Store,
    Thread,
    UidExpunge,
)
from mailhouse.imap.search import Evaluator, parse_charset, uses_modseq
from mailhouse.imap.sequence import SequenceSet, format_numbers
from mailhouse.imap.state import SessionState, logger
from mailhouse.store.models import Message, SearchRow, flags_to_bits

FETCH_BATCH = 100
HEADER_BATCH = 500
UID_ITEM = FetchAttr("UID")


class BadSet(Exception):
    """A message sequence number beyond the mailbox (tagged BAD)."""


def _internal_date(ts: float, tz: int) -> str:
    """The internal date as stated: in its own UTC offset (minutes east)."""
    return w.format_internal_date(datetime.fromtimestamp(ts, w.offset_zone(tz)))


def _literal(label: bytes, data: bytes) -> bytes:
    """``label {n}`` CRLF and the data. A plain literal is CHAR8, without NUL
    (RFC 9051 §9; only BINARY uses literal8): a NUL of a message stored with
    binary content is sent as 0x80, as Dovecot does, which keeps the size."""
    if b"\0" in data:
        data = data.replace(b"\0", b"\x80")
    return b"%s {%d}\r\n%s" % (label, len(data), data)


class MessageCommands(SessionState):
    # -- which messages a set names ------------------------------------------------------------

    def indexes(self, seqset: SequenceSet, *, uid: bool) -> list[int]:
        """0-based view indexes named by a sequence set, ascending."""
        view = self.view
        assert view is not None
        if seqset.saved:
            out: list[int] = []
            for u in self.saved or ():
                i = view.index_of(u)
                if i is not None:
                    out.append(i)
            return sorted(set(out))
        if uid:
            result: list[int] = []
            for a, b in seqset.uid_slices(view.uids):
                result.extend(range(a, b))
            return result
        if view.count == 0 and seqset.largest_explicit() <= 1 and seqset.has_star:
            return []  # "1:*" of an empty mailbox: nothing, not an error
        if seqset.exceeds(view.count):
            raise BadSet
        result = []
        for lo, hi in seqset.resolve(view.count):
            result.extend(range(lo - 1, hi))
        return result

    def _numbers(self, idx: Sequence[int], uid: bool) -> list[int]:
        view = self.view
        assert view is not None
        return [view.uids[i] for i in idx] if uid else [i + 1 for i in idx]

    # -- FETCH ------------------------------------------------------------------------------------

    async def cmd_fetch(self, cmd: Fetch) -> None:
        view = self.view
        assert view is not None
        try:
            idx = self.indexes(cmd.sequence_set, uid=cmd.uid)
        except BadSet:
            self.tagged(cmd.tag, "BAD", "Invalid message sequence number")
            return
        items: tuple[FetchItem, ...] = cmd.items
        if cmd.uid and UID_ITEM not in items:
            items = (UID_ITEM, *items)
        wants_modseq = any(isinstance(i, FetchAttr) and i.name == "MODSEQ" for i in items)
        if cmd.changed_since is not None or wants_modseq:
            self.enable_condstore()
        if cmd.vanished:
            if not self.qresync:
                self.tagged(cmd.tag, "BAD", "VANISHED needs ENABLE QRESYNC")
                return
            assert cmd.changed_since is not None
            gone = await self.store.vanished_since(view.folder_id, cmd.changed_since)
            ranges = cmd.sequence_set.resolve(max(view.last_uid, view.uidnext))
            lows = [u for u in gone if view.index_of(u) is None and any(a <= u <= b for a, b in ranges)]
            if lows:
                self.emit(w.vanished(lows, earlier=True))
        if cmd.changed_since is not None:
            since = cmd.changed_since
            idx = [i for i in idx if view.modseqs[i] > since]
            if not wants_modseq:
                items = (*items, FetchAttr("MODSEQ"))
        plan = fx.plan(items)
        seen_now: set[int] = set()
        if plan.sets_seen and not view.readonly:
            seen_now = await self._mark_seen(view, idx)
        unknown_cte = False
        if not plan.needs_message:
            self._fetch_from_arrays(view, idx, plan, seen_now)
            missing = False
        elif plan.header_only:
            missing = await self._fetch_headers(view, idx, plan, seen_now)
        else:
            missing, unknown_cte = await self._fetch_messages(view, idx, plan, seen_now)
        if unknown_cte:
            # RFC 3516 §4.1: a BINARY of a part whose encoding is unknown.
            await self.finish(
                cmd.tag, "NO", "Unknown Content-Transfer-Encoding", w.Code.UNKNOWN_CTE, expunge_ok=cmd.uid,
            )
        elif missing:
            await self.finish(
                cmd.tag, "NO", "Some of the requested messages no longer exist",
                w.Code.EXPUNGEISSUED, expunge_ok=cmd.uid,
            )
        else:
            await self.finish(cmd.tag, "OK", "FETCH completed", expunge_ok=cmd.uid)

    async def _mark_seen(self, view: MailboxView, idx: Sequence[int]) -> set[int]:
        uids = [view.uids[i] for i in idx if not view.flags[i] & SEEN and view.uids[i] not in view.gone]
        if not uids:
            return set()
        changes, _ = await self.store.store_flags(view.folder_id, uids, "add", {"\\Seen"})
        self._apply_changes(view, changes)
        return {c.uid for c in changes}

    def _apply_changes(self, view: MailboxView, changes: Sequence[Any]) -> None:
        top = view.highestmodseq
        for ch in changes:
            bits, kw = flags_to_bits(ch.flags)
            view.set_flags(ch.uid, bits, kw, ch.modseq)
            top = max(top, ch.modseq)
        if changes and top == view.highestmodseq + 1:
            # Only our own change happened since the last refresh: no need to
            # ask the store again for what we already know.
            view.highestmodseq = top
            self.dirty = False

    def _simple_values(self, view: MailboxView, i: int, item: FetchAttr) -> bytes:
        name = item.name
        if name == "UID":
            return b"UID %d" % view.uids[i]
        if name == "FLAGS":
            return b"FLAGS (" + view.flag_text(i, recent=not self.rev2).encode() + b")"
        if name == "MODSEQ":
            return b"MODSEQ (%d)" % view.modseqs[i]
        return b"RFC822.SIZE %d" % view.sizes[i]

    def _fetch_from_arrays(
        self, view: MailboxView, idx: Sequence[int], plan: fx.FetchPlan, seen_now: set[int]
    ) -> None:
        """UID/FLAGS/MODSEQ/RFC822.SIZE straight from the arrays: one format
        string for the whole command, flag texts cached per combination
        (``UID FETCH 1:* (UID FLAGS)`` of 100,000 messages is the hot case)."""
        names = [i.name for i in plan.items if isinstance(i, FetchAttr)]
        if not plan.wants_flags and seen_now:
            names.append("FLAGS")
        if seen_now and self.condstore and not plan.wants_modseq:
            # RFC 7162 §3.2: a flag change is reported with its MODSEQ.
            names.append("MODSEQ")
        uids, flags, modseqs, sizes, keywords = view.uids, view.flags, view.modseqs, view.sizes, view.keywords
        mask = 0xFF if not self.rev2 else 0x1F
        texts: dict[tuple[int, str], bytes] = {}

        def flag_text(i: int) -> bytes:
            key = (flags[i] & mask, keywords.get(uids[i], ""))
            t = texts.get(key)
            if t is None:
                t = texts[key] = view.flag_text(i, recent=not self.rev2).encode()
            return t

        pieces = []
        for name in names:
            if name == "UID":
                pieces.append(b"UID %d")
            elif name == "FLAGS":
                pieces.append(b"FLAGS (%s)")
            elif name == "MODSEQ":
                pieces.append(b"MODSEQ (%d)")
            else:
                pieces.append(b"RFC822.SIZE %d")
        template = b"* %d FETCH (" + b" ".join(pieces) + b")\r\n"
        emit = self.emit
        if names == ["UID", "FLAGS"]:
            emit(b"".join([template % (i + 1, uids[i], flag_text(i)) for i in idx]))
            return
        if names == ["UID", "FLAGS", "MODSEQ"]:
            emit(b"".join([template % (i + 1, uids[i], flag_text(i), modseqs[i]) for i in idx]))
            return
        getters: dict[str, Callable[[int], Any]] = {
            "UID": uids.__getitem__,
            "FLAGS": flag_text,
            "MODSEQ": modseqs.__getitem__,
            "RFC822.SIZE": sizes.__getitem__,
        }
        funcs = [getters[n] for n in names]
        emit(b"".join([template % (i + 1, *[f(i) for f in funcs]) for i in idx]))

    async def _fetch_messages(
        self, view: MailboxView, idx: Sequence[int], plan: fx.FetchPlan, seen_now: set[int]
    ) -> tuple[bool, bool]:
        """(some messages were missing, a BINARY met an unknown encoding)."""
        missing = unknown_cte = False
        for start in range(0, len(idx), FETCH_BATCH):
            batch = idx[start : start + FETCH_BATCH]
            uids = [view.uids[i] for i in batch if view.uids[i] not in view.gone]
            msgs = {m.uid: m for m in await self.store.get_messages(view.folder_id, uids)} if uids else {}
            blobs: dict[int, bytes] = {}
            if plan.needs_blob and msgs:
                blobs = await self.store.read_blobs([m.blob_id for m in msgs.values()])
            if self.view is not view:
                return missing, unknown_cte
            for i in batch:
                msg = msgs.get(view.uids[i])
                if msg is None:
                    missing = True
                    continue
                raw = blobs.get(msg.blob_id) if plan.needs_blob else None
                try:
                    self.emit(
                        self._render(
                            view, i, msg.parse, msg.internal_date, msg.internal_tz, raw, plan, view.uids[i] in seen_now
                        )
                    )
                except fx.UnknownEncoding:
                    unknown_cte = True
                    logger.info("[%s]: BINARY of an unknown transfer encoding, uid %d", self.peer, msg.uid)
                    if msg.uid in seen_now:
                        # \Seen was set before the part proved undecodable: the
                        # client still learns the flag change.
                        self.emit(self.flags_fetch(i))
                if raw is not None:
                    self._note_read(msg, plan, unseen=msg.uid in seen_now or "\\Seen" not in msg.flags)
            await self.maybe_flush()
        return missing, unknown_cte

    async def _fetch_headers(
        self, view: MailboxView, idx: Sequence[int], plan: fx.FetchPlan, seen_now: set[int]
    ) -> bool:
        """Only header sections, INTERNALDATE and array items, the common "list
        the mailbox" FETCH of clients: the header blocks come from the shared
        header cache, else from ``Store.search_rows`` (a prefix of each message,
        no cached parse decoded). Each item becomes a small function once per
        command, so the loop over the messages does no per-item dispatch."""
        uids, flags, modseqs, sizes, keywords = view.uids, view.flags, view.modseqs, view.sizes, view.keywords
        recent = not self.rev2
        mask = 0xFF if recent else 0x1F
        texts: dict[tuple[int, str], bytes] = {}
        cache = self.watcher.headers

        def flags_item(i: int, entry: CachedHeader) -> bytes:
            key = (flags[i] & mask, keywords.get(uids[i], ""))
            t = texts.get(key)
            if t is None:
                t = texts[key] = b"FLAGS (" + view.flag_text(i, recent=recent).encode() + b")"
            return t

        literal = _literal

        def section_item(item: BodySection, label: bytes) -> Callable[[int, CachedHeader], bytes]:
            text, names = item.section.text, item.section.fields
            if text == "HEADER":
                return lambda i, entry: literal(label, fx.partial(entry.header, item))
            exclude = text == "HEADER.FIELDS.NOT"
            key = (names, exclude)

            def fields(i: int, entry: CachedHeader) -> bytes:
                data = entry.subsets.get(key) if entry.subsets is not None else None
                if data is None:
                    data = fx.header_subset(entry.header, names, exclude=exclude)
                    cache.subset(entry, names, exclude, data)
                return literal(label, fx.partial(data, item))

            return fields

        ops: list[Callable[[int, CachedHeader], bytes]] = []
        for item, label in zip(plan.items, plan.labels, strict=True):
            if isinstance(item, BodySection):
                ops.append(section_item(item, label))
                continue
            assert isinstance(item, FetchAttr)
            name = item.name
            if name == "UID":
                ops.append(lambda i, entry: b"UID %d" % uids[i])
            elif name == "FLAGS":
                ops.append(flags_item)
            elif name == "MODSEQ":
                ops.append(lambda i, entry: b"MODSEQ (%d)" % modseqs[i])
            elif name == "RFC822.SIZE":
                ops.append(lambda i, entry: b"RFC822.SIZE %d" % sizes[i])
            elif name == "INTERNALDATE":
                ops.append(
                    lambda i, entry: b'INTERNALDATE "%s"' % _internal_date(entry.internal_date, entry.internal_tz).encode()
                )
            else:  # RFC822.HEADER
                ops.append(lambda i, entry: literal(b"RFC822.HEADER", entry.header))
        if seen_now and not plan.wants_flags:
            ops.append(lambda i, entry: flags_item(i, entry) if uids[i] in seen_now else b"")
        if seen_now and self.condstore and not plan.wants_modseq:
            # RFC 7162 §3.2: a flag change is reported with its MODSEQ.
            ops.append(lambda i, entry: b"MODSEQ (%d)" % modseqs[i] if uids[i] in seen_now else b"")
        missing = False
        folder_id, validity = view.folder_id, view.uidvalidity
        for start in range(0, len(idx), HEADER_BATCH):
            batch = idx[start : start + HEADER_BATCH]
            gone = view.gone
            entries: dict[int, CachedHeader] = {}
            wanted: list[int] = []
            for i in batch:
                uid = uids[i]
                if uid in gone:
                    continue  # expunged meanwhile: reported missing, as when it is not in the store
                entry = cache.get((folder_id, validity, uid), sizes[i])
                if entry is None:
                    wanted.append(i)
                else:
                    entries[i] = entry
            if wanted:
                rows = {r.uid: r for r in await self.store.search_rows(
                    folder_id, [uids[i] for i in wanted], headers=True
                )}
                if self.view is not view:
                    return missing
                for i in wanted:
                    row = rows.get(uids[i])
                    if row is not None and row.header is not None:
                        entries[i] = cache.put(
                            (folder_id, validity, uids[i]), row.header, row.internal_date, sizes[i], row.internal_tz
                        )
            out: list[bytes] = []
            for i in batch:
                found = entries.get(i)
                if found is None:
                    missing = True
                    continue
                values = [op(i, found) for op in ops]
                out.append(b"* %d FETCH (%s)\r\n" % (i + 1, b" ".join(v for v in values if v)))
            self.emit(b"".join(out))
            await self.maybe_flush()
        return missing

    def _render(
        self,
        view: MailboxView,
        i: int,
        parse: dict[str, Any],
        internal_date: float,
        internal_tz: int,
        raw: bytes | None,
        plan: fx.FetchPlan,
        seen_now: bool,
    ) -> bytes:
        utf8 = self.utf8
        out: list[bytes] = []
        for item, label in zip(plan.items, plan.labels, strict=True):
            if isinstance(item, FetchAttr):
                name = item.name
                if name in fx.ARRAY_ATTRS:
                    out.append(self._simple_values(view, i, item))
                elif name == "ENVELOPE":
                    out.append(b"ENVELOPE " + w.envelope(parse.get("envelope"), utf8=utf8))
                elif name == "BODYSTRUCTURE":
                    out.append(b"BODYSTRUCTURE " + w.body_structure(parse.get("body") or {}, utf8=utf8))
                elif name == "BODY":
                    out.append(
                        b"BODY " + w.body_structure(parse.get("body") or {}, extensible=False, utf8=utf8)
                    )
                elif name == "INTERNALDATE":
                    out.append(b'INTERNALDATE "' + _internal_date(internal_date, internal_tz).encode() + b'"')
                else:
                    assert raw is not None
                    if name == "RFC822":
                        data = raw
                    elif name == "RFC822.HEADER":
                        data = fx.section_bytes(raw, parse, Section(text="HEADER")) or b""
                    else:
                        data = fx.section_bytes(raw, parse, Section(text="TEXT")) or b""
                    out.append(_literal(label, data))
            elif isinstance(item, BodySection):
                assert raw is not None
                section = fx.section_bytes(raw, parse, item.section)
                if section is None:
                    out.append(label + b" NIL")
                else:
                    data = fx.partial(section, item)
                    out.append(_literal(label, data))
            elif isinstance(item, BinarySection):
                assert raw is not None
                data2 = fx.binary_bytes(raw, parse, item.part)
                value: w.Value = None if data2 is None else w.binary_literal(fx.partial(data2, item))
                out.append(label + b" " + w.encode(value))
            elif isinstance(item, BinarySize):
                assert raw is not None
                data3 = fx.binary_bytes(raw, parse, item.part)
                out.append(label + (b" NIL" if data3 is None else b" %d" % len(data3)))
        if seen_now and not plan.wants_flags:
            out.append(self._simple_values(view, i, FetchAttr("FLAGS")))
        if seen_now and self.condstore and not plan.wants_modseq:
            # RFC 7162 §3.2: a flag change is reported with its MODSEQ.
            out.append(b"MODSEQ (%d)" % view.modseqs[i])
        return b"* %d FETCH (" % (i + 1) + b" ".join(out) + b")\r\n"

    def _note_read(self, msg: Message, plan: fx.FetchPlan, *, unseen: bool) -> None:
        """The journey's "read" event, the first time a body is fetched (the
        store keeps it once per account; a message already seen is skipped
        here to spare that write)."""
        if msg.queue_id is None or self.account is None or not unseen:
            return
        if not any(
            (isinstance(it, BodySection) and it.section.text in (None, "TEXT"))
            or isinstance(it, BinarySection)
            or (isinstance(it, FetchAttr) and it.name in ("RFC822", "RFC822.TEXT"))
            for it in plan.items
        ):
            return
        if msg.id in self.reads_noted:
            return
        self.reads_noted.add(msg.id)
        self.background(
            self.store.note_first_read(msg.queue_id, msg.message_id, self.account.address, "IMAP")
        )

    # -- STORE ---------------------------------------------------------------------------------------

    async def cmd_store(self, cmd: Store) -> None:
        view = self.view
        assert view is not None
        if view.readonly:
            self.tagged(cmd.tag, "NO", "Mailbox is read-only", w.Code.READ_ONLY)
            return
        try:
            idx = self.indexes(cmd.sequence_set, uid=cmd.uid)
        except BadSet:
            self.tagged(cmd.tag, "BAD", "Invalid message sequence number")
            return
        if cmd.unchanged_since is not None:
            self.enable_condstore()
        uids = [view.uids[i] for i in idx if view.uids[i] not in view.gone]
        mode = {"set": "replace", "add": "add", "remove": "remove"}[cmd.action]
        changes: list[Any] = []
        failed: list[int] = []
        vanished: list[int] = []
        if uids:
            changes, failed = await self.store.store_flags(
                view.folder_id, uids, mode, set(cmd.flags), cmd.unchanged_since, missing=vanished
            )
        if self.view is not view:
            return
        self._apply_changes(view, changes)
        if vanished:
            # Expunged by another session, not yet announced here: no FETCH
            # with flags the message no longer has (RFC 2180 §4.2.1); the next
            # refresh brings its EXPUNGE.
            self.dirty = True
        changed = {c.uid for c in changes}
        skip = set(failed) | set(vanished)
        failed_set = set(failed)
        for i in idx:
            uid = view.uids[i]
            if uid in skip or uid in view.gone:
                continue
            if not cmd.silent:
                parts = [b"FLAGS (" + view.flag_text(i, recent=not self.rev2).encode() + b")"]
                if cmd.uid:
                    parts.insert(0, b"UID %d" % uid)
                if self.condstore:
                    parts.append(b"MODSEQ (%d)" % view.modseqs[i])
                self.emit(b"* %d FETCH (%s)\r\n" % (i + 1, b" ".join(parts)))
            elif self.condstore and uid in changed:
                # RFC 7162 §3.2: the new mod-sequence is reported even with .SILENT.
                self.emit(b"* %d FETCH (UID %d MODSEQ (%d))\r\n" % (i + 1, uid, view.modseqs[i]))
            view.pending_flags.discard(uid)
        code = None
        if failed:
            nums = failed if cmd.uid else [i + 1 for i in idx if view.uids[i] in failed_set]
            code = w.Code.modified(nums)
        await self.finish(cmd.tag, "OK", "STORE completed", code, expunge_ok=cmd.uid)

    # -- SEARCH, SORT, THREAD ----------------------------------------------------------------------------

    async def _search(self, key: Any, charset: str) -> list[int]:
        view = self.view
        assert view is not None
        folder_id = view.folder_id

        async def load_rows(uids: list[int], headers: bool) -> list[SearchRow]:
            return await self.store.search_rows(folder_id, uids, headers=headers)

        async def load_raw(uids: list[int]) -> dict[int, tuple[bytes, dict[str, Any]]]:
            msgs = await self.store.get_messages(folder_id, uids)
            blobs = await self.store.read_blobs([m.blob_id for m in msgs])
            return {m.uid: (blobs.get(m.blob_id, b""), m.parse) for m in msgs}

        ev = Evaluator(view, key, charset=charset, saved=self.saved, load_rows=load_rows, load_raw=load_raw)
        return await ev.run()

    async def cmd_search(self, cmd: Search) -> None:
        view = self.view
        assert view is not None
        if cmd.charset is not None and "UTF8=ACCEPT" in self.enabled:
            # RFC 6855 §3: after ENABLE UTF8=ACCEPT a SEARCH names no charset.
            self.tagged(cmd.tag, "BAD", "SEARCH CHARSET is not allowed after ENABLE UTF8=ACCEPT")
            return
        charset = parse_charset(cmd.charset)
        if charset is None:
            self.tagged(cmd.tag, "NO", "Unsupported charset", w.Code.badcharset(["UTF-8", "US-ASCII"]))
            return
        modseq_used = uses_modseq(cmd.criteria)
        if modseq_used:
            self.enable_condstore()
        try:
            idx = await self._search(cmd.criteria, charset)
        except Exception:
            if cmd.return_options and "SAVE" in cmd.return_options:
                self.saved = []
            raise
        if self.view is not view:
            return
        numbers = self._numbers(idx, cmd.uid)
        modseq = max((view.modseqs[i] for i in idx), default=None) if modseq_used else None
        opts = cmd.return_options
        if opts is None and not self.rev2:
            self.emit(w.search(numbers, modseq=modseq))
        else:
            opts = opts or ("ALL",)
            self._esearch(cmd.tag, cmd.uid, numbers, opts, modseq)
            if "SAVE" in opts:
                uids = [view.uids[i] for i in idx]
                if ("MIN" in opts or "MAX" in opts) and not ("ALL" in opts or "COUNT" in opts):
                    keep = []
                    if uids and "MIN" in opts:
                        keep.append(uids[0])
                    if uids and "MAX" in opts:
                        keep.append(uids[-1])
                    uids = sorted(set(keep))
                self.saved = uids
        await self.finish(cmd.tag, "OK", "SEARCH completed", expunge_ok=cmd.uid)

    def _esearch(
        self, tag: str, uid: bool, numbers: Sequence[int], opts: Sequence[str], modseq: int | None,
        *, ordered: bool = False,
    ) -> None:
        only_save = set(opts) == {"SAVE"}
        if only_save:
            return  # RFC 5182: SAVE alone returns no ESEARCH response
        all_set: str | None = None
        if "ALL" in opts and numbers:
            all_set = ",".join(map(str, numbers)) if ordered else format_numbers(numbers)
        self.emit(
            w.esearch(
                tag,
                uid=uid,
                min_value=numbers[0] if "MIN" in opts and numbers else None,
                max_value=numbers[-1] if "MAX" in opts and numbers else None,
                count=len(numbers) if "COUNT" in opts else None,
                all_set=all_set,
                modseq=modseq if numbers else None,
            )
        )

    async def _items(self, idx: Sequence[int]) -> list[Item]:
        view = self.view
        assert view is not None
        out: list[Item] = []
        for start in range(0, len(idx), 500):
            batch = idx[start : start + 500]
            msgs = {m.uid: m for m in await self.store.get_messages(view.folder_id, [view.uids[i] for i in batch])}
            for i in batch:
                m = msgs.get(view.uids[i])
                if m is not None:
                    out.append(Item(i + 1, m.uid, m.internal_date, m.size, m.parse))
        return out

    async def cmd_sort(self, cmd: Sort) -> None:
        charset = parse_charset(cmd.charset)
        if charset is None:
            self.tagged(cmd.tag, "NO", "Unsupported charset", w.Code.badcharset(["UTF-8", "US-ASCII"]))
            return
        idx = await self._search(cmd.search, charset)
        ordered = sort_items(await self._items(idx), cmd.criteria)
        numbers = [it.uid if cmd.uid else it.seq for it in ordered]
        if cmd.return_options is None:
            self.emit(w.sort(numbers))
        else:
            self._esearch(cmd.tag, cmd.uid, numbers, cmd.return_options, None, ordered=True)
        await self.finish(cmd.tag, "OK", "SORT completed", expunge_ok=cmd.uid)

    async def cmd_thread(self, cmd: Thread) -> None:
        charset = parse_charset(cmd.charset)
        if charset is None:
            self.tagged(cmd.tag, "NO", "Unsupported charset", w.Code.badcharset(["UTF-8", "US-ASCII"]))
            return
        if cmd.algorithm not in ("REFERENCES", "ORDEREDSUBJECT"):
            self.tagged(cmd.tag, "NO", "Unsupported threading algorithm")
            return
        idx = await self._search(cmd.search, charset)
        items = await self._items(idx)
        ids = {it.seq: (it.uid if cmd.uid else it.seq) for it in items}
        if cmd.algorithm == "REFERENCES":
            threads = thread_references(items, ids)
        else:
            threads = thread_ordered_subject(items, ids)
        self.emit(w.thread(threads) if threads else b"* THREAD\r\n")
        await self.finish(cmd.tag, "OK", "THREAD completed", expunge_ok=cmd.uid)

    # -- COPY, MOVE, EXPUNGE --------------------------------------------------------------------------------

    async def cmd_copy(self, cmd: Copy | Move) -> None:
        view = self.view
        assert view is not None and self.account is not None
        move = isinstance(cmd, Move)
        if move and view.readonly:
            self.tagged(cmd.tag, "NO", "Mailbox is read-only", w.Code.READ_ONLY)
            return
        try:
            idx = self.indexes(cmd.sequence_set, uid=cmd.uid)
        except BadSet:
            self.tagged(cmd.tag, "BAD", "Invalid message sequence number")
            return
        name = self.decode_name(cmd.mailbox)
        if name is None:
            # Not a valid name: no mailbox, and CREATE would not make one either.
            self.tagged(cmd.tag, "NO", "Invalid mailbox name", w.Code.NONEXISTENT)
            return
        target = await self.store.get_folder(self.account.id, name)
        if target is None:
            self.tagged(cmd.tag, "NO", "No such mailbox", w.Code.TRYCREATE)
            return
        uids = [view.uids[i] for i in idx if view.uids[i] not in view.gone]
        missing = len(uids) < len(idx)
        if not move and uids and not await self._room_for(sum(view.sizes[i] for i in idx)):
            self.tagged(cmd.tag, "NO", "Quota exceeded", w.Code.OVERQUOTA)
            return
        pairs = await self.store.copy_messages(view.folder_id, uids, target.id, move=move) if uids else []
        code = None
        if pairs:
            code = w.Code.copyuid(target.uidvalidity, [p[0] for p in pairs], [p[1] for p in pairs])
        if not move:
            if missing and not pairs:
                self.tagged(cmd.tag, "NO", "Messages were expunged", w.Code.EXPUNGEISSUED)
                return
            await self.finish(cmd.tag, "OK", "COPY completed", code, expunge_ok=cmd.uid)
            return
        if code is not None:
            self.emit(w.untagged_status("OK", "Moved", code))
        if self.view is view:
            self.announce_removed(p[0] for p in pairs)
        await self.finish(cmd.tag, "OK", "MOVE completed", expunge_ok=True)

    async def _room_for(self, size: int) -> bool:
        account = self.account
        if account is None:
            return False
        fresh = self.store.find_account(account.address) or account
        if fresh.quota is None:
            return True
        return await self.store.mailbox_usage(account.id) + size <= fresh.quota

    async def cmd_expunge(self, cmd: Expunge | UidExpunge) -> None:
        view = self.view
        assert view is not None
        if view.readonly:
            self.tagged(cmd.tag, "NO", "Mailbox is read-only", w.Code.READ_ONLY)
            return
        uids: list[int] | None = None
        if isinstance(cmd, UidExpunge):
            uids = [view.uids[i] for i in self.indexes(cmd.sequence_set, uid=True)]
            if not uids:
                await self.finish(cmd.tag, "OK", "EXPUNGE completed")
                return
        gone = await self.store.expunge(view.folder_id, uids)
        if self.view is not view:
            return
        await self.sync(force=bool(gone) or self.dirty)
        view.gone.update(u for u in gone if view.index_of(u) is not None)
        code = w.Code.highestmodseq(view.highestmodseq) if self.condstore else None
        await self.finish(cmd.tag, "OK", "EXPUNGE completed", code)
