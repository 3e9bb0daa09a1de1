"""RTMP without I/O: the handshake, the chunk stream, AMF0, a publisher's commands (server side) and the
FLV bodies of its audio and video.

- handshake: C0/C1/C2 in, S0/S1/S2 out (ServerHandshake);
- chunk: messages in and out of chunks (ChunkReader with limits, ChunkWriter);
- amf0: command and metadata values;
- connection: one server connection (ServerConnection): bytes in, events and bytes out;
- client: one publisher connection to an RTMP server (PublishClient: pushes);
- flv: audio and video message bodies: H.264 (AVCC, decoder configuration) and AAC, read and written.

Written here rather than taken from PyPI: the Python RTMP packages there (pyrtmp, rtmplite3) read
from asyncio streams themselves, so their parsing cannot be fed bytes, bounded and fuzzed on its own,
and FFmpeg (PyAV) has an RTMP client (without timeouts on its reads there) but no server for many
publishers.
"""

from .connection import (
    Connected,
    Media,
    Metadata,
    ProtocolViolation,
    PublishRequested,
    ServerConnection,
    Unpublished,
)

__all__ = ["Connected", "Media", "Metadata", "ProtocolViolation", "PublishRequested", "ServerConnection",
           "Unpublished"]
