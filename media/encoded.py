"""Encoded frames on a stream's shared timeline, and the sources that produce them.

Sinks that need media rather than RTP (the HLS segmenter, the recorder, the transcoder, snapshots)
subscribe to a FrameSource. Two kinds exist: `TrackFrames` (media/frames.py), the frames of a published
track as they arrive (reassembled from RTP by the depacketizer), shared through the stream
(`Stream.frames`), and a transcoder's output (media/transcode.py). Both call their subscribers on the
event loop thread.

Timestamps: every frame of a stream carries `pts`, an unwrapped 64-bit count of `clock_rate` ticks since
the stream's epoch (`Timeline`), so audio and video of one stream line up. A track is anchored on the
timeline by the arrival time of its first frame; from there its own RTP timestamps advance it, so
arrival jitter does not leak into the pts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import av

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EncodedFrame:
    """One encoded frame: an H.264 access unit (Annex B, SPS/PPS before each keyframe), a VP8 frame,
    an AAC frame (raw, no ADTS header) or an Opus packet."""

    codec: str  # "H264" | "VP8" | "AAC" | "opus"
    data: bytes
    pts: int  # clock_rate ticks since the stream's epoch
    clock_rate: int  # 90000 for video; the sample rate for audio
    keyframe: bool = True
    width: int = 0  # video, when known
    height: int = 0
    channels: int = 0  # audio
    extradata: bytes | None = None  # AAC: the AudioSpecificConfig

    @property
    def kind(self) -> str:
        return "audio" if self.codec in ("AAC", "opus") else "video"

    @property
    def seconds(self) -> float:
        return self.pts / self.clock_rate


FrameCallback = Callable[[EncodedFrame], None]


class FrameSource:
    """Subscribers of one stream of EncodedFrames. `on_idle` is called when the last one leaves, so an
    owner can stop what produces them (a transcoder, a tap)."""

    codec: str = ""
    kind: str = ""

    def __init__(self) -> None:
        self.subscribers: list[FrameCallback] = []
        self.on_idle: Callable[[FrameSource], None] = lambda source: None
        self.frames = 0

    def subscribe(self, callback: FrameCallback) -> None:
        self.subscribers.append(callback)

    def unsubscribe(self, callback: FrameCallback) -> None:
        if callback in self.subscribers:
            self.subscribers.remove(callback)
            if not self.subscribers:
                self.on_idle(self)

    def emit(self, frame: EncodedFrame) -> None:
        self.frames += 1
        for callback in list(self.subscribers):
            try:
                callback(frame)
            except Exception:  # one broken sink must not starve the others
                log.exception("frame subscriber %r failed", callback)

    def request_keyframe(self, now: float) -> None:
        """Ask whatever produces the frames for a keyframe soon."""

    def close(self) -> None:
        self.subscribers.clear()


class Timeline:
    """The shared epoch of one stream's tracks (loop time of the first frame of any track)."""

    def __init__(self) -> None:
        self.epoch: float | None = None

    def anchor(self, now: float) -> float:
        if self.epoch is None:
            self.epoch = now
        return now - self.epoch


class Unwrapper:
    """32-bit RTP timestamps to a monotonic 64-bit count on the stream's timeline."""

    def __init__(self, timeline: Timeline, clock_rate: int):
        self.timeline = timeline
        self.clock_rate = clock_rate
        self._last: int | None = None
        self._value = 0

    def __call__(self, timestamp: int, now: float) -> int:
        if self._last is None:
            self._value = round(self.timeline.anchor(now) * self.clock_rate)
        else:
            delta = (timestamp - self._last) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000  # an older frame (reordered B-frames are not sent by browsers)
            self._value += delta
        self._last = timestamp
        return self._value

    def peek(self, timestamp: int) -> int | None:
        """Where `timestamp` falls on the timeline, without moving on (None before the first frame)."""
        if self._last is None:
            return None
        delta = (timestamp - self._last) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        return self._value + delta


_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def aac_config(sample_rate: int, channels: int) -> bytes:
    """AAC-LC AudioSpecificConfig (ISO 14496-3 1.6.2.1), for frames that come without one. Raises
    ValueError for a sample rate AAC has no index for."""
    if sample_rate not in _AAC_RATES:
        raise ValueError(f"AAC has no sampling frequency index for {sample_rate} Hz")
    return ((2 << 11) | (_AAC_RATES.index(sample_rate) << 7) | (channels << 3)).to_bytes(2, "big")


def h264_parameter_sets(access_unit: bytes) -> bytes:
    """The SPS and PPS NAL units (Annex B) ahead of the first slice of an H.264 access unit."""
    out = []
    start = access_unit.find(b"\x00\x00\x01")
    while start >= 0:
        header = start + 3
        if header >= len(access_unit):
            break
        nal_type = access_unit[header] & 0x1F
        if nal_type in (1, 5):
            break
        end = access_unit.find(b"\x00\x00\x01", header)
        nal = access_unit[header : end if end >= 0 else len(access_unit)].rstrip(b"\x00")
        if nal_type in (7, 8):
            out.append(b"\x00\x00\x00\x01" + nal)
        start = end
    return b"".join(out)


def h264_size(keyframe: bytes) -> tuple[int, int]:
    """Width and height of an H.264 keyframe (decodes it once: SPS cropping is not worth a parser here)."""
    try:
        decoder = av.CodecContext.create("h264", "r")
        decoder.thread_count = 1
        pictures = decoder.decode(av.Packet(keyframe)) + decoder.decode(None)
        if pictures:
            return pictures[0].width, pictures[0].height
    except (av.FFmpegError, ValueError):
        log.debug("could not decode a keyframe to learn the picture size", exc_info=True)
    return 0, 0
