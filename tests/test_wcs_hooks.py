"""WCS conformance of the REST hooks and of client messages the WebSDK waits on, at the protocol level:
the real server process, a real HTTP backend, aiortc publishers and viewers (the project's client),
protocol clients, ffprobe and tcpdump.

- restPolicy OVERWRITE on publishStream / playStream: record, name and custom take effect.
- sendStreamEvent is a direct invocation (refusal, restOnError, OVERWRITE) and carries info; StreamEvent
  goes to the backend per subscriber with the subscriber's mediaSessionId.
- ErrorEvent for errors that are not a stream's status; ConnectionStatusEvent's fields.
- playRTSP carries rtspUrl and User-Agent; connect's width/height bound what a viewer gets.
- unPublishStream / stopStream hooks: a refusal is logged and the stream stops.
- availableStream and sessionDebug are answered; a no_media bug report captures RTP/RTCP to pcap.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from media import pcap
from streaming.client import Session, StreamFailed
from tests.support.backend import Backend, HookCall
from tests.support.server import ServerProcess
from tests.support.wsclient import WsClient
from tests.test_rtsp_server import RTSP, ffprobe_url, rtsp_url
from tests.test_stream_events import events_for, play, publish, rest
from tests.test_streams_protocol import poll_until, status_of
from tests.test_transcoded_viewers import health

TCPDUMP = "/usr/bin/tcpdump"


def with_rest_config(config: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    """A connect answer: the body echoed, with this restClientConfig."""
    return lambda body: {**body, "restClientConfig": config}


async def hook(backend: Backend, method: str, predicate: Callable[[HookCall], bool] = lambda c: True,
               timeout: float = 15.0) -> HookCall:
    return await asyncio.to_thread(backend.wait_for, method, predicate, timeout)


def last_status(player: Any) -> dict[str, Any]:
    return player.signal.events[-1]


# -- restPolicy OVERWRITE on publishStream / playStream ---------------------------------------------


async def test_overwrite_of_publish_records_renames_and_sets_custom(server: ServerProcess, backend: Backend) -> None:
    server.add_app("forced", "forcedKey", backend.url)
    server.add_app("plain", "plainKey", backend.url)
    overwrite = {"publishStream": {"restPolicy": "OVERWRITE", "restOverwrite": "record,name,custom"}}
    backend.on("connect", transform=lambda body: {**body, "restClientConfig": overwrite}
               if body["appKey"] == "forcedKey" else body)
    backend.on("publishStream", transform=lambda body: {**body, "record": True, "name": "studio-" + body["name"],
                                                         "custom": {"tier": "gold"}})
    async with Session.connect(server.ws_url, "forcedKey") as forced, \
            Session.connect(server.ws_url, "plainKey") as plain, Session.connect(server.ws_url) as watching:
        publisher = await forced.publish("cam", codec="VP8", width=320, height=240, audio=False)
        # The client is told the name its stream has, and that it is recorded.
        status = last_status(publisher)
        assert status["status"] == "PUBLISHING" and status["name"] == "studio-cam"
        assert status["record"] is True and status["custom"] == {"tier": "gold"}
        assert status["recordName"].startswith("studio-cam")
        started = await hook(backend, "RecordingStatusEvent", lambda c: c.body["status"] == "STARTED")
        assert started.body["name"] == "studio-cam"
        code, found = await rest(server, "/rest-api/stream/find", {"published": True})
        assert code == 200 and [s["name"] for s in found] == ["studio-cam"]
        # Viewers find it under the backend's name only.
        player = await watching.play("studio-cam", audio=False)
        await player.wait_frames(10, timeout=30)
        try:
            await watching.play("cam", audio=False)
            raise AssertionError("the client's own name must not be published")
        except StreamFailed as exc:
            assert exc.info == "Stream not found"
        # Under the default restPolicy (NOTIFY) the same answer changes nothing.
        other = await plain.publish("cam", codec="VP8", width=320, height=240, audio=False)
        status = last_status(other)
        assert status["name"] == "cam" and status["record"] is False and "recordName" not in status
        record_name = last_status(publisher)["recordName"]
        await publisher.stop(wait=True)
        stopped = await hook(backend, "RecordingStatusEvent", lambda c: c.body["status"] == "STOPPED")
        assert stopped.body["size"] > 0 and stopped.body["duration"] > 0
        code, files = await rest(server, "/rest-api/record/find_all", {})
        assert code == 200 and [f["fileName"] for f in files] == [record_name]


async def test_overwrite_with_a_bad_name_fails_the_stream_with_a_reason(server: ServerProcess,
                                                                       backend: Backend) -> None:
    server.add_app("forced", "forcedKey", backend.url)
    backend.on("connect", transform=with_rest_config(
        {"publishStream": {"restPolicy": "OVERWRITE", "restOverwrite": "name"}}))
    names = iter(["../../etc/passwd", 12, "fine-name"])
    backend.on("publishStream", transform=lambda body: {**body, "name": next(names)})
    async with Session.connect(server.ws_url, "forcedKey") as forced:
        for reason in ("The backend gave a bad stream name", "not a string"):
            try:
                await forced.publish("cam", codec="VP8", width=320, height=240, audio=False)
                raise AssertionError("a bad name from the backend must fail the stream")
            except StreamFailed as exc:
                assert reason in exc.info
        publisher = await forced.publish("cam", codec="VP8", width=320, height=240, audio=False)
        assert last_status(publisher)["name"] == "fine-name"


async def test_overwrite_of_play_sends_the_viewer_to_the_backends_stream(server: ServerProcess,
                                                                        backend: Backend) -> None:
    server.add_app("alias", "aliasKey", backend.url)
    backend.on("connect", transform=with_rest_config(
        {"playStream": {"restPolicy": "OVERWRITE", "restOverwrite": "name,custom,width,height"}}))
    backend.on("playStream", transform=lambda body: {**body, "name": "hidden-origin", "custom": {"seat": 7},
                                                      "width": 160, "height": 120})
    async with Session.connect(server.ws_url) as publishing, Session.connect(server.ws_url, "aliasKey") as viewing:
        await publishing.publish("hidden-origin", codec="VP8", width=320, height=240, audio=False)
        player = await viewing.play("public-alias", audio=False, inspect=True)
        status = last_status(player)
        assert status["name"] == "hidden-origin" and status["custom"] == {"seat": 7}
        await player.wait_frames(10, timeout=30)
        assert (player.video.width, player.video.height) == (160, 120)  # the backend's size, transcoded
        asked = await hook(backend, "playStream")
        assert asked.body["name"] == "public-alias"


# -- sendStreamEvent, StreamEvent --------------------------------------------------------------------


async def test_send_stream_event_is_decided_by_the_backend(server: ServerProcess, backend: Backend) -> None:
    server.add_app("events", "eventsKey", backend.url)
    server.add_app("moderated", "moderatedKey", backend.url)
    moderated = {"sendStreamEvent": {"restPolicy": "OVERWRITE", "restOverwrite": "payload,info",
                                     "restOnError": "LOG"}}
    backend.on("connect", transform=lambda body: {**body, "restClientConfig": moderated}
               if body["appKey"] == "moderatedKey" else body)

    def decide(body: dict[str, Any]) -> Any:
        payload = body.get("payload") or {}
        if payload.get("text") == "forbidden":
            return 403, {"info": "Not on this channel"}
        if payload.get("text") == "garbled":
            return 200, "<html>not json</html>"
        return {**body, "payload": {"text": str(payload.get("text", "")).upper()}, "info": "moderated"}

    backend.on("sendStreamEvent", transform=decide)
    async with WsClient(server.ws_url) as pub, WsClient(server.ws_url) as viewer:
        await pub.connect(appKey="eventsKey")
        await viewer.connect(appKey="eventsKey")
        pub_pc, pub_id = await publish(pub, "events-cam")
        view_pc, view_id = await play(viewer, "events-cam")
        # Refused: nobody gets it, the publisher is told why.
        before = len(pub.messages)
        await pub.send("sendStreamEvent", {"mediaSessionId": pub_id, "type": "data",
                                           "payload": {"text": "forbidden"}})
        fail = (await pub.expect("fail", after=before))["data"][0]
        assert fail == {"info": "Stream event refused: Not on this channel", "apiMethod": "sendStreamEvent",
                        "id": pub_id}
        # An answer that is not JSON: restOnError defaults to FAIL for a direct invocation.
        before = len(pub.messages)
        await pub.send("sendStreamEvent", {"mediaSessionId": pub_id, "type": "data",
                                           "payload": {"text": "garbled"}})
        fail = (await pub.expect("fail", after=before))["data"][0]
        assert "not JSON" in fail["info"] and fail["apiMethod"] == "sendStreamEvent"
        # Accepted under NOTIFY: the client's event as it was, with its info.
        await pub.send("sendStreamEvent", {"mediaSessionId": pub_id, "type": "data", "info": "caption",
                                           "payload": {"text": "hello"}})
        await viewer.wait_until(lambda: len(events_for(viewer, view_id)) == 1)
        got = events_for(viewer, view_id)[0]
        assert got["payload"] == {"text": "hello"} and got["info"] == "caption"
        asked = backend.hooks("sendStreamEvent")
        assert [c.body["payload"]["text"] for c in asked] == ["forbidden", "garbled", "hello"]
        assert asked[-1].body["info"] == "caption" and asked[-1].body["name"] == "events-cam"
        # StreamEvent: the publisher's, and one per subscriber with the subscriber's mediaSessionId.
        mine = await hook(backend, "StreamEvent", lambda c: c.body["mediaSessionId"] == view_id)
        assert mine.body["payload"] == {"text": "hello"} and mine.body["info"] == "caption"
        assert mine.body["sessionId"] != (await hook(backend, "StreamEvent",
                                                     lambda c: c.body["mediaSessionId"] == pub_id)).body["sessionId"]
        assert len(backend.hooks("StreamEvent")) == 2  # the refused ones were never reported
    async with WsClient(server.ws_url) as pub, WsClient(server.ws_url) as viewer:
        await pub.connect(appKey="moderatedKey")
        await viewer.connect()
        pub2_pc, pub2_id = await publish(pub, "moderated-cam")
        view2_pc, view2_id = await play(viewer, "moderated-cam")
        # OVERWRITE: the viewer gets the backend's payload and info; restOnError LOG lets a garbled
        # answer through as the client sent it.
        await pub.send("sendStreamEvent", {"mediaSessionId": pub2_id, "type": "data", "payload": {"text": "hi"}})
        await pub.send("sendStreamEvent", {"mediaSessionId": pub2_id, "type": "data",
                                           "payload": {"text": "garbled"}})
        await viewer.wait_until(lambda: len(events_for(viewer, view2_id)) == 2)
        first, second = events_for(viewer, view2_id)
        assert first["payload"] == {"text": "HI"} and first["info"] == "moderated"
        assert second["payload"] == {"text": "garbled"} and "info" not in second
    for pc in (pub_pc, view_pc, pub2_pc, view2_pc):
        await pc.close()


# -- ErrorEvent, ConnectionStatusEvent -----------------------------------------------------------------


async def test_unclassified_errors_reach_the_backend_as_error_event(server: ServerProcess, backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    async with WsClient(server.ws_url) as client:
        await client.connect(appKey="shopKey")
        await client.send("frobnicate", {"x": 1})
        await client.send_raw("{not json")
        await client.send("sendData", {"payload": {}})  # no operationId
        # A stream's failure is its status (StreamStatusEvent FAILED), not an ErrorEvent.
        msid = str(uuid.uuid4())
        await client.send("playStream", {"mediaSessionId": msid, "name": "nobody", "sdp": "v=0\r\n"})
        await status_of(client, msid, "FAILED")
        await poll_until(lambda: asyncio.sleep(0, [c.body for c in backend.hooks("ErrorEvent")]),
                         lambda got: len(got) >= 3, 10, "three ErrorEvents")
        errors = [c.body for c in backend.hooks("ErrorEvent")]
        assert [e.get("apiMethod") for e in errors] == ["frobnicate", None, "sendData"]
        assert "frobnicate" in errors[0]["info"]
        assert "operationId" in errors[2]["info"]
        assert all(e["appKey"] == "shopKey" and e["sessionId"] for e in errors)
        failed = await hook(backend, "StreamStatusEvent", lambda c: c.body["status"] == "FAILED")
        assert failed.body["mediaSessionId"] == msid
        assert len(backend.hooks("ErrorEvent")) == 3


async def test_connection_status_event_carries_the_connections_fields(server: ServerProcess,
                                                                      backend: Backend) -> None:
    server.add_app("phone", "phoneKey", backend.url)
    sip = {"sipLogin": "1001", "sipAuthenticationName": "1001", "sipPassword": "pw", "sipDomain": "pbx.test",
           "sipOutboundProxy": "pbx.test", "sipPort": 5060, "sipRegisterRequired": False}
    async with WsClient(server.ws_url) as client:
        user = await client.connect(appKey="phoneKey", custom={"room": "r1"}, **sip)
        established = await hook(backend, "ConnectionStatusEvent", lambda c: c.body["status"] == "ESTABLISHED")
    body = established.body
    assert body["custom"] == {"room": "r1"} and body["mediaProviders"] == ["WebRTC"]
    assert body["authToken"] == user["authToken"] and body["sessionId"] == user["sessionId"]
    assert {k: body[k] for k in sip} == sip
    closed = await hook(backend, "ConnectionStatusEvent", lambda c: c.body["status"] == "DISCONNECTED")
    assert closed.body["authToken"] == user["authToken"] and closed.body["sipLogin"] == "1001"
    # A refused connection is reported with its status and info only (as WCS does).
    backend.on("connect", status=403, body={"info": "Nope"})
    async with WsClient(server.ws_url) as refused:
        await refused.send("connection", {"appKey": "phoneKey", "custom": {"room": "r2"}, **sip})
        await refused.expect("fail")
    failed = await hook(backend, "ConnectionStatusEvent", lambda c: c.body["status"] == "FAILED")
    assert set(failed.body) == {"status", "info", "nodeId", "sessionId", "appKey"}
    assert failed.body["info"] == "Nope"


# -- playRTSP, connect's width / height --------------------------------------------------------------


async def test_play_rtsp_hook_carries_the_url_and_the_user_agent(start_server: Callable[..., ServerProcess],
                                                                 backend: Backend) -> None:
    server = start_server([*RTSP, "--rtsp-app-key", "rtspKey"])
    server.add_app("rtspApp", "rtspKey", backend.url)
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=320, height=240, audio=False)
        url = rtsp_url(server) + "?token=t1"
        code, probed, err = await ffprobe_url(url, "tcp")
        assert code == 0, err
    call = await hook(backend, "playRTSP")
    assert call.body["rtspUrl"] == url and call.body["name"] == "cam1" and call.body["token"] == "t1"
    assert call.body["User-Agent"].startswith("Lavf") and call.body["userAgent"] == call.body["User-Agent"]


class SizedSession(Session):
    """A client whose `connection` carries width and height, as WCS's connect has them."""

    size = (160, 120)

    def connection_message(self) -> dict[str, Any]:
        return {**super().connection_message(), "width": self.size[0], "height": self.size[1]}


