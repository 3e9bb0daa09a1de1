"""RTSP pull: an independent RTSP server (GStreamer's rtsp-server, tests/support/camera.py) stands in for
IP cameras. The server pulls them (REST /rest-api/rtsp/startup, or a WebSDK player whose stream name is
the rtsp:// URL) over TCP and UDP, with Digest and Basic credentials from the URL; ffprobe and ffmpeg
read the pulled stream back from our RTSP and HLS outputs; the official WebSDK in Chromium plays a camera
through us, through a camera that stops and comes back, and gets the WebSDK's failure strings for wrong
URLs. The client protocol pieces (media.rtsp_client) are tested without sockets at the top."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from media.rtsp_client import (
    Credentials,
    RtspUrlError,
    build_request,
    control_url,
    parse_rtsp_url,
    parse_sdp,
    parse_session,
    parse_transport_reply,
    sprop_parameter_sets,
)
from media.rtsp_protocol.auth import Authenticator
from media.rtsp_protocol.parser import InterleavedFrame, ParseError, RequestParser, Response, ResponseParser
from streaming.rtsp_pull import masked
from tests.support.browser import Browser, browser_fixture, chromium_fixture  # noqa: F401
from tests.support.camera_process import Camera
from tests.support.server import ServerProcess
from tests.test_websdk_session import rest
from tests.test_websdk_streaming import StreamingPage

# --- the protocol, without sockets ------------------------------------------------------------------


def test_urls_parse_and_hostile_ones_are_wrong_format() -> None:
    url = parse_rtsp_url("rtsp://admin:p%40ss@10.0.0.5/Streaming/Channels/101?transport=tcp")
    assert (url.host, url.port, url.username, url.password) == ("10.0.0.5", 554, "admin", "p@ss")
    assert url.uri == "rtsp://10.0.0.5:554/Streaming/Channels/101?transport=tcp"
    assert "p@ss" not in url.display and "admin@" in url.display
    assert parse_rtsp_url("rtsp://[::1]:8554/cam").uri == "rtsp://[::1]:8554/cam"
    assert parse_rtsp_url("RTSP://cam").path == "/"
    for bad in ("", "http://cam/x", "rtsp://", "rtsp://cam:99999/x", "rtsp://cam:0/x", "rtsp://ca m/x",
                "rtsp://cam/x\r\nInjected: 1", "rtsp://cam/" + "a" * 5000, "rtsp://cam:port/x"):
        with pytest.raises(RtspUrlError):
            parse_rtsp_url(bad)
    assert masked("rtsp://admin:secret@cam:554/x") == "rtsp://admin:***@cam:554/x"
    assert masked("rtsp://cam/x") == "rtsp://cam/x"


def test_requests_refuse_header_injection() -> None:
    raw = build_request("SETUP", "rtsp://cam/trackID=0", 3, [("Transport", "RTP/AVP/TCP;interleaved=0-1")])
    assert raw.startswith(b"SETUP rtsp://cam/trackID=0 RTSP/1.0\r\nCSeq: 3\r\n") and raw.endswith(b"\r\n\r\n")
    # What a server parses back is what was meant.
    [request] = RequestParser().feed(raw)
    assert not isinstance(request, ParseError | InterleavedFrame | Response)
    assert request.header("Transport") == "RTP/AVP/TCP;interleaved=0-1"
    with pytest.raises(ValueError):
        build_request("OPTIONS", "rtsp://cam/", 1, [("Session", "1\r\nEvil: yes")])


def test_response_parser_splits_responses_and_interleaved_frames_in_any_pieces() -> None:
    sdp = b"v=0\r\ns=x\r\n"
    stream = (b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: %d\r\n\r\n" % len(sdp) + sdp
              + b"$\x00\x00\x04abcd" + b"RTSP/1.0 454 Session Not Found\r\nCSeq: 3\r\n\r\n" + b"$\x01\x00\x02zz")
    for size in (1, 7, len(stream)):
        parser = ResponseParser()
        events = [e for i in range(0, len(stream), size) for e in parser.feed(stream[i:i + size])]
        assert [type(e).__name__ for e in events] == ["Response", "InterleavedFrame", "Response", "InterleavedFrame"]
        first, frame, second = events[0], events[1], events[2]
        assert isinstance(first, Response) and first.status == 200 and first.body == sdp and first.cseq == "2"
        assert isinstance(frame, InterleavedFrame) and (frame.channel, frame.data) == (0, b"abcd")
        assert isinstance(second, Response) and (second.status, second.reason) == (454, "Session Not Found")


@pytest.mark.parametrize("garbage", [b"HTTP/1.1 200 OK\r\n\r\n", b"RTSP/1.0 2000 OK\r\n\r\n", b"\x00\x01garbage",
                                     b"RTSP/1.0 200 OK\r\nContent-Length: 99999999\r\n\r\n"])
def test_response_parser_stops_at_garbage(garbage: bytes) -> None:
    parser = ResponseParser()
    events = parser.feed(garbage)
    assert len(events) == 1 and isinstance(events[0], ParseError)
    assert parser.feed(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n") == []


GST_SDP = """v=0\r
o=- 1188340656180883 1 IN IP4 127.0.0.1\r
s=Session streamed with GStreamer\r
t=0 0\r
a=tool:GStreamer\r
a=control:*\r
a=range:npt=now-\r
m=video 0 RTP/AVP 96\r
c=IN IP4 0.0.0.0\r
a=rtpmap:96 H264/90000\r
a=framerate:25\r
a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LAHtkAoC/5YQAAAwABAAADADIPFi5I,aMuMsg==;profile-level-id=42c01e\r
a=control:stream=0\r
m=audio 0 RTP/AVP 111\r
a=rtpmap:111 OPUS/48000/2\r
a=control:stream=1\r
m=audio 0 RTP/AVP 0\r
a=control:rtsp://other/track3\r
m=application 0 RTP/AVP 107\r
a=rtpmap:107 vnd.onvif.metadata/90000\r
"""


def test_sdp_of_a_camera() -> None:
    tracks = parse_sdp(GST_SDP, "rtsp://127.0.0.1:8554/cam/")
    assert [(t.kind, t.codec, t.payload_type, t.clock_rate, t.channels) for t in tracks] == [
        ("video", "H264", 96, 90000, 1), ("audio", "opus", 111, 48000, 2), ("audio", "PCMU", 0, 8000, 1)]
    assert [t.control for t in tracks] == ["rtsp://127.0.0.1:8554/cam/stream=0", "rtsp://127.0.0.1:8554/cam/stream=1",
                                           "rtsp://other/track3"]
    assert tracks[0].fmtp["profile-level-id"] == "42c01e"
    sps, pps = sprop_parameter_sets(tracks[0].fmtp)
    assert sps is not None and sps[0] & 0x1F == 7 and pps is not None and pps[0] & 0x1F == 8
    assert control_url("rtsp://cam/live", "trackID=1") == "rtsp://cam/live/trackID=1"
    assert control_url("rtsp://cam/live", "*") == "rtsp://cam/live"
    for bad in ("<html>404</html>", "v=0\r\nm=video\r\n", "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/abc\r\n"):
        with pytest.raises(ValueError):
            parse_sdp(bad, "rtsp://cam/")


def test_transport_and_session_replies() -> None:
    tcp = parse_transport_reply("RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=1A2B3C4D;mode=\"PLAY\"")
    assert tcp.tcp and tcp.interleaved == (2, 3)
    udp = parse_transport_reply("RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;source=10.0.0.5")
    assert not udp.tcp and udp.server_ports == (6970, 6971) and udp.source == "10.0.0.5"
    for bad in ("", "RTP/AVP;multicast;destination=232.0.0.1", "RTP/AVP/TCP;unicast", "RAW/RAW/UDP;unicast"):
        with pytest.raises(ValueError):
            parse_transport_reply(bad)
    assert parse_session("8A3C1F;timeout=30") == ("8A3C1F", 30.0)
    assert parse_session("abc") == ("abc", None)


@pytest.mark.parametrize("mode", ["digest", "basic"])
def test_credentials_answer_challenges_as_a_server_checks_them(mode: str) -> None:
    """Our client's answers, checked by our server side's Authenticator (RFC 2617 both ways)."""
    server = Authenticator(mode, {"admin": "s3cret"})
    client = Credentials("admin", "s3cret")
    assert client.authorization("DESCRIBE", "rtsp://cam/x") is None  # nothing until challenged
    assert client.challenge([server.challenge("conn-1")])
    for method in ("DESCRIBE", "SETUP", "PLAY"):
        header = client.authorization(method, "rtsp://cam/x")
        assert header is not None and server.check(header, method, "conn-1") == "admin"
    # The same challenge again means the password is wrong: no endless retries.
    assert not client.challenge([server.challenge("conn-1")])
    wrong = Credentials("admin", "nope")
    assert wrong.challenge([server.challenge("conn-2")])
    assert server.check(wrong.authorization("DESCRIBE", "rtsp://cam/x"), "DESCRIBE", "conn-2") is None
    assert not Credentials(None, None).challenge([server.challenge("conn-3")])


# --- a real camera (gst-rtsp-server) and the real server --------------------------------------------


@pytest.fixture
def cameras(tmp_path: Path) -> Iterator[Callable[..., Camera]]:
    started: list[Camera] = []

    def start(*args: str, path: str = "/cam") -> Camera:
        camera = Camera(*args, path=path, log=tmp_path / "camera.log")
        started.append(camera)
        return camera.start()

    yield start
    for camera in started:
        camera.stop()


def ffprobe(url: str, transport: str = "tcp") -> dict[str, dict[str, Any]]:
    args = ["-rtsp_transport", transport] if url.startswith("rtsp") else []
    probe = subprocess.run(["ffprobe", "-v", "error", *args, "-show_streams", "-of", "json", url],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    return {s["codec_type"]: s for s in json.loads(probe.stdout)["streams"]}


def pulls(server: ServerProcess) -> list[dict[str, Any]]:
    status, answer = rest(server, "/rest-api/rtsp/find_all")
    return [] if status == 404 else answer


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rest_startup_pulls_a_digest_camera_that_our_rtsp_and_hls_outputs_serve(
        server: ServerProcess, cameras: Callable[..., Camera], transport: str) -> None:
    camera = cameras("--user", "admin", "--password", "s3cret", "--auth", "digest")
    uri = camera.url("admin:s3cret")
    status, answer = rest(server, "/rest-api/rtsp/startup", {"uri": uri, "localStreamName": "gate",
                                                             "transport": transport})
    assert status == 200, answer
    assert answer["status"] == "PLAYING" and answer["transport"] == transport
    assert "s3cret" not in json.dumps(answer)
    assert [t["codec"] for t in answer["tracks"]] == ["H264", "opus"]
    # The camera's media reach the routing core, and come out of our own RTSP and HLS outputs.
    wait_until(lambda: pulls(server)[0]["tracks"][0]["keyframes"] > 0, "a keyframe from the camera")
    streams = ffprobe(f"{server.urls['rtsp']}/gate", "udp" if transport == "udp" else "tcp")
    assert streams["video"]["codec_name"] == "h264" and (streams["video"]["width"], streams["video"]["height"]) == (
        640, 360)
    assert streams["audio"]["codec_name"] == "opus"
    hls = ffprobe(f"{server.urls['hls']}/gate/gate.m3u8")
    assert hls["video"]["codec_name"] == "h264" and hls["audio"]["codec_name"] == "aac"
    # One pull per URL: asking again joins it.
    status, again = rest(server, "/rest-api/rtsp/startup", {"uri": uri, "localStreamName": "gate"})
    assert status == 200 and again["connects"] == 1
    status, found = rest(server, "/rest-api/rtsp/find", {"uri": uri})
    assert status == 200 and len(found) == 1 and found[0]["localStreamName"] == "gate"
    status, _ = rest(server, "/rest-api/rtsp/terminate", {"uri": masked(uri)})
    assert status == 200
    assert pulls(server) == []
    assert rest(server, "/rest-api/rtsp/terminate", {"uri": uri})[0] == 404


def test_ffmpeg_records_a_pulled_basic_auth_vp8_camera_from_our_rtsp_url(server: ServerProcess,
                                                                         cameras: Callable[..., Camera],
                                                                         tmp_path: Path) -> None:
    camera = cameras("--codec", "vp8", "--user", "viewer", "--password", "pw", "--auth", "basic")
    status, answer = rest(server, "/rest-api/rtsp/startup", {"uri": camera.url("viewer:pw"), "localStreamName": "yard"})
    assert status == 200, answer
    out = tmp_path / "yard.mkv"
    record = subprocess.run(["ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", f"{server.urls['rtsp']}/yard",
                             "-t", "3", "-c", "copy", "-y", str(out)], capture_output=True, text=True, timeout=60)
    assert record.returncode == 0, record.stderr
    decoded = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                              "stream=codec_name,nb_read_frames", "-of", "json", str(out)],
                             capture_output=True, text=True, timeout=60)
    stream = json.loads(decoded.stdout)["streams"][0]
    assert stream["codec_name"] == "vp8" and int(stream["nb_read_frames"]) >= 50  # 3 s at 25 fps


def test_a_pulled_camera_is_recorded_over_rest(server: ServerProcess, cameras: Callable[..., Camera]) -> None:
    camera = cameras()
    assert rest(server, "/rest-api/rtsp/startup", {"uri": camera.url(), "localStreamName": "porch"})[0] == 200
    status, started = rest(server, "/rest-api/recorder/startup", {"name": "porch"})
    assert status == 200, started
    wait_until(lambda: (r := rest(server, "/rest-api/recorder/find_all")[1]) and isinstance(r, list)
               and r[0].get("mediaSeconds", 0) >= 3, "three seconds recorded", timeout=40)
    status, finished = rest(server, "/rest-api/recorder/terminate", {"name": "porch"})
    assert status == 200, finished
    path = server.data_dir / "records" / started["recordName"]
    streams = ffprobe(str(path))
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "opus"
    assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)


def test_rest_failures_carry_the_websdk_strings(server: ServerProcess, cameras: Callable[..., Camera]) -> None:
    camera = cameras("--user", "admin", "--password", "s3cret")
    cases = {
        camera.url("admin:wrong"): (502, "Failed to connect to rtsp stream"),
        camera.url("admin:s3cret").replace("/cam", "/nothing"): (404, "Rtsp stream not found"),
        "rtsp://127.0.0.1:1/cam": (502, "Failed to connect to rtsp stream"),
        "rtsp://127.0.0.1:99999/cam": (400, "Rtsp has wrong format"),
        "rtsp://127.0.0.1/../../etc\nInjected: 1": (400, "Rtsp has wrong format"),
    }
    for uri, (code, info) in cases.items():
        status, answer = rest(server, "/rest-api/rtsp/startup", {"uri": uri})
        assert (status, answer["info"]) == (code, info), (uri, answer)
    assert rest(server, "/rest-api/rtsp/startup", {"uri": 5})[0] == 400
    assert rest(server, "/rest-api/rtsp/startup", {"uri": camera.url(), "localStreamName": "../x"})[0] == 400
    assert pulls(server) == []


def test_camera_that_stops_and_comes_back_is_pulled_again(server: ServerProcess,
                                                          cameras: Callable[..., Camera]) -> None:
    camera = cameras()
    status, answer = rest(server, "/rest-api/rtsp/startup", {"uri": camera.url(), "localStreamName": "door"})
    assert status == 200, answer
    camera.stop()
    wait_until(lambda: pulls(server)[0]["status"] == "RECONNECTING", "the pull noticing the camera is gone")
    camera.start()  # on the same port
    pull = wait_until(lambda: (p := pulls(server)[0])["status"] == "PLAYING" and p["reconnects"] == 1 and p,
                      "the pull reconnecting")
    before = pull["packets"]
    wait_until(lambda: pulls(server)[0]["packets"] > before + 50, "media after the reconnect")
    streams = ffprobe(f"{server.urls['rtsp']}/door")
    assert streams["video"]["codec_name"] == "h264"


# --- the official WebSDK in Chromium plays cameras through us ---------------------------------------------


@pytest.fixture
def page(server: ServerProcess, browser: Browser) -> Iterator[StreamingPage]:
    yield StreamingPage(browser, server).open()


def test_websdk_plays_a_camera_url_through_a_camera_restart(server: ServerProcess, page: StreamingPage,
                                                             cameras: Callable[..., Camera]) -> None:
    camera = cameras("--user", "admin", "--password", "s3cret")
    url = camera.url("admin:s3cret")
    page.connect("viewers")
    page.play("viewers", "one", url)
    page.wait("one", "PLAYING", timeout=30)
    page.wait_frames("one", at_least=25)
    page.b.wait_until(lambda: page.video("one") == {"width": 640, "height": 360} or None, 15, "the camera's size")
    # A second player of the same URL shares the one pull.
    page.play("viewers", "two", url)
    page.wait("two", "PLAYING", timeout=30)
    [pull] = pulls(server)
    assert pull["viewers"] == 2 and pull["connects"] == 1
    # The camera goes away and comes back: the players stay and show it again.
    camera.stop()
    wait_until(lambda: pulls(server)[0]["status"] == "RECONNECTING", "the pull noticing the camera is gone")
    camera.start()
    wait_until(lambda: pulls(server)[0]["status"] == "PLAYING", "the pull reconnecting")
    page.wait_frames("one", at_least=50, timeout=40)
    assert not [e for e in page.b.js("return window.__m.events") if e["status"] == "FAILED"]
    # The pull ends with its last viewer.
    page.stop("one")
    page.stop("two")
    page.wait("two", "STOPPED")
    wait_until(lambda: pulls(server) == [], "the pull stopping after its last viewer")


def test_websdk_gets_the_rtsp_failure_strings(server: ServerProcess, page: StreamingPage,
                                              cameras: Callable[..., Camera]) -> None:
    camera = cameras()
    page.connect("viewers")
    cases = {"missing": (camera.url().replace("/cam", "/missing"), "Rtsp stream not found"),
             "closed": ("rtsp://127.0.0.1:1/cam", "Failed to connect to rtsp stream"),
             "wrong": ("rtsp://127.0.0.1:99999/cam", "Rtsp has wrong format")}
    for target, (url, info) in cases.items():
        page.play("viewers", target, url)
        event = page.wait(target, "FAILED", "PLAYING", timeout=30)
        assert (event["status"], event["info"]) == ("FAILED", info), (url, event)
    assert pulls(server) == []
