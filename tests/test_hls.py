"""HLS output through a real server: a publisher (the aiortc test client) -> http://host:port/{name}/{name}.m3u8
-> ffprobe; on-demand start and idle stop, EXT-X-ENDLIST and clean-up, the playHLS hook, LL-HLS parts and
blocking reload, and the HTTP details players and CDNs expect (CORS, types, caching, HEAD, ranges, 404s)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streaming.client import Session
from tests.support.backend import Backend
from tests.support.server import ServerProcess

FAST = ["--hls-segment-duration", "1", "--hls-window", "3", "--hls-part-duration", "0.3"]


def health(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.rest_url + "/health", timeout=5) as resp:
        return json.loads(resp.read())


def rest(server: ServerProcess, path: str) -> Any:
    request = urllib.request.Request(server.rest_url + path, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20.0, every: float = 0.1) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def get(url: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, **kwargs) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def raw_request(server: ServerProcess, target: str, method: str = "GET") -> tuple[int, bytes]:
    """A request line sent as it is (clients normalize `..` away; attackers do not)."""
    port = int(server.urls["hls"].rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def playlist(server: ServerProcess, name: str, query: str = "", timeout: float = 30.0) -> str:
    """The playlist once it lists a segment (the first request starts the output: 503 until then)."""
    url = f"{server.urls['hls']}/{name}/{name}.m3u8{query}"

    async def ready() -> str | None:
        status, _headers, body = await get(url)
        assert status in (200, 503), (status, body)
        text = body.decode()
        return text if status == 200 and "#EXTINF" in text else None

    return await wait_for(ready, f"a playlist with a segment at {url}", timeout, every=0.3)


def uris(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def ffprobe(path: Path) -> dict[str, Any]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def hls_files(server: ServerProcess) -> list[Path]:
    root = server.data_dir / "hls"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize("codec", ["H264", "VP8"])
async def test_a_published_stream_plays_as_hls_h264_and_aac_at_the_publishers_size(
        start_server: Callable[..., ServerProcess], tmp_path: Path, codec: str) -> None:
    server = start_server(FAST)
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec=codec, width=320, height=240)
        assert health(server)["hls"]["outputs"] == 0  # on demand: nothing until asked
        text = await playlist(server, "cam1")
        for tag in ("#EXTM3U", "#EXT-X-TARGETDURATION:", "#EXT-X-MEDIA-SEQUENCE:", "#EXT-X-PROGRAM-DATE-TIME:"):
            assert tag in text
        assert "#EXT-X-ENDLIST" not in text
        status, headers, body = await get(f"{server.urls['hls']}/cam1/{uris(text)[0]}")
        assert status == 200 and headers["Content-Type"] == "video/mp2t"
        assert body[0] == 0x47  # an MPEG-TS sync byte
        segment = tmp_path / "segment.ts"
        segment.write_bytes(body)
        streams = {s["codec_type"]: s for s in ffprobe(segment)["streams"]}
        assert streams["video"]["codec_name"] == "h264"
        assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
        assert streams["audio"]["codec_name"] == "aac"
        # H.264 is remuxed as it came; VP8 goes through the shared transcoder; Opus always to AAC.
        assert health(server)["transcoders"]["active"] == (1 if codec == "H264" else 2)
        transcoders = rest(server, "/rest-api/transcoder/find_all")
        assert sorted((t["source"], t["target"]["codec"]) for t in transcoders) == sorted(
            [("opus", "AAC")] + ([] if codec == "H264" else [("VP8", "H264")]))
        assert all(t["stream"] == "cam1" and t["users"] == 1 and t["frames_out"] > 0 for t in transcoders)
        (output,) = rest(server, "/rest-api/hls/find_all")
        assert output["streamName"] == "cam1" and output["status"] == "ACTIVE" and output["segments"] >= 1
        assert sorted(output["sources"]) == ["AAC", "H264"]


async def test_the_window_slides_old_segments_are_deleted_and_the_end_is_marked(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server([*FAST, "--hls-idle-timeout", "2"])
    async with Session.connect(server.ws_url) as publishing:
        publisher = await publishing.publish("cam1", codec="H264", width=320, height=240)
        first = await playlist(server, "cam1")
        first_sequence = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", first).group(1))  # type: ignore[union-attr]

        async def slid() -> str | None:
            _status, _h, body = await get(f"{server.urls['hls']}/cam1/cam1.m3u8")
            text = body.decode()
            sequence = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))  # type: ignore[union-attr]
            return text if sequence >= first_sequence + 4 else None

        text = await wait_for(slid, "the window to slide by 4 segments", 30, every=0.5)
        assert len(uris(text)) <= 3
        gone = uris(first)[0]
        status, _h, _b = await get(f"{server.urls['hls']}/cam1/{gone}")
        assert status == 404
        names = {p.name for p in hls_files(server)}
        assert gone not in names and len([n for n in names if n.endswith(".ts")]) <= 3 + 3  # window + grace

        await publisher.stop(wait=True)

        async def ended() -> bool:
            _status, _h, body = await get(f"{server.urls['hls']}/cam1/cam1.m3u8")
            return body.decode().rstrip().endswith("#EXT-X-ENDLIST")

        await wait_for(ended, "EXT-X-ENDLIST after the publisher stopped", 15, every=0.3)
        # Once players had time to read the end, the files go.
        await wait_for(lambda: not hls_files(server), "the segments to be deleted", 30, every=0.5)
        await wait_for(lambda: health(server)["hls"]["outputs"] == 0, "the output to close", 10)
        status, _h, _b = await get(f"{server.urls['hls']}/cam1/cam1.m3u8")
        assert status == 404


async def test_an_on_demand_output_stops_when_nobody_asks(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server([*FAST, "--hls-idle-timeout", "2"])
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=320, height=240, audio=False)
        await playlist(server, "cam1")
        assert health(server)["hls"]["outputs"] == 1
        await wait_for(lambda: health(server)["hls"]["outputs"] == 0, "the idle output to stop", 20, every=0.5)
        assert not hls_files(server)
        await playlist(server, "cam1")  # and it starts again when asked


async def test_always_mode_starts_at_publish(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server([*FAST, "--hls-start", "always"])
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=320, height=240, audio=False)
        await wait_for(lambda: any(p.suffix == ".ts" for p in hls_files(server)), "a segment without requests", 20)
        assert health(server)["hls"]["requests"] == 0


async def test_the_playhls_hook_decides_with_the_token(start_server: Callable[..., ServerProcess],
                                                       backend: Backend) -> None:
    server = start_server([*FAST, "--hls-app-key", "hlsKey"])
    server.add_app("hlsApp", "hlsKey", backend.url)
    backend.on("playHLS", status=403, body={"info": "bad token"})
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=320, height=240, audio=False)
        base = f"{server.urls['hls']}/cam1/cam1.m3u8"
        status, _h, _b = await get(base + "?token=wrong")
        assert status == 403
        call = backend.wait_for("playHLS")
        assert call.body["name"] == "cam1" and call.body["token"] == "wrong"
        assert call.body["mediaProvider"] == "HLS" and call.body["appKey"] == "hlsKey"
        assert {"nodeId", "sessionId", "mediaSessionId"} <= set(call.body)
        assert health(server)["hls"]["outputs"] == 0  # a refused request starts nothing

        backend.on("playHLS", transform=lambda body: (200, body) if body.get("token") == "s3cret"
                   else (403, {"info": "bad token"}))
        text = await playlist(server, "cam1", "?token=s3cret")
        assert all(uri.endswith("&token=s3cret") for uri in uris(text))  # segments are asked with it
        status, _h, _b = await get(f"{server.urls['hls']}/cam1/{uris(text)[0]}")
        assert status == 200
        status, _h, _b = await get(f"{server.urls['hls']}/cam1/{uris(text)[0].split('?')[0]}")
        assert status == 403  # a segment without the token is refused like the playlist
        status, _h, _b = await get(base + "?token=wrong")
        assert status == 403


async def test_http_details_cors_types_caching_head_and_ranges(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(FAST)
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=320, height=240)
        text = await playlist(server, "cam1")
        base = f"{server.urls['hls']}/cam1"
        status, headers, _body = await get(f"{base}/cam1.m3u8", headers={"Origin": "http://elsewhere.example"})
        assert status == 200
        assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "no-cache" in headers["Cache-Control"]

        segment = f"{base}/{uris(text)[0]}"
        status, headers, body = await get(segment)
        assert status == 200 and "max-age" in headers["Cache-Control"]
        async with aiohttp.ClientSession() as http:
            async with http.head(segment) as resp:
                assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(body)
                assert await resp.read() == b""
            async with http.get(segment, headers={"Range": "bytes=188-375"}) as resp:
                assert resp.status == 206
                assert resp.headers["Content-Range"] == f"bytes 188-375/{len(body)}"
                assert await resp.read() == body[188:376]
            async with http.options(segment, headers={"Origin": "http://elsewhere.example",
                                                      "Access-Control-Request-Method": "GET",
                                                      "Access-Control-Request-Headers": "range"}) as resp:
                assert resp.status == 204
                assert "Range" in resp.headers["Access-Control-Allow-Headers"]
            async with http.post(segment) as resp:
                assert resp.status == 405
        status, headers, _body = await get(f"{base}/cam1.m3u8?_HLS_msn=abc")
        assert status in (200, 400)  # regular HLS ignores blocking reload; LL-HLS says 400


async def test_unknown_streams_and_hostile_paths_get_the_same_404(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(FAST)
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="H264", width=320, height=240, audio=False)
        await playlist(server, "cam1")
        (server.data_dir / "secret.txt").write_text("secret")
        output_dir = next(p for p in (server.data_dir / "hls").iterdir() if p.is_dir())
        os.symlink("/etc/passwd", output_dir / "evil.ts")
        os.symlink(server.data_dir / "secret.txt", output_dir / "cam1-evil.ts")
        answers = {}
        for target in ["/nosuch/nosuch.m3u8", "/cam1/nosuch.ts", "/cam1/evil.ts", "/cam1/cam1-evil.ts",
                       "/../../etc/passwd", "/cam1/../../secret.txt", "/%2e%2e/%2e%2e/etc/passwd",
                       "/cam1/%2e%2e%2f%2e%2e%2fsecret.txt", "/cam1/..%2F..%2Fstreaming.sqlite3",
                       "/cam1/%00", "/cam1/cam1.m3u8%00", "/cam1%00/cam1.m3u8", "/cam1/" + "a" * 5000,
                       "/cam1", "/", "/cam1/cam1.m3u8/x"]:
            answers[target] = await raw_request(server, target)
        bodies = {body for status, body in answers.values() if status == 404}
        assert all(status == 404 for status, _ in answers.values()), answers
        assert len(bodies) == 1, bodies
        assert b"secret" not in next(iter(bodies)) and b"root:" not in next(iter(bodies))


async def test_ll_hls_parts_and_blocking_reload(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server([*FAST, "--hls-mode", "llhls"])
    async with Session.connect(server.ws_url) as publishing:
        await publishing.publish("cam1", codec="VP8", width=320, height=240)
        text = await playlist(server, "cam1")
        for tag in ("#EXT-X-PART-INF:PART-TARGET=", "#EXT-X-SERVER-CONTROL:", "CAN-BLOCK-RELOAD=YES",
                    "#EXT-X-PART:", "#EXT-X-PRELOAD-HINT:", "#EXT-X-MAP:"):
            assert tag in text, tag
        base = f"{server.urls['hls']}/cam1"
        init_uri = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text).group(1)  # type: ignore[union-attr]
        status, headers, init = await get(f"{base}/{init_uri}")
        assert status == 200 and headers["Content-Type"] == "video/mp4"
        status, _h, segment = await get(f"{base}/{uris(text)[0]}")
        assert status == 200
        (tmp_path / "whole.mp4").write_bytes(init + segment)
        streams = {s["codec_type"]: s for s in ffprobe(tmp_path / "whole.mp4")["streams"]}
        assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
        assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)

        # Ask for the part after the last one listed: the answer waits until it exists.
        sequence = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))  # type: ignore[union-attr]
        msn, part = next_part(text, sequence)
        started = time.monotonic()
        status, _h, body = await get(f"{base}/cam1.m3u8?_HLS_msn={msn}&_HLS_part={part}")
        waited = time.monotonic() - started
        assert status == 200
        assert (msn, part) in listed_parts(body.decode(), sequence_of(body.decode()))
        assert waited < 3 * 0.3 + 1.0, waited  # answered as the part appeared, not a segment later
        status, _h, _b = await get(f"{base}/cam1.m3u8?_HLS_msn={msn + 50}")
        assert status == 400


def sequence_of(text: str) -> int:
    return int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))  # type: ignore[union-attr]


def listed_parts(text: str, sequence: int) -> list[tuple[int, int]]:
    """(msn, part index) of every EXT-X-PART, in order."""
    out = []
    msn, index = sequence, 0
    for line in text.splitlines():
        if line.startswith("#EXT-X-PART:"):
            out.append((msn, index))
            index += 1
        elif line and not line.startswith("#"):
            msn, index = msn + 1, 0
    return out


def next_part(text: str, sequence: int) -> tuple[int, int]:
    parts = listed_parts(text, sequence)
    segments = len(uris(text))
    last_msn, last_index = parts[-1]
    if last_msn < sequence + segments:  # the last part closed a segment: the next starts a new one
        return sequence + segments, 0
    return last_msn, last_index + 1
