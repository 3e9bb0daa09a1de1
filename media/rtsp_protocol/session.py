"""The RTSP sessions of one server connection, with no I/O: what a request URI names and the session
states (RFC 2326 section A.2: Init, Ready, Playing) with the 4xx rules (455 Method Not Valid in This
State, 454 Session Not Found, 459 Aggregate Operation Not Allowed, 461 Unsupported Transport). A session
id is only known to the connection that made it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .parser import MAX_REQUEST_LINE, Request
from .transport import Transport

METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER")
PUBLIC = ", ".join(METHODS)


# --- URLs ------------------------------------------------------------------------------------------


@dataclass
class Target:
    """What a request URI names: rtsp://host:port/{name}[/trackID=N][?token=...]."""

    name: str
    track: int | None  # None: the aggregate (the whole stream)
    query: dict[str, str]


def parse_target(uri: str) -> Target | None:
    """None when the URI names nothing we serve (`*` or a path of another shape)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("rtsp", "rtspt") or len(uri) > MAX_REQUEST_LINE:
        return None
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments or len(segments) > 2:
        return None
    track: int | None = None
    if len(segments) == 2:
        match = re.fullmatch(r"trackID=(\d{1,2})", segments[1])
        if match is None:
            return None
        track = int(match.group(1))
    query: dict[str, str] = {}
    for item in parts.query.split("&"):
        key, _, value = item.partition("=")
        if key:
            query[unquote(key)] = unquote(value)
    return Target(segments[0], track, query)


# --- sessions: the state machine ---------------------------------------------------------------------

INIT, READY, PLAYING = "init", "ready", "playing"


class RtspError(Exception):
    """A request that must be refused: status and why."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class SessionState:
    id: str
    name: str  # the stream every track of the session belongs to
    state: str = READY
    tracks: dict[int, Transport] = field(default_factory=dict)
    last_activity: float = 0.0


class SessionMachine:
    """The sessions of one connection and every rule of section A.2, in one place. Each method either
    returns what changed or raises RtspError; the caller does the I/O."""

    def __init__(self, timeout: float, max_sessions: int = 8):
        self.timeout = timeout
        self.max_sessions = max_sessions
        self.sessions: dict[str, SessionState] = {}

    def session_header(self, session: SessionState) -> str:
        return f"{session.id};timeout={int(self.timeout)}"

    def find(self, request: Request, now: float, required: bool, method: str) -> SessionState | None:
        session_id = request.session_id
        if session_id is None:
            if required:
                raise RtspError(455, f"{method} needs a session: SETUP first")
            return None
        session = self.sessions.get(session_id)
        if session is None:
            raise RtspError(454, "no such session on this connection")
        session.last_activity = now
        return session

    def setup(self, request: Request, target: Target, transport: Transport, now: float,
              used_channels: set[int]) -> tuple[SessionState, Transport]:
        """Add a track to the request's session (a new one without a Session header)."""
        if target.track is None:
            raise RtspError(459, "SETUP names one track (trackID=N), not the aggregate")
        session = self.find(request, now, required=False, method="SETUP")
        if session is not None:
            if session.name != target.name:
                raise RtspError(459, "every track of a session must belong to one stream")
            if session.state == PLAYING:
                raise RtspError(455, "SETUP while playing: PAUSE first")
            if target.track in session.tracks:
                raise RtspError(455, f"track {target.track} is set up already")
        elif len(self.sessions) >= self.max_sessions:
            raise RtspError(503, f"at most {self.max_sessions} sessions per connection")
        if transport.tcp:
            if transport.interleaved is None:
                transport = Transport(tcp=True, interleaved=_free_channels(used_channels))
            a, b = transport.interleaved  # type: ignore[misc]
            if a in used_channels or b in used_channels or a == b:
                raise RtspError(461, f"interleaved channels {a}-{b} are in use on this connection")
        if session is None:
            session = SessionState(secrets.token_hex(8).upper(), target.name, last_activity=now)
            self.sessions[session.id] = session
        session.tracks[target.track] = transport
        return session, transport

    def play(self, request: Request, target: Target | None, now: float) -> SessionState:
        session = self.find(request, now, required=True, method="PLAY")
        assert session is not None
        if target is not None and target.name != session.name:
            raise RtspError(459, "PLAY names another stream than the session's")
        session.state = PLAYING
        return session

    def pause(self, request: Request, now: float) -> SessionState:
        session = self.find(request, now, required=True, method="PAUSE")
        assert session is not None
        session.state = READY
        return session

    def teardown(self, request: Request, now: float) -> SessionState:
        session = self.find(request, now, required=True, method="TEARDOWN")
        assert session is not None
        del self.sessions[session.id]
        return session

    def expired(self, now: float) -> list[SessionState]:
        gone = [s for s in self.sessions.values() if now - s.last_activity > self.timeout]
        for session in gone:
            del self.sessions[session.id]
        return gone


def _free_channels(used: set[int]) -> tuple[int, int]:
    for a in range(0, 254, 2):
        if a not in used and a + 1 not in used:
            return a, a + 1
    raise RtspError(461, "no free interleaved channels on this connection")
