"""RTSP output through a real server: a publisher (the aiortc test client) -> rtsp://host:port/{name} ->
ffprobe, ffmpeg and GStreamer's rtspsrc over TCP and UDP; a raw-socket client for what players do not
show (interleaved RTP and sender reports, the 4xx rules, hostile input, session timeout); the playRTSP
hook and RTSP Basic/Digest authentication."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from media import rtcp, rtp
from streaming.client import Session
from tests.support.backend import Backend
from tests.support.camera_process import SYSTEM_PYTHON
from tests.support.server import REPO, ServerProcess

RTSP = ["--rtsp-port", "0", "--hls-port", "0"]
RTSP_PLAYER = REPO / "tests/support/rtsp_player.py"


def health(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.rest_url + "/health", timeout=5) as resp:
        return json.loads(resp.read())


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20.0, every: float = 0.1) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


def rtsp_url(server: ServerProcess, name: str = "cam1", credentials: str = "") -> str:
    base = server.urls["rtsp"]
    return base.replace("rtsp://", f"rtsp://{credentials}@") + f"/{name}" if credentials else f"{base}/{name}"


async def run(*cmd: str, timeout: float = 60.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{cmd[0]} did not finish in {timeout} s") from None
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def ffprobe_url(url: str, transport: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = await run("ffprobe", "-v", "error", "-rtsp_transport", transport, "-timeout", "10000000",
                               "-show_streams", "-of", "json", url, timeout=40)
    return code, (json.loads(out) if code == 0 else {}), err


def probe_file(path: Path) -> dict[str, Any]:
    done = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json",
                           str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class RawClient:
    """RTSP over a plain socket, as a hostile or minimal client would speak it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.cseq = 0
        self.frames: list[tuple[int, bytes]] = []

    @classmethod
    async def open(cls, server: ServerProcess) -> RawClient:
        host, port = server.urls["rtsp"].removeprefix("rtsp://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, method: str, uri: str, headers: dict[str, str] | None = None,
                      timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        self.cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())
        return await self.response(timeout)

    async def response(self, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """The next response; interleaved frames before it are kept in `frames`."""
        async with asyncio.timeout(timeout):
            while True:
                first = await self.reader.readexactly(1)
                if first == b"$":
                    head = await self.reader.readexactly(3)
                    self.frames.append((head[0], await self.reader.readexactly(int.from_bytes(head[1:], "big"))))
                    continue
                head = first + await self.reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ", 2)[1])
                pairs = (line.partition(":") for line in lines[1:] if line)
                headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
                body = await self.reader.readexactly(int(headers.get("content-length", "0")))
                return status, headers, body

    async def read_frames(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.frames) < count:
                assert await self.reader.readexactly(1) == b"$"
                head = await self.reader.readexactly(3)
                self.frames.append((head[0], await self.reader.readexactly(int.from_bytes(head[1:], "big"))))

    async def closed_by_server(self, timeout: float) -> bool:
        async with asyncio.timeout(timeout):
            while await self.reader.read(65536):
                pass
        return True

    def close(self) -> None:
        self.writer.close()


async def play_interleaved(client: RawClient, url: str, tracks: int = 2) -> tuple[str, list[str]]:
    status, headers, _sdp = await client.request("DESCRIBE", url)
    assert status == 200, status
    session = ""
    transports = []
    for track in range(tracks):
        extra = {"Transport": f"RTP/AVP/TCP;unicast;interleaved={2 * track}-{2 * track + 1}"}
        if session:
            extra["Session"] = session
        status, headers, _ = await client.request("SETUP", f"{url}/trackID={track}", extra)
        assert status == 200, status
        session = headers["session"].split(";")[0]
        transports.append(headers["transport"])
    status, headers, _ = await client.request("PLAY", url, {"Session": session})
    assert status == 200
    return session, transports


# --- players --------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["H264", "VP8"])
async def test_ffprobe_sees_video_and_opus_at_the_published_size_over_tcp_and_udp(
        start_server: Callable[..., ServerProcess], codec: str) -> None:
    server = start_server(RTSP)
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec=codec, width=320, height=240)
        for transport in ("tcp", "udp"):
            code, probed, err = await ffprobe_url(rtsp_url(server), transport)
            assert code == 0, err
            streams = {s["codec_type"]: s for s in probed["streams"]}
            assert streams["video"]["codec_name"] == codec.lower()
            assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240), transport
            assert streams["audio"]["codec_name"] == "opus"
        stats = health(server)["rtsp"]
        assert stats["sent"] > 0 and stats["requests"] >= 8


