"""RTP wire format for the forwarding path: parse, validate, rewrite in place.

This is the readable Python twin of media/_native/rtp.pyx. Both modules have the same API and raise the
same exceptions with the same messages for the same input; tests/test_rtp.py holds them to it. Nothing
here does I/O, reads a clock or imports asyncio: time comes in as the `now` argument (seconds). RTCP is
in media/rtcp.py, which uses the buffer and argument checks below.

RFC 3550 (RTP), RFC 5761 (RTP/RTCP on one port) and RFC 8285 (header extensions: skipped over, not
interpreted here).
"""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass

RTP_VERSION = 2
RTP_HEADER_LENGTH = 12

_U32 = struct.Struct("!I")
_RTP_FIXED = struct.Struct("!BBHII")
_SEQ_TS = struct.Struct("!HI")

# The buffer and argument checks below are media/rtcp.py's too, so both modules word their errors alike
# (the native modules share media/_native/wire.pxd the same way).


def _bytes_view(data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    """The input as a sequence of bytes: any buffer is accepted (as the native module's buffer protocol
    does), anything else is a TypeError."""
    if type(data) is bytes or type(data) is bytearray:
        return data
    return memoryview(data).cast("B")


def _writable_view(buf: bytearray | memoryview, what: str) -> bytearray | memoryview:
    view = buf if type(buf) is bytearray else memoryview(buf).cast("B")
    if isinstance(view, memoryview) and view.readonly:
        raise TypeError(f"{what} rewrite needs a writable buffer such as bytearray")
    return view


def _index(name: str, value: int, maximum: int) -> int:
    value = operator.index(value)
    if value < 0 or value > maximum:
        raise ValueError(f"{name} out of range: {value}")
    return value


def is_rtcp(data: bytes | bytearray | memoryview) -> bool:
    """RTP/RTCP demultiplexing on one port, RFC 5761 section 4: with the marker bit masked off, RTCP's
    packet types 192..223 land on RTP payload types 64..95, which RTP must not use when multiplexing."""
    data = _bytes_view(data)
    return len(data) >= 2 and 64 <= (data[1] & 0x7F) <= 95


@dataclass(slots=True)
class RtpHeader:
    """The RTP fixed header, CSRC list and header extension block (RFC 3550 section 5.1, 5.3.1).

    `parse` also reports where the payload is: data[payload_offset:payload_offset + payload_length],
    padding removed. `bytes(header)` writes the header back (up to the payload) and round-trips.
    The header extension's elements (RFC 8285) are left in `extension_data` uninterpreted.
    """

    padding: bool = False
    extension: bool = False
    marker: bool = False
    payload_type: int = 0
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    csrc: tuple[int, ...] = ()
    extension_profile: int = 0
    extension_data: bytes = b""
    payload_offset: int = 0
    payload_length: int = 0
    padding_length: int = 0

    @property
    def extension_length(self) -> int:
        """Length of the header extension data in bytes (the length field counts 32-bit words)."""
        return len(self.extension_data)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpHeader:
        data = _bytes_view(data)
        n = len(data)
        if n < RTP_HEADER_LENGTH:
            raise ValueError(f"RTP packet truncated: {n} bytes, header needs {RTP_HEADER_LENGTH}")
        first, second, seq, ts, ssrc = _RTP_FIXED.unpack_from(data, 0)
        version = first >> 6
        if version != RTP_VERSION:
            raise ValueError(f"RTP version {version} is not 2")
        cc = first & 0x0F
        pos = RTP_HEADER_LENGTH + 4 * cc
        if pos > n:
            raise ValueError(f"RTP packet truncated: {n} bytes, {cc} CSRCs need {pos}")
        csrc = struct.unpack_from(f"!{cc}I", data, RTP_HEADER_LENGTH) if cc else ()

        extension = bool(first & 0x10)
        profile = 0
        ext_data = b""
        if extension:
            # RFC 3550 section 5.3.1: 16-bit profile, 16-bit length in 32-bit words, then the data.
            if pos + 4 > n:
                raise ValueError(f"RTP packet truncated: {n} bytes, extension header needs {pos + 4}")
            profile, words = struct.unpack_from("!HH", data, pos)
            end = pos + 4 + 4 * words
            if end > n:
                raise ValueError(f"RTP packet truncated: {n} bytes, extension of {words} words needs {end}")
            ext_data = bytes(data[pos + 4 : end])
            pos = end

        padding = bool(first & 0x20)
        pad = 0
        if padding:
            # RFC 3550 section 5.1: the last octet counts the padding octets, itself included.
            if pos == n:
                raise ValueError("RTP padding flag set but packet has no payload")
            pad = data[n - 1]
            if pad == 0:
                raise ValueError("RTP padding count 0 is invalid")
            if pad > n - pos:
                raise ValueError(f"RTP padding count {pad} exceeds payload of {n - pos} bytes")

        return cls(
            padding=padding,
            extension=extension,
            marker=bool(second & 0x80),
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            csrc=tuple(csrc),
            extension_profile=profile,
            extension_data=ext_data,
            payload_offset=pos,
            payload_length=n - pos - pad,
            padding_length=pad,
        )

    def __bytes__(self) -> bytes:
        payload_type = _index("payload_type", self.payload_type, 0x7F)
        seq = _index("sequence_number", self.sequence_number, 0xFFFF)
        ts = _index("timestamp", self.timestamp, 0xFFFFFFFF)
        ssrc = _index("ssrc", self.ssrc, 0xFFFFFFFF)
        if len(self.csrc) > 15:
            raise ValueError(f"too many CSRCs: {len(self.csrc)}, at most 15")
        first = RTP_VERSION << 6 | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension:
            first |= 0x10
        out = bytearray(_RTP_FIXED.pack(first, payload_type | (0x80 if self.marker else 0), seq, ts, ssrc))
        for csrc in self.csrc:
            out += _U32.pack(_index("csrc", csrc, 0xFFFFFFFF))
        if self.extension:
            profile = _index("extension_profile", self.extension_profile, 0xFFFF)
            length = len(self.extension_data)
            if length % 4 or length > 4 * 0xFFFF:
                raise ValueError(f"extension_data of {length} bytes is not a 16-bit count of 32-bit words")
            out += struct.pack("!HH", profile, length // 4)
            out += self.extension_data
        return bytes(out)


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpHeader:
    return RtpHeader.parse(data)


def _check_rtp_fixed(buf: bytearray | memoryview) -> bytearray | memoryview:
    buf = _writable_view(buf, "RTP")
    n = len(buf)
    if n < RTP_HEADER_LENGTH:
        raise ValueError(f"RTP packet truncated: {n} bytes, header needs {RTP_HEADER_LENGTH}")
    version = buf[0] >> 6
    if version != RTP_VERSION:
        raise ValueError(f"RTP version {version} is not 2")
    return buf


def rewrite_rtp(buf: bytearray | memoryview, ssrc: int, payload_type: int, seq_offset: int, ts_offset: int) -> int:
    """Rewrite one forwarded packet in place: SSRC, payload type (marker bit kept), sequence number plus
    seq_offset modulo 2**16 and timestamp plus ts_offset modulo 2**32 (RFC 3550 section 5.1). Only the
    fixed header is checked. Returns the new sequence number. Offsets may be negative."""
    ssrc = _index("ssrc", ssrc, 0xFFFFFFFF)
    payload_type = _index("payload_type", payload_type, 0x7F)
    seq_offset = operator.index(seq_offset)
    ts_offset = operator.index(ts_offset)
    buf = _check_rtp_fixed(buf)
    seq, ts = _SEQ_TS.unpack_from(buf, 2)
    seq = (seq + seq_offset) & 0xFFFF
    buf[1] = (buf[1] & 0x80) | payload_type
    _SEQ_TS.pack_into(buf, 2, seq, (ts + ts_offset) & 0xFFFFFFFF)
    _U32.pack_into(buf, 8, ssrc)
    return seq


class RtpRewriter:
    """Per-subscriber rewrite state (the idea of Janus's janus_rtp_switching_context): the caller owns
    one per outgoing track and passes every forwarded packet through `rewrite`.

    The output keeps one SSRC and payload type, and its sequence numbers and timestamps stay continuous
    when the input source changes: on a new input SSRC (or after `reset()`, for a new source that kept
    the SSRC) the next output sequence number is the highest one sent so far plus one, and the next
    timestamp is the timestamp sent with it plus the time elapsed since then in clock ticks (when `now`
    is given on both packets), or plus `switch_ts_step` ticks (default 20 ms). Within one source the
    offsets are fixed, so reordering and loss pass through unchanged. The first source passes through
    with zero offsets. A late packet of an old source counts as another switch.
    """

    __slots__ = (
        "_out_ssrc",
        "_out_payload_type",
        "_clock_rate",
        "_switch_ts_step",
        "_packet_count",
        "_byte_count",
        "_switches",
        "_seq_offset",
        "_ts_offset",
        "_in_ssrc",
        "_last_seq",
        "_last_timestamp",
        "_last_now",
    )

    def __init__(
        self, out_ssrc: int, out_payload_type: int, clock_rate: int = 90000, switch_ts_step: int | None = None
    ) -> None:
        self._out_ssrc = _index("out_ssrc", out_ssrc, 0xFFFFFFFF)
        self._out_payload_type = _index("out_payload_type", out_payload_type, 0x7F)
        self._clock_rate = _index("clock_rate", clock_rate, 0xFFFFFFFF)
        if self._clock_rate == 0:
            raise ValueError("clock_rate out of range: 0")
        if switch_ts_step is None:
            switch_ts_step = max(1, self._clock_rate // 50)
        self._switch_ts_step = _index("switch_ts_step", switch_ts_step, 0x7FFFFFFF)
        self._packet_count = 0
        self._byte_count = 0
        self._switches = 0
        self._seq_offset = 0
        self._ts_offset = 0
        self._in_ssrc: int | None = None
        self._last_seq: int | None = None
        self._last_timestamp = 0
        self._last_now: float | None = None

    @property
    def out_ssrc(self) -> int:
        return self._out_ssrc

    @out_ssrc.setter
    def out_ssrc(self, value: int) -> None:
        self._out_ssrc = _index("out_ssrc", value, 0xFFFFFFFF)

    @property
    def out_payload_type(self) -> int:
        return self._out_payload_type

    @out_payload_type.setter
    def out_payload_type(self, value: int) -> None:
        self._out_payload_type = _index("out_payload_type", value, 0x7F)

    @property
    def clock_rate(self) -> int:
        return self._clock_rate

    @property
    def switch_ts_step(self) -> int:
        return self._switch_ts_step

    @property
    def packet_count(self) -> int:
        """Packets rewritten."""
        return self._packet_count

    @property
    def byte_count(self) -> int:
        """Bytes rewritten, whole packets."""
        return self._byte_count

    @property
    def switches(self) -> int:
        """Source changes handled (the first source is not counted)."""
        return self._switches

    @property
    def seq_offset(self) -> int:
        """Added to the current source's sequence numbers (mod 2**16); subtract it to map a NACKed output
        sequence number back to the source."""
        return self._seq_offset

    @property
    def ts_offset(self) -> int:
        return self._ts_offset

    @property
    def in_ssrc(self) -> int | None:
        """The current input SSRC, None before the first packet and after reset()."""
        return self._in_ssrc

    @property
    def last_seq(self) -> int | None:
        """The highest output sequence number so far, None before the first packet."""
        return self._last_seq

    @property
    def last_timestamp(self) -> int | None:
        """The output timestamp sent with last_seq, None before the first packet."""
        return None if self._last_seq is None else self._last_timestamp

    def reset(self) -> None:
        """Forget the input source: the next packet starts a new one, continuing the output numbering."""
        self._in_ssrc = None

    def rewrite(self, buf: bytearray | memoryview, now: float | None = None) -> int:
        """Rewrite one packet in place and return its output sequence number. A packet that fails the
        fixed-header check raises ValueError and changes neither the buffer nor this state."""
        if now is not None:
            if isinstance(now, str | bytes | bytearray):  # float() would parse these; C doubles do not
                raise TypeError(f"must be real number, not {type(now).__name__}")
            now = float(now)
        buf = _check_rtp_fixed(buf)
        in_seq, in_ts, in_ssrc = struct.unpack_from("!HII", buf, 2)
        if self._in_ssrc is None or in_ssrc != self._in_ssrc:
            if self._last_seq is not None:
                step = self._switch_ts_step
                if now is not None and self._last_now is not None:
                    ticks = (now - self._last_now) * self._clock_rate
                    if ticks >= 1.0:
                        step = int(min(ticks, 2147483647.0))
                self._seq_offset = (self._last_seq + 1 - in_seq) & 0xFFFF
                self._ts_offset = (self._last_timestamp + step - in_ts) & 0xFFFFFFFF
                self._switches += 1
            self._in_ssrc = in_ssrc
        seq = (in_seq + self._seq_offset) & 0xFFFF
        ts = (in_ts + self._ts_offset) & 0xFFFFFFFF
        # Remember the newest packet sent (wrap-aware, as in RFC 3550 appendix A.1), so that a late
        # packet does not pull the continuation point of the next switch backwards.
        if self._last_seq is None or 0 < ((seq - self._last_seq) & 0xFFFF) < 0x8000:
            self._last_seq = seq
            self._last_timestamp = ts
            if now is not None:
                self._last_now = now
        buf[1] = (buf[1] & 0x80) | self._out_payload_type
        struct.pack_into("!HII", buf, 2, seq, ts, self._out_ssrc)
        self._packet_count += 1
        self._byte_count += len(buf)
        return seq
