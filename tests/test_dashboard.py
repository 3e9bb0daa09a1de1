"""The dashboard (/dashboard) in Chromium: a solid red WHIP publisher (GStreamer) shows as a card whose
thumbnail is red (its <img> decoded, its pixels and the screenshot's thumbnail region checked), with
its viewers per protocol, HLS and RTSP links, a WebRTC player (the WebSDK) that plays it, the records
folder with download links, and the card gone once the publisher stops."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from selenium.webdriver.common.by import By

from streaming.client import Session
from streaming.client.whip import WhepPlayer, WhipPublisher
from tests.support.browser import Browser, browser_fixture, chromium_fixture  # noqa: F401
from tests.support.server import ServerProcess
from tests.test_whip import GstPublisher, wait_for


def post(server: ServerProcess, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(server.rest_url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
async def ffmpeg_viewers() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def card(browser: Browser, name: str) -> dict[str, Any] | None:
    return browser.js("""
        var root = document.querySelector('.stream[data-name="' + arguments[0] + '"]');
        if (!root) return null;
        var img = root.querySelector('img.thumb'), viewers = root.querySelector('.viewers');
        var links = {};
        root.querySelectorAll('.links a').forEach(function (a) { links[a.className] = a.href; });
        var video = root.querySelector('.player video');
        return {meta: root.querySelector('.meta').textContent, viewersText: viewers.textContent,
                webrtc: Number(viewers.dataset.webrtc), whep: Number(viewers.dataset.whep),
                rtsp: Number(viewers.dataset.rtsp), naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
                complete: img.complete, links: links,
                playerStatus: root.querySelector('.player').dataset.status || null,
                videoWidth: video ? video.videoWidth : 0, videoTime: video ? video.currentTime : 0};
    """, name)


def thumbnail_pixels(browser: Browser, name: str) -> list[int]:
    """The mean RGB of the thumbnail <img> as the page decoded it (drawn into a canvas)."""
    return list(browser.js("""
        var img = document.querySelector('.stream[data-name="' + arguments[0] + '"] img.thumb');
        var canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        var ctx = canvas.getContext('2d');
        ctx.drawImage(img, 0, 0);
        var data = ctx.getImageData(0, 0, canvas.width, canvas.height).data, sum = [0, 0, 0];
        for (var i = 0; i < data.length; i += 4) { sum[0] += data[i]; sum[1] += data[i + 1]; sum[2] += data[i + 2]; }
        var n = data.length / 4;
        return [Math.round(sum[0] / n), Math.round(sum[1] / n), Math.round(sum[2] / n)];
    """, name))


def screenshot_region(browser: Browser, name: str, path: Path) -> np.ndarray:
    """Save a screenshot of the page to `path` and return the thumbnail's region of it (RGB)."""
    path.write_bytes(browser.driver.get_screenshot_as_png())
    rect = browser.js("""
        var r = document.querySelector('.stream[data-name="' + arguments[0] + '"] img.thumb').getBoundingClientRect();
        return {x: r.left, y: r.top, w: r.width, h: r.height, scale: window.devicePixelRatio};""", name)
    with av.open(str(path)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="rgb24")
    scale = rect["scale"]
    x, y = int(rect["x"] * scale), int(rect["y"] * scale)
    w, h = int(rect["w"] * scale), int(rect["h"] * scale)
    region: np.ndarray = image[y:y + h, x:x + w]
    return region


def is_red(rgb: Any) -> bool:
    r, g, b = (float(v) for v in rgb)
    return r > 180 and g < 70 and b < 70


