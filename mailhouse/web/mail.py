"""What the webmail and the API do with an account's mail, shared by both.

A message id is "FOLDER.UIDVALIDITY.UID". It is only ever looked up among the
folders of the authenticated account, so an id naming another account's folder
finds nothing (404, exactly like a message that does not exist), and the
UIDVALIDITY part keeps an id from reaching a different message after a folder
is deleted and re-created.
"""

from __future__ import annotations

import email.errors
import email.policy
import email.utils
import mimetypes
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from ..context import Context
from ..delivery.reception import Accepted, Client, Refusal, submit_message
from ..ids import new_message_id
from ..store.base import NotFound, StoreError
from ..store.models import Account, Folder, LocalTarget, Message
from . import render

# An addr-spec as mail carries it unquoted: dot-atom local part and a host name.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
ADDR_SPEC = rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_ADDR_SPEC = re.compile(rf"^{ADDR_SPEC}$")
_ID = re.compile(r"^(\d{1,12})\.(\d{1,12})\.(\d{1,12})$")
# IMAP keywords: an atom without the specials of RFC 3501 §9 (flag-keyword).
_KEYWORD = re.compile(r"^[!#$&'+\-.0-9:;<=>?@A-Z^_`a-z|~]{1,64}$")
SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
MAX_PAGE = 500
DEEP_OFFSET = 2000  # from here on a page starts from a cached UID, not an OFFSET


