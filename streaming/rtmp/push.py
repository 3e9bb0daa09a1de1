"""Pushes: a published stream sent on to an RTMP server (a CDN, YouTube, nginx-rtmp), as WCS's RTMP
transponder does.

Started by a WebRTC publisher's `rtmpUrl` (publishStream; the WebSDK's webrtc-as-rtmp-republishing
example) once the stream is published, or over REST (`/rest-api/push/startup` with `streamName` and
`rtmpUrl`). Unless `rtmpTransponderFullUrl` is true, the target is `{rtmpUrl}/{rtmp.push_prefix}{name}`
(WCS: `rtmp_` + the stream name). H.264 goes out as it is; VP8 video and Opus audio go through the
shared transcoders (H.264, AAC). A push ends with its stream, by `/rest-api/push/terminate`
(`mediaSessionId` or `streamName`), or when the RTMP server refuses it, drops it or does not answer
within `rtmp.push_timeout` seconds (logged with the reason). The RTMP client is ours (media.rtmp.client
and media.rtmp_push), in a worker thread of each push.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from media.encoded import EncodedFrame, FrameSource
from media.record import RecordResult
from media.rtmp.client import PublishTarget, RtmpUrlError
from media.rtmp_push import RtmpPusher
from media.stream import Stream
from media.transcode import Target, Transcoder, Transcoders, TranscodingDisabled

log = logging.getLogger(__name__)

MAX_URL = 1024
MAX_PUSHES = 100
MAX_BODY_STRING = 1024
MAX_REST_BODY = 65536


class PushError(ValueError):
    def __init__(self, status: int, info: str):
        super().__init__(info)
        self.status = status
        self.info = info


def check_rtmp_url(url: Any) -> str:
    """An rtmp:// URL with a host, as text; PushError(400) otherwise."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise PushError(400, f"Field 'rtmpUrl' must be an rtmp:// URL of at most {MAX_URL} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise PushError(400, "rtmpUrl must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() != "rtmp" or not parts.hostname:
        raise PushError(400, f"rtmpUrl must be rtmp://host[:port]/app[/name], not {url[:100]!r}")
    return url


def masked_url(url: str) -> str:
    """The URL without a password (or stream key query) for listings and logs."""
    parts = urlsplit(url)
    if parts.password:
        url = url.replace(f":{parts.password}@", ":***@", 1)
    return url


@dataclass
class Push:
    id: str
    stream: Stream
    url: str
    by: str  # "publisher" or "rest"
    pusher: RtmpPusher
    started_at: float
    status: str = "CONNECTING"  # CONNECTING, PUSHING, STOPPED, FAILED
    info: str | None = None
    subscriptions: list[tuple[FrameSource, Callable[[EncodedFrame], None]]] = field(default_factory=list)
    transcoders: list[Transcoder] = field(default_factory=list)
    result: RecordResult | None = None

    def describe(self) -> dict[str, Any]:
        pusher = self.pusher
        status = self.status
        if status == "CONNECTING" and pusher.connected:
            status = "PUSHING"
        return {"mediaSessionId": self.id, "streamName": self.stream.name, "rtmpUrl": masked_url(self.url),
                "status": status, "info": self.info, "by": self.by, "startedAt": round(self.started_at, 3),
                "video": pusher.video, "audio": pusher.audio, "frames": pusher.writer.frames,
                "dropped": pusher.dropped, "mediaSeconds": round(pusher.writer.media_seconds, 3),
                "transcoded": [t.target.codec for t in self.transcoders]}


