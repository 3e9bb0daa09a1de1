"""RTSP pull: a camera's rtsp:// URL published inside the server as a stream.

A client's playStream whose name is an rtsp:// URL, or REST /rest-api/rtsp/startup, makes the server
pull that URL: OPTIONS, DESCRIBE, SETUP per track (TCP interleaved by default, UDP as option, with the
URL's user and password for Basic or Digest), PLAY, then keep-alives. The camera's RTP goes into the
routing core like a WebRTC publisher's (PublishedTrack.on_rtp), so the stream plays over WebRTC, HLS and
RTSP, through the transcoder where a viewer needs it, and can be recorded.

One pull per URL, shared by all its viewers. A pull started by playStream stops when its last viewer
leaves (unless `rtsp.pull_keep`); one started over REST runs until /rest-api/rtsp/terminate. When the
camera drops (connection lost, no media for `rtsp.pull_timeout` seconds) the pull reconnects with
exponential backoff, up to `rtsp.pull_retry_max` seconds apart, and viewers stay: the routing core
splices the new source in (RtpRewriter keeps their sequence numbers and timestamps continuous).

The protocol (URLs, requests, responses, SDP, Transport, authentication) is media.rtsp_client, with no
I/O; this module moves the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.rtsp_client import (
    Credentials,
    RemoteTrack,
    RtspUrl,
    RtspUrlError,
    build_request,
    parse_rtsp_url,
    parse_sdp,
    parse_session,
    parse_transport_reply,
    sprop_parameter_sets,
)
from media.rtsp_protocol.parser import InterleavedFrame, ParseError, Response, ResponseParser
from media.sfu import receiver_report
from media.stream import Codec, PublishedTrack, Stream, StreamNameInUse

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger(__name__)

# Status info strings of the WebSDK (constants.js STREAM_STATUS_INFO).
WRONG_FORMAT = "Rtsp has wrong format"
CONNECT_FAILED = "Failed to connect to rtsp stream"
STREAM_NOT_FOUND = "Rtsp stream not found"
NO_COMMON_CODECS = "No common codecs"
TERMINATED = "Stopped by rest /terminate"
SHUTDOWN = "RtspAgent shutdown"

PULLED_CODECS = ("H264", "VP8", "opus")  # what the routing core forwards as it is
REQUEST_TIMEOUT = 10.0
REPORT_INTERVAL = 5.0  # receiver reports to the camera
DEFAULT_SESSION_TIMEOUT = 60.0
MAX_BACKOFF_START = 1.0


class PullFailed(Exception):
    def __init__(self, info: str, detail: str):
        super().__init__(f"{info}: {detail}")
        self.info = info  # what the client sees
        self.detail = detail  # why, for the log and the REST API


def is_rtsp_url(name: str) -> bool:
    return isinstance(name, str) and name[:7].lower() == "rtsp://"


def masked(text: str) -> str:
    """An rtsp:// URL with its password replaced by ***, for listings and logs."""
    try:
        url = parse_rtsp_url(text)
    except RtspUrlError:
        return text[:128]
    if url.password is None:
        return text
    scheme, _, rest = text.partition("://")
    userinfo, _, tail = rest.partition("@")
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{tail}"


def codec_for(track: RemoteTrack) -> Codec:
    """The routing core's codec of a camera track, with the aiortc codec WebRTC viewers negotiate."""
    parameters: dict[str, Any] = {}
    if track.codec == "H264":
        sps, _pps = sprop_parameter_sets(track.fmtp)
        profile = track.fmtp.get("profile-level-id") or (sps[1:4].hex() if sps is not None and len(sps) >= 4 else None)
        parameters = {"level-asymmetry-allowed": "1", "packetization-mode": track.fmtp.get("packetization-mode", "1"),
                      "profile-level-id": (profile or "42e01f").lower()}
    channels = 2 if track.codec == "opus" else None
    native = RTCRtpCodecParameters(mimeType=f"{track.kind}/{track.codec}", clockRate=track.clock_rate,
                                   channels=channels, payloadType=track.payload_type, parameters=parameters)
    return Codec(track.kind, track.codec, track.clock_rate, track.payload_type, parameters, native=native)


