"""`mailhouse trace ID`: the journey of one message on this server, as a timeline."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..config import Config
from ..store.models import JourneyEvent
from .common import store_for
from .main import CommandError


def _ts(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}"


def _tls(tls: Any) -> str:
    if isinstance(tls, dict):
        return f"TLS {tls.get('version')} {tls.get('cipher')}"
    return str(tls) if tls else "no TLS"


def _tls_policy(p: Any) -> str:
    """`source/level` (mode), the result and what went wrong, on one line."""
    if not isinstance(p, dict):
        return str(p)
    text = f"{p.get('source')} ({p.get('level')}"
    text += f", mode {p['mode']})" if p.get("mode") else ")"
    for key in ("result", "problem", "note"):
        if p.get(key):
            text += f"; {key} {p[key]}" if key != "result" else f": {p[key]}"
    return text


def describe(ev: JourneyEvent) -> list[str]:
    d = ev.data
    k = ev.kind
    if k == "received":
        who = f" authenticated as {d['auth_user']}," if d.get("auth_user") else ""
        return [
            f"received by {d.get('server', '?')} on its {d.get('listener')} listener from {d.get('helo') or '?'} "
            f"[{d.get('client_ip')}],{who} {_tls(d.get('tls'))}, {d.get('size')} bytes",
            f"envelope: <{d.get('sender')}> -> " + ", ".join(f"<{r}>" for r in d.get("recipients", [])),
        ] + ([f"checks: {d['auth_results']}"] if d.get("auth_results") else [])
    if k == "delivered":
        return [f"delivered to {d.get('account')}, folder {d.get('folder')}, UID {d.get('uid')}"]
    if k == "queued":
        return ["queued for " + ", ".join(f"<{r}>" for r in d.get("recipients", []))]
    if k == "attempt":
        route = d.get("route") or {}
        lines = []
        how = route.get("how")
        if how == "route":
            lines.append(f"attempt for {d.get('domain')}: next hop from the configured route")
        elif route.get("mx"):
            mx = ", ".join(f"{m['host']} (preference {m['preference']})" for m in route["mx"])
            lines.append(f"attempt for {d.get('domain')}: DNS MX {mx}")
        else:
            lines.append(f"attempt for {d.get('domain')}: {how or 'routing'}")
        if d.get("host"):
            reused = " (reused connection)" if d.get("reused_connection") else ""
            lines.append(f"connected to {d['host']} [{d.get('address')}]:{d.get('port')}{reused}, "
                         f"{('TLS ' + d['tls']) if d.get('tls') else 'no TLS'}")
        elif d.get("mx_host"):
            lines.append(f"not connected to {d['mx_host']}: the TLS policy rules it out")
        if d.get("tls_policy"):
            lines.append(f"TLS policy: {_tls_policy(d['tls_policy'])}")
        lines += [f"  {line}" for line in d.get("transcript") or []]
        outcome = d.get("outcome")
        if d.get("error"):
            lines.append(f"outcome: {outcome}: {d['error']}")
        else:
            replies = d.get("replies") or {}
            lines.append(f"outcome: {outcome}" + "".join(f"; <{r}>: {t}" for r, t in replies.items()))
        return lines
    if k == "bounced":
        return [f"bounced: a failure notice {d.get('dsn_queue_id')} went to <{d.get('to')}> for "
                + ", ".join(f"<{r}>" for r in d.get("recipients", []))]
    if k.startswith("dsn-"):
        return [f"{k[4:]} notice {d.get('dsn_queue_id')} sent to <{d.get('to')}>"]
    if k == "dsn":
        return [f"a delivery status notice ({d.get('kind')}) about {d.get('about')} for <{d.get('to')}>"]
    if k == "checks":
        parts = []
        for key in ("spf", "dkim", "dmarc", "arc"):
            v = d.get(key)
            if isinstance(v, dict):
                v = v.get("result", v)
            elif isinstance(v, list):
                v = ", ".join(str(x.get("result", x)) if isinstance(x, dict) else str(x) for x in v) or "none"
            if v is not None:
                parts.append(f"{key}={v}")
        extra = {k2: v2 for k2, v2 in d.items() if k2 not in ("spf", "dkim", "dmarc", "arc")}
        return ["sender checks: " + (" ".join(parts) or json.dumps(d, ensure_ascii=False))] + (
            [f"  {json.dumps(extra, ensure_ascii=False)}"] if extra else []
        )
    if k == "dkim_signed":
        return [f"signed with DKIM for {d.get('d')} (selectors {', '.join(d.get('s') or [])}, {d.get('ms')} ms)"]
    if k == "removed":
        return ["removed from the queue: every recipient is done"]
    if k == "deleted":
        return ["deleted from the queue by the administrator"]
    if k == "read":
        return [f"first read by {d.get('account')} over {d.get('protocol')}"]
    return [f"{k}: {json.dumps(d, ensure_ascii=False)}"]


async def cmd_trace(config: Config, args: argparse.Namespace) -> None:
    async with store_for(config) as store:
        events = await store.journey(args.id)
    if not events:
        raise CommandError(f"nothing known of {args.id} (a queue id or a Message-ID)")
    if args.json:
        print(json.dumps(
            [{"time": e.time, "queue_id": e.queue_id, "message_id": e.message_id, "kind": e.kind, "data": e.data}
             for e in events],
            ensure_ascii=False,
        ))
        return
    mids = {e.message_id for e in events if e.message_id}
    print(f"journey of {args.id}" + (f" (Message-ID <{next(iter(mids))}>)" if len(mids) == 1 else ""))
    for e in events:
        lines = describe(e)
        print(f"{_ts(e.time)}  [{e.queue_id}]  {lines[0]}")
        for line in lines[1:]:
            print(f"{'':25s}{'':{len(e.queue_id) + 4}s}{line}")
