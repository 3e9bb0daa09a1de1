"""RTSP output of every published stream: `rtsp://host:554/{name}` for VLC, ffmpeg and camera tools.

The protocol (parsing, limits, session states, SDP, authentication) is media.rtsp_protocol, which does
no I/O; this module is the asyncio adapter around it and the link to the routing core. Each track a
client sets up is a TrackSink on the stream's PublishedTrack, exactly like a WebRTC viewer's: the
routing core rewrites SSRC, sequence numbers and timestamps per client and calls the sink's send_rtp,
which writes either a datagram from the server's one RTP/RTCP socket pair (UDP) or a `$`-framed
interleaved packet on the client's connection (TCP). When the client's buffer is full the packet is
dropped and counted: a slow client never holds up the publisher or anyone else. The publisher's sender
reports reach the client translated onto its timeline (TrackSink.send_sender_report).

Authorization: optional RTSP Basic or Digest authentication (`rtsp.auth`, users from `rtsp.users`), then
the backend's playRTSP hook (application `rtsp.app_key`) on the stream name and the `token` query
parameter; a refusal is 403. A session that shows no sign of life (no request, no RTCP, no data on its
connection) for `rtsp.session_timeout` seconds ends; so do all clients of a stream when it is unpublished.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from media.reader import RtpReader
from media.rtsp_protocol.auth import Authenticator
from media.rtsp_protocol.parser import InterleavedFrame, ParseError, Request, RequestParser, response
from media.rtsp_protocol.sdp import SdpTrack, build_sdp
from media.rtsp_protocol.session import PUBLIC, RtspError, SessionMachine, SessionState, Target, parse_target
from media.rtsp_protocol.transport import Transport, UnsupportedTransport, parse_transport, transport_reply
from media.sfu import MediaCore
from media.stream import PublishedTrack, Stream, TrackSink

from .config import Config
from .streams import validate_name

log = logging.getLogger(__name__)

SERVED_CODECS = ("H264", "VP8", "opus")
MAX_UDP_BUFFERED = 4 << 20  # bytes queued on the shared UDP socket before packets are dropped
MAX_QUEUED_REQUESTS = 8  # pipelined requests read ahead before the connection stops being read
SPS_WAIT = 2.0  # seconds DESCRIBE waits for an H.264 stream's parameter sets (else SDP without them)
WATCH_INTERVAL = 0.5
LINGER = 2.0  # seconds an error-answered connection reads and drops what the client still sends


@dataclass
class RtspStats:
    connections: int = 0
    requests: int = 0
    refused: int = 0  # 401 and 403
    sessions: int = 0  # RTSP sessions made
    sent: int = 0  # packets of ended sessions (live ones are added in `snapshot`)
    dropped: int = 0


class MediaClient(RtpReader):
    """The media of one RTSP session: a TrackSink per set-up track, and how each reaches the client."""

    def __init__(self, state: SessionState, stream: Stream, rtcp: Any):
        super().__init__(stream, rtcp)
        self.state = state
        self.transports: dict[int, Transport] = {}  # by the stream's track index, as SETUP named it
        self.udp_peers: list[tuple[str, int]] = []
        self._by_index: dict[int, tuple[PublishedTrack, TrackSink]] = {}

    def set_track(self, index: int, track: PublishedTrack, sink: TrackSink, transport: Transport,
                  now: float) -> None:
        """The track SETUP named, with its sink; a SETUP of the same track again replaces the old one."""
        old = self._by_index.pop(index, None)
        if old is not None:
            old_track, old_sink = old
            old_track.detach(old_sink)
            old_sink.output.clear_route()
            self.sinks.remove(old)
        self._by_index[index] = (track, sink)
        self.transports[index] = transport
        self.add_sink(track, sink, now)

    def has_rtcp_channel(self, channel: int) -> bool:
        return any(t.interleaved is not None and t.interleaved[1] == channel for t in self.transports.values())

    def channels(self) -> set[int]:
        return {ch for t in self.transports.values() if t.interleaved for ch in t.interleaved}


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]):
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # selector datagram transports are not subclasses

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("RTSP UDP: %s", exc)  # ICMP port unreachable of a client gone: its session times out

    def send(self, data: bytes, addr: tuple[str, int]) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing() or _buffered(transport) > MAX_UDP_BUFFERED:
            return False
        transport.sendto(data, addr)
        return True


def _buffered(transport: asyncio.BaseTransport) -> int:
    # Selector datagram transports have it (they queue on EAGAIN); the base class does not declare it.
    size = getattr(transport, "get_write_buffer_size", None)
    return int(size()) if size is not None else 0


# The server's viewer authorization (Server.authorize_viewer): app key, method, provider, peer, name,
# token, and fields added to the hook's body.
AuthorizeViewer = Callable[[str, str, str, str, str, str, dict[str, Any]], Awaitable[bool]]


class RtspService:
    """`published(name)`: the stream published as `name`, if any; `authorize_viewer`: the backend's word
    on a viewer without a WebSocket session (the playRTSP hook); `media`: the core's modules and clock."""

    def __init__(self, config: Config, media: MediaCore, published: Callable[[str], Stream | None],
                 authorize_viewer: AuthorizeViewer):
        self.media = media
        self.published = published
        self._authorize_viewer = authorize_viewer
        self.session_timeout = float(config["rtsp.session_timeout"])
        # A client's connection holds at most this much in our buffer, and the kernel's send buffer is kept
        # to the same size: beyond it packets are dropped rather than queued as seconds of latency.
        self.tcp_buffer = int(config["rtsp.tcp_buffer"])
        self.app_key = str(config["rtsp.app_key"])
        self.udp_port = int(config["rtsp.udp_port"])
        mode = config["rtsp.auth"]
        self.auth = Authenticator(mode, dict(config["rtsp.users"])) if mode != "none" else None
        self.connections: set[RtspConnection] = set()
        self.stats = RtspStats()
        self._server: asyncio.base_events.Server | None = None
        self._rtp: UdpEndpoint | None = None
        self._rtcp: UdpEndpoint | None = None
        self.server_ports: tuple[int, int] = (0, 0)
        self._udp_clients: dict[tuple[str, int], tuple[RtspConnection, MediaClient]] = {}
        self._watch: asyncio.Task[None] | None = None

    # -- life cycle --------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._rtp, self._rtcp = await self._open_udp(host)
        self._server = await loop.create_server(lambda: RtspConnection(self), host, port, backlog=256)
        self._watch = loop.create_task(self._watch_sessions())
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("RTSP on port %d (RTP/RTCP over UDP on %d-%d)", bound, *self.server_ports)
        return bound

    async def _open_udp(self, host: str) -> tuple[UdpEndpoint, UdpEndpoint]:
        """The RTP socket on an even port and RTCP on the next (RFC 3550 section 11)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _attempt in range(50):
            rtp_sock = socket.socket(family, socket.SOCK_DGRAM)
            rtcp_sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtp_sock.bind((host, self.udp_port))
                rtp_port = rtp_sock.getsockname()[1]
                if rtp_port % 2 and not self.udp_port:
                    raise OSError("odd port")
                rtcp_sock.bind((host, rtp_port + 1))
            except OSError:
                rtp_sock.close()
                rtcp_sock.close()
                if self.udp_port:
                    raise
                continue
            # Every UDP client's copy of a packet leaves this one socket in a single sendmmsg: room for
            # a keyframe's burst to hundreds of clients (the kernel caps it at net.core.wmem_max).
            rtp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_UDP_BUFFERED)
            _t, rtp = await loop.create_datagram_endpoint(lambda: UdpEndpoint(self._on_udp), sock=rtp_sock)
            _t, rtcp = await loop.create_datagram_endpoint(lambda: UdpEndpoint(self._on_udp), sock=rtcp_sock)
            self.server_ports = (rtp_port, rtp_port + 1)
            return rtp, rtcp
        raise OSError("no free pair of UDP ports for RTSP")

    async def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close()
        for endpoint in (self._rtp, self._rtcp):
            if endpoint is not None and endpoint.transport is not None:
                endpoint.transport.close()

    async def _watch_sessions(self) -> None:
        """Silent sessions end; the clients of an unpublished stream are disconnected."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now = self.media.now()
            for connection in list(self.connections):
                connection.check(now)

    # -- UDP -------------------------------------------------------------------------------------

    def _on_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        """Receiver reports (and NAT keep-alives) from UDP clients prove they are still there."""
        found = self._udp_clients.get((addr[0], addr[1]))
        if found is not None:
            now = found[1].state.last_activity = self.media.now()
            if len(data) >= 8 and 192 <= data[1] <= 223:  # RTCP (RFC 5761 4), not a NAT keep-alive
                found[1].on_rtcp(data, now)

    def rtp_socket(self) -> socket.socket | None:
        transport = self._rtp.transport if self._rtp is not None else None
        return transport.get_extra_info("socket") if transport is not None and not transport.is_closing() else None

    def udp_sender(self, addr: tuple[str, int], rtcp: bool) -> Callable[[bytes], bool]:
        endpoint = self._rtcp if rtcp else self._rtp
        assert endpoint is not None

        def send(data: bytes) -> bool:
            return endpoint.send(data, addr)

        return send

    def register_udp(self, connection: RtspConnection, client: MediaClient, addrs: list[tuple[str, int]]) -> None:
        for addr in addrs:
            self._udp_clients[addr] = (connection, client)
            client.udp_peers.append(addr)

    def forget(self, client: MediaClient) -> None:
        for addr in client.udp_peers:
            if self._udp_clients.get(addr, (None, None))[1] is client:
                del self._udp_clients[addr]
        totals = client.totals()
        self.stats.sent += totals.sent
        self.stats.dropped += totals.dropped

    # -- authorization -----------------------------------------------------------------------------

    async def authorized(self, peer: str, name: str, token: str, url: str = "", user_agent: str = "") -> bool:
        """The playRTSP hook; its body also carries the request's `rtspUrl` and the player's
        `User-Agent` (and `userAgent`, as later WCS builds name it)."""
        extra = {"rtspUrl": url, "User-Agent": user_agent, "userAgent": user_agent}
        return await self._authorize_viewer(self.app_key, "playRTSP", "RTSP", peer, name, token, extra)

    # -- introspection -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        clients = [c for conn in self.connections for c in conn.clients.values()]
        live = [c.totals() for c in clients]
        return {
            "connections": len(self.connections),
            "clients": len(clients),
            "playing": sum(1 for c in clients if c.attached),
            "sent": self.stats.sent + sum(t.sent for t in live),
            "dropped": self.stats.dropped + sum(t.dropped for t in live),
            "requests": self.stats.requests,
            "refused": self.stats.refused,
            "udpPorts": list(self.server_ports),
            # per set-up track, how the native fan-out reaches the client ("tcp", "udp")
            "routes": dict(collections.Counter(sink.output.route for c in clients for _t, sink in c.sinks)),
        }


