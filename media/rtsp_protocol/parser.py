"""RTSP 1.0 (RFC 2326) messages on a connection, with no I/O: bytes in, events out; messages out as bytes.

RequestParser: feed() the bytes of a connection in any pieces and get back events: Request,
InterleavedFrame (RFC 2326 section 10.12: `$`, channel, 16-bit length, data) and, when the input breaks
a rule, one ParseError whose status is the answer to give (400, 413, 414, 431, 505) before closing the
connection: after it the framing is lost, so the parser takes nothing more. Every limit (request line,
header count, header bytes, body bytes) is checked before the bytes are kept, so hostile input never
grows memory beyond them. ResponseParser is the same framing for a client (media.rtsp_client).
response() and message() serialize.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REQUEST_LINE = 4096
MAX_HEADERS = 64
MAX_HEADER_BYTES = 16384  # all header lines together
MAX_BODY = 65536

REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 413: "Request Entity Too Large", 414: "Request-URI Too Large",
    431: "Request Header Fields Too Large", 451: "Parameter Not Understood", 454: "Session Not Found",
    455: "Method Not Valid in This State", 459: "Aggregate Operation Not Allowed",
    461: "Unsupported Transport", 500: "Internal Server Error", 501: "Not Implemented",
    503: "Service Unavailable", 505: "RTSP Version Not Supported",
}

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


# --- events ----------------------------------------------------------------------------------------


class _Message:
    """What requests and responses share: headers looked up without regard to case."""

    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), else None."""
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    @property
    def cseq(self) -> str | None:
        value = self.header("CSeq")
        return value if value is not None and value.strip().isdigit() and len(value.strip()) <= 10 else None

    @property
    def session_id(self) -> str | None:
        value = self.header("Session")
        return value.split(";", 1)[0].strip() if value is not None else None


@dataclass
class Request(_Message):
    method: str
    uri: str
    headers: list[tuple[str, str]]
    body: bytes = b""


@dataclass
class Response(_Message):
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""


@dataclass
class InterleavedFrame:
    channel: int
    data: bytes


@dataclass
class ParseError:
    status: int
    reason: str  # why, for the body of the answer and the log
    cseq: str | None = None


Event = Request | Response | InterleavedFrame | ParseError


# --- the parser --------------------------------------------------------------------------------------


