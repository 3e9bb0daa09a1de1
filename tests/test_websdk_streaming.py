"""Publish and play through the SFU with the official WebSDK in headless Chromium (fake camera).

One page holds two WebSDK sessions, each with its own WebSocket and peer connection: one publishes,
one plays. The player's decoding is read from the browser's own getStats() (framesDecoded rising,
audio packets arriving); the server's REST API must show that it decoded nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.backend import Backend
from tests.support.browser import Browser, browser_fixture, chromium_fixture  # noqa: F401
from tests.support.server import ServerProcess
from tests.test_websdk_session import rest

HARNESS = r"""
if (window.__m) { return true; }
if (typeof Flashphoner === "undefined") { return false; }
var m = window.__m = {pcs: [], sessions: {}, streams: {}, events: [], waiters: []};
var NativePC = window.RTCPeerConnection;
window.RTCPeerConnection = function (config, constraints) {
    var pc = new NativePC(config, constraints);
    m.pcs.push(pc);
    return pc;
};
window.RTCPeerConnection.prototype = NativePC.prototype;
Object.keys(NativePC).forEach(function (k) { window.RTCPeerConnection[k] = NativePC[k]; });
function record(target, status, obj) {
    var event = {target: target, status: status, info: obj && obj.info ? obj.info : null};
    m.events.push(event);
    m.waiters = m.waiters.filter(function (w) { return !w(event); });
}
m.waitFor = function (target, statuses, done) {
    function match(e) { return e.target === target && statuses.indexOf(e.status) >= 0; }
    var found = m.events.filter(match)[0];
    if (found) { done(found); return; }
    m.waiters.push(function (e) { if (match(e)) { done(e); return true; } return false; });
};
m.connect = function (name, url, appKey) {
    var S = Flashphoner.constants.SESSION_STATUS;
    var session = Flashphoner.createSession({urlServer: url, appKey: appKey || "defaultApp"});
    m.sessions[name] = session;
    [S.ESTABLISHED, S.DISCONNECTED, S.FAILED].forEach(function (s) {
        session.on(s, function () { record(name, s, null); });
    });
};
m.stream = function (sessionName, target, options, publish) {
    var ST = Flashphoner.constants.STREAM_STATUS;
    var div = document.createElement("div");
    div.id = "display-" + target;
    document.body.appendChild(div);
    options.display = div;
    var stream = m.sessions[sessionName].createStream(options);
    m.streams[target] = stream;
    [ST.PUBLISHING, ST.PLAYING, ST.STOPPED, ST.UNPUBLISHED, ST.FAILED].forEach(function (s) {
        stream.on(s, function (st) { record(target, s, {info: st.getInfo()}); });
    });
    if (publish) { stream.publish(); } else { stream.play(); }
};
// The video element of a display, and inbound stats of every peer connection.
m.video = function (target) {
    var v = document.querySelector("#display-" + target + " video");
    return v ? {width: v.videoWidth, height: v.videoHeight} : null;
};
m.inbound = function (done) {
    Promise.all(m.pcs.map(function (pc) { return pc.getStats(null); })).then(function (reports) {
        var out = {video: {framesDecoded: 0, packetsReceived: 0, nackCount: 0, frameWidth: 0},
                   audio: {packetsReceived: 0}, senderReports: {audio: 0, video: 0}};
        reports.forEach(function (report) {
            report.forEach(function (r) {
                // Made from the RTCP sender reports the player receives.
                if (r.type === "remote-outbound-rtp") { out.senderReports[r.kind] += r.reportsSent || 1; }
                if (r.type !== "inbound-rtp") { return; }
                var kind = r.kind || r.mediaType;
                if (kind === "video") {
                    out.video.framesDecoded += r.framesDecoded || 0;
                    out.video.packetsReceived += r.packetsReceived || 0;
                    out.video.nackCount += r.nackCount || 0;
                    out.video.frameWidth = Math.max(out.video.frameWidth, r.frameWidth || 0);
                } else if (kind === "audio") {
                    out.audio.packetsReceived += r.packetsReceived || 0;
                }
            });
        });
        done(out);
    }, function (e) { done({error: String(e)}); });
};
// Per peer connection that sends: what it learnt from the server's receiver reports (round-trip
// time: only computable when the reports' LSR/DLSR match its own sender reports) and what its
// congestion control allows it to send.
m.outbound = function (done) {
    Promise.all(m.pcs.map(function (pc) { return pc.getStats(null); })).then(function (reports) {
        var out = [];
        reports.forEach(function (report) {
            var entry = {sending: false, available: null, rtt: {}};
            report.forEach(function (r) {
                if (r.type === "outbound-rtp") { entry.sending = true; }
                if (r.type === "remote-inbound-rtp" && r.roundTripTime !== undefined) {
                    entry.rtt[r.kind] = r.roundTripTime;
                }
                if (r.type === "candidate-pair" && r.nominated) { entry.available = r.availableOutgoingBitrate; }
            });
            if (entry.sending) { out.push(entry); }
        });
        done(out);
    }, function (e) { done({error: String(e)}); });
};
return true;
"""

STRIP = {"H264": "VP8,VP9,AV1,H265", "VP8": "H264,VP9,AV1,H265"}


class StreamingPage:
    def __init__(self, browser: Browser, server: ServerProcess):
        self.b = browser
        self.server = server

    def open(self) -> StreamingPage:
        self.b.open(f"{self.server.rest_url}/?ws={urlsplit(self.server.ws_url).port}")
        assert self.b.js(HARNESS), "the demo page did not load the WebSDK"
        return self

    def connect(self, name: str, app_key: str = "defaultApp") -> None:
        self.b.js("window.__m.connect(arguments[0], arguments[1], arguments[2])", name, self.server.ws_url,
                  app_key)
        self.wait(name, "ESTABLISHED")

    def publish(self, session: str, target: str, stream_name: str, codec: str | None = None) -> None:
        options: dict[str, Any] = {"name": stream_name, "constraints": {"audio": True, "video": True}}
        if codec:
            options["stripCodecs"] = STRIP[codec]
        self.b.js("window.__m.stream(arguments[0], arguments[1], arguments[2], true)", session, target, options)

    def play(self, session: str, target: str, stream_name: str) -> None:
        self.b.js("window.__m.stream(arguments[0], arguments[1], arguments[2], false)", session, target,
                  {"name": stream_name})

    def stop(self, target: str) -> None:
        self.b.js("window.__m.streams[arguments[0]].stop()", target)

    def wait(self, target: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
        event = self.b.js_async("window.__m.waitFor(arguments[0], arguments[1], arguments[2])", target,
                                list(statuses), timeout=timeout)
        assert isinstance(event, dict), event
        return event

    def inbound(self) -> dict[str, Any]:
        stats = self.b.js_async("window.__m.inbound(arguments[0])", timeout=10)
        assert isinstance(stats, dict) and "error" not in stats, stats
        return stats

    def video(self, target: str) -> dict[str, int] | None:
        return self.b.js("return window.__m.video(arguments[0])", target)

    def wait_frames(self, target: str, at_least: int = 30, timeout: float = 30.0) -> dict[str, Any]:
        """Until the player shows a picture and has decoded `at_least` frames more than before."""
        start = self.inbound()["video"]["framesDecoded"]

        def check() -> dict[str, Any] | None:
            video = self.video(target)
            stats = self.inbound()
            if video and video["width"] > 0 and stats["video"]["framesDecoded"] >= start + at_least:
                return stats
            return None

        return self.b.wait_until(check, timeout, f"{target} decoding frames")


@pytest.fixture
def streaming_page(server: ServerProcess, browser: Browser) -> Iterator[StreamingPage]:
    yield StreamingPage(browser, server).open()


def streams(server: ServerProcess) -> list[dict[str, Any]]:
    status, answer = rest(server, "/rest-api/stream/find_all")
    return [] if status == 404 else answer


@pytest.mark.parametrize("codec", ["H264", "VP8"])
def test_publish_and_play_without_decoding(server: ServerProcess, streaming_page: StreamingPage,
                                           codec: str) -> None:
    page = streaming_page
    page.connect("pub")
    page.publish("pub", "cam", "cam1", codec=codec)
    page.wait("cam", "PUBLISHING")
    page.connect("viewer")
    page.play("viewer", "screen", "cam1")
    page.wait("screen", "PLAYING")
    stats = page.wait_frames("screen", at_least=30)
    # The player sees exactly the publisher's picture (the WebSDK asks the camera for 320x240).
    sent = page.video("cam")
    assert sent is not None and sent["width"] > 0
    page.b.wait_until(lambda: page.video("screen") == sent or None, 15, f"the player at {sent}")
    assert stats["audio"]["packetsReceived"] > 0
    # Sender reports, translated per viewer, reach the player for both tracks (A/V sync needs them).
    page.b.wait_until(lambda: all(page.inbound()["senderReports"].values()) or None, 15,
                      "sender reports at the player")
    # Our receiver reports reach the publisher and are right (it computes round-trip times from
    # them), and REMB caps what it may send at webrtc.max_bitrate (2.5 Mbps by default).
    def publisher_feedback() -> dict[str, Any] | None:
        senders = page.b.js_async("window.__m.outbound(arguments[0])", timeout=10)
        assert isinstance(senders, list) and len(senders) == 1, senders
        return senders[0] if set(senders[0]["rtt"]) == {"audio", "video"} else None

    feedback = page.b.wait_until(publisher_feedback, 15, "round-trip times from our receiver reports")
    assert all(0 <= rtt < 1.0 for rtt in feedback["rtt"].values()), feedback
    assert 0 < feedback["available"] <= 2_500_000, feedback
    listed = {s["name"] + ("/pub" if s["published"] else "/play"): s for s in streams(server)}
    publisher = listed["cam1/pub"]
    assert publisher["decoders"] == 0  # no aiortc decoder runs for the stream
    video = next(t for t in publisher["tracks"] if t["kind"] == "video")
    assert video["codec"].upper() == codec and video["packets"] >= 30 and video["keyframes"] >= 1
    assert listed["cam1/play"]["sent"] >= 30
    # What the browser decoded went the native way: rewritten, SRTP-protected and sent by the fan-out.
    assert listed["cam1/play"]["sendRoutes"] == ["udp"]
    # The publisher leaves: the viewer is told so.
    page.stop("cam")
    page.wait("cam", "UNPUBLISHED")
    event = page.wait("screen", "STOPPED")
    assert event["info"] == "Stopped by publisher stop"
    assert streams(server) == []


def test_two_viewers_a_late_joiner_and_stop_of_one(server: ServerProcess, streaming_page: StreamingPage) -> None:
    page = streaming_page
    page.connect("pub")
    page.publish("pub", "cam", "cam2")
    page.wait("cam", "PUBLISHING")
    page.connect("v1")
    page.play("v1", "one", "cam2")
    page.wait("one", "PLAYING")
    page.wait_frames("one", at_least=10)
    time.sleep(5)  # the scenario itself: a viewer joins 5 s into the stream
    page.connect("v2")
    page.play("v2", "two", "cam2")
    page.wait("two", "PLAYING")
    started = time.monotonic()
    page.b.wait_until(lambda: (page.video("two") or {}).get("width", 0) > 0 or None, 10, "late joiner picture")
    print(f"late joiner: first picture {time.monotonic() - started:.2f} s after PLAYING")
    # stopStream ends one viewer only.
    page.connect("v3")
    page.play("v3", "three", "cam2")
    page.wait("three", "PLAYING")
    page.stop("three")
    page.wait("three", "STOPPED")
    page.wait_frames("two", at_least=10)
    page.wait_frames("one", at_least=10)
    # The publisher leaving stops both remaining viewers.
    page.stop("cam")
    for target in ("one", "two"):
        assert page.wait(target, "STOPPED")["info"] == "Stopped by publisher stop"


def test_second_publisher_on_a_name_is_refused(server: ServerProcess, streaming_page: StreamingPage) -> None:
    page = streaming_page
    page.connect("pub")
    page.publish("pub", "first", "taken")
    page.wait("first", "PUBLISHING")
    page.connect("intruder")
    page.publish("intruder", "second", "taken")
    event = page.wait("second", "FAILED")
    assert event["info"] == "Stream name is already in use"
    assert [s["status"] for s in streams(server) if s["published"]] == ["PUBLISHING"]


def test_playing_nothing_is_stream_not_found(server: ServerProcess, streaming_page: StreamingPage) -> None:
    page = streaming_page
    page.connect("viewer")
    page.play("viewer", "screen", "nobody-here")
    assert page.wait("screen", "FAILED")["info"] == "Stream not found"


def test_backend_refuses_publish_and_play(server: ServerProcess, backend: Backend,
                                         streaming_page: StreamingPage) -> None:
    server.add_app("strict", "strictKey", backend.url)
    backend.on("publishStream", status=403, body={"info": "No publishing today"})
    page = streaming_page
    page.connect("pub", app_key="strictKey")
    page.publish("pub", "cam", "cam3")
    assert page.wait("cam", "FAILED")["info"] == "No publishing today"
    # Publishing through defaultApp works; playing through the strict app is refused.
    backend.on("playStream", status=403)
    page.connect("pub2")
    page.publish("pub2", "cam-ok", "cam3")
    page.wait("cam-ok", "PUBLISHING")
    page.connect("viewer", app_key="strictKey")
    page.play("viewer", "screen", "cam3")
    assert page.wait("screen", "FAILED")["info"] == "Restricted access"
    body = backend.wait_for("playStream").body
    assert body["name"] == "cam3" and "sdp" not in body


def test_session_disconnect_stops_its_streams(server: ServerProcess, streaming_page: StreamingPage) -> None:
    page = streaming_page
    page.connect("pub")
    page.publish("pub", "cam", "cam4")
    page.wait("cam", "PUBLISHING")
    page.connect("viewer")
    page.play("viewer", "screen", "cam4")
    page.wait("screen", "PLAYING")
    page.b.js("window.__m.sessions['viewer'].disconnect()")
    page.wait("viewer", "DISCONNECTED")
    page.b.wait_until(lambda: [s for s in streams(server) if not s["published"]] == [] or None, 10,
                      "the viewer's stream cleaned up")
    assert [s["name"] for s in streams(server) if s["published"]] == ["cam4"]
    page.b.js("window.__m.sessions['pub'].disconnect()")
    page.b.wait_until(lambda: streams(server) == [] or None, 10, "the publisher's stream cleaned up")
