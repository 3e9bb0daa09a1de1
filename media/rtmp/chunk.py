"""The RTMP chunk stream (RTMP 1.0 spec, section 5.3): messages cut into chunks and put back together.

ChunkReader takes bytes as they arrive and returns complete messages; ChunkWriter cuts messages into
chunks. No I/O. The reader bounds what a peer can make it hold: the chunk size it accepts
(MAX_CHUNK_SIZE), the size of one message (`max_message_bytes`), the number of chunk streams with a
message in progress and their bytes (twice `max_message_bytes`), and the number of chunk streams it
remembers. Anything malformed raises
ChunkError, after which the reader is not usable (the connection is to be closed).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0xFFFFFF  # a larger chunk size means the same: a message is at most 0xFFFFFF bytes
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_CHUNK_STREAMS = 256  # chunk stream ids a peer may use on one connection
MAX_OPEN_MESSAGES = 16  # chunk streams with a message in progress at once
EXTENDED = 0xFFFFFF
SET_CHUNK_SIZE, ABORT = 1, 2


class ChunkError(ValueError):
    pass


@dataclass(slots=True)
class Message:
    type_id: int
    stream_id: int  # the message stream (0: the connection)
    timestamp: int  # milliseconds, 32-bit
    payload: bytes
    chunk_stream: int = 0


@dataclass(slots=True)
class _ChunkStream:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False  # the last header carried an extended timestamp (fmt 3 chunks repeat it)
    started: bool = False  # a type 0 header was seen
    body: bytearray | None = None  # the message in progress


class ChunkReader:
    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message_bytes = max_message_bytes
        self._streams: dict[int, _ChunkStream] = {}
        self._buffer = bytearray()
        self._open_bytes = 0  # bytes of the messages in progress
        self.bytes_received = 0

    def set_chunk_size(self, size: int) -> None:
        """The peer's Set Chunk Size (its high bit must be 0; larger than MAX_CHUNK_SIZE is the same)."""
        if size <= 0 or size > 0x7FFFFFFF:
            raise ChunkError(f"invalid chunk size {size} (1..2147483647)")
        self.chunk_size = min(size, MAX_CHUNK_SIZE)

    def abort(self, chunk_stream: int) -> None:
        """The peer's Abort Message: the message in progress on that chunk stream is dropped."""
        state = self._streams.get(chunk_stream)
        if state is not None and state.body is not None:
            self._open_bytes -= len(state.body)
            state.body = None

    @property
    def buffered(self) -> int:
        return len(self._buffer) + self._open_bytes

    def feed(self, data: bytes) -> list[Message]:
        """The complete messages `data` finishes, in order. Set Chunk Size and Abort (protocol control
        of the chunk stream itself) are applied here and not returned."""
        self.bytes_received += len(data)
        self._buffer += data
        out: list[Message] = []
        offset = 0
        buffer = self._buffer
        while True:
            parsed = self._chunk(buffer, offset)
            if parsed is None:
                break
            offset, message = parsed
            if message is None:
                continue
            if message.type_id in (SET_CHUNK_SIZE, ABORT):
                if len(message.payload) < 4:
                    raise ChunkError(f"protocol control message {message.type_id} of {len(message.payload)} "
                                     "bytes (4 expected)")
                value = struct.unpack_from(">I", message.payload)[0]
                if message.type_id == SET_CHUNK_SIZE:
                    self.set_chunk_size(value)
                else:
                    self.abort(value)
                continue
            out.append(message)
        del buffer[:offset]
        return out

    def _chunk(self, buf: bytearray, offset: int) -> tuple[int, Message | None] | None:
        """One chunk at offset: (offset after it, the message it completes or None); None: incomplete."""
        available = len(buf) - offset
        if available < 1:
            return None
        first = buf[offset]
        fmt = first >> 6
        csid = first & 0x3F
        pos = offset + 1
        if csid == 0:
            if available < 2:
                return None
            csid = 64 + buf[pos]
            pos += 1
        elif csid == 1:
            if available < 3:
                return None
            csid = 64 + buf[pos] + buf[pos + 1] * 256
            pos += 2
        header_size = (11, 7, 3, 0)[fmt]
        if len(buf) < pos + header_size:
            return None
        state = self._streams.get(csid)
        if state is None:
            if len(self._streams) >= MAX_CHUNK_STREAMS:
                raise ChunkError(f"more than {MAX_CHUNK_STREAMS} chunk streams on one connection")
            state = _ChunkStream()
        if fmt != 0 and not state.started:
            raise ChunkError(f"chunk stream {csid} continues (header type {fmt}) a message it never began")
        stamp = length = type_id = stream_id = 0
        if fmt <= 2:
            stamp = int.from_bytes(buf[pos:pos + 3], "big")
        if fmt <= 1:
            length = int.from_bytes(buf[pos + 3:pos + 6], "big")
            type_id = buf[pos + 6]
        if fmt == 0:
            stream_id = struct.unpack_from("<I", buf, pos + 7)[0]
        pos += header_size
        extended = stamp == EXTENDED if fmt <= 2 else state.extended
        if extended:
            if len(buf) < pos + 4:
                return None
            stamp = struct.unpack_from(">I", buf, pos)[0]
            pos += 4
        starting = state.body is None
        if fmt <= 1:
            if not starting:
                raise ChunkError(f"chunk stream {csid} starts a new message inside one of "
                                 f"{state.length} bytes")
            if length > self.max_message_bytes:
                raise ChunkError(f"message of {length} bytes on chunk stream {csid} "
                                 f"(at most {self.max_message_bytes})")
        remaining = (length if fmt <= 1 else state.length) - (0 if starting else len(state.body or b""))
        size = min(self.chunk_size, remaining)
        if len(buf) < pos + size:
            return None
        # The whole chunk is here: commit its header.
        if csid not in self._streams:
            self._streams[csid] = state
        state.extended = extended
        if fmt == 0:
            state.timestamp, state.delta = stamp, 0
            state.length, state.type_id, state.stream_id = length, type_id, stream_id
            state.started = True
        elif fmt == 1:
            state.delta, state.length, state.type_id = stamp, length, type_id
        elif fmt == 2:
            state.delta = stamp
        if starting:
            if fmt != 0:
                state.timestamp = (state.timestamp + state.delta) & 0xFFFFFFFF
            if sum(1 for s in self._streams.values() if s.body is not None) >= MAX_OPEN_MESSAGES:
                raise ChunkError(f"more than {MAX_OPEN_MESSAGES} messages in progress at once")
            state.body = bytearray()
        assert state.body is not None
        state.body += buf[pos:pos + size]
        self._open_bytes += size
        if self._open_bytes > 2 * self.max_message_bytes:
            raise ChunkError(f"more than {2 * self.max_message_bytes} bytes of messages in progress")
        pos += size
        if len(state.body) < state.length:
            return pos, None
        body, state.body = bytes(state.body), None
        self._open_bytes -= len(body)
        return pos, Message(state.type_id, state.stream_id, state.timestamp, body, csid)


class ChunkWriter:
    """Messages to chunks: a type 0 header, then type 3 headers for the rest."""

    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE

    def write(self, chunk_stream: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> bytes:
        if not 2 <= chunk_stream <= 65599:
            raise ValueError(f"chunk stream id {chunk_stream} out of range 2..65599")
        if len(payload) > 0xFFFFFF:
            raise ValueError(f"message of {len(payload)} bytes: RTMP messages are at most 16 MiB")
        timestamp &= 0xFFFFFFFF
        basic0 = _basic_header(0, chunk_stream)
        basic3 = _basic_header(3, chunk_stream)
        extended = timestamp >= EXTENDED
        ext = struct.pack(">I", timestamp) if extended else b""
        out = bytearray(basic0)
        out += (EXTENDED if extended else timestamp).to_bytes(3, "big") + len(payload).to_bytes(3, "big")
        out += bytes((type_id,)) + struct.pack("<I", stream_id) + ext
        view = memoryview(payload)
        out += view[:self.chunk_size]
        for start in range(self.chunk_size, len(payload), self.chunk_size):
            out += basic3 + ext
            out += view[start:start + self.chunk_size]
        return bytes(out)


def _basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))
