"""RTSP 1.0 (RFC 2326) for a client that pulls a camera, with no I/O: URL parsing, requests out,
responses in (media.rtsp_protocol.ResponseParser, with the server side's limits), the camera's SDP,
Transport replies and answers to Basic and Digest challenges (RFC 2617).

The asyncio side (streaming.rtsp_pull) opens the connection and sockets and moves the bytes.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .rtsp_protocol.auth import digest_response, parse_auth_params
from .rtsp_protocol.parser import MAX_REQUEST_LINE, message
from .rtsp_protocol.transport import port_pair

MAX_URL = 2048
DEFAULT_PORT = 554
USER_AGENT = "streaming"

# RFC 3551 table 4 and 5: static payload types a camera may use without an rtpmap.
STATIC_PAYLOAD_TYPES = {0: ("audio", "PCMU", 8000, 1), 8: ("audio", "PCMA", 8000, 1),
                        14: ("audio", "MPA", 90000, 1), 26: ("video", "JPEG", 90000, 1),
                        32: ("video", "MPV", 90000, 1), 33: ("video", "MP2T", 90000, 1)}
# Our names for the codecs the routing core forwards; any other keeps its SDP name, upper-cased.
_CODEC_NAMES = {"h264": "H264", "vp8": "VP8", "opus": "opus"}


class RtspUrlError(ValueError):
    """Not an rtsp:// URL we can pull."""


@dataclass(frozen=True)
class RtspUrl:
    host: str
    port: int
    path: str  # with the query, always starting with "/"
    username: str | None = None
    password: str | None = None

    @property
    def uri(self) -> str:
        """The URL the requests name: credentials left out (they go in Authorization headers)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"rtsp://{host}:{self.port}{self.path}"

    @property
    def display(self) -> str:
        """The URL as logs and listings show it: the user, never the password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}@" if self.username else ""
        return f"rtsp://{user}{host}:{self.port}{self.path}"


