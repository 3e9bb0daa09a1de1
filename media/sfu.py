"""A WebRTC publisher feeding a Stream, and a WebRTC viewer fed by one: the Peer transport joined to the
routing core. Knows nothing of sessions or the client protocol."""

from __future__ import annotations

import asyncio
import logging
import secrets
from types import ModuleType

from .reader import RtpReader
from .stream import Codec, PublishedTrack, Stream, TrackSink
from .webrtc import Peer, Route

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0  # seconds between our receiver reports (and REMB) to a publisher


class MediaCore:
    """The implementation modules in use (native or the Python twins) and the clock."""

    def __init__(self, rtp: ModuleType, rtcp: ModuleType, track: ModuleType, max_bitrate: int = 2_500_000,
                 public_address: str | None = None):
        self.rtp = rtp
        self.rtcp = rtcp
        self.track = track
        self.max_bitrate = max_bitrate
        self.public_address = public_address  # announced in answers instead of host addresses

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()


def receiver_report(rtcp: ModuleType, rtcp_ssrc: int, tracks: list[PublishedTrack],
                    now: float) -> tuple[bytes, list[int]] | None:
    """An RTCP receiver report (RFC 3550 6.4.2) on the tracks that received something, and their
    SSRCs; None when none did."""
    blocks = []
    ssrcs = []
    for track in tracks:
        if track.ingest.ssrc is None or track.ingest.packets == 0:
            continue
        last_sr = track.ingest.last_sr
        lsr = (last_sr[0] >> 16) & 0xFFFFFFFF if last_sr else 0
        fields = track.ingest.report_block(now, lsr, last_sr[2] if last_sr else None)
        blocks.append(rtcp.RtcpReportBlock(*fields))
        ssrcs.append(track.ingest.ssrc)
    if not blocks:
        return None
    return rtcp.build_rr(rtcp_ssrc, blocks), ssrcs


class WebRtcPublisher:
    def __init__(self, core: MediaCore, stream: Stream):
        self.core = core
        self.stream = stream
        self.peer = Peer(f"publisher {stream.name!r}", core.public_address)
        self.rtcp_ssrc = secrets.randbits(32) or 1
        self._by_pt: dict[int, PublishedTrack] = {}
        self._by_ssrc: dict[int, PublishedTrack] = {}
        self._reports: asyncio.Task[None] | None = None
        self.rtcp_junk = 0
        self.connected_at: float | None = None

    async def start(self, offer: str) -> str:
        answer = await self.peer.answer_publisher(offer)
        for negotiated in self.peer.tracks:
            codec = negotiated.codec
            assert codec.payloadType is not None  # negotiated codecs always have one
            info = Codec(negotiated.kind, codec.mimeType.split("/", 1)[1], codec.clockRate, codec.payloadType,
                         dict(codec.parameters), native=codec)
            ingest = self.core.track.IngestTrack(info.name, info.clock_rate)
            track = PublishedTrack(info, ingest, self.core.track, self._request_keyframe)
            self.stream.tracks.append(track)
            if negotiated.ssrc is not None:
                self._by_ssrc[negotiated.ssrc] = track
        self._by_pt = self.stream.by_payload_type()
        self.peer.on_rtp = self._on_rtp
        self.peer.on_rtcp = self._on_rtcp
        self._reports = asyncio.get_running_loop().create_task(self._report_loop())
        return answer

    def _on_rtp(self, data: bytes) -> None:
        if len(data) < 12:
            return
        track = self._by_pt.get(data[1] & 0x7F)
        if track is not None:
            track.on_rtp(data, self.core.now())

    def _on_rtcp(self, data: bytes) -> None:
        rtcp = self.core.rtcp
        try:
            packets = rtcp.parse_rtcp(data)
        except ValueError:
            self.rtcp_junk += 1
            return
        now = self.core.now()
        for packet in packets:
            if packet.packet_type == rtcp.RTCP_SR:
                track = self._track_for_ssrc(packet.ssrc)
                if track is not None:
                    track.on_sender_report(packet.ntp_timestamp, packet.rtp_timestamp, now)

    def _track_for_ssrc(self, ssrc: int) -> PublishedTrack | None:
        track = self._by_ssrc.get(ssrc)
        if track is None:
            for candidate in self.stream.tracks:
                if candidate.ingest.ssrc == ssrc:
                    self._by_ssrc[ssrc] = track = candidate
                    break
        return track

    def idle_for(self, now: float) -> float:
        """Seconds since the last RTP packet of any track (since connecting, if none came)."""
        last = [t.ingest.last_packet_at for t in self.stream.tracks if t.ingest.last_packet_at is not None]
        since = max(last) if last else self.connected_at
        return now - since if since is not None else 0.0

    def _request_keyframe(self, media_ssrc: int) -> None:
        self.peer.send_rtcp(self.core.rtcp.build_pli(self.rtcp_ssrc, media_ssrc))

    async def _report_loop(self) -> None:
        """Receiver reports (loss, jitter, LSR/DLSR) and a REMB bitrate cap, as a browser expects from
        the peer it sends to: without them its congestion control has nothing to go on."""
        rtcp = self.core.rtcp
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            if not self.peer.connected:
                continue
            report = receiver_report(rtcp, self.rtcp_ssrc, self.stream.tracks, self.core.now())
            if report is None:
                continue
            rr, ssrcs = report
            self.peer.send_rtcp(rr + rtcp.build_remb(self.rtcp_ssrc, self.core.max_bitrate, ssrcs))

    async def close(self) -> None:
        if self._reports is not None:
            self._reports.cancel()
        await self.peer.close()


