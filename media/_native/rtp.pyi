"""Type stubs for media._native.rtp, the Cython twin of media/rtp.py (same API, same behaviour)."""

from typing import ClassVar, TypeAlias, final

_Buffer: TypeAlias = bytes | bytearray | memoryview
_WritableBuffer: TypeAlias = bytearray | memoryview

RTP_VERSION: int
RTP_HEADER_LENGTH: int

def is_rtcp(data: _Buffer) -> bool: ...

@final
class RtpHeader:
    __match_args__: ClassVar[tuple[str, ...]]
    padding: bool
    extension: bool
    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    csrc: tuple[int, ...]
    extension_profile: int
    extension_data: bytes
    payload_offset: int
    payload_length: int
    padding_length: int
    def __init__(
        self,
        padding: bool = False,
        extension: bool = False,
        marker: bool = False,
        payload_type: int = 0,
        sequence_number: int = 0,
        timestamp: int = 0,
        ssrc: int = 0,
        csrc: tuple[int, ...] = (),
        extension_profile: int = 0,
        extension_data: bytes = b"",
        payload_offset: int = 0,
        payload_length: int = 0,
        padding_length: int = 0,
    ) -> None: ...
    @property
    def extension_length(self) -> int: ...
    @classmethod
    def parse(cls, data: _Buffer) -> RtpHeader: ...
    def __bytes__(self) -> bytes: ...

def parse_rtp(data: _Buffer) -> RtpHeader: ...
def rewrite_rtp(buf: _WritableBuffer, ssrc: int, payload_type: int, seq_offset: int, ts_offset: int) -> int: ...

@final
class RtpRewriter:
    out_ssrc: int
    out_payload_type: int
    def __init__(
        self, out_ssrc: int, out_payload_type: int, clock_rate: int = 90000, switch_ts_step: int | None = None
    ) -> None: ...
    @property
    def clock_rate(self) -> int: ...
    @property
    def switch_ts_step(self) -> int: ...
    @property
    def packet_count(self) -> int: ...
    @property
    def byte_count(self) -> int: ...
    @property
    def switches(self) -> int: ...
    @property
    def seq_offset(self) -> int: ...
    @property
    def ts_offset(self) -> int: ...
    @property
    def in_ssrc(self) -> int | None: ...
    @property
    def last_seq(self) -> int | None: ...
    @property
    def last_timestamp(self) -> int | None: ...
    def reset(self) -> None: ...
    def rewrite(self, buf: _WritableBuffer, now: float | None = None) -> int: ...
