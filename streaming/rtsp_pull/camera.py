"""One RTSP session with a camera: the control connection (OPTIONS, DESCRIBE, SETUP, PLAY, keep-alives,
TEARDOWN, answers to 401 challenges) and the media it carries interleaved or that arrives on our UDP
ports. The protocol is media.rtsp_client and media.rtsp_protocol.parser, with no I/O; this moves the
bytes. It knows nothing of streams: media goes to the callbacks it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import Callable
from typing import Any

from media.rtsp_client import (
    Credentials,
    RemoteTrack,
    RtspUrl,
    build_request,
    parse_sdp,
    parse_session,
    parse_transport_reply,
)
from media.rtsp_protocol.parser import InterleavedFrame, ParseError, Response, ResponseParser

from .failures import CONNECT_FAILED, STREAM_NOT_FOUND, WRONG_FORMAT, PullFailed

REQUEST_TIMEOUT = 10.0
DEFAULT_SESSION_TIMEOUT = 60.0


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
