"""Type stubs for media._native.rtcp, the Cython twin of media/rtcp.py (same API, same behaviour)."""

from collections.abc import Iterable, Iterator, Mapping
from typing import ClassVar, TypeAlias, final

_Buffer: TypeAlias = bytes | bytearray | memoryview
_WritableBuffer: TypeAlias = bytearray | memoryview

RTCP_HEADER_LENGTH: int
RTCP_SR: int
RTCP_RR: int
RTCP_SDES: int
RTCP_BYE: int
RTCP_APP: int
RTCP_RTPFB: int
RTCP_PSFB: int
RTPFB_NACK: int
PSFB_PLI: int
PSFB_FIR: int
PSFB_AFB: int
SDES_CNAME: int

@final
class RtcpReportBlock:
    __match_args__: ClassVar[tuple[str, ...]]
    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int
    def __init__(
        self,
        ssrc: int = 0,
        fraction_lost: int = 0,
        packets_lost: int = 0,
        highest_sequence: int = 0,
        jitter: int = 0,
        lsr: int = 0,
        dlsr: int = 0,
    ) -> None: ...

@final
class RtcpSenderReport:
    __match_args__: ClassVar[tuple[str, ...]]
    packet_type: ClassVar[int]
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[RtcpReportBlock, ...]
    def __init__(
        self,
        ssrc: int = 0,
        ntp_timestamp: int = 0,
        rtp_timestamp: int = 0,
        packet_count: int = 0,
        octet_count: int = 0,
        reports: tuple[RtcpReportBlock, ...] = (),
    ) -> None: ...
    @property
    def count(self) -> int: ...

@final
class RtcpReceiverReport:
    __match_args__: ClassVar[tuple[str, ...]]
    packet_type: ClassVar[int]
    ssrc: int
    reports: tuple[RtcpReportBlock, ...]
    def __init__(self, ssrc: int = 0, reports: tuple[RtcpReportBlock, ...] = ()) -> None: ...
    @property
    def count(self) -> int: ...

@final
class RtcpSdesChunk:
    __match_args__: ClassVar[tuple[str, ...]]
    ssrc: int
    items: tuple[tuple[int, bytes], ...]
    def __init__(self, ssrc: int = 0, items: tuple[tuple[int, bytes], ...] = ()) -> None: ...
    @property
    def cname(self) -> str | None: ...

@final
class RtcpSdes:
    __match_args__: ClassVar[tuple[str, ...]]
    packet_type: ClassVar[int]
    chunks: tuple[RtcpSdesChunk, ...]
    def __init__(self, chunks: tuple[RtcpSdesChunk, ...] = ()) -> None: ...
    @property
    def count(self) -> int: ...
    @property
    def ssrc(self) -> int: ...

@final
class RtcpBye:
    __match_args__: ClassVar[tuple[str, ...]]
    packet_type: ClassVar[int]
    sources: tuple[int, ...]
    reason: bytes | None
    def __init__(self, sources: tuple[int, ...] = (), reason: bytes | None = None) -> None: ...
    @property
    def count(self) -> int: ...
    @property
    def ssrc(self) -> int: ...

@final
class RtcpNack:
    __match_args__: ClassVar[tuple[str, ...]]
    packet_type: ClassVar[int]
    count: ClassVar[int]
    ssrc: int
    media_ssrc: int
    items: tuple[tuple[int, int], ...]
    def __init__(self, ssrc: int = 0, media_ssrc: int = 0, items: tuple[tuple[int, int], ...] = ()) -> None: ...
    @property
    def lost(self) -> list[int]: ...

@final
class RtcpPli:
    __match_args__: ClassVar[tuple[str, ...]]
    packet_type: ClassVar[int]
    count: ClassVar[int]
    ssrc: int
    media_ssrc: int
    def __init__(self, ssrc: int = 0, media_ssrc: int = 0) -> None: ...

@final
class RtcpFir:
    __match_args__: ClassVar[tuple[str, ...]]
    packet_type: ClassVar[int]
    count: ClassVar[int]
    ssrc: int
    media_ssrc: int
    entries: tuple[tuple[int, int], ...]
    def __init__(self, ssrc: int = 0, media_ssrc: int = 0, entries: tuple[tuple[int, int], ...] = ()) -> None: ...

@final
class RtcpRemb:
    __match_args__: ClassVar[tuple[str, ...]]
    packet_type: ClassVar[int]
    count: ClassVar[int]
    ssrc: int
    media_ssrc: int
    bitrate: int
    ssrcs: tuple[int, ...]
    def __init__(self, ssrc: int = 0, media_ssrc: int = 0, bitrate: int = 0, ssrcs: tuple[int, ...] = ()) -> None: ...

@final
class RtcpFeedback:
    __match_args__: ClassVar[tuple[str, ...]]
    packet_type: int
    fmt: int
    ssrc: int
    media_ssrc: int
    fci: bytes
    def __init__(
        self, packet_type: int = 205, fmt: int = 0, ssrc: int = 0, media_ssrc: int = 0, fci: bytes = b""
    ) -> None: ...
    @property
    def count(self) -> int: ...

@final
class RtcpUnknown:
    __match_args__: ClassVar[tuple[str, ...]]
    packet_type: int
    count: int
    body: bytes
    def __init__(self, packet_type: int = 0, count: int = 0, body: bytes = b"") -> None: ...
    @property
    def ssrc(self) -> int: ...

RtcpPacket: TypeAlias = (
    RtcpSenderReport
    | RtcpReceiverReport
    | RtcpSdes
    | RtcpBye
    | RtcpNack
    | RtcpPli
    | RtcpFir
    | RtcpRemb
    | RtcpFeedback
    | RtcpUnknown
)

def iter_rtcp(data: _Buffer) -> Iterator[RtcpPacket]: ...
def parse_rtcp(data: _Buffer) -> list[RtcpPacket]: ...
def rewrite_rtcp_ssrcs(buf: _WritableBuffer, mapping: Mapping[int, int], sender_ssrc: int | None = None) -> int: ...
def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes: ...
def build_fir(sender_ssrc: int, media_ssrc: int, seq_nr: int) -> bytes: ...
def build_nack(sender_ssrc: int, media_ssrc: int, lost_seqs: Iterable[int]) -> bytes: ...
def build_sr(
    ssrc: int,
    ntp_timestamp: int,
    rtp_timestamp: int,
    packet_count: int,
    octet_count: int,
    reports: Iterable[RtcpReportBlock] = (),
) -> bytes: ...
def build_rr(ssrc: int, reports: Iterable[RtcpReportBlock] = ()) -> bytes: ...
def build_sdes(ssrc: int, cname: str) -> bytes: ...
def build_remb(sender_ssrc: int, bitrate: int, ssrcs: Iterable[int]) -> bytes: ...