class PushService:
    def __init__(self, published: Callable[[str], Stream | None], transcoders: Transcoders,
                 now: Callable[[], float], prefix: str = "rtmp_", keyframe_interval: float = 2.0,
                 timeout: float = 10.0):
        self.published = published  # a live stream by name
        self.transcoders = transcoders
        self.now = now
        self.prefix = prefix
        self.keyframe_interval = keyframe_interval
        self.timeout = timeout  # seconds an RTMP server has for each step (connect, publish, taking data)
        self.pushes: dict[str, Push] = {}
        self.finished: list[dict[str, Any]] = []  # the last pushes that ended, newest last

    def __len__(self) -> int:
        return len(self.pushes)

    def target(self, name: str, url: Any, full: bool) -> str:
        """Where a push of `name` to `url` goes; PushError(400) when that is no URL to publish to."""
        url = check_rtmp_url(url)
        target = url if full else f"{url.rstrip('/')}/{self.prefix}{name}"
        try:
            PublishTarget.parse(target)
        except RtmpUrlError as exc:
            raise PushError(400, f"rtmpUrl: {exc}") from None
        return target

    # -- starting and stopping ---------------------------------------------------------------------

    def stream_published(self, stream: Stream, publisher: Any) -> None:
        """A WebRTC publisher's `rtmpUrl` (publishStream): push its stream as WCS does."""
        url = getattr(publisher, "rtmp_url", None)
        if not url:
            return
        try:
            self.start(stream, self.target(stream.name, url, False), "publisher")
        except PushError as exc:
            log.warning("push of %r not started: %s", stream.name, exc.info)

    def start(self, stream: Stream, url: str, by: str) -> Push:
        if len(self.pushes) >= MAX_PUSHES:
            raise PushError(503, f"{MAX_PUSHES} pushes run already")
        if any(p.stream is stream and p.url == url for p in self.pushes.values()):
            raise PushError(409, "This stream is pushed to that URL already")
        now = self.now()
        video_track, audio_track = stream.track("video"), stream.track("audio")
        push_id = str(uuid.uuid4())
        sources: list[FrameSource] = []
        transcoders: list[Transcoder] = []
        try:
            for track, kind, wanted in ((video_track, "video", "H264"), (audio_track, "audio", "AAC")):
                if track is None:
                    continue
                if track.codec.name == wanted:
                    sources.append(stream.frames(kind, now))
                else:
                    transcoder = self.transcoders.acquire(stream, Target(kind, wanted), now)
                    transcoders.append(transcoder)
                    sources.append(transcoder.output)
        except (TranscodingDisabled, LookupError, ValueError) as exc:
            for transcoder in transcoders:
                self.transcoders.release(transcoder)
            raise PushError(409, f"Cannot push this stream: {exc}") from None
        if not sources:
            raise PushError(409, "The stream has no audio or video")
        pusher = RtmpPusher(url, "H264" if video_track is not None else None,
                            "AAC" if audio_track is not None else None, self.keyframe_interval,
                            on_done=lambda result: self._done(push, result), label=stream.name,
                            timeout=self.timeout)
        push = Push(push_id, stream, url, by, pusher, started_at=time.time(), transcoders=transcoders)
        for source in sources:
            source.subscribe(pusher.push)
            push.subscriptions.append((source, pusher.push))
            if source.kind == "video":
                pusher.on_keyframe_needed = lambda source=source: source.request_keyframe(self.now())
        self.pushes[push_id] = push
        stream.on_end(lambda _stream: self.stop(push, "STOPPED", "Stopped by publisher stop"))
        log.info("pushing %r to %s (%s)", stream.name, masked_url(url), by)
        return push

    def stop(self, push: Push, status: str, info: str | None) -> None:
        if push.status in ("STOPPED", "FAILED"):
            return
        push.status = status
        push.info = info
        for source, callback in push.subscriptions:
            source.unsubscribe(callback)
        push.subscriptions.clear()
        for transcoder in push.transcoders:
            self.transcoders.release(transcoder)
        push.pusher.stop()

    def _done(self, push: Push, result: RecordResult) -> None:
        push.result = result
        if not result.ok and push.status not in ("STOPPED",):
            log.warning("push of %r to %s failed: %s", push.stream.name, masked_url(push.url), result.reason)
            self.stop(push, "FAILED", result.reason)
            push.status, push.info = "FAILED", result.reason
        else:
            log.info("push of %r to %s ended: %d frames, %.1f s", push.stream.name, masked_url(push.url),
                     result.frames, result.media_seconds)
        if self.pushes.get(push.id) is push:
            del self.pushes[push.id]
        self.finished = [*self.finished[-19:], {**push.describe(), "status": push.status, "info": push.info}]

    async def shutdown(self) -> None:
        for push in list(self.pushes.values()):
            self.stop(push, "STOPPED", "Server shutdown")

    # -- REST (the WebSDK rest module's push: startup, find, findAll, terminate) -------------------

    def find(self, body: dict[str, Any]) -> list[Push]:
        name, url, msid = body.get("streamName"), body.get("rtmpUrl"), body.get("mediaSessionId")
        found = []
        for push in self.pushes.values():
            if isinstance(msid, str) and push.id != msid:
                continue
            if isinstance(name, str) and push.stream.name != name:
                continue
            if isinstance(url, str) and url not in (push.url, masked_url(push.url)) \
                    and not push.url.startswith(url.rstrip("/") + "/"):
                continue
            found.append(push)
        return found

    def add_routes(self, app: web.Application) -> None:
        async def startup(request: web.Request) -> web.Response:
            body = await json_body(request)
            name = body.get("streamName")
            if not isinstance(name, str) or not name or len(name) > MAX_BODY_STRING:
                return _error(400, "Field 'streamName' (string) is required")
            stream = self.published(name)
            if stream is None:
                return _error(404, "Stream not found")
            try:
                url = self.target(name, body.get("rtmpUrl"), body.get("rtmpTransponderFullUrl") is True)
                push = self.start(stream, url, "rest")
            except PushError as exc:
                return _error(exc.status, exc.info)
            return web.json_response(push.describe())

        async def find_all(request: web.Request) -> web.Response:
            await json_body(request)
            found = [p.describe() for p in self.pushes.values()]
            return web.json_response(found) if found else _error(404, "No pushes")

        async def find(request: web.Request) -> web.Response:
            found = [p.describe() for p in self.find(await json_body(request))]
            return web.json_response(found) if found else _error(404, "Push not found")

        async def terminate(request: web.Request) -> web.Response:
            body = await json_body(request)
            if not isinstance(body.get("mediaSessionId"), str) and not isinstance(body.get("streamName"), str):
                return _error(400, "Field 'mediaSessionId' or 'streamName' (string) is required")
            found = self.find({k: body[k] for k in ("mediaSessionId", "streamName", "rtmpUrl") if k in body})
            if not found:
                return _error(404, "Push not found")
            for push in found:
                self.stop(push, "STOPPED", "Stopped by rest /terminate")
            return web.json_response([p.describe() for p in found])

        app.router.add_post("/rest-api/push/startup", startup)
        app.router.add_post("/rest-api/push/find_all", find_all)
        app.router.add_post("/rest-api/push/find", find)
        app.router.add_post("/rest-api/push/terminate", terminate)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a REST request (whatever its Content-Type, as the WebSDK and curl send)."""
    if request.content_length is not None and request.content_length > MAX_REST_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_REST_BODY, actual_size=request.content_length)
    raw = await request.content.read(MAX_REST_BODY + 1)
    if len(raw) > MAX_REST_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_REST_BODY, actual_size=len(raw))
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise web.HTTPBadRequest(text="The body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="The body must be a JSON object")
    return body


def _error(status: int, info: str) -> web.Response:
    return web.json_response({"status": status, "info": info}, status=status)
