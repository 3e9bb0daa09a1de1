"""WHIP ingest and WHEP playback against the real server, with real clients: GStreamer's webrtcbin
publishing over WHIP (tests/support/gst_whip.py, with and without trickle ICE), ffmpeg reading the
stream over RTSP, the Python client over WHIP, WHEP and the WebSDK protocol; the backend's hooks with
the bearer token; the error answers; DELETE and a vanished publisher ending everything."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection
from multidict import CIMultiDict

from streaming.client import Session
from streaming.client.session import StreamFailed
from streaming.client.webrtc import codec_preferences
from streaming.client.whip import HttpRefused, WhepPlayer, WhipPublisher
from tests.support.backend import Backend
from tests.support.server import REPO, ServerProcess

GST_WHIP = REPO / "tests/support/gst_whip.py"


async def wait_for(condition: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.05)


async def rest(server: ServerProcess, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(server.rest_url + path, json=body or {}) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None


def rest_now(server: ServerProcess, path: str) -> Any:
    """A REST read from a condition (a blocking call, for wait_for's polls)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(server.rest_url + path, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


async def http(method: str, url: str, body: bytes | str | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, CIMultiDict[str], str]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, data=body, headers=headers or {}) as response:
            return response.status, CIMultiDict(response.headers), await response.text()


class GstPublisher:
    """tests/support/gst_whip.py as a subprocess: its `ready`/`refused` line, then SIGTERM (DELETE)."""

    def __init__(self, url: str, *args: str):
        self.proc = subprocess.Popen(["/usr/bin/python3", str(GST_WHIP), "--url", url, *args], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []

    async def line(self, prefix: str, timeout: float = 30.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        assert self.proc.stdout is not None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"gst_whip printed no {prefix!r} within {timeout} s: {self.lines}")
            text = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline), remaining)
            if not text:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"gst_whip ended ({self.proc.wait()}) before {prefix!r}: {self.lines}\n{err}")
            self.lines.append(text.strip())
            if text.startswith(prefix + " "):
                return dict(json.loads(text[len(prefix) + 1:]))

    async def stop(self) -> dict[str, Any]:
        self.proc.terminate()
        deleted = await self.line("deleted", 15)
        await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 15)
        return deleted

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
async def gst_publishers() -> AsyncIterator[Callable[..., GstPublisher]]:
    started: list[GstPublisher] = []

    def start(url: str, *args: str) -> GstPublisher:
        publisher = GstPublisher(url, *args)
        started.append(publisher)
        return publisher

    yield start
    for publisher in started:
        publisher.kill()


def streams_named(server: ServerProcess, name: str) -> list[dict[str, Any]]:
    return [s for s in rest_now(server, "/rest-api/stream/find_all") if s["name"] == name]


async def ffmpeg_frames(url: str, frames: int = 30) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-frames:v", str(frames), "-f", "null", "-",
        "-progress", "pipe:1", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    decoded = [int(line.split("=", 1)[1]) for line in out.decode().splitlines() if line.startswith("frame=")]
    return (decoded[-1] if decoded else 0), err.decode(errors="replace")