class RtspConnection(asyncio.Protocol):
    """One client connection: requests are answered one at a time, in order; interleaved frames from
    the client (its RTCP) are taken as they come."""

    def __init__(self, service: RtspService):
        self.service = service
        self.parser = RequestParser()
        self.machine = SessionMachine(service.session_timeout)
        self.clients: dict[str, MediaClient] = {}
        self.transport: asyncio.Transport | None = None
        self.peer = "unknown"
        self.id = secrets.token_hex(8)
        self._queue: asyncio.Queue[Request | ParseError] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._paused = False
        self._authorized: set[str] = set()  # stream names the backend allowed
        self._blocked = False  # asyncio holds unsent bytes of this connection
        self._discarding = False  # an error was answered: the connection is closing
        self.last_data = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.service.tcp_buffer)
        # pause_writing as soon as asyncio holds any byte: the native fan-out writes to the socket only
        # while nothing waits before it.
        transport.set_write_buffer_limits(high=0)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "unknown"
        self.service.connections.add(self)
        self.service.stats.connections += 1
        self.last_data = self.service.media.now()
        self._worker = asyncio.get_running_loop().create_task(self._work())

    def data_received(self, data: bytes) -> None:
        if self._discarding:  # answered with an error and closing: the rest is not read
            return
        now = self.last_data = self.service.media.now()
        for session in self.machine.sessions.values():
            session.last_activity = now  # any data on the connection: the client is alive
        for event in self.parser.feed(data):
            if isinstance(event, InterleavedFrame):  # the client's RTCP: liveness, counted above
                for client in self.clients.values():
                    if client.has_rtcp_channel(event.channel):
                        client.on_rtcp(event.data, now)
                continue
            if isinstance(event, Request | ParseError):  # a RequestParser makes no Response
                self._queue.put_nowait(event)
        if self._queue.qsize() >= MAX_QUEUED_REQUESTS and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.service.connections.discard(self)
        if self._worker is not None:
            self._worker.cancel()
        for client in list(self.clients.values()):
            self._end_client(client)
        self.machine.sessions.clear()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _close_after_answer(self) -> None:
        """Close after an error answer without losing it: the answer goes out followed by our FIN, and what
        the client is still sending (the rest of a huge header) is read and thrown away until it closes
        too, for at most LINGER seconds. Closing a socket with unread input makes the kernel send a reset,
        which can destroy the answer before the client has read it."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._discarding = True
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        if self._paused:
            self._paused = False
            transport.resume_reading()
        asyncio.get_running_loop().call_later(LINGER, self.close)

    # -- liveness ----------------------------------------------------------------------------------

    def check(self, now: float) -> None:
        for state in self.machine.expired(now):
            log.info("RTSP session %s of %r ends: nothing from the client for %g s", state.id, state.name,
                     self.machine.timeout)
            client = self.clients.get(state.id)
            if client is not None:
                self._end_client(client)
            if not self.machine.sessions:
                self.close()
        if not self.machine.sessions and now - self.last_data > self.machine.timeout:
            self.close()  # a connection that set nothing up and says nothing holds no resources for long

    def _stream_ended(self, stream: Stream) -> None:
        if any(client.stream is stream for client in self.clients.values()):
            log.info("RTSP connection from %s closes: its stream was unpublished", self.peer)
            self.close()

    def _end_client(self, client: MediaClient) -> None:
        client.detach()
        client.stream.remove_end_listener(self._stream_ended)
        client.close_routes()
        self.clients.pop(client.state.id, None)
        self.service.forget(client)

    # -- requests ----------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            if self._paused and self._queue.qsize() < MAX_QUEUED_REQUESTS // 2 and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            if isinstance(event, ParseError):
                log.info("RTSP connection from %s: %s (%d)", self.peer, event.reason, event.status)
                self._send(response(event.status, event.cseq, [("Content-Type", "text/plain")],
                                    f"{event.reason}\n".encode()))
                self._close_after_answer()
                return
            self.service.stats.requests += 1
            try:
                answer = await self._handle(event)
            except RtspError as exc:
                answer = response(exc.status, event.cseq, [("Content-Type", "text/plain")], f"{exc.reason}\n".encode())
            except Exception:
                log.exception("RTSP %s %s failed", event.method, event.uri)
                answer = response(500, event.cseq)
            self._send(answer)

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def _handle(self, request: Request) -> bytes:
        cseq = request.cseq
        if cseq is None:
            raise RtspError(400, "CSeq is missing or not a number")
        now = self.service.media.now()
        method = request.method
        if method == "OPTIONS":
            self.machine.find(request, now, required=False, method=method)
            return response(200, cseq, [("Public", PUBLIC)])
        if method in ("ANNOUNCE", "RECORD", "REDIRECT"):
            return response(405, cseq, [("Allow", PUBLIC)])
        if method not in PUBLIC.split(", "):
            return response(501, cseq, [("Public", PUBLIC)])
        auth = self.service.auth
        if auth is not None and auth.check(request.header("Authorization"), method, self.id) is None:
            self.service.stats.refused += 1
            return response(401, cseq, [("WWW-Authenticate", auth.challenge(self.id))])
        if method == "DESCRIBE":
            return await self._describe(request, cseq)
        if method == "SETUP":
            return await self._setup(request, cseq, now)
        if method == "PLAY":
            target = parse_target(request.uri)
            state = self.machine.play(request, target, now)
            client = self.clients[state.id]
            if client.stream.closed:
                raise RtspError(404, "the stream is no longer published")
            client.attach(now)
            return response(200, cseq, [("Session", self.machine.session_header(state)), ("Range", "npt=now-")])
        if method == "PAUSE":
            state = self.machine.pause(request, now)
            self.clients[state.id].detach()
            return response(200, cseq, [("Session", self.machine.session_header(state))])
        if method == "TEARDOWN":
            state = self.machine.teardown(request, now)
            ended = self.clients.get(state.id)
            if ended is not None:
                self._end_client(ended)
            return response(200, cseq)
        # GET_PARAMETER and SET_PARAMETER: keep-alives.
        state_or_none = self.machine.find(request, now, required=False, method=method)
        headers = [("Session", self.machine.session_header(state_or_none))] if state_or_none else []
        if method == "SET_PARAMETER" and request.body.strip():
            return response(451, cseq, headers)
        return response(200, cseq, headers)

    async def _stream_for(self, request: Request) -> tuple[Stream, Target]:
        """The published stream a request's URI names, once the backend allowed this client to play it."""
        uri = request.uri
        target = parse_target(uri)
        if target is None or validate_name(target.name) is not None:
            raise RtspError(404, "no such stream")
        stream = self.service.published(target.name)
        if stream is None:
            raise RtspError(404, "no such stream")
        # Players build SETUP URLs from Content-Base, which drops the query: a stream allowed once on
        # this connection (DESCRIBE with the token) stays allowed on it.
        if target.name not in self._authorized:
            token = target.query.get("token", "")[:1024]
            user_agent = (request.header("User-Agent") or "")[:512]
            if not await self.service.authorized(self.peer, target.name, token, uri[:2048], user_agent):
                self.service.stats.refused += 1
                raise RtspError(403, "refused by the backend")
            self._authorized.add(target.name)
            stream = self.service.published(target.name)  # the hook took time
            if stream is None:
                raise RtspError(404, "no such stream")
        return stream, target

    async def _describe(self, request: Request, cseq: str) -> bytes:
        stream, target = await self._stream_for(request)
        if target.track is not None:
            raise RtspError(404, "DESCRIBE names a stream, not a track")
        media = self.service.media
        for track in stream.tracks:
            if track.codec.name == "H264":
                await _wait_parameter_sets(track, media.now)
        tracks = []
        for track in stream.tracks:
            if track.codec.name not in SERVED_CODECS:
                continue
            params = track.codec.parameters
            tracks.append(SdpTrack(track.kind, track.codec.name, track.codec.payload_type, track.codec.clock_rate,
                                   sps=getattr(track.ingest, "sps", None), pps=getattr(track.ingest, "pps", None),
                                   profile_level_id=params.get("profile-level-id"),
                                   packetization_mode=int(params.get("packetization-mode", 1) or 1)))
        local = self.transport.get_extra_info("sockname") if self.transport is not None else None
        address = local[0] if local else "0.0.0.0"
        sdp = build_sdp(stream.name, tracks, int(time.time()), address).encode()
        base = request.uri.split("?", 1)[0].rstrip("/") + "/"
        return response(200, cseq, [("Content-Base", base), ("Content-Type", "application/sdp")], sdp)

    async def _setup(self, request: Request, cseq: str, now: float) -> bytes:
        stream, target = await self._stream_for(request)
        track_index = target.track
        served = [t for t in stream.tracks if t.codec.name in SERVED_CODECS]
        if track_index is None or track_index >= len(served):
            raise RtspError(404, "no such track: SETUP names rtsp://host/{name}/trackID=N from DESCRIBE")
        header = request.header("Transport")
        if header is None:
            raise RtspError(461, "a Transport header is required")
        try:
            transport = parse_transport(header)
        except UnsupportedTransport as exc:
            raise RtspError(461, str(exc)) from None
        existing = self.clients.get(request.session_id or "")
        if existing is not None and existing.stream is not stream:
            raise RtspError(454, "the session's stream was published again: start a new session")
        used = {ch for c in self.clients.values() for ch in c.channels()}
        state, transport = self.machine.setup(request, target, transport, now, used)
        client = self.clients.get(state.id)
        if client is None:
            client = self.clients[state.id] = MediaClient(state, stream, self.service.media.rtcp)
            self.service.stats.sessions += 1
            stream.on_end(self._stream_ended)
        track = served[track_index]
        ssrc = secrets.randbits(32) or 1
        if transport.tcp:
            assert transport.interleaved is not None
            send_rtp = self._interleaved_sender(transport.interleaved[0])
            send_rtcp = self._interleaved_sender(transport.interleaved[1])
            server_ports = None
        else:
            assert transport.client_ports is not None
            rtp_addr = (self.peer, transport.client_ports[0])
            rtcp_addr = (self.peer, transport.client_ports[1])
            send_rtp = self.service.udp_sender(rtp_addr, rtcp=False)
            send_rtcp = self.service.udp_sender(rtcp_addr, rtcp=True)
            self.service.register_udp(self, client, [rtp_addr, rtcp_addr])
            server_ports = self.service.server_ports
        sink = TrackSink(self.service.media.rtp, ssrc, track.codec.payload_type, track.codec.clock_rate,
                         video=track.kind == "video", send_rtp=send_rtp, send_rtcp=send_rtcp)
        self._route(sink, transport)
        client.set_track(track_index, track, sink, transport, now)
        return response(200, cseq, [("Transport", transport_reply(transport, ssrc, server_ports)),
                                    ("Session", self.machine.session_header(state))])

    def _route(self, sink: TrackSink, transport: Transport) -> None:
        """The native fan-out writes this client's packets itself: interleaved frames on the connection's
        socket (while asyncio's buffer for it is empty: see pause_writing), or datagrams from the
        server's RTP socket."""
        if transport.tcp:
            sock = self.transport.get_extra_info("socket") if self.transport is not None else None
            if sock is None or transport.interleaved is None:
                return
            sink.output.use_tcp(sock.fileno(), transport.interleaved[0], sink.send_rtp, self._write_raw)
            sink.output.set_blocked(self._blocked)
        else:
            sock = self.service.rtp_socket()
            if sock is None or transport.client_ports is None:
                return
            sink.output.use_udp(sock.fileno(), sock.family, (self.peer, transport.client_ports[0]))

    def _write_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _outputs(self) -> list[Any]:
        return [sink.output for client in self.clients.values() for _t, sink in client.sinks]

    def pause_writing(self) -> None:
        """asyncio holds bytes for this connection (its limit is 0: any): frames go through it, in order,
        until it is empty again."""
        self._blocked = True
        for output in self._outputs():
            output.set_blocked(True)

    def resume_writing(self) -> None:
        self._blocked = False
        for output in self._outputs():
            output.set_blocked(False)

    def _interleaved_sender(self, channel: int) -> Callable[[bytes], bool]:
        prefix = struct.pack("!BB", 0x24, channel)

        limit = self.service.tcp_buffer

        def send(data: bytes) -> bool:
            transport = self.transport
            if transport is None or transport.is_closing() or transport.get_write_buffer_size() > limit:
                return False
            transport.write(prefix + len(data).to_bytes(2, "big") + data)
            return True

        return send


async def _wait_parameter_sets(track: PublishedTrack, now: Callable[[], float]) -> None:
    """An H.264 stream's SPS and PPS for sprop-parameter-sets: asked for with a keyframe request when
    not known yet, waited for briefly (players take them in-band otherwise)."""
    deadline = time.monotonic() + SPS_WAIT
    while track.ingest.sps is None or track.ingest.pps is None:
        if time.monotonic() > deadline:
            return
        track.request_keyframe(now())
        await asyncio.sleep(0.05)

