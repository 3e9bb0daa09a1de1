"""NACK recovery from the server's packet cache: a viewer that loses packets on the way gets them
again from the server, without the publisher being asked."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.support.server import ServerProcess
from tests.support.wsclient import WsClient
from tests.test_streams_protocol import poll_until, publish_raw, status_of
from tests.test_webrtc_bridge import Pattern, offer_from


async def find(server: ServerProcess, **match: Any) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(server.rest_url + "/rest-api/stream/find", json=match) as resp:
            return await resp.json() if resp.status == 200 else []


async def test_lost_packets_are_resent_from_the_cache(server: ServerProcess) -> None:
    publisher = RTCPeerConnection()
    publisher.addTrack(Pattern())
    viewer = RTCPeerConnection()
    viewer.addTransceiver("video", direction="recvonly")
    frames: list[Any] = []

    @viewer.on("track")
    def on_track(track):  # type: ignore[no-untyped-def]
        async def pull() -> None:
            while True:
                frames.append(await track.recv())

        asyncio.get_running_loop().create_task(pull())

    async with WsClient(server.ws_url) as pub, WsClient(server.ws_url) as view:
        await pub.connect()
        await view.connect()
        msid = await publish_raw(pub, "lossy", await offer_from(publisher))
        await publisher.setRemoteDescription(RTCSessionDescription((await pub.expect("setRemoteSDP"))["data"][1],
                                                                   "answer"))
        await status_of(pub, msid, "PUBLISHING")

        play_id = str(uuid.uuid4())
        await view.send("playStream", {"mediaSessionId": play_id, "name": "lossy", "published": False,
                                       "hasVideo": True, "hasAudio": False, "mediaProvider": "WebRTC",
                                       "sdp": await offer_from(viewer)})
        await viewer.setRemoteDescription(RTCSessionDescription((await view.expect("setRemoteSDP"))["data"][1],
                                                                "answer"))
        # The network between server and this viewer loses every 10th packet, each only once.
        dtls = viewer.getTransceivers()[0].receiver.transport
        original = dtls._handle_rtp_data
        seen: set[int] = set()
        dropped: list[int] = []

        async def lossy(data: bytes, arrival_time_ms: int) -> None:
            seq = int.from_bytes(data[2:4], "big")
            if seq not in seen:
                seen.add(seq)
                if len(seen) % 10 == 0:
                    dropped.append(seq)
                    return
            await original(data, arrival_time_ms)

        dtls._handle_rtp_data = lossy
        await status_of(view, play_id, "PLAYING")

        played = await poll_until(lambda: find(server, name="lossy", published=False),
                                  lambda found: bool(found) and found[0]["retransmitted"] >= 5, timeout=20,
                                  what="retransmissions from the server's cache")
        await poll_until(lambda: asyncio.sleep(0, len(frames)), lambda n: n >= 30, timeout=20,
                         what="30 decoded frames despite the loss")
        assert len(dropped) >= 5
        assert played[0]["retransmitted"] >= 5
        # Recovered from the cache: the publisher was not asked for the lost packets.
        published = (await find(server, name="lossy", published=True))[0]
        assert published["decoders"] == 0
    await publisher.close()
    await viewer.close()
