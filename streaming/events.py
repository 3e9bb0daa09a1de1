"""Stream events and data: sendStreamEvent, sendData, and their REST counterparts.

- A publisher's stream events (audioMuted, audioUnmuted, videoMuted, videoUnmuted, data) are first put
  to the backend (the sendStreamEvent hook, a direct invocation: it may refuse them, or overwrite their
  type, payload and info), then reach every viewer of the stream as `notifyStreamEvent` (the WebSDK's
  STREAM_EVENT), addressed to the viewer's own mediaSessionId, and the backend as StreamEvent events
  (the publisher's, and one per subscriber with its mediaSessionId). Mute events set
  audioState/videoState, which later statuses and new viewers carry. Only a stream's publisher sends
  its events; events sent over REST are not put to the backend.
- `sendData` asks the backend (the sendData hook, a direct invocation); the client gets DataStatusEvent
  ACCEPTED or FAILED with its operationId, which resolves or rejects its promise.
- `/rest-api/data/send` gives data to a client: the backend's OnDataEvent hook (an incoming invocation)
  decides, the client gets OnDataEvent (the WebSDK's APP_DATA) and the backend DataStatusEvent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from . import protocol
from .hooks import HookClient
from .protocol import ProtocolError
from .session import Session
from .streams import NOT_FOUND, MediaSession

log = logging.getLogger(__name__)

# type -> (the state it sets, muted); data sets nothing.
EVENT_TYPES: dict[str, tuple[str, bool] | None] = {
    "audioMuted": ("audio_state", True),
    "audioUnmuted": ("audio_state", False),
    "videoMuted": ("video_state", True),
    "videoUnmuted": ("video_state", False),
    "data": None,
}
NOT_THE_PUBLISHER = "Only the publisher of a stream can send its events"
MAX_OPERATION_ID = 128
MAX_INFO = 1024  # characters of a stream event's `info`


class EventError(ValueError):
    """A stream event or data that cannot be sent; `status` is the REST answer's."""

    def __init__(self, info: str, status: int = 400):
        super().__init__(info)
        self.info = info
        self.status = status


def payload_size(payload: Any) -> int:
    """The payload's size as it travels: compact JSON, UTF-8."""
    return len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())


class EventStreams(Protocol):
    """How events find the stream they are about (streaming/streams.py's StreamService)."""

    def media_session(self, msid: str) -> MediaSession | None: ...

    def publisher(self, name: str) -> MediaSession | None: ...


