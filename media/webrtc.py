"""WebRTC peers whose media bypass aiortc's RTP stack: the one module that touches aiortc internals.

aiortc does ICE, DTLS, SRTP and SDP for us. Its receivers would decode every frame and its senders
encode (or re-packetize) per viewer; the SFU must do neither. So a peer here:
- takes decrypted RTP/RTCP from the DTLS transport right after SRTP unprotect
  (`RTCDtlsTransport._handle_rtp_data` / `_handle_rtcp_data`), before any receiver sees it;
- never starts aiortc's RTP senders and receivers (their `send`/`receive` only record parameters), so no
  encoder, decoder, jitter buffer or bogus sender report runs;
- hands the send route of a connected peer (the nominated ICE pair's socket, the remote address and
  the transport's SRTP session) to the native fan-out, which protects and sends viewers' RTP itself
  (`on_route`); RTCP, and RTP before the route is known, go synchronously through `send_rtcp` /
  `send_rtp`: SRTP protect, then `sendto` on that datagram transport, dropping (and counting) when its
  buffer is full.

Tested against the aiortc range pinned in pyproject.toml (tests/test_webrtc_bridge.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pylibsrtp
from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc.exceptions import InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import SessionDescription
from pylibsrtp._binding import ffi

log = logging.getLogger(__name__)

# Codecs the core forwards without transcoding. RTX is left out: the server answers NACKs from its own
# cache and does not ask publishers for retransmissions.
FORWARDABLE = {"video/VP8", "video/H264", "audio/opus"}
# A datagram transport holding more than this is a viewer that cannot keep up: drop, do not queue.
MAX_SEND_BUFFER = 256 * 1024
SRTP_BUFFER = 2048  # bytes: the largest RTP packet sent is this less 144


class SdpError(ValueError):
    pass


class NoCommonCodecs(ValueError):
    pass


@dataclass
class NegotiatedTrack:
    kind: str  # "audio" | "video"
    mid: str | None
    codec: RTCRtpCodecParameters  # with the payload type of this peer
    ssrc: int | None = None  # the remote SSRC (publisher) or ours (viewer)
    send_ssrc: int | None = None  # ours, on a sendrecv (call) track


def _roomy(session: pylibsrtp.Session) -> None:
    """pylibsrtp protects into a 1500-byte buffer less room for the largest trailer it might add (144
    bytes): RTP packets over 1356 bytes are refused. Cameras send 1400-1460 (pulled RTSP streams), so
    the session gets a larger buffer; the trailer of our policy is 10 bytes."""
    if len(session._cdata) < SRTP_BUFFER:
        session._cdata = ffi.new("char[]", SRTP_BUFFER)
        session._buffer = ffi.buffer(session._cdata)


@dataclass(frozen=True)
class Route:
    """Where a connected peer's RTP goes: its socket, the remote address and the SRTP session, for the
    fan-out to send there itself (Output.use_udp)."""

    fd: int
    family: int
    address: tuple[Any, ...]
    srtp: pylibsrtp.Session


@dataclass
class PeerStats:
    rtp_sent: int = 0
    rtcp_sent: int = 0
    bytes_sent: int = 0
    dropped: int = 0
    rtp_received: int = 0
    rtcp_received: int = 0


class _SilentTrack(MediaStreamTrack):
    """Makes aiortc answer `sendonly`; its frames are never asked for (the sender is never started)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:  # pragma: no cover - never called
        raise RuntimeError("the SFU sends RTP directly; this track has no frames")


def decoder_threads(pc: RTCPeerConnection) -> int:
    """How many of a peer connection's receivers run aiortc's decoder thread."""
    return sum(1 for t in pc.getTransceivers()
               if getattr(t.receiver, "_RTCRtpReceiver__decoder_thread", None) is not None)


_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host.*)$")
_CONNECTION = re.compile(r"^c=IN IP[46] \S+$")


def announce(sdp: str, public_address: str) -> str:
    """Put the announced address in place of host candidate addresses (1:1 NAT: same ports)."""
    family = "IP6" if ":" in public_address else "IP4"
    lines = []
    for line in sdp.split("\r\n"):
        match = _CANDIDATE.match(line)
        if match:
            line = f"{match.group(1)}{public_address}{match.group(3)}"
        elif _CONNECTION.match(line):
            line = f"c=IN {family} {public_address}"
        lines.append(line)
    return "\r\n".join(lines)


def parse_offer(sdp: str, max_length: int = 65536) -> SessionDescription:
    if not isinstance(sdp, str) or not sdp.strip():
        raise SdpError("SDP is empty")
    if len(sdp) > max_length:
        raise SdpError(f"SDP is larger than {max_length} characters")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises assorted errors on garbage
        raise SdpError(f"SDP cannot be parsed: {type(exc).__name__}") from None
    if not parsed.media:
        raise SdpError("SDP offers no media")
    return parsed


