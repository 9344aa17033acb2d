"""Sanitising hostile HTML, picking the parts to show, and the web's small rules."""

from __future__ import annotations

import time

import pytest

from mailhouse.mime.structure import analyze
from mailhouse.web import render
from mailhouse.web.api import content_disposition
from mailhouse.web.auth import LoginLimiter, Sessions, new_token, split_token
from mailhouse.web.mail import (
    MailError,
    address_field,
    normalize_flag,
    parse_addresses,
    valid_folder_name,
)
from mailhouse.web.views import safe_path


@pytest.mark.parametrize("source", [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<a href='javascript:alert(1)'>x</a>",
    "<a href=' jAvAsCrIpT:alert(1)'>x</a>",
    "<a href='data:text/html,<script>alert(1)</script>'>x</a>",
    "<svg onload=alert(1)><script>alert(1)</script></svg>",
    "<iframe srcdoc='<script>alert(1)</script>'></iframe>",
    "<form action='https://evil.example'><input></form>",
    "<meta http-equiv=refresh content='0;url=https://evil.example'>",
    "<object data='javascript:alert(1)'></object><embed src='javascript:alert(1)'>",
    "<div style='width:expression(alert(1));background:url(javascript:alert(1))'>x</div>",
    "<style>body{background:url(https://evil.example/t.png)}</style>",
    "<base href='https://evil.example/'><link rel=stylesheet href='https://evil.example/x.css'>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<noscript><p title='</noscript><img src=x onerror=alert(1)>'></noscript>",
    "<<script>alert(1);//<</script>",
])
def test_hostile_html_is_neutralised(source: str) -> None:
    clean, _ = render.sanitize_html(source)
    low = clean.lower()
    for bad in ("<script", "onerror", "onload", "javascript", "<iframe", "<form", "<meta", "<svg", "<object",
                "<embed", "expression(", "url(", "evil.example", "<style", "<base", "<link"):
        assert bad not in low, (source, clean)


def test_remote_images_blocked_unless_asked_and_links_open_elsewhere() -> None:
    html = '<img src="https://t.example/p.png"><a href="https://example.org">x</a><img src="data:image/svg+xml,x">'
    clean, blocked = render.sanitize_html(html)
    assert blocked and "t.example" not in clean and "svg" not in clean
    assert 'target="_blank"' in clean and "noopener" in clean and "noreferrer" in clean
    shown, blocked2 = render.sanitize_html(html, allow_remote=True)
    assert not blocked2 and 'src="https://t.example/p.png"' in shown
    cid, _ = render.sanitize_html('<img src="cid:logo@x">', cids={"logo@x": "data:image/png;base64,AAAA"})
    assert 'src="data:image/png;base64,AAAA"' in cid


RAW = (
    b"From: A <a@example.org>\r\nTo: b@example.org\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
    b"--m\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n"
    b"--a\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=E9\r\n"
    b"--a\r\nContent-Type: multipart/related; boundary=r\r\n\r\n"
    b"--r\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>caf\xc3\xa9 <img src=\"cid:pic1\"></p>\r\n"
    b"--r\r\nContent-Type: image/png\r\nContent-ID: <pic1>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
    b"--r--\r\n--a--\r\n"
    b"--m\r\nContent-Type: application/pdf; name=\"=?utf-8?q?r=C3=A9sum=C3=A9.pdf?=\"\r\n"
    b"Content-Disposition: attachment\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--m--\r\n"
)


def test_render_picks_parts_decodes_and_inlines_cid() -> None:
    r = render.render(RAW, analyze(RAW))
    assert r.text == "café"
    assert r.html is not None and "café" in r.html and 'src="data:image/png;base64,' in r.html
    assert [(a.name, a.type) for a in r.attachments] == [("résumé.pdf", "application/pdf")]
    part = render.find_part(analyze(RAW), r.attachments[0].section)
    assert part is not None and render.part_bytes(RAW, part) == b"%PDF-"
    assert ("Subject", "t") in r.headers


def test_plain_text_is_escaped_and_linked() -> None:
    out = render.text_to_html("<b>hi</b> see https://example.org/a?b=1&c=2.")
    assert out.startswith("&lt;b&gt;hi&lt;/b&gt;")
    assert 'href="https://example.org/a?b=1&amp;c=2"' in out and out.endswith("</a>.")


def test_redirect_targets_stay_local() -> None:
    for bad in ("//evil.example", "https://evil.example", "/\\evil.example", "evil", "", None, "/x\n"):
        assert safe_path(bad) == "/"
    assert safe_path("/mail/INBOX?page=2") == "/mail/INBOX?page=2"


def test_addresses_flags_folder_names() -> None:
    assert parse_addresses(["Bob <bob@example.org>, carol@example.org"]) == [
        ("Bob", "bob@example.org"), ("", "carol@example.org")]
    for bad in ("nobody", ".x@y.z", "a@", "", "a@b\r\nBcc: x@y"):
        with pytest.raises(MailError):
            parse_addresses([bad])
    assert address_field("To", [("Grüße", "a@b.example")]).startswith("=?utf-8?")
    assert normalize_flag("\\seen") == "\\Seen" and normalize_flag("$Work") == "$Work"
    assert normalize_flag("two words") is None and normalize_flag("\\Recent") is None
    assert valid_folder_name("Work/2026") is None
    for bad in ("", "INBOX", "a//b", "/a", "a*", "x" * 201):
        assert valid_folder_name(bad) is not None


def test_login_limiter_sessions_tokens() -> None:
    lim = LoginLimiter(window=60, limit=3)
    for _ in range(3):
        assert not lim.blocked("10.0.0.1")
        lim.failed("10.0.0.1")
    assert lim.blocked("10.0.0.1") and not lim.blocked("10.0.0.2")
    assert 0 < lim.retry_after("10.0.0.1") <= 61
    from mailhouse.store.models import Account

    s = Sessions(idle=0.05, maximum=10)
    sess = s.create(Account(1, "bob@x.test", "x.test", "h", 0.0))
    assert s.get(sess.id) is sess and len(sess.csrf) >= 32
    time.sleep(0.08)
    assert s.get(sess.id) is None  # idle too long
    assert split_token(new_token(12, "abc_def")) == (12, "abc_def")
    assert split_token("mh_x_y") is None and split_token("other") is None


def test_content_disposition_is_ascii_safe() -> None:
    d = content_disposition('naïve "quote".txt')
    assert d.startswith('attachment; filename="na_ve _quote_.txt"')
    assert "filename*=UTF-8''na%C3%AFve%20%22quote%22.txt" in d
