"""mailbox list / show / import / export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config import Config
from ..mailfiles import MailFile, detect_format, read_mailfiles, write_maildir, write_mbox
from ..store import Store
from ..store.models import Account, Folder, LocalTarget, Message
from .common import check_address, store_for
from .main import CommandError
from .output import emit, fmt_time


def _summary(parse: dict[str, Any]) -> dict[str, Any]:
    s = parse.get("summary")
    return s if isinstance(s, dict) else parse


def _from_text(s: dict[str, Any]) -> str:
    name, addr = s.get("from_name") or "", s.get("from_address") or ""
    if name or addr:
        return f"{name} <{addr}>" if name and addr else str(name or addr)
    f = s.get("from")
    if isinstance(f, dict):
        name, addr = f.get("name") or "", f.get("address") or ""
        return f"{name} <{addr}>" if name and addr else name or addr
    if isinstance(f, list) and f:
        first = f[0]
        if isinstance(first, dict):
            return _from_text({"from": first})
        return str(first)
    return str(f or "")


async def _account_folder(store: Store, address: str, folder: str) -> tuple[Account, Folder]:
    account = store.find_account(check_address(address))
    if account is None:
        raise CommandError(f"no user {address}")
    f = await store.get_folder(account.id, folder)
    if f is None:
        raise CommandError(f"{address} has no folder {folder!r}")
    return account, f


def _row(m: Message) -> dict[str, Any]:
    s = _summary(m.parse)
    date = s.get("date")
    return {
        "uid": m.uid,
        "date": fmt_time(date if isinstance(date, int | float) else m.internal_date),
        "from": _from_text(s),
        "subject": s.get("subject") or "",
        "flags": sorted(m.flags),
    }


async def cmd_list(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        _, folder = await _account_folder(store, args.address, args.folder)
        messages = await store.list_messages(folder.id)
    emit([_row(m) for m in messages], ["uid", "date", "from", "subject", "flags"], as_json=args.json)


async def cmd_show(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        _, folder = await _account_folder(store, args.address, args.folder)
        m = await store.get_message(folder.id, args.uid)
        if m is None:
            raise CommandError(f"no message with UID {args.uid} in {args.address}'s {folder.name}")
        raw = await store.read_blob(m.blob_id)
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()


async def cmd_import(config: Config, args: argparse.Namespace) -> None:
    path = Path(args.path)
    if not path.exists():
        raise CommandError(f"{path}: no such file or folder")
    try:
        fmt = detect_format(path)
    except ValueError as e:
        raise CommandError(str(e)) from None
    count = 0
    async with store_for(config) as store:
        account, folder = await _account_folder(store, args.address, args.folder)
        target = LocalTarget(account.id, account.address, account.address, folder.name)
        for mf in read_mailfiles(path):
            await store.append(target, mf.raw, flags=mf.flags, internal_date=mf.internal_date)
            count += 1
    print(f"imported {count} message(s) from {fmt} {path} into {account.address}'s {folder.name}")


async def cmd_export(config: Config, args: argparse.Namespace) -> None:
    path = Path(args.path)
    fmt = args.format or ("maildir" if args.path.endswith("/") or path.is_dir() else "mbox")
    async with store_for(config) as store:
        account, folder = await _account_folder(store, args.address, args.folder)
        messages = await store.list_messages(folder.id)
        files = [
            MailFile(raw=await store.read_blob(m.blob_id), flags=set(m.flags), internal_date=m.internal_date)
            for m in messages
        ]
    n = write_maildir(path, files) if fmt == "maildir" else write_mbox(path, files)
    print(f"exported {n} message(s) from {account.address}'s {folder.name} to {fmt} {path}")
