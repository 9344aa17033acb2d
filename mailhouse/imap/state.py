"""What every part of an IMAP session shares: its state, output and the
bookkeeping that keeps the client's view of the selected mailbox in step.

The command handlers live in mixins (:mod:`mailhouse.imap.folders`,
:mod:`mailhouse.imap.messages`) over :class:`SessionState`;
:mod:`mailhouse.imap.session` puts them together with the input loop.
The session never touches a socket: it writes through a :class:`SessionIO`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

from mailhouse import log
from mailhouse.context import Context
from mailhouse.imap import writer as w
from mailhouse.imap.mailbox import MailboxView
from mailhouse.imap.names import normalize
from mailhouse.imap.parser import CommandParser
from mailhouse.imap.utf7 import decode_mailbox_name
from mailhouse.imap.watch import FolderWatcher
from mailhouse.store.base import Store, StoreError
from mailhouse.store.models import Account, Folder, FolderColumns

logger = log.get("imap")

FLUSH_AT = 256 * 1024
"""Output is written out once this much is buffered, then drained."""

NO_CHANGES = (1 << 63) - 1
"""A mod-sequence above any: ``folder_changes(id, NO_CHANGES)`` is the folder row alone."""


class SessionIO(Protocol):
    """The connection under a session (sockets in :mod:`mailhouse.net.imap`,
    a list in the transcript tests)."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    async def start_tls(self) -> bool:
        """Switch to TLS; False when the handshake failed (close then)."""
        ...

    def start_compression(self, pending: bytes) -> bytes:
        """Compress from now on (RFC 4978); ``pending`` octets received before
        the switch come back inflated."""
        ...

    def close(self) -> None: ...

    def resume(self) -> None:
        """The session consumed its input: reading may go on."""
        ...


