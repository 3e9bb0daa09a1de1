"""RTMP ingest with real peers on loopback: ffmpeg publishes rtmp://…/live/{stream key} (H.264 + AAC, as
OBS does); the stream plays over WebRTC (the Python client decodes its video and its AAC-turned-Opus
audio), RTSP and HLS (ffprobe), and is recorded; the backend decides through publishStream and is told
StreamStatusEvent / unPublishStream; hostile clients (bad handshakes, huge messages, unknown message
types, a publisher that vanishes) are closed with a logged reason while the server goes on."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from media.rtmp.chunk import ChunkWriter
from streaming.client import Session
from streaming.client.session import StreamFailed
from tests.support.backend import Backend
from tests.support.rtmp_client import IDR, Publisher, audio_body, real_h264, video_body
from tests.support.rtmp_peers import (  # noqa: F401
    FfmpegPublisher,
    clip_fixture,
    health,
    publish_fixture,
    rest,
    wait_until,
)
from tests.support.server import ServerProcess


@pytest.fixture
def rtmp_server(start_server: Callable[..., ServerProcess], backend: Backend) -> ServerProcess:
    """A server whose RTMP publishers are decided by the test backend (application shopKey)."""
    server = start_server(["--rtmp-app-key", "shopKey", "--rtmp-timeout", "3"])
    server.add_app("shop", "shopKey", backend.url)
    return server


def rtmp_stream(server: ServerProcess, name: str, status: str = "PUBLISHING") -> dict[str, Any] | None:
    code, found = rest(server, "/rest-api/rtmp/find_all")
    if code != 200:
        return None
    return next((s for s in found if s["name"] == name and s["status"] == status and len(s["tracks"]) == 2
                 and all(t["packets"] for t in s["tracks"])), None)


def ffprobe(url: str, *args: str, timeout: float = 30) -> dict[str, Any]:
    done = subprocess.run(["ffprobe", "-v", "error", *args, "-show_entries",
                           "stream=codec_name,codec_type,width,height:format=duration", "-of", "json", url],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def codecs(probe: dict[str, Any]) -> set[str]:
    return {s["codec_name"] for s in probe["streams"]}


# --- ingest -----------------------------------------------------------------------------------------


async def test_ffmpeg_publishes_and_every_output_plays(rtmp_server: ServerProcess, backend: Backend,
                                                       publish: Callable[..., FfmpegPublisher]) -> None:
    server = rtmp_server
    publisher = publish(server.urls["rtmp"] + "/live/cam1?token=t1")
    hook = await asyncio.to_thread(backend.wait_for, "publishStream", lambda c: c.body.get("name") == "cam1")
    assert hook.body["rtmpApp"] == "live" and hook.body["mediaProvider"] == "RTMP"
    assert hook.body["rtmpQuery"] == "token=t1" and hook.body["appKey"] == "shopKey"
    await asyncio.to_thread(backend.wait_for, "StreamStatusEvent",
                            lambda c: c.body["name"] == "cam1" and c.body["status"] == "PUBLISHING")
    await asyncio.to_thread(wait_until, lambda: rtmp_stream(server, "cam1"), 15, "both tracks flowing")
    code, listed = rest(server, "/rest-api/stream/find", {"name": "cam1", "published": True})
    assert code == 200 and [(s["mediaProvider"], s["status"]) for s in listed] == [("RTMP", "PUBLISHING")]

    # WebRTC: H.264 as it came, AAC as Opus, both decoded by the player
    async with Session.connect(server.ws_url) as session:
        player = await session.play("cam1")
        await player.wait_frames(45, timeout=20)
        await player.wait_frames(50, timeout=20, kind="audio")
        stats = await player.stats()
        assert (stats["width"], stats["height"]) == (640, 360)
        assert {c.lower() for c in stats["codecs"].values()} == {"h264", "opus"}

        # RTSP and HLS of the same stream
        rtsp = await asyncio.to_thread(ffprobe, server.urls["rtsp"] + "/cam1", "-rtsp_transport", "tcp")
        assert codecs(rtsp) == {"h264", "opus"}
        assert {(s.get("width"), s.get("height")) for s in rtsp["streams"] if s["codec_type"] == "video"} \
            == {(640, 360)}
        hls = await asyncio.to_thread(ffprobe, server.urls["hls"] + "/cam1/cam1.m3u8")
        assert codecs(hls) == {"h264", "aac"}

        # recorded like any stream
        code, started = rest(server, "/rest-api/recorder/startup", {"name": "cam1"})
        assert code == 200, started
        await asyncio.sleep(2.5)
        code, result = rest(server, "/rest-api/recorder/terminate", {"name": "cam1"})
        assert code == 200 and result["size"] > 10_000 and result["duration"] >= 1500, result
        record = server.data_dir / "records" / started["recordName"]
        assert codecs(await asyncio.to_thread(ffprobe, str(record))) == {"h264", "opus"}

        # the publisher goes: the viewer is stopped, the backend told
        publisher.stop()
        await asyncio.to_thread(wait_until, lambda: player.status == "STOPPED", 15, "the viewer STOPPED")
    await asyncio.to_thread(backend.wait_for, "StreamStatusEvent",
                            lambda c: c.body["name"] == "cam1" and c.body["status"] == "UNPUBLISHED")
    code, _ = rest(server, "/rest-api/rtmp/find_all")
    assert code == 404


async def test_publish_stream_hook_refusal_closes_the_connection(rtmp_server: ServerProcess, backend: Backend,
                                                                 publish: Callable[..., FfmpegPublisher]) -> None:
    backend.on("publishStream", status=403, body={"reason": "no RTMP for you"})
    publisher = publish(rtmp_server.urls["rtmp"] + "/live/cam2")
    code = await asyncio.to_thread(publisher.proc.wait, 20)
    assert code != 0
    assert publisher.proc.stderr is not None and "no RTMP for you" in publisher.proc.stderr.read()
    failed = await asyncio.to_thread(backend.wait_for, "StreamStatusEvent",
                                     lambda c: c.body["name"] == "cam2" and c.body["status"] == "FAILED")
    assert failed.body["info"] == "no RTMP for you"
    # nothing is published, and the server takes the next publisher
    async with Session.connect(rtmp_server.ws_url) as session:
        with pytest.raises(StreamFailed, match="Stream not found"):
            await session.play("cam2", timeout=10)
    backend.on("publishStream", status=200)
    publish(rtmp_server.urls["rtmp"] + "/live/cam2")
    await asyncio.to_thread(wait_until, lambda: rtmp_stream(rtmp_server, "cam2"), 15, "the next publisher")


async def test_stream_key_in_use_or_invalid(rtmp_server: ServerProcess, backend: Backend,
                                           publish: Callable[..., FfmpegPublisher]) -> None:
    async with Session.connect(rtmp_server.ws_url) as session:
        await session.publish("taken", codec="H264")
        second = publish(rtmp_server.urls["rtmp"] + "/live/taken")
        assert await asyncio.to_thread(second.proc.wait, 20) != 0
        failed = await asyncio.to_thread(backend.wait_for, "StreamStatusEvent",
                                         lambda c: c.body["name"] == "taken" and c.body["status"] == "FAILED")
        assert failed.body["info"] == "Stream name is already in use"
    bad = publish(rtmp_server.urls["rtmp"] + "/live/a%20b", loop=False)
    assert await asyncio.to_thread(bad.proc.wait, 20) != 0
    assert not backend.hooks("publishStream") or all(c.body["name"] != "a b" for c in backend.hooks("publishStream"))


# --- hostile clients --------------------------------------------------------------------------------


def _connect(server: ServerProcess) -> socket.socket:
    host, port = server.urls["rtmp"].removeprefix("rtmp://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_by_server(sock: socket.socket, timeout: float = 10) -> bool:
    """True once the server closed the connection (reads until EOF)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


