"""The one store interface. Everything above it (SMTP, queue, IMAP, web, CLI) talks to
this and never to SQLite or PostgreSQL directly.

Writes are durable when their coroutine returns: committed and fsync'd.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable

from .models import (
    Account,
    Alias,
    AttemptOutcome,
    Change,
    Delivered,
    Domain,
    FlagChange,
    Folder,
    Incoming,
    JourneyEvent,
    LocalTarget,
    Message,
    MessageState,
    QueueEntry,
)


class StoreError(Exception):
    """A refused store operation, worded for the user (e.g. "domain x exists")."""


class NotFound(StoreError):
    pass


class BlobWriter(abc.ABC):
    """The bytes of one message as they arrive, before they are committed.

    Small messages stay in memory; large ones spill to a spool file so a 25 MB
    message never sits in memory whole.
    """

    size: int

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def head(self, n: int) -> bytes:
        """The first n bytes written (for header inspection)."""

    @abc.abstractmethod
    def view(self) -> memoryview:
        """All bytes written so far, without copying (mmap for spooled data)."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Drop everything; the writer is unusable afterwards."""

    @abc.abstractmethod
    def splice(self, start: int, end: int, data: bytes) -> None:
        """Replace bytes [start, end) with `data`, before the commit: header fields that
        can only be written once the whole message is known (Authentication-Results,
        DKIM-Signature) go in front, and forged ones are taken out. Cheap in memory;
        a spooled file is rewritten."""


