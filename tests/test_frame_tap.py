"""A published WebRTC track back to decodable frames: aiortc publisher -> our publisher peer and routing
core -> FrameTap -> PyAV decodes every frame at the publisher's size."""

from __future__ import annotations

import asyncio

import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from media import native
from media.frames import FrameTap
from media.sfu import MediaCore, WebRtcPublisher
from media.stream import Stream
from streaming.client.webrtc import codec_preferences
from tests.test_webrtc_bridge import Pattern, offer_from


@pytest.mark.parametrize("codec, decoder", [("VP8", "vp8"), ("H264", "h264")])
async def test_frames_of_a_published_track_decode(codec: str, decoder: str) -> None:
    client = RTCPeerConnection()
    transceiver = client.addTransceiver(Pattern(), direction="sendonly")
    transceiver.setCodecPreferences(codec_preferences("video", codec))
    core = MediaCore(native.rtp_module(), native.track_module())
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
