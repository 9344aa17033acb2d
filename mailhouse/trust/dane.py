"""DANE for outbound SMTP (RFC 7672): which TLSA records count, and whether a
server's certificate chain matches them.

When it applies (decided in `mailhouse.trust.tlspolicy`): the resolver is
trusted to validate (`[dns] trust_ad`), the MX answer and the MX host's
addresses were validated, and the TLSA RRset at `_<port>._tcp.<mx host>` was
validated and holds a usable record. Then TLS is mandatory and the chain must
match (RFC 7672 §2.2).

Usable records (RFC 7672 §3.1): usage DANE-TA(2) or DANE-EE(3); selector
Cert(0) or SPKI(1); matching type Full(0), SHA2-256(1) or SHA2-512(2). PKIX-TA(0)
and PKIX-EE(1) are unusable for SMTP (§3.1.3): MX hosts are not expected to have
certificates from a CA the sender knows.

- DANE-EE(3) authenticates the leaf alone; its names and dates do not matter
  (§3.1.1): the DNS, not a CA, vouches for the key.
- DANE-TA(2) names a trust anchor that must be among the certificates the server
  sends (RFC 7671 §5.2.2 asks servers to include it); the chain from the leaf up
  to it is checked here: signatures, CA flags of issuers, dates of every
  certificate below the anchor, and the leaf's names against the MX host name or
  the recipient domain (§3.2.2, wildcards only as a whole leftmost label, §3.2.3).
  Not supported: a DANE-TA SPKI record whose anchor certificate the server leaves
  out, and name constraints or policy extensions in the chain.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ..dns.resolver import TLSARecord

PKIX_TA, PKIX_EE, DANE_TA, DANE_EE = 0, 1, 2, 3
SELECTOR_CERT, SELECTOR_SPKI = 0, 1
MATCH_FULL, MATCH_SHA256, MATCH_SHA512 = 0, 1, 2
MAX_CHAIN = 10  # deeper chains are not followed (OpenSSL's default depth is 100; MTAs send 2-4)

__all__ = ["TLSARecord", "peer_chain", "tlsa_name", "usable", "verify_chain"]


def tlsa_name(host: str, port: int) -> str:
    """The TLSA owner name for an SMTP server (RFC 6698 §3, RFC 7672 §2.2.3)."""
    return f"_{port}._tcp.{host.rstrip('.')}"


def usable(records: Sequence[TLSARecord]) -> list[TLSARecord]:
    """The records SMTP can use (RFC 7672 §3.1), in their published order."""
    return [
        r for r in records
        if r.usage in (DANE_TA, DANE_EE) and r.selector in (SELECTOR_CERT, SELECTOR_SPKI)
        and r.mtype in (MATCH_FULL, MATCH_SHA256, MATCH_SHA512)
        # A digest of the wrong length can never match; a hint of a typo, not of a key.
        and (r.mtype != MATCH_SHA256 or len(r.data) == 32) and (r.mtype != MATCH_SHA512 or len(r.data) == 64)
    ]


# ---------------------------------------------------------------------- matching
def _der_tlv(data: bytes, pos: int) -> tuple[int, int]:
    """(start of the value, end of the element) of the DER element at `pos`."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return pos, pos + length


def spki_der(cert_der: bytes) -> bytes:
    """The certificate's SubjectPublicKeyInfo exactly as encoded in it.

    Taken from the certificate's own bytes rather than re-encoded from the parsed
    key, so a record made from the published bytes always matches.
    """
    start, _ = _der_tlv(cert_der, 0)  # Certificate ::= SEQUENCE
    pos, _ = _der_tlv(cert_der, start)  # tbsCertificate ::= SEQUENCE
    if cert_der[pos] == 0xA0:  # [0] version
        pos = _der_tlv(cert_der, pos)[1]
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        pos = _der_tlv(cert_der, pos)[1]
    if cert_der[pos] != 0x30:
        raise ValueError("no SubjectPublicKeyInfo where expected")
    return cert_der[pos : _der_tlv(cert_der, pos)[1]]


def _selected(cert_der: bytes, selector: int) -> bytes:
    if selector == SELECTOR_CERT:
        return cert_der
    try:
        return spki_der(cert_der)
    except (ValueError, IndexError):
        cert = x509.load_der_x509_certificate(cert_der)
        return cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)


