"""Counting RTSP clients, many per worker process (asyncio), and the worker itself.

A client does what a player does up to PLAY (DESCRIBE, SETUP of every track over TCP interleaved or UDP,
PLAY), then only counts: per track, the RTP packets received and the highest extended sequence number,
so that expected - (received - stale) is the loss (stale: not newer than the newest, i.e. duplicates
or late), and how far the video's RTP timestamps went (media seconds
received per second: under 1 when a server falls behind without losing anything). Nothing is decoded.
It keeps its session alive as players do: an RTCP receiver report every few seconds (interleaved or from
its RTCP port) and an OPTIONS with its Session now and then. Requests are built with media.rtsp_client
and their answers parsed with media.rtsp_protocol.ResponseParser; interleaved frames are split here, in
one pass over the buffer.

The worker is driven over a multiprocessing pipe, one command at a time (a dict in, a dict out):
- clients {url, count, tcp, concurrency, timeout} -> {joins_ms, errors}: `count` more clients;
- snapshot -> {at, clients: {index: (expected, received, video seconds, stale)}}: every client's totals;
- close -> {}: every client leaves (TEARDOWN, then the connection closes);
- exit.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import socket
import struct
import time
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from benchmarks.fanout.children import serve
from media.rtsp_client import build_request, parse_sdp, parse_session, parse_transport_reply
from media.rtsp_protocol.parser import Response, ResponseParser

RTCP_INTERVAL = 5.0  # seconds between receiver reports
KEEPALIVE_INTERVAL = 20.0  # seconds between OPTIONS keep-alives (servers' session timeouts are 60 s)
UDP_RCVBUF = 2 << 20  # receive buffer of each client RTP socket (forced: the worker runs as root)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length[ \t]*:[ \t]*(\d{1,9})")


class Counter:
    """One track's RTP: packets received, first and highest extended sequence number, and the RTP
    timestamp of the newest packet (extended), which tells how much media time arrived."""

    __slots__ = ("first", "ext", "received", "stale", "ts_first", "ts")

    def __init__(self) -> None:
        self.first = -1
        self.ext = -1
        self.received = 0
        self.stale = 0  # packets not newer than the newest one: duplicates, or late (reordered)
        self.ts_first = 0
        self.ts = 0

    def packet(self, seq: int, ts: int) -> None:
        self.received += 1
        ext = self.ext
        if ext < 0:
            self.first = self.ext = seq
            self.ts_first = self.ts = ts
            return
        delta = (seq - ext) & 0xFFFF
        if 0 < delta < 0x8000:
            self.ext = ext + delta  # newer (a gap is delta > 1); older or duplicate packets leave it
            step = (ts - self.ts) & 0xFFFFFFFF
            if step < 0x80000000:
                self.ts += step
        else:
            self.stale += 1

    def expected(self) -> int:
        return self.ext - self.first + 1 if self.ext >= 0 else 0

    def media_ticks(self) -> int:
        return self.ts - self.ts_first


def receiver_report(ssrc: int) -> bytes:
    """An RTCP RR without report blocks (RFC 3550 section 6.4.2): enough to say the client is there."""
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self, counter: Counter | None):
        self.counter = counter
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.counter is not None and len(data) >= 12:
            self.counter.packet((data[2] << 8) | data[3], int.from_bytes(data[4:8], "big"))


def _port_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on an even port and the next (RTP, RTCP)."""
    for _attempt in range(100):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtp.bind((host, 0))
            port = rtp.getsockname()[1]
            if port % 2:
                raise OSError("odd port")
            rtcp.bind((host, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        try:
            rtp.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, UDP_RCVBUF)
        except OSError:
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        return rtp, rtcp
    raise OSError("no free even/odd UDP port pair")


class RtspClient(asyncio.Protocol):
    def __init__(self, index: int, url: str, tcp: bool):
        self.index = index
        self.url = url
        self.tcp = tcp
        self.counters: list[Counter] = []
        self.video: tuple[Counter, int] | None = None  # the first video track's counter and clock rate
        self.error: str | None = None
        self.join_ms: float | None = None
        self.first_packet_ms: float | None = None
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._channels: list[Counter | None] = [None] * 256
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._cseq = 0
        self._session: str | None = None
        self._udp: list[tuple[asyncio.DatagramTransport, asyncio.DatagramTransport, tuple[str, int] | None]] = []
        self._rtcp_channels: list[int] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ssrc = (os.getpid() << 12 ^ index ^ 0x5A5A0000) & 0xFFFFFFFF or 1
        self._closed = False

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, UDP_RCVBUF)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        n = len(buf)
        pos = 0
        channels = self._channels
        while pos < n:
            if buf[pos] == 0x24:  # '$': an interleaved frame
                if n - pos < 4:
                    break
                end = pos + 4 + ((buf[pos + 2] << 8) | buf[pos + 3])
                if end > n:
                    break
                counter = channels[buf[pos + 1]]
                if counter is not None and end - pos >= 16:
                    counter.packet((buf[pos + 6] << 8) | buf[pos + 7], int.from_bytes(buf[pos + 8:pos + 12], "big"))
                pos = end
                continue
            head_end = buf.find(b"\r\n\r\n", pos)
            if head_end < 0:
                break
            match = _CONTENT_LENGTH.search(buf, pos, head_end + 2)
            end = head_end + 4 + (int(match.group(1)) if match else 0)
            if end > n:
                break
            for event in ResponseParser().feed(bytes(buf[pos:end])):
                if isinstance(event, Response):
                    future = self._pending.pop(event.cseq or "", None)
                    if future is not None and not future.done():
                        future.set_result(event)
                else:
                    self._fail(f"unexpected answer from the server: {event}")
            pos = end
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost ({exc})" if exc else "the server closed the connection")

    def _fail(self, why: str) -> None:
        if not self._closed and self.error is None and self.join_ms is None:
            self.error = why
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(why))
        self._pending.clear()

    # -- requests ---------------------------------------------------------------------------------

    async def request(self, method: str, uri: str, headers: list[tuple[str, str]] | None = None) -> Response:
        assert self.transport is not None
        self._cseq += 1
        all_headers = list(headers or [])
        if self._session is not None:
            all_headers.append(("Session", self._session))
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[str(self._cseq)] = future
        self.transport.write(build_request(method, uri, self._cseq, all_headers))
        answer = await future
        if answer.status != 200:
            raise RuntimeError(f"{method} answered {answer.status} {answer.reason}")
        return answer

    async def play(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 554
        await loop.create_connection(lambda: self, host, port)
        described = await self.request("DESCRIBE", self.url, [("Accept", "application/sdp")])
        base = described.header("Content-Base") or self.url
        tracks = parse_sdp(described.body.decode("utf-8", "replace"), base)
        if not tracks:
            raise RuntimeError("DESCRIBE: no audio or video track")
        for i, track in enumerate(tracks):
            counter = Counter()
            self.counters.append(counter)
            if track.kind == "video" and self.video is None:
                self.video = (counter, track.clock_rate or 90000)
            if self.tcp:
                transport = f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}"
                rtp_sock = rtcp_sock = None
            else:
                rtp_sock, rtcp_sock = _port_pair(host)
                ports = rtp_sock.getsockname()[1]
                transport = f"RTP/AVP;unicast;client_port={ports}-{ports + 1}"
            try:
                answer = await self.request("SETUP", track.control, [("Transport", transport)])
            except BaseException:
                for sock in (rtp_sock, rtcp_sock):
                    if sock is not None:
                        sock.close()
                raise
            if self._session is None:
                session = answer.header("Session")
                if session is None:
                    raise RuntimeError("SETUP answered without a Session")
                self._session = parse_session(session)[0]
            reply = parse_transport_reply(answer.header("Transport") or "")
            if self.tcp:
                if reply.interleaved is None:
                    raise RuntimeError("SETUP over TCP answered without interleaved channels")
                self._channels[reply.interleaved[0]] = counter
                self._rtcp_channels.append(reply.interleaved[1])
            else:
                assert rtp_sock is not None and rtcp_sock is not None
                rtp_t, _ = await loop.create_datagram_endpoint(functools.partial(_Rtp, counter), sock=rtp_sock)
                rtcp_t, _ = await loop.create_datagram_endpoint(functools.partial(_Rtp, None), sock=rtcp_sock)
                server_rtcp = (host, reply.server_ports[1]) if reply.server_ports else None
                self._udp.append((rtp_t, rtcp_t, server_rtcp))
        await self.request("PLAY", base, [("Range", "npt=0.000-")])
        self.join_ms = (time.monotonic() - started) * 1000
        self._tasks = [loop.create_task(self._keep_alive())]

    async def _keep_alive(self) -> None:
        last_options = time.monotonic()
        while True:
            await asyncio.sleep(RTCP_INTERVAL)
            report = receiver_report(self._ssrc)
            if self.transport is None or self.transport.is_closing():
                return
            for channel in self._rtcp_channels:
                self.transport.write(struct.pack("!BBH", 0x24, channel, len(report)) + report)
            for _rtp, rtcp, server in self._udp:
                if server is not None:
                    rtcp.sendto(report, server)
            if time.monotonic() - last_options >= KEEPALIVE_INTERVAL:
                last_options = time.monotonic()
                self._cseq += 1
                headers = [("Session", self._session)] if self._session else []
                self.transport.write(build_request("OPTIONS", self.url, self._cseq, headers))

    def totals(self) -> tuple[int, int, float, int]:
        """(packets expected, packets received, seconds of video received, stale packets received)."""
        media = self.video[0].media_ticks() / self.video[1] if self.video is not None else 0.0
        return (sum(c.expected() for c in self.counters), sum(c.received for c in self.counters), media,
                sum(c.stale for c in self.counters))

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self.transport is not None and not self.transport.is_closing() and self._session is not None:
            try:
                await asyncio.wait_for(self.request("TEARDOWN", self.url), 2.0)
            except Exception:
                pass
        if self.transport is not None:
            self.transport.close()
        for rtp, rtcp, _server in self._udp:
            rtp.close()
            rtcp.close()
        self._udp = []


