"""Turning a stored message into what a browser may show: text, safe HTML, attachments.

Everything here works from the parse cached at delivery (the MIME tree with byte
offsets, see mailhouse.mime.structure) and slices the raw bytes; nothing parses
the whole message again.

HTML mail is hostile input. It is cleaned with nh3 (an allow-list: no script,
style element, form, iframe, object, SVG, event handler, javascript: or data:
link), and the webmail then shows it in a sandboxed iframe whose own CSP allows
no script, no form and no remote loads (remote images only on request). Any one
of these layers alone would stop the known attacks; together a bug in one is not
enough.
"""

from __future__ import annotations

import base64
import binascii
import html
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import nh3

from ..mime.headers import decode_bytes, decode_words, iter_fields, param_text, unfold

# Largest text part decoded for display; beyond it the rest is cut (with a note),
# so a 25 MB text attachment-in-disguise cannot stall the server.
MAX_TEXT_BYTES = 2 * 1024 * 1024
# Inline (cid:) images are embedded as data: URLs up to this total.
MAX_INLINE_IMAGES = 5 * 1024 * 1024

_SAFE_IMAGE_TYPES = {"image/png", "image/gif", "image/jpeg", "image/webp", "image/bmp"}

_TAGS = set(nh3.ALLOWED_TAGS) | {"font", "center", "tfoot"}
_ATTRS: dict[str, set[str]] = {k: set(v) for k, v in nh3.ALLOWED_ATTRIBUTES.items()}
_COMMON = {"style", "align", "valign", "width", "height", "bgcolor", "color", "dir", "lang", "title", "border"}
_ATTRS["*"] = _COMMON
_ATTRS.setdefault("font", set()).update({"face", "size", "color"})
for _t in ("table", "td", "th"):
    _ATTRS.setdefault(_t, set()).update({"cellpadding", "cellspacing", "nowrap", "background"})
_ATTRS["a"] = {"href", "hreflang", "name"}
_ATTRS.setdefault("img", set()).update({"alt", "src", "width", "height", "align"})
_ATTRS["td"] = _ATTRS.get("td", set()) - {"background"}  # a URL attribute: a remote load
_ATTRS["table"] = _ATTRS.get("table", set()) - {"background"}
_ATTRS["th"] = _ATTRS.get("th", set()) - {"background"}

# CSS properties kept in style attributes: layout and colour, never anything that
# takes a URL (background-image, content, behavior, list-style-image...).
_STYLE_PROPS = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight",
    "text-align", "text-decoration", "text-indent", "text-transform", "line-height", "letter-spacing",
    "white-space", "vertical-align", "margin", "margin-top", "margin-bottom", "margin-left", "margin-right",
    "padding", "padding-top", "padding-bottom", "padding-left", "padding-right", "border",
    "border-top", "border-bottom", "border-left", "border-right", "border-color", "border-style",
    "border-width", "border-collapse", "border-spacing", "border-radius", "width", "max-width", "min-width",
    "height", "max-height", "min-height", "display", "float", "clear", "table-layout", "direction",
    "word-break", "overflow-wrap",
}


@dataclass
class Attachment:
    section: str
    name: str
    type: str
    size: int
    content_id: str | None = None
    inline: bool = False


@dataclass
class Rendered:
    text: str | None
    html: str | None  # sanitized
    attachments: list[Attachment] = field(default_factory=list)
    remote_images: bool = False  # the HTML had remote images, which were left out
    headers: list[tuple[str, str]] = field(default_factory=list)


def _leaves(part: dict[str, Any], in_related: bool = False) -> Iterator[tuple[dict[str, Any], bool]]:
    if part.get("type") == "multipart" and part.get("parts"):
        related = part.get("subtype") == "related"
        for p in part["parts"]:
            yield from _leaves(p, related)
    else:
        yield part, in_related