# --- one RTSP session with the camera -------------------------------------------------------------------


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]):
        self.on_datagram = on_datagram
        self.transport: Any = None  # the loop's datagram transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)


def _same(endpoint: _Datagrams) -> _Datagrams:
    return endpoint


class CameraConnection(asyncio.Protocol):
    """The control connection to the camera, its requests and the media it carries (interleaved) or
    that arrives on our UDP ports. Media goes to `on_rtp(channel_index, data)` / `on_rtcp(index, data)`,
    where index is the position of the track in `setup()`'s list."""

    def __init__(self, url: RtspUrl, on_rtp: Callable[[int, bytes], None], on_rtcp: Callable[[int, bytes], None]):
        self.url = url
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.credentials = Credentials(url.username, url.password)
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._cseq = 0
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._channels: dict[int, tuple[int, bool]] = {}  # interleaved channel -> (track index, is RTCP)
        self._udp: list[tuple[_Datagrams, _Datagrams, tuple[str, int] | None]] = []
        self.session: str | None = None
        self.session_timeout = DEFAULT_SESSION_TIMEOUT
        self.public: set[str] = set()
        self.peer_host: str | None = None
        self.base = url.uri

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer_host = peer[0] if peer else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    def data_received(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            if isinstance(event, InterleavedFrame):
                found = self._channels.get(event.channel)
                if found is not None:
                    (self.on_rtcp if found[1] else self.on_rtp)(found[0], event.data)
            elif isinstance(event, Response):
                future = self._pending.pop(event.cseq or "", None)
                if future is not None and not future.done():
                    future.set_result(event)
            elif isinstance(event, ParseError):
                self._lose(f"the camera sent something that is not RTSP ({event.reason})")

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(f"connection lost ({exc})" if exc else "the camera closed the connection")

    def _lose(self, why: str) -> None:
        if not self.closed.done():
            self.closed.set_result(why)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(why))
        self._pending.clear()
        if self.transport is not None:
            self.transport.close()

    # -- requests ----------------------------------------------------------------------------------

    async def request(self, method: str, uri: str | None = None,
                      headers: list[tuple[str, str]] | None = None) -> Response:
        """Send a request and wait for its answer; a 401 is answered once with the URL's credentials."""
        uri = uri or self.url.uri
        for _attempt in range(3):
            all_headers = list(headers or [])
            if self.session is not None:
                all_headers.append(("Session", self.session))
            authorization = self.credentials.authorization(method, uri)
            if authorization is not None:
                all_headers.append(("Authorization", authorization))
            response = await self._exchange(method, uri, all_headers)
            if response.status != 401:
                return response
            challenges = [v for k, v in response.headers if k.lower() == "www-authenticate"]
            if not self.credentials.challenge(challenges):
                return response
        return response

    async def _exchange(self, method: str, uri: str, headers: list[tuple[str, str]]) -> Response:
        if self.transport is None or self.transport.is_closing() or self.closed.done():
            raise ConnectionError("not connected")
        self._cseq += 1
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[str(self._cseq)] = future
        self.transport.write(build_request(method, uri, self._cseq, headers))
        try:
            return await asyncio.wait_for(future, REQUEST_TIMEOUT)
        except TimeoutError:
            self._pending.pop(str(self._cseq), None)
            raise ConnectionError(f"no answer to {method} in {REQUEST_TIMEOUT:g} s") from None

    # -- the steps ------------------------------------------------------------------------------------

    async def describe(self) -> list[RemoteTrack]:
        options = await self.request("OPTIONS")
        if options.status == 200:
            self.public = {m.strip().upper() for m in (options.header("Public") or "").split(",")}
        response = await self.request("DESCRIBE", headers=[("Accept", "application/sdp")])
        if response.status == 404:
            raise PullFailed(STREAM_NOT_FOUND, "the camera answered 404 to DESCRIBE")
        if response.status == 401:
            raise PullFailed(CONNECT_FAILED, "the camera refused the credentials (401)"
                             if self.url.username else "the camera wants a user and password (401)")
        if response.status != 200:
            raise PullFailed(CONNECT_FAILED, f"the camera answered {response.status} {response.reason} to DESCRIBE")
        self.base = response.header("Content-Base") or response.header("Content-Location") or self.url.uri
        try:
            return parse_sdp(response.body.decode("utf-8", "replace"), self.base)
        except ValueError as exc:
            raise PullFailed(WRONG_FORMAT, str(exc)) from None

    async def setup(self, tracks: list[RemoteTrack], tcp: bool) -> None:
        loop = asyncio.get_running_loop()
        for index, track in enumerate(tracks):
            if tcp:
                transport = f"RTP/AVP/TCP;unicast;interleaved={2 * index}-{2 * index + 1}"
            else:
                rtp, rtcp = await self._udp_pair(loop, index)
                assert rtp.transport is not None and rtcp.transport is not None
                ports = rtp.transport.get_extra_info("sockname")[1], rtcp.transport.get_extra_info("sockname")[1]
                transport = f"RTP/AVP;unicast;client_port={ports[0]}-{ports[1]}"
            response = await self.request("SETUP", track.control, [("Transport", transport)])
            if response.status == 461 and not tcp:
                raise PullFailed(CONNECT_FAILED, "the camera does not stream over UDP (461): use TCP")
            if response.status != 200:
                raise PullFailed(CONNECT_FAILED,
                                 f"the camera answered {response.status} {response.reason} to SETUP of {track.control}")
            session = response.header("Session")
            if session:
                self.session, timeout = parse_session(session)
                if timeout:
                    self.session_timeout = timeout
            try:
                reply = parse_transport_reply(response.header("Transport") or "")
            except ValueError as exc:
                raise PullFailed(CONNECT_FAILED, f"SETUP answer: {exc}") from None
            if reply.tcp != tcp:
                raise PullFailed(CONNECT_FAILED, "the camera answered SETUP with another transport")
            if tcp:
                assert reply.interleaved is not None
                self._channels[reply.interleaved[0]] = (index, False)
                self._channels[reply.interleaved[1]] = (index, True)
            else:
                rtp_ep, rtcp_ep, _ = self._udp[index]
                server_rtcp = (self.peer_host, reply.server_ports[1]) if reply.server_ports and self.peer_host else None
                self._udp[index] = (rtp_ep, rtcp_ep, server_rtcp)
                if reply.server_ports and self.peer_host and rtp_ep.transport is not None:
                    # Opens the path through NATs and firewalls, as live555 and ffmpeg do.
                    with contextlib.suppress(OSError):
                        rtp_ep.transport.sendto(b"\x80" + b"\x00" * 11, (self.peer_host, reply.server_ports[0]))

    async def _udp_pair(self, loop: asyncio.AbstractEventLoop, index: int) -> tuple[_Datagrams, _Datagrams]:
        """Two sockets on consecutive ports, RTP even (RFC 3550 section 11), from the camera's host only."""
        host = "::" if self.peer_host and ":" in self.peer_host else "0.0.0.0"
        for _attempt in range(20):
            rtp = _Datagrams(functools.partial(self._on_udp, index, rtcp=False))
            rtp_transport, _ = await loop.create_datagram_endpoint(functools.partial(_same, rtp),
                                                                   local_addr=(host, 0))
            port = rtp_transport.get_extra_info("sockname")[1]
            if port % 2 == 0 and port < 65535:
                rtcp = _Datagrams(functools.partial(self._on_udp, index, rtcp=True))
                try:
                    await loop.create_datagram_endpoint(functools.partial(_same, rtcp), local_addr=(host, port + 1))
                except OSError:
                    rtp_transport.close()
                    continue
                sock = rtp_transport.get_extra_info("socket")
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                self._udp.append((rtp, rtcp, None))
                return rtp, rtcp
            rtp_transport.close()
        raise PullFailed(CONNECT_FAILED, "no free pair of UDP ports")

    def _on_udp(self, index: int, data: bytes, addr: tuple[str, int], *, rtcp: bool) -> None:
        if addr[0] != self.peer_host:
            return  # only the camera sends to these ports
        (self.on_rtcp if rtcp else self.on_rtp)(index, data)

    async def play(self) -> None:
        response = await self.request("PLAY", self.base, [("Range", "npt=0.000-")])
        if response.status != 200:
            raise PullFailed(CONNECT_FAILED, f"the camera answered {response.status} {response.reason} to PLAY")

    async def keep_alive(self) -> None:
        method = "GET_PARAMETER" if "GET_PARAMETER" in self.public else "OPTIONS"
        await self.request(method, self.base)

    def send_rtcp(self, index: int, data: bytes) -> None:
        if self._channels:
            for channel, (track_index, is_rtcp) in self._channels.items():
                if track_index == index and is_rtcp and self.transport is not None and not self.transport.is_closing():
                    self.transport.write(bytes((0x24, channel)) + len(data).to_bytes(2, "big") + data)
        elif index < len(self._udp):
            _rtp, rtcp, address = self._udp[index]
            if address is not None and rtcp.transport is not None:
                with contextlib.suppress(OSError):
                    rtcp.transport.sendto(data, address)

    async def close(self, teardown: bool) -> None:
        if teardown and self.session is not None and not self.closed.done():
            with contextlib.suppress(ConnectionError, OSError):
                await asyncio.wait_for(self.request("TEARDOWN", self.base), 1.0)
        for rtp, rtcp, _address in self._udp:
            for endpoint in (rtp, rtcp):
                if endpoint.transport is not None:
                    endpoint.transport.close()
        self._udp.clear()
        self._lose("closed")


