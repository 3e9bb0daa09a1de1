"""Stream events, data, keep-alive, bug reports and snapshots at the protocol level: a real server, a real
HTTP backend, an aiortc publisher and viewers, and protocol clients. Hostile input gets a clear answer
for what it concerns and everything else goes on."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import uuid
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.support.backend import Backend
from tests.support.server import ServerProcess
from tests.support.wsclient import WsClient
from tests.test_streams_protocol import publish_raw, status_of, still_works
from tests.test_webrtc_bridge import Pattern, offer_from


async def rest(server: ServerProcess, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(server.rest_url + path, json=body) as resp:
            return resp.status, await resp.json(content_type=None)


async def answer_for(client: WsClient, msid: str) -> str:
    """The server's SDP answer for that stream (setRemoteSDP data is [mediaSessionId, sdp])."""
    def find() -> str | None:
        for doc in client.messages:
            if doc["message"] == "setRemoteSDP" and doc["data"][0] == msid:
                return str(doc["data"][1])
        return None

    await client.wait_until(lambda: find() is not None, 15)
    answer = find()
    assert answer is not None
    return answer


async def publish(client: WsClient, name: str) -> tuple[RTCPeerConnection, str]:
    """An aiortc publisher (320x240 moving picture, no audio), PUBLISHING."""
    pc = RTCPeerConnection()
    pc.addTrack(Pattern())
    msid = await publish_raw(client, name, await offer_from(pc))
    await pc.setRemoteDescription(RTCSessionDescription(await answer_for(client, msid), "answer"))
    await status_of(client, msid, "PUBLISHING")
    return pc, msid


async def play(client: WsClient, name: str) -> tuple[RTCPeerConnection, str]:
    """An aiortc viewer of `name`, PLAYING."""
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    msid = str(uuid.uuid4())
    await client.send("playStream", {"mediaSessionId": msid, "name": name, "published": False,
                                     "hasVideo": True, "hasAudio": False, "status": "PENDING",
                                     "mediaProvider": "WebRTC", "sdp": await offer_from(pc)})
    await pc.setRemoteDescription(RTCSessionDescription(await answer_for(client, msid), "answer"))
    await status_of(client, msid, "PLAYING")
    return pc, msid


def events_for(client: WsClient, msid: str) -> list[dict[str, Any]]:
    return [d["data"][0] for d in client.messages
            if d["message"] == "notifyStreamEvent" and d["data"][0].get("mediaSessionId") == msid]


async def fail_after(client: WsClient, before: int) -> dict[str, Any]:
    return (await client.expect("fail", after=before))["data"][0]


# -- stream events ---------------------------------------------------------------------------------


