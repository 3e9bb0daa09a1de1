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

from .apps import ECHO_BACKEND_PATH

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"
MAX_BODY = 1_048_576


def _error(status: int, info: str) -> web.Response:
    return web.json_response({"status": status, "info": info}, status=status)


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
        if not found:
            return _error(404, "No connections")
        return web.json_response(found)

    @routes.post("/rest-api/connection/find")
    async def connection_find(request: web.Request) -> web.Response:
        body = await _json_body(request)
        found = []
        for session in server.sessions.all():
            described = session.describe()
            if all(described.get(k) == v for k, v in body.items()):
                found.append(described)
        if not found:
            return _error(404, "Connection not found")
        return web.json_response(found)

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
        found = server.streams.describe()
        if not found:
            return _error(404, "No streams")
        return web.json_response(found)

    @routes.post("/rest-api/stream/find")
    async def stream_find(request: web.Request) -> web.Response:
        body = await _json_body(request)
        found = [s for s in server.streams.describe() if all(s.get(k) == v for k, v in body.items())]
        if not found:
            return _error(404, "Stream not found")
        return web.json_response(found)

    # -- transcoders and HLS ---------------------------------------------------------------------

    @routes.post("/rest-api/transcoder/find_all")
    async def transcoder_find_all(request: web.Request) -> web.Response:
        await _json_body(request)
        found = server.transcoders.describe()
        if not found:
            return _error(404, "No transcoders")
        return web.json_response(found)

    @routes.post("/rest-api/hls/find_all")
    async def hls_find_all(request: web.Request) -> web.Response:
        await _json_body(request)
        found = server.hls.describe()
        if not found:
            return _error(404, "No HLS outputs")
        return web.json_response(found)

    # -- server status ------------------------------------------------------------------------

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
    websdk = server.websdk_dir()
    if websdk is not None:
        app.router.add_static("/websdk/", websdk, follow_symlinks=False, show_index=False)
    else:
        log.warning("the WebSDK (@flashphoner/websdk) is not installed: the demo page cannot load it; "
                    "run `npm ci` in the project folder or set --web-websdk-dir")
    return app
