"""SDP offer/answer for the SIP leg of a call: plain RTP/AVP (RFC 4566, RFC 3264), no I/O.

`parse` reads what a SIP peer sends (strictly bounded: size, lines, media sections, formats), `build`
writes ours, and `choose_audio` / `choose_video` pick the codec of a leg. Static payload types (PCMU 0,
PCMA 8, G722 9) need no rtpmap (RFC 3551); dynamic ones (96-127) must have one. G.722 is sampled at
16 kHz but its RTP clock is 8000 (RFC 3551 section 4.5.2). Every problem is an SdpError (a ValueError)
whose message says what is wrong, for the user.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

MAX_SDP = 16384  # characters
MAX_LINES = 256
MAX_MEDIA = 8
MAX_FORMATS = 32
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
REVERSED = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


class SdpError(ValueError):
    pass


@dataclass(frozen=True)
class RtpCodec:
    """One format of an m= line: encoding name as registered (case kept from our catalog), RTP clock."""

    name: str
    clock_rate: int
    payload_type: int
    channels: int = 1
    fmtp: str = ""

    @property
    def key(self) -> str:
        return self.name.lower()

    def rtpmap(self) -> str:
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"a=rtpmap:{self.payload_type} {self.name}/{self.clock_rate}{suffix}"


# What the SIP leg speaks, with the payload types we offer. Audio sample rates are in media/sip_audio.py.
CATALOG: dict[str, RtpCodec] = {
    "pcmu": RtpCodec("PCMU", 8000, 0),
    "pcma": RtpCodec("PCMA", 8000, 8),
    "g722": RtpCodec("G722", 8000, 9),
    "opus": RtpCodec("opus", 48000, 111, 2, "minptime=10;useinbandfec=1"),
    "telephone-event": RtpCodec("telephone-event", 8000, 101, 1, "0-16"),
    "h264": RtpCodec("H264", 90000, 96, 1, "packetization-mode=1;profile-level-id=42e01f"),
}
STATIC = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1)}


@dataclass
class Media:
    kind: str  # "audio" | "video" | anything else the peer offers (answered with port 0)
    port: int
    proto: str
    formats: list[int]
    codecs: dict[int, RtpCodec] = field(default_factory=dict)
    direction: str = "sendrecv"
    address: str | None = None  # c= of this section, else the session's
    rtcp_port: int | None = None  # a=rtcp (RFC 3605), else port + 1
    ptime: int | None = None

    @property
    def rejected(self) -> bool:
        return self.port == 0


@dataclass
class Sdp:
    address: str | None
    media: list[Media]
    session_direction: str = "sendrecv"

    def first(self, kind: str) -> Media | None:
        for media in self.media:
            if media.kind == kind:
                return media
        return None


def _address(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad connection line: c={value[:80]}")
    host = parts[2].split("/")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise SdpError(f"the connection address {host[:80]!r} is not an IP address") from None
    if ip.version != (4 if parts[1] == "IP4" else 6):
        raise SdpError(f"the connection address {host} is not {parts[1]}")
    return str(ip)


def _int(text: str, what: str, low: int, high: int) -> int:
    if not text.isdigit() or len(text) > 10:
        raise SdpError(f"{what} is not a number: {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise SdpError(f"{what} {value} is out of range {low}..{high}")
    return value


def parse(sdp: str) -> Sdp:
    """A SIP peer's SDP, checked; SdpError says what is wrong."""
    if not isinstance(sdp, str) or not sdp.strip():
        raise SdpError("the SDP is empty")
    if len(sdp) > MAX_SDP:
        raise SdpError(f"the SDP is larger than {MAX_SDP} characters")
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]
    if len(lines) > MAX_LINES:
        raise SdpError(f"the SDP has more than {MAX_LINES} lines")
    if not lines[0].startswith("v=0"):
        raise SdpError("the SDP does not start with v=0")
    session_address: str | None = None
    session_direction = "sendrecv"
    media: list[Media] = []
    rtpmaps: dict[int, tuple[str, int, int]] = {}
    fmtps: dict[int, str] = {}

    def finish() -> None:
        if not media:
            return
        current = media[-1]
        for pt in current.formats:
            if pt in rtpmaps:
                name, rate, channels = rtpmaps[pt]
            elif pt in STATIC:
                name, rate, channels = STATIC[pt]
            else:
                continue  # dynamic without rtpmap: unusable, ignored
            current.codecs[pt] = RtpCodec(name, rate, pt, channels, fmtps.get(pt, ""))

    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"bad SDP line: {line[:80]!r}")
        kind, value = line[0], line[2:].strip()
        if kind == "m":
            finish()
            rtpmaps, fmtps = {}, {}
            if len(media) >= MAX_MEDIA:
                raise SdpError(f"the SDP has more than {MAX_MEDIA} media sections")
            parts = value.split()
            if len(parts) < 4:
                raise SdpError(f"bad media line: m={value[:80]}")
            if len(parts) - 3 > MAX_FORMATS:
                raise SdpError(f"a media line lists more than {MAX_FORMATS} formats")
            port = _int(parts[1].split("/")[0], "media port", 0, 65535)
            formats = []
            if parts[2].upper().startswith("RTP/"):
                formats = [_int(f, "payload type", 0, 127) for f in parts[3:]]
            media.append(Media(parts[0], port, parts[2], formats, direction=session_direction))
        elif kind == "c":
            address = _address(value)
            if media:
                media[-1].address = address
            else:
                session_address = address
        elif kind == "a":
            name, _, rest = value.partition(":")
            if name in DIRECTIONS:
                if media:
                    media[-1].direction = name
                else:
                    session_direction = name
            elif not media:
                continue
            elif name == "rtpmap":
                pt_text, _, encoding = rest.partition(" ")
                pt = _int(pt_text, "rtpmap payload type", 0, 127)
                fields = encoding.strip().split("/")
                if len(fields) < 2 or not fields[0] or len(fields[0]) > 32:
                    raise SdpError(f"bad rtpmap: a={value[:80]}")
                rate = _int(fields[1], "clock rate", 1, 1_000_000)
                channels = _int(fields[2], "channels", 1, 8) if len(fields) > 2 else 1
                rtpmaps[pt] = (fields[0], rate, channels)
            elif name == "fmtp":
                pt_text, _, params = rest.partition(" ")
                fmtps[_int(pt_text, "fmtp payload type", 0, 127)] = params.strip()[:512]
            elif name == "rtcp":
                media[-1].rtcp_port = _int(rest.split()[0] if rest.split() else "", "rtcp port", 1, 65535)
            elif name == "ptime":
                media[-1].ptime = _int(rest.strip(), "ptime", 1, 1000)
    finish()
    if not media:
        raise SdpError("the SDP offers no media")
    for section in media:
        if section.address is None:
            section.address = session_address
        if section.port and section.kind in ("audio", "video") and section.address is None:
            raise SdpError(f"the {section.kind} section has no connection address")
    return Sdp(session_address, media, session_direction)


