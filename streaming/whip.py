"""WHIP ingest (RFC 9725) and WHEP playback (draft-ietf-wish-whep) on the REST port.

`POST /whip/{name}` with an SDP offer publishes `name`; `POST /whep/{name}` plays it. Either answers
201 with the SDP answer (carrying all of the server's candidates) and a `Location`, the session's
resource: `DELETE` ends it, `PATCH` with `application/trickle-ice-sdpfrag` trickles the client's
candidates (an ICE restart is answered 422), `OPTIONS` answers CORS preflights.

Each resource is a session of its own (listed by /rest-api/connection/find_all, `mediaProviders`
["WHIP"] or ["WHEP"]) with one stream, handed to the same StreamService as a WebSDK client's
publishStream / playStream: the same routing core, statuses, timeouts and publishStream / playStream
hooks, whose body carries the `Authorization: Bearer` token as `token`. The session has no WebSocket:
what the stream service would send its client (setRemoteSDP, notifyStreamStatusEvent) is read here
instead, so the answer and every end of the stream (ICE or DTLS failure, RTP inactivity, the publisher
gone, a REST terminate) are known, and an ended stream's resource and session go away with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiortc.sdp import candidate_from_sdp

from media.webrtc import SdpError, parse_offer

from .apps import AppRegistry
from .hooks import HookClient
from .protocol import ProtocolError
from .rest_config import RestClientConfig
from .session import Session, SessionRegistry
from .streams import MAX_SDP, StreamService, validate_name
from .whip_protocol import (
    CORS_HEADERS,
    SDP_TYPE,
    TRICKLE_TYPE,
    TrickleFragment,
    bearer_token,
    etag_matches,
    failure_status,
    media_type,
    offer_ufrag,
    parse_fragment,
)

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger(__name__)

PROVIDERS = ("WHIP", "WHEP")
ENDED_STATUSES = frozenset({"FAILED", "STOPPED", "UNPUBLISHED"})
DELETED = "Stopped by {} DELETE"


class StartFailed(Exception):
    """The stream of a POST did not start: the HTTP status and a sentence for the client."""

    def __init__(self, status: int, info: str):
        super().__init__(info)
        self.status = status
        self.info = info


@dataclass(eq=False)
class Resource:
    """One WHIP or WHEP session: its stream's media session id is the resource id."""

    id: str
    provider: str  # WHIP or WHEP
    name: str
    session: Session
    offer_ufrag: str | None
    answer: asyncio.Future[str]
    ended: bool = False

    @property
    def path(self) -> str:
        return f"/{self.provider.lower()}/session/{self.id}"

    @property
    def etag(self) -> str:
        return f'"{self.id}"'


