"""A published WebRTC track back to decodable frames: aiortc publisher -> our publisher peer and routing
core -> FrameTap -> PyAV decodes every frame at the publisher's size. And the stream's frame readers:
one shared tap per track."""

from __future__ import annotations

import asyncio

import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from media import native
from media.frames import FrameTap
from media.sfu import MediaCore, WebRtcPublisher
from media.stream import Codec, PublishedTrack, Stream
from streaming.client.webrtc import codec_preferences
from tests.test_webrtc_bridge import Pattern, offer_from


@pytest.mark.parametrize("codec, decoder", [("VP8", "vp8"), ("H264", "h264")])
async def test_frames_of_a_published_track_decode(codec: str, decoder: str) -> None:
    client = RTCPeerConnection()
    transceiver = client.addTransceiver(Pattern(), direction="sendonly")
    transceiver.setCodecPreferences(codec_preferences("video", codec))
    core = MediaCore(native.rtp_module(), native.rtcp_module(), native.track_module())
    publisher = WebRtcPublisher(core, Stream("tap"))
    answer = await publisher.start(await offer_from(client))
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    track = publisher.stream.track("video")
    assert track is not None and track.codec.name.upper() == codec

    context = av.CodecContext.create(decoder, "r")
    decoded: list[av.VideoFrame] = []
    keyframes: list[bool] = []

    def on_frame(frame, now: float) -> None:  # type: ignore[no-untyped-def]
        keyframes.append(frame.keyframe)
        for picture in context.decode(av.Packet(frame.data)):
            decoded.append(picture)

    tap = FrameTap(track, native.depacketize_module(), on_frame, core.now())
    try:
        async with asyncio.timeout(20):
            while len(decoded) < 30:
                await asyncio.sleep(0.05)
    finally:
        tap.close()
        await client.close()
        await publisher.close()
    assert keyframes[0] is True  # the tap starts at a keyframe
    assert {(p.width, p.height) for p in decoded} == {(320, 240)}
    assert tap.frames >= len(decoded)
    assert tap._on_packet not in track.listeners


def test_a_stream_shares_one_tap_per_track_and_closes_it_with_the_last_reader_or_the_end() -> None:
    track_module = native.track_module()
    stream = Stream("shared")
    video = PublishedTrack(Codec("video", "VP8", 90000, 96), track_module.IngestTrack("VP8", 90000), track_module,
                           lambda ssrc: None)
    audio = PublishedTrack(Codec("audio", "opus", 48000, 111, {"channels": 2}),
                           track_module.IngestTrack("opus", 48000), track_module, lambda ssrc: None)
    stream.tracks += [video, audio]
    first = stream.frames("video", 0.0)
    assert stream.frames("video", 0.0) is first and len(video.listeners) == 1  # one tap, however many readers
    readers: list[list[object]] = [[], []]
    first.subscribe(readers[0].append)
    first.subscribe(readers[1].append)
    first.unsubscribe(readers[0].append)
    assert len(video.listeners) == 1
    first.unsubscribe(readers[1].append)
    assert video.listeners == [] and len(stream.frame_readers) == 0  # the last reader left: closed
    again = stream.frames("video", 0.0)
    assert again is not first and len(video.listeners) == 1
    sound = stream.frames("audio", 0.0)
    sound.subscribe(readers[0].append)
    assert sound.kind == "audio" and len(audio.listeners) == 1
    with pytest.raises(LookupError):
        Stream("empty").frames("video", 0.0)
    stream.end()  # the publisher is gone: every tap closes, whoever still reads
    assert video.listeners == [] and audio.listeners == [] and sound.subscribers == []