async def test_connect_width_and_height_bound_what_a_viewer_gets(server: ServerProcess) -> None:
    async with Session.connect(server.ws_url) as publishing, SizedSession.connect(server.ws_url) as small:
        await publishing.publish("big", codec="VP8", width=320, height=240, audio=False)
        await publishing.publish("wide", codec="H264", width=640, height=360, audio=False)
        await publishing.publish("tiny", codec="VP8", width=128, height=96, audio=False)
        player = await small.play("big", audio=False, inspect=True)
        await player.wait_frames(10, timeout=30)
        assert (player.video.width, player.video.height) == (160, 120)
        wide = await small.play("wide", audio=False, inspect=True)
        await wide.wait_frames(10, timeout=30)
        assert (wide.video.width, wide.video.height) == (160, 90)  # fitted, the aspect ratio kept
        assert health(server)["transcoders"] == {"active": 2, "created": 2}
        # A stream already within the bounds is forwarded as it is: no transcoder.
        tiny = await small.play("tiny", audio=False, inspect=True)
        await tiny.wait_frames(10, timeout=30)
        assert (tiny.video.width, tiny.video.height) == (128, 96)
        # Asking playStream for more than connect allows gets the most it allows.
        more = await small.play("big", audio=False, inspect=True, width=640, height=480)
        await more.wait_frames(10, timeout=30)
        assert (more.video.width, more.video.height) == (160, 120)
        assert health(server)["transcoders"] == {"active": 2, "created": 2}  # shared with the first
        code, transcoders = await rest(server, "/rest-api/transcoder/find_all", {})
        assert code == 200
        assert sorted((t["stream"], t["target"]["fit"]) for t in transcoders) == [("big", True), ("wide", True)]


