"""RTMP push with a real RTMP server: nginx with its RTMP module (tests/support/nginx_rtmp.py) receives
what we push and records it; ffprobe reads it back (codecs, duration). Pushes come from the REST API
(/rest-api/push/startup|find|find_all|terminate, the WebSDK rest module's push) and from the WebSDK's
own webrtc-as-rtmp-republishing demo page, unmodified, in Chromium (publishStream's rtmpUrl)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from streaming.client import Session
from tests.support.browser import Browser, browser_fixture, chromium_fixture  # noqa: F401
from tests.support.nginx_rtmp import NginxRtmp, free_port
from tests.support.rtmp_peers import FfmpegPublisher, clip_fixture, publish_fixture, rest, wait_until  # noqa: F401
from tests.support.server import ServerProcess

PAGE = "/websdk/examples/demo/streaming/webrtc-as-rtmp-republishing/webrtc-as-rtmp-republishing.html"


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxRtmp]:
    server = NginxRtmp(tmp_path / "nginx").start()
    yield server
    server.stop()


def probe_file(path: Path) -> dict[str, Any]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                           "stream=codec_name,width,height:format=duration", "-of", "json", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def pushes(server: ServerProcess, **match: Any) -> list[dict[str, Any]]:
    code, found = rest(server, "/rest-api/push/find_all")
    if code != 200:
        return []
    return [p for p in found if all(p.get(k) == v for k, v in match.items())]


def received(nginx: NginxRtmp, name: str, size: int = 50_000) -> bool:
    path = nginx.recorded(name)
    return path.exists() and path.stat().st_size > size


@pytest.mark.parametrize("codec", ["H264", "VP8"])
async def test_rest_push_of_a_webrtc_publisher(server: ServerProcess, nginx: NginxRtmp, codec: str) -> None:
    async with Session.connect(server.ws_url) as session:
        await session.publish("cam1", codec=codec)
        code, push = rest(server, "/rest-api/push/startup", {"streamName": "cam1", "rtmpUrl": nginx.url})
        assert code == 200, push
        assert push["rtmpUrl"] == nginx.url + "/rtmp_cam1" and push["streamName"] == "cam1"
        assert push["transcoded"] == (["AAC"] if codec == "H264" else ["H264", "AAC"])
        await asyncio.to_thread(wait_until, lambda: pushes(server, status="PUSHING"), 20, "the push connected")
        # the WebSDK rest module's find, by name and URL
        code, found = rest(server, "/rest-api/push/find", {"streamName": "cam1", "rtmpUrl": nginx.url})
        assert code == 200 and [p["mediaSessionId"] for p in found] == [push["mediaSessionId"]]
        code, again = rest(server, "/rest-api/push/startup", {"streamName": "cam1", "rtmpUrl": nginx.url})
        assert code == 409, again
        await asyncio.to_thread(wait_until, lambda: received(nginx, "rtmp_cam1", 100_000), 30, "media at nginx")
        await asyncio.sleep(1.0)
        code, stopped = rest(server, "/rest-api/push/terminate", {"mediaSessionId": push["mediaSessionId"]})
        assert code == 200 and stopped[0]["status"] == "STOPPED"
    await asyncio.to_thread(wait_until, lambda: not pushes(server), 15, "the push gone")
    await asyncio.sleep(0.5)  # nginx closes its record file when the publisher disconnects
    probe = await asyncio.to_thread(probe_file, nginx.recorded("rtmp_cam1"))
    assert {s["codec_name"] for s in probe["streams"]} == {"h264", "aac"}
    assert {(s.get("width"), s.get("height")) for s in probe["streams"] if s["codec_name"] == "h264"} == {(640, 480)}
    assert float(probe["format"]["duration"]) >= 2.0


async def test_rtmp_ingest_pushed_on_to_nginx(server: ServerProcess, nginx: NginxRtmp,
                                             publish: Callable[..., FfmpegPublisher]) -> None:
    """ffmpeg -> us (RTMP in, H.264 forwarded, AAC -> Opus) -> nginx (H.264 as it came, Opus -> AAC)."""
    publisher = publish(server.urls["rtmp"] + "/live/relay")
    await asyncio.to_thread(wait_until, lambda: rest(server, "/rest-api/rtmp/find_all")[0] == 200, 15, "ingest")
    await asyncio.sleep(1.0)  # the tracks are announced
    code, push = rest(server, "/rest-api/push/startup", {"streamName": "relay", "rtmpUrl": nginx.url + "/relayed",
                                                         "rtmpTransponderFullUrl": True})
    assert code == 200, push
    assert push["transcoded"] == ["AAC"]
    await asyncio.to_thread(wait_until, lambda: received(nginx, "relayed"), 30, "media at nginx")
    live = await asyncio.to_thread(subprocess.run, ["ffprobe", "-v", "error", "-show_entries",
                                   "stream=codec_name,width,height", "-of", "json", nginx.url + "/relayed"],
                                   capture_output=True, text=True, timeout=30)
    assert live.returncode == 0, live.stderr
    streams = json.loads(live.stdout)["streams"]
    assert {s["codec_name"] for s in streams} == {"h264", "aac"}
    assert {(s.get("width"), s.get("height")) for s in streams if s["codec_name"] == "h264"} == {(640, 360)}
    publisher.stop()  # the stream ends: so does its push
    await asyncio.to_thread(wait_until, lambda: not pushes(server), 15, "the push ended with its stream")
    await asyncio.sleep(0.5)
    probe = await asyncio.to_thread(probe_file, nginx.recorded("relayed"))
    assert float(probe["format"]["duration"]) >= 1.0


async def test_push_errors(server: ServerProcess) -> None:
    code, answer = rest(server, "/rest-api/push/startup", {"streamName": "nope", "rtmpUrl": "rtmp://127.0.0.1/live"})
    assert code == 404 and answer["info"] == "Stream not found"
    code, answer = rest(server, "/rest-api/push/terminate", {"streamName": "nope"})
    assert code == 404
    async with Session.connect(server.ws_url) as session:
        await session.publish("cam2", codec="H264")
        for url in ("http://127.0.0.1/live", "rtmp://", "rtmp://127.0.0.1/li ve", 42, "rtmps://127.0.0.1/live"):
            code, answer = rest(server, "/rest-api/push/startup", {"streamName": "cam2", "rtmpUrl": url})
            assert code == 400, (url, answer)
        dead = f"rtmp://127.0.0.1:{free_port()}/live"  # nobody listens there
        code, push = rest(server, "/rest-api/push/startup", {"streamName": "cam2", "rtmpUrl": dead})
        assert code == 200
        await asyncio.to_thread(wait_until, lambda: not pushes(server), 20, "the refused push ended")
        await asyncio.to_thread(wait_until, lambda: f"push of 'cam2' to {dead}/rtmp_cam2 failed" in server.log(),
                                10, "the failure logged")
        # the stream itself goes on
        player = await session.play("cam2")
        await player.wait_frames(10, timeout=15)


def test_webrtc_as_rtmp_republishing_demo_page(server: ServerProcess, nginx: NginxRtmp, browser: Browser) -> None:
    """The WebSDK's demo page, unmodified: the user types our WebSocket URL and nginx's RTMP URL, clicks
    Start; the page's publishStream carries rtmpUrl and we push to {rtmpUrl}/rtmp_{name}."""
    driver = browser.driver
    browser.open(server.rest_url + PAGE)
    for element_id, value in (("url", server.ws_url), ("rtmpUrl", nginx.url), ("streamName", "demo1")):
        field = driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(value)

    def status() -> str:
        return str(driver.find_element(By.ID, "status").text)

    driver.find_element(By.ID, "publishBtn").click()
    browser.wait_until(lambda: status() == "PUBLISHING", 20, "PUBLISHING on the demo page")
    assert driver.find_element(By.ID, "player").text == nginx.url + "/rtmp_demo1"
    wait_until(lambda: pushes(server, streamName="demo1", status="PUSHING"), 20, "the push connected")
    wait_until(lambda: received(nginx, "rtmp_demo1"), 30, "media at nginx")
    live = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "json",
                           nginx.url + "/rtmp_demo1"], capture_output=True, text=True, timeout=30)
    assert {s["codec_name"] for s in json.loads(live.stdout)["streams"]} == {"h264", "aac"}, live.stderr
    driver.find_element(By.ID, "publishBtn").click()  # Stop
    browser.wait_until(lambda: status() == "UNPUBLISHED", 20, "UNPUBLISHED on the demo page")
    wait_until(lambda: not pushes(server), 15, "the push ended with the stream")


