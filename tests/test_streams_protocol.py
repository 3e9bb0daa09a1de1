"""Stream messages at the protocol level: bad SDP, bad names, nothing usable, junk on the media port.
Each gets a clear failure for that stream only; the session and other streams go on."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import uuid
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.support.server import ServerProcess
from tests.support.wsclient import WsClient
from tests.test_webrtc_bridge import Pattern, offer_from


async def publish_raw(client: WsClient, name: str, sdp: str, msid: str | None = None) -> str:
    msid = msid or str(uuid.uuid4())
    await client.send("publishStream", {"mediaSessionId": msid, "name": name, "published": True,
                                        "hasVideo": True, "hasAudio": False, "status": "PENDING",
                                        "mediaProvider": "WebRTC", "sdp": sdp})
    return msid


async def status_of(client: WsClient, msid: str, *statuses: str, timeout: float = 15.0) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for doc in client.messages:
            obj = doc.get("data", [None])[0]
            if doc["message"] in ("notifyStreamStatusEvent", "fail") and isinstance(obj, dict) and \
                    (obj.get("mediaSessionId") == msid or obj.get("id") == msid):
                if doc["message"] == "fail" or obj.get("status") in statuses:
                    return {**obj, "_message": doc["message"]}
        return None

    await client.wait_until(lambda: find() is not None, timeout)
    found = find()
    assert found is not None
    return found


async def poll_until(read, ok, timeout: float, what: str) -> Any:  # type: ignore[no-untyped-def]
    """Read a value that no event announces (a REST counter) until ok(value), with a deadline."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = await read()
                if ok(value):
                    return value
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def still_works(client: WsClient) -> None:
    before = len(client.messages)
    await client.send("ping")
    await client.expect("pong", after=before)


async def test_garbage_sdp_fails_that_stream_only(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as client:
        await client.connect()
        msid = await publish_raw(client, "cam", "v=0\r\nthis is not sdp\r\n\x00\x01")
        failed = await status_of(client, msid, "FAILED")
        assert failed["status"] == "FAILED" and failed["info"].startswith("Bad SDP")
        await still_works(client)


async def test_huge_sdp_is_refused_for_that_stream(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as client:
        await client.connect()
        msid = await publish_raw(client, "cam", "v=0\r\n" + "a=x\r\n" * 20000)
        failed = await status_of(client, msid, "FAILED")
        assert failed["_message"] == "fail" and failed["apiMethod"] == "StreamStatusEvent"
        assert "longer than 65536" in failed["info"]
        await still_works(client)


async def test_an_offer_with_nothing_usable(server: ServerProcess) -> None:
    pc = RTCPeerConnection()
    pc.addTrack(Pattern())
    offer = await offer_from(pc)
    await pc.close()
    # Rename every video codec to one the server cannot forward.
    offer = re.sub(r"a=rtpmap:(\d+) (VP8|H264|rtx)/90000", r"a=rtpmap:\1 AV1X/90000", offer)
    async with WsClient(server.ws_url) as client:
        await client.connect()
        msid = await publish_raw(client, "cam", offer)
        failed = await status_of(client, msid, "FAILED")
        assert failed["info"] == "No common codecs"
        await still_works(client)


async def test_hostile_stream_names(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as client:
        await client.connect()
        for name in ("../../etc/passwd", "a/b", "name with spaces", "nul\x00byte", "", "x" * 200):
            msid = await publish_raw(client, name, "v=0\r\n")
            failed = await status_of(client, msid, "FAILED")
            assert failed["status"] == "FAILED" or failed["_message"] == "fail", name
        await still_works(client)


async def test_stop_of_someone_elses_stream_is_not_found(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as owner, WsClient(server.ws_url) as other:
        await owner.connect()
        await other.connect()
        msid = await publish_raw(owner, "bad name!", "v=0\r\n")  # any media session id of the owner
        await status_of(owner, msid, "FAILED")
        await other.send("unPublishStream", {"mediaSessionId": msid, "name": "x"})
        fail = await other.expect("fail")
        assert fail["data"][0] == {"info": "Stream not found", "apiMethod": "StreamStatusEvent", "id": msid}


async def test_junk_on_the_media_port_leaves_the_stream_running(server: ServerProcess) -> None:
    pc = RTCPeerConnection()
    pc.addTrack(Pattern())
    async with WsClient(server.ws_url) as client:
        await client.connect()
        msid = await publish_raw(client, "junked", await offer_from(pc))
        answer = await client.expect("setRemoteSDP")
        sdp = answer["data"][1]
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        await status_of(client, msid, "PUBLISHING")
        port = int(re.search(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host", sdp).group(1))

        async def packets() -> int:
            async with aiohttp.ClientSession() as http:
                async with http.post(server.rest_url + "/rest-api/stream/find", json={"name": "junked"}) as r:
                    found = await r.json()
            return int(found[0]["tracks"][0]["packets"])

        before = await packets()
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(2000):
            kind = i % 4
            if kind == 0:
                data = os.urandom(i % 1400 + 1)
            elif kind == 1:
                data = bytes([0x80 | (i % 16), 96]) + os.urandom(i % 10)  # truncated RTP-looking
            elif kind == 2:
                data = bytes([0x81, 200, 0xFF, 0xFF]) + os.urandom(8)  # RTCP with a lying length
            else:
                data = bytes([0x00, 0x01, 0x00, 0x50]) + os.urandom(16)  # STUN-looking garbage
            junk.sendto(data, ("127.0.0.1", port))
        junk.close()
        await still_works(client)
        # The stream keeps flowing after the junk (about 30 packets a second or more).
        await poll_until(lambda: packets(), lambda n: n >= before + 60, timeout=10,
                         what="the stream to go on after the junk")
        assert not [d for d in client.messages if d["message"] == "notifyStreamStatusEvent"
                    and d["data"][0].get("status") == "FAILED"]
    await pc.close()


async def test_the_announced_address_replaces_host_candidates(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(extra_args=["--ice-public-address", "203.0.113.7"])
    pc = RTCPeerConnection()
    pc.addTrack(Pattern())
    async with WsClient(server.ws_url) as client:
        await client.connect()
        await publish_raw(client, "natted", await offer_from(pc))
        sdp = (await client.expect("setRemoteSDP"))["data"][1]
    await pc.close()
    candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
    assert candidates and all(" 203.0.113.7 " in line and "127.0.0.1" not in line for line in candidates)
    assert "c=IN IP4 203.0.113.7" in sdp