async def test_gstreamer_whip_publisher_is_played_over_rtsp_whep_and_the_websdk_protocol(
        server: ServerProcess, gst_publishers: Callable[..., GstPublisher]) -> None:
    publisher = gst_publishers(server.rest_url + "/whip/gst1", "--codec", "h264")
    ready = await publisher.line("ready")
    assert ready["location"].startswith(server.rest_url + "/whip/session/")
    published = await wait_for(lambda: [s for s in streams_named(server, "gst1") if s["status"] == "PUBLISHING"],
                               "the WHIP stream PUBLISHING in /rest-api/stream/find_all")
    sessions = rest_now(server, "/rest-api/connection/find_all")
    whip_session = next(s for s in sessions if s["sessionId"] == published[0]["sessionId"])
    assert whip_session["mediaProviders"] == ["WHIP"]

    frames, err = await ffmpeg_frames(f"{server.urls['rtsp']}/gst1")
    assert frames >= 30, err

    player = await WhepPlayer.start(server.rest_url + "/whep/gst1")
    async with Session.connect(server.ws_url) as session:
        websdk_player = await session.play("gst1")
        await player.wait_frames(20, timeout=20)
        await player.wait_frames(10, timeout=20, kind="audio")
        await websdk_player.wait_frames(20, timeout=20)
        assert (player.width, player.height) == (320, 240)
        assert player.codecs["video"] == "H264"

        deleted = await publisher.stop()
        assert deleted["status"] == 200
        await websdk_player.wait_status("STOPPED", timeout=10)
        assert websdk_player.info == "Stopped by publisher stop"
        await player.wait_ended(10)
    await wait_for(lambda: not streams_named(server, "gst1"), "no gst1 stream left")
    await player.stop()


async def test_gstreamer_trickles_its_candidates_with_patch(
        server: ServerProcess, gst_publishers: Callable[..., GstPublisher]) -> None:
    publisher = gst_publishers(server.rest_url + "/whip/trickled", "--trickle")
    ready = await publisher.line("ready")
    patched = [json.loads(line.split(" ", 1)[1]) for line in publisher.lines if line.startswith("patched ")]
    assert patched and all(p["status"] == 204 for p in patched), publisher.lines
    player = await WhepPlayer.start(server.rest_url + "/whep/trickled")
    try:
        await player.wait_frames(20, timeout=20)
        assert player.codecs["video"] == "VP8"
    finally:
        await player.stop()
    assert (await publisher.stop())["status"] == 200
    status, _headers, _text = await http("DELETE", ready["location"])
    assert status == 404  # gone with its DELETE


async def test_python_client_over_whip_and_whep_with_a_websdk_viewer(server: ServerProcess) -> None:
    publisher = await WhipPublisher.start(server.rest_url + "/whip/py1", codec="VP8")
    whep = await WhepPlayer.start(server.rest_url + "/whep/py1")
    async with Session.connect(server.ws_url) as session:
        websdk = await session.play("py1")
        await whep.wait_frames(30, timeout=20)
        await websdk.wait_frames(30, timeout=20)
        status = await wait_for(lambda: {s["published"]: s for s in streams_named(server, "py1")
                                         if s["status"] in ("PUBLISHING", "PLAYING")}.keys() == {True, False}
                                and server_status(server), "publisher and viewers listed")
        assert status["sessions"] >= 3  # WHIP, WHEP and the WebSDK session
        assert await publisher.stop() == 200
        await websdk.wait_status("STOPPED", timeout=10)
        await whep.wait_ended(10)
    await wait_for(lambda: not [s for s in rest_now(server, "/rest-api/connection/find_all")
                                if s.get("mediaProviders") in (["WHIP"], ["WHEP"])], "the WHIP/WHEP sessions closed")
    await whep.stop()


def server_status(server: ServerProcess) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(server.rest_url + "/health", timeout=5) as response:
        return dict(json.loads(response.read()))


async def test_whep_viewer_delete_leaves_the_publisher_and_rest_terminate_ends_a_session(
        server: ServerProcess) -> None:
    publisher = await WhipPublisher.start(server.rest_url + "/whip/keep?record=true")
    try:
        viewer = await WhepPlayer.start(server.rest_url + "/whep/keep")
        await viewer.wait_frames(10, timeout=20)
        assert await viewer.stop() == 200
        await wait_for(lambda: [s["published"] for s in streams_named(server, "keep")] == [True],
                       "only the publisher left")
        assert streams_named(server, "keep")[0]["record"] is True  # ?record=true
        await wait_for(lambda: rest_now(server, "/rest-api/recorder/find_all"), "the recording listed")
        # A WHEP session ended by the management API: its viewer's media connection is closed.
        viewer = await WhepPlayer.start(server.rest_url + "/whep/keep")
        session_id = next(s["sessionId"] for s in streams_named(server, "keep") if not s["published"])
        status, _answer = await rest(server, "/rest-api/connection/terminate", {"sessionId": session_id})
        assert status == 200
        await viewer.wait_ended(10)
        assert viewer.location is not None
        status, _headers, _text = await http("DELETE", viewer.location)
        assert status == 404
        await viewer.stop()
    finally:
        await publisher.stop()


