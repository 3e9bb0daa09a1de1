"""The server: listeners, the applications registry, the hooks client and the sessions, started and
stopped together."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from media import ice, native
from media.sfu import MediaCore
from media.stream import Stream, StreamRegistry
from media.transcode import Transcoders

from . import rest_api
from .apps import ECHO_BACKEND_PATH, AppRegistry
from .availability import StreamAvailability
from .bug_reports import BugReports
from .capture import SessionCaptures
from .config import Config
from .events import StreamEvents
from .hls_server import HlsService
from .hooks import HookClient
from .keepalive import StreamKeepAlive
from .metrics import Metrics
from .recording import RecordingService
from .rest_config import default_method_config
from .rtmp import RtmpService, RtmpSettings
from .rtmp.push import PushService
from .rtsp_pull import PullService, PullSettings
from .rtsp_server import RtspService
from .service_metrics import RtmpMetrics, SipMetrics
from .session import Session, SessionRegistry
from .sip_service import SipService, SipSettings, media_factory
from .snapshots import SnapshotService
from .streams import StreamService, validate_name
from .ws import ClientConnection, ConnectionServices, Handler

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, config: Config):
        self.config = config
        self.python_core = bool(config["server.python_core"])
        if not self.python_core:
            native.require_native()
        self.media_core = native.describe(self.python_core)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.apps = AppRegistry(config.database_path)
        self.hooks = HookClient(timeout=config["hooks.timeout"], max_connections=config["hooks.max_connections"])
        self.sessions = SessionRegistry(keepalive_grace=config["ws.keepalive_grace"])
        self.media = MediaCore(native.rtp_module(self.python_core), native.rtcp_module(self.python_core),
                               native.track_module(self.python_core),
                               max_bitrate=config["webrtc.max_bitrate"],
                               public_address=config["ice.public_address"])
        # The Python twin on a --python-core server: frame readers (taps) and snapshots use it.
        self.depacketize = native.depacketize_module(self.python_core)
        self.transcoders = Transcoders(self.media.track, self.media.rtp, enabled=config["transcoding.enabled"],
                                       preset=config["transcoding.preset"],
                                       keyframe_interval=config["transcoding.keyframe_interval"])
        # The stream service and the pulls use each other, as do the stream service and recording: the
        # calls back into services made later (the viewers of an ended pull, a publisher's file name)
        # look them up when they happen, which is only once the server runs.
        registry = StreamRegistry()
        self.pulls = PullService(registry, self.media, PullSettings.from_config(config),
                                 on_published=self.stream_published, on_unpublished=self.stream_unpublished,
                                 end_viewers=lambda stream, info: self.streams.end_viewers(stream, info))
        self.streams = StreamService(self.media, registry, self.hooks, self.transcoders, self.pulls,
                                     on_published=self.stream_published, on_unpublished=self.stream_unpublished,
                                     prepare_recording=lambda ms: self.recording.prepare(ms),
                                     connect_timeout=config["webrtc.connect_timeout"],
                                     activity_timeout=config["webrtc.activity_timeout"])
        self.hls = HlsService(config, self.transcoders, self.streams.published, self.authorize_viewer, self.media.now)
        self.recording = RecordingService(config, self.streams, self.media.now)
        self.rtsp = RtspService(config, self.media, self.streams.published, self.authorize_viewer)
        self.rtmp = RtmpService(RtmpSettings.from_config(config), node_id=config.node_id, apps=self.apps,
                                hooks=self.hooks, hooks_timeout=config["hooks.timeout"], registry=registry,
                                core=self.media, transcoders=self.transcoders, validate_name=validate_name,
                                on_published=self.stream_published,
                                end_viewers=lambda stream, info: self.streams.end_viewers(stream, info))
        self.streams.sources.append(self.rtmp.stream)
        self.pushes = PushService(self.streams.published, self.transcoders, self.media.now,
                                  prefix=config["rtmp.push_prefix"], timeout=config["rtmp.push_timeout"])
        self.handlers: dict[str, Handler] = dict(self.streams.handlers())
        self.events = StreamEvents(self.streams, self.hooks, self.sessions.get, config.node_id,
                                   max_payload=config["data.max_payload_bytes"])
        self.keepalive = StreamKeepAlive(self.streams, self.hooks, interval=config["hooks.keepalive_interval"])
        reports_dir = config["server.reports_dir"] or config.data_dir / "reports"
        self.captures = SessionCaptures(self.streams.media_sessions, self.hooks, reports_dir,
                                        seconds=config["capture.seconds"], max_bytes=config["capture.max_bytes"])
        self.bug_reports = BugReports(self.hooks, self.streams.media_sessions, config.node_id, self.media_core,
                                      reports_dir, self.captures)
        self.snapshots = SnapshotService(self.depacketize, self.streams.published, self.hooks, self.media.now)
        self.availability = StreamAvailability(self.streams.published)
        self.sip = SipService(SipSettings.from_config(config), self.hooks,
                              media_factory(self.media, self.transcoders, registry, SipSettings.from_config(config)))
        for service in (self.events, self.bug_reports, self.snapshots, self.captures, self.availability, self.sip):
            self.handlers.update(service.handlers())
        self.connection_services = ConnectionServices(
            node_id=config.node_id, apps=self.apps, hooks=self.hooks, sessions=self.sessions, handlers=self.handlers,
            on_session_closed=self.on_session_closed, ping_interval=config["ws.ping_interval"],
            ping_probes=config["ws.ping_probes"], max_message_bytes=config["ws.max_message_bytes"],
            connect_on_error=config["hooks.connect_on_error"], on_session_established=self.sip.session_established)
        self.metrics = Metrics(self)  # /metrics (streaming/metrics.py); reads the services above
        self.metrics.register(SipMetrics(self.sip))
        self.metrics.register(RtmpMetrics(self.rtmp))
        self.started_at = time.time()
        self.urls: dict[str, str] = {}
        self._runners: list[web.AppRunner] = []

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> dict[str, str]:
        ice.use_host_addresses(self.config["ice.address"])
        await self.hooks.start()
        self.streams.start()
        self.keepalive.start()
        self.metrics.start()
        bind = self.config["server.bind"]
        ws_app = web.Application()
        ws_app.router.add_get("/{tail:.*}", self._websocket)
        ws_port = await self._listen(ws_app, bind, self.config["ws.port"])
        self.urls["ws"] = f"ws://{_host_for_url(bind)}:{ws_port}"
        if self.config["ws.cert"] is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.config["ws.cert"], self.config["ws.key"])
            wss_port = await self._listen(ws_app, bind, self.config["ws.wss_port"], context)
            self.urls["wss"] = f"wss://{_host_for_url(bind)}:{wss_port}"
        rest_port = await self._listen(rest_api.build_app(self), bind, self.config["rest.port"])
        self.urls["rest"] = f"http://{_host_for_url(bind)}:{rest_port}"
        self._ensure_default_app(self.urls["rest"])
        self.hls.start()
        self.recording.start()
        hls_port = await self._listen(self.metrics.watch_hls(self.hls.build_app()), bind, self.config["hls.port"])
        self.urls["hls"] = f"http://{_host_for_url(bind)}:{hls_port}"
        try:
            rtsp_port = await self.rtsp.start(bind, self.config["rtsp.port"])
            self.urls["rtsp"] = f"rtsp://{_host_for_url(bind)}:{rtsp_port}"
        except PermissionError:
            if self.config["rtsp.port"] >= 1024:
                raise
            # The WCS default, 554, is a privileged port: without root the rest of the server still runs.
            await self.rtsp.shutdown()
            log.warning("RTSP is off: port %d needs root or CAP_NET_BIND_SERVICE; set rtsp.port (e.g. 8554)",
                        self.config["rtsp.port"])
        if self.config["rtmp.enabled"]:
            rtmp_port = await self.rtmp.start(bind, self.config["rtmp.port"])
            self.urls["rtmp"] = f"rtmp://{_host_for_url(bind)}:{rtmp_port}"
        for name, port in (await self.sip.start()).items():
            self.urls[name] = f"{_host_for_url(self.sip.settings.stack.bind)}:{port}"
        return self.urls

    async def _listen(self, app: web.Application, host: str, port: int,
                      ssl_context: ssl.SSLContext | None = None) -> int:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024)
        await site.start()
        self._runners.append(runner)
        server = site._server
        assert server is not None and isinstance(server, asyncio.base_events.Server)
        return int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        await self.metrics.stop()
        await self.sip.shutdown()
        await self.streams.shutdown()
        await self.keepalive.shutdown()
        await self.snapshots.shutdown()
        await self.captures.shutdown()
        await self.pulls.shutdown()
        await self.hls.shutdown()
        await self.rtsp.shutdown()
        await self.rtmp.shutdown()
        await self.pushes.shutdown()
        for session in self.sessions.all():
            await self.sessions.close(session, "Server shutdown")
        await self.recording.shutdown()
        for runner in reversed(self._runners):
            await runner.cleanup()
        await self.hooks.close()
        self.transcoders.close()
        self.apps.close()

    def _ensure_default_app(self, rest_url: str) -> None:
        """defaultApp is served by the embedded echo backend; keep its URL on this run's REST port."""
        echo_url = rest_url + ECHO_BACKEND_PATH
        app = self.apps.get("defaultApp")
        if app is None:
            self.apps.ensure_default(rest_url)
        elif app.url != echo_url and app.url.endswith(ECHO_BACKEND_PATH) and _is_loopback_url(app.url):
            log.info("defaultApp follows the embedded backend to %s", echo_url)
            self.apps.update("defaultApp", url=echo_url)

    def websdk_dir(self) -> Path | None:
        configured = self.config["web.websdk_dir"]
        candidates = [configured] if configured else [
            Path.cwd() / "node_modules/@flashphoner/websdk",
            PROJECT_ROOT / "node_modules/@flashphoner/websdk",
        ]
        for path in candidates:
            if path is not None and (Path(path) / "flashphoner.js").is_file():
                return Path(path)
        return None

    def status(self) -> dict[str, Any]:
        return {
            "nodeId": self.config.node_id,
            "uptime": round(time.time() - self.started_at, 3),
            "mediaCore": self.media_core,
            "sessions": len(self.sessions),
            "streams": len(self.streams.registry),
            "transcoders": {"active": self.transcoders.active(), "created": self.transcoders.created()},
            "hls": {"outputs": len(self.hls.feeds), "requests": self.hls.requests},
            "recordings": self.recording.snapshot(),
            "rtsp": self.rtsp.snapshot(),
            "rtspPulls": len(self.pulls),
            "rtmp": self.rtmp.snapshot(),
            "rtmpPushes": len(self.pushes),
            "snapshots": self.snapshots.describe(),
            "sip": self.sip.describe(),
            "streamEvents": {"sent": self.events.sent, "keepAlives": self.keepalive.sent,
                             "terminatedByKeepAlive": self.keepalive.terminated,
                             "bugReports": self.bug_reports.saved},
            "hooks": {
                "calls": self.hooks.stats.calls,
                "refused": self.hooks.stats.refused,
                "errors": self.hooks.stats.errors,
                "eventsDropped": self.hooks.stats.events_dropped,
            },
        }

    # -- WebSocket ---------------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        limit = self.config["ws.max_message_bytes"]
        # Frames up to 16 times the message limit are read and answered with a `fail`; only a frame
        # beyond that closes the socket (1009), because it has to be held in memory to be read.
        ws = web.WebSocketResponse(max_msg_size=max(limit * 16, 16 * 1024 * 1024), autoping=True,
                                   heartbeat=None)
        if not ws.can_prepare(request).ok:
            return web.Response(status=426, text="This port speaks WebSocket (the WebSDK client protocol)\n")
        await ws.prepare(request)
        await ClientConnection(self.connection_services, ws, request).run()
        return ws

    # -- outputs of published streams --------------------------------------------------------------

    async def authorize_viewer(self, app_key: str, method: str, provider: str, peer: str, name: str,
                               token: str, extra: dict[str, Any] | None = None) -> bool:
        """Ask the backend whether a viewer without a WebSocket session (HLS, RTSP) may play `name`:
        the playHLS / playRTSP hook, with a body shaped like a WCS stream's, the request's token and
        `extra` (playRTSP: rtspUrl, User-Agent)."""
        app = self.apps.get(app_key)
        if app is None:
            log.warning("%s request for %r refused: application %r does not exist", provider, name, app_key)
            return False
        session_id = f"{provider}-{peer}-{name}"
        body: dict[str, Any] = {
            "nodeId": self.config.node_id, "appKey": app.app_key, "sessionId": session_id,
            "mediaSessionId": f"{session_id}-{uuid.uuid4().hex[:8]}", "name": name, "published": False,
            "hasVideo": True, "hasAudio": True, "status": "NEW", "record": False, "width": 0, "height": 0,
            "bitrate": 0, "minBitrate": 0, "maxBitrate": 0, "quality": 0, "mediaProvider": provider,
            "token": token,
        }
        for key, value in (extra or {}).items():
            body.setdefault(key, value)
        result = await self.hooks.call(app, method, body, default_method_config(method))
        if not result.allowed:
            log.info("%s of %r refused by the backend: %s", provider, name, result.reason)
        return result.allowed

    def stream_published(self, stream: Stream) -> None:
        stream.depacketize = self.depacketize
        self.hls.stream_published(stream)
        self.recording.stream_published(stream)
        self.pushes.stream_published(stream, self.streams.publisher(stream.name))

    def stream_unpublished(self, stream: Stream) -> None:
        """The outputs (HLS, recordings, transcoders, frame taps) learn the end from the stream itself
        (`Stream.on_end`, told when the stream is released), before this is called: nothing server-wide
        is left to do here."""

    async def on_session_closed(self, session: Session, reason: str) -> None:
        await self.sip.session_closed(session, reason)
        await self.streams.session_closed(session, reason)


def _host_for_url(bind: str) -> str:
    if bind in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{bind}]" if ":" in bind else bind


def _is_loopback_url(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
