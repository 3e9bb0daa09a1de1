"""SFU cases with the project's Python client against a real server: one-kind streams, a viewer that
cannot take the publisher's codec, and an ICE connection that never comes up."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender, VideoStreamTrack

from streaming.client import Session
from tests.support.server import ServerProcess
from tests.support.wsclient import WsClient
from tests.test_streams_protocol import publish_raw, status_of


async def test_audio_only_stream(server: ServerProcess) -> None:
    async with Session.connect(server.ws_url) as publishing, Session.connect(server.ws_url) as playing:
        publisher = await publishing.publish("radio", video=False)
        assert set(publisher.codecs) == {"audio"}
        player = await playing.play("radio", video=False)
        await player.wait_frames(20, timeout=15, kind="audio")
        assert player.codecs == {"audio": "opus"}


async def test_video_only_stream(server: ServerProcess) -> None:
    async with Session.connect(server.ws_url) as publishing, Session.connect(server.ws_url) as playing:
        publisher = await publishing.publish("silent", audio=False, codec="VP8", width=320, height=240)
        assert set(publisher.codecs) == {"video"}
        player = await playing.play("silent")  # asks for audio too: that m-line is answered inactive
        await player.wait_frames(20, timeout=15)
        assert (player.video.width, player.video.height) == (320, 240)


async def test_viewer_with_no_codec_we_can_send_fails_with_no_common_codecs(server: ServerProcess) -> None:
    """VP8 <-> H.264 plays through a transcoder (tests/test_transcoded_viewers.py); a viewer that takes
    neither (only PCMU audio here, for an audio-only stream) still fails with the WebSDK's reason."""
    async with Session.connect(server.ws_url) as publishing, Session.connect(server.ws_url) as playing:
        await publishing.publish("radio", video=False)
        pc = RTCPeerConnection()
        transceiver = pc.addTransceiver("audio", direction="recvonly")
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("audio").codecs
                                         if c.mimeType == "audio/PCMU"])
        await pc.setLocalDescription(await pc.createOffer())
        async with WsClient(server.ws_url) as client:
            await client.connect()
            msid = str(uuid.uuid4())
            await client.send("playStream", {"mediaSessionId": msid, "name": "radio", "published": False,
                                             "hasVideo": False, "hasAudio": True, "status": "PENDING",
                                             "mediaProvider": "WebRTC", "sdp": pc.localDescription.sdp})
            failed = await status_of(client, msid, "FAILED")
            assert failed["info"] == "No common codecs"
        await pc.close()
        # The publisher is untouched and a compatible viewer still plays.
        player = await playing.play("radio", video=False)
        await player.wait_frames(10, timeout=15, kind="audio")


async def test_ice_that_never_connects_fails_by_ice_timeout(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(extra_args=["--webrtc-connect-timeout", "1.5"])
    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    async with WsClient(server.ws_url) as client:
        await client.connect()
        msid = await publish_raw(client, "never", pc.localDescription.sdp, msid=str(uuid.uuid4()))
        await client.expect("setRemoteSDP")  # ... which the client never applies
        failed = await status_of(client, msid, "FAILED", timeout=10)
        assert failed["info"] == "Failed by ICE timeout"
        # The name is free again.
        again = RTCPeerConnection()
        again.addTrack(VideoStreamTrack())
        await again.setLocalDescription(await again.createOffer())
        second = await publish_raw(client, "never", again.localDescription.sdp)
        # Answered (not refused as a name in use): the first stream released its name.
        await client.wait_until(lambda: any(d["message"] == "setRemoteSDP" and d["data"][0] == second
                                            for d in client.messages), timeout=10)
        await again.close()
    await pc.close()


async def test_a_dtls_failure_fails_the_stream(server: ServerProcess) -> None:
    """ICE connects, but the offer's certificate fingerprint is not the publisher's certificate."""
    from aiortc import RTCSessionDescription

    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    lines = offer.split("\r\n")
    for i, line in enumerate(lines):
        if line.startswith("a=fingerprint:sha-256 "):
            value = line.split(" ", 1)[1]
            flipped = ("00" if value[:2] != "00" else "11") + value[2:]
            lines[i] = "a=fingerprint:sha-256 " + flipped
    async with WsClient(server.ws_url) as client:
        await client.connect()
        msid = await publish_raw(client, "forged", "\r\n".join(lines))
        answer = await client.expect("setRemoteSDP")
        await pc.setRemoteDescription(RTCSessionDescription(answer["data"][1], "answer"))
        failed = await status_of(client, msid, "FAILED", timeout=20)
        assert failed["info"] == "Failed by DTLS error"
    await pc.close()


def fetch_json(url: str, body: bytes | None = None) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5) as resp:
        return json.loads(resp.read())


async def test_the_python_twin_of_the_core_serves_viewers_the_same_way(
        start_server: Callable[..., ServerProcess]) -> None:
    """--python-core: the twins, fan-out included, carry a real stream end to end (rewritten, SRTP-
    protected and sent by media/fanout.py on the peer's socket)."""
    server = start_server(["--python-core"])
    assert "Python twins" in fetch_json(server.rest_url + "/health")["mediaCore"]
    async with Session.connect(server.ws_url) as publishing, Session.connect(server.ws_url) as playing:
        await publishing.publish("twin", codec="VP8", width=320, height=240)
        player = await playing.play("twin")
        await player.wait_frames(20, timeout=15)
        assert (player.video.width, player.video.height) == (320, 240)
        found = fetch_json(server.rest_url + "/rest-api/stream/find", b'{"name": "twin"}')
        [viewer] = [s for s in found if not s["published"]]
        assert viewer["sendRoutes"] == ["udp"] and viewer["sent"] > 0


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_viewers_that_come_and_go_leave_no_sockets_behind(server: ServerProcess) -> None:
    """The fan-out holds a duplicate of each viewer's socket while it sends there: a viewer gone must
    take it along, or every viewer would leave a UDP port open."""
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("churn", codec="VP8", width=320, height=240)
        async with Session.connect(server.ws_url) as playing:
            player = await playing.play("churn")
            await player.wait_frames(5, timeout=15)
            await player.stop(wait=True)
        settled = open_files(server.proc.pid)
        for _ in range(8):
            async with Session.connect(server.ws_url) as playing:
                player = await playing.play("churn")
                await player.wait_frames(5, timeout=15)
                await player.stop(wait=True)
        # Sockets close as their peers are torn down: wait for the count to come back, not for a time.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while open_files(server.proc.pid) > settled + 2:
            assert loop.time() < deadline, f"{open_files(server.proc.pid)} files open, {settled} before"
            await asyncio.sleep(0.2)