class WebRtcViewer(RtpReader):
    """A viewer of a stream. `tracks` picks, per kind, the track to forward when it is not the
    publisher's own (a transcoder's derived track, for a viewer that needs another codec or size)."""

    def __init__(self, core: MediaCore, stream: Stream, tracks: dict[str, PublishedTrack] | None = None):
        super().__init__(stream, core.rtcp)
        self.core = core
        self.tracks = {t.kind: t for t in stream.tracks}
        self.tracks.update(tracks or {})
        self.peer = Peer(f"viewer of {stream.name!r}", core.public_address)
        self.connected_at: float | None = None

    async def start(self, offer: str) -> str:
        wanted = {kind: t.codec.native for kind, t in self.tracks.items()}
        answer = await self.peer.answer_viewer(offer, wanted)
        now = self.core.now()
        for negotiated in self.peer.tracks:
            track = self.tracks.get(negotiated.kind)
            if track is None or negotiated.ssrc is None or negotiated.codec.payloadType is None:
                continue
            sink = TrackSink(self.core.rtp, negotiated.ssrc, negotiated.codec.payloadType, track.codec.clock_rate,
                             video=negotiated.kind == "video", send_rtp=self.peer.send_rtp,
                             send_rtcp=self.peer.send_rtcp)
            self.add_sink(track, sink, now)
        self.peer.on_rtcp = lambda data: self.on_rtcp(data, self.core.now())
        self.peer.on_route = self._route_changed
        return answer

    def _route_changed(self, route: Route | None) -> None:
        """Once the peer is connected, the fan-out sends to its socket itself (SRTP in native code);
        before, and after a change of route, through the peer (which resolves the route again)."""
        for _track, sink in self.sinks:
            if route is None:
                sink.output.use_callable(self.peer.send_rtp)
            else:
                sink.output.use_udp(route.fd, route.family, route.address, route.srtp)

    def attach(self, now: float | None = None) -> bool:
        """Start forwarding: called once the viewer's transport is connected."""
        now = self.core.now() if now is None else now
        if not super().attach(now):
            return False
        self.connected_at = now
        return True

    def silent_for(self, now: float) -> float:
        """Seconds since the viewer last sent RTCP (browsers report every second or so)."""
        return now - (self.last_rtcp_at if self.last_rtcp_at is not None else self.connected_at or now)

    @property
    def dropped(self) -> int:
        return self.totals().dropped

    async def close(self) -> None:
        self.detach()
        await self.peer.close()
