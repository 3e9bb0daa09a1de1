"""One RTMP connection, publisher side (a push to an RTMP server), as a state machine without I/O.

    client = PublishClient("rtmp://host/live/name")
    sock.send(client.data_to_send())            # C0 C1
    events = client.receive(data)               # S0 S1 S2, then answers: Published / Refused
    client.send_media("video", timestamp, body) # once Published: FLV bodies as RTMP messages
    sock.send(client.data_to_send())

Steps: handshake (C2 echoes S1), connect, Set Chunk Size 4096, releaseStream, FCPublish, createStream,
publish (live). Published when the server answers NetStream.Publish.Start; Refused with the server's
description for _error or an error onStatus. Acknowledgements are sent every window the server set,
pings are answered. A malformed answer is a ProtocolViolation, as on the server side.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import amf0
from .chunk import ChunkError, ChunkReader, ChunkWriter, Message
from .connection import (
    ACK,
    AUDIO,
    COMMAND_AMF0,
    DATA_AMF0,
    PING_REQUEST,
    PING_RESPONSE,
    SET_CHUNK_SIZE,
    USER_CONTROL,
    VIDEO,
    WINDOW_ACK_SIZE,
    ProtocolViolation,
)
from .handshake import PACKET, VERSION, client_hello

OUT_CHUNK_SIZE = 4096
DEFAULT_PORT = 1935


class RtmpUrlError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PublishTarget:
    host: str
    port: int
    app: str  # the path up to the stream name
    name: str  # the last path segment, with its query
    tc_url: str

    @classmethod
    def parse(cls, url: str) -> PublishTarget:
        """rtmp://host[:port]/app[/more]/name[?query]: the app is everything up to the last segment."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "rtmp":
            raise RtmpUrlError(f"only rtmp:// URLs can be pushed to, not {parts.scheme or 'no scheme'}")
        if not parts.hostname:
            raise RtmpUrlError("the URL has no host")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise RtmpUrlError("the URL's port is not a number 1..65535") from None
        path = parts.path.strip("/")
        if "/" not in path:
            raise RtmpUrlError("the URL needs an application and a stream name: rtmp://host/app/name")
        app, name = path.rsplit("/", 1)
        if not app or not name:
            raise RtmpUrlError("the URL needs an application and a stream name: rtmp://host/app/name")
        if parts.query:
            name += "?" + parts.query
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls(parts.hostname, port, app, name, f"rtmp://{host}:{port}/{app}")


@dataclass(slots=True)
class Published:
    stream_id: int


@dataclass(slots=True)
class Refused:
    reason: str


ClientEvent = Published | Refused | ProtocolViolation