class BadSizeSession(SizedSession):
    size = ("wide", -5)  # type: ignore[assignment]


async def test_connect_sizes_that_are_not_sizes_bound_nothing(server: ServerProcess) -> None:
    async with Session.connect(server.ws_url) as publishing, BadSizeSession.connect(server.ws_url) as odd:
        await publishing.publish("plain", codec="VP8", width=320, height=240, audio=False)
        player = await odd.play("plain", audio=False, inspect=True)
        await player.wait_frames(10, timeout=30)
        assert (player.video.width, player.video.height) == (320, 240)
        assert health(server)["transcoders"]["created"] == 0


# -- unPublishStream / stopStream ----------------------------------------------------------------------


async def test_refused_unpublish_and_stop_are_logged_and_the_streams_stop(server: ServerProcess,
                                                                         backend: Backend) -> None:
    server.add_app("sticky", "stickyKey", backend.url)
    backend.on("unPublishStream", status=403, body={"info": "Stay on air"})
    backend.on("stopStream", status=403, body={"info": "Keep watching"})
    async with Session.connect(server.ws_url, "stickyKey") as publishing, \
            Session.connect(server.ws_url, "stickyKey") as watching:
        publisher = await publishing.publish("sticky-cam", codec="VP8", width=320, height=240, audio=False)
        player = await watching.play("sticky-cam", audio=False)
        await player.wait_frames(5, timeout=30)
        await player.stop(wait=True)
        assert player.status == "STOPPED"
        stop = await hook(backend, "stopStream")
        assert stop.body["mediaSessionId"] == player.media_session_id and stop.body["name"] == "sticky-cam"
        await publisher.stop(wait=True)
        assert publisher.status == "UNPUBLISHED"
        unpublish = await hook(backend, "unPublishStream")
        assert unpublish.body["mediaSessionId"] == publisher.media_session_id and unpublish.body["published"]
        code, _ = await rest(server, "/rest-api/stream/find_all", {})
        assert code == 404
    log = server.log()
    assert "backend refused stopStream of 'sticky-cam' (Keep watching): the stream stops anyway" in log
    assert "backend refused unPublishStream of 'sticky-cam' (Stay on air): the stream stops anyway" in log