class Store(abc.ABC):
    """Persistent state of one mailhouse node."""

    # ---- lifecycle
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    # ---- domains
    @abc.abstractmethod
    async def add_domain(self, name: str, *, exist_ok: bool = False) -> Domain: ...

    @abc.abstractmethod
    async def remove_domain(self, name: str) -> None: ...

    @abc.abstractmethod
    async def list_domains(self) -> list[Domain]: ...

    @abc.abstractmethod
    def is_local_domain(self, name: str) -> bool:
        """Fast, non-blocking: is mail for this domain delivered here?"""

    # ---- accounts
    @abc.abstractmethod
    async def add_account(self, address: str, password_hash: str) -> Account: ...

    @abc.abstractmethod
    async def remove_account(self, address: str) -> None: ...

    @abc.abstractmethod
    async def set_password(self, address: str, password_hash: str) -> None: ...

    @abc.abstractmethod
    async def list_accounts(self) -> list[Account]: ...

    @abc.abstractmethod
    def find_account(self, address: str) -> Account | None:
        """Fast, non-blocking lookup by exact (lower-cased) address."""

    # ---- aliases
    @abc.abstractmethod
    async def add_alias(self, address: str, targets: list[str]) -> Alias: ...

    @abc.abstractmethod
    async def remove_alias(self, address: str) -> None: ...

    @abc.abstractmethod
    async def list_aliases(self) -> list[Alias]: ...

    @abc.abstractmethod
    def find_alias(self, address: str) -> Alias | None:
        """Fast, non-blocking lookup; `@domain` finds the catch-all."""

    # ---- folders and messages
    @abc.abstractmethod
    async def list_folders(self, account_id: int) -> list[Folder]: ...

    @abc.abstractmethod
    async def get_folder(self, account_id: int, name: str) -> Folder | None: ...

    @abc.abstractmethod
    async def create_folder(self, account_id: int, name: str, special_use: str | None = None) -> Folder:
        """StoreError("exists") when the name is taken."""

    @abc.abstractmethod
    async def delete_folder(self, account_id: int, name: str) -> None:
        """Remove a folder and its messages; INBOX cannot be removed."""

    @abc.abstractmethod
    async def rename_folder(self, account_id: int, old: str, new: str) -> None:
        """Rename a folder and its children (`old/...`). Renaming INBOX moves its
        messages to a new folder and leaves INBOX empty (RFC 9051 §6.3.6)."""

    @abc.abstractmethod
    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None: ...

    @abc.abstractmethod
    async def folder_states(self, folder_id: int) -> list[MessageState]:
        """Every message's UID, flags, modseq and size, by UID."""

    @abc.abstractmethod
    async def get_messages(self, folder_id: int, uids: list[int]) -> list[Message]: ...

    @abc.abstractmethod
    async def store_flags(
        self,
        folder_id: int,
        uids: list[int],
        mode: str,
        flags: set[str],
        unchanged_since: int | None = None,
    ) -> tuple[list[FlagChange], list[int]]:
        """mode: "add" / "remove" / "replace". Returns (changed, failed-by-UNCHANGEDSINCE)."""

    @abc.abstractmethod
    async def expunge(self, folder_id: int, uids: list[int] | None = None) -> list[int]:
        """Remove \\Deleted messages (only those among `uids` when given); the UIDs gone."""

    @abc.abstractmethod
    async def copy_messages(
        self, folder_id: int, uids: list[int], target_folder_id: int, *, move: bool = False
    ) -> list[tuple[int, int]]:
        """(source UID, new UID) pairs; a move expunges the sources in the same commit."""

    @abc.abstractmethod
    async def vanished_since(self, folder_id: int, modseq: int) -> list[int]:
        """UIDs expunged after `modseq` (QRESYNC)."""

    @abc.abstractmethod
    def subscribe_changes(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call back (on the event loop) after every commit that changes a mailbox;
        returns the unsubscribe function."""

    @abc.abstractmethod
    async def mailbox_usage(self, account_id: int) -> int:
        """Bytes of mail stored for the account (QUOTA)."""

    @abc.abstractmethod
    async def list_messages(self, folder_id: int) -> list[Message]: ...

    @abc.abstractmethod
    async def get_message(self, folder_id: int, uid: int) -> Message | None: ...

    @abc.abstractmethod
    async def read_blob(self, blob_id: int) -> bytes: ...

    @abc.abstractmethod
    def new_blob(self) -> BlobWriter: ...

    @abc.abstractmethod
    async def deliver(self, blob: BlobWriter, incoming: Incoming) -> list[Delivered]:
        """Make a received message durable: its bytes once, a message row in each
        local target's folder, a queue entry for the remote targets, the journey
        events; all in one commit shared with concurrent deliveries."""

    @abc.abstractmethod
    async def append(
        self,
        target: LocalTarget,
        raw: bytes,
        *,
        flags: Iterable[str] = (),
        internal_date: float | None = None,
    ) -> Delivered:
        """Store a message given whole (import, IMAP APPEND, Sent copies)."""

    # ---- queue and journey
    @abc.abstractmethod
    async def list_queue(self) -> list[QueueEntry]: ...

    @abc.abstractmethod
    async def get_queue_entry(self, queue_id: str) -> QueueEntry | None: ...

    @abc.abstractmethod
    async def due_queue(self, now: float, limit: int, exclude: set[str]) -> list[QueueEntry]:
        """Entries whose next attempt is due and that are not held, oldest first."""

    @abc.abstractmethod
    async def next_queue_time(self) -> float | None:
        """When the earliest non-held entry is due; None for an empty queue."""

    @abc.abstractmethod
    async def blob_source(self, blob_id: int) -> bytes | str:
        """A message's bytes, or the path of the file holding them (large ones)."""

    @abc.abstractmethod
    async def finish_attempt(
        self,
        queue_id: str,
        outcome: AttemptOutcome,
        notices: list[tuple[BlobWriter, Incoming]],
    ) -> bool:
        """Record one attempt and enqueue/deliver its DSNs, in one commit; the entry is
        removed once no recipient is pending. Returns True if it was removed."""

    @abc.abstractmethod
    async def update_queue_entry(
        self, queue_id: str, *, held: bool | None = None, next_attempt: float | None = None
    ) -> None:
        """hold / release / retry; NotFound for an unknown id."""

    @abc.abstractmethod
    async def retry_all(self, now: float) -> int: ...

    @abc.abstractmethod
    async def delete_queue_entry(self, queue_id: str) -> None: ...

    @abc.abstractmethod
    async def add_event(
        self, queue_id: str, kind: str, data: dict[str, object], message_id: str | None = None
    ) -> None: ...

    @abc.abstractmethod
    async def journey(self, ident: str) -> list[JourneyEvent]:
        """Events of one message by queue id or Message-ID, oldest first."""