def _decode_transfer(data: bytes, encoding: str) -> bytes:
    enc = (encoding or "").lower()
    if enc == "base64":
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
        cleaned += b"=" * (-len(cleaned) % 4)
        try:
            return binascii.a2b_base64(cleaned)
        except (binascii.Error, ValueError):
            return b""
    if enc == "quoted-printable":
        return quopri.decodestring(data)
    return data


def part_bytes(raw: bytes, part: dict[str, Any]) -> bytes:
    """A leaf's content, transfer-decoded."""
    start, end = int(part.get("body_start", 0)), int(part.get("body_end", 0))
    return _decode_transfer(raw[start:end], str(part.get("encoding", "7bit")))


def part_text(raw: bytes, part: dict[str, Any]) -> str:
    start, end = int(part.get("body_start", 0)), int(part.get("body_end", 0))
    cut = end - start > MAX_TEXT_BYTES
    data = _decode_transfer(raw[start : min(end, start + MAX_TEXT_BYTES)], str(part.get("encoding", "7bit")))
    text = decode_bytes(data, (part.get("params") or {}).get("charset"))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text + ("\n[…the rest of this part is not shown]" if cut else "")


def mime_type(part: dict[str, Any]) -> str:
    return f"{part.get('type', 'application')}/{part.get('subtype', 'octet-stream')}".lower()


def part_name(part: dict[str, Any]) -> str:
    name = part.get("filename")
    if not name:
        params = dict((part.get("disposition") or {}).get("params") or {})
        name = param_text(params, "filename") or param_text(dict(part.get("params") or {}), "name")
    if name:
        return str(name)
    ext = {"message/rfc822": ".eml", "text/plain": ".txt", "text/html": ".html", "text/calendar": ".ics"}
    t = mime_type(part)
    return "part-" + (part.get("section") or "1").replace(".", "-") + ext.get(t, ".bin")


def _is_attachment(part: dict[str, Any]) -> bool:
    disp = ((part.get("disposition") or {}).get("type") or "").lower()
    if disp == "attachment" or part.get("type") == "message":
        return True
    if part.get("filename"):
        return True
    return part.get("type") not in ("text", "multipart")


def analyse_parts(parse: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[Attachment]]:
    """The text/plain and text/html parts to show, and every other leaf as an attachment."""
    body = parse.get("body") or {}
    text_part: dict[str, Any] | None = None
    html_part: dict[str, Any] | None = None
    attachments: list[Attachment] = []
    for leaf, in_related in _leaves(body):
        t = mime_type(leaf)
        if not _is_attachment(leaf):
            if t == "text/plain" and text_part is None:
                text_part = leaf
                continue
            if t == "text/html" and html_part is None:
                html_part = leaf
                continue
        # Everything else (text/calendar, a second text part of mixed mail...)
        # is offered as a file.
        cid = leaf.get("id")
        cid = cid.strip().removeprefix("<").removesuffix(">") if isinstance(cid, str) else None
        disp = ((leaf.get("disposition") or {}).get("type") or "").lower()
        attachments.append(
            Attachment(
                section=str(leaf.get("section") or "1"),
                name=part_name(leaf),
                type=t,
                size=int(leaf.get("size", 0)),
                content_id=cid or None,
                inline=bool(cid) and (in_related or disp == "inline"),
            )
        )
    return text_part, html_part, attachments


def find_part(parse: dict[str, Any], section: str) -> dict[str, Any] | None:
    for leaf, _ in _leaves(parse.get("body") or {}):
        if str(leaf.get("section") or "1") == section:
            return leaf
    return None


