"""The routing core: one Stream per published name, its tracks, and the sinks that forward its packets.

A published track ingests every RTP packet once (IngestTrack, native: statistics, NACK cache, keyframe
and GOP tracking), then hands it to its Fanout: one native loop over every sink of the track (a sink is
one reader's outgoing track) that rewrites SSRC, payload type, sequence number and timestamp, protects
and sends without waiting; a full socket drops the packet and counts it, so a slow reader never holds up
the publisher or the others. Readers that need media rather than RTP take the stream's frame taps
(Stream.frames). A stream tells its readers when it ends (Stream.on_end). No I/O here: routes are given
by the transport side, and time comes in as `now`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .frames import FrameReaders, TrackFrames

from . import native

log = logging.getLogger(__name__)

KEYFRAME_REQUEST_INTERVAL = 1.0  # seconds between keyframe requests to a publisher, per track


class StreamNameInUse(ValueError):
    pass


@dataclass
class Codec:
    kind: str  # "audio" | "video"
    name: str  # "VP8", "H264", "opus"
    clock_rate: int
    payload_type: int  # the publisher's
    parameters: dict[str, Any] = field(default_factory=dict)
    native: Any = None  # the transport side's own codec object, to negotiate viewers with


@dataclass
class SinkStats:
    sent: int = 0
    dropped: int = 0
    retransmitted: int = 0
    skipped_waiting_keyframe: int = 0


class TrackSink:
    """One viewer's outgoing track: a fan-out Output (rewrite state, route, counters) and its RTCP.

    Packets reach it through its track's Fanout, one native loop for all viewers of the track. Until
    the transport gives a native route (`output.use_udp` / `use_tcp`), packets go to `send_rtp`."""

    def __init__(self, rtp: ModuleType, ssrc: int, payload_type: int, clock_rate: int, video: bool,
                 send_rtp: Callable[[bytes], bool], send_rtcp: Callable[[bytes], bool]):
        self.rtp = rtp
        # The RTCP and fan-out modules of rtp's kind (native or twin): a twin Output takes only a twin
        # RtpRewriter, and a --python-core server keeps to the twins throughout.
        self.rtcp = native.rtcp_module(python_core=native.is_twin(rtp))
        self.fanout = native.fanout_module(python_core=native.is_twin(rtp))
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.rewriter = rtp.RtpRewriter(ssrc, payload_type, clock_rate)
        self.video = video
        self.output = self.fanout.Output(self.rewriter, video)
        self.output.use_callable(send_rtp)
        self.send_rtp = send_rtp
        self.send_rtcp = send_rtcp

    @property
    def waiting_keyframe(self) -> bool:
        return bool(self.output.waiting_keyframe)

    @waiting_keyframe.setter
    def waiting_keyframe(self, value: bool) -> None:
        self.output.waiting_keyframe = value

    @property
    def stats(self) -> SinkStats:
        out = self.output
        return SinkStats(out.sent, out.dropped, out.retransmitted, out.skipped_waiting_keyframe)

    def forward(self, packet: bytes, now: float) -> None:
        """One packet to this viewer alone (a late joiner's GOP); the track's Fanout does the rest."""
        self.output.send(packet, now)

    def retransmit(self, packet: bytes) -> None:
        """A cached packet again, with the offsets in force (RFC 4588 is not used: same SSRC and seq)."""
        self.output.retransmit(packet)

    def original_seq(self, out_seq: int) -> int:
        return (out_seq - self.rewriter.seq_offset) & 0xFFFF

    def send_sender_report(self, ntp: int, rtp_ts: int) -> None:
        """The publisher's NTP/RTP mapping moved onto this sink's timeline, so A/V sync holds."""
        report = self.rtcp.build_sr(self.ssrc, ntp, (rtp_ts + self.rewriter.ts_offset) & 0xFFFFFFFF,
                                    self.rewriter.packet_count & 0xFFFFFFFF,
                                    self.rewriter.byte_count & 0xFFFFFFFF)
        self.send_rtcp(report)


class PublishedTrack:
    def __init__(self, codec: Codec, ingest: Any, flags: ModuleType, request_keyframe: Callable[[int], None]):
        self.codec = codec
        self.ingest = ingest
        self._keyframe_flag = flags.KEYFRAME
        self._duplicate_flag = flags.DUPLICATE
        self._request_keyframe = request_keyframe
        self.sinks: list[TrackSink] = []
        self.fanout: Any = None  # the sinks' Fanout, made with the first (native or twin, as they are)
        # Packet listeners: sinks that need the media rather than RTP to forward (frame taps for
        # HLS, recording, transcoding, snapshots). Called with (packet, ingest flags, now).
        self.listeners: list[Callable[[bytes, int, float], None]] = []
        # Sender report listeners (ntp, rtp_ts, now): tracks derived from this one (transcoded) that
        # translate the publisher's NTP/RTP mapping onto their own timestamps.
        self.report_listeners: list[Callable[[int, int, float], None]] = []
        self.junk = 0  # packets that failed to parse
        self.keyframe_requests = 0
        self._last_keyframe_request = -1e9
        # A request that came inside the rate limit: sent when the limit allows, unless a keyframe
        # arrives first (then whoever asked has one).
        self._keyframe_request_pending = False

    @property
    def kind(self) -> str:
        return self.codec.kind

    def on_rtp(self, packet: bytes, now: float) -> None:
        try:
            flags = self.ingest.push(packet, now)
        except ValueError:
            self.junk += 1
            return
        if flags & self._duplicate_flag:
            return  # viewers got it already
        keyframe = flags & self._keyframe_flag
        if keyframe:
            self._keyframe_request_pending = False
        elif self._keyframe_request_pending:
            self.request_keyframe(now)
        if self.sinks:
            self.fanout.forward(packet, bool(keyframe), now)
        for listener in self.listeners:
            listener(packet, flags, now)

    def attach(self, sink: TrackSink, now: float) -> None:
        """A new viewer starts at once from the cached GOP (last keyframe onward), and the publisher is
        asked for a fresh keyframe."""
        if sink in self.sinks:
            return
        if sink.video:
            gop = self.ingest.gop()
            if gop:
                sink.waiting_keyframe = False
                for packet in gop:
                    sink.forward(packet, now)
            self.request_keyframe(now)
        if self.fanout is None:
            self.fanout = sink.fanout.Fanout()
        self.fanout.add(sink.output)
        self.sinks.append(sink)

    def detach(self, sink: TrackSink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)
            self.fanout.remove(sink.output)

    def request_keyframe(self, now: float) -> None:
        """Ask the publisher for a keyframe, at most once per KEYFRAME_REQUEST_INTERVAL. A request inside
        the interval is not lost: it goes out when the interval is over, unless a keyframe came first."""
        if self.codec.kind != "video":
            return
        if now - self._last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            self._keyframe_request_pending = True
            return
        self._keyframe_request_pending = False
        self._last_keyframe_request = now
        ssrc = self.ingest.ssrc
        if ssrc is None:
            return
        self.keyframe_requests += 1
        self._request_keyframe(ssrc)

    def nack(self, sink: TrackSink, lost_out_seqs: list[int]) -> int:
        """Answer a viewer's NACK from the cache (RFC 4585 section 6.2.1). Returns packets resent."""
        resent = 0
        for out_seq in lost_out_seqs:
            packet = self.ingest.get(sink.original_seq(out_seq))
            if packet is not None:
                sink.retransmit(packet)
                resent += 1
        return resent

    def on_sender_report(self, ntp: int, rtp_ts: int, now: float) -> None:
        self.ingest.on_sender_report(ntp, rtp_ts, now)
        for sink in self.sinks:
            sink.send_sender_report(ntp, rtp_ts)
        for listener in self.report_listeners:
            listener(ntp, rtp_ts, now)


class Stream:
    def __init__(self, name: str):
        self.name = name
        self.tracks: list[PublishedTrack] = []
        self.closed = False
        self._end_listeners: list[Callable[[Stream], None]] = []
        # The depacketizer of the frame readers' taps (the Python twin on a --python-core server);
        # None: the native one.
        self.depacketize: ModuleType | None = None
        self._frame_readers: FrameReaders | None = None

    @property
    def frame_readers(self) -> FrameReaders:
        """The shared frame sources of this stream's tracks, made for the first reader."""
        if self._frame_readers is None:
            from .frames import FrameReaders  # PyAV and the depacketizer only once a stream needs frames

            self._frame_readers = FrameReaders(self)
        return self._frame_readers

    def frames(self, kind: str, now: float) -> TrackFrames:
        """The frames of the track of that kind, one tap shared by every reader (LookupError: no such
        track). It closes when its last subscriber leaves, or when the stream ends: subscribe at once."""
        return self.frame_readers.source(kind, now)

    def on_end(self, listener: Callable[[Stream], None]) -> None:
        """`listener(stream)` is called once when the stream ends (at once if it has ended)."""
        if self.closed:
            listener(self)
        else:
            self._end_listeners.append(listener)

    def remove_end_listener(self, listener: Callable[[Stream], None]) -> None:
        if listener in self._end_listeners:
            self._end_listeners.remove(listener)

    def end(self) -> None:
        """The source is gone: every reader is told, once."""
        if self.closed:
            return
        self.closed = True
        listeners, self._end_listeners = self._end_listeners, []
        for listener in listeners:
            try:
                listener(self)
            except Exception:  # one reader's failure must not keep the others from ending
                log.exception("stream %r: end listener failed", self.name)

    def track(self, kind: str) -> PublishedTrack | None:
        for track in self.tracks:
            if track.kind == kind:
                return track
        return None

    def by_payload_type(self) -> dict[int, PublishedTrack]:
        return {t.codec.payload_type: t for t in self.tracks}

    @property
    def viewers(self) -> int:
        return max((len(t.sinks) for t in self.tracks), default=0)


class StreamRegistry:
    """Published names are unique while published."""

    def __init__(self) -> None:
        self._streams: dict[str, Stream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def claim(self, name: str) -> Stream:
        if name in self._streams:
            raise StreamNameInUse(name)
        stream = Stream(name)
        self._streams[name] = stream
        return stream

    def get(self, name: str) -> Stream | None:
        return self._streams.get(name)

    def release(self, stream: Stream) -> None:
        if self._streams.get(stream.name) is stream:
            del self._streams[stream.name]
        stream.end()

    def all(self) -> list[Stream]:
        return list(self._streams.values())
