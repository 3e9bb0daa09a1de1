"""Frames of a published track, for the readers that need media rather than RTP to forward: the HLS
muxer, the recorder, the transcoder and snapshots.

A FrameTap listens to a PublishedTrack's packets (after ingest, duplicates left out), reassembles them
with the depacketizer and hands each complete frame on. For video it starts at a keyframe, asking the
publisher for one; frames broken by loss are dropped by the depacketizer, which then waits for the next
keyframe.

A stream owns its readers' taps (`Stream.frames(kind, now)`, held in its FrameReaders): one shared
TrackFrames per track however many readers, made for the first and closed when the last leaves or the
stream ends, and one Timeline per stream so its tracks line up (media/encoded.py).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import native
from .encoded import EncodedFrame, FrameSource, Timeline, Unwrapper

if TYPE_CHECKING:
    from .stream import PublishedTrack, Stream


class FrameTap:
    def __init__(self, track: PublishedTrack, depacketize: ModuleType, on_frame: Callable[[Any, float], None],
                 now: float):
        self.track = track
        self.depacketizer = depacketize.Depacketizer(track.codec.name, track.codec.clock_rate)
        self.on_frame = on_frame
        self.frames = 0
        track.listeners.append(self._on_packet)
        if track.kind == "video":
            track.request_keyframe(now)

    def _on_packet(self, packet: bytes, flags: int, now: float) -> None:
        try:
            frames = self.depacketizer.push(packet)
        except ValueError:
            return  # ingest counted it as junk already
        for frame in frames:
            self.frames += 1
            self.on_frame(frame, now)

    def close(self) -> None:
        if self._on_packet in self.track.listeners:
            self.track.listeners.remove(self._on_packet)


class TrackFrames(FrameSource):
    """The frames of a published track, as they arrive, as EncodedFrames on the stream's timeline."""

    def __init__(self, track: PublishedTrack, depacketize: ModuleType, timeline: Timeline, now: float):
        super().__init__()
        self.track = track
        self.codec = track.codec.name
        self.kind = track.kind
        self._unwrap = Unwrapper(timeline, track.codec.clock_rate)
        self._channels = int(track.codec.parameters.get("channels", 2) or 2) if self.kind == "audio" else 0
        self._tap = FrameTap(track, depacketize, self._on_frame, now)

    def _on_frame(self, frame: Any, now: float) -> None:
        data: bytes = frame.data
        self.emit(EncodedFrame(self.codec, data, self._unwrap(frame.timestamp, now), self.track.codec.clock_rate,
                               bool(frame.keyframe), channels=self._channels))

    def pts_of(self, rtp_timestamp: int) -> int | None:
        """The pts an RTP timestamp of this track maps to (for sender reports), None before any frame."""
        return self._unwrap.peek(rtp_timestamp)

    def request_keyframe(self, now: float) -> None:
        self.track.request_keyframe(now)

    def close(self) -> None:
        super().close()
        self._tap.close()


class FrameReaders:
    """The frame sources of one stream's tracks, shared by every reader. Held by the Stream."""

    def __init__(self, stream: Stream):
        self.stream = stream
        self.timeline = Timeline()
        self._sources: dict[PublishedTrack, TrackFrames] = {}
        stream.on_end(self._stream_ended)

    def source(self, kind: str, now: float) -> TrackFrames:
        """The frames of the stream's track of that kind (LookupError: no such track). The source closes
        when its last subscriber unsubscribes: subscribe right away."""
        track = self.stream.track(kind)
        if track is None:
            raise LookupError(f"stream {self.stream.name!r} has no {kind} track")
        source = self._sources.get(track)
        if source is None:
            depacketize = self.stream.depacketize or native.depacketize_module()
            source = self._sources[track] = TrackFrames(track, depacketize, self.timeline, now)
            source.on_idle = self._source_idle
        return source

    def __len__(self) -> int:
        return len(self._sources)

    def _source_idle(self, source: FrameSource) -> None:
        assert isinstance(source, TrackFrames)
        if self._sources.get(source.track) is source:
            del self._sources[source.track]
        source.close()

    def _stream_ended(self, stream: Stream) -> None:
        self.close()

    def close(self) -> None:
        """Every tap closed (the stream ended): readers still subscribed get no more frames."""
        sources = list(self._sources.values())
        self._sources.clear()
        for source in sources:
            source.close()