def sanitize_html(source: str, *, allow_remote: bool = False, cids: dict[str, str] | None = None) -> tuple[str, bool]:
    """Clean hostile HTML; returns (html, whether remote images were left out).

    cid: image references become the data: URLs in `cids`; remote images are
    dropped unless allowed; links may only be http(s) or mailto and open in a
    new browsing context (the sandbox allows no navigation of the webmail).
    """
    cids = cids or {}
    blocked = False

    def attr_filter(tag: str, attr: str, value: str) -> str | None:
        nonlocal blocked
        v = value.strip()
        low = v.lower()
        if attr == "src":
            if tag != "img":
                return None
            if low.startswith("cid:"):
                return cids.get(v[4:].strip().strip("<>"))
            if low.startswith(("http://", "https://", "//")):
                if allow_remote:
                    return v
                blocked = True
                return None
            if low.startswith("data:"):
                kind = low[5:].split(";", 1)[0].split(",", 1)[0]
                return v if kind in _SAFE_IMAGE_TYPES else None
            return None
        if attr == "href":
            return v if low.startswith(("http://", "https://", "mailto:", "#")) else None
        if attr == "style" and "url(" in low.replace(" ", "").replace("\\", ""):
            # Even with the property filter, never let a url() through (tracking).
            return None
        return value

    cleaned = nh3.clean(
        source,
        tags=_TAGS,
        clean_content_tags={"script", "style", "title", "head", "noscript", "template", "svg", "math",
                            "iframe", "object", "embed", "textarea", "select", "xmp", "noembed", "noframes"},
        attributes=_ATTRS,
        attribute_filter=attr_filter,
        strip_comments=True,
        link_rel="noopener noreferrer nofollow",
        url_schemes={"http", "https", "mailto", "cid", "data"},
        filter_style_properties=_STYLE_PROPS,
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )
    return cleaned, blocked


def _cid_map(raw: bytes, parse: dict[str, Any], attachments: list[Attachment]) -> dict[str, str]:
    out: dict[str, str] = {}
    total = 0
    for a in attachments:
        if not a.content_id or a.type not in _SAFE_IMAGE_TYPES:
            continue
        part = find_part(parse, a.section)
        if part is None:
            continue
        data = part_bytes(raw, part)
        total += len(data)
        if total > MAX_INLINE_IMAGES:
            break
        out[a.content_id] = f"data:{a.type};base64,{base64.b64encode(data).decode()}"
    return out


def header_list(raw: bytes, parse: dict[str, Any]) -> list[tuple[str, str]]:
    body = parse.get("body") or {}
    head = raw[int(body.get("header_start", 0)) : int(body.get("body_start", 0))]
    return [(name.decode("latin-1"), decode_words(unfold(value))) for name, value in iter_fields(head)]


def render(raw: bytes, parse: dict[str, Any], *, allow_remote: bool = False) -> Rendered:
    text_part, html_part, attachments = analyse_parts(parse)
    text = part_text(raw, text_part) if text_part is not None else None
    clean_html: str | None = None
    blocked = False
    if html_part is not None:
        source = part_text(raw, html_part)
        cids = _cid_map(raw, parse, attachments)
        clean_html, blocked = sanitize_html(source, allow_remote=allow_remote, cids=cids)
        # Inline images shown in the HTML are not listed again as files.
        used = {c for c in cids if f"cid:{c}" in source}
        attachments = [a for a in attachments if not (a.content_id in used and a.inline)]
    return Rendered(text=text, html=clean_html, attachments=attachments, remote_images=blocked,
                    headers=header_list(raw, parse))


_URL = re.compile(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")


def text_to_html(text: str) -> str:
    """Plain text for the page: escaped, links made clickable (opening elsewhere)."""
    out: list[str] = []
    pos = 0
    for m in _URL.finditer(text):
        out.append(html.escape(text[pos : m.start()]))
        url = html.escape(m.group(0))
        out.append(f'<a href="{url}" target="_blank" rel="noopener noreferrer nofollow">{url}</a>')
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def html_document(body: str) -> str:
    """The sanitized HTML as the sandboxed frame's whole document."""
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
        "<meta name=\"color-scheme\" content=\"light\">"
        "<style>body{margin:12px;font-family:system-ui,sans-serif;font-size:15px;line-height:1.45;"
        "color:#111;background:#fff;overflow-wrap:anywhere}img{max-width:100%;height:auto}"
        "table{max-width:100%}pre{white-space:pre-wrap}</style></head><body>"
        + body
        + "</body></html>"
    )