def parse_rtsp_url(text: str) -> RtspUrl:
    """rtsp://[user[:password]@]host[:port]/path[?query]. Raises RtspUrlError saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise RtspUrlError("empty URL")
    if len(text) > MAX_URL:
        raise RtspUrlError(f"URL longer than {MAX_URL} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in text):
        raise RtspUrlError("spaces or control characters in the URL")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise RtspUrlError(f"malformed URL: {exc}") from None
    if parts.scheme.lower() != "rtsp":
        raise RtspUrlError("the scheme must be rtsp://")
    if not parts.hostname:
        raise RtspUrlError("no host in the URL")
    if port == 0:
        raise RtspUrlError("port 0")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if len(path) > MAX_REQUEST_LINE // 2:
        raise RtspUrlError("path too long")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return RtspUrl(parts.hostname, port or DEFAULT_PORT, path, username or None, password)


def build_request(method: str, uri: str, cseq: int, headers: list[tuple[str, str]] | None = None,
                  body: bytes = b"") -> bytes:
    return message(f"{method} {uri} RTSP/1.0", [("CSeq", str(cseq)), ("User-Agent", USER_AGENT), *(headers or [])],
                   body)


# --- authentication ----------------------------------------------------------------------------------


class Credentials:
    """Answers a camera's 401 challenges with the URL's user and password: Digest (MD5, qop=auth or
    none) when offered, else Basic. One answer per challenge: a second 401 to the same nonce means the
    credentials are wrong (unless the camera says the nonce went stale)."""

    def __init__(self, username: str | None, password: str | None):
        self.username = username
        self.password = password or ""
        self._scheme: str | None = None
        self._params: dict[str, str] = {}
        self._nc = 0
        self._answered: set[str] = set()

    def challenge(self, values: list[str]) -> bool:
        """Take the WWW-Authenticate headers of a 401. False when there is nothing (new) to answer with."""
        if self.username is None:
            return False
        offers: dict[str, str] = {}
        for value in values:
            scheme, _, rest = value.strip().partition(" ")
            offers.setdefault(scheme.lower(), rest)
        if "digest" in offers:
            params = parse_auth_params(offers["digest"])
            algorithm = params.get("algorithm", "MD5").upper()
            if algorithm != "MD5" or "nonce" not in params:
                return "basic" in offers and self._take_basic()
            key = "digest:" + params["nonce"]
            if key in self._answered and params.get("stale", "").lower() != "true":
                return False
            self._answered.add(key)
            self._scheme, self._params, self._nc = "digest", params, 0
            return True
        return "basic" in offers and self._take_basic()

    def _take_basic(self) -> bool:
        if "basic" in self._answered:
            return False
        self._answered.add("basic")
        self._scheme = "basic"
        return True

    def authorization(self, method: str, uri: str) -> str | None:
        """The Authorization header for a request, once a challenge was taken."""
        if self._scheme == "basic":
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return f"Basic {token}"
        if self._scheme != "digest":
            return None
        params = self._params
        realm, nonce = params.get("realm", ""), params["nonce"]
        qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
        qop = "auth" if "auth" in qops else None
        fields = [f'username="{self.username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
        if qop:
            self._nc += 1
            nc, cnonce = f"{self._nc:08x}", secrets.token_hex(8)
            answer = digest_response(self.username or "", realm, self.password, method, uri, nonce, qop, nc, cnonce)
            fields += [f"qop={qop}", f"nc={nc}", f'cnonce="{cnonce}"']
        else:
            answer = digest_response(self.username or "", realm, self.password, method, uri, nonce)
        fields.append(f'response="{answer}"')
        if "opaque" in params:
            fields.append(f'opaque="{params["opaque"]}"')
        fields.append("algorithm=MD5")
        return "Digest " + ", ".join(fields)


# --- the camera's SDP -------------------------------------------------------------------------------


@dataclass
class RemoteTrack:
    kind: str  # "video" | "audio" (other media are left out)
    codec: str  # "H264", "VP8", "opus", else the SDP's name upper-cased ("PCMU", "MPEG4-GENERIC", ...)
    payload_type: int
    clock_rate: int
    channels: int
    control: str  # the absolute URL to SETUP
    fmtp: dict[str, str] = field(default_factory=dict)


@dataclass
class _Media:
    kind: str
    formats: list[str]
    attrs: list[str] = field(default_factory=list)


def control_url(base: str, control: str | None) -> str:
    """RFC 2326 C.1.1: an absolute control URL as it is, `*` (or none) the base, else relative to the
    base (which is the Content-Base, else the request URL)."""
    if not control or control == "*":
        return base
    if re.match(r"(?i)^rtsp://", control):
        return control
    return base + control if base.endswith("/") else base + "/" + control


def parse_sdp(sdp: str, base: str) -> list[RemoteTrack]:
    """The audio and video tracks of a DESCRIBE answer. Raises ValueError for text that is not SDP."""
    lines = [line.strip() for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or not lines[0].startswith("v="):
        raise ValueError("the DESCRIBE answer is not SDP")
    session_control: str | None = None
    media: list[_Media] = []
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep or len(key) != 1:
            raise ValueError(f"malformed SDP line: {line[:60]!r}")
        if key == "m":
            fields = value.split()
            if len(fields) < 4:
                raise ValueError(f"malformed media line: {line[:60]!r}")
            media.append(_Media(fields[0], fields[3:]))
        elif key == "a":
            if media:
                media[-1].attrs.append(value)
            elif value.startswith("control:"):
                session_control = value[len("control:"):].strip()
    session_base = control_url(base, session_control) if session_control and session_control != "*" else base
    tracks = []
    for entry in media:
        formats = [f for f in entry.formats if f.isdigit() and int(f) < 128]
        if entry.kind not in ("audio", "video") or not formats:
            continue
        pt = int(formats[0])
        rtpmaps: dict[int, str] = {}
        fmtps: dict[int, str] = {}
        control = None
        for attr in entry.attrs:
            name, _, rest = attr.partition(":")
            if name == "rtpmap":
                number, _, mapping = rest.partition(" ")
                if number.isdigit():
                    rtpmaps[int(number)] = mapping.strip()
            elif name == "fmtp":
                number, _, params = rest.partition(" ")
                if number.isdigit():
                    fmtps[int(number)] = params.strip()
            elif name == "control":
                control = rest.strip()
        if pt in rtpmaps:
            encoding = rtpmaps[pt].split("/")
            codec = _CODEC_NAMES.get(encoding[0].lower(), encoding[0].upper())
            try:
                clock_rate = int(encoding[1]) if len(encoding) > 1 else 90000
                channels = int(encoding[2]) if len(encoding) > 2 else 1
            except ValueError:
                raise ValueError(f"malformed rtpmap: {rtpmaps[pt][:60]!r}") from None
        elif pt in STATIC_PAYLOAD_TYPES:
            _kind, codec, clock_rate, channels = STATIC_PAYLOAD_TYPES[pt]
        else:
            continue  # a dynamic payload type without rtpmap names nothing
        fmtp: dict[str, str] = {}
        for item in fmtps.get(pt, "").split(";"):
            key, _, value = item.strip().partition("=")
            if key:
                fmtp[key.strip().lower()] = value.strip()
        tracks.append(RemoteTrack(entry.kind, codec, pt, clock_rate, channels,
                                  control_url(session_base, control) if control else session_base, fmtp))
    return tracks


def sprop_parameter_sets(fmtp: dict[str, str]) -> tuple[bytes | None, bytes | None]:
    """An H.264 track's SPS and PPS from sprop-parameter-sets (RFC 6184 section 8.1), if given."""
    sps = pps = None
    for item in fmtp.get("sprop-parameter-sets", "").split(","):
        try:
            nal = base64.b64decode(item.strip(), validate=True)
        except ValueError:
            continue
        if nal and nal[0] & 0x1F == 7 and sps is None:
            sps = nal
        elif nal and nal[0] & 0x1F == 8 and pps is None:
            pps = nal
    return sps, pps