def matches(record: TLSARecord, cert_der: bytes) -> bool:
    """Whether one certificate (DER) matches one record's selector, matching type and data."""
    try:
        data = _selected(cert_der, record.selector)
    except ValueError:
        return False
    if record.mtype == MATCH_SHA256:
        data = hashlib.sha256(data).digest()
    elif record.mtype == MATCH_SHA512:
        data = hashlib.sha512(data).digest()
    elif record.mtype != MATCH_FULL:
        return False
    return data == record.data


# ---------------------------------------------------------------------- names
def name_matches(pattern: str, host: str) -> bool:
    """A certificate name against a host name; `*` only as the whole leftmost label."""
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if not pattern or not host:
        return False
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and bool(rest) and rest == pattern[2:] and "*" not in rest
    return "*" not in pattern and pattern == host


def cert_names(cert: x509.Certificate) -> list[str]:
    """DNS names of the subjectAltName; the subject CN only when there is no SAN (RFC 6125 §6.4.4)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [str(n) for n in san.get_values_for_type(x509.DNSName)]


# ---------------------------------------------------------------------- chains
def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except Exception:  # name mismatch, bad signature, unsupported key type: not its issuer
        return False
    return True


def _path_to_anchor(certs: list[x509.Certificate], anchors: set[int]) -> list[int] | None:
    """Indexes from the leaf (0) up to an anchor, each issued by the next; None if none leads there."""

    def walk(path: list[int]) -> list[int] | None:
        last = path[-1]
        if last in anchors:
            return path
        if len(path) >= MAX_CHAIN:
            return None
        for j, cand in enumerate(certs):
            if j not in path and _is_ca(cand) and _issued_by(certs[last], cand):
                found = walk([*path, j])
                if found is not None:
                    return found
        return None

    return walk([0])


def _dates_problem(cert: x509.Certificate, now: datetime.datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"certificate {cert.subject.rfc4514_string()} is not valid yet"
    if now > cert.not_valid_after_utc:
        return f"certificate {cert.subject.rfc4514_string()} has expired"
    return None


def verify_chain(
    chain: Sequence[bytes], records: Sequence[TLSARecord], names: Sequence[str],
    now: datetime.datetime | None = None,
) -> str | None:
    """None when the chain (leaf first, DER, as the server sent it) is authenticated
    by one of the usable `records`; otherwise why it is not, for the journey."""
    records = usable(records)
    if not chain:
        return "DANE: the server sent no certificate"
    if not records:
        return "DANE: no usable TLSA record"
    if any(matches(r, chain[0]) for r in records if r.usage == DANE_EE):
        return None
    ta = [r for r in records if r.usage == DANE_TA]
    if not ta:
        return "DANE: the server's certificate matches no DANE-EE TLSA record"
    anchors = {i for i, der in enumerate(chain) if any(matches(r, der) for r in ta)}
    if not anchors:
        return "DANE: no certificate the server sent matches a DANE-TA TLSA record"
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain[:MAX_CHAIN]]
    except ValueError as e:
        return f"DANE: unreadable certificate in the chain: {e}"
    path = _path_to_anchor(certs, anchors)
    if path is None:
        return "DANE: the server's certificate does not chain to its DANE-TA trust anchor"
    now = now or datetime.datetime.now(datetime.UTC)
    # The anchor's own dates do not matter: like a root, it is trusted as published.
    for i in path[:-1] or path[:1]:
        problem = _dates_problem(certs[i], now)
        if problem is not None:
            return f"DANE: {problem}"
    leaf_names = cert_names(certs[0])
    if not any(name_matches(p, n) for p in leaf_names for n in names):
        return (f"DANE: the certificate is for {', '.join(leaf_names) or 'no name'}, "
                f"not {' or '.join(names)}")
    return None


def peer_chain(obj: ssl.SSLObject | ssl.SSLSocket | Any) -> list[bytes]:
    """The certificates the server sent, leaf first, as DER.

    Python 3.13 has `get_unverified_chain()`; 3.10-3.12 have it only on the C
    object behind the wrapper. Without either, only the leaf (DANE-EE still works).
    """
    getter = getattr(obj, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(obj, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        try:
            certs = getter() or []
        except (ssl.SSLError, ValueError):
            certs = []
        out: list[bytes] = []
        for c in certs:
            if isinstance(c, bytes):
                out.append(c)
            else:  # _ssl.Certificate
                out.append(ssl.PEM_cert_to_DER_cert(c.public_bytes()))
        if out:
            return out
    leaf = obj.getpeercert(binary_form=True)
    return [leaf] if leaf else []
