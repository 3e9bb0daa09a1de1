"""RTSP 1.0 (RFC 2326) for a server, with no I/O: bytes in, events out; decisions in, bytes out.

Three parts, each usable alone and tested without sockets:
- RequestParser: feed() the bytes of a connection in any pieces and get back events: Request,
  InterleavedFrame (RFC 2326 section 10.12: `$`, channel, 16-bit length, data) and, when the input breaks
  a rule, one ParseError whose status is the answer to give (400, 413, 414, 431, 505) before closing the
  connection: after it the framing is lost, so the parser takes nothing more. Every limit (request line,
  header count, header bytes, body bytes) is checked before the bytes are kept, so hostile input never
  grows memory beyond them.
- SessionMachine: the RTSP session states of one connection (section A.2: Init, Ready, Playing) and
  the 4xx rules (455 Method Not Valid in This State, 454 Session Not Found, 459 Aggregate Operation Not
  Allowed, 461 Unsupported Transport). A session id is only known to the connection that made it.
- Helpers: Transport header parsing, SDP for DESCRIBE, Basic and Digest (RFC 2617, MD5) authentication,
  and response serialization.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

MAX_REQUEST_LINE = 4096
MAX_HEADERS = 64
MAX_HEADER_BYTES = 16384  # all header lines together
MAX_BODY = 65536

METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER")
PUBLIC = ", ".join(METHODS)

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


# --- Transport (section 12.39) -----------------------------------------------------------------------


@dataclass
class Transport:
    tcp: bool
    client_ports: tuple[int, int] | None = None  # UDP
    interleaved: tuple[int, int] | None = None  # TCP


class UnsupportedTransport(ValueError):
    pass


def parse_transport(header: str) -> Transport:
    """The first transport of the list we can serve: unicast RTP/AVP over UDP (with client_port) or
    over TCP (interleaved). Raises UnsupportedTransport (461) when there is none."""
    why = "no transport offered"
    for spec in header.split(","):
        params = [p.strip() for p in spec.split(";") if p.strip()]
        if not params:
            continue
        protocol = params[0].upper()
        values: dict[str, str] = {}
        for param in params[1:]:
            key, _, value = param.partition("=")
            values[key.strip().lower()] = value.strip()
        if "multicast" in values:
            why = "multicast is not served"
            continue
        if values.get("mode", "play").strip('"').lower() != "play":
            why = "only mode=play is served"
            continue
        if protocol in ("RTP/AVP", "RTP/AVP/UDP"):
            ports = port_pair(values.get("client_port", ""), need_even=False, low=1)
            if ports is None:
                why = "UDP needs client_port=RTP-RTCP"
                continue
            return Transport(tcp=False, client_ports=ports)
        if protocol == "RTP/AVP/TCP":
            channels = None
            if "interleaved" in values:
                channels = port_pair(values["interleaved"], need_even=False, low=0, high=255)
                if channels is None:
                    why = "interleaved must be two channels 0..255"
                    continue
            return Transport(tcp=True, interleaved=channels)
        why = f"{params[0][:40]} is not served (RTP/AVP over UDP or TCP is)"
    raise UnsupportedTransport(why)


def port_pair(text: str, need_even: bool, low: int, high: int = 65535) -> tuple[int, int] | None:
    first, sep, second = text.partition("-")
    if not first.isdigit() or len(first) > 5 or (sep and (not second.isdigit() or len(second) > 5)):
        return None
    a = int(first)
    b = int(second) if sep else a + 1
    if not (low <= a <= high and low <= b <= high) or (need_even and a % 2):
        return None
    return a, b


def transport_reply(transport: Transport, ssrc: int, server_ports: tuple[int, int] | None) -> str:
    if transport.tcp:
        assert transport.interleaved is not None
        a, b = transport.interleaved
        return f"RTP/AVP/TCP;unicast;interleaved={a}-{b};ssrc={ssrc:08X}"
    assert transport.client_ports is not None and server_ports is not None
    a, b = transport.client_ports
    return (f"RTP/AVP;unicast;client_port={a}-{b};server_port={server_ports[0]}-{server_ports[1]};"
            f"ssrc={ssrc:08X}")


# --- SDP for DESCRIBE --------------------------------------------------------------------------------


@dataclass
class SdpTrack:
    kind: str  # "video" | "audio"
    codec: str  # "H264", "VP8", "opus"
    payload_type: int
    clock_rate: int
    channels: int = 1
    sps: bytes | None = None
    pps: bytes | None = None
    profile_level_id: str | None = None  # from the publisher's SDP, when no SPS is known
    packetization_mode: int = 1


def build_sdp(name: str, tracks: list[SdpTrack], session_id: int, address: str = "0.0.0.0") -> str:
    family, any_address = ("IP6", "::") if ":" in address else ("IP4", "0.0.0.0")
    lines = ["v=0", f"o=- {session_id} 1 IN {family} {address}", f"s={name}", f"c=IN {family} {any_address}",
             "t=0 0", "a=control:*", "a=range:npt=now-"]
    for index, track in enumerate(tracks):
        pt = track.payload_type
        lines.append(f"m={track.kind} 0 RTP/AVP {pt}")
        if track.codec.lower() == "opus":
            lines.append(f"a=rtpmap:{pt} opus/{track.clock_rate}/2")
            lines.append(f"a=fmtp:{pt} sprop-stereo=0")
        else:
            lines.append(f"a=rtpmap:{pt} {track.codec}/{track.clock_rate}")
        if track.codec.upper() == "H264":
            fmtp = [f"packetization-mode={track.packetization_mode}"]
            if track.sps is not None and len(track.sps) >= 4:
                fmtp.append("profile-level-id=" + track.sps[1:4].hex().upper())
            elif track.profile_level_id:
                fmtp.append(f"profile-level-id={track.profile_level_id}")
            if track.sps is not None and track.pps is not None:
                sets = b",".join(base64.b64encode(s) for s in (track.sps, track.pps)).decode()
                fmtp.append(f"sprop-parameter-sets={sets}")
            lines.append(f"a=fmtp:{pt} " + ";".join(fmtp))
        lines.append(f"a=control:trackID={index}")
    return "\r\n".join(lines) + "\r\n"


# --- authentication ----------------------------------------------------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def digest_response(username: str, realm: str, password: str, method: str, uri: str, nonce: str,
                    qop: str | None = None, nc: str | None = None, cnonce: str | None = None) -> str:
    """RFC 2617 section 3.2.2.1, MD5, with or without qop=auth."""
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")


def parse_auth_params(text: str) -> dict[str, str]:
    """key=value and key="quoted value" pairs, separated by commas (RFC 2617 section 1.2)."""
    params: dict[str, str] = {}
    for match in re.finditer(r'\s*([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]*)\s*,?', text):
        value = match.group(3) if match.group(3) is not None else match.group(2)
        params[match.group(1).lower()] = value.replace('\\"', '"')
    return params


class Authenticator:
    """Basic or Digest against a table of users. Digest nonces are HMACs of a per-server secret and a
    per-connection value, so a nonce only works on the connection it was given to."""

    def __init__(self, mode: str, users: dict[str, str], realm: str = "streaming"):
        if mode not in ("basic", "digest"):
            raise ValueError(f"unknown authentication mode {mode!r}")
        self.mode = mode
        self.users = users
        self.realm = realm
        self._secret = secrets.token_bytes(16)

    def nonce(self, connection: str) -> str:
        return hmac.new(self._secret, connection.encode(), hashlib.sha256).hexdigest()[:32]

    def challenge(self, connection: str) -> str:
        if self.mode == "basic":
            return f'Basic realm="{self.realm}"'
        return f'Digest realm="{self.realm}", nonce="{self.nonce(connection)}", algorithm="MD5"'

    def check(self, authorization: str | None, method: str, connection: str) -> str | None:
        """The user name when the Authorization header is right, else None."""
        if not authorization:
            return None
        scheme, _, rest = authorization.strip().partition(" ")
        if self.mode == "basic" and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(rest.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            expected = self.users.get(user)
            if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
                return user
            return None
        if self.mode == "digest" and scheme.lower() == "digest":
            params = parse_auth_params(rest)
            user = params.get("username", "")
            known = self.users.get(user)
            if known is None or params.get("realm") != self.realm or \
                    not hmac.compare_digest(params.get("nonce", ""), self.nonce(connection)):
                return None
            if params.get("algorithm", "MD5").upper() != "MD5":
                return None
            qop = params.get("qop")
            if qop is not None and qop != "auth":
                return None
            expected = digest_response(user, self.realm, known, method, params.get("uri", ""),
                                       params["nonce"], qop, params.get("nc"), params.get("cnonce"))
            if hmac.compare_digest(expected, params.get("response", "").lower()):
                return user
        return None


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
