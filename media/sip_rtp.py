"""The SIP leg's plain RTP/AVP endpoint: an RTP socket on an even port from a range and RTCP on the next
(RFC 3550 section 11), both non-blocking and read by the event loop.

Symmetric RTP (comedia): we send to the address the peer's SDP names until the peer's first valid RTP
packet arrives, then to where that came from (the peer may sit behind a NAT); RTCP then goes to that
source's port + 1 unless the SDP named an RTCP port (RFC 3605), until the peer's own RTCP arrives and
latches it. Once latched, packets from
other addresses are counted (`foreign`) and dropped, until `set_remote` (a new SDP) latches anew. RTCP
latches the same way on its own socket. Datagrams that are not RTP (short, version not 2) are counted in
`junk` and dropped; a full socket drops what we send and counts it (`send_dropped`): never a wait.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

READ_BATCH = 64  # datagrams read per readiness callback


class PortsExhausted(OSError):
    pass


@dataclass
class EndpointStats:
    rtp_received: int = 0
    rtp_bytes_received: int = 0
    rtp_sent: int = 0
    rtp_bytes_sent: int = 0
    rtcp_received: int = 0
    rtcp_sent: int = 0
    junk: int = 0
    foreign: int = 0
    send_dropped: int = 0


def _bind_pair(address: str, port_min: int, port_max: int) -> tuple[socket.socket, socket.socket]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    first = port_min + (port_min & 1)
    ports = list(range(first, port_max, 2))
    if not ports:
        raise PortsExhausted(f"the RTP port range {port_min}-{port_max} has no even port with a next one")
    start = random.randrange(len(ports))
    for port in ports[start:] + ports[:start]:
        rtp = socket.socket(family, socket.SOCK_DGRAM)
        rtcp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            rtp.bind((address, port))
            rtcp.bind((address, port + 1))
        except OSError as exc:
            rtp.close()
            rtcp.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise
        rtp.setblocking(False)
        rtcp.setblocking(False)
        return rtp, rtcp
    raise PortsExhausted(f"no free RTP port pair in {port_min}-{port_max}")


class RtpEndpoint:
    """`on_rtp(data, now)` gets every RTP datagram from the peer (version 2, 12 bytes at least),
    `on_rtcp(data, now)` every RTCP one. `now()` is the loop's clock."""

    def __init__(self, address: str, port_min: int, port_max: int, now: Callable[[], float]):
        self.rtp_sock, self.rtcp_sock = _bind_pair(address, port_min, port_max)
        self.port = int(self.rtp_sock.getsockname()[1])
        self.stats = EndpointStats()
        self.on_rtp: Callable[[bytes, float], None] = lambda data, now: None
        self.on_rtcp: Callable[[bytes, float], None] = lambda data, now: None
        self._now = now
        self._sdp_rtp: tuple[str, int] | None = None  # from the peer's SDP
        self._sdp_rtcp: tuple[str, int] | None = None
        self._rtcp_named = False  # the SDP said where RTCP goes (a=rtcp), not just RTP + 1
        self.rtp_remote: tuple[Any, ...] | None = None  # where we send RTP now
        self.rtcp_remote: tuple[Any, ...] | None = None
        self.rtp_latched = False
        self._rtcp_latched = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.rtp_sock.fileno(), self._read_rtp)
        loop.add_reader(self.rtcp_sock.fileno(), self._read_rtcp)

    def set_remote(self, address: str, port: int, rtcp_port: int | None) -> None:
        """The peer's SDP address: sent to until its RTP (RTCP) arrives, which latches again."""
        self._sdp_rtp = (address, port)
        self._sdp_rtcp = (address, rtcp_port or port + 1)
        self._rtcp_named = rtcp_port is not None
        self.rtp_remote, self.rtcp_remote = self._sdp_rtp, self._sdp_rtcp
        self.rtp_latched = self._rtcp_latched = False

    # -- receiving ---------------------------------------------------------------------------------

    def _read_rtp(self) -> None:
        stats = self.stats
        now = self._now()
        for _ in range(READ_BATCH):
            try:
                data, addr = self.rtp_sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP unreachable reported on a later read, etc.
                log.debug("RTP port %d: %s", self.port, exc)
                return
            if len(data) < 12 or data[0] >> 6 != 2:
                stats.junk += 1
                continue
            if self.rtp_latched:
                if addr != self.rtp_remote:
                    stats.foreign += 1
                    continue
            else:
                self.rtp_remote = addr
                self.rtp_latched = True
                if not self._rtcp_latched and not self._rtcp_named:
                    self.rtcp_remote = (addr[0], addr[1] + 1) + tuple(addr[2:])
            stats.rtp_received += 1
            stats.rtp_bytes_received += len(data)
            self.on_rtp(data, now)

    def _read_rtcp(self) -> None:
        now = self._now()
        for _ in range(READ_BATCH):
            try:
                data, addr = self.rtcp_sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("RTCP port %d: %s", self.port + 1, exc)
                return
            if len(data) < 8 or data[0] >> 6 != 2:
                self.stats.junk += 1
                continue
            if self._rtcp_latched and addr != self.rtcp_remote:
                self.stats.foreign += 1
                continue
            self.rtcp_remote = addr
            self._rtcp_latched = True
            self.stats.rtcp_received += 1
            self.on_rtcp(data, now)

    # -- sending -----------------------------------------------------------------------------------

    def send_rtp(self, data: bytes | bytearray) -> bool:
        if self.rtp_remote is None or self.closed:
            self.stats.send_dropped += 1
            return False
        try:
            self.rtp_sock.sendto(data, self.rtp_remote)
        except OSError:  # full (EAGAIN), or the peer's port unreachable
            self.stats.send_dropped += 1
            return False
        self.stats.rtp_sent += 1
        self.stats.rtp_bytes_sent += len(data)
        return True

    def send_rtcp(self, data: bytes) -> bool:
        if self.rtcp_remote is None or self.closed:
            return False
        try:
            self.rtcp_sock.sendto(data, self.rtcp_remote)
        except OSError:
            return False
        self.stats.rtcp_sent += 1
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.rtp_sock.fileno())
            self._loop.remove_reader(self.rtcp_sock.fileno())
        self.rtp_sock.close()
        self.rtcp_sock.close()
