"""Recording through a real server: the official WebSDK in Chromium publishes with `record: true` (H.264
and VP8 runs) and ffprobe/ffmpeg check the file; a `kill -9` of the server mid-recording leaves a file
that plays up to its last fragment; an unwritable records folder and a full disk (real mounts, in a
mount namespace of the server's own) fail the recording with an event while the stream goes on; the REST
recorder API; records listed and served with ranges; hostile names and symlinks."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streaming.client import Session
from tests.support.backend import Backend
from tests.support.browser import Browser, browser_fixture, chromium_fixture  # noqa: F401
from tests.support.server import REPO, ServerProcess
from tests.test_record_writer import probe
from tests.test_websdk_streaming import STRIP, StreamingPage

FAST = ["--record-fragment-duration", "1", "--record-keyframe-interval", "2"]


def post(server: ServerProcess, path: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(server.rest_url + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def get(server: ServerProcess, path: str, headers: dict[str, str] | None = None,
        method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(server.rest_url + path, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        time.sleep(0.1)  # poll interval of a condition with a deadline


def records(server: ServerProcess) -> dict[str, dict[str, Any]]:
    status, found = post(server, "/rest-api/record/find_all", {})
    return {} if status == 404 else {r["fileName"]: r for r in found}


def recordings(server: ServerProcess) -> list[dict[str, Any]]:
    status, found = post(server, "/rest-api/recorder/find_all", {})
    return [] if status == 404 else found


def decode(path: Path) -> dict[str, int]:
    """Frames of each kind the file decodes to, and the lines of decoding errors."""
    done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0", "-fps_mode",
                           "passthrough", "-f", "framemd5", "-"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kinds: dict[str, int] = {}
    for line in done.stdout.splitlines():
        if line.startswith("#stream#") or not line or line.startswith("#"):
            continue
        index = line.split(",", 1)[0].strip()
        kinds[index] = kinds.get(index, 0) + 1
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    return {"video": kinds.get("0", 0), "audio": kinds.get("1", 0), "errors": len(errors)}


class MountedServer(ServerProcess):
    """The server in a mount namespace of its own, with a tmpfs (`options`: e.g. "ro" or "size=300k")
    mounted on its records folder: a real read-only folder or a real full disk, for root too, and
    invisible to the rest of the machine."""

    def __init__(self, data_dir: Path, records: Path, options: str, extra_args: list[str] | None = None):
        super().__init__(data_dir, [*(extra_args or []), "--record-dir", str(records)])
        self.records = records
        self.options = options

    def command(self) -> list[str]:
        self.records.mkdir(parents=True, exist_ok=True)
        inner = " ".join(shlex.quote(part) for part in super().command())
        mount = f"mount -t tmpfs -o {shlex.quote(self.options)} recordtest {shlex.quote(str(self.records))}"
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", f"{mount} && exec {inner}"]


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Callable[..., MountedServer]]:
    started: list[MountedServer] = []

    def start(options: str, extra_args: list[str] | None = None) -> MountedServer:
        server = MountedServer(tmp_path / "server", tmp_path / "records", options, extra_args)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


def stream_events(session: Session, event_type: str) -> list[dict[str, Any]]:
    return [m["data"][0] for m in session.messages
            if m.get("message") == "notifyStreamEvent" and m["data"][0].get("type") == event_type]


# ---------------------------------------------------------------------------------------------------------
# The WebSDK publishes with record: true


@pytest.mark.parametrize("codec", ["H264", "VP8"])
def test_websdk_publish_with_record_gives_a_file_of_the_stream(start_server: Callable[..., ServerProcess],
                                                               backend: Backend, browser: Browser,
                                                               tmp_path: Path, codec: str) -> None:
    server = start_server(FAST)
    server.add_app("rec", "recKey", backend.url)
    page = StreamingPage(browser, server).open()
    page.connect("pub", "recKey")
    options = {"name": "cam1", "record": True, "constraints": {"audio": True, "video": True},
               "stripCodecs": STRIP[codec]}
    page.b.js("window.__m.stream(arguments[0], arguments[1], arguments[2], true)", "pub", "cam", options)
    page.wait("cam", "PUBLISHING")
    record_name = page.b.js("return window.__m.streams['cam'].getRecordInfo()")
    extension = ".mp4" if codec == "H264" else ".webm"
    assert isinstance(record_name, str) and record_name.startswith("cam1-") and record_name.endswith(extension)
    started = time.monotonic()
    wait_until(lambda: record_name in records(server) and records(server)[record_name]["recording"],
               "the record listed as in progress")
    time.sleep(max(0.0, 10.0 - (time.monotonic() - started)))  # the scenario itself: 10 s of recording
    page.stop("cam")
    page.wait("cam", "UNPUBLISHED")
    wait_until(lambda: not records(server)[record_name]["recording"], "the record finished")

    # The backend saw the name in the stream's statuses, and the recording's start and end.
    statuses = [c.body for c in backend.hooks("StreamStatusEvent") if c.body.get("published")]
    assert {s["status"] for s in statuses} >= {"PUBLISHING", "UNPUBLISHED"}
    assert all(s["recordName"] == record_name and s["record"] in (True, False) for s in statuses)
    stopped = backend.wait_for("RecordingStatusEvent", lambda c: c.body["status"] == "STOPPED").body
    assert stopped["recordName"] == record_name and stopped["name"] == "cam1" and stopped["size"] > 10_000
    assert backend.wait_for("RecordingStatusEvent", lambda c: c.body["status"] == "STARTED").body["appKey"] == "recKey"

    # Served over HTTP, whole and in ranges, the same bytes as on disk.
    on_disk = (server.data_dir / "records" / record_name).read_bytes()
    status, headers, body = get(server, f"/client/records/{record_name}")
    assert status == 200 and body == on_disk and headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == ("video/mp4" if codec == "H264" else "video/webm")
    status, headers, body = get(server, f"/client/records/{record_name}", {"Range": "bytes=100-1099"})
    assert status == 206 and body == on_disk[100:1100]
    assert headers["Content-Range"] == f"bytes 100-1099/{len(on_disk)}"
    status, headers, body = get(server, f"/client/records/{record_name}", {"Range": "bytes=-64"})
    assert status == 206 and body == on_disk[-64:]
    status, headers, _ = get(server, f"/client/records/{record_name}", {"Range": f"bytes={len(on_disk)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(on_disk)}"
    status, headers, body = get(server, f"/client/records/{record_name}", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) == len(on_disk)

    # About 10 s of decodable video and audio.
    path = tmp_path / record_name
    path.write_bytes(on_disk)
    streams = probe(path)
    assert streams["video"]["codec_name"] == codec.lower() and streams["audio"]["codec_name"] == "opus"
    assert streams["video"]["width"] > 0 and streams["video"]["height"] > 0
    for kind in ("video", "audio"):
        assert 8.5 <= streams[kind]["span"] <= 11.5, (kind, streams[kind]["span"])
    frames = decode(path)
    assert frames["errors"] == 0, frames
    assert frames["video"] >= 8.5 * 10 and frames["audio"] >= 8.5 * 45, frames  # >= 10 fps; 20 ms Opus


# ---------------------------------------------------------------------------------------------------------
# kill -9 while recording


@pytest.mark.parametrize("codec", ["H264", "VP8"])
async def test_a_recording_survives_kill_9_of_the_server_up_to_its_last_fragment(
        start_server: Callable[..., ServerProcess], tmp_path: Path, codec: str) -> None:
    server = start_server(FAST)
    session = await Session.connect(server.ws_url)
    try:
        await session.publish("cam1", codec=codec, width=320, height=240, record=True)

        def long_enough() -> dict[str, Any] | None:
            found = recordings(server)
            return found[0] if found and found[0]["mediaSeconds"] >= 6.0 else None

        progress = await asyncio.to_thread(wait_until, long_enough, "6 s recorded", 40)
        assert server.proc is not None
        server.proc.kill()  # SIGKILL: no trailer, no index, nothing flushed on the way out
        server.proc.wait(10)
    finally:
        await session.close()
    record_name = progress["recordName"]
    path = server.data_dir / "records" / record_name
    streams = probe(path)
    # At most the fragment in progress (1 s) is lost, plus what the muxer held for interleaving.
    for kind in ("video", "audio"):
        assert streams[kind]["span"] >= progress["mediaSeconds"] - 1.0 - 0.5, (kind, streams[kind], progress)
    frames = decode(path)
    assert frames["errors"] == 0, frames
    assert frames["video"] >= (progress["mediaSeconds"] - 1.5) * 20, (frames, progress)


# ---------------------------------------------------------------------------------------------------------
# Failures: an unwritable folder, a full disk


async def watch_stream(server: ServerProcess, name: str) -> bool:
    """A viewer of `name` gets frames: the live stream goes on."""
    async with Session.connect(server.ws_url) as viewing:
        player = await viewing.play(name)
        await player.wait_frames(30, timeout=20)
    return True


async def test_an_unwritable_records_folder_fails_the_recording_and_the_stream_goes_on(
        mounted: Callable[..., MountedServer], backend: Backend) -> None:
    server = mounted("ro", FAST)
    server.add_app("rec", "recKey", backend.url)
    async with Session.connect(server.ws_url, app_key="recKey") as session:
        await session.publish("cam1", codec="VP8", width=320, height=240, record=True)
        await session.wait_for(lambda: bool(stream_events(session, "recordingFailed")), "recordingFailed", 15)
        event = stream_events(session, "recordingFailed")[0]
        assert event["name"] == "cam1" and event["payload"]["status"] == "FAILED"
        assert "Read-only file system" in event["payload"]["info"], event
        hook = backend.wait_for("RecordingStatusEvent", lambda c: c.body["status"] == "FAILED").body
        assert "Read-only file system" in hook["info"] and hook["mediaSessionId"] == event["mediaSessionId"]
        assert await watch_stream(server, "cam1")
        stream = next(iter(session.streams.values()))
        assert stream.status == "PUBLISHING"
    health = (await asyncio.to_thread(get, server, "/health"))[2]
    assert json.loads(health)["recordings"]["failed"] == 1
    assert records(server) == {}


async def test_a_full_disk_stops_the_recording_with_the_reason_and_the_stream_goes_on(
        mounted: Callable[..., MountedServer], tmp_path: Path) -> None:
    server = mounted("size=300k", FAST)
    async with Session.connect(server.ws_url) as session:
        await session.publish("cam1", codec="H264", width=640, height=480, record=True)
        await session.wait_for(lambda: bool(stream_events(session, "recordingFailed")), "recordingFailed", 60)
        event = stream_events(session, "recordingFailed")[0]
        assert event["payload"]["info"] == "Recording failed: No space left on device", event
        record_name = event["payload"]["recordName"]
        assert await watch_stream(server, "cam1")
        assert next(iter(session.streams.values())).status == "PUBLISHING"
        listed = records(server)[record_name]
        assert listed["size"] > 100_000 and not listed["recording"]
        # What fitted plays.
        status, _, body = get(server, f"/client/records/{record_name}")
        assert status == 200 and len(body) == listed["size"]
        (tmp_path / record_name).write_bytes(body)
        assert decode(tmp_path / record_name)["video"] > 10


# ---------------------------------------------------------------------------------------------------------
# REST recorder API and hostile input


async def test_rest_startup_and_terminate_record_a_live_stream(start_server: Callable[..., ServerProcess],
                                                               tmp_path: Path) -> None:
    server = start_server(FAST)
    async with Session.connect(server.ws_url) as session:
        await session.publish("cam1", codec="H264", width=320, height=240)
        stream = next(iter(session.streams.values()))
        assert stream.events[-1]["record"] is False and "recordName" not in stream.events[-1]
        assert post(server, "/rest-api/recorder/startup", {"name": "nope"})[0] == 404
        assert post(server, "/rest-api/recorder/startup", {"mediaSessionId": "nope"})[0] == 404
        assert post(server, "/rest-api/recorder/startup", {"name": 5})[0] == 400
        assert post(server, "/rest-api/recorder/startup", b"[1]")[0] == 400
        status, started = post(server, "/rest-api/recorder/startup", {"mediaSessionId": stream.media_session_id})
        assert status == 200 and started["recordName"].endswith(".mp4") and started["startedBy"] == "rest"
        assert post(server, "/rest-api/recorder/startup", {"name": "cam1"})[0] == 409
        await session.wait_for(lambda: bool(stream_events(session, "recordingStarted")), "recordingStarted", 10)
        await asyncio.to_thread(wait_until, lambda: recordings(server) and recordings(server)[0]["mediaSeconds"] >= 3,
                                "3 s recorded", 30)
        status, done = post(server, "/rest-api/recorder/terminate", {"name": "cam1"})
        assert status == 200 and done["ok"] is True and done["state"] == "STOPPED" and done["size"] > 0
        await session.wait_for(lambda: bool(stream_events(session, "recordingStopped")), "recordingStopped", 10)
        assert post(server, "/rest-api/recorder/terminate", {"name": "cam1"})[0] == 404
        assert recordings(server) == []
    path = server.data_dir / "records" / started["recordName"]
    streams = probe(path)
    assert 2.5 <= streams["video"]["span"] <= 6 and streams["audio"]["codec_name"] == "opus"
    assert decode(path)["errors"] == 0


async def raw_get(server: ServerProcess, target: str) -> int:
    """A request line sent as it is (clients normalize `..` away; attackers do not)."""
    port = int(server.rest_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return int(data.split(b" ", 2)[1])


def test_a_template_that_leaves_the_folder_stops_the_server_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run([*ServerProcess(tmp_path / "bad").command(), "--record-template", "../{streamName}"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and "record.template" in done.stderr and "--record-template" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


async def test_hostile_record_names_never_reach_outside_the_records_folder(
        start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server([*FAST, "--record-template", "{streamName}"])
    folder = server.data_dir / "records"
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not yours")
    (folder / "cam9.mp4").symlink_to(secret)  # planted under the next record's name, and served if followed
    (folder / "link.mp4").symlink_to(server.data_dir / "streaming.sqlite3")
    async with Session.connect(server.ws_url) as session:
        await session.publish("cam9", codec="H264", width=320, height=240, record=True)
        stream = next(iter(session.streams.values()))
        assert stream.events[-1]["recordName"] == "cam9-1.mp4"
    assert secret.read_bytes() == b"not yours"  # the symlink was not written through
    await asyncio.to_thread(wait_until, lambda: "cam9-1.mp4" in records(server)
                            and not records(server)["cam9-1.mp4"]["recording"], "the record finished")
    assert set(records(server)) == {"cam9-1.mp4"}  # symlinks are not listed
    assert (await asyncio.to_thread(get, server, "/client/records/cam9-1.mp4"))[0] == 200
    for target in ("/client/records/cam9.mp4", "/client/records/link.mp4", "/client/records/../streaming.sqlite3",
                   "/client/records/..%2Fstreaming.sqlite3", "/client/records/%2e%2e%2fstreaming.sqlite3",
                   "/client/records/%2Fetc%2Fpasswd", "/client/records/cam9-1.mp4%00", "/client/records/.",
                   "/client/records/..", "/client/records/%00", "/client/records/" + "a" * 5000 + ".mp4",
                   "/client/records//etc/passwd", "/client/records/cam9-1.mp4/..", "/client/records/"):
        status = await raw_get(server, target)
        assert status in (404, 400, 414), (target, status)
    # The server is still fine.
    assert (await asyncio.to_thread(get, server, "/client/records/cam9-1.mp4"))[0] == 200
