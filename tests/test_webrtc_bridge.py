"""media/webrtc.py against the pinned aiortc: decrypted RTP comes out of a publisher peer before any
receiver sees it, RTP put into a viewer peer reaches a real aiortc client and decodes, and bad offers
fail with a clear error. Real aiortc peers on loopback, in one process."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from media.webrtc import NoCommonCodecs, Peer, SdpError, decoder_threads


class Pattern(VideoStreamTrack):
    """A moving 320x240 test picture."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.zeros((240, 320, 3), np.uint8)
        image[:, (self.n * 4) % 320] = 255
        self.n += 1
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, fractions.Fraction(1, 90000) if time_base is None else time_base
        return frame


async def offer_from(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


async def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_publisher_rtp_bypasses_aiortc_and_viewer_decodes_what_we_send() -> None:
    client = RTCPeerConnection()
    client.addTrack(Pattern())
    publisher = Peer("publisher")
    received: list[bytes] = []
    publisher.on_rtp = received.append
    answer = await publisher.answer_publisher(await offer_from(client))
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    assert [t.kind for t in publisher.tracks] == ["video"]
    assert publisher.tracks[0].codec.mimeType == "video/VP8"
    await wait_for(lambda: len(received) >= 30)
    assert all(p[0] >> 6 == 2 for p in received)  # decrypted RTP, version 2
    # aiortc's receiver never saw a packet: nothing was decoded on our side.
    receiver = publisher.pc.getTransceivers()[0].receiver
    assert receiver._track is None or receiver._track._queue.qsize() == 0

    viewer_client = RTCPeerConnection()
    viewer_client.addTransceiver("video", direction="recvonly")
    viewer = Peer("viewer")
    answer = await viewer.answer_viewer(await offer_from(viewer_client),
                                        {"video": publisher.tracks[0].codec})
    frames: list[av.VideoFrame] = []
    track_ready = asyncio.Event()

    @viewer_client.on("track")
    def on_track(track):  # type: ignore[no-untyped-def]
        async def pull() -> None:
            while True:
                frames.append(await track.recv())

        asyncio.get_running_loop().create_task(pull())
        track_ready.set()

    await viewer_client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    assert "a=sendonly" in answer and "extmap" not in answer
    out = viewer.tracks[0]
    await wait_for(lambda: viewer.connected)
    # Forward the publisher's packets with the viewer's SSRC and payload type.
    from media import native

    rtp = native.rtp_module()
    rewriter = rtp.RtpRewriter(out.ssrc, out.codec.payloadType, 90000)
    start = len(received)

    def forward_new() -> None:
        nonlocal start
        for packet in received[start:]:
            buf = bytearray(packet)
            rewriter.rewrite(buf)
            viewer.send_rtp(bytes(buf))
        start = len(received)

    async def pump() -> None:
        while True:
            forward_new()
            await asyncio.sleep(0.01)

    # Start from a keyframe: ask the publisher for one.
    media_ssrc = publisher.tracks[0].ssrc or int.from_bytes(received[-1][8:12], "big")
    publisher.send_rtcp(native.rtcp_module().build_pli(1, media_ssrc))
    pumping = asyncio.get_running_loop().create_task(pump())
    try:
        await wait_for(lambda: len(frames) >= 10, timeout=15)
    finally:
        pumping.cancel()
    assert (frames[-1].width, frames[-1].height) == (320, 240)
    # The same count that reports 0 for the server's peers sees an ordinary aiortc receiver decoding.
    assert decoder_threads(viewer_client) == 1
    assert publisher.decoders == 0 and viewer.decoders == 0
    assert viewer.stats.rtp_sent > 0 and viewer.stats.dropped == 0
    for pc in (client, viewer_client):
        await pc.close()
    await publisher.close()
    await viewer.close()


@pytest.mark.parametrize("sdp, error, message", [
    ("", SdpError, "SDP is empty"),
    ("garbage\r\nmore garbage", SdpError, "SDP"),
    ("v=0\r\n" + "a=x\r\n" * 40000, SdpError, "larger than"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", SdpError, "offers no media"),
])
async def test_bad_offers(sdp: str, error: type[Exception], message: str) -> None:
    peer = Peer("bad")
    with pytest.raises(error, match=message):
        await peer.answer_publisher(sdp)
    await peer.close()


async def test_an_offer_with_no_forwardable_codec() -> None:
    client = RTCPeerConnection()
    client.addTrack(Pattern())
    offer = await offer_from(client)
    # Keep only a codec the server does not forward.
    lines = []
    for line in offer.splitlines():
        if line.startswith("m=video"):
            parts = line.split()
            line = " ".join(parts[:3] + ["99"])
        elif line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")) and not line.split(":")[1].startswith("99"):
            continue
        elif line.startswith("a=rtpmap:99"):
            line = "a=rtpmap:99 AV1/90000"
        lines.append(line)
    peer = Peer("no codecs")
    with pytest.raises(NoCommonCodecs):
        await peer.answer_publisher("\r\n".join(lines) + "\r\n")
    await peer.close()
    await client.close()
