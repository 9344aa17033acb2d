"""Persistent state behind one interface (`Store`); `open_store` picks the backend."""

from __future__ import annotations

from ..config import Config
from .base import BlobWriter, NotFound, Store, StoreError

__all__ = ["BlobWriter", "NotFound", "Store", "StoreError", "open_store"]


async def open_store(config: Config) -> Store:
    """Open the configured store and make sure the configured domains exist in it."""
    url = config.storage_url
    store: Store
    if url == "sqlite" or url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        store = SQLiteStore(config.data_dir)
    elif url.startswith(("postgresql:", "postgres:")):
        raise StoreError("storage.url: the PostgreSQL store is not built yet; use \"sqlite\"")
    else:
        raise StoreError(f"storage.url: unknown store {url!r} (\"sqlite\" or \"postgresql://...\")")
    await store.open()
    for name in config.domains:
        await store.add_domain(name, exist_ok=True)
    return store