# --- a pull ---------------------------------------------------------------------------------------------


@dataclass
class PullStats:
    connects: int = 0
    reconnects: int = 0
    packets: int = 0
    bytes: int = 0
    errors: int = 0  # packets an output failed on


class RtspPull:
    """One camera URL published as one Stream, for as long as it is wanted."""

    def __init__(self, service: PullService, text: str, url: RtspUrl, tcp: bool, keep: bool,
                 local_name: str | None = None):
        self.service = service
        self.text = text  # the URL as given: the stream's name
        self.url = url
        self.tcp = tcp
        self.keep = keep
        self.local_name = local_name
        self.stream = Stream(masked(text))  # the name outputs and logs show
        self.viewers: set[Any] = set()
        self.status = "NEW"  # NEW, PLAYING, RECONNECTING, STOPPED, FAILED
        self.info: str | None = None
        self.error: str | None = None
        self.stats = PullStats()
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.created_at = time.time()
        self._tracks: list[PublishedTrack] = []  # per camera track of the current connection
        self._connection: CameraConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self.rtcp_ssrc = secrets.randbits(32) or 1
        self.published = False  # the outputs were told (Server.stream_published)
        self._connected_at = 0.0

    @property
    def ended(self) -> bool:
        return self.status in ("STOPPED", "FAILED")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        settings = self.service.settings
        backoff = MAX_BACKOFF_START
        while not self.ended:
            try:
                await self._connect(settings["connect_timeout"])
            except PullFailed as exc:
                if not self.started.done():
                    self.started.set_exception(exc)
                    return
                log.info("pull %s: reconnect failed: %s; next try in %g s", masked(self.text), exc, backoff)
                self.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a camera's answer must never take the pull down silently
                if not isinstance(exc, OSError | ConnectionError | TimeoutError):
                    log.exception("pull %s: unexpected error", masked(self.text))
                failure = PullFailed(CONNECT_FAILED, str(exc) or type(exc).__name__)
                if not self.started.done():
                    self.started.set_exception(failure)
                    return
                log.info("pull %s: reconnect failed: %s; next try in %g s", masked(self.text), failure, backoff)
                self.error = str(failure)
            else:
                if not self.started.done():
                    self.started.set_result(None)
                backoff = MAX_BACKOFF_START
                why = await self._hold()
                if self.ended:
                    return
                log.warning("pull %s: %s; reconnecting", masked(self.text), why)
                self.error = why
            finally:
                if self._connection is not None:
                    await self._connection.close(teardown=self.ended)
                    self._connection = None
            if self.ended:
                return
            self.status = "RECONNECTING"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings["retry_max"])

    async def _connect(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        connection = CameraConnection(self.url, self._on_rtp, self._on_rtcp)
        self._connection = connection
        self.stats.connects += 1
        try:
            await asyncio.wait_for(self._handshake(connection, loop), timeout)
        except TimeoutError:
            raise PullFailed(CONNECT_FAILED, f"the camera was not playing within {timeout:g} s") from None
        if self.status == "NEW":
            self.service.published(self)
        elif self.status == "RECONNECTING":
            self.stats.reconnects += 1
            log.info("pull %s: reconnected", masked(self.text))
        self.status = "PLAYING"
        self.error = None
        self._connected_at = loop.time()

    async def _handshake(self, connection: CameraConnection, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await loop.create_connection(lambda: connection, self.url.host, self.url.port)
        except OSError as exc:
            raise PullFailed(CONNECT_FAILED, f"cannot connect to {self.url.host}:{self.url.port}: "
                                             f"{exc.strerror or exc}") from None
        remote = await connection.describe()
        usable = [t for t in remote if t.codec in PULLED_CODECS]
        if not usable:
            names = ", ".join(f"{t.kind} {t.codec}" for t in remote) or "no audio or video"
            raise PullFailed(NO_COMMON_CODECS, f"the camera offers {names}; pulled: H264, VP8, Opus")
        usable = [t for t in usable if t.kind == "video"][:1] + [t for t in usable if t.kind == "audio"][:1]
        pairs = [(remote, self._track_for(remote)) for remote in usable]
        chosen = [(remote, track) for remote, track in pairs if track is not None]
        if not chosen:
            raise PullFailed(WRONG_FORMAT, "the camera's codecs changed since the pull started")
        self._tracks = [track for _remote, track in chosen]
        await connection.setup([remote for remote, _track in chosen], self.tcp)
        await connection.play()

    def _track_for(self, remote: RemoteTrack) -> PublishedTrack | None:
        """The stream's track for a camera track: made on the first connection, the same one after a
        reconnect (None when the camera now sends another codec for that kind)."""
        existing = self.stream.track(remote.kind)
        if existing is not None:
            return existing if existing.codec.name == remote.codec else None
        if self.status != "NEW":
            return None
        core = self.service.server.media
        codec = codec_for(remote)
        track = PublishedTrack(codec, core.track.IngestTrack(codec.name, codec.clock_rate), core.track,
                               self._request_keyframe)
        self.stream.tracks.append(track)
        return track

    async def _hold(self) -> str:
        """While the camera sends: keep-alives, receiver reports and the media watchdog. Returns why it
        ended."""
        connection = self._connection
        assert connection is not None
        loop = asyncio.get_running_loop()
        media_timeout = self.service.settings["timeout"]
        keepalive_every = max(1.0, min(connection.session_timeout / 2, 30.0))
        next_keepalive = loop.time() + keepalive_every
        next_report = loop.time() + REPORT_INTERVAL
        while not self.ended:
            if connection.closed.done():
                return connection.closed.result()
            now = loop.time()
            last = [t.ingest.last_packet_at for t in self._tracks if t.ingest.last_packet_at is not None]
            since = max([*last, self._connected_at])
            if now - since > media_timeout:
                return f"no media for {media_timeout:g} s"
            if now >= next_keepalive:
                next_keepalive = now + keepalive_every
                loop.create_task(self._keep_alive(connection))
            if now >= next_report:
                next_report = now + REPORT_INTERVAL
                self._send_reports(connection, now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(connection.closed), 0.5)
        return "stopped"

    async def _keep_alive(self, connection: CameraConnection) -> None:
        try:
            await connection.keep_alive()
        except (ConnectionError, OSError) as exc:
            connection._lose(f"keep-alive failed: {exc}")

    def _send_reports(self, connection: CameraConnection, now: float) -> None:
        rtp = self.service.server.media.rtp
        for index, track in enumerate(self._tracks):
            report = receiver_report(rtp, self.rtcp_ssrc, [track], now)
            if report is not None:
                connection.send_rtcp(index, report[0])

    def _on_rtp(self, index: int, data: bytes) -> None:
        if index < len(self._tracks):
            self.stats.packets += 1
            self.stats.bytes += len(data)
            try:
                self._tracks[index].on_rtp(data, self.service.server.media.now())
            except Exception:  # noqa: BLE001 - one output's fault must not cut the camera off for all
                self.stats.errors += 1
                if self.stats.errors == 1:
                    log.exception("pull %s: forwarding a packet failed", masked(self.text))

    def _on_rtcp(self, index: int, data: bytes) -> None:
        if index >= len(self._tracks):
            return
        rtp = self.service.server.media.rtp
        try:
            packets = rtp.parse_rtcp(data)
        except ValueError:
            return
        track = self._tracks[index]
        for packet in packets:
            if packet.packet_type == rtp.RTCP_SR and packet.ssrc == track.ingest.ssrc:
                track.on_sender_report(packet.ntp_timestamp, packet.rtp_timestamp, self.service.server.media.now())

    def _request_keyframe(self, media_ssrc: int) -> None:
        """A PLI on the track's RTCP channel: cameras that speak AVPF answer it, the others ignore it."""
        connection = self._connection
        if connection is None:
            return
        for index, track in enumerate(self._tracks):
            if track.ingest.ssrc == media_ssrc:
                connection.send_rtcp(index, self.service.server.media.rtp.build_pli(self.rtcp_ssrc, media_ssrc))

    async def stop(self, status: str = "STOPPED", info: str | None = None) -> None:
        if self.ended:
            return
        self.status = status
        self.info = info
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            await self._connection.close(teardown=True)
            self._connection = None

    def describe(self) -> dict[str, Any]:
        return {
            "uri": masked(self.text), "localStreamName": self.local_name, "status": self.status,
            "info": self.info, "error": self.error, "transport": "tcp" if self.tcp else "udp",
            "keep": self.keep, "viewers": len(self.viewers), "createdAt": round(self.created_at, 3),
            "connects": self.stats.connects, "reconnects": self.stats.reconnects, "packets": self.stats.packets,
            "bytes": self.stats.bytes, "errors": self.stats.errors,
            "tracks": [{"kind": t.kind, "codec": t.codec.name, "packets": t.ingest.packets,
                        "keyframes": t.ingest.keyframes} for t in self.stream.tracks],
        }


class PullService:
    """The pulls of the server, by URL as given (and by local stream name, when one was given)."""

    def __init__(self, server: Server):
        self.server = server
        config = server.config
        self.settings = {
            "tcp": config["rtsp.pull_transport"] == "tcp",
            "keep": bool(config["rtsp.pull_keep"]),
            "timeout": float(config["rtsp.pull_timeout"]),
            "retry_max": float(config["rtsp.pull_retry_max"]),
            "connect_timeout": float(config["rtsp.pull_connect_timeout"]),
            "max_pulls": int(config["rtsp.pull_max"]),
        }
        self._pulls: dict[str, RtspPull] = {}

    def __len__(self) -> int:
        return len(self._pulls)

    def all(self) -> list[RtspPull]:
        return list(self._pulls.values())

    def find(self, text: str) -> RtspPull | None:
        pull = self._pulls.get(text)
        if pull is None:
            pull = next((p for p in self._pulls.values() if masked(p.text) == text), None)
        return pull

    async def acquire(self, text: str, viewer: Any = None, *, keep: bool | None = None, tcp: bool | None = None,
                      local_name: str | None = None) -> RtspPull:
        """The running pull of that URL, started if needed; `viewer` (if any) holds it until release().
        Raises PullFailed."""
        try:
            url = parse_rtsp_url(text)
        except RtspUrlError as exc:
            raise PullFailed(WRONG_FORMAT, str(exc)) from None
        pull = self._pulls.get(text)
        if pull is None or pull.ended:
            if len(self._pulls) >= self.settings["max_pulls"]:
                raise PullFailed(CONNECT_FAILED, f"the server pulls {self.settings['max_pulls']} URLs already "
                                                 "(rtsp.pull_max)")
            pull = RtspPull(self, text, url, self.settings["tcp"] if tcp is None else tcp,
                            self.settings["keep"] if keep is None else keep, local_name)
            if local_name is not None:
                try:
                    pull.stream = self.server.streams.registry.claim(local_name)
                except StreamNameInUse:
                    raise PullFailed(CONNECT_FAILED, f"the local stream name {local_name!r} is in use") from None
            self._pulls[text] = pull
            pull.start()
        if viewer is not None:
            pull.viewers.add(viewer)
        if keep:
            pull.keep = True
        try:
            await asyncio.shield(pull.started)
        except PullFailed:
            if viewer is not None:
                pull.viewers.discard(viewer)
            await self._forget(pull, "FAILED", None)
            raise
        if pull.ended:
            raise PullFailed(CONNECT_FAILED, "the pull was stopped")
        return pull

    def published(self, pull: RtspPull) -> None:
        pull.published = True
        self.server.stream_published(pull.stream)

    def release(self, pull: RtspPull, viewer: Any) -> None:
        pull.viewers.discard(viewer)
        if not pull.viewers and not pull.keep and not pull.ended:
            asyncio.get_running_loop().create_task(self.stop(pull, "STOPPED", None))

    async def stop(self, pull: RtspPull, status: str, info: str | None) -> None:
        if pull.ended and self._pulls.get(pull.text) is not pull:
            return
        await pull.stop(status, info)
        await self._forget(pull, status, info)

    async def _forget(self, pull: RtspPull, status: str, info: str | None) -> None:
        if self._pulls.get(pull.text) is pull:
            del self._pulls[pull.text]
        if pull.status not in ("STOPPED", "FAILED"):
            pull.status = status
        was_published = pull.published and not pull.stream.closed
        if pull.local_name is not None:
            self.server.streams.registry.release(pull.stream)
        pull.stream.end()
        if was_published:
            self.server.stream_unpublished(pull.stream)
        await self.server.streams.end_viewers(pull.stream, info or "Stopped by publisher stop")
        log.info("pull %s %s%s", masked(pull.text), status, f" ({info})" if info else "")

    def stream(self, name: str) -> Stream | None:
        """The stream of a playing pull, by URL or local stream name."""
        pull = self._pulls.get(name)
        if pull is None:
            pull = next((p for p in self._pulls.values() if p.local_name == name), None)
        if pull is None or pull.status not in ("PLAYING", "RECONNECTING") or pull.stream.closed:
            return None
        return pull.stream

    async def shutdown(self) -> None:
        for pull in list(self._pulls.values()):
            await self.stop(pull, "STOPPED", SHUTDOWN)

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self._pulls.values()]
