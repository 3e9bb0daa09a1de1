"""The RTMP handshake, server side (RTMP 1.0 spec, section 5.2): C0 C1 in, S0 S1 S2 out, C2 in.

The simple handshake: S2 echoes C1, C2 is read and not checked (FFmpeg, OBS and nginx-rtmp's clients
accept it; so do clients that try the digest handshake first). Only version 3 is spoken: 6 and 8 are
RTMPE (encrypted) and anything else is not RTMP. No I/O.
"""

from __future__ import annotations

import os
import struct

VERSION = 3
PACKET = 1536


class HandshakeError(ValueError):
    pass


class ServerHandshake:
    def __init__(self, epoch_ms: int = 0):
        self._buffer = bytearray()
        self._epoch = epoch_ms & 0xFFFFFFFF
        self.state = "C0C1"  # then C2, then DONE
        self.c1: bytes | None = None

    @property
    def done(self) -> bool:
        return self.state == "DONE"

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Bytes from the client: (what to send back, bytes past the handshake: the first chunks)."""
        self._buffer += data
        out = b""
        if self.state == "C0C1" and self._buffer:
            version = self._buffer[0]
            if version != VERSION:
                if version in (6, 8):
                    raise HandshakeError(f"RTMPE (encrypted RTMP, version {version}) is not supported")
                raise HandshakeError(f"not an RTMP client: handshake version {version} (3 expected)")
            if len(self._buffer) >= 1 + PACKET:
                c1 = bytes(self._buffer[1:1 + PACKET])
                del self._buffer[:1 + PACKET]
                self.c1 = c1
                s1 = struct.pack(">II", self._epoch, 0) + os.urandom(PACKET - 8)
                out = bytes((VERSION,)) + s1 + c1
                self.state = "C2"
        if self.state == "C2" and len(self._buffer) >= PACKET:
            del self._buffer[:PACKET]
            self.state = "DONE"
            rest = bytes(self._buffer)
            self._buffer.clear()
            return out, rest
        return out, b""


def client_hello() -> bytes:
    """C0 C1 of a client (for tests and tools that speak to the server)."""
    return bytes((VERSION,)) + bytes(8) + os.urandom(PACKET - 8)