@pytest.mark.parametrize("what, wire, logged", [
    ("an HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(1600), "not an RTMP client"),
    ("RTMPE", b"\x06" + bytes(1536), "RTMPE"),
    ("a huge message", Publisher().handshake() + bytes((0x03,)) + bytes(3) + b"\xff\xff\xff\x09" + bytes(4),
     "message of 16777215 bytes"),
    ("an unknown message type", Publisher().handshake() + ChunkWriter().write(3, 99, 0, 0, b"x"),
     "unknown RTMP message type 99"),
    ("a zero chunk size", Publisher().handshake() + ChunkWriter().write(2, 1, 0, 0, bytes(4)), "invalid chunk size 0"),
])
def test_hostile_clients_are_closed_with_a_reason(rtmp_server: ServerProcess, what: str, wire: bytes,
                                                  logged: str) -> None:
    with _connect(rtmp_server) as sock:
        sock.sendall(wire)
        assert _closed_by_server(sock), what
    wait_until(lambda: logged in rtmp_server.log(), 10, f"the log to say {logged!r}")
    wait_until(lambda: health(rtmp_server)["rtmp"]["connections"] == 0, 10, "no RTMP connection left")


def test_silent_and_truncated_clients_time_out(rtmp_server: ServerProcess) -> None:
    started = time.monotonic()
    with _connect(rtmp_server) as half_handshake, _connect(rtmp_server) as half_chunk:
        half_handshake.sendall(b"\x03" + bytes(700))
        client = Publisher()
        half_chunk.sendall(client.start()[:-5])  # publish cut short
        assert _closed_by_server(half_handshake, 15) and _closed_by_server(half_chunk, 15)
    assert time.monotonic() - started >= 2.5  # rtmp.timeout is 3 s: not before
    assert "no RTMP handshake within 3 s" in rtmp_server.log()
    assert "nothing received for 3 s" in rtmp_server.log()


async def test_a_publisher_that_vanishes_ends_its_stream(rtmp_server: ServerProcess, backend: Backend) -> None:
    """A raw publisher sends two seconds of H.264 and its socket is cut mid-message: the viewer is stopped,
    the backend gets UNPUBLISHED, and the name is free again."""
    client = Publisher(chunk_size=4096)
    config, frames = real_h264(3.0)
    sock = await asyncio.to_thread(_connect, rtmp_server)
    try:
        sock.sendall(client.start("gone"))
        await asyncio.to_thread(backend.wait_for, "StreamStatusEvent",
                                lambda c: c.body["name"] == "gone" and c.body["status"] == "PUBLISHING")
        sock.sendall(client.video(0, config) + b"".join(
            client.video(k * 1000 // 30, video_body("nalus", nals, keyframe)) for k, (keyframe, nals) in
            enumerate(frames[:60])))
        await asyncio.to_thread(wait_until, lambda: rest(rtmp_server, "/rest-api/rtmp/find_all")[0] == 200
                                and rest(rtmp_server, "/rest-api/rtmp/find_all")[1][0]["videoFrames"] >= 60,
                                10, "the media in")
        async with Session.connect(rtmp_server.ws_url) as session:
            player = await session.play("gone", audio=False)
            for k in range(60, 90):  # a second more, paced, so the viewer has pictures
                keyframe, nals = frames[k]
                sock.sendall(client.video(k * 1000 // 30, video_body("nalus", nals, keyframe)))
                await asyncio.sleep(1 / 30)
            await player.wait_frames(15, timeout=10)
            sock.sendall(client.video(3000, video_body("nalus", [IDR]))[:-20])  # cut mid-message
            sock.close()
            await asyncio.to_thread(wait_until, lambda: player.status == "STOPPED", 10, "the viewer STOPPED")
            assert player.info == "Stopped by publisher stop"
    finally:
        sock.close()
    ended = await asyncio.to_thread(backend.wait_for, "StreamStatusEvent",
                                    lambda c: c.body["name"] == "gone" and c.body["status"] == "UNPUBLISHED")
    assert "connection was lost" in ended.body["info"]
    assert not backend.hooks("unPublishStream")  # that one is for publishers that say so
    client = Publisher()
    with _connect(rtmp_server) as again:
        again.sendall(client.start("gone"))
        await asyncio.to_thread(backend.wait_for, "StreamStatusEvent",
                                lambda c: c.body["name"] == "gone" and c.body["status"] == "PUBLISHING"
                                and c.body["mediaSessionId"] != ended.body["mediaSessionId"])
        again.sendall(client.unpublish("gone"))
        await asyncio.to_thread(backend.wait_for, "unPublishStream", lambda c: c.body["name"] == "gone")


async def test_unsupported_codec_is_refused_with_a_reason(rtmp_server: ServerProcess, backend: Backend) -> None:
    client = Publisher()
    with _connect(rtmp_server) as sock:
        sock.sendall(client.start("sorenson"))
        await asyncio.to_thread(backend.wait_for, "StreamStatusEvent",
                                lambda c: c.body["name"] == "sorenson" and c.body["status"] == "PUBLISHING")
        sock.sendall(client.audio(0, audio_body("config")) + client.video(0, b"\x12\x00\x00"))
        assert await asyncio.to_thread(_closed_by_server, sock)
    failed = await asyncio.to_thread(backend.wait_for, "StreamStatusEvent",
                                     lambda c: c.body["name"] == "sorenson" and c.body["status"] == "FAILED")
    assert "Sorenson H.263 is not supported: send H.264" in failed.body["info"]


def test_rtmp_off_switch(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(["--rtmp-enabled", "false"])
    assert "rtmp" not in server.urls
    assert "RTMP ingest on" not in server.log()


async def test_b_frames_as_obs_sends_them_are_re_encoded(rtmp_server: ServerProcess, tmp_path: Path) -> None:
    """x264's defaults (High profile, B-frames), as OBS sends them: the stream's video is re-encoded without
    B-frames, so WebRTC plays it and the recording has every picture."""
    clip = tmp_path / "bframes.mp4"
    await asyncio.to_thread(subprocess.run, [
        "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30", "-f", "lavfi", "-i",
        "sine=frequency=440:sample_rate=44100", "-t", "6", "-c:v", "libx264", "-bf", "3", "-g", "30", "-pix_fmt",
        "yuv420p", "-c:a", "aac", "-ac", "2", str(clip)], check=True, timeout=60)
    publisher = FfmpegPublisher(clip, rtmp_server.urls["rtmp"] + "/live/obs")
    try:
        found = await asyncio.to_thread(wait_until, lambda: rtmp_stream(rtmp_server, "obs"), 15, "the stream")
        assert found["bFrames"] is True and found["videoTranscoded"] is True
        async with Session.connect(rtmp_server.ws_url) as session:
            player = await session.play("obs")
            await player.wait_frames(45, timeout=20)
            code, started = rest(rtmp_server, "/rest-api/recorder/startup", {"name": "obs"})
            assert code == 200, started
            await asyncio.sleep(3.0)
            code, result = rest(rtmp_server, "/rest-api/recorder/terminate", {"name": "obs"})
            assert code == 200, result
        record = rtmp_server.data_dir / "records" / started["recordName"]
        counted = await asyncio.to_thread(subprocess.run, [
            "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries",
            "stream=nb_read_frames", "-of", "csv=p=0", str(record)], capture_output=True, text=True, timeout=30)
        frames = int(counted.stdout.strip())
        assert frames >= 28 * result["duration"] / 1000, (frames, result)  # 30 fps, every picture
    finally:
        publisher.kill()


async def test_media_sent_before_the_backend_answers_is_kept(rtmp_server: ServerProcess, backend: Backend) -> None:
    """An encoder that does not wait for NetStream.Publish.Start: what it sends while the backend decides
    (the decoder configuration first of all) is kept and goes in once the publish is accepted."""
    backend.on("publishStream", delay=1.0)
    client = Publisher(chunk_size=4096)
    config, frames = real_h264(2.0)
    with _connect(rtmp_server) as sock:
        sock.sendall(client.start("eager") + client.video(0, config) + b"".join(
            client.video(k * 1000 // 30, video_body("nalus", nals, keyframe)) for k, (keyframe, nals) in
            enumerate(frames)))
        found = await asyncio.to_thread(
            wait_until, lambda: rest(rtmp_server, "/rest-api/rtmp/find_all")[0] == 200
            and rest(rtmp_server, "/rest-api/rtmp/find_all")[1][0].get("videoFrames") == 60
            and rest(rtmp_server, "/rest-api/rtmp/find_all")[1][0], 10, "the early media in")
        assert [(t["kind"], t["codec"]) for t in found["tracks"]] == [("video", "H264")]
        assert found["tracks"][0]["keyframes"] == 2