# -- the worker process ----------------------------------------------------------------------------------


def main(conn: Connection, name: str, nice: int = 0) -> None:
    """Entry point of a worker process; `nice` lowers its priority below the servers'."""
    if nice:
        os.nice(nice)
    asyncio.run(Worker(conn).run())


class Worker:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.clients: list[RtspClient] = []
        self._next_index = 0

    async def run(self) -> None:
        await serve(self.conn, self)

    async def op_clients(self, url: str, count: int, tcp: bool, concurrency: int, timeout: float) -> dict[str, Any]:
        limit = asyncio.Semaphore(concurrency)
        added = [RtspClient(self._next_index + i, url, tcp) for i in range(count)]
        self._next_index += count
        self.clients += added

        async def join(client: RtspClient) -> None:
            async with limit:
                try:
                    await asyncio.wait_for(client.play(), timeout)
                except Exception as exc:
                    client.error = client.error or f"{type(exc).__name__}: {exc}"
                    client.join_ms = None
                    await client.close()  # a client that gave up leaves: no half-set-up session lingers

        await asyncio.gather(*(join(c) for c in added))
        return {"joins_ms": [c.join_ms for c in added if c.error is None and c.join_ms is not None],
                "errors": [c.error for c in added if c.error is not None]}

    async def op_snapshot(self) -> dict[str, Any]:
        return {"at": time.monotonic(),
                "clients": {c.index: c.totals() for c in self.clients if c.error is None and c.join_ms is not None},
                "lost_connections": sum(1 for c in self.clients if c.join_ms is not None and c.transport is not None
                                        and c.transport.is_closing() and not c._closed)}

    async def op_close(self) -> dict[str, Any]:
        clients, self.clients = self.clients, []
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        return {}
