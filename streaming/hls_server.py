"""HLS output of every published stream: `http://host:8082/{name}/{name}.m3u8`, the WCS layout.

A stream's HLS output (media.hls.HlsOutput) is fed H.264 and AAC: the publisher's H.264 frames as they
are (remuxed, no video transcoding), or the shared transcoder's H.264 when it sends VP8; its Opus always
through the shared Opus -> AAC transcoder. It starts on the first playlist request (on demand) or when
the stream is published (`hls.start = "always"`); an on-demand output with no requests for
`hls.idle_timeout` seconds stops and deletes its files. When the publisher stops, the playlist gets
EXT-X-ENDLIST and stays for a while for the players still reading it, then everything is deleted.

Authorization: the backend's playHLS hook (application `hls.app_key`) decides on the stream name and the
`token` query parameter of the request; a refusal is 403. The answer is kept for `hls.auth_cache`
seconds per (stream, token), and the playlist passes the token on in every URI it lists, so segment
requests carry it too.

Paths are never joined from the request: the stream name must be a published stream's, and the file
name one the output made and still holds (a dict lookup), so `..`, `%2e%2e`, NUL or symlinks cannot
reach anything. Unknown streams, unknown files and hostile paths get the same 404.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from media.encoded import FrameSource
from media.hls import HlsClosed, HlsOutput, HlsSettings, PlaylistNotReady, PlaylistTimeout
from media.stream import Stream
from media.transcode import Target, Transcoder, Transcoders, TranscodingDisabled

from .config import Config, ConfigError
from .streams import validate_name

log = logging.getLogger(__name__)

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
NOT_FOUND_BODY = "Not found\n"
MAX_TOKEN = 1024
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, Content-Type",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Date, Age",
    "Access-Control-Max-Age": "86400",
}
_URI_ATTR = re.compile(r'URI="([^"]*)"')

# (app_key, hook method, provider, peer, stream name, token) -> whether the backend lets the viewer play
AuthorizeViewer = Callable[[str, str, str, str, str, str], Awaitable[bool]]


@dataclass
class HlsFeed:
    """One stream's HLS output and what feeds it."""

    stream: Stream
    output: HlsOutput
    directory: Path
    on_demand: bool
    version: str  # in every URI the playlist lists: numbering restarts with each output, cached URLs must not
    last_request: float = field(default_factory=time.monotonic)
    subscriptions: list[tuple[FrameSource, Any]] = field(default_factory=list)
    transcoders: list[Transcoder] = field(default_factory=list)
    ended_at: float | None = None
    closed: bool = False
    end_listener: Callable[[Stream], None] | None = None  # registered with the stream
    served: int = 0  # playlists answered
    pending: int = 0  # requests in progress