class StreamEvents:
    """`streams`: the streams events are sent on; `hooks`: the backend (sendData, OnDataEvent);
    `find_session`: a client session by id (/rest-api/data/send); `node_id`: this node's, which a REST
    request naming another node is refused by."""

    def __init__(self, streams: EventStreams, hooks: HookClient, find_session: Callable[[str], Session | None],
                 node_id: str, max_payload: int):
        self.streams = streams
        self.hooks = hooks
        self._find_session = find_session
        self.node_id = node_id
        self.max_payload = max_payload
        self._fanouts: set[asyncio.Task[None]] = set()
        self.sent = 0  # notifyStreamEvent frames handed to viewers

    def handlers(self) -> dict[str, Any]:
        return {"sendStreamEvent": self.on_stream_event, "sendData": self.on_send_data}

    # -- stream events ----------------------------------------------------------------------------

    async def on_stream_event(self, session: Session, obj: dict[str, Any]) -> None:
        msid = protocol.require_str(obj, "mediaSessionId", "sendStreamEvent", max_length=128)
        assert msid is not None
        ms = self.streams.media_session(msid)
        if ms is None or ms.session is not session:  # someone else's stream is as good as none
            raise ProtocolError(NOT_FOUND, "sendStreamEvent", msid)
        if not ms.published:
            raise ProtocolError(NOT_THE_PUBLISHER, "sendStreamEvent", msid)
        try:
            event_type = self._event_type(obj.get("type"))
            self._check_payload(obj.get("payload"))
            info = self._info(obj.get("info"))
        except EventError as exc:
            raise ProtocolError(exc.info, "sendStreamEvent", msid) from None
        # A direct invocation: the backend may refuse the event (then nobody gets it) or, under
        # restPolicy OVERWRITE, change its fields (restOverwrite: payload, info, type).
        body: dict[str, Any] = {"mediaSessionId": msid, "name": ms.name, "type": event_type,
                                "payload": obj.get("payload"), **session.context}
        if info is not None:
            body["info"] = info
        result = await self.hooks.call(session.app, "sendStreamEvent", body,
                                       session.rest_config.for_method("sendStreamEvent"))
        if not result.allowed:
            raise ProtocolError(f"Stream event refused: {result.reason or 'Restricted access'}",
                                "sendStreamEvent", msid)
        if ms.ended:
            raise ProtocolError(NOT_FOUND, "sendStreamEvent", msid)
        decided = result.data
        try:
            event_type = self._event_type(decided.get("type"))
            self._check_payload(decided.get("payload"))
            info = self._info(decided.get("info"))
        except EventError as exc:
            raise ProtocolError(f"Stream event not sent: the backend's answer is not usable: {exc.info}",
                                "sendStreamEvent", msid) from None
        self.dispatch(ms, event_type, decided.get("payload"), info)

    def send_from_rest(self, body: dict[str, Any]) -> MediaSession:
        """/rest-api/stream/event/send: the event of a stream named by `name` or by its publisher's
        `mediaSessionId`."""
        name, msid = body.get("name"), body.get("mediaSessionId")
        if not isinstance(name, str) and not isinstance(msid, str):
            raise EventError("Field 'name' or 'mediaSessionId' (string) is required")
        event_type = self._event_type(body.get("type"))
        self._check_payload(body.get("payload"))
        ms = self.streams.publisher(name) if isinstance(name, str) else None
        if ms is None and isinstance(msid, str):
            ms = self.streams.media_session(msid)
        if ms is None:
            raise EventError(NOT_FOUND, 404)
        if not ms.published:
            raise EventError(NOT_THE_PUBLISHER + f": {ms.id} plays {ms.name!r}", 400)
        self.dispatch(ms, event_type, body.get("payload"))
        return ms

    def dispatch(self, publisher: MediaSession, event_type: str, payload: Any, info: str | None = None) -> None:
        """Set the state the event changes, tell every viewer, and report it to the backend: StreamEvent
        for the publisher's stream, and one per subscriber with the subscriber's mediaSessionId (to the
        backend of the subscriber's session)."""
        change = EVENT_TYPES[event_type]
        viewers = list(publisher.viewers)
        if change is not None:
            attribute, muted = change
            for ms in (publisher, *viewers):
                setattr(ms, attribute, {"muted": muted})
        if viewers:
            # In a task of its own: a viewer whose socket is full makes this task wait (aiohttp
            # drains at 64 KiB), never the publisher's session. Each send writes its frame before it
            # can wait, so a viewer gets its events in order.
            task = asyncio.get_running_loop().create_task(
                self._fan_out(publisher, viewers, event_type, payload, info))
            self._fanouts.add(task)
            task.add_done_callback(self._fanouts.discard)
        event: dict[str, Any] = {"mediaSessionId": publisher.id, "name": publisher.name, "type": event_type}
        if payload is not None:
            event["payload"] = payload
        if info is not None:
            event["info"] = info
        publisher.session.report("StreamEvent", event)
        for viewer in viewers:
            viewer.session.report("StreamEvent", {**event, "mediaSessionId": viewer.id, "published": False})

    async def _fan_out(self, publisher: MediaSession, viewers: list[MediaSession], event_type: str,
                       payload: Any, info: str | None = None) -> None:
        sends = []
        for viewer in viewers:
            obj: dict[str, Any] = {"mediaSessionId": viewer.id, "name": publisher.name, "type": event_type,
                                   "payload": {} if payload is None else payload}
            if info is not None:
                obj["info"] = info
            sends.append(viewer.session.send(protocol.frame("notifyStreamEvent", obj)))
        self.sent += len(sends)
        await asyncio.gather(*sends)

    def _event_type(self, value: Any) -> str:
        if not isinstance(value, str) or value not in EVENT_TYPES:
            shown = repr(value)[:64]
            raise EventError(f"Unknown stream event type {shown}: expected one of {', '.join(EVENT_TYPES)}")
        return value

    @staticmethod
    def _info(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > MAX_INFO:
            raise EventError(f"Field 'info' must be a string of at most {MAX_INFO} characters")
        return value

    def _check_payload(self, payload: Any) -> None:
        size = payload_size(payload)
        if size > self.max_payload:
            raise EventError(f"Payload too large: {size} bytes, the limit is {self.max_payload}", 413)

    def rest_send_event(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            ms = self.send_from_rest(body)
        except EventError as exc:
            return exc.status, {"status": exc.status, "info": exc.info}
        return 200, {"mediaSessionId": ms.id, "name": ms.name, "viewers": len(ms.viewers)}

    # -- data between a client and the backend ----------------------------------------------------

    async def on_send_data(self, session: Session, obj: dict[str, Any]) -> None:
        operation_id = protocol.require_str(obj, "operationId", "sendData", max_length=MAX_OPERATION_ID)
        assert operation_id is not None
        payload = obj.get("payload")
        size = payload_size(payload)
        if size > self.max_payload:
            await self._data_status(session, operation_id, False,
                                    f"Payload too large: {size} bytes, the limit is {self.max_payload}")
            return
        body = {"operationId": operation_id, "payload": payload, **session.context}
        result = await self.hooks.call(session.app, "sendData", body,
                                       session.rest_config.for_method("sendData"))
        await self._data_status(session, operation_id, result.allowed, None if result.allowed else
                                result.reason or "Restricted access")

    async def _data_status(self, session: Session, operation_id: str, accepted: bool, info: str | None) -> None:
        obj: dict[str, Any] = {"operationId": operation_id, "status": "ACCEPTED" if accepted else "FAILED"}
        if info:
            obj["info"] = info
        await session.send(protocol.frame("DataStatusEvent", obj))

    async def send_to_client(self, body: dict[str, Any]) -> dict[str, Any]:
        """/rest-api/data/send: data for one client session. Returns the delivery status."""
        session_id, node_id = body.get("sessionId"), body.get("nodeId")
        if not isinstance(session_id, str):
            raise EventError("Field 'sessionId' (string) is required")
        if node_id is not None and node_id != self.node_id:
            raise EventError(f"nodeId {str(node_id)[:128]!r} is not this node "
                             f"({self.node_id})", 404)
        operation_id = body.get("operationId")
        if operation_id is None:
            operation_id = str(uuid.uuid4())
        if not isinstance(operation_id, str) or not 0 < len(operation_id) <= MAX_OPERATION_ID:
            raise EventError(f"Field 'operationId' must be a string of 1..{MAX_OPERATION_ID} characters")
        self._check_payload(body.get("payload"))
        session = self._find_session(session_id)
        if session is None:
            raise EventError("Connection not found", 404)
        if session.connection is None:
            raise EventError("The client of this connection is not attached now (keepAlive grace)", 409)
        data = {"operationId": operation_id, "payload": body.get("payload"), **session.context}
        result = await self.hooks.call(session.app, "OnDataEvent", data,
                                       session.rest_config.for_method("OnDataEvent"))
        status: dict[str, Any] = {"operationId": operation_id, "status": "ACCEPTED" if result.allowed else "FAILED"}
        if not result.allowed:
            status["info"] = result.reason or "Restricted access"
            session.report("DataStatusEvent", status)
            raise EventError(status["info"], 403)
        client = session.rest_config.for_method("OnDataEvent").for_client(result.data)
        await session.send(protocol.frame("OnDataEvent", client))
        session.report("DataStatusEvent", status)
        return status

    async def rest_send_data(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            return 200, await self.send_to_client(body)
        except EventError as exc:
            return exc.status, {"status": exc.status, "info": exc.info}
