"""The RTMP ingest port: a listener whose connections are RtmpPublishers, and the streams they publish,
for the other outputs to find by name."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from media.sfu import MediaCore
from media.stream import Stream, StreamRegistry
from media.transcode import Settings, Transcoders

from ..apps import AppRegistry
from ..hooks import HookClient
from .publisher import RtmpPublisher
from .push import json_body
from .settings import RtmpSettings

log = logging.getLogger(__name__)

SHUTDOWN = "Server shutdown"


class RtmpService:
    def __init__(self, settings: RtmpSettings, *, node_id: str, apps: AppRegistry, hooks: HookClient,
                 hooks_timeout: float, registry: StreamRegistry, core: MediaCore, transcoders: Transcoders,
                 validate_name: Callable[[str], str | None], on_published: Callable[[Stream], None],
                 end_viewers: Callable[[Stream, str], Awaitable[None]]):
        self.settings = settings
        self.node_id = node_id
        self.apps = apps
        self.hooks = hooks
        self.hooks_timeout = hooks_timeout
        self.registry = registry  # where a publisher claims its stream key as the stream's name
        self.core = core
        self.transcoders = transcoders
        self.validate_name = validate_name  # None when a name is fine, else why not
        self.on_published = on_published  # the server's outputs (HLS, recording, pushes) learn of the stream
        self.end_viewers = end_viewers  # the viewers of an ended stream get their status
        self.connections: set[RtmpPublisher] = set()
        self.published_total = 0
        # of publishers that ended; reencodedFrames: video frames out of B-frame re-encoding
        self.ingested = {"videoFrames": 0, "audioFrames": 0, "bytes": 0, "reencodedFrames": 0}
        self._server: asyncio.base_events.Server | None = None

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    def transcode_settings(self) -> Settings | None:
        """The transcoder settings AAC -> Opus runs with; None when transcoding is off."""
        return self.transcoders.settings if self.transcoders.enabled else None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: RtmpPublisher(self), host, port, backlog=256)
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("RTMP ingest on %s:%d", host, bound)
        return bound

    def stream_published(self, stream: Stream) -> None:
        self.published_total += 1
        self.on_published(stream)

    def publisher(self, name: str) -> RtmpPublisher | None:
        for connection in self.connections:
            if connection.status == "PUBLISHING" and connection.request is not None \
                    and connection.request.name == name:
                return connection
        return None

    def stream(self, name: str) -> Stream | None:
        """The stream an RTMP publisher publishes under that name, once its tracks exist."""
        connection = self.publisher(name)
        if connection is None or not connection.announced or connection.stream is None or connection.stream.closed:
            return None
        return connection.stream

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.stop(SHUTDOWN)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def describe(self) -> list[dict[str, Any]]:
        return [c.describe() for c in self.connections if c.request is not None]

    def add_routes(self, app: web.Application) -> None:
        """/rest-api/rtmp/find_all (the RTMP publishers) and /rest-api/rtmp/terminate ({"name": …})."""

        async def find_all(request: web.Request) -> web.Response:
            found = self.describe()
            return web.json_response(found) if found else _error(404, "No RTMP publishers")

        async def terminate(request: web.Request) -> web.Response:
            body = await json_body(request)
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str):
                return _error(400, "Field 'name' (string) is required")
            connection = self.publisher(name)
            if connection is None:
                return _error(404, "Stream not found")
            connection.stop("Stopped by rest /terminate")
            return web.json_response(connection.describe())

        app.router.add_post("/rest-api/rtmp/find_all", find_all)
        app.router.add_post("/rest-api/rtmp/terminate", terminate)

    def snapshot(self) -> dict[str, Any]:
        totals = dict(self.ingested)
        for connection in self.connections:
            if connection.ingest is not None and not connection.ingest.closed:
                stats = connection.ingest.stats
                totals["videoFrames"] += stats.video_frames
                totals["audioFrames"] += stats.audio_frames
                totals["bytes"] += stats.bytes
        return {"connections": len(self.connections),
                "publishing": sum(1 for c in self.connections if c.status == "PUBLISHING"),
                "published": self.published_total, **totals}

    def count(self, video_frames: int, audio_frames: int, size: int, reencoded: int = 0) -> None:
        """What a publisher that ended brought in (for /health)."""
        self.ingested["videoFrames"] += video_frames
        self.ingested["audioFrames"] += audio_frames
        self.ingested["bytes"] += size
        self.ingested["reencodedFrames"] += reencoded


def _error(status: int, info: str) -> web.Response:
    return web.json_response({"status": status, "info": info}, status=status)