def _forwardable(codecs: list[RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
    out = []
    for codec in codecs:
        if codec.mimeType not in FORWARDABLE:
            continue
        if codec.mimeType == "video/H264" and codec.parameters.get("packetization-mode", 0) not in (1, "1"):
            continue  # mode 0 (single NAL) cannot carry what browsers send at 720p
        out.append(codec)
    return out


def offered_codecs(offer: str) -> dict[str, list[RTCRtpCodecParameters]]:
    """The forwardable codecs a viewer's offer accepts, per kind, in its order of preference."""
    parsed = parse_offer(offer)
    out: dict[str, list[RTCRtpCodecParameters]] = {}
    for media in parsed.media:
        if media.kind in ("audio", "video") and media.direction in (None, "recvonly", "sendrecv"):
            out.setdefault(media.kind, []).extend(_forwardable(media.rtp.codecs))
    return out


def accepts(offered: list[RTCRtpCodecParameters], codec: RTCRtpCodecParameters | None) -> bool:
    return codec is not None and any(is_codec_compatible(codec, c) for c in offered)


class Peer:
    """One RTCPeerConnection answering one offer, with RTP and RTCP handed to callbacks."""

    def __init__(self, name: str, public_address: str | None = None):
        self.name = name
        self.public_address = public_address
        self.pc = RTCPeerConnection()
        self.stats = PeerStats()
        self.tracks: list[NegotiatedTrack] = []
        self.on_rtp: Callable[[bytes], None] = lambda data: None
        self.on_rtcp: Callable[[bytes], None] = lambda data: None
        self.on_state: Callable[[str], None] = lambda state: None
        # Told the native send route (socket fd, family, remote address, SRTP session) when it is known,
        # and None when it is not valid any more: the fan-out sends there itself.
        self.on_route: Callable[[Route | None], None] = lambda route: None
        self._dtls: RTCDtlsTransport | None = None
        self._route: tuple[Any, Any, Any] | None = None
        self._closed = False
        self.pc.on("connectionstatechange", self._state_changed)

    @property
    def connected(self) -> bool:
        return self._dtls is not None and self._dtls._state is State.CONNECTED

    @property
    def addresses(self) -> tuple[tuple[str, int], tuple[str, int]] | None:
        """(local, remote) address of the connected candidate pair, None before (what a capture of the
        peer's packets is labelled with)."""
        pair = self._nominated_pair()
        if pair is None:
            return None
        local = pair.protocol.transport.get_extra_info("sockname")
        return (str(local[0]), int(local[1])), (str(pair.remote_addr[0]), int(pair.remote_addr[1]))

    @property
    def decoders(self) -> int:
        """aiortc decoder threads of this peer: the SFU path starts none (receivers stay disarmed)."""
        return decoder_threads(self.pc)

    def _state_changed(self) -> None:
        if self._route is not None:
            self._route = None  # re-resolved on the next send, if still connected
            self.on_route(None)
        self.on_state(self.pc.connectionState)

    # -- negotiation -------------------------------------------------------------------------------

    async def answer_publisher(self, offer: str) -> str:
        """Answer a publisher's sendonly offer, accepting only forwardable codecs (in its order)."""
        parsed = parse_offer(offer)
        await self._set_remote(offer)
        for transceiver in self.pc.getTransceivers():
            # aiortc negotiated in setRemoteDescription: narrow its choice to what we forward.
            transceiver._codecs = _forwardable(transceiver._codecs)
            if not transceiver._codecs:
                raise NoCommonCodecs(f"the {transceiver.kind} offer has no codec the server forwards "
                                     "(VP8, H264 packetization-mode 1, opus)")
            self._disarm(transceiver)
        answer = await self._answer()
        for transceiver in self.pc.getTransceivers():
            media = self._media_for(parsed, transceiver)
            ssrc = media.ssrc[0].ssrc if media is not None and media.ssrc else None
            self.tracks.append(NegotiatedTrack(transceiver.kind, transceiver.mid, transceiver._codecs[0], ssrc))
        return answer

    async def answer_viewer(self, offer: str, wanted: dict[str, RTCRtpCodecParameters]) -> str:
        """Answer a viewer's recvonly offer with the publisher's codec for each kind it asks for."""
        parse_offer(offer)
        await self._set_remote(offer)
        matched = 0
        for transceiver in self.pc.getTransceivers():
            codec = wanted.get(transceiver.kind)
            same = [c for c in transceiver._codecs if codec is not None and is_codec_compatible(codec, c)]
            self._disarm(transceiver)
            if not same:
                continue  # answered inactive
            transceiver._codecs = same[:1]
            # Forwarded packets keep the publisher's header extensions, whose ids mean nothing here
            # (a forwarded MID would mis-route BUNDLE demux): negotiate none, demux is by SSRC.
            transceiver._headerExtensions = []
            transceiver.sender.replaceTrack(_SilentTrack(transceiver.kind))
            transceiver.direction = "sendonly"
            matched += 1
        if matched == 0:
            raise NoCommonCodecs("the viewer accepts none of the stream's codecs")
        answer = await self._answer()
        for transceiver in self.pc.getTransceivers():
            if transceiver.sender.track is None or not transceiver._codecs:
                continue
            self.tracks.append(NegotiatedTrack(transceiver.kind, transceiver.mid, transceiver._codecs[0],
                                               transceiver.sender._ssrc))
        return answer

    async def answer_call(self, offer: str) -> str:
        """Answer a sendrecv offer (a call: the browser sends and receives on one connection) with the
        first forwardable codec of each kind, both ways. Each track has the browser's SSRC (`ssrc`) and
        ours (`send_ssrc`); like a viewer's, our packets carry no header extensions."""
        parsed = parse_offer(offer)
        await self._set_remote(offer)
        for transceiver in self.pc.getTransceivers():
            transceiver._codecs = _forwardable(transceiver._codecs)[:1]
            self._disarm(transceiver)
            if not transceiver._codecs:
                raise NoCommonCodecs(f"the {transceiver.kind} offer has no codec the server forwards "
                                     "(VP8, H264 packetization-mode 1, opus)")
            transceiver._headerExtensions = []
            transceiver.sender.replaceTrack(_SilentTrack(transceiver.kind))
            transceiver.direction = "sendrecv"
        answer = await self._answer()
        for transceiver in self.pc.getTransceivers():
            media = self._media_for(parsed, transceiver)
            ssrc = media.ssrc[0].ssrc if media is not None and media.ssrc else None
            self.tracks.append(NegotiatedTrack(transceiver.kind, transceiver.mid, transceiver._codecs[0], ssrc,
                                               transceiver.sender._ssrc))
        return answer

    async def offer_call(self, video: bool) -> str:
        """Our offer for a call the server places to the browser (an incoming SIP call: the WebSDK
        answers): sendrecv Opus, and VP8/H.264 (packetization-mode 1) video when `video`. The tracks are
        known once `call_answered` has the browser's answer."""
        kinds = ["audio", "video"] if video else ["audio"]
        for kind in kinds:
            transceiver = self.pc.addTransceiver(_SilentTrack(kind), direction="sendrecv")
            capabilities = RTCRtpSender.getCapabilities(kind)
            preferred = [c for c in capabilities.codecs if c.mimeType in FORWARDABLE
                         and (c.mimeType != "video/H264" or c.parameters.get("packetization-mode") in (1, "1"))]
            transceiver.setCodecPreferences(preferred)
            self._disarm(transceiver)
        offer = await self.pc.createOffer()
        # As for a viewer: no header extensions (what we forward keeps its source's; demux is by SSRC).
        for transceiver in self.pc.getTransceivers():
            transceiver._headerExtensions = []
        plain = "".join(line for line in offer.sdp.splitlines(keepends=True) if not line.startswith("a=extmap:"))
        await self.pc.setLocalDescription(RTCSessionDescription(sdp=plain, type="offer"))
        self._intercept(self.pc.getTransceivers()[0].receiver.transport)
        sdp = str(self.pc.localDescription.sdp)
        return announce(sdp, self.public_address) if self.public_address else sdp

    async def call_answered(self, answer: str) -> None:
        """The browser's answer to `offer_call`: each kind's negotiated codec and both SSRCs in `tracks`."""
        parsed = parse_offer(answer)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        except OperationError as exc:
            raise NoCommonCodecs(f"no common codecs: {exc}") from None
        except (ValueError, AssertionError, KeyError, IndexError, TypeError, InvalidStateError) as exc:
            raise SdpError(f"SDP answer refused: {exc}") from None
        for transceiver in self.pc.getTransceivers():
            codecs = _forwardable(transceiver._codecs)
            if not codecs:
                continue
            media = self._media_for(parsed, transceiver)
            ssrc = media.ssrc[0].ssrc if media is not None and media.ssrc else None
            self.tracks.append(NegotiatedTrack(transceiver.kind, transceiver.mid, codecs[0], ssrc,
                                               transceiver.sender._ssrc))
        if not any(t.kind == "audio" for t in self.tracks):
            raise NoCommonCodecs("the browser's answer takes no audio codec the server forwards (opus)")

    async def _set_remote(self, offer: str) -> None:
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except OperationError as exc:
            raise NoCommonCodecs(f"no common codecs: {exc}") from None
        except (ValueError, AssertionError, KeyError, IndexError, TypeError, InvalidStateError) as exc:
            raise SdpError(f"SDP offer refused: {exc}") from None

    async def _answer(self) -> str:
        for transceiver in self.pc.getTransceivers():
            # An actpass offer lets the answerer choose: aiortc would take the DTLS client role, whose
            # cipher list (ECDHE-ECDSA only) fails against a server with an RSA certificate (GStreamer's
            # webrtcbin, "no shared cipher"). As the DTLS server it offers its ECDSA certificate, which
            # every client takes (browsers, GStreamer, OBS).
            if transceiver.receiver.transport._role == "auto":
                transceiver.receiver.transport._set_role("server")
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)  # gathers candidates: the answer carries them
        dtls = self.pc.getTransceivers()[0].receiver.transport
        self._intercept(dtls)
        sdp = str(self.pc.localDescription.sdp)
        return announce(sdp, self.public_address) if self.public_address else sdp

    @staticmethod
    def _media_for(parsed: SessionDescription, transceiver: RTCRtpTransceiver) -> Any:
        for media in parsed.media:
            if media.rtp.muxId == transceiver.mid or (transceiver.mid is None and media.kind == transceiver.kind):
                return media
        return None

    @staticmethod
    def _disarm(transceiver: RTCRtpTransceiver) -> None:
        """aiortc's sender and receiver are never started: we move the packets."""

        async def record_send(parameters: Any) -> None:
            transceiver.sender._sfu_parameters = parameters  # type: ignore[attr-defined]

        async def record_receive(parameters: Any) -> None:
            transceiver.receiver._sfu_parameters = parameters  # type: ignore[attr-defined]

        transceiver.sender.send = record_send  # type: ignore[method-assign]
        transceiver.receiver.receive = record_receive  # type: ignore[method-assign]

    def _intercept(self, dtls: RTCDtlsTransport) -> None:
        self._dtls = dtls
        peer = self

        async def handle_rtp(data: bytes, arrival_time_ms: int) -> None:
            peer.stats.rtp_received += 1
            peer.on_rtp(data)

        async def handle_rtcp(data: bytes) -> None:
            peer.stats.rtcp_received += 1
            peer.on_rtcp(data)

        dtls._handle_rtp_data = handle_rtp  # type: ignore[method-assign]
        dtls._handle_rtcp_data = handle_rtcp  # type: ignore[method-assign]

    def _nominated_pair(self) -> Any:
        """The connected ICE candidate pair (RTP component) with a live socket, None before."""
        dtls = self._dtls
        if dtls is None or dtls._state is not State.CONNECTED:
            return None
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None or pair.protocol.transport is None:
            return None
        return pair

    # -- sending -----------------------------------------------------------------------------------

    def _resolve_route(self) -> tuple[Any, Any, Any] | None:
        """(datagram transport, remote address, SRTP session) once connected, else None. Resolved once
        per connection state: per packet, only the send itself remains."""
        dtls = self._dtls
        pair = self._nominated_pair()
        if dtls is None or pair is None:
            return None
        _roomy(dtls._tx_srtp)
        transport = pair.protocol.transport
        self._route = (transport, pair.remote_addr, dtls._tx_srtp)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.on_route(Route(sock.fileno(), sock.family, pair.remote_addr, dtls._tx_srtp))
        return self._route

    def _send(self, data: bytes, rtcp: bool) -> bool:
        route = self._route or self._resolve_route()
        if route is None:
            return False
        transport, addr, srtp = route
        # asyncio's datagram transports buffer when the socket would block; typeshed omits the method.
        if transport.get_write_buffer_size() > MAX_SEND_BUFFER:
            self.stats.dropped += 1
            return False
        try:
            protected = srtp.protect_rtcp(data) if rtcp else srtp.protect(data)
        except (pylibsrtp.Error, ValueError) as exc:  # ValueError: larger than SRTP_BUFFER allows
            log.debug("%s: SRTP protect failed: %s", self.name, exc)
            self.stats.dropped += 1
            return False
        transport.sendto(protected, addr)
        self.stats.bytes_sent += len(protected)
        return True

    def send_rtp(self, data: bytes) -> bool:
        sent = self._send(data, rtcp=False)
        if sent:
            self.stats.rtp_sent += 1
        return sent

    def send_rtcp(self, data: bytes) -> bool:
        sent = self._send(data, rtcp=True)
        if sent:
            self.stats.rtcp_sent += 1
        return sent

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._route = None
        self.on_route(None)
        self.on_route = lambda route: None
        self.on_rtp = self.on_rtcp = lambda data: None
        self.on_state = lambda state: None
        try:
            await asyncio.wait_for(self.pc.close(), 5)
        except (TimeoutError, ConnectionError, RuntimeError) as exc:
            log.debug("%s: close: %s", self.name, exc)