class HlsService:
    """`published(name)`: the stream published as `name`, if any; `authorize_viewer`: the backend's word
    on a viewer (the playHLS hook); `now`: the media clock (loop time)."""

    def __init__(self, config: Config, transcoders: Transcoders, published: Callable[[str], Stream | None],
                 authorize_viewer: AuthorizeViewer, now: Callable[[], float]):
        self.transcoders = transcoders
        self._published = published
        self._authorize_viewer = authorize_viewer
        self._now = now
        try:
            self.settings = HlsSettings(low_latency=config["hls.mode"] == "llhls",
                                        segment_duration=config["hls.segment_duration"],
                                        window=config["hls.window"], part_duration=config["hls.part_duration"])
        except ValueError as exc:
            raise ConfigError(f"hls settings: {exc}") from None
        self.start_mode = config["hls.start"]
        self.idle_timeout = float(config["hls.idle_timeout"])
        self.ready_timeout = float(config["hls.ready_timeout"])
        self.auth_cache_seconds = float(config["hls.auth_cache"])
        self.app_key = str(config["hls.app_key"])
        self.root = config.data_dir / "hls"
        self.feeds: dict[str, HlsFeed] = {}
        self._auth: dict[tuple[str, str], tuple[float, bool]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.requests = 0

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        # Files of an earlier run are of no use: their streams are gone.
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for feed in list(self.feeds.values()):
            self._close(feed)

    def stream_published(self, stream: Stream) -> None:
        if self.start_mode == "always":
            self._feed_for(stream, on_demand=False)

    def _stream_ended(self, feed: HlsFeed) -> None:
        """The publisher stopped: the playlist gets EXT-X-ENDLIST and stays a while for its players."""
        if feed.closed or feed.ended_at is not None:
            return
        self._unsubscribe(feed)
        feed.output.end()
        feed.ended_at = time.monotonic()

    async def _reap(self) -> None:
        """Stop idle on-demand outputs; delete ended ones once players had time to read the end."""
        linger = max(self.idle_timeout, self.settings.segment_duration * (self.settings.window + 2))
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for feed in list(self.feeds.values()):
                if feed.ended_at is not None:
                    if now - feed.ended_at > linger:
                        self._close(feed)
                elif feed.on_demand and not feed.pending and now - feed.last_request > self.idle_timeout:
                    log.info("HLS of %r stops: no requests for %g s", feed.stream.name, self.idle_timeout)
                    self._close(feed)
            for key, (expires, _allowed) in list(self._auth.items()):
                if expires < now:
                    del self._auth[key]

    def _feed_for(self, stream: Stream, on_demand: bool) -> HlsFeed:
        feed = self.feeds.get(stream.name)
        if feed is not None:
            if feed.stream is stream and not feed.closed:
                return feed
            self._close(feed)  # the ended output of an earlier publication of the name
        now = self._now()
        sources: dict[str, FrameSource] = {}
        transcoders: list[Transcoder] = []
        for track in stream.tracks:
            try:
                if track.kind == "video" and track.codec.name == "H264":
                    sources["video"] = stream.frames("video", now)  # remuxed as it is
                    continue
                target = Target("video", "H264") if track.kind == "video" else Target("audio", "AAC")
                transcoder = self.transcoders.acquire(stream, target, now)
            except TranscodingDisabled:
                log.warning("HLS of %r leaves out its %s %s: transcoding is disabled", stream.name,
                            track.codec.name, track.kind)
                continue
            transcoders.append(transcoder)
            sources[track.kind] = transcoder.output
        directory = self.root / uuid.uuid4().hex
        settings = dataclasses.replace(self.settings, video="video" in sources, audio="audio" in sources)
        output = HlsOutput(stream.name, directory, settings)
        feed = HlsFeed(stream, output, directory, on_demand, version=uuid.uuid4().hex[:8], transcoders=transcoders)
        feed.end_listener = lambda _stream: self._stream_ended(feed)
        self.feeds[stream.name] = feed
        video = sources.get("video")
        if video is not None:
            # WebRTC publishers send keyframes when asked: segments are cut at them.
            output.on_keyframe_needed = lambda: video.request_keyframe(self._now())
        for source in sources.values():
            source.subscribe(output.push)
            feed.subscriptions.append((source, output.push))
        log.info("HLS of %r starts (%s, %s)", stream.name, "LL-HLS" if self.settings.low_latency else "HLS",
                 "on demand" if on_demand else "always")
        stream.on_end(feed.end_listener)  # at once if the stream has ended already
        return feed

    def _unsubscribe(self, feed: HlsFeed) -> None:
        for source, callback in feed.subscriptions:
            source.unsubscribe(callback)
        feed.subscriptions.clear()
        for transcoder in feed.transcoders:
            self.transcoders.release(transcoder)
        feed.transcoders.clear()

    def _close(self, feed: HlsFeed) -> None:
        if feed.closed:
            return
        feed.closed = True
        if feed.end_listener is not None:
            feed.stream.remove_end_listener(feed.end_listener)
        self._unsubscribe(feed)
        feed.output.close()
        if self.feeds.get(feed.stream.name) is feed:
            del self.feeds[feed.stream.name]

    def describe(self) -> list[dict[str, Any]]:
        """Like WCS /rest-api/hls/find_all: one entry per stream with an HLS output."""
        out = []
        for name, feed in self.feeds.items():
            output = feed.output
            out.append({
                "streamName": name,
                "status": "ENDED" if feed.ended_at is not None else "ACTIVE",
                "mode": "LLHLS" if self.settings.low_latency else "HLS",
                "onDemand": feed.on_demand,
                "segments": output.segments,
                "parts": output.parts,
                "dropped": output.dropped,
                "errors": output.errors,
                "idleSeconds": round(time.monotonic() - feed.last_request, 1),
                "sources": [source.codec for source, _callback in feed.subscriptions],
            })
        return out

    # -- authorization -----------------------------------------------------------------------------

    async def _authorized(self, request: web.Request, name: str, token: str) -> bool:
        key = (name, token)
        now = time.monotonic()
        cached = self._auth.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        peer = request.remote or "unknown"
        allowed = await self._authorize_viewer(self.app_key, "playHLS", "HLS", peer, name, token)
        self._auth[key] = (now + self.auth_cache_seconds, allowed)
        return allowed

    # -- HTTP --------------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[_cors])
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(status=204)
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="Method not allowed\n", headers={"Allow": "GET, HEAD, OPTIONS"})
        self.requests += 1
        parts = request.match_info["tail"].split("/")
        if len(parts) != 2 or validate_name(parts[0]) is not None or not parts[1] or "\x00" in parts[1]:
            return _not_found()
        name, file_name = parts
        token = request.query.get("token", "")
        if len(token) > MAX_TOKEN:
            return web.Response(status=400, text="token is too long\n")
        feed = self.feeds.get(name)
        is_playlist = file_name == f"{name}.m3u8"
        if feed is None or feed.closed:
            stream = self._published(name)
            if stream is None or not is_playlist:
                return _not_found()
            if not await self._authorized(request, name, token):
                return _forbidden()
            stream = self._published(name)  # the hook took time: is it still there?
            if stream is None:
                return _not_found()
            feed = self._feed_for(stream, on_demand=True)
        elif not await self._authorized(request, name, token):
            return _forbidden()
        feed.last_request = time.monotonic()
        feed.pending += 1  # a request waiting for media keeps the output alive
        try:
            if is_playlist:
                return await self._playlist(request, feed, token)
            return await self._file(request, feed, file_name)
        finally:
            feed.pending -= 1
            feed.last_request = time.monotonic()

    async def _playlist(self, request: web.Request, feed: HlsFeed, token: str) -> web.StreamResponse:
        output = feed.output
        msn = _int_query(request, "_HLS_msn")
        part = _int_query(request, "_HLS_part")
        if msn is False or part is False or (part is not None and msn is None):
            return web.Response(status=400, text="_HLS_msn and _HLS_part must be whole numbers, "
                                                 "and _HLS_part needs _HLS_msn\n")
        if feed.served == 0:
            await self._first_segments(output)
        if output.playlist_now() is None:
            await output.wait_ready(self.ready_timeout)
            if output.playlist_now() is None:
                return web.Response(status=503, text="The stream's first segment is not ready yet\n",
                                    headers={"Retry-After": "1", "Cache-Control": "no-cache, no-store"})
        if not self.settings.low_latency:
            msn = part = None  # blocking reload is an LL-HLS feature
        try:
            text = await output.playlist(msn, part, timeout=self.settings.segment_duration * 3)
        except PlaylistNotReady as exc:
            return web.Response(status=400, text=f"{exc}\n")
        except PlaylistTimeout:
            return web.Response(status=503, text="The requested part did not come in time\n",
                                headers={"Retry-After": "1", "Cache-Control": "no-cache, no-store"})
        except HlsClosed:
            return _not_found()
        feed.last_request = time.monotonic()
        feed.served += 1
        text = _with_query(text, {"v": feed.version, "token": token})
        return web.Response(text=text, content_type=PLAYLIST_TYPE, charset=None,
                            headers={"Cache-Control": "no-cache, no-store, must-revalidate"})

    async def _first_segments(self, output: HlsOutput) -> None:
        """A new output's first playlist waits (up to ready_timeout) for enough media to start well:
        players start three target durations from the live edge (hls.js, Safari), so a playlist with
        one segment makes them start at its beginning and stall at every segment after; LL-HLS players
        need one whole segment besides its parts (hls.js calls a playlist of parts only empty)."""
        want = 1 if self.settings.low_latency else min(3, self.settings.window)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        while output.segments < want and not output.ended and not output.closed:
            left = deadline - loop.time()
            if left <= 0:
                return
            try:
                await output.playlist(output.segments, timeout=left)  # until the next segment is complete
            except (PlaylistNotReady, PlaylistTimeout, HlsClosed):
                return

    async def _file(self, request: web.Request, feed: HlsFeed, file_name: str) -> web.StreamResponse:
        output = feed.output
        path = output.file(file_name)
        if path is None:
            wait_file = getattr(output, "wait_file", None)  # LL-HLS: a hinted part being made
            if wait_file is not None:
                path = await wait_file(file_name, self.settings.segment_duration * 3)
        if path is None:
            return _not_found()
        response = web.FileResponse(path, headers={
            "Content-Type": output.content_type(file_name),
            "Cache-Control": "public, max-age=3600, immutable",
        })
        return response


@web.middleware
async def _cors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers.update(CORS_HEADERS)
    return response


def _not_found() -> web.Response:
    return web.Response(status=404, text=NOT_FOUND_BODY, headers={"Cache-Control": "no-cache"})


def _forbidden() -> web.Response:
    return web.Response(status=403, text="Forbidden\n", headers={"Cache-Control": "no-cache"})


def _int_query(request: web.Request, key: str) -> int | None | bool:
    """None when absent, False when not a whole number >= 0."""
    raw = request.query.get(key)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 12:
        return False
    return int(raw)


def _with_query(text: str, params: dict[str, str]) -> str:
    """Every URI of the playlist carries the output's version (so a cache never mixes up two
    publications of a name) and the token (so the requests for segments and parts are authorized like
    the playlist's)."""
    suffix = "&".join(f"{key}={quote(value, safe='')}" for key, value in params.items() if value)

    def add(uri: str) -> str:
        return uri + ("&" if "?" in uri else "?") + suffix

    lines = []
    for line in text.split("\n"):
        if line and not line.startswith("#"):
            line = add(line)
        elif 'URI="' in line:
            line = _URI_ATTR.sub(lambda m: f'URI="{add(m.group(1))}"', line)
        lines.append(line)
    return "\n".join(lines)
