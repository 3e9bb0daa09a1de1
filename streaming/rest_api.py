"""The HTTP side on the REST port (WCS: 8081): the management REST API, the embedded echo backend that
serves defaultApp, the demo page and the WebSDK bundle.

The REST API follows the WebSDK's rest module: POST with a JSON body, JSON answers, 404 when nothing
matches.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import dashboard, rest_auth, whip
from .apps import ECHO_BACKEND_PATH
from .rtsp_pull import NOT_ALLOWED, STREAM_NOT_FOUND, TERMINATED, WRONG_FORMAT, PullFailed
from .streams import validate_name

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"
MAX_BODY = 1_048_576


def _error(status: int, info: str) -> web.Response:
    return web.json_response({"status": status, "info": info}, status=status)


def _listing(found: list[Any], none: str) -> web.Response:
    """What a find answers: the matches, or 404 with `none` when there are none."""
    return web.json_response(found) if found else _error(404, none)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise web.HTTPBadRequest(text=json.dumps({"status": 400, "info": "Body is not valid JSON"}),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"status": 400, "info": "Body must be a JSON object"}),
                                 content_type="application/json")
    return body


def build_app(server: Server) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    rest_auth.protect(app, server.config)  # /rest-api/... and /metrics: token or Basic (streaming/rest_auth.py)
    routes = web.RouteTableDef()

    # -- embedded echo backend (defaultApp): approves everything by answering with what it got ----

    @routes.post(ECHO_BACKEND_PATH + "/{method}")
    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await _json_body(request))

    # -- connections --------------------------------------------------------------------------

    @routes.post("/rest-api/connection/find_all")
    async def connection_find_all(request: web.Request) -> web.Response:
        await _json_body(request)
        found = [s.describe() for s in server.sessions.all()]
        return _listing(found, "No connections")

    @routes.post("/rest-api/connection/find")
    async def connection_find(request: web.Request) -> web.Response:
        body = await _json_body(request)
        found = []
        for session in server.sessions.all():
            described = session.describe()
            if all(described.get(k) == v for k, v in body.items()):
                found.append(described)
        return _listing(found, "Connection not found")

    @routes.post("/rest-api/connection/terminate")
    async def connection_terminate(request: web.Request) -> web.Response:
        body = await _json_body(request)
        session_id = body.get("sessionId")
        if not isinstance(session_id, str):
            return _error(400, "Field 'sessionId' (string) is required")
        session = server.sessions.get(session_id)
        if session is None:
            return _error(404, "Connection not found")
        await server.sessions.close(session, "Terminated by REST /terminate")
        return web.Response(status=200)

    # -- streams ------------------------------------------------------------------------------

    @routes.post("/rest-api/stream/find_all")
    async def stream_find_all(request: web.Request) -> web.Response:
        await _json_body(request)
        found = server.streams.describe() + server.rtmp.describe()  # RTMP publishers too
        return _listing(found, "No streams")

    @routes.post("/rest-api/stream/find")
    async def stream_find(request: web.Request) -> web.Response:
        body = await _json_body(request)
        found = [s for s in server.streams.describe() + server.rtmp.describe()
                 if all(s.get(k) == v for k, v in body.items())]
        return _listing(found, "Stream not found")

    # -- RTSP pulls (the WebSDK's rest module: rtsp.pull/find/findAll/terminate) ----------------

    @routes.post("/rest-api/rtsp/startup")
    async def rtsp_startup(request: web.Request) -> web.Response:
        body = await _json_body(request)
        uri, local_name, transport = body.get("uri"), body.get("localStreamName"), body.get("transport")
        if not isinstance(uri, str) or not uri:
            return _error(400, "Field 'uri' (string) is required")
        if local_name is not None and (not isinstance(local_name, str) or validate_name(local_name)):
            return _error(400, "Field 'localStreamName' must be a valid stream name")
        if transport is not None and transport not in ("tcp", "udp"):
            return _error(400, "Field 'transport' must be 'tcp' or 'udp'")
        existing = server.pulls.find(uri)
        if existing is not None and local_name is not None and existing.local_name != local_name:
            return _error(409, "This URI is pulled already under another localStreamName")
        try:
            pull = await server.pulls.acquire(uri, keep=True, local_name=local_name,
                                              tcp=None if transport is None else transport == "tcp")
        except PullFailed as exc:
            status = {WRONG_FORMAT: 400, NOT_ALLOWED: 403, STREAM_NOT_FOUND: 404}.get(exc.info, 502)
            return web.json_response({"status": status, "info": exc.info, "reason": exc.detail}, status=status)
        return web.json_response(pull.describe())

    @routes.post("/rest-api/rtsp/find_all")
    async def rtsp_find_all(request: web.Request) -> web.Response:
        await _json_body(request)
        found = server.pulls.describe()
        return _listing(found, "No RTSP pulls")

    @routes.post("/rest-api/rtsp/find")
    async def rtsp_find(request: web.Request) -> web.Response:
        body = await _json_body(request)
        uri, status = body.get("uri"), body.get("status")
        pulls = [server.pulls.find(uri)] if isinstance(uri, str) else server.pulls.all()
        found = [p.describe() for p in pulls if p is not None and status in (None, "", p.status)]
        return _listing(found, "RTSP pull not found")

    @routes.post("/rest-api/rtsp/terminate")
    async def rtsp_terminate(request: web.Request) -> web.Response:
        body = await _json_body(request)
        uri = body.get("uri")
        if not isinstance(uri, str):
            return _error(400, "Field 'uri' (string) is required")
        pull = server.pulls.find(uri)
        if pull is None:
            return _error(404, "RTSP pull not found")
        await server.pulls.stop(pull, "STOPPED", TERMINATED)
        return web.Response(status=200)

    # -- transcoders and HLS ---------------------------------------------------------------------

    @routes.post("/rest-api/transcoder/find_all")
    async def transcoder_find_all(request: web.Request) -> web.Response:
        await _json_body(request)
        found = server.transcoders.describe()
        return _listing(found, "No transcoders")

    @routes.post("/rest-api/hls/find_all")
    async def hls_find_all(request: web.Request) -> web.Response:
        await _json_body(request)
        found = server.hls.describe()
        return _listing(found, "No HLS outputs")

    # -- stream events, data, snapshots (streaming/events.py, streaming/snapshots.py) ------------

    @routes.post("/rest-api/stream/event/send")
    async def stream_event_send(request: web.Request) -> web.Response:
        status, answer = server.events.rest_send_event(await _json_body(request))
        return web.json_response(answer, status=status)

    @routes.post("/rest-api/data/send")
    async def data_send(request: web.Request) -> web.Response:
        status, answer = await server.events.rest_send_data(await _json_body(request))
        return web.json_response(answer, status=status)

    @routes.post("/rest-api/stream/snapshot")
    async def stream_snapshot(request: web.Request) -> web.Response:
        status, answer = await server.snapshots.rest_snapshot(await _json_body(request))
        return web.json_response(answer, status=status)

    # -- server status ------------------------------------------------------------------------

    @routes.get("/metrics")  # Prometheus (streaming/metrics.py); credentials as rest.metrics_auth says
    async def metrics(request: web.Request) -> web.Response:
        return await server.metrics.handle(request)

    @routes.get("/health")
    async def health(request: web.Request) -> web.Response:
        return web.json_response(server.status())

    # -- demo page and the WebSDK bundle -------------------------------------------------------

    @routes.get("/")
    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    @routes.get("/favicon.ico")
    async def favicon(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app.add_routes(routes)
    server.recording.add_routes(app)  # /rest-api/recorder/..., /rest-api/record/..., /client/records/
    whip.add_routes(app, server)  # /whip/{name}, /whep/{name} and their sessions (streaming/whip.py)
    dashboard.add_routes(app, server)  # /dashboard and /rest-api/dashboard/streams (streaming/dashboard.py)
    server.pushes.add_routes(app)  # /rest-api/push/...
    server.rtmp.add_routes(app)  # /rest-api/rtmp/...
    websdk = server.websdk_dir()
    if websdk is not None:
        app.router.add_static("/websdk/", websdk, follow_symlinks=False, show_index=False)
    else:
        log.warning("the WebSDK (@flashphoner/websdk) is not installed: the demo page cannot load it; "
                    "run `npm ci` in the project folder or set --web-websdk-dir")
    return app
