"""serve, domain, user and alias commands."""

from __future__ import annotations

import argparse

from ..auth.passwords import generate_password, hash_password
from ..config import Config
from .common import check_address, read_password, store_for
from .main import CommandError
from .output import emit, fmt_time


async def cmd_serve(config: Config, args: argparse.Namespace) -> int:  # pragma: no cover - main() runs serve itself
    from ..serve import serve

    await serve(config)
    return 0


def _check_domain(name: str) -> str:
    name = name.lower().rstrip(".")
    labels = name.split(".")
    if not name or any(not lab or len(lab) > 63 or not all(c.isalnum() or c == "-" for c in lab) for lab in labels):
        raise CommandError(f"{name!r} is not a domain name")
    return name


async def cmd_domain_add(config: Config, args: argparse.Namespace) -> None:
    name = _check_domain(args.name)
    async with store_for(config) as store:
        await store.add_domain(name)
    print(f"domain {name} added")


async def cmd_domain_list(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        domains = await store.list_domains()
    emit([{"name": d.name, "created": fmt_time(d.created)} for d in domains], ["name", "created"], as_json=args.json)


async def cmd_domain_remove(config: Config, args: argparse.Namespace) -> None:
    name = _check_domain(args.name)
    if name in config.domains:
        raise CommandError(f"domain {name} is listed in the configuration file's domains; remove it there first")
    async with store_for(config) as store:
        await store.remove_domain(name)
    print(f"domain {name} removed")


async def cmd_domain_records(config: Config, args: argparse.Namespace) -> None:
    from .records import domain_records, print_records

    name = _check_domain(args.name)
    async with store_for(config) as store:
        if not store.is_local_domain(name):
            raise CommandError(f"{name} is not a local domain; add it with: mailhouse domain add {name}")
        records = await domain_records(config, store, name)
    print_records(records, as_json=args.json)


async def _set_password(config: Config, args: argparse.Namespace, *, new: bool) -> None:
    """user add / user password: the given password, or a generated one printed once."""
    address = check_address(args.address)
    password = read_password(args)
    generated = password is None
    password = password or generate_password()
    async with store_for(config) as store:
        if new:
            await store.add_account(address, hash_password(password))
        else:
            await store.set_password(address, hash_password(password))
    print(f"user {address} added" if new else f"password of {address} changed")
    if generated:
        print(f"password: {password}")


async def cmd_user_add(config: Config, args: argparse.Namespace) -> None:
    await _set_password(config, args, new=True)


async def cmd_user_list(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        accounts = await store.list_accounts()
    emit(
        [{"address": a.address, "domain": a.domain, "created": fmt_time(a.created)} for a in accounts],
        ["address", "domain", "created"],
        as_json=args.json,
    )


async def cmd_user_remove(config: Config, args: argparse.Namespace) -> None:
    address = check_address(args.address)
    async with store_for(config) as store:
        await store.remove_account(address)
    print(f"user {address} removed")


async def cmd_user_password(config: Config, args: argparse.Namespace) -> None:
    await _set_password(config, args, new=False)


async def cmd_alias_add(config: Config, args: argparse.Namespace) -> None:
    address = args.address.lower()
    if not address.startswith("@"):
        address = check_address(address)
    targets = [check_address(t) for t in args.targets]
    async with store_for(config) as store:
        await store.add_alias(address, targets)
    print(f"alias {address} -> {', '.join(targets)} added")


async def cmd_alias_list(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        aliases = await store.list_aliases()
    emit([{"address": a.address, "targets": a.targets} for a in aliases], ["address", "targets"], as_json=args.json)


async def cmd_alias_remove(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        await store.remove_alias(args.address.lower())
    print(f"alias {args.address.lower()} removed")
