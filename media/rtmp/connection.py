"""One RTMP connection, server side, as a state machine without I/O: handshake, chunk stream, protocol
control, and the NetConnection / NetStream commands of a publisher.

    conn = ServerConnection()
    events = conn.receive(data, now)    # bytes from the socket -> events
    sock.send(conn.data_to_send())      # whatever the machine has to say

Events, in order: Connected (connect: the app name and tcUrl; answered at once), PublishRequested
(publish on a stream made by createStream: the caller answers with accept_publish() or
refuse_publish()), Media (an audio or video message of the published stream, FLV tag body and
timestamp; also while the caller decides, since some encoders do not wait for the answer), Metadata
(@setDataFrame onMetaData), Unpublished (FCUnpublish, closeStream, deleteStream of the published
stream), ProtocolViolation (anything that ends the connection: the caller logs the reason and closes;
receive() returns nothing after it). Play requests are refused: this server only ingests.

Answers follow what FFmpeg, OBS and nginx-rtmp expect: Window Acknowledgement Size, Set Peer
Bandwidth, Set Chunk Size and Stream Begin with connect's _result; onFCPublish for FCPublish;
NetStream.Publish.Start or .BadName/.Denied for publish; Acknowledgements every window; ping answers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from . import amf0
from .chunk import ChunkError, ChunkReader, ChunkWriter, Message
from .handshake import HandshakeError, ServerHandshake

# Message types (RTMP 1.0 spec, sections 5.4, 6.2, 7.1)
SET_CHUNK_SIZE, ABORT, ACK, USER_CONTROL, WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
AUDIO, VIDEO = 8, 9
DATA_AMF3, SHARED_OBJECT_AMF3, COMMAND_AMF3 = 15, 16, 17
DATA_AMF0, SHARED_OBJECT_AMF0, COMMAND_AMF0 = 18, 19, 20
AGGREGATE = 22
IGNORED_TYPES = {SHARED_OBJECT_AMF3, SHARED_OBJECT_AMF0, AGGREGATE, DATA_AMF3, COMMAND_AMF3}
# User control events
STREAM_BEGIN, STREAM_EOF, PING_REQUEST, PING_RESPONSE = 0, 1, 6, 7

OUT_CHUNK_SIZE = 4096
WINDOW = 2_500_000
MAX_STREAMS = 8  # createStream per connection
MAX_NAME = 1024


@dataclass(slots=True)
class Connected:
    app: str
    tc_url: str
    flash_version: str


@dataclass(slots=True)
class PublishRequested:
    stream_id: int
    name: str  # the stream key, without its query
    query: str  # what followed "?" in the key ("" if nothing)
    app: str
    publish_type: str  # "live", "record" or "append"


@dataclass(slots=True)
class Media:
    kind: str  # "audio" | "video"
    timestamp: int  # ms
    body: bytes  # the FLV tag body


@dataclass(slots=True)
class Metadata:
    values: dict[str, Any]


@dataclass(slots=True)
class Unpublished:
    reason: str


@dataclass(slots=True)
class ProtocolViolation:
    reason: str


Event = Connected | PublishRequested | Media | Metadata | Unpublished | ProtocolViolation


class ServerConnection:
    def __init__(self, max_message_bytes: int = 8 * 1024 * 1024, epoch_ms: int = 0):
        self.handshake = ServerHandshake(epoch_ms)
        self.reader = ChunkReader(max_message_bytes)
        self.writer = ChunkWriter()
        self._out = bytearray()
        self.app: str | None = None
        self.tc_url = ""
        self.streams: set[int] = set()
        self._next_stream = 1
        self.publishing: PublishRequested | None = None  # asked or accepted
        self.accepted = False
        self.closed = False
        self.last_received = 0.0
        self.peer_window = 0  # the client's Window Acknowledgement Size: we ack that often
        self._acked = 0
        self.ignored_messages = 0

    # -- input ------------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Event]:
        if self.closed:
            return []
        self.last_received = now
        events: list[Event] = []
        try:
            if not self.handshake.done:
                reply, data = self.handshake.feed(data)
                self._out += reply
                if not self.handshake.done:
                    return events
            for message in self.reader.feed(data):
                self._message(message, events)
                if self.closed:
                    break
            self._acknowledge()
        except (HandshakeError, ChunkError, amf0.Amf0Error) as exc:
            self._violation(events, str(exc))
        return events

    def _violation(self, events: list[Event], reason: str) -> None:
        self.closed = True
        events.append(ProtocolViolation(reason))

    def _acknowledge(self) -> None:
        received = self.reader.bytes_received
        if self.peer_window and received - self._acked >= self.peer_window:
            self._acked = received
            self._send(2, ACK, 0, struct.pack(">I", received & 0xFFFFFFFF))

    def _message(self, message: Message, events: list[Event]) -> None:
        kind = message.type_id
        if kind in (AUDIO, VIDEO):
            published = self.publishing
            if published is not None and message.stream_id == published.stream_id:
                if message.payload:
                    events.append(Media("audio" if kind == AUDIO else "video", message.timestamp, message.payload))
            return
        if kind == COMMAND_AMF0:
            self._command(message, amf0.decode_all(message.payload), events)
        elif kind == DATA_AMF0:
            self._data(message, amf0.decode_all(message.payload), events)
        elif kind == WINDOW_ACK_SIZE:
            if len(message.payload) < 4:
                raise ChunkError("Window Acknowledgement Size cut short")
            self.peer_window = struct.unpack_from(">I", message.payload)[0]
        elif kind == USER_CONTROL:
            if len(message.payload) < 2:
                raise ChunkError("user control message cut short")
            event_type = struct.unpack_from(">H", message.payload)[0]
            if event_type == PING_REQUEST and len(message.payload) >= 6:
                self._send(2, USER_CONTROL, 0, struct.pack(">H", PING_RESPONSE) + message.payload[2:6])
        elif kind in (ACK, SET_PEER_BANDWIDTH) or kind in IGNORED_TYPES:
            self.ignored_messages += 1
        else:
            raise ChunkError(f"unknown RTMP message type {kind}")

    def _command(self, message: Message, values: list[Any], events: list[Event]) -> None:
        if len(values) < 2 or not isinstance(values[0], str) or not isinstance(values[1], float | int):
            raise ChunkError("command without a name and transaction id")
        name, txn = values[0], values[1]
        args = values[2:]
        if self.app is None and name != "connect":
            raise ChunkError(f"command {name!r} before connect")
        if name == "connect":
            self._connect(txn, args, events)
        elif name == "createStream":
            if len(self.streams) >= MAX_STREAMS:
                raise ChunkError(f"more than {MAX_STREAMS} streams on one connection")
            stream_id = self._next_stream
            self._next_stream += 1
            self.streams.add(stream_id)
            self._result(txn, None, float(stream_id))
        elif name in ("releaseStream", "FCPublish"):
            key = _text_arg(args, 1)
            if name == "FCPublish":
                self._send_command(0, "onFCPublish", 0, None, _status("NetStream.Publish.Start", key))
            elif txn:
                self._result(txn, None, None)
        elif name == "publish":
            self._publish(message.stream_id, args, events)
        elif name in ("FCUnpublish", "closeStream", "deleteStream"):
            self._unpublish(name, message, args, events)
        elif name == "play":
            self._send_command(message.stream_id, "onStatus", 0, None,
                               _status("NetStream.Play.Failed", "this server takes publishers only", "error"))
        elif txn:
            self._send_command(0, "_error", txn, None,
                               _status("NetConnection.Call.Failed", f"unknown command {name[:64]!r}", "error"))

    def _connect(self, txn: float, args: list[Any], events: list[Event]) -> None:
        if self.app is not None:
            raise ChunkError("connect twice on one connection")
        params = args[0] if args and isinstance(args[0], dict) else {}
        app = params.get("app")
        if not isinstance(app, str):
            raise ChunkError("connect without an app name")
        self.app = app.strip("/")[:MAX_NAME]
        self.tc_url = str(params.get("tcUrl") or "")[:MAX_NAME]
        self._send(2, WINDOW_ACK_SIZE, 0, struct.pack(">I", WINDOW))
        self._send(2, SET_PEER_BANDWIDTH, 0, struct.pack(">IB", WINDOW, 2))
        self._send(2, SET_CHUNK_SIZE, 0, struct.pack(">I", OUT_CHUNK_SIZE))
        self.writer.chunk_size = OUT_CHUNK_SIZE
        self._send(2, USER_CONTROL, 0, struct.pack(">HI", STREAM_BEGIN, 0))
        encoding = params.get("objectEncoding", 0)
        self._result(txn, {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                     {**_status("NetConnection.Connect.Success", "Connection succeeded."),
                      "objectEncoding": float(encoding) if isinstance(encoding, float | int) else 0.0})
        events.append(Connected(self.app, self.tc_url, str(params.get("flashVer") or "")[:MAX_NAME]))

    def _publish(self, stream_id: int, args: list[Any], events: list[Event]) -> None:
        if stream_id not in self.streams:
            raise ChunkError(f"publish on stream {stream_id}, which createStream did not make")
        if self.publishing is not None:
            raise ChunkError("a second publish on one connection")
        key = _text_arg(args, 1)
        if not key:
            self._send_command(stream_id, "onStatus", 0, None,
                               _status("NetStream.Publish.BadName", "no stream key", "error"))
            return
        kind = _text_arg(args, 2) or "live"
        name, _, query = key.partition("?")
        assert self.app is not None
        self.publishing = PublishRequested(stream_id, name, query, self.app, kind)
        events.append(self.publishing)

    def _unpublish(self, command: str, message: Message, args: list[Any], events: list[Event]) -> None:
        published = self.publishing
        if published is None or not self.accepted:
            if command == "deleteStream" and args[1:2] and isinstance(args[1], float | int):
                self.streams.discard(int(args[1]))
            return
        if command == "deleteStream":
            target = int(args[1]) if args[1:2] and isinstance(args[1], float | int) else -1
            if target != published.stream_id:
                self.streams.discard(target)
                return
        elif command == "closeStream" and message.stream_id != published.stream_id:
            return
        self._send_command(published.stream_id, "onStatus", 0, None,
                           _status("NetStream.Unpublish.Success", f"{published.name} is now unpublished."))
        self.accepted = False
        self.publishing = None
        events.append(Unpublished(f"the publisher sent {command}"))

    def _data(self, message: Message, values: list[Any], events: list[Event]) -> None:
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            events.append(Metadata(values[1]))

    # -- decisions of the caller ----------------------------------------------------------------------

    def accept_publish(self) -> None:
        published = self.publishing
        if published is None or self.accepted:
            return
        self.accepted = True
        self._send(2, USER_CONTROL, 0, struct.pack(">HI", STREAM_BEGIN, published.stream_id))
        self._send_command(published.stream_id, "onStatus", 0, None,
                           _status("NetStream.Publish.Start", f"{published.name} is now published."))

    def refuse_publish(self, reason: str, code: str = "NetStream.Publish.Denied") -> None:
        """The publish is refused; the caller closes the connection once this is sent."""
        published = self.publishing
        stream_id = published.stream_id if published is not None else 0
        self._send_command(stream_id, "onStatus", 0, None, _status(code, reason, "error"))
        self.publishing = None
        self.closed = True

    def end_publish(self, reason: str) -> None:
        """The server ends the stream (REST, shutdown): the client is told, then the caller closes."""
        published = self.publishing
        if published is not None:
            self._send(2, USER_CONTROL, 0, struct.pack(">HI", STREAM_EOF, published.stream_id))
            self._send_command(published.stream_id, "onStatus", 0, None,
                               _status("NetStream.Unpublish.Success", reason))
        self.publishing = None
        self.closed = True

    # -- output ---------------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _send(self, csid: int, type_id: int, stream_id: int, payload: bytes, timestamp: int = 0) -> None:
        self._out += self.writer.write(csid, type_id, stream_id, timestamp, payload)

    def _send_command(self, stream_id: int, name: str, txn: float, *args: Any) -> None:
        self._send(3 if stream_id == 0 else 5, COMMAND_AMF0, stream_id, amf0.encode(name, txn, *args))

    def _result(self, txn: float, *args: Any) -> None:
        self._send_command(0, "_result", txn, *args)


def _text_arg(args: list[Any], index: int) -> str:
    value = args[index] if len(args) > index else None
    return value[:MAX_NAME] if isinstance(value, str) else ""


def _status(code: str, description: str, level: str = "status") -> dict[str, Any]:
    return {"level": level, "code": code, "description": description}
