"""The HTTP rules of WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep), without I/O.

What a request must carry (media types, the ETag of If-Match), what a trickle ICE fragment
(`application/trickle-ice-sdpfrag`, RFC 8840) says, and which HTTP status answers which reason a stream
could not start. streaming/whip.py does the requests with these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .streams import NAME_IN_USE, NO_COMMON_CODECS, NOT_FOUND, TRANSCODING_DISABLED

SDP_TYPE = "application/sdp"
TRICKLE_TYPE = "application/trickle-ice-sdpfrag"
MAX_FRAGMENT = 16384  # bytes of a PATCH body: candidates of one gathering round fit many times over

# CORS: pages on other origins publish and play with fetch(); they need to read these answer headers.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "OPTIONS, POST, PATCH, DELETE",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Accept-Post",
    "Access-Control-Max-Age": "86400",
}

_CANDIDATE = re.compile(r"^a=candidate:(\S+ \d+ \S+ \d+ \S+ \d+ typ \S+.*)$")
_TOKEN = re.compile(r"^[A-Za-z0-9+/=_.~-]{1,4096}$")


def media_type(content_type: str | None) -> str:
    """`application/sdp; charset=utf-8` -> `application/sdp`; lower case; "" when absent."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`; None without one. ValueError: a header that is
    there but is not a usable bearer token (another scheme, or characters a token does not have)."""
    if authorization is None or not authorization.strip():
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise ValueError(f"Authorization must be 'Bearer <token>', not the {scheme[:20]!r} scheme")
    if not _TOKEN.match(token):
        raise ValueError("Authorization: the bearer token is empty, too long or has characters a token "
                         "does not have (RFC 6750: letters, digits and -._~+/=)")
    return token


def etag_matches(if_match: str | None, etag: str) -> bool:
    """RFC 9110 If-Match against the resource's one (strong) ETag: absent or `*` always match."""
    if if_match is None or if_match.strip() in ("", "*"):
        return True
    return any(tag.strip() == etag for tag in if_match.split(","))


@dataclass
class TrickleFragment:
    """What a PATCH fragment says: the ICE credentials it is for and the candidates, each with the mid
    of the media section it came under (None before any `a=mid`)."""

    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[tuple[str | None, str]] = field(default_factory=list)  # (mid, "candidate:...")
    end_of_candidates: bool = False


def parse_fragment(text: str) -> TrickleFragment:
    """Parse a trickle-ice-sdpfrag body (RFC 8840 section 9). ValueError says what is wrong."""
    if len(text) > MAX_FRAGMENT:
        raise ValueError(f"The fragment is larger than {MAX_FRAGMENT} bytes")
    fragment = TrickleFragment()
    mid: str | None = None
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise ValueError(f"Line {number} is not an SDP line (type=value): {line[:60]!r}")
        if line.startswith("a=ice-ufrag:"):
            fragment.ufrag = line[len("a=ice-ufrag:"):]
        elif line.startswith("a=ice-pwd:"):
            fragment.pwd = line[len("a=ice-pwd:"):]
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:"):]
        elif line.startswith("m="):
            mid = None  # its a=mid follows
        elif line.startswith("a=candidate:"):
            match = _CANDIDATE.match(line)
            if match is None:
                raise ValueError(f"Line {number} is not a valid candidate: {line[:80]!r}")
            fragment.candidates.append((mid, "candidate:" + match.group(1)))
        elif line == "a=end-of-candidates":
            fragment.end_of_candidates = True
        # other lines (a=group, a=ice-options ...) say nothing a trickle needs
    return fragment


def offer_ufrag(sdp: str) -> str | None:
    """The first a=ice-ufrag of an SDP (with BUNDLE, every section has the same one)."""
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line[len("a=ice-ufrag:"):].strip()
    return None


def failure_status(info: str) -> int:
    """The HTTP status of a stream that failed to start with `info` (the WebSDK's reason strings). A
    reason none of these is the backend's refusal (publishStream / playStream hook): 403."""
    if info == NAME_IN_USE:
        return 409
    if info == NOT_FOUND:
        return 404
    if info in (NO_COMMON_CODECS, TRANSCODING_DISABLED):
        return 422
    if info.startswith("Bad SDP") or info.startswith("Invalid stream name"):
        return 400
    return 403