@pytest.mark.parametrize("codec, container", [("H264", "mp4"), ("VP8", "mkv")])
async def test_ffmpeg_records_five_seconds_of_decodable_frames(
        start_server: Callable[..., ServerProcess], tmp_path: Path, codec: str, container: str) -> None:
    server = start_server(RTSP)
    out = tmp_path / f"out.{container}"
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec=codec, width=320, height=240)
        code, _out, err = await run("ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", rtsp_url(server),
                                    "-t", "5", "-c", "copy", "-y", str(out), timeout=60)
        assert code == 0, err
    probed = probe_file(out)
    video = next(s for s in probed["streams"] if s["codec_type"] == "video")
    assert video["codec_name"] == codec.lower()
    assert 4.0 <= float(probed["format"]["duration"]) <= 6.0
    assert int(video["nb_read_frames"]) >= 4 * 15  # the test pattern runs at about 30 fps
    assert any(s["codec_type"] == "audio" for s in probed["streams"])


@pytest.mark.parametrize("codec", ["H264", "VP8"])
async def test_gstreamer_rtspsrc_decodes_our_url_over_tcp_and_udp(start_server: Callable[..., ServerProcess],
                                                                  codec: str) -> None:
    """A second, independent RTSP client implementation (GStreamer's rtspsrc), decoding frames."""
    server = start_server(RTSP)
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec=codec, width=320, height=240)
        for transport in ("tcp", "udp"):
            code, out, err = await run(SYSTEM_PYTHON, str(RTSP_PLAYER), rtsp_url(server), "--transport", transport,
                                       "--frames", "30", "--timeout", "40", timeout=60)
            assert code == 0, f"{transport}: {err}"
            played = json.loads(out)
            assert (played["width"], played["height"]) == (320, 240) and played["audio"], (transport, played)


# --- the protocol on the wire ------------------------------------------------------------------------


async def test_interleaved_rtp_and_sender_reports_reach_a_raw_client_and_the_rules_hold(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(RTSP)
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=320, height=240)
        url = rtsp_url(server)
        client = await RawClient.open(server)
        status, headers, _ = await client.request("OPTIONS", url)
        assert status == 200 and "DESCRIBE" in headers["public"] and "GET_PARAMETER" in headers["public"]
        status, _h, _b = await client.request("PLAY", url)
        assert status == 455  # PLAY before SETUP
        status, headers, sdp = await client.request("DESCRIBE", url)
        assert status == 200 and headers["content-type"] == "application/sdp"
        assert b"sprop-parameter-sets=" in sdp and b"a=rtpmap:" in sdp
        session, transports = await play_interleaved(client, url)
        ssrcs = {int(t.split("ssrc=")[1], 16) for t in transports}
        status, headers, _ = await client.request("SETUP", f"{url}/trackID=0",
                                                  {"Transport": "RTP/AVP/TCP;interleaved=6-7", "Session": session})
        assert status == 455  # the same track twice (and while playing)
        # RTP on the even channels with the announced SSRCs, and a sender report on an odd one.
        await client.read_frames(50)
        media = [(ch, data) for ch, data in client.frames if ch % 2 == 0]
        assert {rtp.parse_rtp(data).ssrc for _ch, data in media} <= ssrcs and len(media) > 10

        def sender_report() -> bool:
            for channel, data in client.frames:
                if channel % 2 == 1:
                    for packet in rtcp.parse_rtcp(data):
                        if packet.packet_type == rtcp.RTCP_SR and packet.ssrc in ssrcs:
                            return True
            return False

        async with asyncio.timeout(15):
            while not sender_report():
                await client.read_frames(len(client.frames) + 20)
        status, headers, _ = await client.request("GET_PARAMETER", url, {"Session": session})
        assert status == 200 and headers["session"].startswith(session) and ";timeout=60" in headers["session"]
        assert health(server)["rtsp"]["playing"] == 1
        status, _h, _b = await client.request("PAUSE", url, {"Session": session})
        assert status == 200
        await wait_for(lambda: health(server)["rtsp"]["playing"] == 0, "the paused client detached")
        status, _h, _b = await client.request("TEARDOWN", url, {"Session": session})
        assert status == 200
        await wait_for(lambda: health(server)["rtsp"]["clients"] == 0, "the client gone after TEARDOWN")
        status, _h, _b = await client.request("PLAY", url, {"Session": session})
        assert status == 454  # torn down
        client.close()