class MailError(Exception):
    """A request that cannot be done, worded for the user; `status` is the HTTP one."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers


def message_id(folder: Folder, uid: int) -> str:
    return f"{folder.id}.{folder.uidvalidity}.{uid}"


def normalize_flag(flag: str) -> str | None:
    for f in SYSTEM_FLAGS:
        if flag.lower() == f.lower():
            return f
    if _KEYWORD.match(flag):
        return flag
    return None


def valid_folder_name(name: str) -> str | None:
    """Why a new folder name is refused, or None when it is fine."""
    if not name or len(name) > 200:
        return "a folder name has 1 to 200 characters"
    if any(ord(c) < 32 or c in "%*\x7f" for c in name):
        return "a folder name cannot hold control characters, % or *"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "a folder name cannot start or end with / nor hold //"
    if name.upper() == "INBOX" or name.upper().startswith("INBOX/"):
        return "INBOX is reserved"
    return None


def parse_addresses(values: list[str]) -> list[tuple[str, str]]:
    """[(display name, addr-spec)] from entries like "Bob <bob@x>" or "a@x, b@y"."""
    out: list[tuple[str, str]] = []
    for v in values:
        if not isinstance(v, str) or "\r" in v or "\n" in v or len(v) > 998:
            raise MailError(f"not an address: {str(v)[:80]!r}")
        if not v.strip():
            raise MailError("an empty address")
        found = email.utils.getaddresses([v])
        if not any(addr for _, addr in found):
            # getaddresses answers ("", "") for input it cannot parse at all.
            raise MailError(f"not an address: {v[:80]!r}")
        for name, addr in found:
            addr = addr.strip()
            if not addr and not name:
                continue  # "a@x, " from a field being typed: the trailing comma
            local, at, domain = addr.rpartition("@")
            if not at or not local or not domain or not _ADDR_SPEC.match(addr):
                raise MailError(f"not an address: {v[:80]!r}")
            out.append((name.strip(), addr))
    return out


def format_address(name: str, addr: str) -> str:
    return email.utils.formataddr((name, addr)) if name else addr


def _folds(name: str, value: str) -> bool:
    try:
        email.policy.SMTP.header_factory(name, value).fold(policy=email.policy.SMTP)
    except Exception:  # the header parser fails in many ways on odd input
        return False
    return True


def address_field(name: str, pairs: list[tuple[str, str]]) -> str:
    """An address header; a display name the header parser cannot take is left out
    (the address itself is what delivery needs)."""
    parts = []
    for n, a in pairs:
        full = format_address(n, a)
        if n and not _folds(name, full):
            full = a
        if not _folds(name, full):
            raise MailError(f"not an address: {a[:80]!r}")
        parts.append(full)
    value = ", ".join(parts)
    if not _folds(name, value):
        value = ", ".join(a for _, a in pairs)
    return value


@dataclass
class Outgoing:
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]] = field(default_factory=list)
    bcc: list[tuple[str, str]] = field(default_factory=list)
    subject: str = ""
    text: str = ""
    html: str | None = None
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)  # name, type, data
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)


class Mail:
    def __init__(self, ctx: Context, listener: str) -> None:
        self.ctx = ctx
        self.listener = listener
        self._contacts: dict[int, tuple[float, list[str]]] = {}
        self._uids: dict[int, tuple[tuple[int, int], list[int]]] = {}
        self._counts: dict[int, tuple[tuple[tuple[int, int], ...], dict[int, tuple[int, int]]]] = {}
        # Encoded API pages by (folder, uidvalidity, highestmodseq, name, limit, offset):
        # a folder that has not changed answers a repeated poll without a query.
        self.pages: OrderedDict[tuple[int, int, int, str, int, int], bytes] = OrderedDict()

    # ------------------------------------------------------------------ folders
    async def folders(self, account: Account) -> list[Folder]:
        return await self.ctx.store.list_folders(account.id)

    async def folder(self, account: Account, name: str) -> Folder:
        f = await self.ctx.store.get_folder(account.id, name)
        if f is None:
            raise MailError(f"no mailbox {name}", 404)
        return f

    async def special(self, account: Account, use: str, default_name: str) -> Folder:
        """The account's folder with this special use, made when it is missing."""
        for f in await self.folders(account):
            if f.special_use == use:
                return f
        f2 = await self.ctx.store.get_folder(account.id, default_name)
        if f2 is not None:
            return f2
        try:
            return await self.ctx.store.create_folder(account.id, default_name, use)
        except StoreError:
            return await self.folder(account, default_name)

    async def counts(self, account: Account, folders: list[Folder] | None = None) -> dict[int, tuple[int, int]]:
        """Messages and unseen per folder. Counting 100,000 messages takes ~70 ms, so
        the result is kept until a folder's HIGHESTMODSEQ moves (every append, flag
        change and expunge moves it, whichever process made it)."""
        folders = folders if folders is not None else await self.folders(account)
        key = tuple((f.id, f.highestmodseq) for f in folders)
        hit = self._counts.get(account.id)
        if hit is not None and hit[0] == key:
            return hit[1]
        counts = await self.ctx.store.folder_counts(account.id)
        if len(self._counts) > 10_000:
            self._counts.clear()
        self._counts[account.id] = (key, counts)
        return counts

    async def mailboxes(self, account: Account) -> list[dict[str, Any]]:
        folders = await self.folders(account)
        counts = await self.counts(account, folders)
        return [
            {
                "name": f.name,
                "special_use": f.special_use,
                "total": counts.get(f.id, (0, 0))[0],
                "unseen": counts.get(f.id, (0, 0))[1],
            }
            for f in folders
        ]

    # ------------------------------------------------------------------ messages
    async def locate(self, account: Account, ident: str) -> tuple[Folder, int]:
        m = _ID.match(ident)
        if m is None:
            raise MailError("no such message", 404)
        fid, validity, uid = (int(x) for x in m.groups())
        for f in await self.folders(account):
            if f.id == fid and f.uidvalidity == validity:
                return f, uid
        raise MailError("no such message", 404)

    async def get(self, account: Account, ident: str) -> tuple[Folder, Message]:
        folder, uid = await self.locate(account, ident)
        msg = await self.ctx.store.get_message(folder.id, uid)
        if msg is None:
            raise MailError("no such message", 404)
        return folder, msg

    async def raw(self, msg: Message) -> bytes:
        return await self.ctx.store.read_blob(msg.blob_id)

    async def page(self, folder: Folder, limit: int, offset: int) -> list[Message]:
        limit, offset = min(max(limit, 1), MAX_PAGE), max(offset, 0)
        store = self.ctx.store
        if offset < DEEP_OFFSET:
            return await store.list_messages_page(folder.id, limit, offset)
        # Deep pages: SQLite's OFFSET steps over every skipped index entry (~8 ms at
        # 50,000), so the UID at that position is looked up in the folder's UID list,
        # kept until the folder changes, and the page starts there.
        key = (folder.id, folder.highestmodseq)
        hit = self._uids.get(folder.id)
        if hit is None or hit[0] != key:
            hit = (key, await store.folder_uids(folder.id))
            self._uids[folder.id] = hit
            if len(self._uids) > 64:
                self._uids.pop(next(iter(self._uids)))
        uids = hit[1]
        if offset >= len(uids):
            return []
        return await store.list_messages_page(folder.id, limit, 0, max_uid=uids[len(uids) - 1 - offset])

    @staticmethod
    def summary(folder: Folder, msg: Message) -> dict[str, Any]:
        p = msg.parse
        return {
            "id": message_id(folder, msg.uid),
            "uid": msg.uid,
            "mailbox": folder.name,
            "from": p.get("from_address") or "",
            "from_name": p.get("from_name") or "",
            "to": list(p.get("to") or []),
            "subject": p.get("subject") or "",
            "date": _iso(p.get("date") if isinstance(p.get("date"), int) else msg.internal_date),
            "flags": sorted(msg.flags),
            "size": msg.size,
            "preview": p.get("preview") or "",
            "has_attachments": bool(p.get("has_attachments")),
        }

    async def set_flags(self, folder: Folder, uid: int, add: list[str], remove: list[str]) -> None:
        if add:
            await self.ctx.store.store_flags(folder.id, [uid], "add", set(add))
        if remove:
            await self.ctx.store.store_flags(folder.id, [uid], "remove", set(remove))

    async def move(self, folder: Folder, uids: list[int], target: Folder) -> dict[int, int]:
        if target.id == folder.id:
            return {u: u for u in uids}
        pairs = await self.ctx.store.copy_messages(folder.id, uids, target.id, move=True)
        return dict(pairs)

    async def delete(self, account: Account, folder: Folder, uids: list[int]) -> tuple[Folder | None, dict[int, int]]:
        """To Trash; in Trash, for good. Returns (Trash or None when removed, uid map)."""
        if folder.special_use == "\\Trash":
            await self.ctx.store.store_flags(folder.id, uids, "add", {"\\Deleted"})
            await self.ctx.store.expunge(folder.id, uids)
            return None, {}
        trash = await self.special(account, "\\Trash", "Trash")
        return trash, await self.move(folder, uids, trash)

    async def contacts(self, account: Account) -> list[str]:
        """Past correspondents, most frequent first: whom the account wrote to (Sent)
        and who wrote to it (INBOX), from their latest messages; cached briefly."""
        hit = self._contacts.get(account.id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        score: dict[str, int] = {}
        names: dict[str, str] = {}
        for f in await self.folders(account):
            if f.special_use not in ("\\Sent",) and f.name != "INBOX":
                continue
            weight = 3 if f.special_use == "\\Sent" else 1
            for m in await self.ctx.store.list_messages_page(f.id, 1000, 0):
                p = m.parse
                addrs = list(p.get("to") or []) + list(p.get("cc") or []) if weight == 3 else []
                if weight == 1 and p.get("from_address"):
                    addrs = [p["from_address"]]
                    if p.get("from_name"):
                        names.setdefault(p["from_address"].lower(), p["from_name"])
                for a in addrs:
                    key = str(a).lower()
                    if key and key != account.address:
                        score[key] = score.get(key, 0) + weight
        ordered = sorted(score, key=lambda a: (-score[a], a))
        out = [format_address(names.get(a, ""), a) for a in ordered[:2000]]
        self._contacts[account.id] = (time.monotonic() + 60.0, out)
        return out

    # ------------------------------------------------------------------ composing
    def build(self, account: Account, out: Outgoing) -> EmailMessage:
        """The message as kept in Sent or Drafts (with Bcc); `sendable` drops Bcc."""
        msg = EmailMessage(policy=email.policy.SMTP)
        try:
            msg["From"] = Address(addr_spec=account.address)
            for name, pairs in (("To", out.to), ("Cc", out.cc), ("Bcc", out.bcc)):
                if pairs:
                    msg[name] = address_field(name, pairs)
            msg["Subject"] = out.subject
            msg["Date"] = email.utils.formatdate(localtime=False)
            msg["Message-ID"] = new_message_id(self.ctx.config.hostname)
            if out.in_reply_to:
                msg["In-Reply-To"] = out.in_reply_to
            if out.references:
                msg["References"] = " ".join(out.references)
            msg["User-Agent"] = "mailhouse webmail"
            msg.set_content(out.text or "")
            if out.html:
                msg.add_alternative(out.html, subtype="html")
            for name, ctype, data in out.attachments:
                maintype, _, subtype = (ctype or "").lower().partition("/")
                if not re.match(r"^[a-z0-9][\w.+-]*$", maintype) or not re.match(r"^[a-z0-9][\w.+-]*$", subtype):
                    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
                    maintype, _, subtype = guessed.partition("/")
                if maintype in ("multipart", "message"):
                    # Bytes given as a file are sent as they are, never re-parsed.
                    maintype, subtype = "application", "octet-stream"
                msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name or "attachment")
            msg.as_bytes()  # fails here, not later, on what cannot be encoded
        except (ValueError, TypeError, IndexError, UnicodeError, email.errors.HeaderParseError) as e:
            raise MailError(f"cannot build the message: {e}") from None
        return msg

    @staticmethod
    def sendable(msg: EmailMessage) -> bytes:
        del msg["Bcc"]
        return msg.as_bytes()

    async def send(self, account: Account, out: Outgoing, ip: str) -> Accepted:
        recipients = [a for _, a in out.to + out.cc + out.bcc]
        if not recipients:
            raise MailError("the message has no recipient")
        if len(recipients) > self.ctx.config.limits.max_recipients:
            raise MailError(f"at most {self.ctx.config.limits.max_recipients} recipients")
        msg = self.build(account, out)
        kept = msg.as_bytes()
        raw = self.sendable(msg)
        if len(raw) > self.ctx.config.limits.max_message_size:
            raise MailError("the message is larger than this server accepts", 413)
        # Same hooks as submission over SMTP (signing and the like) unless this
        # listener has its own.
        hooks = self.ctx.message_hooks(self.listener) or self.ctx.message_hooks("submission")
        client = Client(listener=self.listener, ip=ip, helo="", auth_user=account.address)
        result = await submit_message(self.ctx, client, account.address, recipients, raw, hooks)
        if isinstance(result, Refusal):
            raise MailError(result.text, 400 if result.code >= 500 else 503)
        sent = await self.special(account, "\\Sent", "Sent")
        await self.ctx.store.append(LocalTarget(account.id, account.address, account.address, sent.name),
                                    kept, flags={"\\Seen"})
        self._contacts.pop(account.id, None)
        if result.message_id is None:
            result.message_id = str(msg["Message-ID"]).strip("<>")
        return result

    async def save_draft(self, account: Account, out: Outgoing, replaces: str | None) -> str:
        raw = self.build(account, out).as_bytes()
        drafts = await self.special(account, "\\Drafts", "Drafts")
        d = await self.ctx.store.append(
            LocalTarget(account.id, account.address, account.address, drafts.name), raw,
            flags={"\\Draft", "\\Seen"},
        )
        if replaces:
            await self.discard_draft(account, replaces)
        folder = next(f for f in await self.folders(account) if f.id == d.folder_id)
        return message_id(folder, d.uid)

    async def discard_draft(self, account: Account, ident: str) -> None:
        try:
            folder, uid = await self.locate(account, ident)
        except MailError:
            return
        if folder.special_use != "\\Drafts":
            return
        try:
            await self.ctx.store.store_flags(folder.id, [uid], "add", {"\\Deleted"})
            await self.ctx.store.expunge(folder.id, [uid])
        except NotFound:
            pass

    async def carried(self, account: Account, ident: str, sections: list[str]) -> list[tuple[str, str, bytes]]:
        """Attachments taken over from a stored message (forward, a resumed draft)."""
        if not ident or not sections:
            return []
        _, msg = await self.get(account, ident)
        raw = await self.raw(msg)
        out = []
        for s in sections:
            part = render.find_part(msg.parse, s)
            if part is None:
                continue
            t = render.mime_type(part)
            data = raw[part["body_start"] : part["body_end"]] if t == "message/rfc822" else render.part_bytes(raw, part)
            out.append((render.part_name(part), t, data))
        return out


def _iso(ts: float | int | None) -> str | None:
    if ts is None:
        return None
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(ts)))
    except (OverflowError, OSError, ValueError):
        return None


def iso(ts: float | int | None) -> str | None:
    return _iso(ts)
