"""Publish and play through a real server with the test client (streaming.client): frames arrive at the
publisher's size, in the codec it chose, and carry the publisher's pixels."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest

from streaming.client import Session, StreamFailed
from streaming.client.media import TestPatternTrack as PatternTrack
from tests.support.backend import Backend
from tests.support.server import REPO, ServerProcess


@pytest.mark.parametrize("codec", ["H264", "VP8"])
async def test_publish_then_play_gets_the_publishers_frames(server: ServerProcess, codec: str) -> None:
    async with Session.connect(server.ws_url) as publishing, Session.connect(server.ws_url) as playing:
        publisher = await publishing.publish("cam1", codec=codec, width=320, height=240)
        assert publisher.status == "PUBLISHING" and publisher.codecs["video"] == codec
        player = await playing.play("cam1", inspect=True)
        assert player.status == "PLAYING" and player.codecs["video"] == codec
        await player.wait_frames(30, timeout=20)
        await player.wait_frames(5, timeout=10, kind="audio")
        assert (player.video.width, player.video.height) == (320, 240)
        assert set(player.video.sizes) == {"320x240"}
        assert player.video.last_pattern_index is not None  # the test pattern's own pixels came through
        stats = await player.stats()
        assert stats["frames"] >= 30 and stats["packetsReceived"] >= 30
        assert stats["bytesReceived"] > 12 * stats["packetsReceived"]  # payload, not just RTP headers
        assert stats["firstFrameSeconds"] is not None and stats["firstFrameSeconds"] > 0

        await publisher.stop()
        await player.wait_status("STOPPED", timeout=10)
        assert player.info == "Stopped by publisher stop"
        with pytest.raises(StreamFailed, match="Stopped by publisher stop"):
            await player.hold(5)


async def test_a_second_publisher_of_a_name_fails_with_the_servers_reason(server: ServerProcess) -> None:
    async with Session.connect(server.ws_url) as first, Session.connect(server.ws_url) as second:
        await first.publish("cam1", audio=False)
        with pytest.raises(StreamFailed, match="Stream name is already in use") as caught:
            await second.publish("cam1", audio=False)
        assert caught.value.status == "FAILED"


async def test_cli_publish_and_play(server: ServerProcess) -> None:
    base = [sys.executable, "-m", "streaming.client"]
    common = ["--server", server.ws_url, "--name", "cli1", "--ice-address", "127.0.0.1"]
    publisher = await asyncio.create_subprocess_exec(
        *base, "publish", *common, "--codec", "VP8", "--duration", "60", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert publisher.stderr is not None
        # The CLI says "ready {...}" on stderr once the server said PUBLISHING.
        line = await asyncio.wait_for(publisher.stderr.readline(), 30)
        assert line.startswith(b"ready "), line
        assert json.loads(line[len("ready "):])["status"] == "PUBLISHING"
        play = await asyncio.create_subprocess_exec(
            *base, "play", *common, "--frames", "30", "--duration", "30", "--decode", cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(play.communicate(), 60)
        assert play.returncode == 0, err.decode()
        summary = json.loads(out)
        assert summary["status"] == "STOPPED" and summary["frames"] >= 30
        assert summary["width"] == 640 and summary["height"] == 480 and summary["codecs"]["video"] == "VP8"
    finally:
        if publisher.returncode is None:
            publisher.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(publisher.communicate(), 30)
    summary = json.loads(out)
    assert publisher.returncode == 0, err.decode()
    # The player received 30 frames or more, each at least one packet the publisher sent.
    assert summary["status"] == "UNPUBLISHED" and summary["packetsSent"] >= 30


async def test_a_backend_refusing_publish_is_a_stream_failure_with_its_reason(server: ServerProcess,
                                                                             backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    backend.on("publishStream", status=403, body={"info": "Not your stream"})
    async with Session.connect(server.ws_url, app_key="shopKey") as session:
        with pytest.raises(StreamFailed) as caught:
            await session.publish("cam1")
        assert caught.value.status == "FAILED" and caught.value.info == "Not your stream"


async def test_an_h264_file_is_published_as_it_is(server: ServerProcess, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 480, 272, "yuv420p"
        stream.options = {"preset": "ultrafast", "profile": "baseline", "bf": "0", "g": "30"}
        pattern = PatternTrack(480, 272, 30)
        for index in range(45):
            frame = pattern.frame_at(index)
            frame.pts, frame.time_base = index, Fraction(1, 30)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    async with Session.connect(server.ws_url) as session:
        publisher = await session.publish("clip", file=str(clip))
        assert publisher.codecs["video"] == "H264"
        player = await session.play("clip", inspect=True)
        await player.wait_frames(60, timeout=20)  # more than the file holds: it loops
        assert (player.video.width, player.video.height) == (480, 272)
        assert player.video.last_pattern_index is not None and player.video.last_pattern_index < 45
