"""A client session of the WebSDK protocol: the WebSocket, `connection` → `getUserData`, ping → pong,
and the signalling state of each stream (its status events and the server's SDP).

`Session.handle_frame` is the whole dispatch and does no I/O (it returns the answer to send, if any), so
it is tested without a socket. What the official client does is in
node_modules/@flashphoner/websdk/src/flashphoner-core.js (createWS: onopen, onmessage).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import platform
from collections.abc import Callable, Generator
from importlib import metadata
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
import aiortc

if TYPE_CHECKING:
    from .webrtc import Player, Publisher

log = logging.getLogger(__name__)

# Stream statuses (the WebSDK's constants.js STREAM_STATUS) after which the server forgets the stream.
ENDED_STATUSES = frozenset({"FAILED", "STOPPED", "UNPUBLISHED"})


def client_version() -> str:
    try:
        version = metadata.version("streaming")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"streaming-client/{version} aiortc/{aiortc.__version__}"


class ClientError(Exception):
    """Anything the client could not do; `info` is the reason (the server's, when it gave one)."""

    def __init__(self, info: str):
        super().__init__(info)
        self.info = info


class ConnectionRefused(ClientError):
    """The server (or the application's backend) refused the session: a `fail`, then the socket failed."""


class SessionClosed(ClientError):
    """The WebSocket closed while something was waiting on it."""


class WaitTimeout(ClientError, TimeoutError):
    """A wait ran out of time; the message says what was awaited and what was seen instead."""


class StreamFailed(ClientError):
    """A stream ended badly: FAILED from the server (with its `info`), or its media connection failed."""

    def __init__(self, info: str, *, name: str, media_session_id: str, status: str):
        super().__init__(info)
        self.name = name
        self.media_session_id = media_session_id
        self.status = status

    def __str__(self) -> str:
        return f"stream {self.name!r} {self.status}: {self.info}"


class _Pulse:
    """Wakes every waiter when something changed; waiters re-check their own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout if math.isfinite(timeout) else None)
        except TimeoutError:
            pass


class StreamSignal:
    """The signalling side of one stream, keyed by its client-made mediaSessionId: every status event
    the server sent for it, the current status and info, and the server's SDP."""

    def __init__(self, session: Session, media_session_id: str, name: str, published: bool):
        self.session = session
        self.media_session_id = media_session_id
        self.name = name
        self.published = published
        self.status = "NEW"
        self.info: str | None = None
        self.events: list[dict[str, Any]] = []
        self.remote_sdp: str | None = None
        self.local_error: str | None = None  # set by the media side (ICE or DTLS failed here)

    @property
    def request(self) -> str:
        return "publishStream" if self.published else "playStream"

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES or self.local_error is not None

    def on_status(self, obj: dict[str, Any]) -> None:
        self.events.append(obj)
        status = obj.get("status")
        if isinstance(status, str) and status:
            self.status = status
        info = obj.get("info")
        if isinstance(info, str) and info:
            self.info = info
        self.session._pulse.fire()

    def fail_locally(self, info: str) -> None:
        if self.local_error is None:
            self.local_error = info
            self.session._pulse.fire()

    def failure(self) -> StreamFailed | None:
        """The error this stream's state means, if it ended badly."""
        if self.status == "FAILED":
            return StreamFailed(self.info or "FAILED without info", name=self.name,
                                media_session_id=self.media_session_id, status="FAILED")
        if self.local_error is not None:
            return StreamFailed(self.local_error, name=self.name, media_session_id=self.media_session_id,
                                status="FAILED")
        return None

    async def wait(self, condition: Callable[[], bool], what: str, timeout: float,
                   fail_on_end: bool = True) -> None:
        """Until condition() holds. A FAILED stream raises StreamFailed; another end status raises
        StreamFailed too when fail_on_end (a stream that stopped will not start); the session closing
        raises SessionClosed; the timeout raises WaitTimeout naming `what`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if condition():
                return
            failure = self.failure()
            if failure is not None:
                raise failure
            if fail_on_end and self.status in ENDED_STATUSES:
                raise StreamFailed(self.info or self.status, name=self.name,
                                   media_session_id=self.media_session_id, status=self.status)
            if self.session.closed:
                raise SessionClosed(f"session closed while waiting for {what} of stream {self.name!r}"
                                    f" ({self.session.close_reason})")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WaitTimeout(f"no {what} for stream {self.name!r} within {timeout:g} s "
                                  f"(status {self.status}, info {self.info!r})")
            await self.session._pulse.wait(remaining)


class _Connecting:
    """What Session.connect returns: await it for a Session, or use it with `async with`."""

    def __init__(self, coro_factory: Callable[[], Any]):
        self._factory = coro_factory
        self._session: Session | None = None

    def __await__(self) -> Generator[Any, None, Session]:
        return self._factory().__await__()

    async def __aenter__(self) -> Session:
        self._session = await self._factory()
        return self._session

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()


class Session:
    """One WebSocket session with the server.

        async with Session.connect("ws://127.0.0.1:8080", app_key="defaultApp") as session:
            publisher = await session.publish("cam1", codec="H264")
            player = await session.play("cam1")
            await player.wait_frames(30, timeout=10)
    """

    def __init__(self, url: str, app_key: str = "defaultApp", custom: dict[str, Any] | None = None,
                 keep_alive: bool = False, auth_token: str | None = None):
        self.url = url
        self.app_key = app_key
        self.custom = custom
        self.keep_alive = keep_alive
        self.auth_token = auth_token
        self.status = "NEW"  # session statuses of the WebSDK: CONNECTED, ESTABLISHED, DISCONNECTED, FAILED
        self.user_data: dict[str, Any] | None = None
        self.session_id: str | None = None
        self.warnings: list[dict[str, Any]] = []  # `fail` messages: the WebSDK's SESSION_STATUS.WARN
        self.messages: list[dict[str, Any]] = []  # every frame received, in order
        self.pings_answered = 0
        self.streams: dict[str, StreamSignal] = {}
        self.media: list[Publisher | Player] = []
        self.close_reason: str | None = None
        self._pulse = _Pulse()
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    # -- connecting ------------------------------------------------------------------------------

    @classmethod
    def connect(cls, url: str, app_key: str = "defaultApp", *, custom: dict[str, Any] | None = None,
                keep_alive: bool = False, auth_token: str | None = None, timeout: float = 15.0) -> _Connecting:
        """Open the WebSocket, send `connection` and wait for `getUserData`. Raises ConnectionRefused with
        the server's reason when it refuses, WaitTimeout when it does not answer in time."""

        async def run() -> Session:
            session = cls(url, app_key, custom, keep_alive, auth_token)
            try:
                await session.open(timeout)
            except BaseException:
                await session.close()
                raise
            return session

        return _Connecting(run)

    def connection_message(self) -> dict[str, Any]:
        """data[0] of `connection`, as the WebSDK's onopen builds it."""
        obj: dict[str, Any] = {
            "appKey": self.app_key,
            "mediaProviders": ["WebRTC"],
            "keepAlive": self.keep_alive,
            "clientVersion": "2.0",
            "clientOSVersion": platform.platform(),
            "clientBrowserVersion": client_version(),
            "msePacketizationVersion": 2,
            "custom": self.custom if self.custom is not None else {},
        }
        if self.auth_token is not None:
            obj["authToken"] = self.auth_token
        return obj

    async def open(self, timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._http = aiohttp.ClientSession()
        try:
            self._ws = await self._http.ws_connect(self.url, max_msg_size=0, autoping=True,
                                                   timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
        except (aiohttp.ClientError, OSError) as exc:
            self.status = "FAILED"
            raise ClientError(f"cannot open {self.url}: {exc}") from exc
        self.status = "CONNECTED"
        self._reader = loop.create_task(self._read(), name=f"client-session-read {self.url}")
        await self.send("connection", self.connection_message())
        while self.status != "ESTABLISHED":
            if self.closed:
                info = self._refusal_info() or f"connection closed before getUserData ({self.close_reason})"
                self.status = "FAILED"
                raise ConnectionRefused(info)
            remaining = deadline - loop.time()
            if remaining <= 0:
                told = self._refusal_info()
                if told is not None:  # told why, but the socket lingers: refused all the same
                    self.status = "FAILED"
                    raise ConnectionRefused(told)
                raise WaitTimeout(f"no getUserData from {self.url} within {timeout:g} s")
            await self._pulse.wait(remaining)

    def _refusal_info(self) -> str | None:
        for warning in self.warnings:
            info = warning.get("info")
            if isinstance(info, str):
                return info
        return None

    # -- frames ----------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    def handle_frame(self, text: str) -> str | None:
        """Dispatch one server frame; returns the frame to answer with (pong), if any."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            log.warning("server sent malformed JSON: %.200s", text)
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("message"), str):
            log.warning("server sent a frame that is not a message: %.200s", text)
            return None
        self.messages.append(doc)
        name: str = doc["message"]
        data = doc.get("data")
        data = data if isinstance(data, list) else []
        obj = data[0] if data and isinstance(data[0], dict) else None
        answer: str | None = None
        if name == "ping":
            self.pings_answered += 1
            answer = json.dumps({"message": "pong", "data": [None]})
        elif name == "getUserData" and obj is not None:
            self.user_data = obj
            token = obj.get("authToken")
            self.auth_token = token if isinstance(token, str) else self.auth_token
            sid = obj.get("sessionId")
            self.session_id = sid if isinstance(sid, str) else None
            self.status = "ESTABLISHED"
        elif name == "setRemoteSDP":
            if len(data) >= 2 and isinstance(data[0], str) and isinstance(data[1], str):
                stream = self.streams.get(data[0])
                if stream is not None:
                    stream.remote_sdp = data[1]
                else:
                    log.info("setRemoteSDP for unknown stream %s", data[0])
        elif name in ("notifyStreamStatusEvent", "notifyVideoFormat") and obj is not None:
            stream = self.streams.get(str(obj.get("mediaSessionId")))
            if stream is not None:
                stream.on_status(obj)
        elif name == "fail":
            self._on_fail(obj or {})
        self._pulse.fire()
        return answer

    def _on_fail(self, obj: dict[str, Any]) -> None:
        self.warnings.append(obj)
        raw_info = obj.get("info")
        info = raw_info if isinstance(raw_info, str) else "fail without info"
        log.info("server fail: %s", obj)
        # As the WebSDK: a fail for StreamStatusEvent is the stream with mediaSessionId == id failing.
        stream = self.streams.get(str(obj.get("id"))) if obj.get("id") is not None else None
        if stream is None and obj.get("id") is None:
            # A request the server could not read names only its method; the server handles requests
            # in order, so it is the oldest stream still waiting on that request.
            method = obj.get("apiMethod")
            waiting = [s for s in self.streams.values()
                       if s.status == "PENDING" and method in (s.request, "stream")]
            stream = waiting[0] if waiting else None
        if stream is not None:
            stream.on_status({"mediaSessionId": stream.media_session_id, "status": "FAILED", "info": info})

    async def _read(self) -> None:
        assert self._ws is not None
        reason = "closed by the server"
        try:
            async for msg in self._ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    answer = self.handle_frame(msg.data)
                    if answer is not None:
                        await self._ws.send_str(answer)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    reason = f"socket error: {self._ws.exception()}"
                    break
            code = self._ws.close_code
            if code not in (None, 1000):
                reason = f"socket failed (close code {code})"
        except (aiohttp.ClientError, ConnectionError) as exc:
            reason = f"socket error: {exc}"
        finally:
            self._mark_closed(reason)

    def _mark_closed(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            if self.status != "FAILED":
                self.status = "DISCONNECTED"
            self._pulse.fire()

    async def send(self, message: str, obj: Any) -> None:
        if self._ws is None or self._ws.closed:
            raise SessionClosed(f"cannot send {message}: the session is closed ({self.close_reason})")
        await self._ws.send_str(json.dumps({"message": message, "data": [obj]}))

    async def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        """Until condition() holds after some frame arrived; WaitTimeout or SessionClosed otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if self.closed:
                raise SessionClosed(f"session closed while waiting for {what} ({self.close_reason})")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WaitTimeout(f"no {what} within {timeout:g} s")
            await self._pulse.wait(remaining)

    # -- streams ---------------------------------------------------------------------------------

    def new_stream(self, media_session_id: str, name: str, published: bool) -> StreamSignal:
        stream = StreamSignal(self, media_session_id, name, published)
        self.streams[media_session_id] = stream
        return stream

    async def publish(self, name: str, *, video: bool = True, audio: bool = True, codec: str | None = None,
                      file: str | None = None, width: int = 640, height: int = 480, fps: float = 30.0,
                      record: bool = False, custom: dict[str, Any] | None = None,
                      timeout: float = 20.0) -> Publisher:
        """Publish `name` (test pattern and tone, or `file`) and wait for PUBLISHING. Raises StreamFailed
        with the server's info when it answers FAILED."""
        from .webrtc import Publisher

        publisher = Publisher(self, name, video=video, audio=audio, codec=codec, file=file, width=width,
                              height=height, fps=fps, record=record, custom=custom)
        self.media.append(publisher)
        await publisher.start(timeout)
        return publisher

    async def play(self, name: str, *, video: bool = True, audio: bool = True, codec: str | None = None,
                   custom: dict[str, Any] | None = None, inspect: bool = False, width: int = 0, height: int = 0,
                   timeout: float = 20.0) -> Player:
        """Play `name` and wait for PLAYING; frames are counted from then on (see Player). `width` and
        `height` ask the server for another size (it transcodes); `codec` limits what the offer accepts."""
        from .webrtc import Player

        player = Player(self, name, video=video, audio=audio, codec=codec, custom=custom, inspect=inspect,
                        width=width, height=height)
        self.media.append(player)
        await player.start(timeout)
        return player

    # -- closing ---------------------------------------------------------------------------------

    async def close(self) -> None:
        for media in list(self.media):
            try:
                await media.stop()
            except ClientError as exc:
                log.info("stopping %s on close: %s", media.name, exc)
        self.media.clear()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()
        self._mark_closed("closed by the client")
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
