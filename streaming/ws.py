"""One client WebSocket: reads frames, answers pings at once, and hands every other message to a worker
that handles them in order. A bad frame gets a `fail` answer and the connection goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from . import logs, protocol
from .apps import DEFAULT_APP_KEY, AppRegistry
from .hooks import CONTEXT_FIELDS, HookClient
from .protocol import ClientMessage, ProtocolError
from .rest_config import MethodConfig, RestClientConfig
from .rtsp_pull.urls import is_rtsp_url, masked
from .session import Session, SessionRegistry, SessionState

log = logging.getLogger(__name__)

MAX_PENDING_MESSAGES = 256
# Fields of `connection` that are the session's own business, never echoed or forwarded as data.
_PRIVATE_CONNECT_FIELDS = ("authToken", "restClientConfig")

Handler = Callable[[Session, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class ConnectionServices:
    """What a client connection uses of the server, made once by it (streaming/server.py) and shared by
    every connection."""

    node_id: str
    apps: AppRegistry  # the appKey of a `connection` names one
    hooks: HookClient  # connect, and how long the backend may take to answer it
    sessions: SessionRegistry  # established sessions, and keepAlive sessions a client may resume
    handlers: Mapping[str, Handler]  # every client message after `connection`, by name
    on_session_closed: Callable[[Session, str], Awaitable[None]]  # the session's streams end
    ping_interval: float
    ping_probes: int  # silent ping intervals before the socket is closed
    max_message_bytes: int
    connect_on_error: str  # hooks.connect_on_error: FAIL or LOG when the backend cannot be asked
    on_session_established: Callable[[Session], Awaitable[None]] | None = None  # SIP registers


class ClientConnection:
    def __init__(self, services: ConnectionServices, ws: web.WebSocketResponse, request: web.Request):
        self.services = services
        self.ws = ws
        self.request = request
        self.remote = request.remote
        self.session: Session | None = None
        self.loop = asyncio.get_running_loop()
        self.last_seen = self.loop.time()
        self._pending: asyncio.Queue[ClientMessage] = asyncio.Queue(MAX_PENDING_MESSAGES)
        self._close_reason = "Normal disconnect"
        self._connecting = False
        self._connect_done = asyncio.Event()
        self._reader_done = False

    async def send(self, text: str) -> None:
        if not self.ws.closed:
            await self.ws.send_str(text)

    async def run(self) -> None:
        services = self.services
        pinger = self.loop.create_task(self._pinger(services.ping_interval, services.ping_probes))
        worker = self.loop.create_task(self._worker())
        limit = services.max_message_bytes
        try:
            async for msg in self.ws:
                self.last_seen = self.loop.time()
                if msg.type is WSMsgType.TEXT:
                    await self._on_text(msg.data, limit)
                elif msg.type is WSMsgType.BINARY:
                    await self._fail("Binary frames are not supported: every message is JSON text")
                elif msg.type is WSMsgType.ERROR:
                    self._close_reason = f"Connection error: {self.ws.exception()}"
                    break
        finally:
            self._reader_done = True
            pinger.cancel()
            if self._connecting:
                # The backend is deciding this client's connect: let it answer (within the hook
                # timeout) so it is told how the session ended, then stop the worker.
                self.loop.create_task(self._stop_after_connect(worker))
            else:
                worker.cancel()
            if self.ws.close_code not in (None, 1000, 1001) and self._close_reason == "Normal disconnect":
                self._close_reason = f"Connection closed with code {self.ws.close_code}"
            session = self.session
            if session is not None and session.connection is self:
                logs.bind(session_id=session.id)
                session.connection = None
                self.services.sessions.detach(session, self._close_reason)

    async def _on_text(self, text: str, limit: int) -> None:
        if len(text) > limit:
            await self._fail(f"Message too large: {len(text)} characters, the limit is {limit}")
            return
        try:
            message = protocol.parse_frame(text)
        except ProtocolError as exc:
            await self._fail(exc.info, exc.api_method, exc.id)
            return
        if message.name == "ping":
            await self.send(protocol.PONG)
            return
        if message.name == "pong":
            return
        try:
            self._pending.put_nowait(message)
        except asyncio.QueueFull:
            await self._fail(f"Too many requests in flight ({MAX_PENDING_MESSAGES}); {message.name} dropped",
                             message.name)

    async def _worker(self) -> None:
        while True:
            message = await self._pending.get()
            try:
                await self._dispatch(message)
            except ProtocolError as exc:
                await self._fail(exc.info, exc.api_method, exc.id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("error handling %s", message.name)
                await self._fail(f"Internal error while handling {message.name}", message.name)

    async def _fail(self, info: str, api_method: str | None = None, id: str | None = None) -> None:
        """Tell the client (`fail`, the WebSDK's WARN). An error that is not a stream's status (those go
        to the backend as StreamStatusEvent FAILED) is also reported to the backend as ErrorEvent."""
        await self.send(protocol.fail(info, api_method, id))
        if self.session is not None and api_method != "StreamStatusEvent":
            event: dict[str, Any] = {"info": info}
            if api_method is not None:
                event["apiMethod"] = api_method
            if id is not None:
                event["id"] = id
            self.session.report("ErrorEvent", event)

    async def _dispatch(self, message: ClientMessage) -> None:
        assert message.data is not None
        if self.session is None:
            if message.name != "connection":
                raise ProtocolError(f"Session is not established: send 'connection' before {message.name}",
                                    message.name)
            self._connecting = True
            try:
                await self._connect(message.data)
            finally:
                self._connecting = False
                self._connect_done.set()
            return
        # Log lines of this message carry its session and stream (streaming/logs.py).
        logs.bind(session_id=self.session.id, **_stream_ids(message.data))
        if message.name == "connection":
            raise ProtocolError("Session is already established", "connection")
        handler = self.services.handlers.get(message.name)
        if handler is None:
            raise ProtocolError(f"{message.name} is not supported by this server", message.name)
        await handler(self.session, message.data)

    # -- connection -------------------------------------------------------------------------------

    async def _connect(self, obj: dict[str, Any]) -> None:
        app_key = protocol.require_str(obj, "appKey", "connection", max_length=64, optional=True)
        app_key = app_key or DEFAULT_APP_KEY
        token = obj.get("authToken")
        if isinstance(token, str) and token and await self._resume(token, app_key, obj):
            return
        app = self.services.apps.get(app_key)
        if app is None:
            await self._refuse(f"Unknown application: appKey {app_key!r} is not registered")
            return
        client_data = {k: v for k, v in obj.items() if k not in _PRIVATE_CONNECT_FIELDS}
        client_data["appKey"] = app_key
        session = Session(self.services.node_id, app, client_data, RestClientConfig(), self.services.hooks,
                          self.remote)
        logs.bind(session_id=session.id)
        body = {**client_data, "remoteAddress": self.remote, **session.context}
        asking = MethodConfig(on_error=self.services.connect_on_error)
        result = await self.services.hooks.call(app, "connect", body, asking)
        if not result.allowed:
            reason = result.reason or "Restricted access"
            session.report_connection_status("FAILED", reason)
            self.loop.create_task(session.events.close(timeout=10.0))
            await self._refuse(reason)
            return
        answer = result.answer if isinstance(result.answer, dict) else {}
        # The answer's restClientConfig rules every later call, and this answer too: under
        # OVERWRITE the backend can rewrite connect fields (custom, ...) in the same reply.
        rest_config, problems = RestClientConfig.parse(answer.get("restClientConfig"))
        for problem in problems:
            log.warning("app %s: %s", app.app_key, problem)
        merged = rest_config.for_method("connect").merge_answer(result.data, answer, protected=CONTEXT_FIELDS)
        data = {k: v for k, v in merged.items()
                if k not in _PRIVATE_CONNECT_FIELDS and k not in session.context and k != "remoteAddress"}
        session.client_data = data
        session.rest_config = rest_config
        if self._reader_done or self.ws.closed:  # the client left while the backend was deciding
            session.report_connection_status("DISCONNECTED", "Client left before the session was established")
            self.loop.create_task(session.events.close(timeout=10.0))
            return
        self.services.sessions.add(session)
        session.close_callbacks.append(self.services.on_session_closed)
        self._attach(session)
        await self._send_user_data(session)
        session.report_connection_status("ESTABLISHED", "Normal connection")
        if self.services.on_session_established is not None:
            await self.services.on_session_established(session)
        log.info("session %s established: app %s from %s", session.id, app.app_key, self.remote)

    async def _resume(self, token: str, app_key: str, obj: dict[str, Any]) -> bool:
        """Reattach a keepAlive session whose client comes back with its authToken."""
        session = self.services.sessions.by_token(token)
        if session is None or session.state is SessionState.CLOSED or session.app.app_key != app_key:
            log.info("connection from %s with an unknown or expired authToken: new session", self.remote)
            return False
        old = session.connection
        if old is not None and old is not self:
            # The client reconnected before we noticed its old socket was gone.
            session.connection = None
            await old.ws.close(code=1000, message=b"Session taken over by a reconnect")
        if "keepAlive" in obj:
            session.keep_alive = obj["keepAlive"] is True
        self._attach(session)
        await self._send_user_data(session)
        log.info("session %s resumed from %s", session.id, self.remote)
        return True

    def _attach(self, session: Session) -> None:
        logs.bind(session_id=session.id)
        self.session = session
        session.connection = self
        session.attach(self.send, self.remote)

    async def _send_user_data(self, session: Session) -> None:
        user_data = {**session.client_data, **session.context, "authToken": session.auth_token}
        user_data = session.rest_config.for_method("connect").for_client(user_data)
        await self.send(protocol.frame("getUserData", user_data))

    async def _refuse(self, reason: str) -> None:
        """Tell the client why, then make its WebSocket fail rather than close.

        The WebSDK reports a session FAILED only from the socket's `error` event, and a browser fires
        that only when it has to fail the connection: a dropped TCP connection or a normal close frame
        give just `close` (DISCONNECTED). A close frame with the reserved code 1006 is refused by the
        browser as a protocol error, which fails the connection: the client sees WARN with the reason
        (the `fail` message), then FAILED.
        """
        log.info("connection from %s refused: %s", self.remote, reason)
        self._close_reason = f"Refused: {reason}"
        await self.send(protocol.fail(reason, "connect"))
        await self.ws.close(code=1006, message=b"Refused")

    async def _stop_after_connect(self, worker: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait_for(self._connect_done.wait(), self.services.hooks.timeout + 5)
        except TimeoutError:
            pass
        worker.cancel()

    async def _pinger(self, interval: float, probes: int) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.loop.time() - self.last_seen > interval * probes:
                self._close_reason = "Terminated by keep-alive"
                log.info("connection from %s silent for %d pings: closing", self.remote, probes)
                await self.ws.close(code=1001, message=b"Terminated by keep-alive")
                return
            try:
                await self.send(protocol.PING)
            except (ConnectionError, RuntimeError):
                return


def _stream_ids(data: Mapping[str, Any]) -> dict[str, str | None]:
    """The stream a client message concerns, for its log lines (a camera URL without its password)."""
    name, msid = data.get("name"), data.get("mediaSessionId")
    return {"stream": (masked(name) if is_rtsp_url(name) else name[:256]) if isinstance(name, str) else None,
            "media_session_id": msid[:128] if isinstance(msid, str) else None}
