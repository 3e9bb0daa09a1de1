"""What a WebSDK user sees of the WCS conformance work, in headless Chromium with the official WebSDK:
`stream.available()` resolves or rejects (directly, and from the two_way_streaming demo page's
Available button, unmodified), a backend's restPolicy OVERWRITE renames and records a published
stream, and a backend that overwrites connect's width/height gets its viewers a picture within them.
"""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By

from tests.support.backend import Backend
from tests.support.browser import Browser, browser_fixture, chromium_fixture  # noqa: F401
from tests.support.server import ServerProcess
from tests.test_websdk_session import rest
from tests.test_websdk_streaming import StreamingPage, streaming_page  # noqa: F401

DEMO = "/websdk/examples/demo/streaming/two_way_streaming/two_way_streaming.html"

AVAILABLE = r"""
var done = arguments[arguments.length - 1];
var stream = window.__m.sessions[arguments[0]].createStream({name: arguments[1],
                                                             display: document.createElement("div")});
stream.available().then(function (s) { done({available: true, info: s.getInfo() || null}); },
                        function (s) { done({available: false, info: s.getInfo() || null}); });
"""


def available(page: StreamingPage, session: str, name: str) -> dict[str, Any]:
    """stream.available() of a new stream object named `name`: what its promise settled with."""
    result = page.b.js_async(AVAILABLE, session, name, timeout=10)
    assert isinstance(result, dict), result
    return result


def test_stream_available_resolves_for_a_published_stream_and_rejects_for_a_missing_one(
        streaming_page: StreamingPage) -> None:  # noqa: F811
    page = streaming_page
    page.connect("pub")
    page.publish("pub", "cam", "on-air")
    page.wait("cam", "PUBLISHING")
    page.connect("asker")
    assert available(page, "asker", "on-air") == {"available": True, "info": None}
    assert available(page, "asker", "off-air") == {"available": False, "info": "Stream not found"}
    page.stop("cam")
    page.wait("cam", "UNPUBLISHED")
    assert available(page, "asker", "on-air") == {"available": False, "info": "Stream not found"}


def test_the_demo_pages_available_button(server: ServerProcess, browser: Browser) -> None:
    driver = browser.driver
    browser.open(server.rest_url + DEMO)
    url = driver.find_element(By.ID, "urlServer")
    url.clear()
    url.send_keys(server.ws_url)

    def text(element_id: str) -> str:
        return str(driver.find_element(By.ID, element_id).text)

    driver.find_element(By.ID, "connectBtn").click()
    browser.wait_until(lambda: text("connectStatus") == "ESTABLISHED", 15, "ESTABLISHED on the demo page")
    driver.find_element(By.ID, "publishStream").clear()
    driver.find_element(By.ID, "publishStream").send_keys("demo-available")
    driver.find_element(By.ID, "publishBtn").click()
    browser.wait_until(lambda: text("publishStatus") == "PUBLISHING", 20, "PUBLISHING on the demo page")
    for name, expected, info in (("demo-available", "AVAILABLE", ""), ("demo-missing", "UNAVAILABLE",
                                                                        "Stream not found")):
        driver.find_element(By.ID, "playStream").clear()
        driver.find_element(By.ID, "playStream").send_keys(name)
        driver.execute_script("document.getElementById('availableStatus').textContent = '';")
        driver.find_element(By.ID, "availableBtn").click()
        browser.wait_until(lambda: text("availableStatus") == expected, 10,  # noqa: B023 (waited on here)
                           f"{expected} for {name}")
        assert text("availableInfo") == info


