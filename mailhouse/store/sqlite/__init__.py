"""The embedded store: SQLite in WAL mode, bodies inline or in files.

One class per part (engine, directory, messages, mailboxes, queue, journey, web,
keys, greylist), put together here into the one `Store` the rest of mailhouse sees.
"""

from __future__ import annotations

from ..base import Store
from .blobs import INLINE_MAX, SpoolBlob
from .directory import DirectoryStore
from .greylist import GreylistStore
from .journey import JourneyStore
from .keys import KeyStore
from .mailboxes import MailboxStore
from .queue import QueueStore
from .web import WebStore

__all__ = ["INLINE_MAX", "SQLiteStore", "SpoolBlob"]


class SQLiteStore(
    DirectoryStore, MailboxStore, QueueStore, JourneyStore, WebStore, KeyStore, GreylistStore, Store
):
    """Every part of the store over one database and one writer thread."""
