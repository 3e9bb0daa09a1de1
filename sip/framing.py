"""Cutting SIP messages out of a TCP or TLS byte stream (RFC 3261 §18.3). No I/O.

`StreamFramer.feed(data)` returns the whole messages the bytes completed (as bytes, to be given to
`message.parse(..., stream=True)`). CRLF keep-alives between messages (RFC 5626 §3.5.1) are skipped. A
head without its blank line after MAX_MESSAGE bytes, or a Content-Length that is not a number or is too
large, is a FramingError: the stream cannot be resynchronized and the connection should be closed.
"""

from __future__ import annotations

import re

from .message import MAX_MESSAGE

_LENGTH_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\S*)", re.IGNORECASE | re.MULTILINE)


class FramingError(ValueError):
    pass


class StreamFramer:
    def __init__(self, max_message: int = MAX_MESSAGE):
        self.max_message = max_message
        self._buffer = bytearray()
        self.keepalives = 0  # CRLF pings seen (RFC 5626): the caller answers "\r\n" to "\r\n\r\n"

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while True:
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
                self.keepalives += 1
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_message:
                    raise FramingError(f"no end of headers within {self.max_message} bytes")
                return out
            head = bytes(self._buffer[:end + 2])
            match = _LENGTH_RE.search(head)
            length = 0
            if match is not None:
                text = match.group(1)
                if not text.isdigit() or len(text) > 7:
                    raise FramingError(f"malformed Content-Length {text[:20]!r}")
                length = int(text)
            total = end + 4 + length
            if total > self.max_message:
                raise FramingError(f"message of {total} bytes is larger than {self.max_message}")
            if len(self._buffer) < total:
                return out
            out.append(bytes(self._buffer[:total]))
            del self._buffer[:total]
