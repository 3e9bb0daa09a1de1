"""WebRTC viewers that need another codec or size get it through a transcoder, shared by every viewer
with the same need and stopped when the last one leaves (real server, real aiortc peers on loopback)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from streaming.client import Session, StreamFailed
from tests.support.server import ServerProcess


def health(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.rest_url + "/health", timeout=5) as resp:
        return json.loads(resp.read())


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(("published", "accepted"), [("H264", "VP8"), ("VP8", "H264")])
async def test_a_viewer_without_the_publishers_codec_plays_through_a_transcoder(
        server: ServerProcess, published: str, accepted: str) -> None:
    async with Session.connect(server.ws_url) as publishing, Session.connect(server.ws_url) as playing:
        await publishing.publish("cam1", codec=published, width=320, height=240)
        player = await playing.play("cam1", codec=accepted, inspect=True)
        assert player.codecs["video"] == accepted
        await player.wait_frames(20, timeout=30)
        await player.wait_frames(5, timeout=10, kind="audio")  # audio is forwarded as it is
        assert (player.video.width, player.video.height) == (320, 240)
        assert player.video.last_pattern_index is not None  # the publisher's pixels, re-encoded
        assert health(server)["transcoders"]["active"] == 1


async def test_viewers_with_the_same_need_share_one_transcoder_which_stops_when_they_leave(
        server: ServerProcess) -> None:
    async with Session.connect(server.ws_url) as publishing, Session.connect(server.ws_url) as playing:
        await publishing.publish("cam1", codec="H264", width=320, height=240, audio=False)
        first = await playing.play("cam1", codec="VP8", audio=False)
        second = await playing.play("cam1", codec="VP8", audio=False)
        await first.wait_frames(10, timeout=30)
        await second.wait_frames(10, timeout=30)
        counters = health(server)["transcoders"]
        assert counters == {"active": 1, "created": 1}
        # A viewer that takes H.264 needs no transcoder at all.
        direct = await playing.play("cam1", codec="H264", audio=False)
        await direct.wait_frames(5, timeout=20)
        assert health(server)["transcoders"] == {"active": 1, "created": 1}

        await first.stop(wait=True)
        await second.wait_frames(second.video.frames + 5, timeout=20)  # the other one goes on
        assert health(server)["transcoders"]["active"] == 1
        await second.stop(wait=True)
        await wait_for(lambda: health(server)["transcoders"]["active"] == 0, "the transcoder to stop")
        assert health(server)["transcoders"]["created"] == 1


async def test_a_viewer_asking_for_a_size_gets_it(server: ServerProcess) -> None:
    async with Session.connect(server.ws_url) as publishing, Session.connect(server.ws_url) as playing:
        await publishing.publish("cam1", codec="VP8", width=320, height=240, audio=False)
        small = await playing.play("cam1", width=160, height=120, audio=False, inspect=True)
        full = await playing.play("cam1", audio=False, inspect=True)
        await small.wait_frames(10, timeout=30)
        await full.wait_frames(10, timeout=30)
        assert (small.video.width, small.video.height) == (160, 120)
        assert (full.video.width, full.video.height) == (320, 240)
        assert health(server)["transcoders"]["created"] == 1


async def test_bad_sizes_fail_the_viewer_with_a_reason(server: ServerProcess) -> None:
    async with Session.connect(server.ws_url) as publishing, Session.connect(server.ws_url) as playing:
        await publishing.publish("cam1", codec="VP8", width=320, height=240, audio=False)
        with pytest.raises(StreamFailed, match="width and height must be whole numbers"):
            await playing.play("cam1", width=-5, audio=False)
        player = await playing.play("cam1", audio=False)  # the session goes on
        await player.wait_frames(5, timeout=20)


async def test_with_transcoding_disabled_the_viewer_fails_with_the_wcs_reason(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(["--transcoding-enabled", "false"])
    async with Session.connect(server.ws_url) as publishing, Session.connect(server.ws_url) as playing:
        await publishing.publish("cam1", codec="H264", width=320, height=240, audio=False)
        with pytest.raises(StreamFailed, match="Transcoding required, but disabled"):
            await playing.play("cam1", codec="VP8", audio=False)
        player = await playing.play("cam1", codec="H264", audio=False)
        await player.wait_frames(5, timeout=20)
        assert health(server)["transcoders"] == {"active": 0, "created": 0}
