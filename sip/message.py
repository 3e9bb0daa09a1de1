"""SIP messages (RFC 3261 §7, §20): parsing, building and serializing requests and responses. No I/O.

`parse(data)` takes one whole message (a UDP datagram, or one message cut out of a TCP stream by
`StreamFramer`) and returns a Request or a Response, or raises ParseError. The parser is meant for
hostile input: every size is bounded (MAX_MESSAGE, MAX_HEADERS, MAX_HEADER_LINE), a Content-Length that
is not a number or promises more bytes than arrived is an error, folded header lines (RFC 3261 §7.3.1)
are unfolded, compact header names (`v`, `f`, `t`, `i`, `m`, `l`, `c` ...) are expanded, and
comma-separated values of list headers (Via, Contact, Route, Record-Route ...) are split into one header
each, so `Headers.get_all("Via")` is always one entry per hop.

A ParseError of a request whose start line was read carries what is needed to answer it with 400
(`ParseError.request`), because RFC 3261 §21.4.1 wants malformed requests answered, not dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_MESSAGE = 65_535  # bytes of a whole message (a UDP datagram's upper bound)
MAX_HEADERS = 128  # header lines per message
MAX_HEADER_LINE = 8_192  # bytes of one (unfolded) header line
MAX_START_LINE = 4_096

SIP_VERSION = "SIP/2.0"
METHOD_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]{1,32}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")

COMPACT_FORMS = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length", "c": "Content-Type",
    "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via", "o": "Event", "r": "Refer-To",
    "b": "Referred-By", "u": "Allow-Events", "x": "Session-Expires", "a": "Accept-Contact",
    "j": "Reject-Contact", "d": "Request-Disposition", "y": "Identity", "n": "Identity-Info",
}
# Canonical spelling of the names this stack reads, so lookups and output are consistent.
CANONICAL = {name.lower(): name for name in (
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Content-Length", "Content-Type",
    "Route", "Record-Route", "Allow", "Supported", "Require", "Proxy-Require", "Unsupported", "Expires",
    "WWW-Authenticate", "Authorization", "Proxy-Authenticate", "Proxy-Authorization", "User-Agent",
    "Server", "Event", "Subscription-State", "Refer-To", "Referred-By", "Retry-After", "Allow-Events",
    "Accept", "Min-Expires", "Content-Encoding", "Subject", "Session-Expires", "Reason", "Warning",
    "Date", "Timestamp", "Organization", "Priority", "Accept-Contact", "Reject-Contact",
    "Request-Disposition", "Identity", "Identity-Info", "P-Asserted-Identity", "Content-Disposition",
    "Accept-Language", "Accept-Encoding", "Call-Info", "Alert-Info", "In-Reply-To", "Reply-To",
    "Min-SE", "Path", "Service-Route", "Replaces",
)}
CANONICAL["call-id"] = "Call-ID"
CANONICAL["cseq"] = "CSeq"
CANONICAL["www-authenticate"] = "WWW-Authenticate"
# Headers whose value is a comma-separated list (RFC 3261 §7.3.1): one entry per element after parsing.
LIST_HEADERS = frozenset({"Via", "Contact", "Route", "Record-Route", "Allow", "Supported", "Require",
                          "Proxy-Require", "Unsupported", "Allow-Events", "Accept", "Path", "Service-Route"})
REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
    408: "Request Timeout", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
    420: "Bad Extension", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline",
}


class ParseError(ValueError):
    """A message that cannot be used. `request` is the half-read request (start line and whatever
    headers could be read) when there is enough of it to answer with 400, else None."""

    def __init__(self, reason: str, request: Request | None = None, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.request = request
        self.status = status


def canonical_name(name: str) -> str:
    lower = name.lower()
    if lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return CANONICAL.get(lower, name)


def split_list(value: str) -> list[str]:
    """Split a header value at commas outside quotes and <...> (display names and URIs hold commas)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


