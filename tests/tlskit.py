"""Test PKI and an HTTPS policy server for the outbound TLS policy tests (DANE, MTA-STS).

    ca = TestCA()
    leaf = ca.issue(["mail.hamburger.edu"])          # an Issued: cert, key, PEMs
    leaf.write(tmp / "cert.pem", tmp / "key.pem", chain=[ca.cert])
    tlsa(leaf.cert, 3, 1, 1)                          # "3 1 1 ab12..." for a Zone

    with PolicyServer(ca, {"mta-sts.x.test": Response(body="version: STSv1\\n...")}) as https:
        https.port                                    # on 127.0.0.1
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailhouse.trust.dane import spki_der
from tests.loopthread import LoopThreadServer

NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, cert_path: Path, key_path: Path, chain: list[x509.Certificate] | None = None) -> None:
        """The certificate (then `chain`, as a server sends it) and its key, as PEM files."""
        cert_path.write_bytes(self.cert_pem + b"".join(c.public_bytes(serialization.Encoding.PEM)
                                                        for c in chain or []))
        key_path.write_bytes(self.key_pem)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class TestCA:
    """A root CA (or, from `intermediate()`, a CA under another) issuing test certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str = "mailhouse test CA", parent: TestCA | None = None) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        issuer_key = parent.key if parent else self.key
        issuer_name: x509.Name = parent.cert.subject if parent else _name(name)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(issuer_name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False)
        )
        self.cert: x509.Certificate = builder.sign(issuer_key, hashes.SHA256())
        self.parent = parent

    def intermediate(self, name: str = "mailhouse test intermediate") -> TestCA:
        return TestCA(name, parent=self)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.pem)
        return path

    def issue(
        self, names: list[str], *, not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0])).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
            .not_valid_after(not_after or NOW + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Issued(cert, key)


def tlsa_data(cert: x509.Certificate, selector: int, mtype: int) -> bytes:
    der = cert.public_bytes(serialization.Encoding.DER)
    data = der if selector == 0 else spki_der(der)
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return data


def tlsa(cert: x509.Certificate, usage: int, selector: int, mtype: int) -> str:
    """A TLSA record's presentation form, for `Zone.add(name, "TLSA", ...)`."""
    return f"{usage} {selector} {mtype} {tlsa_data(cert, selector, mtype).hex()}"


def server_context(issued: Issued, chain: list[x509.Certificate] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as d:
        issued.write(Path(d) / "c.pem", Path(d) / "k.pem", chain)
        ctx.load_cert_chain(Path(d) / "c.pem", Path(d) / "k.pem")
    return ctx


# ---------------------------------------------------------------------- HTTPS
@dataclass
class Response:
    body: str | bytes = ""
    status: int = 200
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False


class PolicyServer(LoopThreadServer):
    """HTTPS on 127.0.0.1 answering by Host header; what it serves can change at run time."""

    def __init__(self, ca: TestCA, responses: dict[str, Response], *, names: list[str] | None = None) -> None:
        self.responses = responses
        self.issued = ca.issue(names or sorted(responses) or ["localhost"])
        self.ctx = server_context(self.issued)
        self.ssl_context = self.ctx
        self.requests: list[tuple[str, str]] = []  # (host, path)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            path = lines[0].split(" ")[1]
            host = next((ln.split(":", 1)[1].strip() for ln in lines[1:] if ln.lower().startswith("host:")), "")
            host = host.rsplit(":", 1)[0]  # the name, without the port
            self.requests.append((host, path))
            r = self.responses.get(host, Response("not here", 404))
            body = r.body.encode() if isinstance(r.body, str) else r.body
            out = [f"HTTP/1.1 {r.status} X", f"Content-Type: {r.content_type}", "Connection: close"]
            out += [f"{k}: {v}" for k, v in r.headers.items()]
            if r.chunked:
                out.append("Transfer-Encoding: chunked")
                mid = len(body) // 2
                payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:mid], body[mid:]) if p) + b"0\r\n\r\n"
            else:
                out.append(f"Content-Length: {len(body)}")
                payload = body
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + payload)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, IndexError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