async def test_dashboard_shows_a_red_whip_stream_with_viewers_player_links_and_records(
        server: ServerProcess, browser: Browser, tmp_path: Path,
        ffmpeg_viewers: list[asyncio.subprocess.Process]) -> None:
    publisher = GstPublisher(server.rest_url + "/whip/red1", "--pattern", "red")
    try:
        await publisher.line("ready")
        # A recording to download: recorded for a while, then finished.
        status, _answer = await asyncio.to_thread(post, server, "/rest-api/recorder/startup", {"name": "red1"})
        assert status == 200, _answer
        whep = await WhepPlayer.start(server.rest_url + "/whep/red1")
        await whep.wait_frames(30, timeout=20)
        status, finished = await asyncio.to_thread(post, server, "/rest-api/recorder/terminate", {"name": "red1"})
        assert status == 200 and finished["size"] > 0, finished
        async with Session.connect(server.ws_url) as session:
            websdk = await session.play("red1")
            await websdk.wait_frames(5, timeout=20)
            ffmpeg_viewers.append(await asyncio.create_subprocess_exec(
                "ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", f"{server.urls['rtsp']}/red1",
                "-f", "null", "-", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

            browser.driver.set_window_size(1280, 1000)
            browser.open(server.rest_url + "/dashboard?refresh=500&thumbs=1000")
            shown = await asyncio.to_thread(
                browser.wait_until, lambda: (c := card(browser, "red1")) and c["naturalWidth"] > 0
                and c["webrtc"] == 1 and c["whep"] == 1 and c["rtsp"] == 1 and c, 30,
                "the red1 card with its thumbnail and one viewer per protocol")
            assert (shown["naturalWidth"], shown["naturalHeight"]) == (320, 240)
            assert "WHIP" in shown["meta"] and "VP8" in shown["meta"]
            hls_port, rtsp_port = server.urls["hls"].rsplit(":", 1)[1], server.urls["rtsp"].rsplit(":", 1)[1]
            assert shown["links"]["hls"] == f"http://127.0.0.1:{hls_port}/red1/red1.m3u8"
            assert shown["links"]["rtsp"] == f"rtsp://127.0.0.1:{rtsp_port}/red1"
            assert is_red(thumbnail_pixels(browser, "red1")), thumbnail_pixels(browser, "red1")
            region = screenshot_region(browser, "red1", tmp_path / "dashboard.png")
            assert region.size > 0 and (tmp_path / "dashboard.png").stat().st_size > 0
            assert is_red(region.reshape(-1, 3).mean(axis=0)), region.reshape(-1, 3).mean(axis=0)

            # The records table links the finished file, and the link downloads it.
            record = browser.wait_until(lambda: browser.js(
                "var a = document.querySelector('#records a[download]'); return a ? a.href : null;"), 10,
                "a record download link")
            async with aiohttp.ClientSession() as http, http.get(record) as response:
                assert response.status == 200 and len(await response.read()) == finished["size"]

            # The card's WebRTC player (the WebSDK) plays the stream, and counts as a WebRTC viewer.
            # A real click (user activation): the WebSDK's player unmutes its video, which autoplay allows
            # only after the user interacted with the page.
            browser.driver.find_element(By.CSS_SELECTOR, '.stream[data-name="red1"] button.play').click()
            await asyncio.to_thread(browser.wait_until, lambda: (c := card(browser, "red1"))
                                    and c["playerStatus"] == "PLAYING" and c["videoWidth"] == 320
                                    and c["videoTime"] > 0.3 and c["webrtc"] == 2, 30,
                                    "the dashboard's player playing, counted")
            await websdk.stop()
        await whep.stop()

        # Live: the publisher goes, so does its card.
        assert (await publisher.stop())["status"] == 200
        await asyncio.to_thread(browser.wait_until, lambda: card(browser, "red1") is None, 15, "the card gone")
        await wait_for(lambda: browser.js("return document.getElementById('nostreams').hidden") is False,
                       "'No live streams.' shown")
    finally:
        publisher.kill()


def test_dashboard_data_route(server: ServerProcess) -> None:
    status, overview = post(server, "/rest-api/dashboard/streams", {})
    assert status == 200
    assert overview["streams"] == [] and overview["records"] == []
    assert overview["ports"]["ws"] == int(server.ws_url.rsplit(":", 1)[1])
    status, _answer = post(server, "/rest-api/dashboard/streams", [])  # type: ignore[arg-type]
    assert status == 400


async def test_dashboard_behind_rest_credentials(start_server: Callable[..., ServerProcess], browser: Browser) -> None:
    token = "dashboard-token-0123456789"
    server = start_server(["--rest-token", token])
    publisher = await WhipPublisher.start(server.rest_url + "/whip/locked1", width=320, height=240)
    try:
        # Without the token the page says why it shows nothing; with it, the stream and its thumbnail.
        browser.open(server.rest_url + "/dashboard?refresh=500&thumbs=1000")
        await asyncio.to_thread(browser.wait_until, lambda: "401" in browser.js(
            "return document.getElementById('error').textContent"), 15, "the 401 shown")
        assert card(browser, "locked1") is None
        browser.open(server.rest_url + f"/dashboard?refresh=500&thumbs=1000&token={token}")
        shown = await asyncio.to_thread(browser.wait_until, lambda: (c := card(browser, "locked1"))
                                        and c["naturalWidth"] == 320 and c, 30, "the card with its thumbnail")
        assert "WHIP" in shown["meta"]
    finally:
        await publisher.stop()