class Headers:
    """Ordered header fields; names are stored canonically and compared without case."""

    def __init__(self, items: list[tuple[str, str]] | None = None):
        self._items: list[tuple[str, str]] = []
        for name, value in items or []:
            self.add(name, value)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def copy(self) -> Headers:
        out = Headers()
        out._items = list(self._items)
        return out

    def add(self, name: str, value: str, first: bool = False) -> None:
        item = (canonical_name(name), value)
        if first:
            self._items.insert(0, item)
        else:
            self._items.append(item)

    def get(self, name: str, default: str | None = None) -> str | None:
        key = canonical_name(name).lower()
        for n, v in self._items:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        key = canonical_name(name).lower()
        return [v for n, v in self._items if n.lower() == key]

    def set(self, name: str, value: str) -> None:
        """Replace every field of that name by one, kept where the first one was."""
        key = canonical_name(name).lower()
        for i, (n, _v) in enumerate(self._items):
            if n.lower() == key:
                self._items[i] = (canonical_name(name), value)
                self._items = [it for j, it in enumerate(self._items) if j <= i or it[0].lower() != key]
                return
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [it for it in self._items if it[0].lower() != key]

    def pop_first(self, name: str) -> str | None:
        key = canonical_name(name).lower()
        for i, (n, v) in enumerate(self._items):
            if n.lower() == key:
                del self._items[i]
                return v
        return None


@dataclass
class Message:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.headers.get("CSeq") or "")

    def start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        lines = [self.start_line()]
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", errors="replace") + self.body

    def text(self) -> str:
        """The whole message as text (what clients get as sipMessageRaw)."""
        return bytes(self).decode("utf-8", errors="replace")


@dataclass
class Request(Message):
    method: str = ""
    uri: str = ""

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"


@dataclass
class Response(Message):
    status: int = 0
    reason: str = ""

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"


def parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10 or not METHOD_RE.match(parts[1]):
        raise ValueError(f"malformed CSeq {value[:64]!r}")
    number = int(parts[0])
    if number >= 2**31:
        raise ValueError(f"CSeq number {number} is out of range (below 2**31)")
    return number, parts[1].upper()


def _start_line(line: str) -> tuple[Request | Response, str | None]:
    """The message its start line begins, and what is wrong with the line when it can still be answered."""
    if len(line) > MAX_START_LINE:
        raise ParseError(f"start line longer than {MAX_START_LINE} bytes")
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if len(parts) < 2 or parts[0].upper() != SIP_VERSION:
            raise ParseError(f"malformed status line {line[:80]!r}")
        if not parts[1].isdigit() or len(parts[1]) != 3 or not 100 <= int(parts[1]) <= 699:
            raise ParseError(f"malformed status code in {line[:80]!r}")
        return Response(status=int(parts[1]), reason=parts[2] if len(parts) > 2 else ""), None
    parts = line.split(" ")
    if len(parts) != 3 or not METHOD_RE.match(parts[0]) or not parts[1]:
        raise ParseError(f"malformed request line {line[:80]!r}")
    request = Request(method=parts[0], uri=parts[1])
    if parts[2].upper() != SIP_VERSION:
        return request, f"unsupported SIP version {parts[2][:16]!r}"
    return request, None