# --- Transport and Session replies --------------------------------------------------------------------


@dataclass
class TransportReply:
    tcp: bool
    interleaved: tuple[int, int] | None = None
    server_ports: tuple[int, int] | None = None
    source: str | None = None


def parse_transport_reply(header: str) -> TransportReply:
    """The transport the camera chose in answer to SETUP. Raises ValueError when it is not one we can use."""
    params = [p.strip() for p in header.split(",")[0].split(";") if p.strip()]
    if not params:
        raise ValueError("empty Transport header")
    protocol = params[0].upper()
    values: dict[str, str] = {}
    for param in params[1:]:
        key, _, value = param.partition("=")
        values[key.strip().lower()] = value.strip()
    if "multicast" in values:
        raise ValueError("the camera answered with multicast")
    if protocol == "RTP/AVP/TCP":
        channels = port_pair(values.get("interleaved", ""), need_even=False, low=0, high=255)
        if channels is None:
            raise ValueError("TCP transport without interleaved channels")
        return TransportReply(tcp=True, interleaved=channels)
    if protocol in ("RTP/AVP", "RTP/AVP/UDP"):
        ports = port_pair(values.get("server_port", ""), need_even=False, low=1)
        return TransportReply(tcp=False, server_ports=ports, source=values.get("source") or None)
    raise ValueError(f"unsupported transport {params[0][:40]!r}")


def parse_session(header: str) -> tuple[str, float | None]:
    """(session id, timeout in seconds or None) of a Session header (RFC 2326 section 12.37)."""
    session_id, _, rest = header.partition(";")
    timeout = None
    match = re.search(r"(?i)timeout\s*=\s*(\d{1,6})", rest)
    if match is not None and int(match.group(1)) > 0:
        timeout = float(match.group(1))
    return session_id.strip(), timeout