class SessionState:
    """Connection state, the selected mailbox, and output helpers."""

    def __init__(
        self,
        ctx: Context,
        io: SessionIO,
        *,
        peer: str = "unknown",
        tls_active: bool = False,
        secure_peer: bool = False,
    ) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.io = io
        self.peer = peer
        self.tls_active = tls_active
        # Loopback counts as secured, as for POP3: a local tool may log in.
        self.secure_peer = secure_peer
        limits = ctx.config.limits
        self.parser = CommandParser(max_literal=limits.max_message_size, literal_plus=True)
        self.out: list[bytes] = []
        self.out_size = 0
        self.state = "nonauth"  # nonauth / auth / selected / logout
        self.account: Account | None = None
        self.view: MailboxView | None = None
        self.enabled: set[str] = set()
        self.condstore = False
        self.compressing = False
        self.saved: list[int] | None = None
        self.dirty = False
        self.closed = False
        self.idle_tag: str | None = None
        self.last_activity = time.monotonic()
        self.announced_keywords: set[str] = set()
        self.watcher = FolderWatcher.for_store(ctx.store)
        self.reads_noted: set[int] = set()
        self._background: set[asyncio.Task[Any]] = set()

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a store write the client need not wait for (journey events)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def save_recent(self) -> None:
        """Tell the store how far this session moved the view's \\Recent mark
        (recent.py): where the marks start after a restart."""
        view = self.view
        if view is not None and (mark := view.recent_to_save()):
            self.background(_note_recent(self.store, view.folder_id, mark))

    # -- capabilities of the moment ---------------------------------------------------------

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def utf8(self) -> bool:
        return "IMAP4REV2" in self.enabled or "UTF8=ACCEPT" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    @property
    def plaintext_ok(self) -> bool:
        return self.tls_active or self.secure_peer or self.ctx.config.allow_plaintext_auth

    # -- output ---------------------------------------------------------------------------------

    def emit(self, data: bytes) -> None:
        self.out.append(data)
        self.out_size += len(data)

    async def flush(self) -> None:
        if not self.out:
            return
        data = b"".join(self.out)
        self.out.clear()
        self.out_size = 0
        if not self.closed:
            self.io.write(data)
            await self.io.drain()

    async def maybe_flush(self) -> None:
        if self.out_size >= FLUSH_AT:
            await self.flush()

    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        self.emit(w.tagged(tag, status, text, code))

    async def finish(
        self,
        tag: str,
        status: str = "OK",
        text: str = "completed",
        code: str | None = None,
        *,
        expunge_ok: bool = True,
    ) -> None:
        """Announce the selected mailbox's changes as far as allowed, then the
        tagged response."""
        if self.view is not None:
            await self.sync()
            self.announce(expunge_ok=expunge_ok)
        self.tagged(tag, status, text, code)

    # -- names ---------------------------------------------------------------------------------

    def decode_name(self, raw: bytes) -> str | None:
        """The stored form of the name the client sent, or None when ``raw``
        is not a valid name in the session's encoding (modified UTF-7 with
        8-bit octets, a malformed or non-canonical ``&...-`` run, invalid
        UTF-8 after UTF8=ACCEPT: RFC 3501 §5.1.3, RFC 6855 §3). Such a name
        is refused by CREATE and RENAME and names no mailbox elsewhere: a
        repaired decoding would make two spellings alias one mailbox."""
        try:
            return normalize(decode_mailbox_name(raw, utf8=self.utf8, strict=True))
        except ValueError:
            return None

    # -- folders by name ----------------------------------------------------------------------

    async def folder_named(self, name: str) -> Folder | None:
        """The logged-in account's folder called ``name`` (stored form)."""
        account = self.account
        assert account is not None
        fid = self.watcher.folder_ids.get((account.id, name))
        if fid is not None:
            # "Changes after the highest mod-sequence there is": just the row, read by id.
            delta = await self.store.folder_changes(fid, NO_CHANGES)
            if delta is not None and delta.folder.account_id == account.id and delta.folder.name == name:
                return delta.folder
        folder = await self.store.get_folder(account.id, name)
        if folder is not None:
            self.watcher.remember_folder(account.id, name, folder.id)
        return folder

    async def folder_columns_named(self, name: str) -> FolderColumns | None:
        """The columns of the account's folder ``name`` (for SELECT), or None."""
        account = self.account
        assert account is not None
        fid = self.watcher.folder_ids.get((account.id, name))
        if fid is not None:
            cols = await self.store.folder_columns(fid)
            if cols is not None and cols.folder.account_id == account.id and cols.folder.name == name:
                return cols
        folder = await self.store.get_folder(account.id, name)
        if folder is None:
            return None
        cols = await self.store.folder_columns(folder.id)
        if cols is not None:
            self.watcher.remember_folder(account.id, name, folder.id)
        return cols

    # -- the selected mailbox -------------------------------------------------------------------

    def notify(self) -> None:
        """The watcher: the selected folder changed in the store."""
        self.dirty = True
        if self.idle_tag is not None:
            self.kick()

    def known_modseq(self) -> int:
        return self.view.highestmodseq if self.view is not None else 0

    def kick(self) -> None:  # pragma: no cover - provided by the session
        raise NotImplementedError

    async def sync(self, *, force: bool = False) -> None:
        """Take in the store's changes to the selected folder (as pending)."""
        view = self.view
        if view is None or not (self.dirty or force):
            return
        self.dirty = False
        delta = await self.watcher.changes(view.folder_id, view.highestmodseq)
        if self.view is not view:
            return
        if delta is None:
            # Deleted under us: every message is gone.
            view.gone.update(view.uids)
            view.pending_new.clear()
            return
        view.apply(delta)

    def announce(self, *, expunge_ok: bool) -> None:
        """EXPUNGE/VANISHED (when allowed), EXISTS, RECENT, FLAGS and FETCH
        FLAGS for what is pending in the view."""
        view = self.view
        if view is None:
            return
        if expunge_ok and view.gone:
            self.announce_removed(view.take_gone())
        new = view.take_new(claim=True)
        self.save_recent()
        if new:
            self.emit(w.exists(view.count))
            if not self.rev2:
                self.emit(w.recent(view.recent_count()))
        if not view.keyword_names <= self.announced_keywords:
            self.send_flags()
        for i in view.take_flag_changes():
            self.emit(self.flags_fetch(i))

    def announce_removed(self, uids: Iterable[int]) -> None:
        view = self.view
        assert view is not None
        gone = list(uids)
        if self.qresync:
            present = [u for u in gone if view.index_of(u) is not None]
            view.remove(present)
            if present:
                self.emit(w.vanished(present))
        else:
            for seq in view.remove(gone):
                self.emit(w.expunge(seq))

    def send_flags(self) -> None:
        view = self.view
        assert view is not None
        self.announced_keywords = set(view.keyword_names)
        names = list(("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"))
        names += sorted(self.announced_keywords)
        self.emit(w.flags(names))
        perm = [*names, "\\*"]
        if view.readonly:
            self.emit(w.untagged_status("OK", "No permanent flags permitted", w.Code.permanentflags([])))
        else:
            self.emit(w.untagged_status("OK", "Flags permitted", w.Code.permanentflags(perm)))

    def flags_fetch(self, i: int) -> bytes:
        """An unsolicited FETCH with a message's new flags (UID always, MODSEQ
        once CONDSTORE is on)."""
        view = self.view
        assert view is not None
        text = view.flag_text(i, recent=not self.rev2)
        line = b"* %d FETCH (UID %d FLAGS (%s)" % (i + 1, view.uids[i], text.encode())
        if self.condstore:
            line += b" MODSEQ (%d)" % view.modseqs[i]
        return line + b")\r\n"

    def deselect(self) -> None:
        if self.view is not None:
            self.watcher.unwatch(self.view.folder_id, self)
        self.view = None
        self.saved = None
        self.dirty = False
        if self.state == "selected":
            self.state = "auth"

    def enable_condstore(self) -> None:
        self.condstore = True
        self.enabled.add("CONDSTORE")


async def _note_recent(store: Store, folder_id: int, mark: int) -> None:
    # A mark the store missed only makes some messages \Recent again after a restart.
    with contextlib.suppress(StoreError):
        await store.note_recent(folder_id, mark)
