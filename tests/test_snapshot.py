"""The snapshot core (media/snapshot.py): one keyframe to a PNG, taken from a fresh keyframe or the GOP
cache, with a decoder that lives for one call. The pictures carry their frame number, so a test can tell
which frame a snapshot shows."""

from __future__ import annotations

import asyncio
import struct

import av
import pytest

from media import native
from media.encoded import EncodedFrame, FrameSource
from media.snapshot import NO_PICTURE, NO_VIDEO, SnapshotError, Snapshotter, cached_keyframe, decode_keyframe
from media.stream import Codec, PublishedTrack
from tests.support.media_gen import encode_video, packetize, read_frame_number

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR", png[:16]
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def png_number(png: bytes) -> int:
    """The frame number drawn in the picture a PNG shows."""
    decoder = av.CodecContext.create("png", "r")
    pictures = list(decoder.decode(av.Packet(png)))
    assert len(pictures) == 1
    return read_frame_number(pictures[0])


def published_track(codec: str, frames: int, keyframe_interval: int = 30) -> PublishedTrack:
    """A published track (native ingest) fed with `frames` numbered frames as RTP."""
    track_module = native.track_module()
    ingest = track_module.IngestTrack(codec, 90000)
    requests: list[int] = []
    track = PublishedTrack(Codec("video", codec, 90000, 96), ingest, track_module, requests.append)
    samples = encode_video(codec, 320, 240, frames=frames, keyframe_interval=keyframe_interval)
    now = 1.0
    for packets in packetize(codec, samples):
        for packet in packets:
            track.on_rtp(packet, now)
        now += 1 / 30
    return track


class FakeSource(FrameSource):
    """A FrameSource that answers a keyframe request with the given frame (or never)."""

    kind = "video"

    def __init__(self, answer: EncodedFrame | None) -> None:
        super().__init__()
        self.answer = answer
        self.requests = 0
        self.idle = 0
        self.on_idle = lambda source: setattr(self, "idle", self.idle + 1)

    def request_keyframe(self, now: float) -> None:
        self.requests += 1
        if self.answer is not None:
            loop = asyncio.get_running_loop()
            delta = EncodedFrame(self.answer.codec, b"\x00" * 10, 0, 90000, keyframe=False)
            loop.call_soon(self.emit, delta)  # not a keyframe: ignored
            loop.call_soon(self.emit, self.answer)


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_a_keyframe_becomes_a_png_of_its_size(codec: str) -> None:
    samples = encode_video(codec, 640, 480, frames=1, first=77)
    png, width, height = decode_keyframe(codec, samples[0].data)
    assert (width, height) == (640, 480) == png_size(png)
    assert png_number(png) == 77


@pytest.mark.parametrize("codec, data, reason", [
    ("VP8", b"", "could not be decoded"),
    ("H264", b"\x00\x00\x00\x01" + b"\xff" * 50, "could not be decoded"),
    ("VP8", b"\x10\x02\x00" + bytes(range(256)) * 4, "could not be decoded"),
    ("AV1X", b"\x00", "not supported"),
])
def test_bad_keyframes_are_a_clear_error(codec: str, data: bytes, reason: str) -> None:
    with pytest.raises(SnapshotError, match=reason):
        decode_keyframe(codec, data)


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_the_gop_cache_gives_the_last_keyframe(codec: str) -> None:
    track = published_track(codec, frames=45, keyframe_interval=30)
    data = cached_keyframe(track, native.depacketize_module())
    assert data is not None
    png, width, height = decode_keyframe(codec, data)
    assert (width, height) == (320, 240)
    assert png_number(png) == 30  # the GOP starts at the second keyframe


async def test_a_fresh_keyframe_is_preferred_and_the_tap_is_released() -> None:
    track = published_track("VP8", frames=45)
    fresh = encode_video("VP8", 640, 480, frames=1, first=200)[0]
    source = FakeSource(EncodedFrame("VP8", fresh.data, 0, 90000, keyframe=True))
    snapshotter = Snapshotter(native.depacketize_module(), keyframe_wait=5.0)
    try:
        picture = await snapshotter.take(track, source, now=2.0)
    finally:
        snapshotter.close()
    assert source.requests == 1
    assert not picture.cached and picture.codec == "VP8"
    assert (picture.width, picture.height) == (640, 480) == png_size(picture.png)
    assert png_number(picture.png) == 200
    # The call subscribed only while it waited: its leaving made the source idle (the tap closes).
    assert source.subscribers == [] and source.idle == 1
    assert snapshotter.taken == 1 and snapshotter.pending == 0


async def test_without_a_fresh_keyframe_the_cached_one_is_used() -> None:
    track = published_track("H264", frames=40)
    source = FakeSource(None)
    snapshotter = Snapshotter(native.depacketize_module(), keyframe_wait=0.2)
    try:
        picture = await snapshotter.take(track, source, now=2.0)
    finally:
        snapshotter.close()
    assert picture.cached and (picture.width, picture.height) == (320, 240)
    assert png_number(picture.png) == 30
    assert source.subscribers == [] and source.idle == 1


async def test_nothing_to_show() -> None:
    snapshotter = Snapshotter(native.depacketize_module(), keyframe_wait=0.1)
    track_module = native.track_module()
    empty = PublishedTrack(Codec("video", "VP8", 90000, 96), track_module.IngestTrack("VP8", 90000),
                           track_module, lambda ssrc: None)
    audio = PublishedTrack(Codec("audio", "opus", 48000, 111), track_module.IngestTrack("opus", 48000),
                           track_module, lambda ssrc: None)
    try:
        with pytest.raises(SnapshotError) as no_keyframe:
            await snapshotter.take(empty, FakeSource(None), now=1.0)
        assert str(no_keyframe.value) == NO_PICTURE
        for track in (audio, None):
            with pytest.raises(SnapshotError) as no_video:
                await snapshotter.take(track, None, now=1.0)
            assert str(no_video.value) == NO_VIDEO
    finally:
        snapshotter.close()
    assert snapshotter.failed == 3 and snapshotter.pending == 0


async def test_too_many_at_once_are_refused() -> None:
    track = published_track("VP8", frames=31)  # the GOP: one keyframe alone
    snapshotter = Snapshotter(native.depacketize_module(), keyframe_wait=0.3, max_pending=2)
    try:
        results = await asyncio.gather(*(snapshotter.take(track, FakeSource(None), now=2.0) for _ in range(3)),
                                       return_exceptions=True)
    finally:
        snapshotter.close()
    refused = [r for r in results if isinstance(r, SnapshotError)]
    assert len(refused) == 1 and "Too many snapshots" in str(refused[0])
    assert sum(1 for r in results if not isinstance(r, Exception)) == 2


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="keyframe_wait"):
        Snapshotter(native.depacketize_module(), keyframe_wait=0)
    with pytest.raises(ValueError, match="max_pending"):
        Snapshotter(native.depacketize_module(), max_pending=0)
