"""Commands on mailboxes as a whole: LIST, LSUB, NAMESPACE, STATUS, CREATE,
DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, APPEND and QUOTA.

A user only ever sees their own folders: every lookup goes through the
logged-in account's id.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from mailhouse.imap import names as nm
from mailhouse.imap import writer as w
from mailhouse.imap.parser import (
    Append,
    Create,
    Delete,
    GetQuota,
    GetQuotaRoot,
    List,
    Lsub,
    Namespace,
    Rename,
    SetQuota,
    Status,
    Subscribe,
    Unsubscribe,
)
from mailhouse.imap.state import SessionState
from mailhouse.store.base import NotFound, StoreError
from mailhouse.store.models import AppendItem, Folder, FolderSummary, LocalTarget

USABLE_SPECIAL_USE = ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")


class FolderCommands(SessionState):
    async def _folders(self) -> dict[str, Folder]:
        assert self.account is not None
        return {f.name: f for f in await self.store.list_folders(self.account.id)}

    async def _subscribed(self, folders: dict[str, Folder]) -> set[str]:
        """Subscribed names: existing folders marked so, and names without a
        folder that stay subscribed (RFC 9051 §6.3.7)."""
        assert self.account is not None
        orphans = await self.store.orphan_subscriptions(self.account.id)
        return {n for n, f in folders.items() if f.subscribed} | orphans

    # -- LIST / LSUB ------------------------------------------------------------------------------

    async def cmd_list(self, cmd: List) -> None:
        reference = self.decode_name(cmd.reference) if cmd.reference else ""
        decoded = [self.decode_name(p) for p in cmd.patterns]
        if reference is None:
            decoded = []  # an invalid reference names nothing
        # An invalid name matches no mailbox (RFC 3501 §5.1.3).
        patterns = [nm.canonical_pattern(reference or "", p) for p in decoded if p is not None]
        if not patterns:
            await self.finish(cmd.tag, "OK", "LIST completed")
            return
        assert reference is not None
        if not cmd.extended and patterns == [reference] and cmd.patterns == (b"",):
            # LIST "" "": the delimiter and the root (RFC 9051 §6.3.9).
            root = reference.split(nm.DELIMITER)[0] + nm.DELIMITER if nm.DELIMITER in reference else ""
            self.emit(w.list_response(["\\Noselect"], nm.DELIMITER, root, utf8=self.utf8))
            await self.finish(cmd.tag, "OK", "LIST completed")
            return
        if cmd.return_status is not None and "RECENT" in cmd.return_status and self.rev2:
            self.tagged(cmd.tag, "BAD", "RECENT is not a status item of IMAP4rev2")
            return
        folders = await self._folders()
        subscribed = await self._subscribed(folders)
        existing, implied = nm.with_parents(folders)
        every = existing | implied
        if cmd.select_subscribed:
            every |= subscribed  # a subscription outlives its folder (\NonExistent)
        rows: list[tuple[str, list[str], dict[str, w.Value] | None]] = []
        for name in sorted(every, key=lambda n: (n != "INBOX", n)):
            if not any(nm.matches(p, name) for p in patterns):
                continue
            folder = folders.get(name)
            attrs: list[str] = []
            extended: dict[str, w.Value] | None = None
            selected = True
            if cmd.select_subscribed:
                selected = name in subscribed
            if cmd.select_special_use:
                selected = selected and folder is not None and folder.special_use is not None
            if not selected:
                # RECURSIVEMATCH (RFC 5258 §3): a parent is listed for a
                # subscribed descendant the patterns do not list themselves.
                prefix = name + nm.DELIMITER
                if cmd.select_recursive and cmd.select_subscribed and any(
                    s.startswith(prefix) and not any(nm.matches(p, s) for p in patterns) for s in subscribed
                ):
                    extended = {"CHILDINFO": ["SUBSCRIBED"]}
                else:
                    continue
            if folder is None:
                attrs.append("\\NonExistent" if cmd.extended or self.rev2 else "\\Noselect")
            if cmd.return_children or not cmd.extended:
                # Every implied name is a parent of an existing one, so the
                # existing names alone answer this.
                children = nm.has_children(name, existing)
                if folder is not None:
                    attrs.append("\\HasChildren" if children else "\\HasNoChildren")
                elif children:
                    # The \Noselect parent of other names (one deleted with
                    # inferiors, or never created): RFC 9051 §6.3.4.
                    attrs.append("\\HasChildren")
            if folder is not None and folder.special_use and (
                not cmd.extended or cmd.return_special_use or cmd.select_special_use
            ):
                attrs.append(folder.special_use)
            if name in subscribed and (cmd.return_subscribed or cmd.select_subscribed):
                attrs.append("\\Subscribed")
            rows.append((name, attrs, extended))
        statuses: dict[int, FolderSummary] = {}
        if cmd.return_status is not None:
            ids = [folders[n].id for n, _, _ in rows if n in folders]
            statuses = await self.store.folder_summaries(ids)
        for name, attrs, extended in rows:
            self.emit(w.list_response(attrs, nm.DELIMITER, name, utf8=self.utf8, extended=extended))
            folder = folders.get(name)
            if cmd.return_status is not None and folder is not None:
                summary = statuses[folder.id]
                recent = await self._recent(folder, summary) if "RECENT" in cmd.return_status else 0
                self._status_line(folder, summary, cmd.return_status, recent)
        await self.finish(cmd.tag, "OK", "LIST completed")

    async def cmd_lsub(self, cmd: Lsub) -> None:
        reference = self.decode_name(cmd.reference) if cmd.reference else ""
        decoded = self.decode_name(cmd.pattern)
        if reference is None or decoded is None:
            await self.finish(cmd.tag, "OK", "LSUB completed")  # an invalid name matches nothing
            return
        pattern = nm.canonical_pattern(reference, decoded)
        folders = await self._folders()
        subscribed = sorted(await self._subscribed(folders))
        shown: set[str] = set()
        for name in subscribed:
            if nm.matches(pattern, name):
                shown.add(name)
                continue
            # "%" stops at a level: a subscribed child makes its unsubscribed
            # parent show as \Noselect (RFC 3501 §6.3.9).
            for parent in nm.parents(name):
                if parent not in shown and nm.matches(pattern, parent):
                    shown.add(parent)
        for name in sorted(shown, key=lambda n: (n != "INBOX", n)):
            attrs = [] if name in subscribed else ["\\Noselect"]
            self.emit(w.lsub_response(attrs, nm.DELIMITER, name, utf8=self.utf8))
        await self.finish(cmd.tag, "OK", "LSUB completed")

    async def cmd_namespace(self, cmd: Namespace) -> None:
        self.emit(w.namespace([("", nm.DELIMITER)], None, None, utf8=self.utf8))
        await self.finish(cmd.tag, "OK", "NAMESPACE completed")

    # -- STATUS -----------------------------------------------------------------------------------------

    async def _recent(self, folder: Folder, summary: FolderSummary) -> int:
        """STATUS RECENT: what SELECT would count as \\Recent (mailbox.py),
        the messages no session claimed yet, plus those this session holds
        when the folder is the selected one."""
        mark = self.watcher.recent_marks.get(folder.id, folder.recent_uid)
        if mark >= folder.uidnext:
            unclaimed = 0
        elif mark == 0:
            unclaimed = summary.messages
        else:
            uids = await self.store.folder_uids(folder.id)
            unclaimed = len(uids) - bisect_left(uids, mark)
        view = self.view
        if view is not None and view.folder_id == folder.id:
            unclaimed += view.recent_count()
        return unclaimed

    def _status_line(
        self, folder: Folder, summary: FolderSummary, items: Sequence[str], recent: int = 0
    ) -> None:
        values: list[tuple[str, int]] = []
        for item in items:
            if item == "MESSAGES":
                values.append((item, summary.messages))
            elif item == "UIDNEXT":
                values.append((item, folder.uidnext))
            elif item == "UIDVALIDITY":
                values.append((item, folder.uidvalidity))
            elif item == "UNSEEN":
                values.append((item, summary.unseen))
            elif item == "DELETED":
                values.append((item, summary.deleted))
            elif item == "DELETED-STORAGE":
                # RFC 9208 §5.1: what EXPUNGE would free, the sizes of the \Deleted messages.
                values.append((item, summary.deleted_size))
            elif item == "SIZE":
                values.append((item, summary.size))
            elif item == "HIGHESTMODSEQ":
                values.append((item, folder.highestmodseq))
            elif item == "RECENT":
                values.append((item, recent))
            elif item == "APPENDLIMIT":
                values.append((item, self.ctx.config.limits.max_message_size))
        self.emit(w.status(folder.name, values, utf8=self.utf8))

    async def cmd_status(self, cmd: Status) -> None:
        assert self.account is not None
        name = self.decode_name(cmd.mailbox)
        if "RECENT" in cmd.items and self.rev2:
            self.tagged(cmd.tag, "BAD", "RECENT is not a status item of IMAP4rev2")
            return
        folder = await self.store.get_folder(self.account.id, name) if name is not None else None
        if folder is None:
            self.tagged(cmd.tag, "NO", "No such mailbox", w.Code.NONEXISTENT)
            return
        if "HIGHESTMODSEQ" in cmd.items:
            self.enable_condstore()
        summary = (await self.store.folder_summaries([folder.id]))[folder.id]
        recent = await self._recent(folder, summary) if "RECENT" in cmd.items else 0
        self._status_line(folder, summary, cmd.items, recent)
        await self.finish(cmd.tag, "OK", "STATUS completed")

    # -- CREATE / DELETE / RENAME / (UN)SUBSCRIBE ------------------------------------------------------------

    async def _create_parents(self, name: str, folders: dict[str, Folder]) -> list[str]:
        """Create the missing superiors of ``name`` (RFC 9051 §6.3.4); their names."""
        assert self.account is not None
        created: list[str] = []
        for parent in nm.parents(name):
            if parent not in folders:
                try:
                    folders[parent] = await self.store.create_folder(self.account.id, parent)
                    created.append(parent)
                except StoreError:
                    pass  # created meanwhile by another session
        return created

    async def cmd_create(self, cmd: Create) -> None:
        assert self.account is not None
        decoded = self.decode_name(cmd.mailbox)
        if decoded is None:
            self.tagged(cmd.tag, "NO", "Invalid mailbox name", w.Code.CANNOT)
            return
        name = decoded.rstrip(nm.DELIMITER)
        problem = nm.check_new_name(name)
        if problem is not None:
            self.tagged(cmd.tag, "NO", problem, w.Code.CANNOT)
            return
        special: str | None = None
        for use in cmd.special_use:
            if use not in USABLE_SPECIAL_USE:
                self.tagged(cmd.tag, "NO", f"Special use {use} is not supported", w.Code.USEATTR)
                return
            special = special or use
        if len(cmd.special_use) > 1:
            self.tagged(cmd.tag, "NO", "Only one special use per mailbox", w.Code.USEATTR)
            return
        folders = await self._folders()
        if name in folders:
            self.tagged(cmd.tag, "NO", "Mailbox already exists", w.Code.ALREADYEXISTS)
            return
        created = await self._create_parents(name, folders)
        try:
            await self.store.create_folder(self.account.id, name, special)
        except StoreError:
            self.tagged(cmd.tag, "NO", "Mailbox already exists", w.Code.ALREADYEXISTS)
            return
        # CREATE does not subscribe (the store's default suits other
        # clients), unless the name was subscribed before it existed.
        orphans = await self.store.orphan_subscriptions(self.account.id)
        for new in [*created, name]:
            if new in orphans:
                await self.store.set_orphan_subscription(self.account.id, new, False)
            else:
                await self.store.set_subscribed(self.account.id, new, False)
        await self.finish(cmd.tag, "OK", "CREATE completed")

    async def cmd_delete(self, cmd: Delete) -> None:
        assert self.account is not None
        name = self.decode_name(cmd.mailbox)
        if name is None:
            self.tagged(cmd.tag, "NO", "No such mailbox", w.Code.NONEXISTENT)
            return
        if name == "INBOX":
            self.tagged(cmd.tag, "NO", "INBOX cannot be deleted", w.Code.CANNOT)
            return
        folders = await self._folders()
        if name not in folders:
            if nm.has_children(name, folders):
                # Only a parent of other names already (\Noselect): RFC 9051 §6.3.4.
                self.tagged(cmd.tag, "NO", "Mailbox has inferior hierarchical names", w.Code.HASCHILDREN)
            else:
                self.tagged(cmd.tag, "NO", "No such mailbox", w.Code.NONEXISTENT)
            return
        # A mailbox with inferiors goes with its messages; the inferiors stay
        # and the name lives on as their \Noselect parent (RFC 9051 §6.3.4).
        try:
            await self.store.delete_folder(self.account.id, name)
        except NotFound:
            self.tagged(cmd.tag, "NO", "No such mailbox", w.Code.NONEXISTENT)
            return
        if folders[name].subscribed:
            # The subscription stays, now to a name without a folder.
            await self.store.set_orphan_subscription(self.account.id, name, True)
        if self.view is not None and self.view.folder_id == folders[name].id:
            self.deselect()
        await self.finish(cmd.tag, "OK", "DELETE completed")

    async def cmd_rename(self, cmd: Rename) -> None:
        assert self.account is not None
        old = self.decode_name(cmd.mailbox)
        decoded = self.decode_name(cmd.new_name)
        if decoded is None:
            self.tagged(cmd.tag, "NO", "Invalid mailbox name", w.Code.CANNOT)
            return
        new = decoded.rstrip(nm.DELIMITER)
        problem = nm.check_new_name(new)
        if problem is not None:
            self.tagged(cmd.tag, "NO", problem, w.Code.CANNOT)
            return
        if old is None:
            self.tagged(cmd.tag, "NO", "No such mailbox", w.Code.NONEXISTENT)
            return
        folders = await self._folders()
        if old not in folders:
            self.tagged(cmd.tag, "NO", "No such mailbox", w.Code.NONEXISTENT)
            return
        if new in folders or new == "INBOX":
            self.tagged(cmd.tag, "NO", "Mailbox already exists", w.Code.ALREADYEXISTS)
            return
        if new.startswith(old + nm.DELIMITER):
            self.tagged(cmd.tag, "NO", "Cannot rename a mailbox under itself", w.Code.CANNOT)
            return
        await self._create_parents(new, folders)
        try:
            await self.store.rename_folder(self.account.id, old, new)
        except NotFound:
            self.tagged(cmd.tag, "NO", "No such mailbox", w.Code.NONEXISTENT)
            return
        except StoreError:
            self.tagged(cmd.tag, "NO", "Mailbox already exists", w.Code.ALREADYEXISTS)
            return
        if old == "INBOX" and self.view is not None and self.view.folder_id == folders[old].id:
            self.dirty = True  # its messages moved out: they are expunged here
        await self.finish(cmd.tag, "OK", "RENAME completed")

    async def _subscribe(self, tag: str, raw: bytes, subscribed: bool) -> None:
        assert self.account is not None
        name = self.decode_name(raw)
        if name is None:
            code = w.Code.CANNOT if subscribed else w.Code.NONEXISTENT
            self.tagged(tag, "NO", "Invalid mailbox name", code)
            return
        try:
            await self.store.set_subscribed(self.account.id, name, subscribed)
        except NotFound:
            # No such folder: a subscription to the bare name (RFC 9051 §6.3.7).
            await self.store.set_orphan_subscription(self.account.id, name, subscribed)
        else:
            if not subscribed:
                await self.store.set_orphan_subscription(self.account.id, name, False)
        await self.finish(tag, "OK", ("SUBSCRIBE" if subscribed else "UNSUBSCRIBE") + " completed")

    async def cmd_subscribe(self, cmd: Subscribe) -> None:
        await self._subscribe(cmd.tag, cmd.mailbox, True)

    async def cmd_unsubscribe(self, cmd: Unsubscribe) -> None:
        await self._subscribe(cmd.tag, cmd.mailbox, False)

    # -- APPEND -----------------------------------------------------------------------------------------------

    async def cmd_append(self, cmd: Append) -> None:
        account = self.account
        assert account is not None
        name = self.decode_name(cmd.mailbox)
        if name is None:
            # No TRYCREATE: CREATE would refuse the name too (RFC 9051 §6.3.12).
            self.tagged(cmd.tag, "NO", "Invalid mailbox name", w.Code.NONEXISTENT)
            return
        folder = await self.folder_named(name)
        if folder is None:
            self.tagged(cmd.tag, "NO", "No such mailbox", w.Code.TRYCREATE)
            return
        items: list[AppendItem] = []
        for msg in cmd.messages:
            if not msg.data:
                self.tagged(cmd.tag, "NO", "Empty message")
                return
            if msg.utf8 and not self.utf8:
                self.tagged(cmd.tag, "BAD", "UTF8 data needs ENABLE UTF8=ACCEPT")
                return
            when, tz = None, 0
            if msg.internal_date is not None:
                # Kept with its offset: FETCH shows it as given, SEARCH ON uses its date.
                when = msg.internal_date.timestamp()
                offset = msg.internal_date.utcoffset()
                tz = int(offset.total_seconds()) // 60 if offset is not None else 0
            items.append(AppendItem(msg.data, msg.flags, when, tz))
        total = sum(len(i.raw) for i in items)
        fresh = self.store.find_account(account.address) or account
        if fresh.quota is not None and await self.store.mailbox_usage(account.id) + total > fresh.quota:
            self.tagged(cmd.tag, "NO", "Quota exceeded", w.Code.OVERQUOTA)
            return
        target = LocalTarget(account.id, account.address, account.address, folder.name)
        try:
            delivered = await self.store.append_many(target, items)
        except NotFound:
            self.tagged(cmd.tag, "NO", "No such mailbox", w.Code.TRYCREATE)
            return
        code = w.Code.appenduid(folder.uidvalidity, [d.uid for d in delivered])
        await self.finish(cmd.tag, "OK", "APPEND completed", code)

    # -- QUOTA (RFC 9208) ------------------------------------------------------------------------------------

    async def _quota_lines(self) -> bool:
        account = self.account
        assert account is not None
        fresh = self.store.find_account(account.address) or account
        if fresh.quota is None:
            return False
        usage = await self.store.mailbox_usage(account.id)
        self.emit(w.quota("", [("STORAGE", (usage + 1023) // 1024, fresh.quota // 1024)], utf8=self.utf8))
        return True

    async def cmd_getquotaroot(self, cmd: GetQuotaRoot) -> None:
        assert self.account is not None
        name = self.decode_name(cmd.mailbox)
        if name is None or await self.store.get_folder(self.account.id, name) is None:
            self.tagged(cmd.tag, "NO", "No such mailbox", w.Code.NONEXISTENT)
            return
        fresh = self.store.find_account(self.account.address) or self.account
        self.emit(w.quotaroot(name, [""] if fresh.quota is not None else [], utf8=self.utf8))
        await self._quota_lines()
        await self.finish(cmd.tag, "OK", "GETQUOTAROOT completed")

    async def cmd_getquota(self, cmd: GetQuota) -> None:
        if cmd.root != b"" or not await self._quota_lines():
            self.tagged(cmd.tag, "NO", "No such quota root", w.Code.NONEXISTENT)
            return
        await self.finish(cmd.tag, "OK", "GETQUOTA completed")

    async def cmd_setquota(self, cmd: SetQuota) -> None:
        self.tagged(cmd.tag, "NO", "Quotas are set by the administrator", w.Code.NOPERM)