def test_a_backends_overwrite_renames_and_records_a_websdk_stream(
        server: ServerProcess, backend: Backend, streaming_page: StreamingPage) -> None:  # noqa: F811
    server.add_app("studio", "studioKey", backend.url)
    backend.on("connect", transform=lambda body: {**body, "restClientConfig": {
        "publishStream": {"restPolicy": "OVERWRITE", "restOverwrite": "name,record"}}})
    backend.on("publishStream", transform=lambda body: {**body, "name": "room1-" + body["name"], "record": True})
    page = streaming_page
    page.connect("pub", app_key="studioKey")
    page.publish("pub", "cam", "cam")
    page.wait("cam", "PUBLISHING")
    page.connect("viewer")
    page.play("viewer", "screen", "room1-cam")
    page.wait("screen", "PLAYING")
    page.wait_frames("screen", at_least=10)
    status, recordings = rest(server, "/rest-api/recorder/find_all")
    assert status == 200 and [r["name"] for r in recordings] == ["room1-cam"], recordings
    page.play("viewer", "nothing", "cam")
    assert page.wait("nothing", "FAILED")["info"] == "Stream not found"


def test_connect_size_overwritten_by_the_backend_bounds_the_players_picture(
        server: ServerProcess, backend: Backend, streaming_page: StreamingPage) -> None:  # noqa: F811
    server.add_app("mobile", "mobileKey", backend.url)
    backend.on("connect", transform=lambda body: {**body, "width": 160, "height": 120, "restClientConfig": {
        "connect": {"restPolicy": "OVERWRITE", "restOverwrite": "width,height"}}})
    page = streaming_page
    page.connect("pub")
    page.publish("pub", "cam", "sized")
    page.wait("cam", "PUBLISHING")
    page.connect("phone", app_key="mobileKey")
    page.play("phone", "small", "sized")
    page.wait("small", "PLAYING")
    page.connect("desk")
    page.play("desk", "full", "sized")
    page.wait("full", "PLAYING")
    page.wait_frames("small", at_least=10)
    sent = page.video("cam")
    assert sent is not None and sent["width"] > 160
    page.b.wait_until(lambda: page.video("small") == {"width": 160, "height": 120} or None, 15,
                      "the bounded player at 160x120")
    page.b.wait_until(lambda: page.video("full") == sent or None, 15, "the other player at the published size")


PACKETS_SENT = r"""
var done = arguments[arguments.length - 1];
Promise.all(window.__m.pcs.map(function (pc) { return pc.getStats(null); })).then(function (reports) {
    var sent = 0;
    reports.forEach(function (report) {
        report.forEach(function (r) { if (r.type === "outbound-rtp") { sent += r.packetsSent || 0; } });
    });
    done(sent);
});
"""


def packets_sent(page: StreamingPage) -> int:
    """RTP packets the page's peer connections have sent so far (their getStats)."""
    return int(page.b.js_async(PACKETS_SENT, timeout=10))


def test_start_and_stop_debug_are_answered_and_save_the_capture_and_the_client_logs(
        server: ServerProcess, streaming_page: StreamingPage) -> None:  # noqa: F811
    page = streaming_page
    page.connect("pub")
    page.publish("pub", "cam", "debugged")
    page.wait("cam", "PUBLISHING")
    page.b.js("var S = Flashphoner.constants.SESSION_STATUS; window.__debug = [];"
              "window.__m.sessions.pub.on(S.DEBUG, function (obj) { window.__debug.push(obj); });"
              "window.__m.sessions.pub.startDebug();")
    started = page.b.wait_js("return window.__debug.length >= 1 && window.__debug[0]", timeout=10)
    assert started["status"] == "STARTED"
    # With debug on, the WebSDK pushes its log lines (a stream event gives it something to log); the
    # capture runs while the publisher sends 50 packets more.
    page.b.js("window.__m.streams.cam.muteVideo(); window.__m.streams.cam.unmuteVideo();")
    first = packets_sent(page)
    page.b.wait_until(lambda: packets_sent(page) >= first + 50 or None, 15, "50 packets sent while debugging")
    page.b.js("window.__m.sessions.pub.stopDebug()")
    stopped = page.b.wait_js("return window.__debug.length >= 2 && window.__debug[1]", timeout=15)
    assert stopped["status"] == "STOPPED"
    reports = server.data_dir / "reports"
    capture = (reports / started["filename"]).read_bytes()
    assert len(capture) > 24 + 1000  # the global header and the publisher's packets
    logs = (reports / started["logs"]).read_text()
    assert 'DEBUG core - "Publish stream debugged"' in logs, logs[:500]