async def test_hooks_get_the_bearer_token_and_a_refusal_is_403(start_server: Callable[..., ServerProcess],
                                                               backend: Backend) -> None:
    server = start_server()
    server.add_app("shop", "shopKey", backend.url)
    server.stop()
    server = start_server(["--whip-app-key", "shopKey"], data_dir=server.data_dir)

    def decide(body: dict[str, Any]) -> Any:
        return body if body.get("token") == "good" else (403, {"reason": "Token rejected by the shop"})

    backend.on("publishStream", transform=decide)
    backend.on("playStream", transform=decide)
    with pytest.raises(HttpRefused) as refused:
        await WhipPublisher.start(server.rest_url + "/whip/shop1", token="bad")
    assert refused.value.status == 403 and refused.value.text == "Token rejected by the shop"
    call = backend.wait_for("publishStream", lambda c: c.body.get("token") == "bad")
    assert call.body["name"] == "shop1" and call.body["appKey"] == "shopKey" and call.body["mediaProvider"] == "WHIP"
    assert "sdp" not in call.body

    publisher = await WhipPublisher.start(server.rest_url + "/whip/shop1", token="good")
    try:
        with pytest.raises(HttpRefused) as refused:
            await WhepPlayer.start(server.rest_url + "/whep/shop1")  # no token at all
        assert refused.value.status == 403
        player = await WhepPlayer.start(server.rest_url + "/whep/shop1", token="good")
        await player.wait_frames(10, timeout=20)
        assert backend.wait_for("playStream", lambda c: c.body.get("token") == "good").body["mediaProvider"] == "WHEP"
        await player.stop()
    finally:
        await publisher.stop()
    # The statuses reach the backend like a WebSDK client's.
    backend.wait_for("StreamStatusEvent", lambda c: c.body.get("status") == "UNPUBLISHED"
                     and c.body.get("name") == "shop1")
    # No refused session is left behind.
    assert not rest_now(server, "/rest-api/connection/find_all")


