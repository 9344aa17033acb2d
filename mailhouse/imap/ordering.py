"""SORT and THREAD (RFC 5256, with DISPLAYFROM/DISPLAYTO of RFC 5957).

Everything is computed from the cached parse: subjects and names decoded,
addresses from the envelope, the Date: header as a timestamp (the internal
date stands in when it is missing). Ties are broken by sequence number, as
RFC 5256 requires.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailhouse.imap.parser import SortCriterion
from mailhouse.imap.writer import ThreadNode
from mailhouse.mime.headers import decode_words


@dataclass
class Item:
    """What SORT/THREAD know of one message."""

    seq: int
    uid: int
    internal_date: float
    size: int
    parse: Mapping[str, Any]

    @property
    def sent(self) -> float:
        d = self.parse.get("date")
        return float(d) if d is not None else self.internal_date


# --- base subject (RFC 5256 §2.1) ----------------------------------------------------------------

_WS = re.compile(r"\s+")
_TRAILER = re.compile(r"(?:\s|\(fwd\))+$", re.I)
_BLOB = r"\[[^\[\]]*\]"
_LEADER = re.compile(rf"^(?:\s*(?:re|fwd?)\s*(?:{_BLOB}\s*)*:\s*)", re.I)
_BLOB_LEADER = re.compile(rf"^\s*{_BLOB}\s*")
_FWD_WRAP = re.compile(r"^\[fwd:(.*)\]$", re.I | re.S)


def base_subject(subject: str) -> tuple[str, bool]:
    """(base subject, was it a reply or forward) of a decoded subject."""
    s = _WS.sub(" ", subject).strip()
    reply = False
    while True:
        before = s
        s = _TRAILER.sub("", s)
        if s != before:
            reply = True
        while True:
            inner = s
            m = _LEADER.match(s)
            if m is not None:
                s = s[m.end() :]
                reply = True
            m2 = _BLOB_LEADER.match(s)
            if m2 is not None and s[m2.end() :].strip():
                s = s[m2.end() :]
            if s == inner:
                break
        m3 = _FWD_WRAP.match(s)
        if m3 is not None:
            s = m3.group(1).strip()
            reply = True
            continue
        if s == before:
            break
    return s.upper(), reply


def _subject(item: Item) -> str:
    text = item.parse.get("subject")
    if text is None:
        env = item.parse.get("envelope") or {}
        raw = env.get("subject") or ""
        text = decode_words(raw) if raw else ""
    return str(text)


# --- SORT -----------------------------------------------------------------------------------------


def _first_address(item: Item, header: str) -> list[Any] | None:
    env = item.parse.get("envelope") or {}
    for addr in env.get(header) or []:
        if addr and len(addr) >= 4 and addr[2] is not None and addr[3] is not None:
            return list(addr)
    return None


def _mailbox(item: Item, header: str) -> str:
    addr = _first_address(item, header)
    return str(addr[2]).casefold() if addr else ""


def _display(item: Item, header: str) -> str:
    addr = _first_address(item, header)
    if addr is None:
        return ""
    if addr[0]:
        try:
            return decode_words(str(addr[0])).casefold()
        except Exception:
            return str(addr[0]).casefold()
    return f"{addr[2]}@{addr[3]}".casefold()


def _key(item: Item, name: str) -> Any:
    if name == "ARRIVAL":
        return item.internal_date
    if name == "DATE":
        return item.sent
    if name == "SIZE":
        return item.size
    if name == "SUBJECT":
        return base_subject(_subject(item))[0]
    if name in ("FROM", "TO", "CC"):
        return _mailbox(item, name.lower())
    if name == "DISPLAYFROM":
        return _display(item, "from")
    if name == "DISPLAYTO":
        return _display(item, "to")
    return 0


def sort_items(items: Sequence[Item], criteria: Sequence[SortCriterion]) -> list[Item]:
    out = sorted(items, key=lambda it: it.seq)
    # Stable sorts from the last criterion to the first give the combined order.
    for crit in reversed(criteria):
        name = crit.key

        def key(it: Item, name: str = name) -> Any:
            return _key(it, name)

        out.sort(key=key, reverse=crit.reverse)
    return out


# --- THREAD -------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Container:
    item: Item | None = None
    parent: _Container | None = None
    children: list[_Container] = field(default_factory=list)

    def is_ancestor_of(self, other: _Container) -> bool:
        node: _Container | None = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False


def _link(parent: _Container, child: _Container) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
    child.parent = parent
    parent.children.append(child)


def _sort_key(c: _Container) -> tuple[float, int]:
    node = c
    while node.item is None and node.children:
        node = node.children[0]
    if node.item is None:
        return (0.0, 0)
    return (node.item.sent, node.item.seq)


def _sort_levels(roots: list[_Container]) -> None:
    order: list[list[_Container]] = []
    stack = [roots]
    while stack:
        level = stack.pop()
        order.append(level)
        for c in level:
            if c.children:
                stack.append(c.children)
    for level in reversed(order):
        level.sort(key=_sort_key)


def _to_nodes(roots: list[_Container], ids: Mapping[int, int]) -> list[ThreadNode]:
    def build(c: _Container) -> ThreadNode:
        # Iterative post-order: reply chains can be as long as the mailbox.
        result: dict[int, ThreadNode] = {}
        stack: list[tuple[_Container, bool]] = [(c, False)]
        while stack:
            node, done = stack.pop()
            if done:
                kids = tuple(result.pop(id(k)) for k in node.children)
                ident = ids[node.item.seq] if node.item is not None else None
                result[id(node)] = ThreadNode(ident, kids)
            else:
                stack.append((node, True))
                for k in reversed(node.children):
                    stack.append((k, False))
        return result[id(c)]

    return [build(r) for r in roots]


def thread_references(items: Sequence[Item], ids: Mapping[int, int]) -> list[ThreadNode]:
    """The REFERENCES algorithm of RFC 5256 §2.2 (after JWZ)."""
    table: dict[str, _Container] = {}
    for item in sorted(items, key=lambda it: it.seq):
        mid = item.parse.get("message_id")
        if not mid or (mid in table and table[mid].item is not None):
            mid = f"\x00dummy-{item.seq}"  # missing or duplicate: unique
        container = table.get(mid)
        if container is None:
            container = table[mid] = _Container()
        container.item = item
        refs = [str(r) for r in item.parse.get("references") or []]
        if not refs and item.parse.get("in_reply_to"):
            refs = [str(item.parse["in_reply_to"])]
        prev: _Container | None = None
        for ref in refs:
            c = table.get(ref)
            if c is None:
                c = table[ref] = _Container()
            if prev is not None and c.parent is None and c is not prev and not c.is_ancestor_of(prev):
                _link(prev, c)
            prev = c
        if prev is not None and prev is not container and not container.is_ancestor_of(prev):
            _link(prev, container)
        elif prev is None and container.parent is not None:
            container.parent.children.remove(container)
            container.parent = None
    roots = [c for c in table.values() if c.parent is None]
    roots = _prune(roots)
    _sort_levels(roots)
    roots = _merge_subjects(roots)
    _sort_levels(roots)
    return _to_nodes(roots, ids)


def _prune(roots: list[_Container]) -> list[_Container]:
    """Drop empty dummies; promote a dummy's children unless it is a root
    with several children (RFC 5256 §2.2 step 4)."""

    def prune_level(level: list[_Container], is_root: bool) -> list[_Container]:
        out: list[_Container] = []
        queue = list(level)
        while queue:
            c = queue.pop(0)
            if c.item is None:
                if not c.children:
                    continue
                if not is_root or len(c.children) == 1:
                    promoted = list(c.children)
                    for k in promoted:
                        k.parent = c.parent
                    c.children = []
                    queue[:0] = promoted
                    continue
            out.append(c)
        return out

    roots = prune_level(roots, True)
    for r in roots:
        r.parent = None
    stack = list(roots)
    while stack:
        c = stack.pop()
        c.children = prune_level(c.children, False)
        for k in c.children:
            k.parent = c
        stack.extend(c.children)
    return roots


def _container_subject(c: _Container) -> tuple[str, bool]:
    node = c if c.item is not None else (c.children[0] if c.children else c)
    if node.item is None:
        return "", False
    return base_subject(_subject(node.item))


def _merge_subjects(roots: list[_Container]) -> list[_Container]:
    table: dict[str, _Container] = {}
    for c in roots:
        subj, _ = _container_subject(c)
        if not subj:
            continue
        old = table.get(subj)
        if (
            old is None
            or (c.item is None and old.item is not None)
            or (old.item is not None and _container_subject(old)[1] and c.item is not None
                and not _container_subject(c)[1])
        ):
            table[subj] = c
    out: list[_Container] = []
    for c in roots:
        subj, reply = _container_subject(c)
        target = table.get(subj) if subj else None
        if target is None or target is c:
            out.append(c)
            continue
        if target.item is None and c.item is None:
            for k in list(c.children):
                _link(target, k)
        elif target.item is None or (reply and not _container_subject(target)[1]):
            _link(target, c)
        else:
            dummy = _Container()
            _link(dummy, target)
            _link(dummy, c)
            table[subj] = dummy
            if target in out:
                out[out.index(target)] = dummy
            else:
                out.append(dummy)
    return [c for c in out if c.parent is None]


def thread_ordered_subject(items: Sequence[Item], ids: Mapping[int, int]) -> list[ThreadNode]:
    """ORDEREDSUBJECT: by base subject then date; the first of each subject
    is the parent of the others (RFC 5256 §2.1... THREAD=ORDEREDSUBJECT)."""
    # The base subject once per message: the sort key and the grouping below.
    keyed = [(base_subject(_subject(it))[0], it) for it in items]
    keyed.sort(key=lambda p: (p[0], p[1].sent, p[1].seq))
    threads: list[tuple[tuple[float, int], ThreadNode]] = []
    current: str | None = None
    first: Item | None = None
    kids: list[ThreadNode] = []

    def close() -> None:
        if first is not None:
            threads.append(((first.sent, first.seq), ThreadNode(ids[first.seq], tuple(kids))))

    for subj, it in keyed:
        if subj != current or first is None:
            close()
            current, first, kids = subj, it, []
        else:
            kids.append(ThreadNode(ids[it.seq]))
    close()
    threads.sort(key=lambda t: t[0])
    return [t[1] for t in threads]
