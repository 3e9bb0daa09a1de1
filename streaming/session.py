"""Client sessions: one per `connection`, alive while its WebSocket is, or for a grace period after it
drops when the client asked for keepAlive (it comes back with its authToken).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from .apps import App
from .hooks import EventQueue, HookClient
from .rest_config import RestClientConfig

log = logging.getLogger(__name__)

# The SIP fields of `connection` (the WebSDK's sipOptions) that ConnectionStatusEvent carries.
SIP_FIELDS = ("sipLogin", "sipAuthenticationName", "sipPassword", "sipVisibleName", "sipDomain",
              "sipOutboundProxy", "sipProxy", "sipPort", "sipRegisterRequired", "sipContactParams")


class SessionState(Enum):
    ESTABLISHED = "ESTABLISHED"  # a WebSocket is attached
    DETACHED = "DETACHED"  # keepAlive session waiting for its client to reconnect
    CLOSED = "CLOSED"


class Session:
    def __init__(self, node_id: str, app: App, client_data: dict[str, Any], rest_config: RestClientConfig,
                 hooks: HookClient, remote: str | None):
        self.id = str(uuid.uuid4())
        self.auth_token = secrets.token_urlsafe(24)
        self.node_id = node_id
        self.app = app
        self.client_data = client_data
        self.rest_config = rest_config
        self.keep_alive = client_data.get("keepAlive") is True
        self.remote = remote
        self.state = SessionState.ESTABLISHED
        self.created_at = time.time()
        self.events = EventQueue(hooks, app)
        self._send: Callable[[str], Awaitable[None]] | None = None
        self.connection: Any = None  # the ClientConnection attached now, if any
        self._detach_timer: asyncio.TimerHandle | None = None
        self.close_callbacks: list[Callable[[Session, str], Awaitable[None]]] = []

    @property
    def context(self) -> dict[str, str]:
        return {"nodeId": self.node_id, "sessionId": self.id, "appKey": self.app.app_key}

    def attach(self, send: Callable[[str], Awaitable[None]], remote: str | None) -> None:
        self._send = send
        self.remote = remote
        self.state = SessionState.ESTABLISHED
        if self._detach_timer is not None:
            self._detach_timer.cancel()
            self._detach_timer = None

    def detach(self) -> None:
        self._send = None
        self.state = SessionState.DETACHED

    async def send(self, text: str) -> None:
        """Send to the client if it is attached; a session without a socket just misses the message."""
        send = self._send
        if send is None:
            return
        try:
            await send(text)
        except (ConnectionError, RuntimeError) as exc:  # the socket closed under us
            log.debug("session %s: send failed: %s", self.id, exc)

    def report(self, method: str, body: dict[str, Any]) -> None:
        """Queue an event hook (ConnectionStatusEvent, StreamStatusEvent ...) with the context fields."""
        config = self.rest_config.for_method(method)
        self.events.push(method, {**body, **self.context}, config)

    def report_connection_status(self, status: str, info: str) -> None:
        """ConnectionStatusEvent with what the backend knows a connection by (WCS's fields): its
        `custom`, `mediaProviders`, `authToken` and the SIP fields it connected with. A connection that
        failed is reported with its status and info only, as WCS does."""
        body: dict[str, Any] = {"status": status, "info": info}
        if status != "FAILED":
            body["authToken"] = self.auth_token
            for key in ("mediaProviders", "custom", *SIP_FIELDS):
                if key in self.client_data:
                    body[key] = self.client_data[key]
        self.report("ConnectionStatusEvent", body)

    def describe(self) -> dict[str, Any]:
        return {
            **self.context,
            "status": self.state.value,
            "remoteAddress": self.remote,
            "keepAlive": self.keep_alive,
            "createdAt": int(self.created_at * 1000),
            "clientVersion": self.client_data.get("clientVersion"),
            "clientOSVersion": self.client_data.get("clientOSVersion"),
            "clientBrowserVersion": self.client_data.get("clientBrowserVersion"),
            "mediaProviders": self.client_data.get("mediaProviders"),
            "custom": self.client_data.get("custom"),
        }


class SessionRegistry:
    def __init__(self, keepalive_grace: float):
        self.keepalive_grace = keepalive_grace
        self._by_id: dict[str, Session] = {}
        self._by_token: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, session: Session) -> None:
        self._by_id[session.id] = session
        self._by_token[session.auth_token] = session

    def get(self, session_id: str) -> Session | None:
        return self._by_id.get(session_id)

    def by_token(self, token: str) -> Session | None:
        return self._by_token.get(token)

    def all(self) -> list[Session]:
        return list(self._by_id.values())

    def detach(self, session: Session, reason: str) -> None:
        """The socket dropped: keep a keepAlive session for the grace period, close any other."""
        if session.state is SessionState.CLOSED:
            return
        if not session.keep_alive:
            asyncio.get_running_loop().create_task(self.close(session, reason))
            return
        session.detach()
        loop = asyncio.get_running_loop()
        log.info("session %s detached (%s); kept %g s for a reconnect", session.id, reason,
                 self.keepalive_grace)
        session._detach_timer = loop.call_later(
            self.keepalive_grace,
            lambda: loop.create_task(self.close(session, f"{reason}; no reconnect within "
                                                         f"{self.keepalive_grace:g} s")))

    async def close(self, session: Session, reason: str) -> None:
        if session.state is SessionState.CLOSED:
            return
        session.state = SessionState.CLOSED
        if session._detach_timer is not None:
            session._detach_timer.cancel()
        self._by_id.pop(session.id, None)
        self._by_token.pop(session.auth_token, None)
        connection, session.connection = session.connection, None
        session._send = None
        if connection is not None:
            await connection.ws.close(code=1000, message=reason[:120].encode())
        for callback in session.close_callbacks:
            try:
                await callback(session, reason)
            except Exception:
                log.exception("session %s: close callback failed", session.id)
        session.report_connection_status("DISCONNECTED", reason)
        log.info("session %s closed: %s", session.id, reason)
        await session.events.close(timeout=10.0)
