"""Authentication-Results (RFC 8601): writing ours, removing forged ones.

Written by hand rather than with `authres`: only a few result kinds are needed,
and folding and quoting stay under our control. Reading needs only the authserv-id
of each incoming field, and reading it leniently matters more than full parsing:
a field that a strict parser would refuse must still be recognised and removed
when it claims to be ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .dkim import Field

_TOKEN = re.compile(r"[!#-'*+\-.0-9A-Z^-~]+")  # RFC 2045 token
_ADDRESS = re.compile(r"[!#-'*+\-/0-9=?A-Z^-~]+(?:\.[!#-'*+\-/0-9=?A-Z^-~]+)*@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*")


def pvalue(v: str) -> str:
    """A property value: bare if it is a token or an address, else quoted."""
    if _TOKEN.fullmatch(v) or _ADDRESS.fullmatch(v):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def comment(text: str) -> str:
    clean = "".join(c if c.isprintable() else " " for c in text)[:200]
    return "(" + clean.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


@dataclass
class Result:
    method: str
    result: str
    note: str = ""  # a comment after the result
    props: list[tuple[str, str]] = field(default_factory=list)  # ("smtp.mailfrom", "a@b")

    def text(self) -> str:
        out = f"{self.method}={self.result}"
        if self.note:
            out += " " + comment(self.note)
        for k, v in self.props:
            out += f" {k}={pvalue(v)}"
        return out


def header(authserv_id: str, results: list[Result]) -> bytes:
    """The whole field, folded one result a line, ending CRLF."""
    if not results:
        return f"Authentication-Results: {authserv_id}; none\r\n".encode()
    body = ";\r\n\t".join(r.text() for r in results)
    return f"Authentication-Results: {authserv_id};\r\n\t{body}\r\n".encode("utf-8", "replace")


def _strip_comments(text: str) -> str:
    out, depth, i = [], 0, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and depth:
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(c)
        i += 1
    return "".join(out)


def authserv_id_of(value: bytes) -> str:
    """The authserv-id a field's value starts with ("" when there is none)."""
    text = _strip_comments(value.decode("utf-8", "replace")).strip()
    if text.startswith('"'):
        end = text.find('"', 1)
        return text[1:end if end > 0 else None].strip().lower()
    m = re.match(r"[^\s;]+", text)
    return m.group(0).lower() if m else ""


def claiming(fields: list[Field], authserv_id: str) -> list[Field]:
    """Authentication-Results fields that claim to come from us (RFC 8601 §5)."""
    ours = authserv_id.lower()
    return [f for f in fields if f.name == "authentication-results" and authserv_id_of(f.value) == ours]