async def make_offer(direction: str, codec: str | None = None) -> str:
    """An aiortc offer with audio and video in `direction` (video only in `codec` when given)."""
    pc = RTCPeerConnection()
    try:
        for kind in ("audio", "video"):
            transceiver = pc.addTransceiver(kind, direction=direction)
            if kind == "video" and codec is not None:
                transceiver.setCodecPreferences(codec_preferences("video", codec, receiving=direction == "recvonly"))
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def test_error_answers(server: ServerProcess) -> None:
    base = server.rest_url
    publisher = await WhipPublisher.start(base + "/whip/taken")
    offer = await make_offer("sendonly")
    try:
        sdp = {"Content-Type": "application/sdp"}
        status, headers, text = await http("POST", base + "/whip/x1", offer, {"Content-Type": "text/plain"})
        assert (status, headers.get("Accept-Post")) == (415, "application/sdp") and "application/sdp" in text
        status, _h, text = await http("POST", base + "/whip/x2", "v=0\r\ngarbage", sdp)
        assert status == 400 and text.startswith("Bad SDP"), text
        status, _h, text = await http("POST", base + "/whip/taken", offer, sdp)
        assert (status, text.strip()) == (409, "Stream name is already in use")
        status, _h, text = await http("POST", base + "/whep/nobody", await make_offer("recvonly"), sdp)
        assert (status, text.strip()) == (404, "Stream not found")
        status, _h, text = await http("POST", base + "/whip/bad%20name", offer, sdp)
        assert status == 400 and "Invalid stream name" in text
        status, _h, text = await http("POST", base + "/whip/x5", offer + "a=x:" + "y" * 70000 + "\r\n", sdp)
        assert status == 413, text
        status, _h, text = await http("POST", base + "/whip/x3", offer, {**sdp, "Authorization": "Basic abc"})
        assert status == 400 and "Bearer" in text
        # H.264 in packetization-mode 0 only: nothing the server forwards.
        mode0 = (await make_offer("sendonly", "H264")).replace("packetization-mode=1", "packetization-mode=0")
        status, _h, text = await http("POST", base + "/whip/x4", mode0, sdp)
        assert (status, text.strip()) == (422, "No common codecs"), text
        status, _h, _text = await http("DELETE", base + "/whip/session/0123456789abcdef")
        assert status == 404
        assert publisher.location is not None
        status, _h, _text = await http("DELETE", publisher.location.replace("/whip/", "/whep/"))
        assert status == 404  # a WHIP session is not a WHEP one
        # PATCH: the media type, the ETag and ICE restarts.
        frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
        ufrag = next(line for line in publisher.pc.localDescription.sdp.split("\r\n")
                     if line.startswith("a=ice-ufrag"))
        status, _h, _text = await http("PATCH", publisher.location, "a=end-of-candidates\r\n",
                                       {"Content-Type": "text/plain"})
        assert status == 415
        status, _h, _text = await http("PATCH", publisher.location, ufrag + "\r\n", {**frag, "If-Match": '"stale"'})
        assert status == 412
        status, _h, text = await http("PATCH", publisher.location,
                                      "a=ice-ufrag:new1\r\na=ice-pwd:newpasswordnewpassword\r\n",
                                      {**frag, "If-Match": publisher.etag or "*"})
        assert status == 422 and "ICE restart" in text
        status, _h, text = await http("PATCH", publisher.location, "not sdp\r\n", frag)
        assert status == 400
        status, headers, _text = await http("PATCH", publisher.location,
                                            f"{ufrag}\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n",
                                            {**frag, "If-Match": publisher.etag or "*"})
        assert status == 204 and headers["ETag"] == publisher.etag
        # CORS preflights, for pages on other origins.
        status, headers, _text = await http("OPTIONS", base + "/whip/any", None, {
            "Origin": "http://example.test", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert "Authorization" in headers["Access-Control-Allow-Headers"]
        assert "Location" in headers["Access-Control-Expose-Headers"]
        status, headers, _text = await http("OPTIONS", publisher.location)
        assert status == 204 and "DELETE" in headers["Access-Control-Allow-Methods"]
        # The publisher is still fine after all that, and no refused attempt left a session behind.
        player = await WhepPlayer.start(base + "/whep/taken")
        await player.wait_frames(5, timeout=20)
        sessions = rest_now(server, "/rest-api/connection/find_all")
        assert sorted(s["mediaProviders"][0] for s in sessions) == ["WHEP", "WHIP"]
        await player.stop()
    finally:
        await publisher.stop()


async def test_a_vanished_whip_publisher_is_cleaned_up(start_server: Callable[..., ServerProcess],
                                                     gst_publishers: Callable[..., GstPublisher],
                                                     tmp_path: Path) -> None:
    server = start_server(["--webrtc-activity-timeout", "2"])
    publisher = gst_publishers(server.rest_url + "/whip/gone")
    await publisher.line("ready")
    viewer = await WhepPlayer.start(server.rest_url + "/whep/gone")
    await viewer.wait_frames(5, timeout=20)
    publisher.kill()  # no DELETE: its media just stops
    started = time.monotonic()
    await wait_for(lambda: not streams_named(server, "gone"), "the stream and its viewer gone", 20)
    assert time.monotonic() - started < 15
    await viewer.wait_ended(10)
    assert not rest_now(server, "/rest-api/connection/find_all")
    assert "Failed by RTP activity" in server.log()
    await viewer.stop()


async def test_whep_viewer_of_a_websdk_publisher(server: ServerProcess) -> None:
    async with Session.connect(server.ws_url) as session:
        await session.publish("websdk1", codec="H264")
        player = await WhepPlayer.start(server.rest_url + "/whep/websdk1")
        try:
            await player.wait_frames(20, timeout=20)
            assert player.codecs["video"] == "H264"
        finally:
            assert await player.stop() == 200
    with pytest.raises((HttpRefused, StreamFailed)):
        await WhepPlayer.start(server.rest_url + "/whep/websdk1")


async def test_the_python_client_command_line(server: ServerProcess) -> None:
    command = [sys.executable, "-m", "streaming.client.whip"]
    publisher = await asyncio.create_subprocess_exec(
        *command, "publish", server.rest_url + "/whip/cli1", "--ice-address", "127.0.0.1", "--token", "t",
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert publisher.stderr is not None
        ready = await asyncio.wait_for(publisher.stderr.readline(), 30)
        assert ready.startswith(b"ready "), ready
        player = await asyncio.create_subprocess_exec(
            *command, "play", server.rest_url + "/whep/cli1", "--ice-address", "127.0.0.1", "--frames", "20",
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(player.communicate(), 60)
        assert player.returncode == 0, err.decode()
        played = json.loads(out)
        assert played["frames"] >= 20 and (played["width"], played["height"]) == (640, 480)
        assert played["deleted"] == 200
        publisher.terminate()  # DELETEs its session, prints its summary
        out, err = await asyncio.wait_for(publisher.communicate(), 30)
        assert publisher.returncode == 0, err.decode()
        assert json.loads(out)["deleted"] == 200
        await wait_for(lambda: not streams_named(server, "cli1"), "the stream gone")
    finally:
        if publisher.returncode is None:
            publisher.kill()
            await publisher.wait()


async def test_an_offer_that_never_connects_is_cleaned_up(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(["--webrtc-connect-timeout", "2"])
    status, headers, _answer = await http("POST", server.rest_url + "/whip/silent", await make_offer("sendonly"),
                                          {"Content-Type": "application/sdp"})
    assert status == 201
    location = server.rest_url + headers["Location"]
    assert [s["status"] for s in streams_named(server, "silent")] == ["PENDING"]
    await wait_for(lambda: not streams_named(server, "silent"), "the unconnected stream gone", 15)
    assert not rest_now(server, "/rest-api/connection/find_all")
    status, _headers, _text = await http("DELETE", location)
    assert status == 404
    assert "Failed by ICE timeout" in server.log()


async def test_a_whep_viewer_without_the_publishers_codec_gets_it_transcoded(server: ServerProcess) -> None:
    publisher = await WhipPublisher.start(server.rest_url + "/whip/vp8src", codec="VP8", width=320, height=240)
    try:
        player = await WhepPlayer.start(server.rest_url + "/whep/vp8src", codec="H264")
        try:
            await player.wait_frames(10, timeout=30)
            assert player.codecs["video"] == "H264" and (player.width, player.height) == (320, 240)
            transcoders = rest_now(server, "/rest-api/transcoder/find_all")
            assert [(t["stream"], t["source"], t["target"]["codec"]) for t in transcoders] == [
                ("vp8src", "VP8", "H264")]
        finally:
            await player.stop()
    finally:
        await publisher.stop()


async def test_a_video_only_whip_publisher(server: ServerProcess) -> None:
    publisher = await WhipPublisher.start(server.rest_url + "/whip/mute1", audio=False)
    try:
        published = await wait_for(lambda: [s for s in streams_named(server, "mute1") if s["status"] == "PUBLISHING"],
                                   "PUBLISHING")
        assert (published[0]["hasAudio"], published[0]["hasVideo"]) == (False, True)
        assert [t["kind"] for t in published[0]["tracks"]] == ["video"]
        player = await WhepPlayer.start(server.rest_url + "/whep/mute1")
        await player.wait_frames(10, timeout=20)
        assert player.frames["audio"] == 0
        await player.stop()
    finally:
        await publisher.stop()
