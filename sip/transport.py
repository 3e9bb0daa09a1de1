"""The thin asyncio layer under the SIP stack: a UDP socket, a TCP listener and optionally a TLS one,
outgoing TCP/TLS connections made on demand, and the timer loop of the Endpoint.

Everything SIP happens in the sans-I/O Endpoint; this module only moves bytes and calls
`endpoint.poll(now)` when the next timer is due. A TCP stream that cannot be framed (no end of headers,
a bad Content-Length) is closed; everything else goes on.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

from .endpoint import Endpoint
from .framing import FramingError, StreamFramer
from .transaction import Peer

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport):
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        self.owner.received(data, Peer("udp", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP UDP: %s", exc)


class _Stream(asyncio.Protocol):
    def __init__(self, owner: SipTransport, transport_name: str):
        self.owner = owner
        self.name = transport_name
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        addr = transport.get_extra_info("peername")
        self.peer = Peer(self.name, addr[0], addr[1])
        if len(self.owner.connections) >= MAX_CONNECTIONS:
            transport.close()
            return
        self.owner.connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        try:
            messages = self.framer.feed(data)
        except FramingError as exc:
            log.info("SIP %s from %s:%d closed: %s", self.name, self.peer.host, self.peer.port, exc)
            self.transport.close()
            return
        for message in messages:
            self.owner.received(message, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.owner.connections.get(self.peer) is self:
            del self.owner.connections[self.peer]
            self.owner.endpoint_failed(self.peer)


class SipTransport:
    """Binds the sockets and drives an Endpoint made by `make_endpoint(send)`."""

    def __init__(self, make_endpoint: Callable[[Callable[[bytes, Peer], None]], Endpoint]):
        self.endpoint = make_endpoint(self.send)
        self.connections: dict[Peer, _Stream] = {}
        self.udp: asyncio.DatagramTransport | None = None
        self.servers: list[asyncio.AbstractServer] = []
        self.local: dict[str, tuple[str, int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._pending_connects: dict[Peer, list[bytes]] = {}
        self._client_ssl: ssl.SSLContext | None = None
        self._closed = False

    @staticmethod
    def now() -> float:
        return time.monotonic()

    async def start(self, host: str, udp_port: int, tcp_port: int | None, tls_port: int | None = None,
                    cert: str | None = None, key: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, udp_port))
        self.udp = udp
        self.local["udp"] = udp.get_extra_info("sockname")[:2]
        if tcp_port is not None:
            server = await loop.create_server(lambda: _Stream(self, "tcp"), host, tcp_port)
            self.servers.append(server)
            self.local["tcp"] = server.sockets[0].getsockname()[:2]
        if tls_port is not None and cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            server = await loop.create_server(lambda: _Stream(self, "tls"), host, tls_port, ssl=context)
            self.servers.append(server)
            self.local["tls"] = server.sockets[0].getsockname()[:2]
        self._client_ssl = ssl.create_default_context()
        self._client_ssl.check_hostname = False
        self._client_ssl.verify_mode = ssl.CERT_NONE  # SIP peers on private certs; trust is the digest's
        self._schedule()

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self.udp is not None:
            self.udp.close()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        for server in self.servers:
            server.close()
            await server.wait_closed()

    # -- bytes in and out ------------------------------------------------------------------------

    def received(self, data: bytes, peer: Peer) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("SIP from %s %s:%d: %s", peer.transport, peer.host, peer.port,
                      data[:data.find(b"\r\n")].decode(errors="replace"))
        try:
            self.endpoint.receive(data, peer, self.now())
        except Exception:
            log.exception("SIP message from %s:%d could not be handled", peer.host, peer.port)
        self._schedule()

    def send(self, data: bytes, peer: Peer) -> None:
        if self._closed:
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("SIP to %s %s:%d: %s", peer.transport, peer.host, peer.port,
                      data[:data.find(b"\r\n")].decode(errors="replace"))
        if self._timer is None or self._timer.when() > asyncio.get_running_loop().time() + 0.05:
            # a new transaction may have a retransmission timer earlier than the one scheduled
            asyncio.get_running_loop().call_soon(self._schedule)
        if peer.transport == "udp":
            if self.udp is not None:
                self.udp.sendto(data, (peer.host, peer.port))
            return
        conn = self.connections.get(peer)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.write(data)
            return
        waiting = self._pending_connects.get(peer)
        if waiting is not None:
            waiting.append(data)
            return
        self._pending_connects[peer] = [data]
        asyncio.get_running_loop().create_task(self._connect(peer))

    async def _connect(self, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(
                lambda: _Stream(self, peer.transport), peer.host, peer.port,
                ssl=self._client_ssl if peer.transport == "tls" else None), 10.0)
        except (OSError, TimeoutError) as exc:
            log.info("SIP %s connection to %s:%d failed: %s", peer.transport, peer.host, peer.port, exc)
            self._pending_connects.pop(peer, None)
            self.endpoint_failed(peer)
            return
        for data in self._pending_connects.pop(peer, []):
            self.send(data, peer)

    def endpoint_failed(self, peer: Peer) -> None:
        self.endpoint.transport_failed(peer)

    # -- timers ----------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        deadline = self.endpoint.deadline()
        delay = 1.0 if deadline is None else max(0.0, min(1.0, deadline - self.now()))
        if self._timer is not None:
            if self._timer.when() <= loop.time() + delay + 0.001:
                return
            self._timer.cancel()
        self._timer = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        try:
            self.endpoint.poll(self.now())
        except Exception:
            log.exception("SIP timers failed")
        self._schedule()

    def kick(self) -> None:
        """Something was sent: its retransmission timer may be earlier than the one scheduled."""
        self._schedule()
