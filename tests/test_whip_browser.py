"""WHIP and WHEP from Chromium with plain fetch() and RTCPeerConnection (streaming/web/whip.html), the
page served from another origin than the server's, so CORS is exercised as a real deployment has it."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import Browser, browser_fixture, chromium_fixture  # noqa: F401
from tests.support.server import REPO, ServerProcess

WEB = REPO / "streaming/web"


@pytest.fixture
def other_origin() -> Iterator[str]:
    """A plain static file server for streaming/web on its own port: another origin than the server's."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(WEB))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def state(browser: Browser, which: str) -> dict[str, Any]:
    return dict(browser.js(f"var s = window.whip.{which}; return {{state: s.state, status: s.status, "
                           "location: s.location, error: s.error, connection: s.connection, deleted: s.deleted};"))


def video(browser: Browser) -> dict[str, Any]:
    return dict(browser.js("var v = document.getElementById('remote');"
                           "return {width: v.videoWidth, height: v.videoHeight, time: v.currentTime};"))


def frames_decoded(browser: Browser) -> int:
    return int(browser.js_async("""
        var done = arguments[arguments.length - 1];
        window.whip.play.pc.getStats().then(function (report) {
          var frames = 0;
          report.forEach(function (s) {
            if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded;
          });
          done(frames);
        });"""))


def test_chromium_publishes_over_whip_and_plays_over_whep_from_another_origin(
        server: ServerProcess, browser: Browser, other_origin: str) -> None:
    browser.open(f"{other_origin}/whip.html?server={server.rest_url}&name=web1&token=t1")
    browser.js("document.getElementById('publish').click()")
    browser.wait_until(lambda: state(browser, "publish")["state"] == "connected", 30, "the WHIP publisher connected")
    published = state(browser, "publish")
    assert published["status"] == 201 and published["location"].startswith(server.rest_url + "/whip/session/")

    browser.js("document.getElementById('play').click()")
    browser.wait_until(lambda: state(browser, "play")["state"] == "connected", 30, "the WHEP player connected")
    # Chromium's fake camera is 640x480: the played video decodes at that size, and keeps playing.
    browser.wait_until(lambda: video(browser)["width"] == 640 and video(browser)["time"] > 0.5, 30,
                       "the WHEP video playing at 640x480")
    first = frames_decoded(browser)
    browser.wait_until(lambda: frames_decoded(browser) >= first + 30, 20, "30 more frames decoded")
    assert video(browser)["height"] == 480

    # DELETE of the WHIP session ends the stream; the WHEP viewer's connection is closed by the server.
    browser.js("document.getElementById('unpublish').click()")
    browser.wait_until(lambda: state(browser, "publish")["deleted"] == 200, 15, "DELETE answered 200")
    browser.wait_until(lambda: state(browser, "play")["connection"] in ("closed", "failed", "disconnected"), 30,
                       "the WHEP player told the stream ended")


def test_whep_refusal_is_shown_to_the_page(server: ServerProcess, browser: Browser, other_origin: str) -> None:
    browser.open(f"{other_origin}/whip.html?server={server.rest_url}&name=nobody")
    browser.js("document.getElementById('play').click()")
    browser.wait_until(lambda: state(browser, "play")["state"] == "failed", 20, "the WHEP play refused")
    played = state(browser, "play")
    assert played["status"] == 404 and "Stream not found" in played["error"]


def test_the_demo_page_is_served_on_the_rest_port(server: ServerProcess, browser: Browser) -> None:
    browser.open(f"{server.rest_url}/whip-demo?name=demo1")
    browser.js("document.getElementById('publish').click()")
    browser.wait_until(lambda: state(browser, "publish")["state"] == "connected", 30, "published from /whip-demo")
    browser.js("document.getElementById('play').click()")
    browser.wait_until(lambda: video(browser)["width"] == 640, 30, "played back on /whip-demo")