async def test_mute_events_reach_viewers_backend_and_later_statuses(server: ServerProcess,
                                                                    backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    async with WsClient(server.ws_url) as pub, WsClient(server.ws_url) as v1, WsClient(server.ws_url) as v2:
        for client in (pub, v1, v2):
            await client.connect(appKey="shopKey")
        pub_pc, pub_id = await publish(pub, "muted-cam")
        v1_pc, v1_id = await play(v1, "muted-cam")
        await pub.send("sendStreamEvent", {"mediaSessionId": pub_id, "type": "audioMuted"})
        await pub.send("sendStreamEvent", {"mediaSessionId": pub_id, "type": "videoMuted"})
        await pub.send("sendStreamEvent", {"mediaSessionId": pub_id, "type": "data",
                                           "payload": {"caption": "hello", "n": [1, 2]}})
        await v1.wait_until(lambda: len(events_for(v1, v1_id)) == 3)
        got = events_for(v1, v1_id)
        assert [e["type"] for e in got] == ["audioMuted", "videoMuted", "data"]
        assert got[2]["payload"] == {"caption": "hello", "n": [1, 2]} and got[2]["name"] == "muted-cam"
        # The backend hears each one, from the publisher's session.
        events = await asyncio.to_thread(backend.wait_for, "StreamEvent", lambda c: c.body["type"] == "data")
        assert events.body["mediaSessionId"] == pub_id and events.body["payload"]["caption"] == "hello"
        assert [c.body["type"] for c in backend.hooks("StreamEvent")
                if c.body["mediaSessionId"] == pub_id] == ["audioMuted", "videoMuted", "data"]
        # A viewer who comes later starts with the state; the REST API shows it.
        v2_pc, v2_id = await play(v2, "muted-cam")
        playing = await status_of(v2, v2_id, "PLAYING")
        assert playing["audioState"] == {"muted": True} and playing["videoState"] == {"muted": True}
        status, found = await rest(server, "/rest-api/stream/find", {"name": "muted-cam", "published": True})
        assert status == 200 and found[0]["audioState"] == {"muted": True}
        await pub.send("sendStreamEvent", {"mediaSessionId": pub_id, "type": "audioUnmuted"})
        await v2.wait_until(lambda: [e["type"] for e in events_for(v2, v2_id)] == ["audioUnmuted"])
        await v1.wait_until(lambda: len(events_for(v1, v1_id)) == 4)
        # The publisher leaves: the viewers' last statuses carry the state as it was.
        await pub.send("unPublishStream", {"mediaSessionId": pub_id, "name": "muted-cam"})
        stopped = await status_of(v1, v1_id, "STOPPED")
        assert stopped["audioState"] == {"muted": False} and stopped["videoState"] == {"muted": True}
    for pc in (pub_pc, v1_pc, v2_pc):
        await pc.close()


async def test_events_of_someone_elses_stream_and_other_bad_events(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(extra_args=["--data-max-payload-bytes", "1000"])
    async with WsClient(server.ws_url) as pub, WsClient(server.ws_url) as viewer, \
            WsClient(server.ws_url) as other:
        for client in (pub, viewer, other):
            await client.connect()
        pub_pc, pub_id = await publish(pub, "owned")
        view_pc, view_id = await play(viewer, "owned")
        cases = [
            (other, {"mediaSessionId": pub_id, "type": "audioMuted"}, "Stream not found"),
            (viewer, {"mediaSessionId": view_id, "type": "audioMuted"},
             "Only the publisher of a stream can send its events"),
            (pub, {"mediaSessionId": pub_id, "type": "explode"}, "Unknown stream event type 'explode'"),
            (pub, {"mediaSessionId": pub_id, "type": ["audioMuted"]}, "Unknown stream event type"),
            (pub, {"mediaSessionId": pub_id, "type": "data", "payload": "x" * 2000},
             "Payload too large: 2002 bytes, the limit is 1000"),
            (pub, {"type": "audioMuted"}, "missing field 'mediaSessionId'"),
            (pub, {"mediaSessionId": 12, "type": "audioMuted"}, "must be a string"),
        ]
        for client, obj, info in cases:
            before = len(client.messages)
            await client.send("sendStreamEvent", obj)
            fail = await fail_after(client, before)
            assert info in fail["info"], (obj, fail)
            assert fail["apiMethod"] == "sendStreamEvent"
        assert events_for(viewer, view_id) == []  # none of them reached the viewer
        # The stream is untouched: still unmuted, and a good event still goes through.
        status, found = await rest(server, "/rest-api/stream/find", {"name": "owned", "published": True})
        assert found[0]["status"] == "PUBLISHING" and found[0]["audioState"] == {"muted": False}
        await pub.send("sendStreamEvent", {"mediaSessionId": pub_id, "type": "videoMuted"})
        await viewer.wait_until(lambda: len(events_for(viewer, view_id)) == 1)
        for client in (pub, viewer, other):
            await still_works(client)
    await pub_pc.close()
    await view_pc.close()


async def test_the_backend_sends_a_stream_event_over_rest(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as pub, WsClient(server.ws_url) as viewer:
        await pub.connect()
        await viewer.connect()
        pub_pc, pub_id = await publish(pub, "rest-cam")
        view_pc, view_id = await play(viewer, "rest-cam")
        status, answer = await rest(server, "/rest-api/stream/event/send",
                                    {"name": "rest-cam", "type": "data", "payload": {"slide": 3}})
        assert status == 200 and answer == {"mediaSessionId": pub_id, "name": "rest-cam", "viewers": 1}
        status, _ = await rest(server, "/rest-api/stream/event/send",
                               {"mediaSessionId": pub_id, "type": "videoMuted"})
        assert status == 200
        await viewer.wait_until(lambda: len(events_for(viewer, view_id)) == 2)
        assert [(e["type"], e.get("payload")) for e in events_for(viewer, view_id)] == \
            [("data", {"slide": 3}), ("videoMuted", {})]
        for body, expected, info in [
            ({"name": "nobody", "type": "data"}, 404, "Stream not found"),
            ({"mediaSessionId": view_id, "type": "data"}, 400, "Only the publisher"),
            ({"name": "rest-cam", "type": "louder"}, 400, "Unknown stream event type"),
            ({"type": "data"}, 400, "'name' or 'mediaSessionId'"),
            ({"name": "rest-cam", "type": "data", "payload": "y" * 70000}, 413, "Payload too large"),
        ]:
            status, answer = await rest(server, "/rest-api/stream/event/send", body)
            assert status == expected and info in answer["info"], (body, answer)
        assert len(events_for(viewer, view_id)) == 2
    await pub_pc.close()
    await view_pc.close()


# -- data ------------------------------------------------------------------------------------------


async def test_send_data_is_decided_by_the_backend(start_server, backend: Backend) -> None:  # type: ignore[no-untyped-def]
    server = start_server(extra_args=["--data-max-payload-bytes", "512"])
    server.add_app("shop", "shopKey", backend.url)
    backend.on("sendData", transform=lambda body: (403, {"info": "No swearing"})
               if body["payload"].get("text") == "darn" else body)
    async with WsClient(server.ws_url) as client:
        user = await client.connect(appKey="shopKey")
        await client.send("sendData", {"operationId": "op-1", "payload": {"text": "hi"}})
        await client.send("sendData", {"operationId": "op-2", "payload": {"text": "darn"}})
        await client.send("sendData", {"operationId": "op-3", "payload": {"text": "z" * 600}})
        for op, status in (("op-1", "ACCEPTED"), ("op-2", "FAILED"), ("op-3", "FAILED")):
            await client.expect("DataStatusEvent", where={"operationId": op, "status": status})
        statuses = {d["data"][0]["operationId"]: d["data"][0] for d in client.messages
                    if d["message"] == "DataStatusEvent"}
        assert statuses["op-2"]["info"] == "No swearing"
        assert statuses["op-3"]["info"] == "Payload too large: 611 bytes, the limit is 512"
        asked = backend.hooks("sendData")
        assert [c.body["operationId"] for c in asked] == ["op-1", "op-2"]  # op-3 never bothered it
        assert asked[0].body["payload"] == {"text": "hi"} and asked[0].body["sessionId"] == user["sessionId"]
        before = len(client.messages)
        await client.send("sendData", {"payload": {}})
        assert "missing field 'operationId'" in (await fail_after(client, before))["info"]
        await still_works(client)


async def test_the_backend_sends_data_to_a_client(server: ServerProcess, backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    backend.on("OnDataEvent", transform=lambda body: (403, {"info": "Not for them"})
               if body["payload"] == "secret" else body)
    async with WsClient(server.ws_url) as client:
        user = await client.connect(appKey="shopKey")
        body = {"nodeId": user["nodeId"], "sessionId": user["sessionId"], "operationId": "op-9",
                "payload": {"message": "hello from the backend"}}
        status, answer = await rest(server, "/rest-api/data/send", body)
        assert status == 200 and answer == {"operationId": "op-9", "status": "ACCEPTED"}
        got = (await client.expect("OnDataEvent"))["data"][0]
        assert got["payload"] == {"message": "hello from the backend"} and got["operationId"] == "op-9"
        assert got["sessionId"] == user["sessionId"]
        delivered = await asyncio.to_thread(backend.wait_for, "DataStatusEvent")
        assert delivered.body["operationId"] == "op-9" and delivered.body["status"] == "ACCEPTED"
        # Refused by the backend's OnDataEvent: not delivered.
        status, answer = await rest(server, "/rest-api/data/send",
                                    {"sessionId": user["sessionId"], "payload": "secret"})
        assert status == 403 and answer["info"] == "Not for them"
        await asyncio.to_thread(backend.wait_for, "DataStatusEvent", lambda c: c.body["status"] == "FAILED")
        for bad, expected, info in [
            ({"sessionId": "no-such-session", "payload": 1}, 404, "Connection not found"),
            ({"nodeId": "elsewhere", "sessionId": user["sessionId"], "payload": 1}, 404, "is not this node"),
            ({"payload": 1}, 400, "'sessionId'"),
            ({"sessionId": user["sessionId"], "operationId": 5, "payload": 1}, 400, "'operationId'"),
            ({"sessionId": user["sessionId"], "payload": "p" * 70000}, 413, "Payload too large"),
        ]:
            status, answer = await rest(server, "/rest-api/data/send", bad)
            assert status == expected and info in answer["info"], (bad, answer)
        await still_works(client)
        assert [d["data"][0]["operationId"] for d in client.messages if d["message"] == "OnDataEvent"] == ["op-9"]


# -- keep-alive ------------------------------------------------------------------------------------


async def test_keep_alive_reports_streams_and_a_refusal_ends_one(start_server, backend: Backend) -> None:  # type: ignore[no-untyped-def]
    server = start_server(extra_args=["--hooks-keepalive-interval", "0.3"])
    server.add_app("shop", "shopKey", backend.url)
    async with WsClient(server.ws_url) as pub, WsClient(server.ws_url) as viewer:
        user = await pub.connect(appKey="shopKey")
        await viewer.connect(appKey="shopKey")
        pub_pc, pub_id = await publish(pub, "kept")
        view_pc, view_id = await play(viewer, "kept")
        for msid in (pub_id, view_id):
            call = await asyncio.to_thread(backend.wait_for, "StreamKeepAliveEvent",
                                           lambda c, m=msid: c.body["mediaSessionId"] == m)
        first = next(c.body for c in backend.hooks("StreamKeepAliveEvent") if c.body["mediaSessionId"] == pub_id)
        assert first["name"] == "kept" and first["published"] is True and first["status"] == "PUBLISHING"
        assert first["sessionId"] == user["sessionId"] and first["appKey"] == "shopKey" and first["nodeId"]
        assert first["mediaProvider"] == "WebRTC" and first["audioState"] == {"muted": False}
        assert call.body["published"] is False and call.body["status"] == "PLAYING"
        # They keep coming at the interval.
        await asyncio.to_thread(backend.wait_for, "StreamKeepAliveEvent",
                                lambda c: c.body["mediaSessionId"] == pub_id and c.at > call.at + 0.5)
        # The backend refuses the viewer: only that stream ends.
        backend.on("StreamKeepAliveEvent", transform=lambda body: (403, {"info": "Payment due"})
                   if body["mediaSessionId"] == view_id else body)
        failed = await status_of(viewer, view_id, "FAILED")
        assert failed["info"] == "Terminated by keep-alive"
        status, found = await rest(server, "/rest-api/stream/find", {"name": "kept", "published": True})
        assert status == 200 and found[0]["status"] == "PUBLISHING"
        # Then the publisher, with another refusal status.
        backend.on("StreamKeepAliveEvent", status=500, body={"info": "down"})
        failed = await status_of(pub, pub_id, "FAILED")
        assert failed["info"] == "Terminated by keep-alive"
        await still_works(pub)
    await pub_pc.close()
    await view_pc.close()


# -- bug reports -----------------------------------------------------------------------------------


async def test_a_bug_report_is_saved_with_the_session_context(server: ServerProcess, backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    reports = server.data_dir / "reports"
    async with WsClient(server.ws_url) as client:
        user = await client.connect(appKey="shopKey", custom={"login": "bob"})
        pc, msid = await publish(client, "reported")
        await client.send("submitBugReport", {"text": "the picture froze", "type": "no_media",
                                              "sessionId": "forged", "path": "../../etc/passwd"})
        event = await asyncio.to_thread(backend.wait_for, "BugReportStatusEvent")
        asked = backend.hooks("sendBugReport")[0].body
        assert asked["text"] == "the picture froze" and asked["sessionId"] == user["sessionId"]
        name = event.body["filename"]
        assert event.body["status"] == "SAVED" and event.body["sessionId"] == user["sessionId"]
        files = list(reports.iterdir())
        assert [f.name for f in files] == [name] and "/" not in name and name.endswith(".json")
        saved = json.loads(files[0].read_text())
        assert saved["report"]["text"] == "the picture froze" and saved["report"]["type"] == "no_media"
        assert saved["session"]["sessionId"] == user["sessionId"] and saved["session"]["custom"] == {"login": "bob"}
        assert [(s["mediaSessionId"], s["status"]) for s in saved["streams"]] == [(msid, "PUBLISHING")]
        # Refused by the backend: the client is told, nothing is saved.
        backend.on("sendBugReport", status=403, body={"info": "Reports are off"})
        before = len(client.messages)
        await client.send("submitBugReport", {"text": "again"})
        fail = await fail_after(client, before)
        assert fail == {"info": "Bug report refused: Reports are off", "apiMethod": "submitBugReport"}
        assert len(list(reports.iterdir())) == 1
        await still_works(client)
    await pc.close()


# -- snapshots -------------------------------------------------------------------------------------


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:8]
    width, height = struct.unpack(">II", png[16:24])
    return width, height


async def test_snapshots_over_the_protocol_and_rest(server: ServerProcess, backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    async with WsClient(server.ws_url) as pub, WsClient(server.ws_url) as asker:
        await pub.connect(appKey="shopKey")
        await asker.connect(appKey="shopKey")
        pc, _ = await publish(pub, "snapped")
        # As the WebSDK's stream-snapshot example does: a new stream object, never played.
        await asker.send("snapshot", {"name": "snapped", "mediaSessionId": "snap-1"})
        done = (await asker.expect("notifyStreamEvent", where={"mediaSessionId": "snap-1"}, timeout=15))["data"][0]
        assert done["type"] == "snapshotCompleted", done
        assert png_size(base64.b64decode(done["payload"]["snapshot"])) == (320, 240)
        assert backend.hooks("snapshot")[0].body["name"] == "snapped"
        status, answer = await rest(server, "/rest-api/stream/snapshot", {"name": "snapped"})
        assert status == 200 and (answer["width"], answer["height"]) == (320, 240)
        assert png_size(base64.b64decode(answer["snapshot"])) == (320, 240)
        # Snapshots of nothing.
        for name in ("nothing-here", "../../etc/passwd", "x" * 1000):
            msid = str(uuid.uuid4())
            await asker.send("snapshot", {"name": name, "mediaSessionId": msid})
            failed = (await asker.expect("notifyStreamEvent", where={"mediaSessionId": msid}))["data"][0]
            assert failed["type"] == "snapshotFailed" and failed["payload"] == {"info": "Stream not found"}
        status, answer = await rest(server, "/rest-api/stream/snapshot", {"name": "nothing-here"})
        assert status == 404 and answer["info"] == "Stream not found"
        status, answer = await rest(server, "/rest-api/stream/snapshot", {"name": 5})
        assert status == 400
        before = len(asker.messages)
        await asker.send("snapshot", {"name": "snapped"})
        assert "missing field 'mediaSessionId'" in (await fail_after(asker, before))["info"]
        # The backend may refuse one.
        backend.on("snapshot", status=403, body={"info": "No pictures"})
        await asker.send("snapshot", {"name": "snapped", "mediaSessionId": "snap-2"})
        refused = (await asker.expect("notifyStreamEvent", where={"mediaSessionId": "snap-2"}))["data"][0]
        assert refused["type"] == "snapshotFailed" and refused["payload"]["info"] == "No pictures"
        # Counted in /health, none left in progress.
        status, health = await rest_get(server, "/health")
        assert health["snapshots"]["taken"] == 2 and health["snapshots"]["pending"] == 0
        await still_works(asker)
        await still_works(pub)
    await pc.close()


async def rest_get(server: ServerProcess, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.rest_url + path) as resp:
            return resp.status, await resp.json()


# -- settings --------------------------------------------------------------------------------------


def test_settings_are_validated() -> None:
    from streaming.config import ConfigError, load

    defaults = load(environ={})
    assert defaults["hooks.keepalive_interval"] == 60.0 and defaults["data.max_payload_bytes"] == 65536
    assert defaults["server.reports_dir"] is None
    for env, value, message in [
        ("STREAMING_HOOKS_KEEPALIVE_INTERVAL", "0", "hooks.keepalive_interval must be greater than 0"),
        ("STREAMING_HOOKS_KEEPALIVE_INTERVAL", "soon", "hooks.keepalive_interval must be a number"),
        ("STREAMING_DATA_MAX_PAYLOAD_BYTES", "-1", "data.max_payload_bytes must be greater than 0"),
        ("STREAMING_SERVER_REPORTS_DIR", "a\x00b", "server.reports_dir must be a file system path"),
    ]:
        try:
            load(environ={env: value})
        except ConfigError as exc:
            assert str(exc).startswith(message), str(exc)
        else:
            raise AssertionError(f"{env}={value!r} was accepted")
