"""Recording of published streams: `record: true` in publishStream, or the REST API for a live stream;
the records folder listed and served over HTTP.

A publisher asking for `record: true` gets its file name at once (created empty in the records folder,
so the name is taken), reported as `recordName` in every status it and the backend see; the recording
starts when the stream is PUBLISHING and ends when it stops. `/rest-api/recorder/startup` and
`/terminate` do the same for a live stream, by mediaSessionId or stream name.

Frames come from the routing core as they are (`Stream.frames`: the same taps HLS uses), remuxed by
media.record.Recorder in its own thread. When the file cannot be written (an unwritable folder, a full
disk) the recording stops, the stream goes on, and the reason goes
- to the publisher's client: `notifyStreamEvent` with type `recordingFailed` and
  payload {recordName, info} (the WebSDK fires STREAM_EVENT on the stream);
- to the backend: the `RecordingStatusEvent` hook, status FAILED with `info`.
RecordingStatusEvent also reports STARTED and STOPPED (with the file's size and duration), and a
recording started or stopped over REST tells the client `recordingStarted` / `recordingStopped`.

HTTP on the REST port:
- POST /rest-api/recorder/startup {"mediaSessionId"} or {"name"}: 200 with the recording; 404 when no
  such live stream; 409 when it is being recorded already.
- POST /rest-api/recorder/terminate {"mediaSessionId"} or {"name"}: 200 once the file is finished; 404.
- POST /rest-api/recorder/find_all: the recordings in progress.
- POST /rest-api/record/find_all: the files in the records folder (name, size, modified, recording).
- GET|HEAD /client/records/{fileName}: the file, with byte ranges (the URL the WebSDK's
  stream_recording example links to). Anything that is not one of our files there is a 404.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from aiohttp import web

from media.encoded import FrameSource
from media.record import Recorder, RecordResult, RecordSettings, container_for
from media.stream import Stream

from . import protocol
from .byte_range import Unsatisfiable, parse_range
from .config import Config, ConfigError
from .records import NameTemplate, RecordNotFound, RecordsFolder, TemplateError, content_type, template_values

if TYPE_CHECKING:
    from .streams import MediaSession

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
STOP_TIMEOUT = 10.0  # seconds shutdown waits for recordings to finish their files


@dataclass
class Recording:
    stream: Stream
    ms: MediaSession | None  # the publisher's media session, when a client publishes the stream
    name: str  # the file's name in the records folder
    file: BinaryIO | None
    video: str | None
    audio: str | None
    audio_channels: int
    by: str  # "publisher" | "rest"
    recorder: Recorder | None = None
    subscriptions: list[tuple[FrameSource, Any]] = field(default_factory=list)
    started_at: float = 0.0  # time.time()
    state: str = "PENDING"  # PENDING (waiting for PUBLISHING) | RECORDING | STOPPING | STOPPED | FAILED
    result: RecordResult | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    end_listener: Callable[[Stream], None] | None = None  # registered with the stream

    def describe(self) -> dict[str, Any]:
        recorder = self.recorder
        out: dict[str, Any] = {
            "name": self.stream.name, "recordName": self.name, "state": self.state, "startedBy": self.by,
            "startTime": int(self.started_at * 1000),
            "frames": recorder.writer.frames if recorder is not None else 0,
            "dropped": recorder.dropped if recorder is not None else 0,
            "queued": recorder.queued if recorder is not None else 0,
            "mediaSeconds": round(recorder.writer.media_seconds, 3) if recorder is not None else 0.0,
        }
        if self.ms is not None:
            out["mediaSessionId"] = self.ms.id
        return out


class PublishedStreams(Protocol):
    """How recordings find live streams and their publishers (streaming/streams.py's StreamService)."""

    def published(self, name: str) -> Stream | None: ...

    def media_session(self, msid: str) -> MediaSession | None: ...

    def publisher(self, name: str) -> MediaSession | None: ...


class RecordingService:
    """`streams`: where live streams are looked up (REST requests); `now`: the media clock (loop time)."""

    def __init__(self, config: Config, streams: PublishedStreams, now: Callable[[], float]):
        self.streams = streams
        self.node_id = config.node_id
        self._now = now
        try:
            self.template = NameTemplate.parse(config["record.template"])
            self.settings = RecordSettings(fragment_duration=config["record.fragment_duration"],
                                           keyframe_interval=config["record.keyframe_interval"])
        except (TemplateError, ValueError) as exc:
            raise ConfigError(f"record settings: {exc}") from None
        configured = config["record.dir"]
        self.folder = RecordsFolder(configured if configured is not None else config.data_dir / "records")
        self.active: dict[Stream, Recording] = {}
        # A publisher's recording that could not start: told to it once the stream is published.
        self._pending_failures: dict[Stream, tuple[MediaSession, str]] = {}
        self.started = 0
        self.failed = 0

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        problem = self.folder.ensure()
        if problem is not None:
            log.warning("%s: recordings will fail until it can be written", problem)

    async def shutdown(self) -> None:
        """Finish every file (the muxers write their index) before the server exits."""
        recordings = list(self.active.values())
        for recording in recordings:
            self._stop(recording)
        deadline = time.monotonic() + STOP_TIMEOUT
        for recording in recordings:
            if recording.recorder is not None:
                await asyncio.to_thread(recording.recorder.join, max(0.0, deadline - time.monotonic()))

    # -- publishStream with record: true -----------------------------------------------------------

    def prepare(self, ms: MediaSession) -> None:
        """The publisher asked for a recording: take its file name now (reported from PUBLISHING on);
        it starts when the stream is published. A failure to create the file is reported then."""
        assert ms.stream is not None
        ms.record = True
        recording = self._new(ms.stream, ms, "publisher")
        if recording is not None:
            recording.state = "PENDING"
            self.active[ms.stream] = recording
            self._watch_end(recording)

    def stream_published(self, stream: Stream) -> None:
        recording = self.active.get(stream)
        if recording is not None and recording.state == "PENDING":
            self._begin(recording)
        elif recording is None:
            self._report_pending_failure(stream)

    def _stream_ended(self, recording: Recording) -> None:
        """The stream is gone: its recording finishes the file, or a reservation never used goes."""
        stream = recording.stream
        if self.active.get(stream) is not recording:
            return
        if recording.state == "PENDING":  # never published: the empty reservation goes
            del self.active[stream]
            if recording.file is not None:
                recording.file.close()
            self.folder.remove(recording.name)
            recording.state = "STOPPED"
            recording.finished.set()
            return
        self._stop(recording)

    # -- steps -------------------------------------------------------------------------------------

    def _new(self, stream: Stream, ms: MediaSession | None, by: str) -> Recording | None:
        """Create the file of a new recording; None (and the failure kept for later) when it cannot be."""
        video = stream.track("video")
        audio = stream.track("audio")
        video_codec = video.codec.name if video is not None else None
        audio_codec = audio.codec.name if audio is not None else None
        try:
            container = container_for(video_codec, audio_codec)
        except ValueError as exc:
            self._remember_failure(stream, ms, f"Recording failed: {exc}")
            return None
        session = ms.session if ms is not None else None
        values = template_values(stream.name, ms.id if ms is not None else f"rest-{int(time.time())}",
                                 session.id if session is not None else "", session.app.app_key if session else "",
                                 self.node_id)
        stem = self.template.render(values)
        try:
            name, file = self.folder.create(stem, container.extension)
        except (OSError, ValueError) as exc:
            reason = f"Recording failed: cannot create a file in the records folder: {_strerror(exc)}"
            self._remember_failure(stream, ms, reason)
            return None
        channels = int(audio.codec.parameters.get("channels", 2) or 2) if audio is not None else 2
        if ms is not None:
            ms.record_name = name
        return Recording(stream, ms, name, file, video_codec, audio_codec, channels, by)

    def _watch_end(self, recording: Recording) -> None:
        """Once active, a recording learns the end of its stream from the stream (at once if it ended)."""
        if recording.end_listener is None:
            recording.end_listener = lambda _stream: self._stream_ended(recording)
            recording.stream.on_end(recording.end_listener)

    def _remember_failure(self, stream: Stream, ms: MediaSession | None, reason: str) -> None:
        log.warning("recording of %r cannot start: %s", stream.name, reason)
        self.failed += 1
        if ms is not None:
            self._pending_failures[stream] = (ms, reason)
            stream.on_end(self._forget_failure)  # never published: nobody to tell

    def _forget_failure(self, stream: Stream) -> None:
        self._pending_failures.pop(stream, None)

    def _report_pending_failure(self, stream: Stream) -> None:
        pending = self._pending_failures.pop(stream, None)
        stream.remove_end_listener(self._forget_failure)
        if pending is not None:
            ms, reason = pending
            ms.record = False
            self._tell(ms, "recordingFailed", "FAILED", None, reason)

    def _begin(self, recording: Recording) -> None:
        assert recording.file is not None
        stream = recording.stream
        container = container_for(recording.video, recording.audio)
        recorder = Recorder(recording.file, container, recording.video, recording.audio, self.settings,
                            on_done=lambda result: self._done(recording, result), label=stream.name,
                            audio_channels=recording.audio_channels)
        recording.file = None  # the recorder owns it now
        recording.recorder = recorder
        recording.state = "RECORDING"
        recording.started_at = time.time()
        self.active[stream] = recording
        self.started += 1
        now = self._now()
        for kind in ("video", "audio"):
            if (recording.video if kind == "video" else recording.audio) is None:
                continue
            try:
                source = stream.frames(kind, now)
            except LookupError:
                continue
            source.subscribe(recorder.push)
            recording.subscriptions.append((source, recorder.push))
            if kind == "video":
                recorder.on_keyframe_needed = lambda source=source: source.request_keyframe(self._now())
        log.info("recording %r to %s (%s)", stream.name, recording.name, recording.by)
        if recording.ms is not None:
            recording.ms.record = True
            self._report(recording, "STARTED")
            if recording.by == "rest":
                self._tell(recording.ms, "recordingStarted", "STARTED", recording.name, None)
        self._watch_end(recording)

    def _unsubscribe(self, recording: Recording) -> None:
        for source, callback in recording.subscriptions:
            source.unsubscribe(callback)
        recording.subscriptions.clear()

    def _stop(self, recording: Recording) -> None:
        if recording.state != "RECORDING":
            return
        recording.state = "STOPPING"
        self._unsubscribe(recording)
        assert recording.recorder is not None
        recording.recorder.stop()

    def _done(self, recording: Recording, result: RecordResult) -> None:
        """The worker finished the file, or gave up (on the loop thread)."""
        recording.result = result
        self._unsubscribe(recording)
        if recording.end_listener is not None:
            recording.stream.remove_end_listener(recording.end_listener)
        if self.active.get(recording.stream) is recording:
            del self.active[recording.stream]
        stopping = recording.state == "STOPPING"
        recording.state = "STOPPED" if result.ok else "FAILED"
        recording.finished.set()
        ms = recording.ms
        if ms is not None:
            ms.record = False
        if not result.ok:
            self.failed += 1
            log.warning("recording of %r to %s failed: %s (the stream goes on)", recording.stream.name,
                        recording.name, result.reason)
            if ms is not None:
                self._report(recording, "FAILED", result.reason)
                self._tell(ms, "recordingFailed", "FAILED", recording.name, result.reason)
            return
        log.info("recording of %r to %s finished: %.1f s, %d bytes", recording.stream.name, recording.name,
                 result.media_seconds, result.bytes)
        if ms is not None:
            self._report(recording, "STOPPED")
            if recording.by == "rest" and stopping and not ms.ended:
                self._tell(ms, "recordingStopped", "STOPPED", recording.name, None)

    def _report(self, recording: Recording, status: str, info: str | None = None) -> None:
        ms = recording.ms
        if ms is None:
            return
        body: dict[str, Any] = {"mediaSessionId": ms.id, "name": ms.name, "recordName": recording.name,
                                "status": status, "startedBy": recording.by,
                                "startTime": int(recording.started_at * 1000)}
        if recording.result is not None:
            body["duration"] = round(recording.result.media_seconds * 1000)
            body["size"] = recording.result.bytes
        if info:
            body["info"] = info
        ms.session.report("RecordingStatusEvent", body)

    def _tell(self, ms: MediaSession, event_type: str, status: str, record_name: str | None,
              info: str | None) -> None:
        """A stream event to the publisher's client (and RecordingStatusEvent for a failure before the
        file existed)."""
        payload: dict[str, Any] = {"status": status}
        if record_name is not None:
            payload["recordName"] = record_name
        if info:
            payload["info"] = info
        obj = {"mediaSessionId": ms.id, "name": ms.name, "type": event_type, "payload": payload}
        asyncio.get_running_loop().create_task(ms.session.send(protocol.frame("notifyStreamEvent", obj)))
        if record_name is None and status == "FAILED":
            ms.session.report("RecordingStatusEvent", {"mediaSessionId": ms.id, "name": ms.name,
                                                       "status": "FAILED", "info": info})

    # -- REST --------------------------------------------------------------------------------------

    def _find_stream(self, body: dict[str, Any]) -> tuple[Stream, MediaSession | None] | None:
        msid, name = body.get("mediaSessionId"), body.get("name")
        streams = self.streams
        ms: MediaSession | None = None
        if isinstance(msid, str) and len(msid) <= 128:
            ms = streams.media_session(msid)
            if ms is None or not ms.published:
                return None
        elif isinstance(name, str) and len(name) <= 1024:
            ms = streams.publisher(name)
        else:
            raise ValueError("Field 'mediaSessionId' or 'name' (string) is required")
        if ms is not None:
            if ms.status != "PUBLISHING" or ms.stream is None or ms.stream.closed:
                return None
            return ms.stream, ms
        stream = streams.published(name) if isinstance(name, str) else None
        return (stream, None) if stream is not None else None

    async def rest_startup(self, body: dict[str, Any]) -> web.Response:
        try:
            found = self._find_stream(body)
        except ValueError as exc:
            return _error(400, str(exc))
        if found is None:
            return _error(404, "Stream not found")
        stream, ms = found
        if stream in self.active:
            return _error(409, "The stream is being recorded already")
        recording = self._new(stream, ms, "rest")
        if recording is None:
            failure = self._pending_failures.pop(stream, None)
            reason = failure[1] if failure is not None else "Recording failed"
            if ms is not None:
                self._tell(ms, "recordingFailed", "FAILED", None, reason)
            return _error(500, reason)
        self._begin(recording)
        return web.json_response(recording.describe())

    async def rest_terminate(self, body: dict[str, Any]) -> web.Response:
        try:
            found = self._find_stream(body)
        except ValueError as exc:
            return _error(400, str(exc))
        recording = self.active.get(found[0]) if found is not None else None
        if recording is None or recording.state != "RECORDING":
            return _error(404, "No recording of that stream")
        self._stop(recording)
        try:
            await asyncio.wait_for(recording.finished.wait(), STOP_TIMEOUT)
        except TimeoutError:
            return _error(504, "The recording did not finish its file in time")
        out = recording.describe()
        if recording.result is not None:
            out.update(size=recording.result.bytes, duration=round(recording.result.media_seconds * 1000),
                       ok=recording.result.ok, info=recording.result.reason)
        return web.json_response(out)

    def describe(self) -> list[dict[str, Any]]:
        return [r.describe() for r in self.active.values() if r.state in ("RECORDING", "STOPPING")]

    def records(self) -> list[dict[str, Any]]:
        busy = {r.name for r in self.active.values()}
        return [{"fileName": r.name, "size": r.size, "modified": int(r.modified * 1000),
                 "recording": r.name in busy} for r in self.folder.list()]

    async def serve_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("file_name", "")
        try:
            fd, info = self.folder.open(name)
        except RecordNotFound:
            return web.Response(status=404, text="Not found\n")
        try:
            size = info.st_size
            headers = {"Accept-Ranges": "bytes", "Content-Type": content_type(name),
                       "Content-Disposition": f'attachment; filename="{name}"',
                       "Last-Modified": _http_date(info.st_mtime), "Cache-Control": "no-cache"}
            try:
                wanted = parse_range(request.headers.get("Range"), size)
            except Unsatisfiable:
                return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
            start, length, status = (0, size, 200) if wanted is None else (wanted.start, wanted.length, 206)
            if wanted is not None:
                headers["Content-Range"] = wanted.content_range(size)
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = length
            await response.prepare(request)
            if request.method != "HEAD":
                position, left = start, length
                while left > 0:
                    chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, left), position)
                    if not chunk:
                        break  # the file shrank under us: the client sees a short body
                    await response.write(chunk)
                    position += len(chunk)
                    left -= len(chunk)
            await response.write_eof()
            return response
        finally:
            os.close(fd)

    def add_routes(self, app: web.Application) -> None:
        from .rest_api import _json_body  # the REST API's body rules (size limit, JSON object)

        async def startup(request: web.Request) -> web.Response:
            return await self.rest_startup(await _json_body(request))

        async def terminate(request: web.Request) -> web.Response:
            return await self.rest_terminate(await _json_body(request))

        async def find_all(request: web.Request) -> web.Response:
            await _json_body(request)
            found = self.describe()
            return web.json_response(found) if found else _error(404, "No recordings")

        async def records(request: web.Request) -> web.Response:
            await _json_body(request)
            found = self.records()
            return web.json_response(found) if found else _error(404, "No records")

        app.router.add_post("/rest-api/recorder/startup", startup)
        app.router.add_post("/rest-api/recorder/terminate", terminate)
        app.router.add_post("/rest-api/recorder/find_all", find_all)
        app.router.add_post("/rest-api/record/find_all", records)
        app.router.add_get("/client/records/{file_name}", self.serve_file)  # and HEAD

    def snapshot(self) -> dict[str, int]:
        return {"active": len(self.describe()), "started": self.started, "failed": self.failed}


def _error(status: int, info: str) -> web.Response:
    return web.json_response({"status": status, "info": info}, status=status)


def _strerror(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _http_date(seconds: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds))