# -- availableStream, sessionDebug, no_media bug reports ---------------------------------------------


async def test_available_stream_answers_as_the_websdk_waits_for(server: ServerProcess) -> None:
    async with WsClient(server.ws_url) as pub, WsClient(server.ws_url) as asking:
        await pub.connect()
        await asking.connect()
        pc, _pub_id = await publish(pub, "here")
        for name, status in (("here", "true"), ("gone", "false")):
            msid = str(uuid.uuid4())
            await asking.send("availableStream", {"mediaSessionId": msid, "name": name})
            answer = (await asking.expect("availableStream", where={"id": msid}))["data"][0]
            assert answer["status"] == status  # a string: the WebSDK compares it with "true"
            assert answer.get("info") == (None if status == "true" else "Stream not found")
        before = len(asking.messages)
        await asking.send("availableStream", {"name": "here"})
        assert "mediaSessionId" in (await asking.expect("fail", after=before))["data"][0]["info"]
    await pc.close()


async def packets_sent(pc: Any) -> int:
    """RTP packets an aiortc peer connection has sent so far (its getStats)."""
    report = await pc.getStats()
    return sum(getattr(stat, "packetsSent", 0) for stat in report.values() if stat.type == "outbound-rtp")


def tcpdump_lines(path: Path) -> list[str]:
    done = subprocess.run([TCPDUMP, "-nn", "-r", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def rtp_ssrcs(path: Path) -> tuple[set[int], int]:
    """SSRCs of the RTP packets in a capture, and how many RTCP packets it has (told apart as RFC 5761
    demultiplexes them; RTCP is labelled with the RTP ports plus one)."""
    ssrcs: set[int] = set()
    rtcp = 0
    rtp_ports: set[tuple[int, int]] = set()
    rtcp_ports: set[tuple[int, int]] = set()
    for _ts, packet in pcap.read(path.read_bytes()):
        src, dst, payload = pcap.udp_payload(packet)
        assert payload[0] >> 6 == 2, "not RTP/RTCP version 2"
        if 192 <= payload[1] <= 223:
            rtcp += 1
            rtcp_ports.add((src[1] - 1, dst[1] - 1))
        else:
            ssrcs.add(int.from_bytes(payload[8:12], "big"))
            rtp_ports.add((src[1], dst[1]))
    assert rtcp_ports <= rtp_ports | {(b, a) for a, b in rtp_ports}, (rtp_ports, rtcp_ports)
    return ssrcs, rtcp


async def test_no_media_bug_report_captures_the_sessions_rtp_to_pcap(start_server: Callable[..., ServerProcess],
                                                                    backend: Backend) -> None:
    server = start_server(["--capture-seconds", "2"])
    server.add_app("shop", "shopKey", backend.url)
    async with Session.connect(server.ws_url, "shopKey") as publishing, Session.connect(server.ws_url) as watching:
        publisher = await publishing.publish("broken", codec="VP8", width=320, height=240, audio=True)
        player = await watching.play("broken")
        await player.wait_frames(5, timeout=30)
        await publishing.send("submitBugReport", {"type": "no_media", "text": "the viewer sees nothing"})
        saved = await hook(backend, "BugReportStatusEvent")
        report_path = server.data_dir / "reports" / saved.body["filename"]
        report = json.loads(report_path.read_text())
        assert report["report"]["type"] == "no_media" and report["capture"]["seconds"] == 2
        pcap_path = report_path.with_suffix(".pcap")
        assert report["capture"]["file"] == pcap_path.name
        await poll_until(lambda: asyncio.sleep(0, pcap_path.exists()), bool, 15, "the pcap beside the report")
        # tcpdump reads it: UDP datagrams between the publisher's ICE address and ours.
        lines = tcpdump_lines(pcap_path)
        assert len(lines) > 50 and all(" UDP, length " in line for line in lines), lines[:5]
        assert all("127.0.0.1." in line for line in lines)
        ssrcs, rtcp = rtp_ssrcs(pcap_path)
        sent = {sender._ssrc for sender in publisher.pc.getSenders()}
        assert ssrcs == sent  # the publisher's audio and video RTP, as the server received them
        assert rtcp > 0  # its sender reports, and our receiver reports to it
        # Another kind of report captures nothing.
        await publishing.send("submitBugReport", {"type": "other", "text": "just saying"})
        other = await hook(backend, "BugReportStatusEvent", lambda c: c.body["filename"] != saved.body["filename"])
        assert "capture" not in json.loads((server.data_dir / "reports" / other.body["filename"]).read_text())
    assert sorted(p.suffix for p in (server.data_dir / "reports").iterdir()) == [".json", ".json", ".pcap"]


async def test_a_capture_keeps_to_its_size_and_a_viewers_capture_has_its_stream(
        start_server: Callable[..., ServerProcess], backend: Backend) -> None:
    server = start_server(["--capture-seconds", "3", "--capture-max-bytes", "20000"])
    server.add_app("shop", "shopKey", backend.url)
    async with Session.connect(server.ws_url) as publishing, Session.connect(server.ws_url, "shopKey") as watching:
        publisher = await publishing.publish("capped", codec="VP8", width=640, height=480, audio=False)
        player = await watching.play("capped", audio=False)
        await player.wait_frames(5, timeout=30)
        await watching.send("submitBugReport", {"type": "no_media"})
        saved = await hook(backend, "BugReportStatusEvent")
        pcap_path = (server.data_dir / "reports" / saved.body["filename"]).with_suffix(".pcap")
        await poll_until(lambda: asyncio.sleep(0, pcap_path.exists()), bool, 15, "the viewer's pcap")
        assert 10_000 < pcap_path.stat().st_size <= 20_000
        ssrcs, _rtcp = rtp_ssrcs(pcap_path)
        assert ssrcs == {sender._ssrc for sender in publisher.pc.getSenders()}
        assert tcpdump_lines(pcap_path)
    assert "left out" in server.log()


async def test_session_debug_is_answered_and_saves_a_capture(server: ServerProcess, backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    async with WsClient(server.ws_url) as client:
        await client.connect(appKey="shopKey")
        pc, _msid = await publish(client, "debugged")
        await client.send("sessionDebug", {"command": "start"})
        started = (await client.expect("notifySessionDebugEvent", where={"status": "STARTED"}))["data"][0]
        first = await packets_sent(pc)
        await poll_until(lambda: packets_sent(pc), lambda sent: sent >= first + 30, 15,
                         "30 packets sent while debugging")
        await client.send("sessionDebug", {"command": "start"})
        again = (await client.expect("notifySessionDebugEvent", after=0,
                                     where={"info": "Session debug is already running"}))["data"][0]
        assert again["status"] == "STARTED"
        await client.send("pushLogs", {"logs": "12:00:00 INFO core - line one\n"})
        await client.send("pushLogs", {"logs": ["not", "text"]})
        await client.send("pushLogs", {"logs": "12:00:01 DEBUG core - line two\n"})
        await client.send("sessionDebug", {"command": "stop"})
        await client.expect("notifySessionDebugEvent", where={"status": "STOPPED"})
        logs = (server.data_dir / "reports" / started["logs"]).read_text()
        assert logs == "12:00:00 INFO core - line one\n12:00:01 DEBUG core - line two\n"
        path = server.data_dir / "reports" / started["filename"]
        assert path.exists() and tcpdump_lines(path)
        ssrcs, _ = rtp_ssrcs(path)
        assert len(ssrcs) == 1
        # The WebSDK pushes its log lines once debug was started (and does not stop after stopDebug):
        # outside a debug they are taken without an answer.
        before = len(client.messages)
        await client.send("pushLogs", {"logs": "12:00:00 INFO core - after the debug\n"})
        await client.send("sessionDebug", {"command": "explode"})
        assert "command must be 'start' or 'stop'" in (await client.expect("fail", after=before))["data"][0]["info"]
        assert [d["message"] for d in client.messages[before:]].count("fail") == 1
        events = await hook(backend, "SessionDebugStatusEvent", lambda c: c.body["status"] == "STOPPED")
        assert events.body["sessionId"]
        assert [c.body["command"] for c in backend.hooks("sessionDebug")] == ["start", "start", "stop"]
        # The backend may refuse it.
        backend.on("sessionDebug", status=403, body={"info": "No debugging here"})
        await client.send("sessionDebug", {"command": "start"})
        refused = (await client.expect("notifySessionDebugEvent", where={"status": "FAILED"}))["data"][0]
        assert refused["info"] == "Refused: No debugging here"
    await pc.close()
