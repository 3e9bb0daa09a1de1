"""Stream events, data, keep-alive, bug reports and snapshots with the official WebSDK in headless
Chromium (fake camera), against the real server and a real HTTP backend.

The page is the one of tests/test_websdk_streaming.py (two WebSDK sessions, one publishes, one plays);
EXTRA adds recorders for the callbacks these features fire: the player's STREAM_EVENT, the session's
APP_DATA, the sendData promise, and the STREAM_EVENT of a stream object made only for a snapshot (as
the WebSDK's stream-snapshot example does).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.backend import Backend
from tests.support.browser import Browser, browser_fixture, chromium_fixture  # noqa: F401
from tests.support.server import ServerProcess
from tests.test_websdk_session import rest
from tests.test_websdk_streaming import StreamingPage

EXTRA = r"""
var m = window.__m;
if (m.ev) { return true; }
m.ev = {streamEvents: {}, appData: [], data: {}, snapshots: {}};
m.recordStreamEvents = function (target) {
    var list = m.ev.streamEvents[target] = [];
    m.streams[target].on(Flashphoner.constants.STREAM_EVENT, function (e) {
        list.push({type: e.type, payload: e.payload === undefined ? null : e.payload});
    });
};
m.recordAppData = function (sessionName) {
    m.sessions[sessionName].on(Flashphoner.constants.SESSION_STATUS.APP_DATA, function (obj) {
        m.ev.appData.push(obj);
    });
};
m.sendData = function (sessionName, key, payload) {
    m.sessions[sessionName].sendData(payload).then(
        function (info) { m.ev.data[key] = {resolved: true, info: info}; },
        function (info) { m.ev.data[key] = {resolved: false, info: info}; });
};
m.snapshot = function (sessionName, key, name) {
    m.sessions[sessionName].createStream({name: name}).on(Flashphoner.constants.STREAM_EVENT, function (e) {
        m.ev.snapshots[key] = {type: e.type, payload: e.payload};
    }).snapshot();
};
return true;
"""


class EventsPage(StreamingPage):
    def open(self) -> EventsPage:
        super().open()
        assert self.b.js(EXTRA)
        return self

    def publish_with(self, session: str, target: str, stream_name: str, **options: Any) -> None:
        options = {"name": stream_name, "constraints": {"audio": True, "video": True}, **options}
        self.b.js("window.__m.stream(arguments[0], arguments[1], arguments[2], true)", session, target, options)

    def play_recording_events(self, session: str, target: str, stream_name: str) -> None:
        self.play(session, target, stream_name)
        self.b.js("window.__m.recordStreamEvents(arguments[0])", target)

    def stream_events(self, target: str) -> list[dict[str, Any]]:
        return list(self.b.js("return window.__m.ev.streamEvents[arguments[0]] || []", target))

    def wait_value(self, expression: str, *args: Any, what: str, timeout: float = 15.0) -> Any:
        return self.b.wait_js(f"return {expression}", *args, timeout=timeout, what=what)


@pytest.fixture
def events_page(server: ServerProcess, browser: Browser) -> Iterator[EventsPage]:
    yield EventsPage(browser, server).open()


def backend_app(server: ServerProcess, backend: Backend) -> str:
    server.add_app("shop", "shopKey", backend.url)
    return "shopKey"


def test_mute_and_data_from_the_publisher_fire_stream_event_at_the_player(
        server: ServerProcess, backend: Backend, events_page: EventsPage) -> None:
    page = events_page
    app = backend_app(server, backend)
    page.connect("pub", app)
    page.publish("pub", "cam", "evcam")
    page.wait("cam", "PUBLISHING")
    page.connect("viewer", app)
    page.play_recording_events("viewer", "screen", "evcam")
    page.wait("screen", "PLAYING")
    page.b.js("var s = window.__m.streams.cam; s.muteAudio(); s.muteVideo(); s.unmuteAudio();"
              "s.sendData({caption: 'slide 2'}); s.unmuteVideo();")
    events = page.b.wait_until(lambda: len(page.stream_events("screen")) >= 5 and page.stream_events("screen"),
                               15, "five STREAM_EVENTs at the player")
    assert [e["type"] for e in events] == ["audioMuted", "videoMuted", "audioUnmuted", "data", "videoUnmuted"]
    assert events[3]["payload"] == {"caption": "slide 2"}
    # The publisher's own stream gets none, and the backend heard each one (for the publisher's stream,
    # and for the player's).
    def heard(published: bool) -> list[str]:
        return [c.body["type"] for c in backend.hooks("StreamEvent")
                if (c.body.get("published") is not False) == published]

    page.b.wait_until(lambda: len(heard(True)) >= 5 and len(heard(False)) >= 5, 10, "StreamEvent hooks")
    for published in (True, False):
        assert heard(published) == ["audioMuted", "videoMuted", "audioUnmuted", "data", "videoUnmuted"]
    # A mute is state: the REST API shows it until the publisher unmutes.
    page.b.js("window.__m.streams.cam.muteVideo()")
    page.b.wait_until(lambda: len(page.stream_events("screen")) == 6 or None, 10, "the sixth event")
    status, found = rest(server, "/rest-api/stream/find", {"name": "evcam"})
    assert status == 200 and {s["published"]: s["videoState"]["muted"] for s in found} == {True: True, False: True}
    assert all(s["audioState"] == {"muted": False} for s in found)


def test_send_data_resolves_when_accepted_and_rejects_when_refused(
        server: ServerProcess, backend: Backend, events_page: EventsPage) -> None:
    page = events_page
    app = backend_app(server, backend)
    backend.on("sendData", transform=lambda body: (403, {"info": "Refused: " + body["payload"]["say"]})
               if body["payload"].get("say") == "no" else body)
    page.connect("client", app)
    page.b.js("window.__m.sendData('client', 'yes', {say: 'yes'}); window.__m.sendData('client', 'no', {say: 'no'});")
    yes = page.wait_value("window.__m.ev.data.yes", what="the accepted sendData promise")
    no = page.wait_value("window.__m.ev.data.no", what="the refused sendData promise")
    assert yes["resolved"] is True and yes["info"]["status"] == "ACCEPTED"
    assert no["resolved"] is False and no["info"] == {"status": "FAILED", "info": "Refused: no"}
    assert sorted(c.body["payload"]["say"] for c in backend.hooks("sendData")) == ["no", "yes"]


def test_backend_data_reaches_the_app_data_callback(server: ServerProcess, backend: Backend,
                                                    events_page: EventsPage) -> None:
    page = events_page
    app = backend_app(server, backend)
    page.connect("client", app)
    page.b.js("window.__m.recordAppData('client')")
    status, found = rest(server, "/rest-api/connection/find", {"appKey": app})
    assert status == 200 and len(found) == 1
    session = found[0]
    body = {"nodeId": session["nodeId"], "sessionId": session["sessionId"], "operationId": "op-42",
            "payload": {"text": "hi there"}}
    status, answer = rest(server, "/rest-api/data/send", body)
    assert status == 200 and answer["status"] == "ACCEPTED", answer
    got = page.wait_value("window.__m.ev.appData.length && window.__m.ev.appData", what="APP_DATA")
    assert len(got) == 1 and got[0]["payload"] == {"text": "hi there"} and got[0]["operationId"] == "op-42"
    assert backend.wait_for("OnDataEvent").body["payload"] == {"text": "hi there"}


def test_keep_alive_refusal_ends_the_stream(start_server: Callable[..., ServerProcess], backend: Backend,
                                           browser: Browser) -> None:
    server = start_server(extra_args=["--hooks-keepalive-interval", "0.5"])
    page = EventsPage(browser, server).open()
    app = backend_app(server, backend)
    page.connect("pub", app)
    page.publish("pub", "cam", "kept-alive")
    page.wait("cam", "PUBLISHING")
    first = backend.wait_for("StreamKeepAliveEvent", timeout=10)
    assert first.body["name"] == "kept-alive" and first.body["status"] == "PUBLISHING"
    backend.on("StreamKeepAliveEvent", status=403, body={"info": "Subscription ended"})
    event = page.wait("cam", "FAILED", timeout=10)
    assert event["info"] == "Terminated by keep-alive"
    page.b.wait_until(lambda: rest(server, "/rest-api/stream/find_all")[0] == 404 or None, 10,
                      "the stream gone from the server")


def test_submit_bug_report_produces_a_file(server: ServerProcess, backend: Backend,
                                          events_page: EventsPage) -> None:
    page = events_page
    app = backend_app(server, backend)
    page.connect("client", app)
    page.b.js("window.__m.sessions.client.submitBugReport({type: 'no_audio', text: 'I hear nothing'})")
    event = backend.wait_for("BugReportStatusEvent")
    path = server.data_dir / "reports" / event.body["filename"]
    saved = json.loads(path.read_text())
    assert saved["report"] == {"type": "no_audio", "text": "I hear nothing"}
    assert saved["session"]["sessionId"] == event.body["sessionId"]
    assert "Chrome" in saved["session"]["clientBrowserVersion"]


def test_snapshot_is_a_png_of_the_camera_size(server: ServerProcess, events_page: EventsPage) -> None:
    page = events_page
    page.connect("pub")
    page.publish_with("pub", "cam", "snapcam", constraints={"audio": False, "video": {"width": 640, "height": 480}})
    page.wait("cam", "PUBLISHING")
    sent = page.b.wait_until(lambda: (page.video("cam") or {}).get("width") and page.video("cam"), 10,
                             "the camera picture")
    page.connect("asker")
    page.b.js("window.__m.snapshot('asker', 'one', 'snapcam'); window.__m.snapshot('asker', 'none', 'nothing')")
    done = page.wait_value("window.__m.ev.snapshots.one", what="snapshotCompleted")
    assert done["type"] == "snapshotCompleted", done
    png = base64.b64decode(done["payload"]["snapshot"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (sent["width"], sent["height"]) == (640, 480)
    failed = page.wait_value("window.__m.ev.snapshots.none", what="snapshotFailed")
    assert failed == {"type": "snapshotFailed", "payload": {"info": "Stream not found"}}