async def test_a_players_nack_is_answered_and_its_pli_asks_the_publisher_for_a_keyframe(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(RTSP)
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=320, height=240)
        client = await RawClient.open(server)
        _status, _headers, sdp = await client.request("DESCRIBE", rtsp_url(server))
        video = [line.split()[0] for line in sdp.decode().splitlines() if line.startswith("m=")].index("m=video")
        _session, transports = await play_interleaved(client, rtsp_url(server))
        video_ssrc = int(transports[video].split("ssrc=")[1], 16)
        channel = 2 * video
        await client.read_frames(30)
        assert health(server)["rtsp"]["routes"] == {"tcp": 2}  # frames written by the native fan-out
        seqs = [rtp.parse_rtp(data).sequence_number for ch, data in client.frames if ch == channel]
        wanted = seqs[len(seqs) // 2]
        nack = rtcp.build_nack(1, video_ssrc, [wanted])
        await client.send_raw(bytes([0x24, channel + 1]) + len(nack).to_bytes(2, "big") + nack)

        def resent() -> bool:
            return [rtp.parse_rtp(data).sequence_number for ch, data in client.frames
                    if ch == channel].count(wanted) == 2

        async with asyncio.timeout(10):
            while not resent():
                await client.read_frames(len(client.frames) + 5)

        def keyframe_requests() -> int:
            [publisher] = [s for s in json.loads(urllib.request.urlopen(urllib.request.Request(
                server.rest_url + "/rest-api/stream/find_all", data=b"{}"), timeout=5).read()) if s["published"]]
            return sum(int(t["keyframeRequests"]) for t in publisher["tracks"] if t["kind"] == "video")

        # Requests to the publisher are rate-limited (one a second, the viewer's joining request counted),
        # and one held by the limit is dropped when a keyframe comes first: like a real player, repeat
        # the PLI until the publisher is asked. Nothing else asks for keyframes in this stream.
        before = keyframe_requests()
        pli = rtcp.build_pli(1, video_ssrc)
        async with asyncio.timeout(20):
            while keyframe_requests() == before:
                await client.send_raw(bytes([0x24, channel + 1]) + len(pli).to_bytes(2, "big") + pli)
                await client.read_frames(len(client.frames) + 10)
        client.close()


async def test_hostile_input_gets_clear_answers_and_a_playing_client_is_unaffected(
        start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server(RTSP)
    out = tmp_path / "out.mp4"
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=320, height=240)
        url = rtsp_url(server)
        recording = asyncio.ensure_future(run("ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", url,
                                              "-t", "6", "-c", "copy", "-y", str(out), timeout=60))
        await wait_for(lambda: health(server)["rtsp"]["playing"] == 1, "ffmpeg playing")

        async def answer_to(data: bytes) -> int:
            client = await RawClient.open(server)
            await client.send_raw(data)
            status, _headers, _body = await client.response()
            assert await client.closed_by_server(10)
            client.close()
            return status

        assert await answer_to(b"DESCRIBE " + url.encode() + b" RTSP/1.0\r\nCSeq: 1\r\nX-Pad: " + b"a" * 70000
                               + b"\r\n\r\n") == 431
        assert await answer_to(b"DESCRIBE " + url.encode() + b" RTSP/1.0\r\n" + b"X-H: 1\r\n" * 500 + b"\r\n") == 431
        assert await answer_to(b"DESCRIBE rtsp://h/" + b"a" * 10000 + b" RTSP/1.0\r\n\r\n") == 414
        assert await answer_to(b"\x00\xff garbage \x16\x03\x01" * 50) == 400
        assert await answer_to(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == 400
        assert await answer_to(b"SET_PARAMETER " + url.encode() + b" RTSP/1.0\r\nCSeq: 1\r\n"
                               b"Content-Length: 999999999999\r\n\r\n") == 413

        # A session id made on another connection is not found here.
        owner = await RawClient.open(server)
        session, _ = await play_interleaved(owner, url)
        thief = await RawClient.open(server)
        for method in ("PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER"):
            status, _h, _b = await thief.request(method, url, {"Session": session})
            assert status == 454, method
        status, _h, _b = await thief.request("DESCRIBE", url)
        assert status == 200  # the connection goes on after a 4xx of the session rules
        status, _h, _b = await thief.request("SETUP", f"{url}/trackID=0", {"Transport": "RTP/AVP;multicast"})
        assert status == 461
        status, _h, _b = await thief.request("RECORD", url)
        assert status == 405
        status, _h, _b = await thief.request("FLY", url)
        assert status == 501
        thief.close()
        owner.close()

        code, _out, err = await recording
        assert code == 0, err
    probed = probe_file(out)
    video = next(s for s in probed["streams"] if s["codec_type"] == "video")
    assert float(probed["format"]["duration"]) >= 5.0 and int(video["nb_read_frames"]) >= 5 * 15


async def test_an_error_answer_survives_a_client_that_goes_on_sending(
        start_server: Callable[..., ServerProcess]) -> None:
    """A client still sending the rest of a huge request when it is answered (431) reads the answer and
    then a clean end, not a reset: the server reads and drops what follows its answer before closing."""
    server = start_server(RTSP)
    client = await RawClient.open(server)
    # Far beyond the header limit, sent in one go and followed by more: whatever the server has not read
    # when it answers is still arriving when it closes.
    await client.send_raw(b"DESCRIBE " + rtsp_url(server).encode() + b" RTSP/1.0\r\nCSeq: 1\r\nX-Pad: "
                          + b"a" * 400_000)
    status, _headers, _body = await client.response()
    assert status == 431
    assert await client.closed_by_server(10)
    client.close()
    assert health(server)["rtsp"] is not None  # and the server goes on


async def test_a_client_that_does_not_read_is_dropped_and_counted_and_others_play_on(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(RTSP)
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="VP8", width=640, height=480)
        url = rtsp_url(server)
        host, port = server.urls["rtsp"].removeprefix("rtsp://").rsplit(":", 1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.connect((host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        stuck = RawClient(reader, writer)
        await play_interleaved(stuck, url)  # and never reads again
        await wait_for(lambda: health(server)["rtsp"]["dropped"] > 0, "packets dropped for the stuck client", 60,
                       every=0.5)
        code, probed, err = await ffprobe_url(url, "tcp")
        assert code == 0, err
        assert {s["codec_name"] for s in probed["streams"]} == {"vp8", "opus"}
        stuck.close()
        await wait_for(lambda: health(server)["rtsp"]["clients"] == 0, "the stuck client gone")


async def test_a_silent_session_times_out_and_a_stopped_stream_closes_its_clients(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server([*RTSP, "--rtsp-session-timeout", "2"])
    async with Session.connect(server.ws_url) as publishing:
        publisher = await publishing.publish("cam1", codec="VP8", width=320, height=240)
        url = rtsp_url(server)
        idle = await RawClient.open(server)  # connects and says nothing
        silent = await RawClient.open(server)
        session, _ = await play_interleaved(silent, url)
        status, headers, _ = await silent.request("GET_PARAMETER", url, {"Session": session})
        assert headers["session"].endswith(";timeout=2")
        started = asyncio.get_running_loop().time()
        assert await silent.closed_by_server(10)  # it only reads from here on: closed after the timeout
        assert asyncio.get_running_loop().time() - started >= 1.5
        await wait_for(lambda: health(server)["rtsp"]["clients"] == 0, "the silent client gone")
        assert await idle.closed_by_server(10)
        idle.close()

        watcher = await RawClient.open(server)
        await play_interleaved(watcher, url)
        await watcher.read_frames(10)
        await publisher.stop()
        assert await watcher.closed_by_server(10)
        silent.close()
        watcher.close()
    client = await RawClient.open(server)
    status, _h, _b = await client.request("DESCRIBE", url)
    assert status == 404
    client.close()


# --- authorization ------------------------------------------------------------------------------------


async def test_unknown_stream_is_404(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(RTSP)
    client = await RawClient.open(server)
    for uri in (rtsp_url(server, "nope"), rtsp_url(server, "..%2f..%2fetc"), server.urls["rtsp"] + "/a/b/c"):
        status, _h, _b = await client.request("DESCRIBE", uri)
        assert status == 404, uri
    status, _h, _b = await client.request("SETUP", rtsp_url(server, "nope") + "/trackID=0",
                                          {"Transport": "RTP/AVP/TCP;interleaved=0-1"})
    assert status == 404
    client.close()
    code, _probed, err = await ffprobe_url(rtsp_url(server, "nope"), "tcp")
    assert code != 0 and "404" in err


async def test_the_playrtsp_hook_refusal_is_403(start_server: Callable[..., ServerProcess], backend: Backend) -> None:
    server = start_server([*RTSP, "--rtsp-app-key", "rtspKey"])
    server.add_app("rtspApp", "rtspKey", backend.url)
    backend.on("playRTSP", transform=lambda body: (200, body) if body.get("token") == "s3cret"
               else (403, {"info": "bad token"}))
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=320, height=240, audio=False)
        client = await RawClient.open(server)
        status, _h, _b = await client.request("DESCRIBE", rtsp_url(server) + "?token=wrong")
        assert status == 403
        call = backend.wait_for("playRTSP")
        assert call.body["name"] == "cam1" and call.body["token"] == "wrong"
        assert call.body["mediaProvider"] == "RTSP" and call.body["appKey"] == "rtspKey"
        client.close()
        code, _probed, err = await ffprobe_url(rtsp_url(server), "tcp")
        assert code != 0 and "403" in err
        code, probed, err = await ffprobe_url(rtsp_url(server) + "?token=s3cret", "tcp")
        assert code == 0, err
        assert probed["streams"][0]["codec_name"] == "h264"
        assert health(server)["rtsp"]["refused"] >= 2


@pytest.mark.parametrize("mode", ["basic", "digest"])
async def test_rtsp_authentication(start_server: Callable[..., ServerProcess], mode: str) -> None:
    server = start_server([*RTSP, "--rtsp-auth", mode], env={"STREAMING_RTSP_USERS": "alice:s3cret,bob:pw"})
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=320, height=240, audio=False)
        client = await RawClient.open(server)
        status, headers, _ = await client.request("DESCRIBE", rtsp_url(server))
        assert status == 401 and headers["www-authenticate"].lower().startswith(mode)
        status, _h, _b = await client.request("OPTIONS", rtsp_url(server))
        assert status == 200  # OPTIONS needs no credentials
        client.close()
        code, _probed, err = await ffprobe_url(rtsp_url(server), "tcp")
        assert code != 0 and "401" in err
        code, _probed, err = await ffprobe_url(rtsp_url(server, credentials="alice:wrong"), "tcp")
        assert code != 0
        for transport in ("tcp", "udp"):
            code, probed, err = await ffprobe_url(rtsp_url(server, credentials="alice:s3cret"), transport)
            assert code == 0, err
            assert probed["streams"][0]["codec_name"] == "h264" and probed["streams"][0]["width"] == 320
