"""The media of one bridged SIP call: the browser's WebRTC leg (one sendrecv peer connection) and the SIP
peer's plain RTP/AVP leg, joined through the routing core.

Streams. Each direction of a call is a published Stream, so anyone may watch it (WebRTC, RTSP, HLS):
`stream_names[0]` ("{call}-browser") is what the browser sends (its Opus audio, and video if any);
`stream_names[1]` ("{call}-sip") is what the SIP peer sends, as Opus audio (and H.264 video if any).
Each leg reads the other's stream like any reader: the browser through an RtpReader whose sinks go to
its peer connection by the native fan-out (SRTP in native code), the SIP leg through an RtpReader (Opus
forwarded) or a transcoder.

Codecs. The SIP leg takes the first of the peer's formats that `SipMediaSettings.codecs` allows. Opus on
both legs is forwarded without decoding; PCMU, PCMA and G.722 are transcoded to and from Opus, one
AudioTranscoder per direction, each on its own worker thread (media/sip_audio.py). Video (has_video) is
H.264 on the SIP leg: forwarded when the browser sends H.264 too, else through the server's shared
Transcoders (VP8 <-> H.264).

The SIP leg's RTP (media/sip_rtp.py): symmetric RTP; every packet we send there, forwarded, transcoded
or an RFC 4733 event (media/sip_dtmf.py), goes through one RtpRewriter (the native one on a native
core), so the peer sees one SSRC with continuous sequence numbers and timestamps. Audio is held back
while an event is sent. Sending stops while either side holds (SDP directions); RTP timeout
(`rtp_timeout` without RTP while neither side holds) calls `on_timeout` once; so does the browser's
peer connection failing or closing. RTCP: a sender or
receiver report every RTCP_INTERVAL seconds; what the peer sends is counted.

Knows nothing of SIP signalling, sessions or hooks: the signalling side calls this API.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from . import sip_sdp
from .reader import RtpReader
from .sfu import MediaCore, receiver_report
from .sip_audio import AudioTranscoder
from .sip_dtmf import DtmfReceiver, DtmfSender
from .sip_rtp import PortsExhausted, RtpEndpoint
from .stream import Codec, PublishedTrack, Stream, StreamNameInUse, TrackSink
from .transcode import Target, Transcoder, Transcoders, TranscodingDisabled
from .webrtc import NoCommonCodecs, Peer, Route, SdpError

log = logging.getLogger(__name__)

RTCP_INTERVAL = 5.0  # seconds between our RTCP reports on the SIP leg
REPORT_INTERVAL = 1.0  # seconds between receiver reports to the browser
OPUS_PT = 111  # the payload type of the SIP stream's Opus track (readers rewrite it to theirs)
H264_PT = 96
_NTP_EPOCH = 2208988800
_SOURCE_TRANSCODED = 0x5EED0001  # input SSRCs of the SIP sender's rewriter, one per kind of source
_SOURCE_DTMF = 0x5EED0002
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class SipMediaError(ValueError):
    """An SDP we cannot use: unparsable, or no codec in common (str(exc) is a user-facing reason)."""


@dataclass(frozen=True)
class SipMediaSettings:
    rtp_address: str = "127.0.0.1"  # where the SIP leg's RTP socket binds and what its SDP announces
    public_address: str | None = None  # announced instead when set (1:1 NAT)
    port_min: int = 20000
    port_max: int = 20999  # RTP port range (RTP even, RTCP = RTP + 1)
    rtp_timeout: float = 30.0  # no RTP from the SIP peer this long (while not on hold) -> on_timeout
    codecs: tuple[str, ...] = ("opus", "PCMU", "PCMA", "G722")  # SIP-side preference order offered

    def __post_init__(self) -> None:
        if not 1024 <= self.port_min < self.port_max <= 65535:
            raise ValueError(f"bad RTP port range {self.port_min}-{self.port_max}: need 1024 <= min < max <= 65535")
        if not self.rtp_timeout > 0:
            raise ValueError(f"rtp_timeout must be positive, not {self.rtp_timeout!r}")
        unknown = [c for c in self.codecs if c.lower() not in ("opus", "pcmu", "pcma", "g722")]
        if unknown or not self.codecs:
            raise ValueError(f"SIP codecs must be among opus, PCMU, PCMA, G722, not {list(self.codecs)!r}")


def _can_send(local: str, remote: str) -> bool:
    return local in ("sendrecv", "sendonly") and remote in ("sendrecv", "recvonly")


def _answer_direction(wanted: str, offered: str) -> str:
    send = _can_send(wanted, offered)
    receive = wanted in ("sendrecv", "recvonly") and offered in ("sendrecv", "sendonly")
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly"}.get(
        (send, receive), "inactive")


def _opus_native() -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=OPUS_PT,
                                 parameters={"minptime": 10, "useinbandfec": 1})


def _h264_native() -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=H264_PT,
                                 parameters={"packetization-mode": "1", "level-asymmetry-allowed": "1",
                                             "profile-level-id": "42e01f"})


@dataclass
class _SipSide:
    """What the SIP leg negotiated."""

    audio: sip_sdp.RtpCodec | None = None
    dtmf: sip_sdp.RtpCodec | None = None
    video: sip_sdp.RtpCodec | None = None
    local_direction: str = "sendrecv"


class CallMedia:
    """The media of one bridged call: the browser's WebRTC leg (sendrecv) and the SIP leg's plain RTP."""

    def __init__(self, core: MediaCore, transcoders: Transcoders, settings: SipMediaSettings, *,
                 call_id: str, has_video: bool,
                 claim: Callable[[str], Stream], release: Callable[[Stream], None],
                 on_dtmf: Callable[[str], None], on_timeout: Callable[[], None]):
        self.core = core
        self.transcoders = transcoders
        self.settings = settings
        self.call_id = call_id
        self.has_video = has_video
        self._release = release
        self.on_dtmf = on_dtmf
        self.on_timeout = on_timeout
        safe = _NAME_UNSAFE.sub("_", call_id)[:96] or "call"
        self.stream_names: tuple[str, str] = (f"{safe}-browser", f"{safe}-sip")
        try:
            self.from_browser = claim(self.stream_names[0])
        except StreamNameInUse:
            raise SipMediaError(f"a stream named {self.stream_names[0]!r} exists already") from None
        try:
            self.from_sip = claim(self.stream_names[1])
        except StreamNameInUse:
            release(self.from_browser)
            raise SipMediaError(f"a stream named {self.stream_names[1]!r} exists already") from None
        # The SIP stream's audio is always Opus: forwarded from the peer, or encoded from its G.711/G.722.
        self._sip_audio_track = self._publish(self.from_sip, Codec("audio", "opus", 48000, OPUS_PT,
                                                                   {"minptime": 10, "useinbandfec": 1},
                                                                   native=_opus_native()))
        self._sip_video_track: PublishedTrack | None = None
        self.remote_direction = "sendrecv"
        self._sip = _SipSide()
        self._origin = sip_sdp.Origin(secrets.randbits(48))
        self._audio_ep: RtpEndpoint | None = None
        self._video_ep: RtpEndpoint | None = None
        self._peer: Peer | None = None
        self._browser_rtcp_ssrc = secrets.randbits(32) or 1
        self._browser_by_pt: dict[int, PublishedTrack] = {}
        self._browser_reader = RtpReader(self.from_sip, core.rtcp)
        self._browser_sinks: dict[str, TrackSink] = {}  # by kind
        self._browser_codecs: dict[str, str] = {}
        self._sip_reader: RtpReader | None = None  # browser -> SIP, forwarded
        self._sip_video_reader: RtpReader | None = None
        self._sip_listening: PublishedTrack | None = None  # browser audio track feeding _to_sip
        self._to_sip: AudioTranscoder | None = None
        self._from_sip: AudioTranscoder | None = None
        self._video_transcoders: list[Transcoder] = []
        self._wired: tuple[Any, ...] | None = None
        # The SIP sender: one rewriter for every packet we send the peer.
        self._sip_ssrc = secrets.randbits(32) or 1
        self._sip_rewriter: Any = None
        self._sip_video_ssrc = secrets.randbits(32) or 1
        self._dtmf_sender: DtmfSender | None = None
        self._dtmf_receiver = DtmfReceiver()
        self._dtmf_task: asyncio.Task[None] | None = None
        self._dtmf_seq = 0
        self._transcoded_seq = 0
        self._sip_ingest: Any = None  # statistics of the peer's audio (loss, jitter)
        self._from_sip_seq = secrets.randbits(16)
        self._from_sip_ts = secrets.randbits(32)
        self._from_sip_ssrc = secrets.randbits(32) or 1  # a new one per transcoder: its timeline is its own
        self.audio_held_for_dtmf = 0
        self.audio_not_sent_on_hold = 0
        self.unknown_payload = 0
        self.rtcp_junk = 0
        self.dtmf_received = 0
        self._last_rtp_at: float | None = None
        self._timer_from: float | None = None
        self._timed_out = False
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = False

    def _publish(self, stream: Stream, codec: Codec) -> PublishedTrack:
        # IngestTrack knows the codecs it forwards; the statistics of audio are codec-independent.
        ingest = self.core.track.IngestTrack(codec.name, codec.clock_rate)
        track = PublishedTrack(codec, ingest, self.core.track, self._keyframe_request_for(stream))
        stream.tracks.append(track)
        return track

    def _keyframe_request_for(self, stream: Stream) -> Callable[[int], None]:
        def request(ssrc: int) -> None:
            if stream is self.from_browser and self._peer is not None:
                self._peer.send_rtcp(self.core.rtcp.build_pli(self._browser_rtcp_ssrc, ssrc))
            elif stream is self.from_sip and self._video_ep is not None:
                self._video_ep.send_rtcp(self.core.rtcp.build_pli(self._sip_video_ssrc, ssrc))
        return request

    # -- the browser leg ---------------------------------------------------------------------------

    async def browser_answer(self, offer_sdp: str) -> str:
        """The answer to the browser's offer (a call the browser places: sendrecv Opus audio, optionally
        H.264 or VP8 video)."""
        peer = self._new_peer()
        try:
            answer = await peer.answer_call(offer_sdp)
        except (SdpError, NoCommonCodecs) as exc:
            self._peer = None
            await peer.close()
            raise SipMediaError(str(exc)) from None
        await self._browser_negotiated(peer)
        return answer

    async def browser_offer(self) -> str:
        """Our offer to the browser, for a call the SIP peer places (the WebSDK answers it): sendrecv
        Opus, and video when the call has it. `browser_answered` takes the browser's answer."""
        peer = self._new_peer()
        return await peer.offer_call(self.has_video)

    async def browser_answered(self, answer_sdp: str) -> None:
        """The browser's answer to `browser_offer`."""
        self._check_open()
        peer = self._peer
        if peer is None or peer.tracks:
            raise SipMediaError("no offer to the browser is waiting for its answer")
        try:
            await peer.call_answered(answer_sdp)
        except (SdpError, NoCommonCodecs) as exc:
            raise SipMediaError(str(exc)) from None
        await self._browser_negotiated(peer)

    def _new_peer(self) -> Peer:
        self._check_open()
        if self._peer is not None:
            raise SipMediaError("the browser's media is negotiated already")
        self._peer = Peer(f"call {self.call_id!r}", self.core.public_address)
        return self._peer

    async def _browser_negotiated(self, peer: Peer) -> None:
        """The browser leg's tracks are known: publish what it sends, and send it the SIP stream."""
        if self.closed:
            await peer.close()
            raise SipMediaError("the call has ended")
        now = self.core.now()
        for negotiated in peer.tracks:
            codec = negotiated.codec
            if codec.payloadType is None:
                continue
            name = codec.mimeType.split("/", 1)[1]
            self._browser_codecs[negotiated.kind] = name
            self._publish(self.from_browser, Codec(negotiated.kind, name, codec.clockRate, codec.payloadType,
                                                   dict(codec.parameters), native=codec))
            if negotiated.send_ssrc is not None:
                sink = TrackSink(self.core.rtp, negotiated.send_ssrc, codec.payloadType, codec.clockRate,
                                 video=negotiated.kind == "video", send_rtp=peer.send_rtp,
                                 send_rtcp=peer.send_rtcp)
                self._browser_sinks[negotiated.kind] = sink
        self._browser_by_pt = self.from_browser.by_payload_type()
        audio_sink = self._browser_sinks.get("audio")
        if audio_sink is not None:
            self._browser_reader.add_sink(self._sip_audio_track, audio_sink, now)
        self._browser_reader.attach(now)
        peer.on_rtp = self._on_browser_rtp
        peer.on_rtcp = self._on_browser_rtcp
        peer.on_route = self._on_browser_route
        peer.on_state = self._on_browser_state
        self._start_task(self._browser_report_loop())
        self._wire()

    def _on_browser_route(self, route: Route | None) -> None:
        assert self._peer is not None
        for sink in self._browser_sinks.values():
            if route is None:
                sink.output.use_callable(self._peer.send_rtp)
            else:
                sink.output.use_udp(route.fd, route.family, route.address, route.srtp)

    def _on_browser_rtp(self, data: bytes) -> None:
        if len(data) < 12:
            return
        track = self._browser_by_pt.get(data[1] & 0x7F)
        if track is not None:
            track.on_rtp(data, self.core.now())

    def _on_browser_rtcp(self, data: bytes) -> None:
        rtcp = self.core.rtcp
        now = self.core.now()
        try:
            packets = rtcp.parse_rtcp(data)
        except ValueError:
            self.rtcp_junk += 1
            return
        for packet in packets:
            if packet.packet_type == rtcp.RTCP_SR:
                for track in self.from_browser.tracks:
                    if track.ingest.ssrc == packet.ssrc:
                        track.on_sender_report(packet.ntp_timestamp, packet.rtp_timestamp, now)
        self._browser_reader.on_rtcp(data, now)

    async def _browser_report_loop(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            peer = self._peer
            if peer is None or not peer.connected:
                continue
            report = receiver_report(self.core.rtcp, self._browser_rtcp_ssrc, self.from_browser.tracks,
                                     self.core.now())
            if report is not None:
                peer.send_rtcp(report[0])

    # -- the SIP leg: SDP --------------------------------------------------------------------------

    def _announced(self) -> str:
        return self.settings.public_address or self.settings.rtp_address

    def _endpoints(self) -> None:
        """Bind the SIP leg's ports (once): audio, and video when the call has it."""
        loop = asyncio.get_running_loop()
        try:
            if self._audio_ep is None:
                self._audio_ep = RtpEndpoint(self.settings.rtp_address, self.settings.port_min,
                                             self.settings.port_max, self.core.now)
                self._audio_ep.on_rtp = self._on_sip_rtp
                self._audio_ep.on_rtcp = self._on_sip_rtcp
                self._audio_ep.start(loop)
                self._start_task(self._sip_report_loop())
                self._start_task(self._timeout_loop())
            if self.has_video and self._video_ep is None:
                self._video_ep = RtpEndpoint(self.settings.rtp_address, self.settings.port_min,
                                             self.settings.port_max, self.core.now)
                self._video_ep.on_rtp = self._on_sip_video_rtp
                self._video_ep.on_rtcp = self._on_sip_video_rtcp
                self._video_ep.start(loop)
        except PortsExhausted as exc:
            raise SipMediaError(f"no RTP port for the call: {exc}") from None

    def _our_audio_codecs(self) -> list[sip_sdp.RtpCodec]:
        codecs = [sip_sdp.CATALOG[name.lower()] for name in self.settings.codecs]
        codecs.append(sip_sdp.CATALOG["telephone-event"])
        if any(c.key == "opus" for c in codecs):
            codecs.append(replace(sip_sdp.CATALOG["telephone-event"], clock_rate=48000, payload_type=100))
        return codecs

    def sip_offer(self, direction: str = "sendrecv") -> str:
        """Our SDP offer for an INVITE or re-INVITE (hold: "sendonly"); o= version increments."""
        self._check_open()
        self._check_direction(direction)
        self._endpoints()
        assert self._audio_ep is not None
        self._sip.local_direction = direction
        self._apply_direction()
        media = [sip_sdp.MediaOffer("audio", self._audio_ep.port, tuple(self._our_audio_codecs()), direction,
                                    ptime=20)]
        if self._video_ep is not None:
            media.append(sip_sdp.MediaOffer("video", self._video_ep.port, (sip_sdp.CATALOG["h264"],), direction))
        return sip_sdp.build(self._origin, self._announced(), media)

    def sip_answered(self, answer_sdp: str) -> None:
        """The peer's answer to our offer."""
        self._check_open()
        if self._audio_ep is None:
            raise SipMediaError("an answer came, but we made no offer")
        parsed = self._parse(answer_sdp)
        audio = parsed.first("audio")
        if audio is None or audio.rejected:
            raise SipMediaError("the answer has no audio")
        codec, dtmf = self._choose_audio(audio, [c.name for c in self._our_audio_codecs()
                                                 if c.key != "telephone-event"])
        video = None
        section = parsed.first("video")
        if section is not None and self._video_ep is not None:
            video = sip_sdp.choose_video(section)
        self._negotiated(audio, codec, dtmf, section, video, self._sip.local_direction)

    def sip_answer(self, offer_sdp: str, direction: str = "sendrecv") -> str:
        """Our answer to the peer's offer (an INVITE's or a re-INVITE's)."""
        self._check_open()
        self._check_direction(direction)
        parsed = self._parse(offer_sdp)
        audio = parsed.first("audio")
        if audio is None or audio.rejected:
            raise SipMediaError("the offer has no audio")
        codec, dtmf = self._choose_audio(audio, self.settings.codecs)
        self._endpoints()
        assert self._audio_ep is not None
        local = _answer_direction(direction, audio.direction)
        answered = [replace(sip_sdp.CATALOG[codec.key], payload_type=codec.payload_type)]
        if dtmf is not None:
            answered.append(dtmf)
        media: list[sip_sdp.MediaOffer] = []
        video_codec = None
        video_section = None
        for section in parsed.media:
            if section is audio:
                media.append(sip_sdp.MediaOffer("audio", self._audio_ep.port, tuple(answered), local, ptime=20))
            elif section.kind == "video" and self._video_ep is not None and video_section is None:
                video_section = section
                video_codec = sip_sdp.choose_video(section)
                if video_codec is not None:
                    video_local = _answer_direction(direction, section.direction)
                    media.append(sip_sdp.MediaOffer("video", self._video_ep.port,
                                                    (replace(sip_sdp.CATALOG["h264"],
                                                             payload_type=video_codec.payload_type),),
                                                    video_local))
                else:
                    media.append(sip_sdp.MediaOffer("video", 0, (), proto=section.proto))
            else:  # not ours to take: rejected, in its place (RFC 3264 section 6)
                media.append(sip_sdp.MediaOffer(section.kind[:16], 0, (), proto=section.proto[:32]))
        self._negotiated(audio, codec, dtmf, video_section, video_codec, local)
        return sip_sdp.build(self._origin, self._announced(), media)

    def _parse(self, sdp: str) -> sip_sdp.Sdp:
        try:
            return sip_sdp.parse(sdp)
        except sip_sdp.SdpError as exc:
            raise SipMediaError(f"unusable SDP: {exc}") from None

    def _choose_audio(self, audio: sip_sdp.Media,
                      allowed: tuple[str, ...] | list[str]) -> tuple[sip_sdp.RtpCodec, sip_sdp.RtpCodec | None]:
        try:
            codec, dtmf = sip_sdp.choose_audio(audio, tuple(allowed))
        except sip_sdp.SdpError as exc:
            raise SipMediaError(str(exc)) from None
        same_clock = sip_sdp.find(audio, "telephone-event") if codec.clock_rate == 8000 else None
        for pt in audio.formats:  # an event clock that is the audio's, if offered
            candidate = audio.codecs.get(pt)
            if candidate is not None and candidate.key == "telephone-event" \
                    and candidate.clock_rate == codec.clock_rate:
                same_clock = candidate
                break
        return codec, same_clock or dtmf

    @staticmethod
    def _check_direction(direction: str) -> None:
        if direction not in sip_sdp.DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(sip_sdp.DIRECTIONS)}, not {direction!r}")

    def _negotiated(self, audio: sip_sdp.Media, codec: sip_sdp.RtpCodec, dtmf: sip_sdp.RtpCodec | None,
                    video_section: sip_sdp.Media | None, video: sip_sdp.RtpCodec | None, local: str) -> None:
        assert self._audio_ep is not None and audio.address is not None
        self._audio_ep.set_remote(audio.address, audio.port, audio.rtcp_port)
        if video is not None and video_section is not None and self._video_ep is not None \
                and video_section.address is not None:
            self._video_ep.set_remote(video_section.address, video_section.port, video_section.rtcp_port)
        self.remote_direction = audio.direction
        self._sip = _SipSide(codec, dtmf, video, local)
        if self._sip_rewriter is None or self._sip_rewriter.clock_rate != codec.clock_rate:
            if self._sip_rewriter is not None:  # another RTP clock: another SSRC (RFC 7160 section 4.1)
                self._sip_ssrc = secrets.randbits(32) or 1
            self._sip_rewriter = self.core.rtp.RtpRewriter(self._sip_ssrc, codec.payload_type, codec.clock_rate)
        if self._sip_ingest is None or self._sip_ingest.clock_rate != codec.clock_rate:
            self._sip_ingest = self.core.track.IngestTrack("opus", codec.clock_rate)
        if video is not None and self._sip_video_track is None:
            self._sip_video_track = self._publish(self.from_sip, Codec("video", "H264", 90000, H264_PT,
                                                                       {"packetization-mode": "1"},
                                                                       native=_h264_native()))
        self._apply_direction()
        self._wire()

    # -- wiring the legs together ------------------------------------------------------------------

    def _apply_direction(self) -> None:
        now = self.core.now()
        self._timer_from = now  # a new SDP restarts the RTP timer

    @property
    def sending_to_sip(self) -> bool:
        """Whether the browser's audio (and events) go to the peer: not while either side holds (a held
        call gets nothing from us, no music on hold either)."""
        return self._sip.local_direction == "sendrecv" and self.remote_direction in ("sendrecv", "recvonly")

    @property
    def on_hold(self) -> bool:
        return self._sip.local_direction != "sendrecv" or self.remote_direction != "sendrecv"

    def _wire(self) -> None:
        """Connect the legs once both are negotiated; again when the SIP codec changes."""
        codec = self._sip.audio
        browser_audio = self.from_browser.track("audio")
        if codec is None or browser_audio is None or self._peer is None:
            return
        key = (codec.key, codec.payload_type, self._sip.video is not None)
        if key == self._wired:
            return
        self._unwire()
        self._wired = key
        now = self.core.now()
        loop = asyncio.get_running_loop()
        if codec.key == "opus":  # same codec: forwarded both ways, no decoding
            reader = RtpReader(self.from_browser, self.core.rtcp)
            sink = TrackSink(self.core.rtp, secrets.randbits(32) or 1, codec.payload_type, codec.clock_rate,
                             video=False, send_rtp=self._send_forwarded, send_rtcp=lambda data: False)
            reader.add_sink(browser_audio, sink, now)
            reader.attach(now)
            self._sip_reader = reader
        else:
            self._to_sip = AudioTranscoder(f"{self.call_id} to sip", "opus", codec.key, self._on_to_sip)
            self._from_sip = AudioTranscoder(f"{self.call_id} from sip", codec.key, "opus", self._on_from_sip)
            self._from_sip_ssrc = secrets.randbits(32) or 1  # readers' rewriters continue across the change
            self._to_sip.start(loop)
            self._from_sip.start(loop)
            browser_audio.listeners.append(self._on_browser_audio)
            self._sip_listening = browser_audio
        if self._sip.video is not None:
            self._wire_video(now)

    def _wire_video(self, now: float) -> None:
        browser_video = self.from_browser.track("video")
        if browser_video is None or self._video_ep is None:
            return
        source = browser_video
        if browser_video.codec.name != "H264":
            source = self._video_transcoder(self.from_browser, "H264", now) or browser_video
        video = self._sip.video
        if source.codec.name == "H264" and video is not None:
            reader = RtpReader(self.from_browser, self.core.rtcp)
            sink = TrackSink(self.core.rtp, self._sip_video_ssrc, video.payload_type, 90000, video=True,
                             send_rtp=self._video_ep.send_rtp, send_rtcp=self._video_ep.send_rtcp)
            reader.add_sink(source, sink, now)
            reader.attach(now)
            self._sip_video_reader = reader
        browser_sink = self._browser_sinks.get("video")
        if browser_sink is not None and self._sip_video_track is not None:
            target = self._sip_video_track
            if self._browser_codecs.get("video") != "H264":
                target = self._video_transcoder(self.from_sip, self._browser_codecs.get("video", "VP8"), now) \
                    or self._sip_video_track
            if target.codec.name == self._browser_codecs.get("video"):
                self._browser_reader.add_sink(target, browser_sink, now)

    def _video_transcoder(self, stream: Stream, codec: str, now: float) -> PublishedTrack | None:
        try:
            transcoder = self.transcoders.acquire(stream, Target("video", codec), now)
        except (TranscodingDisabled, LookupError, ValueError) as exc:
            log.info("call %r: no %s video: %s", self.call_id, codec, exc)
            return None
        self._video_transcoders.append(transcoder)
        return transcoder.rtp_track()

    def _unwire(self) -> None:
        self._wired = None
        for reader in (self._sip_reader, self._sip_video_reader):
            if reader is not None:
                reader.detach()
                reader.close_routes()
        self._sip_reader = self._sip_video_reader = None
        if self._sip_listening is not None:
            if self._on_browser_audio in self._sip_listening.listeners:
                self._sip_listening.listeners.remove(self._on_browser_audio)
            self._sip_listening = None
        for transcoder in (self._to_sip, self._from_sip):
            if transcoder is not None:
                transcoder.close()
        self._to_sip = self._from_sip = None
        for video in self._video_transcoders:
            self.transcoders.release(video)
        self._video_transcoders = []

    @property
    def transcoding(self) -> bool:
        return self._to_sip is not None

    @property
    def audio_transcoders(self) -> list[AudioTranscoder]:
        return [t for t in (self._to_sip, self._from_sip) if t is not None]

    # -- browser -> SIP ----------------------------------------------------------------------------

    def _send_sip(self, packet: bytes | bytearray, payload_type: int, now: float) -> bool:
        """Every packet to the SIP peer: one SSRC, continuous numbering (the rewriter's)."""
        endpoint = self._audio_ep
        if endpoint is None or self._sip_rewriter is None:
            return False
        buf = bytearray(packet)
        rewriter = self._sip_rewriter
        rewriter.out_payload_type = payload_type
        try:
            rewriter.rewrite(buf, now)
        except ValueError:
            return False
        return endpoint.send_rtp(buf)

    def _audio_may_go(self) -> bool:
        if not self.sending_to_sip:
            self.audio_not_sent_on_hold += 1
            return False
        if self._dtmf_sender is not None and self._dtmf_sender.active:
            self.audio_held_for_dtmf += 1
            return False
        return True

    def _send_forwarded(self, packet: bytes) -> bool:
        codec = self._sip.audio
        if codec is None or not self._audio_may_go():
            return False
        return self._send_sip(packet, codec.payload_type, self.core.now())

    def _on_browser_audio(self, packet: bytes, flags: int, now: float) -> None:
        transcoder = self._to_sip
        if transcoder is None or not self.sending_to_sip:
            return
        try:
            header = self.core.rtp.parse_rtp(packet)
        except ValueError:
            return
        start = header.payload_offset
        transcoder.push(packet[start:start + header.payload_length], header.timestamp)

    def _on_to_sip(self, payloads: list[tuple[bytes, int]]) -> None:
        codec = self._sip.audio
        if codec is None or self._audio_ep is None:
            return
        now = self.core.now()
        header_type = self.core.rtp.RtpHeader
        for payload, timestamp in payloads:
            if not self._audio_may_go():
                continue
            self._transcoded_seq = (self._transcoded_seq + 1) & 0xFFFF
            header = header_type(payload_type=codec.payload_type, sequence_number=self._transcoded_seq,
                                 timestamp=timestamp, ssrc=_SOURCE_TRANSCODED)
            self._send_sip(bytes(header) + payload, codec.payload_type, now)

    # -- SIP -> browser ----------------------------------------------------------------------------

    def _on_sip_rtp(self, data: bytes, now: float) -> None:
        try:
            header = self.core.rtp.parse_rtp(data)
        except ValueError:
            if self._audio_ep is not None:
                self._audio_ep.stats.junk += 1
            return
        codec, dtmf = self._sip.audio, self._sip.dtmf
        pt = header.payload_type
        self._last_rtp_at = now
        if codec is not None and pt == codec.payload_type:
            if self._sip_ingest is not None:
                try:
                    self._sip_ingest.push(data, now)
                except ValueError:
                    pass
            if self._from_sip is not None:
                start = header.payload_offset
                self._from_sip.push(data[start:start + header.payload_length], header.timestamp)
            elif codec.key == "opus":
                self._sip_audio_track.on_rtp(data, now)
        elif dtmf is not None and pt == dtmf.payload_type:
            start = header.payload_offset
            for digit in self._dtmf_receiver.push(data[start:start + header.payload_length], header.timestamp):
                self.dtmf_received += 1
                try:
                    self.on_dtmf(digit)
                except Exception:
                    log.exception("call %r: on_dtmf failed", self.call_id)
        else:
            self.unknown_payload += 1

    def _on_from_sip(self, payloads: list[tuple[bytes, int]]) -> None:
        now = self.core.now()
        header_type = self.core.rtp.RtpHeader
        for payload, timestamp in payloads:
            self._from_sip_seq = (self._from_sip_seq + 1) & 0xFFFF
            header = header_type(payload_type=OPUS_PT, sequence_number=self._from_sip_seq,
                                 timestamp=(timestamp + self._from_sip_ts) & 0xFFFFFFFF, ssrc=self._from_sip_ssrc)
            self._sip_audio_track.on_rtp(bytes(header) + payload, now)

    def _on_sip_rtcp(self, data: bytes, now: float) -> None:
        try:
            packets = self.core.rtcp.parse_rtcp(data)
        except ValueError:
            self.rtcp_junk += 1
            return
        for packet in packets:
            if packet.packet_type == self.core.rtcp.RTCP_SR and self._sip_ingest is not None:
                self._sip_ingest.on_sender_report(packet.ntp_timestamp, packet.rtp_timestamp, now)

    def _on_sip_video_rtp(self, data: bytes, now: float) -> None:
        video = self._sip.video
        if video is None or self._sip_video_track is None or (data[1] & 0x7F) != video.payload_type:
            self.unknown_payload += 1
            return
        self._sip_video_track.on_rtp(data, now)

    def _on_sip_video_rtcp(self, data: bytes, now: float) -> None:
        if self._sip_video_reader is not None:
            self._sip_video_reader.on_rtcp(data, now)  # the peer's PLI/FIR/NACK on what we send

    # -- DTMF --------------------------------------------------------------------------------------

    def send_dtmf(self, digits: str, duration_ms: int = 160) -> None:
        """RFC 4733 telephone-event packets in the SIP leg's RTP. SipMediaError when the peer takes none
        (the signalling side may use SIP INFO instead); ValueError on digits that are not DTMF."""
        self._check_open()
        dtmf = self._sip.dtmf
        if dtmf is None or self._audio_ep is None:
            raise SipMediaError("the SIP peer did not negotiate telephone-event")
        if self._dtmf_sender is None or self._dtmf_sender.clock_rate != dtmf.clock_rate:
            self._dtmf_sender = DtmfSender(dtmf.clock_rate)
        self._dtmf_sender.send(digits, duration_ms)
        if self._dtmf_task is None or self._dtmf_task.done():
            self._dtmf_task = self._start_task(self._dtmf_loop())

    async def _dtmf_loop(self) -> None:
        sender = self._dtmf_sender
        assert sender is not None
        header_type = self.core.rtp.RtpHeader
        while sender.active and not self.closed:
            dtmf = self._sip.dtmf
            if dtmf is None:
                return
            for event in sender.due(self.core.now()):
                self._dtmf_seq = (self._dtmf_seq + 1) & 0xFFFF
                header = header_type(marker=event.marker, payload_type=dtmf.payload_type,
                                     sequence_number=self._dtmf_seq, timestamp=event.timestamp, ssrc=_SOURCE_DTMF)
                if self.sending_to_sip:
                    # The event's start as `now`: audio after it continues from the event's timeline.
                    self._send_sip(bytes(header) + event.payload, dtmf.payload_type, event.started)
            await asyncio.sleep(0.02)

    # -- RTCP, timeout -----------------------------------------------------------------------------

    async def _sip_report_loop(self) -> None:
        rtcp = self.core.rtcp
        while True:
            await asyncio.sleep(RTCP_INTERVAL)
            endpoint, rewriter, ingest = self._audio_ep, self._sip_rewriter, self._sip_ingest
            if endpoint is None or rewriter is None:
                continue
            now = self.core.now()
            blocks = []
            if ingest is not None and ingest.ssrc is not None and ingest.packets:
                last_sr = ingest.last_sr
                lsr = (last_sr[0] >> 16) & 0xFFFFFFFF if last_sr else 0
                blocks.append(rtcp.RtcpReportBlock(*ingest.report_block(now, lsr, last_sr[2] if last_sr else None)))
            if rewriter.packet_count and rewriter.last_timestamp is not None:
                wall = time.time() + _NTP_EPOCH
                ntp = (int(wall) << 32) | int((wall % 1) * (1 << 32))
                report = rtcp.build_sr(self._sip_ssrc, ntp, rewriter.last_timestamp, rewriter.packet_count & 0xFFFFFFFF,
                                       rewriter.byte_count & 0xFFFFFFFF, blocks)
            else:
                report = rtcp.build_rr(self._sip_ssrc, blocks)
            endpoint.send_rtcp(report + rtcp.build_sdes(self._sip_ssrc, f"call-{self._sip_ssrc:08x}"))

    async def _timeout_loop(self) -> None:
        period = min(1.0, self.settings.rtp_timeout / 4)
        while not self._timed_out:
            await asyncio.sleep(period)
            now = self.core.now()
            if self.on_hold or self._sip.audio is None:
                self._timer_from = now  # held calls send nothing: the timer starts when they resume
                continue
            since = max(t for t in (self._last_rtp_at, self._timer_from, 0.0) if t is not None)
            if now - since > self.settings.rtp_timeout:
                self._media_lost(f"no RTP from the SIP peer for {now - since:.0f} s")

    def _media_lost(self, why: str) -> None:
        """The call's media is gone (RTP timeout, or the browser's connection failed): `on_timeout`, once."""
        if self._timed_out or self.closed:
            return
        self._timed_out = True
        log.info("call %r: %s", self.call_id, why)
        try:
            self.on_timeout()
        except Exception:
            log.exception("call %r: on_timeout failed", self.call_id)

    def _on_browser_state(self, state: str) -> None:
        if state in ("failed", "closed"):
            self._media_lost(f"the browser's connection is {state}")

    # -- the rest ----------------------------------------------------------------------------------

    def _start_task(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        return task

    def _check_open(self) -> None:
        if self.closed:
            raise SipMediaError("the call has ended")

    def describe(self) -> dict[str, Any]:
        """Codecs, ports, packets and bytes each way, and whether audio is transcoded."""
        sip = self._sip
        endpoint = self._audio_ep
        ingest = self._sip_ingest
        peer = self._peer
        return {
            "call_id": self.call_id,
            "streams": {"from_browser": self.stream_names[0], "from_sip": self.stream_names[1]},
            "browser": {
                "codecs": dict(self._browser_codecs),
                "connected": bool(peer is not None and peer.connected),
                "rtp_received": peer.stats.rtp_received if peer else 0,
                "rtp_sent": self._browser_reader.totals().sent,
                "dropped": self._browser_reader.totals().dropped,
            },
            "sip": {
                "codec": sip.audio.name if sip.audio else None,
                "payload_type": sip.audio.payload_type if sip.audio else None,
                "telephone_event": sip.dtmf.payload_type if sip.dtmf else None,
                "video": sip.video.name if sip.video else None,
                "local_port": endpoint.port if endpoint else None,
                "video_port": self._video_ep.port if self._video_ep else None,
                "remote": list(endpoint.rtp_remote[:2]) if endpoint and endpoint.rtp_remote else None,
                "latched": bool(endpoint and endpoint.rtp_latched),
                "local_direction": sip.local_direction,
                "remote_direction": self.remote_direction,
                "rtp_received": endpoint.stats.rtp_received if endpoint else 0,
                "bytes_received": endpoint.stats.rtp_bytes_received if endpoint else 0,
                "rtp_sent": endpoint.stats.rtp_sent if endpoint else 0,
                "bytes_sent": endpoint.stats.rtp_bytes_sent if endpoint else 0,
                "rtcp_received": endpoint.stats.rtcp_received if endpoint else 0,
                "rtcp_sent": endpoint.stats.rtcp_sent if endpoint else 0,
                "junk": endpoint.stats.junk if endpoint else 0,
                "foreign": endpoint.stats.foreign if endpoint else 0,
                "send_dropped": endpoint.stats.send_dropped if endpoint else 0,
                "unknown_payload": self.unknown_payload,
                "lost": ingest.lost if ingest is not None else 0,
                "dtmf_received": self.dtmf_received,
                "dtmf_sent": self._dtmf_sender.events_sent if self._dtmf_sender else 0,
            },
            "transcoding": self.transcoding,
            "transcoders": [{"name": t.name, "source": t.source.name, "target": t.target.name,
                             "packets_in": t.stats.packets_in, "packets_out": t.stats.packets_out,
                             "dropped": t.stats.dropped, "cpu_seconds": round(t.stats.cpu_seconds, 3)}
                            for t in self.audio_transcoders],
            "video_transcoders": len(self._video_transcoders),
        }

    async def close(self) -> None:
        """Idempotent: stops both legs, releases both streams and the ports."""
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        self._unwire()
        self._browser_reader.detach()
        self._browser_reader.close_routes()
        for endpoint in (self._audio_ep, self._video_ep):
            if endpoint is not None:
                endpoint.close()
        for stream in (self.from_browser, self.from_sip):
            self._release(stream)
        if self._peer is not None:
            await self._peer.close()
