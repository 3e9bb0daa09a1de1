"""What every RTP reader of a stream does the same way: a WebRTC viewer, an RTSP client (and later the
SIP bridge) each hold one TrackSink per track they forward, start and stop together, learn the stream's
end from the stream, and act on the RTCP their receiver sends back:

- NACK (RFC 4585 section 6.2.1): answered from the track's packet cache, with the reader's numbering;
- PLI (RFC 4585 section 6.3.1) and FIR (RFC 5104 section 4.3.1): a keyframe request to the publisher,
  rate-limited by the track. A PLI names the media SSRC it is about; one that names none of ours (some
  players send 0) asks every video track of the reader.

No I/O here: the transports give packets in and the routes out; time comes in as `now`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from .stream import PublishedTrack, SinkStats, Stream, TrackSink


class RtpReader:
    def __init__(self, stream: Stream, rtcp: ModuleType):
        self.stream = stream
        self.rtcp = rtcp
        self.sinks: list[tuple[PublishedTrack, TrackSink]] = []
        self.attached = False
        self.rtcp_junk = 0
        self.nacks_answered = 0
        self.last_rtcp_at: float | None = None

    def add_sink(self, track: PublishedTrack, sink: TrackSink, now: float) -> None:
        self.sinks.append((track, sink))
        if self.attached:
            track.attach(sink, now)

    def attach(self, now: float) -> bool:
        """Start forwarding (a new reader gets the cached GOP and the publisher is asked for a keyframe).
        False when there is nothing to start: attached already, or the stream has ended."""
        if self.attached or self.stream.closed:
            return False
        self.attached = True
        for track, sink in self.sinks:
            track.attach(sink, now)
        return True

    def detach(self) -> None:
        """Stop forwarding; attaching again starts at a keyframe again (an RTSP PLAY after PAUSE)."""
        for track, sink in self.sinks:
            track.detach(sink)
            sink.waiting_keyframe = sink.video
        self.attached = False

    def close_routes(self) -> None:
        """Let the fan-out outputs go of the sockets they hold, now rather than when collected."""
        for _track, sink in self.sinks:
            sink.output.clear_route()

    def on_end(self, listener: Callable[[Stream], None]) -> None:
        self.stream.on_end(listener)

    def on_rtcp(self, data: bytes, now: float) -> None:
        """The receiver's RTCP (compound packets; junk is counted and ignored)."""
        try:
            packets = self.rtcp.parse_rtcp(data)
        except ValueError:
            self.rtcp_junk += 1
            return
        self.last_rtcp_at = now
        for packet in packets:
            kind = type(packet).__name__
            if kind == "RtcpNack":
                for track, sink in self.sinks:
                    if sink.ssrc == packet.media_ssrc:
                        self.nacks_answered += track.nack(sink, packet.lost)
            elif kind in ("RtcpPli", "RtcpFir"):
                media_ssrc = packet.media_ssrc if kind == "RtcpPli" else None
                named = [track for track, sink in self.sinks if sink.ssrc == media_ssrc]
                for track in named or [track for track, sink in self.sinks if sink.video]:
                    track.request_keyframe(now)

    def totals(self) -> SinkStats:
        total = SinkStats()
        for _track, sink in self.sinks:
            stats = sink.stats
            total.sent += stats.sent
            total.dropped += stats.dropped
            total.retransmitted += stats.retransmitted
            total.skipped_waiting_keyframe += stats.skipped_waiting_keyframe
        return total