def find(media: Media, name: str) -> RtpCodec | None:
    """The peer's format of that encoding (case-insensitive; opus only as opus/48000/2)."""
    key = name.lower()
    for pt in media.formats:
        codec = media.codecs.get(pt)
        if codec is None or codec.key != key:
            continue
        if key == "opus" and (codec.clock_rate != 48000 or codec.channels != 2):
            continue
        if key == "telephone-event" and codec.clock_rate != 8000:
            continue
        if key == "h264" and "packetization-mode=1" not in codec.fmtp.replace(" ", ""):
            continue
        return codec
    return None


def choose_audio(media: Media, allowed: tuple[str, ...]) -> tuple[RtpCodec, RtpCodec | None]:
    """The audio codec of the leg: the peer's first format that we allow (RFC 3264: the offerer's
    preference), and its telephone-event format if any. SdpError when none is common."""
    if media.proto.upper() != "RTP/AVP":
        raise SdpError(f"the audio is offered over {media.proto[:40]}, not RTP/AVP")
    keys = {name.lower() for name in allowed}
    for pt in media.formats:
        codec = media.codecs.get(pt)
        if codec is not None and codec.key in keys and find(media, codec.name) is codec:
            return codec, find(media, "telephone-event")
    offered = ", ".join(sorted({c.name for c in media.codecs.values()})) or "none we know"
    raise SdpError(f"no audio codec in common (offered: {offered[:200]}; we take {', '.join(allowed)})")


def choose_video(media: Media) -> RtpCodec | None:
    if media.proto.upper() != "RTP/AVP" or media.rejected:
        return None
    return find(media, "H264")


@dataclass
class Origin:
    """The o= line of one endpoint: the same session id all call long, a version bumped per new SDP."""

    session_id: int
    version: int = 0

    def next(self) -> int:
        self.version += 1
        return self.version


@dataclass(frozen=True)
class MediaOffer:
    kind: str
    port: int  # 0: rejected
    codecs: tuple[RtpCodec, ...]
    direction: str = "sendrecv"
    proto: str = "RTP/AVP"
    ptime: int | None = None


def build(origin: Origin, address: str, media: list[MediaOffer]) -> str:
    """Our SDP (an offer or an answer), with the next o= version."""
    family = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o=- {origin.session_id} {origin.next()} IN {family} {address}", "s=-",
             f"c=IN {family} {address}", "t=0 0"]
    for section in media:
        if section.port == 0 or not section.codecs:
            formats = " ".join(str(c.payload_type) for c in section.codecs) or "0"
            lines.append(f"m={section.kind} 0 {section.proto} {formats}")
            continue
        lines.append(f"m={section.kind} {section.port} {section.proto} "
                     + " ".join(str(c.payload_type) for c in section.codecs))
        lines.append(f"a=rtcp:{section.port + 1}")
        for codec in section.codecs:
            lines.append(codec.rtpmap())
            if codec.fmtp:
                lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp}")
        if section.ptime:
            lines.append(f"a=ptime:{section.ptime}")
        lines.append(f"a={section.direction}")
    return "\r\n".join(lines) + "\r\n"
