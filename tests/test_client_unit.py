"""The test client (streaming.client): its frame dispatch without a socket, its media sources, and its
session against a real server: connect, ping/pong, refusals, a stream the server fails."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from streaming.client import ConnectionRefused, Session, StreamFailed, WaitTimeout
from streaming.client.__main__ import main as client_main
from streaming.client.media import H264FileTrack, ToneTrack, open_file, pattern_index
from streaming.client.media import TestPatternTrack as PatternTrack
from streaming.client.session import client_version
from streaming.client.webrtc import Player, Publisher, codec_preferences, negotiated_codecs
from tests.support.backend import Backend
from tests.support.server import ServerProcess


def frame(message: str, *data: object) -> str:
    return json.dumps({"message": message, "data": list(data)})


# -- dispatch, no socket ----------------------------------------------------------------------------


async def test_connection_message_is_the_websdk_one() -> None:
    obj = Session("ws://x", app_key="k", custom={"a": 1}).connection_message()
    assert obj["appKey"] == "k" and obj["mediaProviders"] == ["WebRTC"] and obj["clientVersion"] == "2.0"
    assert obj["msePacketizationVersion"] == 2 and obj["keepAlive"] is False and obj["custom"] == {"a": 1}
    assert obj["clientBrowserVersion"] == client_version()
    assert obj["clientBrowserVersion"].startswith("streaming-client/") and " aiortc/" in obj["clientBrowserVersion"]
    assert "authToken" not in obj


async def test_ping_is_answered_with_pong_and_user_data_is_kept() -> None:
    s = Session("ws://x")
    assert json.loads(s.handle_frame(frame("ping", None)) or "") == {"message": "pong", "data": [None]}
    assert s.pings_answered == 1
    assert s.handle_frame(frame("getUserData", {"sessionId": "sid", "authToken": "tok"})) is None
    assert (s.status, s.session_id, s.auth_token) == ("ESTABLISHED", "sid", "tok")


async def test_stream_messages_reach_their_stream_only() -> None:
    s = Session("ws://x")
    mine, other = s.new_stream("m1", "cam1", True), s.new_stream("m2", "cam2", False)
    s.handle_frame(frame("setRemoteSDP", "m1", "v=0\r\n"))
    s.handle_frame(frame("notifyStreamStatusEvent", {"mediaSessionId": "m1", "status": "PUBLISHING"}))
    s.handle_frame(frame("setRemoteSDP", "nobody", "v=0\r\n"))
    assert (mine.remote_sdp, mine.status) == ("v=0\r\n", "PUBLISHING")
    assert (other.remote_sdp, other.status) == (None, "NEW")
    s.handle_frame(frame("notifyStreamStatusEvent", {"mediaSessionId": "m2", "status": "FAILED",
                                                     "info": "Stream not found"}))
    failure = other.failure()
    assert isinstance(failure, StreamFailed)
    assert (failure.info, failure.name, failure.status) == ("Stream not found", "cam2", "FAILED")
    assert "cam2" in str(failure) and "Stream not found" in str(failure)


async def test_a_fail_fails_the_stream_it_names_or_the_request_waiting_for_it() -> None:
    s = Session("ws://x")
    first, second = s.new_stream("m1", "a", True), s.new_stream("m2", "b", True)
    first.status = second.status = "PENDING"
    s.handle_frame(frame("fail", {"apiMethod": "StreamStatusEvent", "id": "m2", "info": "in use"}))
    assert (first.status, second.status, second.info) == ("PENDING", "FAILED", "in use")
    s.handle_frame(frame("fail", {"apiMethod": "publishStream", "info": "Malformed publishStream"}))
    assert (first.status, first.info) == ("FAILED", "Malformed publishStream")
    s.handle_frame(frame("fail", {"apiMethod": "connect", "info": "unrelated"}))
    assert [w["info"] for w in s.warnings] == ["in use", "Malformed publishStream", "unrelated"]


async def test_garbage_from_the_server_is_ignored() -> None:
    s = Session("ws://x")
    for text in ("not json", "[1]", '{"message": 5}', frame("setRemoteSDP", None), frame("getUserData", None),
                 frame("notifyStreamStatusEvent", "x")):
        assert s.handle_frame(text) is None
    assert s.status == "NEW"


async def test_waits_time_out_with_a_clear_message() -> None:
    s = Session("ws://x")
    stream = s.new_stream("m1", "cam1", False)
    with pytest.raises(WaitTimeout, match="no PLAYING for stream 'cam1' within 0.05 s"):
        await stream.wait(lambda: stream.status == "PLAYING", "PLAYING", 0.05)


async def test_a_wait_ends_as_soon_as_the_stream_fails() -> None:
    s = Session("ws://x")
    stream = s.new_stream("m1", "cam1", False)
    loop = asyncio.get_running_loop()
    loop.call_soon(s.handle_frame, frame("notifyStreamStatusEvent",
                                         {"mediaSessionId": "m1", "status": "FAILED", "info": "No common codecs"}))
    # StreamFailed, not WaitTimeout: the wait ended on the failure, not on its 30 s limit.
    with pytest.raises(StreamFailed, match="No common codecs"):
        await stream.wait(lambda: stream.status == "PLAYING", "PLAYING", 30)


# -- codecs and sources ------------------------------------------------------------------------------


def test_codec_preferences_keep_one_codec_and_rtx() -> None:
    for codec in ("H264", "VP8"):
        names = {c.mimeType for c in codec_preferences("video", codec)}
        assert names == {f"video/{codec}", "video/rtx"}
    with pytest.raises(ValueError, match="unknown video codec 'AV2'"):
        codec_preferences("video", "AV2")


async def test_the_offer_carries_only_the_chosen_codec() -> None:
    for codec, absent in (("H264", "VP8"), ("VP8", "H264")):
        publisher = Publisher(Session("ws://x"), "cam1", codec=codec)
        try:
            offer = await publisher.pc.createOffer()
            assert f"{codec}/90000" in offer.sdp and f"{absent}/90000" not in offer.sdp
            assert "opus/48000" in offer.sdp
        finally:
            await publisher.pc.close()
            for track in publisher.tracks:
                track.stop()
    assert negotiated_codecs(offer.sdp) == {"audio": "opus", "video": "VP8"}


async def test_a_player_offers_recvonly_audio_and_video() -> None:
    player = Player(Session("ws://x"), "cam1")
    try:
        await player.pc.setLocalDescription(await player.pc.createOffer())
        assert player.pc.localDescription is not None
        sdp = player.pc.localDescription.sdp
        assert sdp.count("a=recvonly") == 2 and "m=audio" in sdp and "m=video" in sdp
        assert "a=candidate:" in sdp and "127.0.0.1" in sdp  # aiortc's offer carries its candidates
        request = player._request()
        assert {k: request[k] for k in ("published", "hasVideo", "hasAudio", "status", "record", "width",
                                        "height", "mediaProvider")} == {
            "published": False, "hasVideo": True, "hasAudio": True, "status": "PENDING", "record": False,
            "width": 0, "height": 0, "mediaProvider": "WebRTC"}
    finally:
        await player.pc.close()


async def test_test_pattern_frames_carry_their_number_through_a_codec() -> None:
    track = PatternTrack(640, 480, 30)
    first = await track.recv()
    assert (first.width, first.height, first.format.name) == (640, 480, "yuv420p")
    assert pattern_index(first) == 0
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 640, 480, "yuv420p"
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "35"}
    decoder = av.CodecContext.create("h264", "r")
    decoded = []
    for index in (0, 1, 12345):
        frame = track.frame_at(index)
        frame.pts = index
        for packet in encoder.encode(frame):
            decoded += decoder.decode(packet)
    for packet in encoder.encode(None):
        decoded += decoder.decode(packet)
    assert [pattern_index(f) for f in decoded] == [0, 1, 12345]
    track.stop()


async def test_tone_is_48k_20ms() -> None:
    track = ToneTrack()
    frame = await track.recv()
    assert (frame.sample_rate, frame.samples, frame.layout.name) == (48000, 960, "mono")
    track.stop()


async def test_h264_file_is_sent_as_it_is_and_loops_with_rising_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0"}
        pattern = PatternTrack(320, 240, 30)
        for index in range(5):
            frame = pattern.frame_at(index)
            frame.pts, frame.time_base = index, Fraction(1, 30)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    source = open_file(path)
    assert isinstance(source.video, H264FileTrack) and source.passthrough_codec == "H264"
    assert (source.width, source.height, source.audio) == (320, 240, None)
    track = source.video
    track._pacer.wait_until = _no_pacing  # type: ignore[method-assign]
    packets = [await track.recv() for _ in range(12)]
    assert all(bytes(p)[:4] in (b"\x00\x00\x00\x01", b"\x00\x00\x01\x09") or bytes(p)[:3] == b"\x00\x00\x01"
               for p in packets)  # Annex B, not length-prefixed
    stamps = [p.pts for p in packets if p.pts is not None]
    assert stamps == sorted(stamps) and len(set(stamps)) == 12
    assert b"\x00\x00\x00\x01\x67" in bytes(packets[5]) or b"\x00\x00\x01\x67" in bytes(packets[5])  # SPS again
    source.stop()


async def _no_pacing(offset: float) -> None:
    return None


def test_cli_reports_an_unreachable_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert client_main(["publish", "--name", "x", "--file", str(tmp_path / "missing.mp4"),
                        "--server", "ws://127.0.0.1:9"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "FAILED" and "cannot open ws://127.0.0.1:9" in out["error"]


# -- against a real server -------------------------------------------------------------------------


async def test_connect_gets_user_data(server: ServerProcess) -> None:
    async with Session.connect(server.ws_url, custom={"login": "alice"}) as session:
        assert session.status == "ESTABLISHED"
        assert session.session_id and session.auth_token
        assert session.user_data is not None and session.user_data["custom"] == {"login": "alice"}
    assert session.status == "DISCONNECTED" and session.closed


async def test_server_pings_are_answered(start_server: Callable[..., ServerProcess]) -> None:
    # Two missed pings would drop the session: staying up through many proves the pongs went back.
    server = start_server(extra_args=["--ws-ping-interval", "0.1", "--ws-ping-probes", "2"])
    async with Session.connect(server.ws_url) as session:
        await session.wait_for(lambda: session.pings_answered >= 10, "10 pings", timeout=10)
        assert not session.closed and session.status == "ESTABLISHED"


async def test_a_backend_refusal_raises_connection_refused_with_its_reason(server: ServerProcess,
                                                                          backend: Backend) -> None:
    server.add_app("shop", "shopKey", backend.url)
    backend.on("connect", status=403, body={"info": "Banned user"})
    with pytest.raises(ConnectionRefused, match="Banned user") as caught:
        async with Session.connect(server.ws_url, app_key="shopKey"):
            pytest.fail("the session should have been refused")
    assert caught.value.info == "Banned user"


async def test_an_unknown_app_key_is_refused(server: ServerProcess) -> None:
    with pytest.raises(ConnectionRefused, match="nobodysApp"):
        await Session.connect(server.ws_url, app_key="nobodysApp")


async def test_no_server_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="cannot open ws://127.0.0.1:9"):
        await Session.connect("ws://127.0.0.1:9", timeout=5)


async def test_a_stream_the_server_fails_raises_with_the_servers_info(server: ServerProcess) -> None:
    async with Session.connect(server.ws_url) as session:
        with pytest.raises(StreamFailed) as caught:
            await session.play("nobody-publishes-this", timeout=15)
        events = [m["data"][0] for m in session.messages if m["message"] == "notifyStreamStatusEvent"]
        assert events and events[-1]["status"] == "FAILED" and events[-1]["info"]
        assert caught.value.info == events[-1]["info"]
        assert caught.value.name == "nobody-publishes-this"
        assert caught.value.media_session_id == events[-1]["mediaSessionId"]
        assert not session.media  # the failed player was stopped and forgotten
        assert not session.closed  # a failed stream does not end the session


async def test_cli_play_of_a_missing_stream_prints_the_failure(server: ServerProcess) -> None:
    code, out = await asyncio.to_thread(_run_cli, ["play", "--server", server.ws_url, "--name", "ghost",
                                                   "--ice-address", "127.0.0.1", "--timeout", "15"])
    assert code == 1
    assert out["status"] == "FAILED" and out["info"] and out["info"] in out["error"]
    assert out["frames"] == 0 and out["name"] == "ghost"


def _run_cli(argv: list[str]) -> tuple[int, dict[str, Any]]:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = client_main(argv)
    return code, json.loads(buffer.getvalue())
