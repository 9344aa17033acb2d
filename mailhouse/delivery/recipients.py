"""Where a recipient address leads: local mailboxes and remote addresses.

Order of lookup for an address at a local domain, as Postfix's virtual maps do it:
the exact account, the exact alias, the same two without a `+tag`, then the
domain's catch-all (`@domain`). Aliases expand recursively with loop protection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..store.base import Store
from ..store.models import LocalTarget, RemoteTarget

MAX_ALIAS_DEPTH = 10
MAX_EXPANSION = 1000


@dataclass
class Resolution:
    local: list[LocalTarget] = field(default_factory=list)
    remote: list[RemoteTarget] = field(default_factory=list)
    # Set when the address belongs to a local domain but leads nowhere.
    unknown: bool = False
    # Set when the address is not at a local domain at all (relay question).
    foreign: bool = False


def split_address(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain.lower().rstrip(".")


def resolve(
    store: Store,
    address: str,
    *,
    orcpt: str | None = None,
    notify: str | None = None,
) -> Resolution:
    """Resolve one envelope recipient; fast lookups only, so it may run on the loop."""
    res = Resolution()
    _local, domain = split_address(address)
    if not store.is_local_domain(domain):
        res.foreign = True
        res.remote.append(RemoteTarget(address, orcpt, notify))
        return res
    seen: set[str] = set()
    _expand(store, address, address, res, seen, 0, orcpt, notify)
    if not res.local and not res.remote:
        res.unknown = True
    return res


def _lookup_forms(address: str) -> list[str]:
    local, domain = split_address(address)
    local = local.lower()
    forms = [f"{local}@{domain}"]
    if "+" in local:
        forms.append(f"{local.split('+', 1)[0]}@{domain}")
    return forms


def _expand(
    store: Store,
    address: str,
    original: str,
    res: Resolution,
    seen: set[str],
    depth: int,
    orcpt: str | None,
    notify: str | None,
) -> None:
    if depth > MAX_ALIAS_DEPTH or len(res.local) + len(res.remote) >= MAX_EXPANSION:
        return
    _, domain = split_address(address)
    if depth > 0 and not store.is_local_domain(domain):
        if address.lower() not in seen:
            seen.add(address.lower())
            res.remote.append(RemoteTarget(address, orcpt or f"rfc822;{original}", notify))
        return
    for form in _lookup_forms(address):
        if form in seen:
            return  # an alias loop: this branch already expanded
        account = store.find_account(form)
        if account is not None:
            seen.add(form)
            if all(t.account_id != account.id for t in res.local):
                res.local.append(LocalTarget(account.id, account.address, original))
            return
        alias = store.find_alias(form)
        if alias is not None:
            seen.add(form)
            for target in alias.targets:
                _expand(store, target, original, res, seen, depth + 1, orcpt, notify)
            return
    catch_all = f"@{domain}"
    if catch_all not in seen:
        alias = store.find_alias(catch_all)
        if alias is not None:
            seen.add(catch_all)
            for target in alias.targets:
                _expand(store, target, original, res, seen, depth + 1, orcpt, notify)