class RequestParser:
    """Splits a connection's bytes into requests and interleaved frames. After a ParseError it is
    `broken` and ignores all further input: the caller answers and closes."""

    def __init__(self, max_request_line: int = MAX_REQUEST_LINE, max_headers: int = MAX_HEADERS,
                 max_header_bytes: int = MAX_HEADER_BYTES, max_body: int = MAX_BODY):
        self.max_request_line = max_request_line
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.max_body = max_body
        self._buf = bytearray()
        self._request: Request | Response | None = None  # head parsed, body pending
        self._body_length = 0
        self.broken = False

    def feed(self, data: bytes) -> list[Event]:
        if self.broken:
            return []
        self._buf += data
        events: list[Event] = []
        while not self.broken:
            event = self._next()
            if event is None:
                break
            events.append(event)
            if isinstance(event, ParseError):
                self.broken = True
                self._buf.clear()
        return events

    def _next(self) -> Event | None:
        buf = self._buf
        if self._request is not None:
            if len(buf) < self._body_length:
                return None
            request = self._request
            request.body = bytes(buf[:self._body_length])
            del buf[:self._body_length]
            self._request = None
            return request
        # Empty lines between messages are allowed (section 15.1 of RFC 2616, which RTSP follows).
        while buf[:2] == b"\r\n" or buf[:1] == b"\n":
            del buf[:2 if buf[:1] == b"\r" else 1]
        if not buf:
            return None
        if buf[0] == 0x24:  # '$'
            if len(buf) < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            if len(buf) < 4 + length:
                return None
            frame = InterleavedFrame(buf[1], bytes(buf[4:4 + length]))
            del buf[:4 + length]
            return frame
        if not buf[:1].isalpha():
            return ParseError(400, "not an RTSP request or interleaved frame")
        line_end = buf.find(b"\n", 0, self.max_request_line + 2)
        if line_end < 0:
            if len(buf) > self.max_request_line:
                return ParseError(414, f"request line longer than {self.max_request_line} bytes")
            return None
        head_end = _find_head_end(buf, line_end)
        if head_end is None:
            if len(buf) - line_end > self.max_header_bytes or buf.count(b"\n", line_end + 1) > self.max_headers:
                return ParseError(431, f"headers beyond {self.max_headers} lines or {self.max_header_bytes} bytes")
            return None
        head, body_start = head_end
        raw = bytes(buf[:head])
        del buf[:body_start]
        event = self._parse_head(raw)
        return self._next() if event is None else event

    def _parse_head(self, raw: bytes) -> Event | None:
        """A Request or ParseError, or None when the request's body is still to come."""
        lines = raw.replace(b"\r\n", b"\n").split(b"\n")
        request_line = lines[0]
        header_lines = [line for line in lines[1:] if line]
        if len(request_line) > self.max_request_line:
            return ParseError(414, f"request line longer than {self.max_request_line} bytes")
        if len(header_lines) > self.max_headers or len(raw) - len(request_line) > self.max_header_bytes:
            return ParseError(431, f"headers beyond {self.max_headers} lines or {self.max_header_bytes} bytes")
        headers: list[tuple[str, str]] = []
        for line in header_lines:
            if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding
                key, folded = headers[-1]
                headers[-1] = (key, folded + " " + line.strip().decode("latin-1"))
                continue
            raw_name, sep, raw_value = line.partition(b":")
            raw_name = raw_name.strip()
            if not sep or not _TOKEN.match(raw_name):
                return ParseError(400, "malformed header line")
            headers.append((raw_name.decode("ascii"), raw_value.strip().decode("latin-1")))
        cseq = Request("", "", headers).cseq
        message = self._start_line(request_line, headers, cseq)
        if isinstance(message, ParseError):
            return message
        length_text = message.header("Content-Length")
        if length_text is not None:
            length_text = length_text.strip()
            if not length_text.isdigit():
                return ParseError(400, "Content-Length is not a number", cseq)
            if len(length_text) > 12 or int(length_text) > self.max_body:
                return ParseError(413, f"body larger than {self.max_body} bytes", cseq)
            self._body_length = int(length_text)
            if self._body_length:
                self._request = message
                return None
        return message

    def _start_line(self, line: bytes, headers: list[tuple[str, str]],
                    cseq: str | None) -> Request | Response | ParseError:
        parts = line.split(b" ")
        if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
            return ParseError(400, "malformed request line", cseq)
        method, uri, version = (p.decode("latin-1") for p in parts)
        if not version.startswith("RTSP/"):
            return ParseError(400, "not an RTSP request line", cseq)
        if version != "RTSP/1.0":
            return ParseError(505, f"{version} is not supported: RTSP/1.0", cseq)
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in uri):
            return ParseError(400, "control characters in the request URI", cseq)
        return Request(method, uri, headers)


class ResponseParser(RequestParser):
    """The same framing for the client side: responses (`RTSP/1.0 200 OK`) and interleaved frames, with
    the same limits; a broken status line is a ParseError (status 400) after which nothing more is read."""

    def _start_line(self, line: bytes, headers: list[tuple[str, str]],
                    cseq: str | None) -> Request | Response | ParseError:
        version, _, rest = line.partition(b" ")
        code, _, reason = rest.partition(b" ")
        if version != b"RTSP/1.0" or len(code) != 3 or not code.isdigit():
            return ParseError(400, "malformed status line", cseq)
        return Response(int(code), reason.decode("latin-1").strip(), headers)


def _find_head_end(buf: bytearray, start: int) -> tuple[int, int] | None:
    """(end of head, start of body) once the empty line after the headers is in the buffer."""
    crlf = buf.find(b"\r\n\r\n", max(0, start - 1))
    lf = buf.find(b"\n\n", max(0, start))
    found = [(pos, pos + 4) for pos in (crlf,) if pos >= 0] + [(pos, pos + 2) for pos in (lf,) if pos >= 0]
    return min(found) if found else None


# --- responses ---------------------------------------------------------------------------------------


def response(status: int, cseq: str | None, headers: list[tuple[str, str]] | None = None,
             body: bytes = b"", server: str = "streaming") -> bytes:
    first = [("CSeq", cseq)] if cseq is not None else []
    return message(f"RTSP/1.0 {status} {REASONS.get(status, 'Error')}", [*first, ("Server", server), *(headers or [])],
                   body)


def message(start_line: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """A request or response on the wire: start line, headers (a value with a line break is a
    ValueError: no header injection), Content-Length when there is a body, the body."""
    lines = [start_line]
    for key, value in headers:
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {key} holds a line break")
        lines.append(f"{key}: {value}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
