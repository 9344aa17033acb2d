"""A small authoritative DNS server on loopback, for tests and `mailhouse demo`.

The product resolves through dnspython's real resolver; pointing that resolver
here (instead of mocking it) keeps the whole path under test: UDP, truncation
and the TCP retry, rcodes, timeouts. Messages are parsed and built with
`dns.message`, so the wire format is dnspython's, not ours.

    zone = Zone()
    zone.add("hamburger.edu", "MX", "10 mx.hamburger.edu.")
    zone.add("mx.hamburger.edu", "A", "127.0.0.1")
    async with DNSServer(zone) as server:
        resolver = server.resolver()
        answer = await resolver.resolve("hamburger.edu", "MX")

Names are looked up case-insensitively. A name in a known apex that has no
records is NXDOMAIN; a name outside every apex is REFUSED, which is what a
real authoritative server says, and what surfaces as "no nameservers" in
dnspython. Apexes are declared (`Zone("test")`, `add_apex`) or inferred from
the last two labels of every added name.

DNSSEC is simulated, not implemented: names marked validated
(`Zone(validated=True)` for all, `zone.set_validated(name)` for one) get the AD
bit in answers to queries that ask for it (AD or DO set, RFC 6840 §5.7), as a
validating resolver would send; no RRSIG is ever served. That is all a client
which trusts its resolver's AD bit (DANE in mailhouse) can see. Any record type
dnspython knows can be added in presentation format, TLSA included:

    zone.add("_25._tcp.mx.hamburger.edu", "TLSA", "3 1 1 8f3a...")
    zone.set_validated("_25._tcp.mx.hamburger.edu")
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, NamedTuple, cast

import dns.asyncresolver
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.TXT
import dns.rrset

from .. import log

logger = log.get("dns.testserver")

IN = dns.rdataclass.IN
# Classic DNS without EDNS is limited to 512 bytes over UDP; RFC 6891 forbids
# going below it whatever a client advertises.
MIN_UDP = 512
# The DNS flag day 2020 value: what real servers cap EDNS answers at.
DEFAULT_UDP_LIMIT = 1232
TCP_IDLE = 30.0
NEGATIVE_TTL = 0
MAX_CNAME_CHAIN = 8
# A TXT character-string carries at most 255 bytes (RFC 1035 3.3.14).
TXT_CHUNK = 255
_TXT_TYPES = (dns.rdatatype.TXT, dns.rdatatype.SPF)

Transport = Literal["udp", "tcp"]
# A name's forced behaviour: an rcode to answer with, or "stall" (no answer).
_Override = dns.rcode.Rcode | Literal["stall"]


class Query(NamedTuple):
    """One question the server saw; lets tests assert what was asked and how."""

    name: str
    rtype: str
    transport: Transport


@dataclass
class _Answer:
    rcode: dns.rcode.Rcode
    authoritative: bool = True
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    validated: bool = False  # AD-worthy: every name in the answer is marked validated


def _name(text: str) -> dns.name.Name:
    # Relative names in tests mean absolute ones: "hamburger.edu" is the
    # domain, never "hamburger.edu.<search domain>".
    return dns.name.from_text(text, origin=dns.name.root)


def _txt_rdata(rdtype: dns.rdatatype.RdataType, value: str) -> dns.rdata.Rdata:
    # Unquoted values are taken literally: "v=spf1 -all" is one string with a
    # space, not two strings as zone-file syntax would make it. Quoted values
    # are zone-file syntax, for tests that need an exact split.
    if value.lstrip().startswith('"'):
        return dns.rdata.from_text(IN, rdtype, value, origin=dns.name.root, relativize=False)
    raw = value.encode()
    chunks = [raw[i : i + TXT_CHUNK] for i in range(0, len(raw), TXT_CHUNK)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(IN, rdtype, chunks)


def _implicit_apex(name: dns.name.Name) -> dns.name.Name:
    # The last two labels approximate the registered domain, which is what
    # tests think of as "the zone" (mx.hamburger.edu lives in hamburger.edu).
    labels = name.labels  # ends with the root label b""
    return dns.name.Name(labels[-3:]) if len(labels) > 3 else name


class Zone:
    """The records the server answers from; mutable at run time, thread-safe.

    Mutations come from the test (any thread) while the server reads from its
    own loop, hence a lock rather than relying on the GIL around set/dict
    iteration.
    """

    def __init__(self, *apexes: str, validated: bool = False) -> None:
        self._lock = threading.Lock()
        # Which answers pass as DNSSEC-validated: a default, and per-name exceptions.
        self._validated_default = validated
        self._validated: dict[dns.name.Name, bool] = {}
        self._records: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rdataset.Rdataset]] = {}
        self._apexes: set[dns.name.Name] = {_name(a) for a in apexes}
        self._overrides: dict[tuple[dns.name.Name, dns.rdatatype.RdataType | None], _Override] = {}

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, str, str]], *apexes: str) -> Zone:
        """A Zone from (name, type, value) triples, for fixtures and the demo."""
        zone = cls(*apexes)
        for name, rtype, value in records:
            zone.add(name, rtype, value)
        return zone

    def add_apex(self, name: str) -> None:
        """Declare a zone apex, so unknown names under it get NXDOMAIN, not REFUSED."""
        with self._lock:
            self._apexes.add(_name(name))

    def add(self, name: str, rtype: str, value: str, ttl: int = 60) -> None:
        """Add one record in presentation format; an RRset's TTL is the smallest given.

        Names in values are absolute even without a trailing dot. TXT/SPF values
        are literal text, split into 255-byte strings; start them with a quote
        to write zone-file syntax instead.
        """
        owner = _name(name)
        rdtype = dns.rdatatype.from_text(rtype)
        if rdtype in _TXT_TYPES:
            rdata = _txt_rdata(rdtype, value)
        else:
            rdata = dns.rdata.from_text(IN, rdtype, value, origin=dns.name.root, relativize=False)
        with self._lock:
            if self._apex_of(owner) is None:
                self._apexes.add(_implicit_apex(owner))
            node = self._records.setdefault(owner, {})
            rdataset = node.get(rdtype)
            if rdataset is None:
                rdataset = node[rdtype] = dns.rdataset.Rdataset(IN, rdtype)
            rdataset.add(rdata, ttl)

    def set_validated(self, name: str, validated: bool = True) -> None:
        """Answers about this exact name carry the AD bit (when asked for) or not.

        An answer following CNAMEs is validated only if every name on the way is.
        """
        with self._lock:
            self._validated[_name(name)] = validated

    def _is_validated(self, name: dns.name.Name) -> bool:
        return self._validated.get(name, self._validated_default)

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Drop a name's records of one type, or everything including fail/stall."""
        owner = _name(name)
        with self._lock:
            node = self._records.get(owner)
            if rtype is None:
                self._records.pop(owner, None)
                self._clear_overrides(owner)
                return
            if node is not None:
                node.pop(dns.rdatatype.from_text(rtype), None)
                if not node:
                    del self._records[owner]

    def fail(self, name: str, rcode: str = "SERVFAIL", *, rtype: str | None = None) -> None:
        """Answer this exact name (all types, or just `rtype`) with `rcode`."""
        self._override(name, rtype, dns.rcode.from_text(rcode))

    def stall(self, name: str, *, rtype: str | None = None) -> None:
        """Never answer this exact name (all types, or just `rtype`): a resolver timeout."""
        self._override(name, rtype, "stall")

    def recover(self, name: str) -> None:
        """Undo fail()/stall() for a name, keeping its records."""
        with self._lock:
            self._clear_overrides(_name(name))

    def _override(self, name: str, rtype: str | None, what: _Override) -> None:
        key = (_name(name), dns.rdatatype.from_text(rtype) if rtype is not None else None)
        with self._lock:
            self._overrides[key] = what

    def _clear_overrides(self, owner: dns.name.Name) -> None:
        for key in [k for k in self._overrides if k[0] == owner]:
            del self._overrides[key]

    def _apex_of(self, name: dns.name.Name) -> dns.name.Name | None:
        best: dns.name.Name | None = None
        for apex in self._apexes:
            if name.is_subdomain(apex) and (best is None or len(apex) > len(best)):
                best = apex
        return best

    def _soa(self, apex: dns.name.Name) -> dns.rrset.RRset:
        node = self._records.get(apex, {})
        explicit = node.get(dns.rdatatype.SOA)
        if explicit is not None:
            return _copy(apex, explicit)
        # A synthesized SOA makes NXDOMAIN/NODATA look like a real server's
        # without tests having to write one. Its negative-caching TTL is 0 so
        # a caching resolver (the product's) sees a record added mid-test at
        # once; a test about negative caching adds its own SOA.
        text = f"ns.{apex} hostmaster.{apex} 1 3600 600 86400 {NEGATIVE_TTL}"
        rdata = dns.rdata.from_text(IN, dns.rdatatype.SOA, text, origin=dns.name.root, relativize=False)
        return dns.rrset.from_rdata(apex, NEGATIVE_TTL, rdata)

    def _exists(self, name: dns.name.Name, apex: dns.name.Name) -> bool:
        # Empty non-terminals exist (RFC 8020): "_domainkey.x" is NODATA when
        # "sel._domainkey.x" has records, not NXDOMAIN.
        if name == apex or name in self._records:
            return True
        return any(owner.is_subdomain(name) for owner in self._records)

    def lookup(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Answer | None:
        """What to answer for one question; None means stay silent."""
        with self._lock:
            override = self._overrides.get((qname, rdtype), self._overrides.get((qname, None)))
            if override == "stall":
                return None
            if override is not None:
                return _Answer(override, authoritative=False)
            apex = self._apex_of(qname)
            if apex is None:
                return _Answer(dns.rcode.REFUSED, authoritative=False)
            if not self._exists(qname, apex):
                return _Answer(dns.rcode.NXDOMAIN, authority=[self._soa(apex)],
                               validated=self._is_validated(qname))
            result = _Answer(dns.rcode.NOERROR)
            result.answer = self._chain(qname, rdtype, apex)
            if not result.answer:
                result.authority = [self._soa(apex)]
            result.validated = all(self._is_validated(n) for n in {qname, *(rr.name for rr in result.answer)})
            return result

    def _chain(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, apex: dns.name.Name
    ) -> list[dns.rrset.RRset]:
        out: list[dns.rrset.RRset] = []
        name = qname  # the question's spelling, so 0x20-randomized case comes back intact
        for _ in range(MAX_CNAME_CHAIN):
            node = self._records.get(name, {})
            if rdtype == dns.rdatatype.ANY:
                out += [_copy(name, rds) for rds in node.values()]
                if name == apex and dns.rdatatype.SOA not in node:
                    out.append(self._soa(apex))
                return out
            found = node.get(rdtype)
            if found is not None:
                out.append(_copy(name, found))
                return out
            if rdtype == dns.rdatatype.SOA and name == apex:
                out.append(self._soa(apex))
                return out
            cname = node.get(dns.rdatatype.CNAME)
            if cname is None:
                return out
            out.append(_copy(name, cname))
            name = cast(dns.rdtypes.ANY.CNAME.CNAME, next(iter(cname))).target
            apex = self._apex_of(name) or apex
        return out


def _copy(owner: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    # A fresh RRset per answer: the message must not alias the zone's sets,
    # which another thread may change while the answer is being rendered.
    return dns.rrset.from_rdata_list(owner, rdataset.ttl, list(rdataset))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not every loop's datagram transport subclasses DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = self.server.respond(data, "udp")
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from a client that gave up: nothing to do.
        pass


class DNSServer:
    """Authoritative answers from a Zone over UDP and TCP on one loopback port.

    `udp_limit` caps UDP answers below what clients advertise with EDNS; the
    floor is 512, which is also what a resolver without EDNS (dnspython's
    default) gets. Bigger answers are truncated and the client retries on TCP.
    """

    def __init__(
        self, zone: Zone, host: str = "127.0.0.1", port: int = 0, *, udp_limit: int = DEFAULT_UDP_LIMIT
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(f"test DNS server must listen on loopback, not {host!r}")
        self.zone = zone
        self.host = host
        self.port = port
        self.udp_limit = max(MIN_UDP, udp_limit)
        self.queries: deque[Query] = deque(maxlen=1000)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_tasks: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    # -- pointing resolvers here ---------------------------------------------

    @property
    def nameserver(self) -> dns.nameserver.Do53Nameserver:
        return dns.nameserver.Do53Nameserver(self.host, self.port)

    def resolver(self, timeout: float = 2.0, lifetime: float = 5.0) -> dns.asyncresolver.Resolver:
        """A dnspython async resolver that asks only this server."""
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [self.nameserver]
        resolver.timeout = timeout
        resolver.lifetime = lifetime
        return resolver

    # -- asyncio lifecycle -----------------------------------------------------

    async def start(self) -> None:
        if self._udp is not None:
            raise RuntimeError("DNS server already started")
        udp_sock, tcp_sock = self._bind()
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _UDP(self), sock=udp_sock)
            self._udp = transport
            self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)
        except BaseException:
            await self.stop()
            udp_sock.close()
            tcp_sock.close()
            raise
        logger.debug("listening on %s port %d (udp+tcp)", self.host, self.port)

    async def stop(self) -> None:
        udp, self._udp = self._udp, None
        tcp, self._tcp = self._tcp, None
        if udp is not None:
            udp.close()
        if tcp is not None:
            tcp.close()
        # Server.close() leaves accepted connections open (3.11); a stalled
        # query would keep its handler alive forever otherwise.
        tasks = list(self._tcp_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tcp is not None:
            await tcp.wait_closed()

    async def __aenter__(self) -> DNSServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # Port 0 is picked by the kernel for UDP; the same number may be taken
        # for TCP, so retry a few times instead of hoping.
        attempts = 50 if self.port == 0 else 1
        last: OSError | None = None
        for _ in range(attempts):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                # Lets a fixed port be reused right after a previous test's
                # connections linger in TIME_WAIT.
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                udp.bind((self.host, self.port))
                port = int(udp.getsockname()[1])
                tcp.bind((self.host, port))
                tcp.listen(64)
                udp.setblocking(False)
                tcp.setblocking(False)
            except OSError as e:
                udp.close()
                tcp.close()
                if e.errno != errno.EADDRINUSE:
                    raise
                last = e
                continue
            self.port = port
            return udp, tcp
        assert last is not None
        raise last

    # -- thread lifecycle, for sync and subprocess-based tests -------------------

    def start_in_thread(self) -> None:
        """Serve from a daemon thread with its own loop; returns once listening."""
        if self._thread is not None:
            raise RuntimeError("DNS server thread already running")
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = asyncio.Event()
            try:
                await self.start()
            except BaseException as e:
                failure.append(e)
                ready.set()
                return
            ready.set()
            try:
                await self._thread_stop.wait()
            finally:
                await self.stop()

        self._thread = threading.Thread(target=asyncio.run, args=(serve(),), name="dns-testserver", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]

    def stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop = self._thread_loop, self._thread_stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(stop.set)
        thread.join(10)

    def __enter__(self) -> DNSServer:
        self.start_in_thread()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_thread()

    # -- answering -------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tcp_tasks.add(task)
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                    wire = await asyncio.wait_for(reader.readexactly(int.from_bytes(head, "big")), TCP_IDLE)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                reply = self.respond(wire, "tcp")
                if reply is None:
                    continue  # a stall keeps the connection open and silent
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._tcp_tasks.discard(task)
            writer.close()

    def respond(self, wire: bytes, transport: Transport) -> bytes | None:
        """The reply to one raw query, or None to stay silent (garbage, stall)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        if query.flags & dns.flags.QR:
            return None  # a response: never answer it (no reflection loops)
        try:
            return self._respond(query, transport)
        except Exception:
            # SERVFAIL rather than silence: a bug here should fail a test at
            # once, not as a resolver timeout many seconds later.
            logger.exception("test DNS server failed to answer a query")
        try:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        except Exception:
            return None

    def _respond(self, query: dns.message.Message, transport: Transport) -> bytes | None:
        response = dns.message.make_response(query, our_payload=self.udp_limit)
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
        elif query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        elif query.question[0].rdclass != IN:
            response.set_rcode(dns.rcode.REFUSED)
        else:
            question = query.question[0]
            self.queries.append(
                Query(question.name.to_text(omit_final_dot=True), dns.rdatatype.to_text(question.rdtype), transport)
            )
            answer = self.zone.lookup(question.name, question.rdtype)
            if answer is None:
                return None
            response.set_rcode(answer.rcode)
            if answer.authoritative:
                response.flags |= dns.flags.AA
            # A validating resolver sets AD only for clients that ask (RFC 6840 §5.7).
            asked = query.flags & dns.flags.AD or query.ednsflags & dns.flags.DO
            if answer.validated and asked:
                response.flags |= dns.flags.AD
            response.answer = list(answer.answer)
            response.authority = list(answer.authority)
        if transport == "tcp":
            return response.to_wire(max_size=65535)
        limit = MIN_UDP
        if query.edns >= 0:
            limit = max(MIN_UDP, min(query.payload, self.udp_limit))
        return response.to_wire(max_size=limit, prefer_truncation=True)

