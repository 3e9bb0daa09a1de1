"""The live dashboard on the REST port: `/dashboard` (a plain page, streaming/web/dashboard.html, that
uses the WebSDK for its players) and the one JSON route it reads, `/rest-api/dashboard/streams`.

The route gathers what the page shows of each live stream: where it comes from (a WebSDK publisher,
WHIP, a pulled camera), its tracks, its viewers per protocol (WebRTC through the WebSDK, WHEP, RTSP,
and whether its HLS output runs), whether it is recorded; plus the files of the records folder and the
ports the page builds its links with. Thumbnails come from /rest-api/stream/snapshot, records from
/client/records/. Everything the page reads is under /rest-api/, so whatever protects the REST API
protects the dashboard's data too.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from media.sfu import WebRtcPublisher

if TYPE_CHECKING:
    from .server import Server

PAGE = "dashboard.html"


def _port(url: str | None) -> int | None:
    return urlsplit(url).port if url else None


def _provider(client_data: dict[str, Any]) -> str:
    """WHIP or WHEP for a session made by streaming/whip.py, WebRTC for a WebSDK client's."""
    providers = client_data.get("mediaProviders")
    if isinstance(providers, list) and providers and providers[0] in ("WHIP", "WHEP"):
        return str(providers[0])
    return "WebRTC"


def live_streams(server: Server) -> list[dict[str, Any]]:
    """Every live stream with its source, tracks and viewers per protocol, by name."""
    rtsp_viewers = collections.Counter(
        client.stream.name for connection in server.rtsp.connections for client in connection.clients.values()
        if client.attached)
    webrtc_viewers: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    streams: dict[str, dict[str, Any]] = {}
    for ms in server.streams.media_sessions():
        if not ms.published:
            if ms.status in ("PENDING", "PLAYING"):
                webrtc_viewers[ms.name][_provider(ms.session.client_data)] += 1
            continue
        tracks = []
        if isinstance(ms.endpoint, WebRtcPublisher) and ms.stream is not None:
            tracks = [{"kind": t.kind, "codec": t.codec.name, "packets": t.ingest.packets} for t in ms.stream.tracks]
        streams[ms.name] = {"name": ms.name, "source": _provider(ms.session.client_data), "status": ms.status,
                            "mediaSessionId": ms.id, "sessionId": ms.session.id, "tracks": tracks,
                            "hasVideo": ms.has_video, "hasAudio": ms.has_audio, "record": ms.record,
                            "recordName": ms.record_name}
    for pull in server.pulls.all():
        name = pull.local_name
        if name is None or name in streams or pull.stream is None:
            continue
        streams[name] = {"name": name, "source": "RTSP pull", "status": pull.status, "mediaSessionId": None,
                         "sessionId": None, "hasVideo": pull.stream.track("video") is not None,
                         "hasAudio": pull.stream.track("audio") is not None, "record": False, "recordName": None,
                         "tracks": [{"kind": t.kind, "codec": t.codec.name, "packets": t.ingest.packets}
                                    for t in pull.stream.tracks]}
    hls = {entry["streamName"]: entry for entry in server.hls.describe()}
    for name, entry in streams.items():
        viewers = webrtc_viewers.get(name, collections.Counter())
        entry["viewers"] = {"WebRTC": viewers["WebRTC"], "WHEP": viewers["WHEP"], "RTSP": rtsp_viewers[name]}
        feed = hls.get(name)
        entry["hls"] = None if feed is None else {"status": feed["status"], "segments": feed["segments"],
                                                  "idleSeconds": feed["idleSeconds"]}
    return sorted(streams.values(), key=lambda s: s["name"])


def overview(server: Server) -> dict[str, Any]:
    return {
        "nodeId": server.config.node_id,
        "ports": {kind: _port(server.urls.get(kind)) for kind in ("ws", "wss", "hls", "rtsp")},
        "sessions": len(server.sessions),
        "streams": live_streams(server),
        "records": server.recording.records(),
    }


def add_routes(app: web.Application, server: Server) -> None:
    from .rest_api import WEB_DIR, _json_body  # the REST API's body rules and web folder

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / PAGE, headers={"Cache-Control": "no-cache"})

    async def streams(request: web.Request) -> web.Response:
        if request.method == "POST":
            await _json_body(request)
        return web.json_response(overview(server), headers={"Cache-Control": "no-store"})

    app.router.add_get("/dashboard", page)
    app.router.add_post("/rest-api/dashboard/streams", streams)
    app.router.add_get("/rest-api/dashboard/streams", streams)