def parse(data: bytes, *, stream: bool = False) -> Request | Response:
    """One whole message. `stream`: it came over TCP/TLS, where a missing Content-Length means no body."""
    if len(data) > MAX_MESSAGE:
        raise ParseError(f"message of {len(data)} bytes is larger than {MAX_MESSAGE}", status=513)
    end = data.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end = data.find(b"\n\n")
        sep = 2
    if end < 0:
        head, body = data, b""
        if not data.strip():
            raise ParseError("empty message")
    else:
        head, body = data[:end], data[end + sep:]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)  # RFC 3261 §7.5: empty lines before the start line are ignored
    if not lines:
        raise ParseError("empty message")
    message, problem = _start_line(lines[0].strip())
    problems = [problem] if problem else []
    request = message if isinstance(message, Request) else None
    unfolded: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += " " + line.strip()
        elif line:
            unfolded.append(line)
    if len(unfolded) > MAX_HEADERS:
        problems.append(f"more than {MAX_HEADERS} header lines")
        unfolded = unfolded[:MAX_HEADERS]
    for line in unfolded:
        if len(line) > MAX_HEADER_LINE:
            # Read on without it, so the answer can still be addressed from the other headers.
            problems.append(f"a header line is longer than {MAX_HEADER_LINE} bytes")
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or not TOKEN_RE.match(name):
            problems.append(f"malformed header line {line[:60]!r}")
            continue
        canonical = canonical_name(name)
        value = value.strip()
        if canonical in LIST_HEADERS:
            for part in split_list(value):
                message.headers.add(canonical, part)
        else:
            message.headers.add(canonical, value)
    if problems:
        raise ParseError(problems[0], request)
    length_text = message.headers.get("Content-Length")
    if length_text is not None:
        if not length_text.isdigit() or len(length_text) > 7:
            raise ParseError(f"malformed Content-Length {length_text[:20]!r}", request)
        length = int(length_text)
        if length > len(body):
            raise ParseError(f"Content-Length {length} but only {len(body)} body bytes arrived", request)
        body = body[:length]
    elif stream:
        body = b""
    message.body = body
    for name in REQUIRED:
        if not message.headers.get(name):
            raise ParseError(f"missing {name} header", request)
    try:
        number, method = parse_cseq(message.headers.get("CSeq") or "")
    except ValueError as exc:
        raise ParseError(str(exc), request) from None
    if request is not None and method != request.method.upper():
        raise ParseError(f"CSeq method {method} does not match the request method {request.method}", request)
    try:
        parse_via(message.headers.get_all("Via")[0])
    except ValueError as exc:
        # Without a usable top Via there is no one to answer: the 400 could not be routed back.
        raise ParseError(str(exc)) from None
    max_forwards = message.headers.get("Max-Forwards")
    if request is not None and max_forwards is not None and (not max_forwards.isdigit() or len(max_forwards) > 3):
        raise ParseError(f"malformed Max-Forwards {max_forwards[:20]!r}", request)
    return message


# -- Via -------------------------------------------------------------------------------------------


@dataclass
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        hostport = host if self.port is None else f"{host}:{self.port}"
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"SIP/2.0/{self.transport} {hostport}{params}"


def parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"') if eq else None
    return params


def parse_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"malformed host {text[:64]!r}")
        host, rest = text[1:close], text[close + 1:]
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            raise ValueError(f"malformed host {text[:64]!r}")
    else:
        host, colon, port_text_ = text.partition(":")
        port_text = port_text_ if colon else None
    if not host or any(c in host for c in " <>\"\\/@"):
        raise ValueError(f"malformed host {text[:64]!r}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"malformed port in {text[:64]!r}")
        port = int(port_text)
    return host, port


def parse_via(value: str) -> Via:
    sent, _, rest = value.strip().partition(" ")
    protocol = sent.split("/")
    if len(protocol) != 3 or protocol[0].strip().upper() != "SIP" or protocol[1].strip() != "2.0":
        raise ValueError(f"malformed Via {value[:80]!r}")
    hostport, _, params = rest.strip().partition(";")
    host, port = parse_hostport(hostport)
    return Via(protocol[2].strip().upper(), host, port, parse_params(params))


def response_to(request: Request, status: int, reason: str | None = None, to_tag: str | None = None) -> Response:
    """A response to `request` (RFC 3261 §8.2.6.2): its Via, From, Call-ID and CSeq; To with `to_tag`
    added when it has none yet (never for 100 Trying)."""
    response = Response(status=status, reason=reason or REASONS.get(status, "Unknown"))
    for via in request.headers.get_all("Via"):
        response.headers.add("Via", via)
    response.headers.add("From", request.headers.get("From") or "")
    to = request.headers.get("To") or ""
    if to_tag and status != 100 and ";tag=" not in to.replace(" ", "").lower():
        to = f"{to};tag={to_tag}"
    response.headers.add("To", to)
    response.headers.add("Call-ID", request.call_id)
    response.headers.add("CSeq", request.headers.get("CSeq") or "")
    return response