class PublishClient:
    def __init__(self, target: PublishTarget):
        self.target = target
        self.reader = ChunkReader()
        self.writer = ChunkWriter()
        self._out = bytearray(client_hello())
        self._handshake = bytearray()
        self.state = "HANDSHAKE"  # CONNECTING, CREATING, PUBLISHING, PUBLISHED, FAILED
        self.stream_id = 0
        self.window = 0
        self._acked = 0
        self.sent_bytes = 0

    @property
    def published(self) -> bool:
        return self.state == "PUBLISHED"

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        self.sent_bytes += len(out)
        return out

    def receive(self, data: bytes) -> list[ClientEvent]:
        if self.state == "FAILED":
            return []
        events: list[ClientEvent] = []
        try:
            if self.state == "HANDSHAKE":
                self._handshake += data
                if not self._handshake:
                    return events
                if self._handshake[0] != VERSION:
                    raise ChunkError(f"the server answered the handshake with version {self._handshake[0]}")
                if len(self._handshake) < 1 + 2 * PACKET:
                    return events
                s1 = bytes(self._handshake[1:1 + PACKET])
                data = bytes(self._handshake[1 + 2 * PACKET:])
                self._handshake.clear()
                self._out += s1  # C2
                self._command(0, "connect", 1, {"app": self.target.app, "type": "nonprivate",
                                                "flashVer": "FMLE/3.0 (compatible; streaming)",
                                                "tcUrl": self.target.tc_url})
                self.state = "CONNECTING"
            for message in self.reader.feed(data):
                self._message(message, events)
            received = self.reader.bytes_received
            if self.window and received - self._acked >= self.window:
                self._acked = received
                self._send(2, ACK, 0, struct.pack(">I", received & 0xFFFFFFFF))
        except (ChunkError, amf0.Amf0Error) as exc:
            self.state = "FAILED"
            events.append(ProtocolViolation(str(exc)))
        return events

    def _message(self, message: Message, events: list[ClientEvent]) -> None:
        if message.type_id == WINDOW_ACK_SIZE and len(message.payload) >= 4:
            self.window = struct.unpack_from(">I", message.payload)[0]
        elif message.type_id == USER_CONTROL and len(message.payload) >= 6:
            if struct.unpack_from(">H", message.payload)[0] == PING_REQUEST:
                self._send(2, USER_CONTROL, 0, struct.pack(">H", PING_RESPONSE) + message.payload[2:6])
        elif message.type_id == COMMAND_AMF0:
            values = amf0.decode_all(message.payload)
            if len(values) >= 2 and isinstance(values[0], str):
                self._answer(values[0], values[1], values[2:], events)

    def _answer(self, name: str, txn: Any, args: list[Any], events: list[ClientEvent]) -> None:
        info = next((a for a in args if isinstance(a, dict)), {})
        if name == "_error" or (name == "onStatus" and info.get("level") == "error"):
            self.state = "FAILED"
            reason = str(info.get("description") or info.get("code") or "refused")[:200]
            events.append(Refused(f"{info.get('code', name)}: {reason}" if info.get("code") else reason))
        elif name == "_result" and txn == 1 and self.state == "CONNECTING":
            self._send(2, SET_CHUNK_SIZE, 0, struct.pack(">I", OUT_CHUNK_SIZE))
            self.writer.chunk_size = OUT_CHUNK_SIZE
            self._command(0, "releaseStream", 2, None, self.target.name)
            self._command(0, "FCPublish", 3, None, self.target.name)
            self._command(0, "createStream", 4, None)
            self.state = "CREATING"
        elif name == "_result" and txn == 4 and self.state == "CREATING":
            stream_id = next((a for a in args if isinstance(a, float | int) and not isinstance(a, bool)), None)
            if stream_id is None:
                raise ChunkError("createStream answered without a stream id")
            self.stream_id = int(stream_id)
            self._command(self.stream_id, "publish", 5, None, self.target.name, "live")
            self.state = "PUBLISHING"
        elif name == "onStatus" and self.state == "PUBLISHING" and info.get("code") == "NetStream.Publish.Start":
            self.state = "PUBLISHED"
            events.append(Published(self.stream_id))

    def send_media(self, kind: str, timestamp: int, body: bytes) -> None:
        """An FLV audio or video body (media.rtmp.flv builds them) at `timestamp` ms."""
        self._send(4 if kind == "audio" else 6, AUDIO if kind == "audio" else VIDEO, self.stream_id, body, timestamp)

    def send_metadata(self, values: dict[str, Any]) -> None:
        self._send(4, DATA_AMF0, self.stream_id, amf0.encode("@setDataFrame", "onMetaData", values))

    def unpublish(self) -> None:
        if self.state == "PUBLISHED":
            self._command(0, "FCUnpublish", 6, None, self.target.name)
            self._command(0, "deleteStream", 7, None, float(self.stream_id))
            self.state = "FAILED"

    def _command(self, stream_id: int, name: str, txn: float, *args: Any) -> None:
        self._send(3 if stream_id == 0 else 5, COMMAND_AMF0, stream_id, amf0.encode(name, txn, *args))

    def _send(self, csid: int, type_id: int, stream_id: int, payload: bytes, timestamp: int = 0) -> None:
        self._out += self.writer.write(csid, type_id, stream_id, timestamp, payload)
