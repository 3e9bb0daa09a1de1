"""Hostile and broken client input: each gets a clear answer, and the session and every other session
keep working."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.support.server import ServerProcess
from tests.support.wsclient import WsClient


async def still_works(client: WsClient) -> None:
    before = len(client.messages)
    await client.send("ping")
    await client.expect("pong", after=before)


@pytest.mark.parametrize("frame, info", [
    ('{"message": "connection", "data": [', "Malformed JSON"),
    ("null", "expected a JSON object"),
    ('{"message": "teleport", "data": [{}]}', "Unknown message: 'teleport'"),
    ('{"message": "publishStream", "data": "x"}', "'data' must be a list holding one object"),
    ('{"message": "publishStream", "data": [{"name": "cam"}]}', "missing field 'mediaSessionId'"),
    ('{"message": "publishStream", "data": [{"mediaSessionId": 5}]}', "field 'mediaSessionId' must be a string"),
    ('{"message": "connection", "data": [{"appKey": "defaultApp"}]}', "Session is already established"),
    ('{"message": "call", "data": [{"callId": "c1"}]}', "SIP is not configured for this session"),
])
async def test_bad_frames_get_a_fail_and_the_session_goes_on(server: ServerProcess, frame: str,
                                                              info: str) -> None:
    async with WsClient(server.ws_url) as client, WsClient(server.ws_url) as bystander:
        await client.connect()
        await bystander.connect()
        before = len(client.messages)
        await client.send_raw(frame)
        fail = await client.expect("fail", after=before)
        assert info in fail["data"][0]["info"]
        await still_works(client)
        await still_works(bystander)
        assert not client.closed.is_set()


async def test_messages_before_connection_are_refused_politely(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as client:
        await client.send("publishStream", {"mediaSessionId": "m1", "name": "cam"})
        fail = await client.expect("fail")
        assert fail["data"][0]["info"] == "Session is not established: send 'connection' before publishStream"
        user = await client.connect()  # the socket is still usable
        assert user["sessionId"]


async def test_a_10_mb_frame(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as client, WsClient(server.ws_url) as bystander:
        await client.connect()
        await bystander.connect()
        huge = json.dumps({"message": "sendData", "data": [{"operationId": "o1", "payload": "x" * 10_000_000}]})
        await client.send_raw(huge)
        fail = await client.expect("fail")
        assert fail["data"][0]["info"].startswith("Message too large: 10000")
        await still_works(client)
        await still_works(bystander)


async def test_a_binary_frame(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as client:
        await client.connect()
        assert client.ws is not None
        await client.ws.send_bytes(b"\x00\x01\x02garbage")
        fail = await client.expect("fail")
        assert "Binary frames are not supported" in fail["data"][0]["info"]
        await still_works(client)


async def test_garbage_in_connection_fields(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as client:
        await client.send("connection", {"appKey": ["not", "a", "string"]})
        fail = await client.expect("fail")
        assert "field 'appKey' must be a string" in fail["data"][0]["info"]
        user = await client.connect(custom={"nested": {"deep": [1, 2, {"x": None}]}})
        assert user["custom"] == {"nested": {"deep": [1, 2, {"x": None}]}}


async def test_hostile_app_keys_are_refused_without_echoing_them_whole(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as client:
        await client.send("connection", {"appKey": "../../etc/passwd" + "A" * 5000})
        fail = await client.expect("fail")
        assert "longer than 64" in fail["data"][0]["info"]
        assert len(fail["data"][0]["info"]) < 200


async def test_a_flood_of_requests_is_bounded(server: ServerProcess) -> None:
    """Every message of a flood is answered (handled, or refused as too many in flight): none is
    dropped silently and the session still works."""
    async with WsClient(server.ws_url) as client:
        await client.connect()
        for i in range(2000):
            await client.send("call", {"callId": f"c{i}"})

        def fails() -> list[str]:
            return [m["data"][0]["info"] for m in client.messages if m["message"] == "fail"]

        await client.wait_until(lambda: len(fails()) >= 2000, timeout=20)
        assert len(fails()) == 2000
        assert all(f.startswith(("SIP is not configured", "Too many requests")) for f in fails())
        await still_works(client)


async def test_a_plain_http_request_on_the_websocket_port(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.ws_url.replace("ws://", "http://") + "/") as resp:
            assert resp.status == 426
            assert "WebSocket" in await resp.text()


async def test_server_pings_and_a_silent_client_is_dropped(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(extra_args=["--ws-ping-interval", "0.2", "--ws-ping-probes", "3"])
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url, autoping=False)
        await ws.send_str(json.dumps({"message": "connection", "data": [{"appKey": "defaultApp"}]}))
        seen = []
        # Never answer: the server pings, then closes the socket.
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                seen.append(json.loads(msg.data)["message"])
        assert "getUserData" in seen and "ping" in seen
        assert ws.close_code == 1001
        await ws.close()