async def test_a_silent_rtmp_server_ends_the_push(start_server: Callable[..., ServerProcess]) -> None:
    """A server that accepts the connection and never answers: the push fails after rtmp.push_timeout
    seconds with the reason, and terminating a push stuck like that returns at once."""
    server = start_server(["--rtmp-push-timeout", "2"])
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"rtmp://127.0.0.1:{silent.getsockname()[1]}/live"
    try:
        async with Session.connect(server.ws_url) as session:
            await session.publish("cam3", codec="H264")
            code, push = rest(server, "/rest-api/push/startup", {"streamName": "cam3", "rtmpUrl": url})
            assert code == 200, push
            await asyncio.to_thread(wait_until, lambda: not pushes(server), 15, "the push given up")
            log = server.log()
            assert "push of 'cam3' to " + url + "/rtmp_cam3 failed: The RTMP server 127.0.0.1:" in log, log[-2000:]
            assert "did not take the publish within 2 s" in log, log[-2000:]
            code, push = rest(server, "/rest-api/push/startup", {"streamName": "cam3", "rtmpUrl": url})
            assert code == 200
            await asyncio.sleep(0.5)  # connected, waiting for an answer that does not come
            started = time.monotonic()
            code, stopped = rest(server, "/rest-api/push/terminate", {"streamName": "cam3"})
            assert code == 200 and stopped[0]["status"] == "STOPPED"
            assert time.monotonic() - started < 1.0
    finally:
        silent.close()


async def test_push_to_our_own_ingest_republishes_the_stream(server: ServerProcess) -> None:
    """The demo page's default rtmpUrl is the server itself (rtmp://localhost:1935/live): the stream comes
    back as rtmp_{name}, H.264 and AAC through our client and our ingest, and plays like any other."""
    async with Session.connect(server.ws_url) as session:
        await session.publish("loop", codec="H264")
        code, push = rest(server, "/rest-api/push/startup", {"streamName": "loop",
                                                             "rtmpUrl": server.urls["rtmp"] + "/live"})
        assert code == 200, push
        def republished() -> list[dict[str, Any]]:
            code, found = rest(server, "/rest-api/rtmp/find_all")
            return [s for s in (found if code == 200 else []) if s.get("name") == "rtmp_loop"
                    and len(s.get("tracks", [])) == 2 and all(t["packets"] for t in s["tracks"])]

        found = await asyncio.to_thread(wait_until, republished, 20, "rtmp_loop")
        assert {(t["kind"], t["codec"]) for t in found[0]["tracks"]} == {("video", "H264"), ("audio", "opus")}
        player = await session.play("rtmp_loop")
        await player.wait_frames(20, timeout=20)
        await player.wait_frames(20, timeout=20, kind="audio")