class WhipService:
    """`streams`: the routing core's stream service; `sessions`: where the resources' sessions are
    listed (and terminated by REST); `apps` and `app_key`: the application whose backend gets the
    hooks; `on_session_closed`: the server's end of a session (its streams end)."""

    def __init__(self, streams: StreamService, sessions: SessionRegistry, apps: AppRegistry, hooks: HookClient,
                 node_id: str, app_key: str, on_session_closed: Callable[[Session, str], Awaitable[None]]):
        self.streams = streams
        self.sessions = sessions
        self.apps = apps
        self.hooks = hooks
        self.node_id = node_id
        self.app_key = app_key
        self._on_session_closed = on_session_closed
        self.resources: dict[str, Resource] = {}
        self._closing: set[asyncio.Task[None]] = set()

    # -- the resource's life ----------------------------------------------------------------------

    async def start(self, provider: str, name: str, offer: str, token: str | None, remote: str | None,
                    user_agent: str, record: bool = False) -> Resource:
        """Publish (WHIP) or play (WHEP) `name` with `offer`; StartFailed says why not."""
        problem = validate_name(name)
        if problem is not None:
            raise StartFailed(400, problem)
        try:
            kinds = {media.kind for media in parse_offer(offer, MAX_SDP).media}
        except SdpError as exc:
            raise StartFailed(400, f"Bad SDP: {exc}") from None
        app = self.apps.get(self.app_key)
        if app is None:
            raise StartFailed(503, f"The application {self.app_key!r} of {provider} is not registered")
        client_data = {"appKey": app.app_key, "mediaProviders": [provider], "clientVersion": user_agent[:200]}
        session = Session(self.node_id, app, client_data, RestClientConfig(), self.hooks, remote)
        loop = asyncio.get_running_loop()
        resource = Resource(secrets.token_hex(16), provider, name, session, offer_ufrag(offer), loop.create_future())
        session.attach(lambda text: self._deliver(resource, text), remote)
        self.sessions.add(session)
        self.resources[resource.id] = resource
        session.close_callbacks.append(self._on_session_closed)
        session.close_callbacks.append(lambda s, reason: self._forget(resource))
        session.report("ConnectionStatusEvent", {"status": "ESTABLISHED", "info": f"{provider} session"})
        obj: dict[str, Any] = {
            "mediaSessionId": resource.id, "name": name, "published": provider == "WHIP",
            "hasAudio": "audio" in kinds, "hasVideo": "video" in kinds, "status": "PENDING", "record": record,
            "mediaProvider": provider, "sdp": offer,
        }
        if token is not None:
            obj["token"] = token
        handler = self.streams.publish if provider == "WHIP" else self.streams.play
        try:
            await handler(session, obj)
            # A failure the service schedules rather than awaits (a bad name) is told a moment later.
            await asyncio.wait_for(asyncio.shield(resource.answer), self.hooks.timeout + 5)
        except StartFailed as exc:
            await self._close(session, f"{provider} refused: {exc.info}")
            raise
        except (ProtocolError, TimeoutError) as exc:
            info = exc.info if isinstance(exc, ProtocolError) else "The stream did not start in time"
            await self._close(session, f"{provider} failed: {info}")
            raise StartFailed(400 if isinstance(exc, ProtocolError) else 503, info) from None
        log.info("%s %s of %r from %s: %s", provider, "publish" if provider == "WHIP" else "play", name,
                 remote, resource.path)
        return resource

    async def _deliver(self, resource: Resource, text: str) -> None:
        """What the stream service sends the session's client: the answer, then statuses."""
        message = json.loads(text)
        name, data = message.get("message"), message.get("data") or [None]
        if name == "setRemoteSDP" and not resource.answer.done():
            resource.answer.set_result(str(data[1]))
        elif name == "notifyStreamStatusEvent" and isinstance(data[0], dict):
            status, info = data[0].get("status"), data[0].get("info") or ""
            if status not in ENDED_STATUSES:
                return
            if not resource.answer.done():
                resource.answer.set_exception(StartFailed(failure_status(info), info or status))
                return
            if resource.ended:  # a DELETE ends it and closes the session itself
                return
            # The stream ended after the answer: its resource and session go with it (not from in here:
            # the stream service is still ending the stream).
            self._close_soon(resource.session, f"{resource.provider} stream {status}: {info}")

    def _close_soon(self, session: Session, reason: str) -> None:
        """Close the session in a task of its own: closing waits for its last event hooks to be
        delivered, which a slow backend must not make an HTTP answer wait for."""
        task = asyncio.get_running_loop().create_task(self.sessions.close(session, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, session: Session, reason: str) -> None:
        """Close the session; return once it has left the registry (the task's first step, which runs
        before this coroutine goes on), not once the backend has its events."""
        self._close_soon(session, reason)
        await asyncio.sleep(0)

    async def _forget(self, resource: Resource) -> None:
        resource.ended = True
        self.resources.pop(resource.id, None)
        if not resource.answer.done():
            resource.answer.set_exception(StartFailed(503, "The session closed before the stream started"))
            resource.answer.exception()  # nobody may wait for it any more: marked as seen

    async def delete(self, resource: Resource) -> None:
        """DELETE: the publisher unpublishes (its viewers stop, told "Stopped by publisher stop") or the
        viewer stops; then the session closes."""
        resource.ended = True
        ms = self.streams.media_session(resource.id)
        if ms is not None and not ms.ended:
            handler = self.streams.unpublish if resource.provider == "WHIP" else self.streams.stop
            await handler(resource.session, {"mediaSessionId": resource.id})
        await self._close(resource.session, DELETED.format(resource.provider))

    async def trickle(self, resource: Resource, fragment: TrickleFragment) -> None:
        """PATCH: the client's candidates go to the ICE agent of the stream's peer connection."""
        if fragment.ufrag is not None and resource.offer_ufrag is not None and fragment.ufrag != resource.offer_ufrag:
            raise StartFailed(422, "ICE restarts are not supported: publish again with a new POST")
        ms = self.streams.media_session(resource.id)
        if ms is None or ms.ended or ms.endpoint is None:
            raise StartFailed(404, "The session has ended")
        pc = ms.endpoint.peer.pc
        transceivers = pc.getTransceivers()
        if not transceivers:
            return
        bundle_mid = transceivers[0].mid  # with BUNDLE the first section's transport carries them all
        for _mid, line in fragment.candidates:
            try:
                candidate = candidate_from_sdp(line[len("candidate:"):])
            except (ValueError, IndexError) as exc:
                raise StartFailed(400, f"Bad candidate {line[:80]!r}: {exc}") from None
            candidate.sdpMid = bundle_mid
            try:
                await pc.addIceCandidate(candidate)
            except ValueError as exc:  # after end-of-candidates, or an address aioice cannot use
                log.debug("%s: candidate %r not added: %s", resource.path, line[:80], exc)

    # -- HTTP ---------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        for provider in PROVIDERS:
            base = f"/{provider.lower()}"
            app.router.add_route("OPTIONS", base + "/{name}", self._options_endpoint)
            app.router.add_post(base + "/{name}", self._post_handler(provider))
            app.router.add_route("OPTIONS", base + "/session/{id}", self._options_resource)
            app.router.add_route("PATCH", base + "/session/{id}", self._patch_handler(provider))
            app.router.add_delete(base + "/session/{id}", self._delete_handler(provider))

    async def _options_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**CORS_HEADERS, "Accept-Post": SDP_TYPE})

    async def _options_resource(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**CORS_HEADERS, "Accept-Patch": TRICKLE_TYPE})

    def _post_handler(self, provider: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def post(request: web.Request) -> web.Response:
            if media_type(request.content_type) != SDP_TYPE:
                return _text(415, f"{provider} takes an SDP offer: Content-Type must be {SDP_TYPE}",
                             {"Accept-Post": SDP_TYPE})
            try:
                token = bearer_token(request.headers.get("Authorization"))
            except ValueError as exc:
                return _text(400, str(exc))
            if request.content_length is not None and request.content_length > MAX_SDP:
                return _text(413, f"The SDP offer is larger than {MAX_SDP} bytes")
            try:
                offer = (await request.content.read(MAX_SDP + 1)).decode()
            except UnicodeDecodeError:
                return _text(400, "Bad SDP: the offer is not UTF-8 text")
            if len(offer) > MAX_SDP:
                return _text(413, f"The SDP offer is larger than {MAX_SDP} bytes")
            record = request.query.get("record", "").lower() in ("1", "true", "yes")
            try:
                resource = await self.start(provider, request.match_info["name"], offer, token, request.remote,
                                            request.headers.get("User-Agent", ""), record=record)
            except StartFailed as exc:
                return _text(exc.status, exc.info)
            answer = resource.answer.result()
            headers = {**CORS_HEADERS, "Location": resource.path, "ETag": resource.etag,
                       "Accept-Patch": TRICKLE_TYPE}
            return web.Response(status=201, body=answer.encode(), content_type=SDP_TYPE, headers=headers)
        return post

    def _resource(self, request: web.Request, provider: str) -> Resource | None:
        resource = self.resources.get(request.match_info["id"])
        return resource if resource is not None and resource.provider == provider else None

    def _patch_handler(self, provider: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def patch(request: web.Request) -> web.Response:
            resource = self._resource(request, provider)
            if resource is None:
                return _text(404, f"No such {provider} session")
            if media_type(request.content_type) != TRICKLE_TYPE:
                return _text(415, f"PATCH takes {TRICKLE_TYPE}", {"Accept-Patch": TRICKLE_TYPE})
            if not etag_matches(request.headers.get("If-Match"), resource.etag):
                return _text(412, "If-Match does not match this session's ETag")
            try:
                fragment = parse_fragment((await request.content.read(20000)).decode())
                await self.trickle(resource, fragment)
            except UnicodeDecodeError:
                return _text(400, "The fragment is not UTF-8 text")
            except ValueError as exc:
                return _text(400, str(exc))
            except StartFailed as exc:
                return _text(exc.status, exc.info)
            return web.Response(status=204, headers={**CORS_HEADERS, "ETag": resource.etag})
        return patch

    def _delete_handler(self, provider: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def delete(request: web.Request) -> web.Response:
            resource = self._resource(request, provider)
            if resource is None:
                return _text(404, f"No such {provider} session")
            await self.delete(resource)
            return _text(200, f"{provider} session ended")
        return delete


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers={**CORS_HEADERS, **(headers or {})})


def add_routes(app: web.Application, server: Server) -> WhipService:
    """Make the WHIP/WHEP service of `server` and add its routes to the REST port's app."""
    service = WhipService(server.streams, server.sessions, server.apps, server.hooks, server.config.node_id,
                          server.config["whip.app_key"], server.on_session_closed)
    service.add_routes(app)
    app.router.add_get("/whip-demo", _demo_page)
    return service


async def _demo_page(request: web.Request) -> web.FileResponse:
    """A page that publishes the camera over WHIP and plays it back over WHEP with plain fetch()."""
    return web.FileResponse(Path(__file__).parent / "web" / "whip.html")
