"""Snapshots: the current picture of a published video track as a PNG, decoded on demand.

Nothing runs for a stream until a snapshot is asked for. Then the track's frames are tapped (the
stream's shared FrameSource), the publisher is asked for a keyframe, and the first keyframe that arrives
is decoded once in a worker thread and encoded as PNG. When none arrives in time, the keyframe at the
head of the track's GOP cache is used instead (the picture at the last keyframe). The decoder lives for
that one call; no decoder is kept for a stream afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import cast

import av

from .encoded import EncodedFrame, FrameSource
from .stream import PublishedTrack

log = logging.getLogger(__name__)

DECODERS = {"H264": "h264", "VP8": "vp8"}
KEYFRAME_WAIT = 2.0  # seconds to wait for a fresh keyframe before the cached one is used
MAX_PENDING = 8  # snapshots waiting for a keyframe or the decoder, server-wide

NO_VIDEO = "Stream has no video"
NO_PICTURE = "No picture yet: the stream has sent no keyframe"
BUSY = "Too many snapshots in progress, try again"


class SnapshotError(Exception):
    """Why no picture could be made; the message is what a client is told."""


@dataclass(frozen=True)
class Picture:
    png: bytes
    width: int
    height: int
    codec: str  # of the video it was decoded from
    cached: bool  # True: from the GOP cache, no fresh keyframe came in time


def decode_keyframe(codec: str, data: bytes) -> tuple[bytes, int, int]:
    """One keyframe (an H.264 access unit in Annex B with SPS/PPS, or a VP8 key frame) to PNG bytes,
    width and height. Blocking and CPU-bound: run it in a worker thread."""
    name = DECODERS.get(codec.upper())
    if name is None:
        raise SnapshotError(f"Snapshots of {codec} video are not supported")
    decoder = cast(av.VideoCodecContext, av.CodecContext.create(name, "r"))
    try:
        pictures = list(decoder.decode(av.Packet(data)))
        pictures += decoder.decode(None)  # flush: a lone frame may only come out here
    except av.FFmpegError as exc:
        raise SnapshotError(f"The keyframe could not be decoded: {exc}") from None
    if not pictures:
        raise SnapshotError("The keyframe could not be decoded: no picture came out")
    picture = pictures[0]
    rgb = picture.reformat(format="rgb24")
    encoder = cast(av.VideoCodecContext, av.CodecContext.create("png", "w"))
    encoder.width, encoder.height = rgb.width, rgb.height
    encoder.pix_fmt = "rgb24"
    packets = list(encoder.encode(rgb)) + list(encoder.encode(None))
    # Both contexts go with this call (reference counting frees them here): no decoder stays behind.
    return b"".join(bytes(p) for p in packets), rgb.width, rgb.height


def cached_keyframe(track: PublishedTrack, depacketize: ModuleType) -> bytes | None:
    """The keyframe at the head of the track's GOP cache, reassembled from its RTP packets."""
    packets = track.ingest.gop()
    if not packets:
        return None
    depacketizer = depacketize.Depacketizer(track.codec.name, track.codec.clock_rate)
    # The first frame of a depacketizer comes out only once a later packet arrives (a reordered one
    # could still belong to it): an empty packet after the last one says that nothing more comes.
    for packet in [*packets, _end_marker(packets[-1])]:
        try:
            frames = depacketizer.push(packet)
        except ValueError:
            continue
        for frame in frames:
            if frame.keyframe:
                return bytes(frame.data)
    return None


def _end_marker(last: bytes) -> bytes:
    """An RTP packet without payload that follows `last` (next sequence number, another timestamp)."""
    if len(last) < 12:
        return last
    seq, timestamp = struct.unpack_from("!HI", last, 2)
    return bytes([0x80, last[1] & 0x7F]) + struct.pack("!HI", (seq + 1) & 0xFFFF, (timestamp + 1) & 0xFFFFFFFF) \
        + last[8:12]


class Snapshotter:
    """Takes snapshots of published tracks, one decode at a time in its own thread.

    Call `take` on the event loop thread; `close` at shutdown."""

    def __init__(self, depacketize: ModuleType, keyframe_wait: float = KEYFRAME_WAIT,
                 max_pending: int = MAX_PENDING) -> None:
        if not keyframe_wait > 0:
            raise ValueError(f"keyframe_wait must be positive, not {keyframe_wait!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending!r}")
        self.depacketize = depacketize
        self.keyframe_wait = keyframe_wait
        self.max_pending = max_pending
        self.pending = 0
        self.taken = 0
        self.failed = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")

    async def take(self, track: PublishedTrack | None, source: FrameSource | None, now: float) -> Picture:
        """The track's current picture. `source` is the track's shared FrameSource (subscribed for the
        duration of the call only); None uses the GOP cache alone."""
        if track is None or track.kind != "video":
            self.failed += 1
            raise SnapshotError(NO_VIDEO)
        if self.pending >= self.max_pending:
            self.failed += 1
            raise SnapshotError(BUSY)
        self.pending += 1
        try:
            data, cached = await self._keyframe(track, source, now)
            if data is None:
                raise SnapshotError(NO_PICTURE)
            loop = asyncio.get_running_loop()
            png, width, height = await loop.run_in_executor(self._executor, decode_keyframe, track.codec.name, data)
        except SnapshotError:
            self.failed += 1
            raise
        finally:
            self.pending -= 1
        self.taken += 1
        return Picture(png, width, height, track.codec.name, cached)

    async def _keyframe(self, track: PublishedTrack, source: FrameSource | None,
                        now: float) -> tuple[bytes | None, bool]:
        if source is not None:
            loop = asyncio.get_running_loop()
            fresh: asyncio.Future[bytes] = loop.create_future()

            def on_frame(frame: EncodedFrame) -> None:
                if frame.keyframe and not fresh.done():
                    fresh.set_result(frame.data)

            source.subscribe(on_frame)
            try:
                source.request_keyframe(now)
                return await asyncio.wait_for(fresh, self.keyframe_wait), False
            except TimeoutError:
                log.info("snapshot: no fresh keyframe within %g s, using the cached one", self.keyframe_wait)
            finally:
                source.unsubscribe(on_frame)  # the last subscriber leaving closes the tap
        return cached_keyframe(track, self.depacketize), True

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
