"""The official WebSDK publishes from headless Chromium (VP8 and H.264 runs); the stream is watched over
HLS: ffprobe sees H.264 + AAC at the publisher's size, and hls.js (npm) in the same browser plays it,
from another origin (the page is on the REST port), in regular and low-latency mode."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.browser import Browser, browser_fixture, chromium_fixture  # noqa: F401
from tests.support.server import REPO, ServerProcess
from tests.test_websdk_streaming import StreamingPage

HLS_JS = REPO / "node_modules/hls.js/dist/hls.min.js"
FAST = ["--hls-segment-duration", "1", "--hls-window", "4", "--hls-part-duration", "0.3"]

PLAYER = r"""
var url = arguments[0], lowLatency = arguments[1];
var video = document.createElement("video");
video.id = "hls-video"; video.muted = true; video.autoplay = true; video.playsInline = true;
document.body.appendChild(video);
var state = window.__hls = {errors: [], fatal: null, levels: 0};
var hls = new Hls({lowLatencyMode: lowLatency, liveSyncDurationCount: 2, enableWorker: false});
hls.on(Hls.Events.ERROR, function (event, data) {
    state.errors.push(data.type + ":" + data.details);
    if (data.fatal) { state.fatal = data.details; }
});
hls.on(Hls.Events.MANIFEST_PARSED, function (event, data) { state.levels = data.levels.length; video.play(); });
hls.loadSource(url);
hls.attachMedia(video);
return true;
"""


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_playlist(url: str, timeout: float = 40.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = fetch(url)
        if status == 200 and b"#EXTINF" in body:
            return body.decode()
        time.sleep(0.3)
    raise AssertionError(f"no playlist with a segment at {url} within {timeout} s")


@pytest.fixture
def hls_server(start_server: Callable[..., ServerProcess], request: pytest.FixtureRequest) -> ServerProcess:
    mode = getattr(request, "param", "hls")
    return start_server([*FAST, "--hls-mode", mode])


@pytest.fixture
def page(hls_server: ServerProcess, browser: Browser) -> Iterator[StreamingPage]:
    yield StreamingPage(browser, hls_server).open()


def play_with_hls_js(page: StreamingPage, url: str, low_latency: bool) -> dict[str, Any]:
    assert HLS_JS.is_file(), "hls.js is installed by scripts/setup.sh --test (npm)"
    page.b.js(HLS_JS.read_text() + "\n;window.Hls = Hls; return true;")
    page.b.js(PLAYER, url, low_latency)

    def progress() -> dict[str, Any] | None:
        state = page.b.js("var v = document.getElementById('hls-video');"
                          "return {t: v.currentTime, w: v.videoWidth, h: v.videoHeight, "
                          "fatal: window.__hls.fatal, errors: window.__hls.errors};")
        assert state["fatal"] is None, state
        return state if state["t"] > 1.0 and state["w"] > 0 else None

    first = page.b.wait_until(progress, 45, "hls.js playing")
    # currentTime keeps advancing: it plays, not just loads.
    page.b.wait_until(lambda: (progress() or {}).get("t", 0) > first["t"] + 1.0 or None, 20, "currentTime advancing")
    return first


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_websdk_publisher_to_hls_ffprobe_and_hls_js(hls_server: ServerProcess, page: StreamingPage, codec: str,
                                                     tmp_path: Path) -> None:
    page.connect("pub")
    page.publish("pub", "cam", "cam1", codec=codec)
    page.wait("cam", "PUBLISHING")
    sent = page.b.wait_until(lambda: (v := page.video("cam")) and v["width"] > 0 and v, 15, "the local camera")
    url = f"{hls_server.urls['hls']}/cam1/cam1.m3u8"
    text = wait_playlist(url)
    segment_uri = [line for line in text.splitlines() if line and not line.startswith("#")][0]
    status, body = fetch(f"{hls_server.urls['hls']}/cam1/{segment_uri}")
    assert status == 200
    (tmp_path / "segment.ts").write_bytes(body)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(tmp_path / "segment.ts")],
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
    streams = {s["codec_type"]: s for s in json.loads(probe.stdout)["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert (streams["video"]["width"], streams["video"]["height"]) == (sent["width"], sent["height"])

    state = play_with_hls_js(page, url, low_latency=False)
    assert (state["w"], state["h"]) == (sent["width"], sent["height"])


@pytest.mark.parametrize("hls_server", ["llhls"], indirect=True)
def test_hls_js_plays_low_latency_hls(hls_server: ServerProcess, page: StreamingPage) -> None:
    page.connect("pub")
    page.publish("pub", "cam", "cam1", codec="VP8")
    page.wait("cam", "PUBLISHING")
    url = f"{hls_server.urls['hls']}/cam1/cam1.m3u8"
    text = wait_playlist(url)
    assert "#EXT-X-PART:" in text and "CAN-BLOCK-RELOAD=YES" in text
    play_with_hls_js(page, url, low_latency=True)
    # hls.js in low-latency mode asks for the playlist with _HLS_msn/_HLS_part (blocking reload).
    entries = page.b.js("return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
    assert any("_HLS_msn=" in name for name in entries), entries[-10:]


def test_the_websdk_hls_js_player_demo_page_plays_our_url(hls_server: ServerProcess, browser: Browser) -> None:
    """The WebSDK's own HLS demo page (served at /websdk/), unmodified, given our URL."""
    publisher = subprocess.Popen(
        [sys.executable, "-m", "streaming.client", "publish", "--server", hls_server.ws_url, "--name", "cam1",
         "--ice-address", "127.0.0.1", "--codec", "H264", "--width", "320", "--height", "240",
         "--duration", "90"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"{hls_server.urls['hls']}/cam1/cam1.m3u8"
        wait_playlist(url)
        page = "/websdk/examples/demo/streaming/hls-js-player/hls-js-player.html"
        browser.open(f"{hls_server.rest_url}{page}?src={quote(url, safe='')}&autoplay=true")
        size = browser.wait_js("var v = document.getElementById('remoteVideo');"
                               "return v && v.currentTime > 1 && [v.videoWidth, v.videoHeight];",
                               timeout=45, what="the demo page playing")
        assert size == [320, 240]
    finally:
        publisher.terminate()
        publisher.wait(20)
