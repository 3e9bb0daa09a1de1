"""RTCP wire formats for the forwarding path: parse, validate, rewrite SSRCs in place, build reports and
feedback.

This is the readable Python twin of media/_native/rtcp.pyx. Both modules have the same API and raise the
same exceptions with the same messages for the same input; tests/test_rtcp.py holds them to it. Nothing
here does I/O, reads a clock or imports asyncio. The RTP side, and the buffer and argument checks both
sides share, are in media/rtp.py.

RFC 3550 (RTCP SR/RR/SDES/BYE), RFC 4585 (RTPFB/PSFB feedback: NACK, PLI), RFC 5104 (FIR) and
draft-alvestrand-rmcat-remb (REMB).
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from .rtp import _U32, RTP_VERSION, _bytes_view, _index, _writable_view

RTCP_HEADER_LENGTH = 4

# RTCP packet types, RFC 3550 section 12.1 and RFC 4585 section 6.1.
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204
RTCP_RTPFB = 205
RTCP_PSFB = 206

# Feedback message types (FMT), RFC 4585 sections 6.2 and 6.3, RFC 5104 section 4.3.1.
RTPFB_NACK = 1
PSFB_PLI = 1
PSFB_FIR = 4
PSFB_AFB = 15  # application layer feedback; REMB is the one we read

SDES_CNAME = 1

_U16 = struct.Struct("!H")
_SR_INFO = struct.Struct("!IQIII")
_REPORT_BLOCK = struct.Struct("!IIIIII")
_FEEDBACK_HEAD = struct.Struct("!BBHII")


# --- RTCP packets ------------------------------------------------------------------------------------


@dataclass(slots=True)
class RtcpReportBlock:
    """RFC 3550 section 6.4.1: one reception report. packets_lost is the signed 24-bit cumulative count."""

    ssrc: int = 0
    fraction_lost: int = 0
    packets_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0


@dataclass(slots=True)
class RtcpSenderReport:
    """RFC 3550 section 6.4.1 (PT 200). ntp_timestamp is the 64-bit NTP time as one integer."""

    packet_type: ClassVar[int] = RTCP_SR
    ssrc: int = 0
    ntp_timestamp: int = 0
    rtp_timestamp: int = 0
    packet_count: int = 0
    octet_count: int = 0
    reports: tuple[RtcpReportBlock, ...] = ()

    @property
    def count(self) -> int:
        return len(self.reports)


@dataclass(slots=True)
class RtcpReceiverReport:
    """RFC 3550 section 6.4.2 (PT 201)."""

    packet_type: ClassVar[int] = RTCP_RR
    ssrc: int = 0
    reports: tuple[RtcpReportBlock, ...] = ()

    @property
    def count(self) -> int:
        return len(self.reports)


@dataclass(slots=True)
class RtcpSdesChunk:
    """RFC 3550 section 6.5: one SSRC and its (item type, value) pairs."""

    ssrc: int = 0
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> str | None:
        for item_type, value in self.items:
            if item_type == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None


@dataclass(slots=True)
class RtcpSdes:
    """RFC 3550 section 6.5 (PT 202). `ssrc` is the first chunk's, 0 when there is none."""

    packet_type: ClassVar[int] = RTCP_SDES
    chunks: tuple[RtcpSdesChunk, ...] = ()

    @property
    def count(self) -> int:
        return len(self.chunks)

    @property
    def ssrc(self) -> int:
        return self.chunks[0].ssrc if self.chunks else 0


@dataclass(slots=True)
class RtcpBye:
    """RFC 3550 section 6.6 (PT 203). `ssrc` is the first source's, 0 when there is none."""

    packet_type: ClassVar[int] = RTCP_BYE
    sources: tuple[int, ...] = ()
    reason: bytes | None = None

    @property
    def count(self) -> int:
        return len(self.sources)

    @property
    def ssrc(self) -> int:
        return self.sources[0] if self.sources else 0


@dataclass(slots=True)
class RtcpNack:
    """RFC 4585 section 6.2.1: generic NACK (RTPFB, FMT 1) with its (PID, BLP) items."""

    packet_type: ClassVar[int] = RTCP_RTPFB
    count: ClassVar[int] = RTPFB_NACK
    ssrc: int = 0
    media_ssrc: int = 0
    items: tuple[tuple[int, int], ...] = ()

    @property
    def lost(self) -> list[int]:
        """The lost sequence numbers, in item order: each PID, then PID+i+1 for each set BLP bit i."""
        lost = []
        for pid, blp in self.items:
            lost.append(pid)
            for bit in range(16):
                if blp & (1 << bit):
                    lost.append((pid + bit + 1) & 0xFFFF)
        return lost


@dataclass(slots=True)
class RtcpPli:
    """RFC 4585 section 6.3.1: picture loss indication (PSFB, FMT 1)."""

    packet_type: ClassVar[int] = RTCP_PSFB
    count: ClassVar[int] = PSFB_PLI
    ssrc: int = 0
    media_ssrc: int = 0


@dataclass(slots=True)
class RtcpFir:
    """RFC 5104 section 4.3.1: full intra request (PSFB, FMT 4); entries are (SSRC, command seq nr)."""

    packet_type: ClassVar[int] = RTCP_PSFB
    count: ClassVar[int] = PSFB_FIR
    ssrc: int = 0
    media_ssrc: int = 0
    entries: tuple[tuple[int, int], ...] = ()


@dataclass(slots=True)
class RtcpRemb:
    """draft-alvestrand-rmcat-remb section 2.2: receiver estimated maximum bitrate (PSFB, FMT 15)."""

    packet_type: ClassVar[int] = RTCP_PSFB
    count: ClassVar[int] = PSFB_AFB
    ssrc: int = 0
    media_ssrc: int = 0
    bitrate: int = 0
    ssrcs: tuple[int, ...] = ()


@dataclass(slots=True)
class RtcpFeedback:
    """Any other RTPFB/PSFB message (RFC 4585 section 6.1), e.g. transport-wide CC; fci is left raw."""

    packet_type: int = RTCP_RTPFB
    fmt: int = 0
    ssrc: int = 0
    media_ssrc: int = 0
    fci: bytes = b""

    @property
    def count(self) -> int:
        return self.fmt


@dataclass(slots=True)
class RtcpUnknown:
    """Any other packet type (APP, XR, ...): body is everything after the 4-byte header, padding removed.
    `ssrc` is the body's first word, as in every RTCP packet type defined so far; 0 if it is shorter."""

    packet_type: int = 0
    count: int = 0
    body: bytes = b""

    @property
    def ssrc(self) -> int:
        return int(_U32.unpack_from(self.body, 0)[0]) if len(self.body) >= 4 else 0


RtcpPacket = (
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


# --- RTCP compound walk -------------------------------------------------------------------------------


def _rtcp_bounds(data: bytes | bytearray | memoryview, off: int) -> tuple[int, int, int, int]:
    """Check the common header at `off` (RFC 3550 section 6.4.1): returns (packet type, count, end of
    body with padding removed, end of packet)."""
    n = len(data)
    remaining = n - off
    if remaining < RTCP_HEADER_LENGTH:
        raise ValueError(f"RTCP packet truncated: {remaining} bytes at offset {off}, header needs 4")
    first = data[off]
    version = first >> 6
    if version != RTP_VERSION:
        raise ValueError(f"RTCP version {version} is not 2 at offset {off}")
    length = (_U16.unpack_from(data, off + 2)[0] + 1) * 4
    if length > remaining:
        raise ValueError(f"RTCP length field says {length} bytes at offset {off}, only {remaining} remain")
    end = off + length
    body_end = end
    if first & 0x20:
        pad = data[end - 1]
        if pad == 0:
            raise ValueError(f"RTCP padding count 0 is invalid at offset {off}")
        if pad > length - RTCP_HEADER_LENGTH:
            raise ValueError(f"RTCP padding count {pad} exceeds packet of {length} bytes at offset {off}")
        body_end -= pad
    return data[off + 1], first & 0x1F, body_end, end


def _report_blocks(data: bytes | bytearray | memoryview, pos: int, count: int) -> tuple[RtcpReportBlock, ...]:
    blocks = []
    for _ in range(count):
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, pos)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        blocks.append(RtcpReportBlock(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr))
        pos += 24
    return tuple(blocks)


def _parse_sdes(data: bytes | bytearray | memoryview, pos: int, end: int, count: int) -> RtcpSdes:
    chunks = []
    for index in range(count):
        # RFC 3550 section 6.5: SSRC, items, then one or more null octets up to a 32-bit boundary.
        if pos + 4 > end:
            raise ValueError(f"RTCP SDES truncated: chunk {index + 1} of {count} has no room for its SSRC")
        ssrc = _U32.unpack_from(data, pos)[0]
        pos += 4
        items = []
        while True:
            if pos >= end:
                raise ValueError(f"RTCP SDES chunk {index + 1} of {count} is not terminated")
            item_type = data[pos]
            if item_type == 0:
                pos = (pos + 4) & ~3
                break
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise ValueError(f"RTCP SDES item truncated in chunk {index + 1} of {count}")
            length = data[pos + 1]
            items.append((item_type, bytes(data[pos + 2 : pos + 2 + length])))
            pos += 2 + length
        if pos > end:
            raise ValueError(f"RTCP SDES chunk {index + 1} of {count} is not terminated")
        chunks.append(RtcpSdesChunk(ssrc, tuple(items)))
    return RtcpSdes(tuple(chunks))


def _parse_packet(
    data: bytes | bytearray | memoryview, off: int, packet_type: int, count: int, body_end: int
) -> RtcpPacket:
    pos = off + RTCP_HEADER_LENGTH
    size = body_end - pos
    if packet_type == RTCP_SR:
        need = 24 + 24 * count
        if size < need:
            raise ValueError(f"RTCP SR truncated: {size} bytes, {count} report blocks need {need}")
        ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(data, pos)
        return RtcpSenderReport(ssrc, ntp, rtp_ts, packets, octets, _report_blocks(data, pos + 24, count))
    if packet_type == RTCP_RR:
        need = 4 + 24 * count
        if size < need:
            raise ValueError(f"RTCP RR truncated: {size} bytes, {count} report blocks need {need}")
        ssrc = _U32.unpack_from(data, pos)[0]
        return RtcpReceiverReport(ssrc, _report_blocks(data, pos + 4, count))
    if packet_type == RTCP_SDES:
        return _parse_sdes(data, pos, body_end, count)
    if packet_type == RTCP_BYE:
        need = 4 * count
        if size < need:
            raise ValueError(f"RTCP BYE truncated: {size} bytes, {count} sources need {need}")
        sources = struct.unpack_from(f"!{count}I", data, pos)
        pos += need
        reason = None
        if pos < body_end:
            length = data[pos]
            if pos + 1 + length > body_end:
                raise ValueError(f"RTCP BYE reason of {length} bytes runs past the packet")
            reason = bytes(data[pos + 1 : pos + 1 + length])
        return RtcpBye(tuple(sources), reason)
    if packet_type == RTCP_RTPFB or packet_type == RTCP_PSFB:
        return _parse_feedback(data, pos, body_end, packet_type, count)
    return RtcpUnknown(packet_type, count, bytes(data[pos:body_end]))


def _parse_feedback(data: bytes | bytearray | memoryview, pos: int, end: int, packet_type: int, fmt: int) -> RtcpPacket:
    # RFC 4585 section 6.1: sender SSRC, media source SSRC, then the feedback control information.
    size = end - pos
    name = "RTPFB" if packet_type == RTCP_RTPFB else "PSFB"
    if size < 8:
        raise ValueError(f"RTCP {name} truncated: {size} bytes, needs 8")
    ssrc, media_ssrc = struct.unpack_from("!II", data, pos)
    fci = pos + 8
    fci_size = end - fci
    if packet_type == RTCP_RTPFB and fmt == RTPFB_NACK:
        if fci_size == 0 or fci_size % 4:
            raise ValueError(f"RTCP NACK FCI of {fci_size} bytes is not a positive multiple of 4")
        items = struct.unpack_from(f"!{fci_size // 2}H", data, fci)
        return RtcpNack(ssrc, media_ssrc, tuple(zip(items[::2], items[1::2], strict=True)))
    if packet_type == RTCP_PSFB and fmt == PSFB_PLI:
        return RtcpPli(ssrc, media_ssrc)
    if packet_type == RTCP_PSFB and fmt == PSFB_FIR:
        if fci_size == 0 or fci_size % 8:
            raise ValueError(f"RTCP FIR FCI of {fci_size} bytes is not a positive multiple of 8")
        entries = tuple((_U32.unpack_from(data, at)[0], data[at + 4]) for at in range(fci, end, 8))
        return RtcpFir(ssrc, media_ssrc, entries)
    if packet_type == RTCP_PSFB and fmt == PSFB_AFB and fci_size >= 4 and bytes(data[fci : fci + 4]) == b"REMB":
        if fci_size < 8:
            raise ValueError(f"RTCP REMB truncated: {fci_size} bytes of FCI, needs 8")
        num = data[fci + 4]
        need = 8 + 4 * num
        if fci_size < need:
            raise ValueError(f"RTCP REMB truncated: {fci_size} bytes of FCI, {num} SSRCs need {need}")
        exp = data[fci + 5] >> 2
        mantissa = (data[fci + 5] & 0x03) << 16 | _U16.unpack_from(data, fci + 6)[0]
        bitrate = mantissa << exp
        if bitrate > 0xFFFFFFFFFFFFFFFF:
            raise ValueError(f"RTCP REMB bitrate {mantissa} << {exp} overflows 64 bits")
        ssrcs = struct.unpack_from(f"!{num}I", data, fci + 8)
        return RtcpRemb(ssrc, media_ssrc, bitrate, tuple(ssrcs))
    return RtcpFeedback(packet_type, fmt, ssrc, media_ssrc, bytes(data[fci:end]))


def iter_rtcp(data: bytes | bytearray | memoryview) -> Iterator[RtcpPacket]:
    """Walk a compound RTCP packet (RFC 3550 section 6.1), yielding one object per packet. Every length
    is checked; the first bad packet raises ValueError (the ones before it have been yielded). An empty
    buffer is not a compound packet and raises too."""
    data = _bytes_view(data)
    off = 0
    while True:
        packet_type, count, body_end, end = _rtcp_bounds(data, off)
        yield _parse_packet(data, off, packet_type, count, body_end)
        off = end
        if off == len(data):
            return


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """All the packets of a compound RTCP packet, or ValueError if any of it is malformed."""
    return list(iter_rtcp(data))


def rewrite_rtcp_ssrcs(buf: bytearray | memoryview, mapping: Mapping[int, int], sender_ssrc: int | None = None) -> int:
    """Rewrite SSRCs in place in a compound RTCP packet, for feedback relayed between legs.

    Media source SSRC fields found in `mapping` are replaced: report block SSRCs of SR/RR, the media
    source SSRC of every RTPFB/PSFB message, FIR entry SSRCs and REMB SSRC lists. With `sender_ssrc`, the
    sender SSRC of SR, RR, RTPFB and PSFB packets is replaced too. SDES, BYE and unknown types are left
    alone. The whole compound is validated (as by parse_rtcp) before any byte changes. Returns the number
    of SSRC fields written.
    """
    buf = _writable_view(buf, "RTCP")
    table = {
        _index("mapping key", key, 0xFFFFFFFF): _index("mapping value", value, 0xFFFFFFFF)
        for key, value in mapping.items()
    }
    sender = None if sender_ssrc is None else _index("sender_ssrc", sender_ssrc, 0xFFFFFFFF)
    for _ in iter_rtcp(buf):
        pass

    written = 0

    def swap(at: int) -> None:
        nonlocal written
        new = table.get(_U32.unpack_from(buf, at)[0])
        if new is not None:
            _U32.pack_into(buf, at, new)
            written += 1

    off = 0
    n = len(buf)
    while off < n:
        packet_type, count, body_end, end = _rtcp_bounds(buf, off)
        pos = off + RTCP_HEADER_LENGTH
        if packet_type in (RTCP_SR, RTCP_RR, RTCP_RTPFB, RTCP_PSFB) and sender is not None:
            _U32.pack_into(buf, pos, sender)
            written += 1
        if packet_type == RTCP_SR or packet_type == RTCP_RR:
            blocks = pos + (24 if packet_type == RTCP_SR else 4)
            for index in range(count):
                swap(blocks + 24 * index)
        elif packet_type == RTCP_RTPFB or packet_type == RTCP_PSFB:
            swap(pos + 4)
            fci = pos + 8
            if packet_type == RTCP_PSFB and count == PSFB_FIR:
                for at in range(fci, body_end, 8):
                    swap(at)
            elif (
                packet_type == RTCP_PSFB
                and count == PSFB_AFB
                and body_end - fci >= 4
                and bytes(buf[fci : fci + 4]) == b"REMB"
            ):
                for index in range(buf[fci + 4]):
                    swap(fci + 8 + 4 * index)
        off = end
    return written


# --- RTCP builders ------------------------------------------------------------------------------------


def _header(first: int, packet_type: int, length: int) -> bytes:
    # RFC 3550 section 6.4.1: the length field counts 32-bit words minus one.
    return struct.pack("!BBH", first, packet_type, length // 4 - 1)


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """RFC 4585 section 6.3.1: a 12-byte PLI."""
    return _FEEDBACK_HEAD.pack(
        0x80 | PSFB_PLI,
        RTCP_PSFB,
        2,
        _index("sender_ssrc", sender_ssrc, 0xFFFFFFFF),
        _index("media_ssrc", media_ssrc, 0xFFFFFFFF),
    )


def build_fir(sender_ssrc: int, media_ssrc: int, seq_nr: int) -> bytes:
    """RFC 5104 section 4.3.1.1: a FIR with one entry for media_ssrc; the header's media source field is
    0 as section 4.3.1.2 requires. seq_nr is the command sequence number (mod 256, bump per request)."""
    head = _FEEDBACK_HEAD.pack(0x80 | PSFB_FIR, RTCP_PSFB, 4, _index("sender_ssrc", sender_ssrc, 0xFFFFFFFF), 0)
    entry = struct.pack("!IB3x", _index("media_ssrc", media_ssrc, 0xFFFFFFFF), _index("seq_nr", seq_nr, 0xFF))
    return head + entry


def build_nack(sender_ssrc: int, media_ssrc: int, lost_seqs: Iterable[int]) -> bytes:
    """RFC 4585 section 6.2.1: a generic NACK. lost_seqs should come in sequence order (wrap-aware); each
    one within 16 after the current item's PID goes into its bitmask, any other starts a new item."""
    sender = _index("sender_ssrc", sender_ssrc, 0xFFFFFFFF)
    media = _index("media_ssrc", media_ssrc, 0xFFFFFFFF)
    fci = bytearray()
    pid = -1
    blp = 0
    for value in lost_seqs:
        seq = _index("lost sequence number", value, 0xFFFF)
        if pid >= 0:
            delta = (seq - pid) & 0xFFFF
            if delta == 0:
                continue
            if delta <= 16:
                blp |= 1 << (delta - 1)
                continue
            fci += struct.pack("!HH", pid, blp)
        pid = seq
        blp = 0
    if pid < 0:
        raise ValueError("NACK needs at least one lost sequence number")
    fci += struct.pack("!HH", pid, blp)
    length = 12 + len(fci)
    if length > 4 * 0x10000:
        raise ValueError(f"NACK of {len(fci) // 4} items does not fit an RTCP length field")
    return _FEEDBACK_HEAD.pack(0x80 | RTPFB_NACK, RTCP_RTPFB, length // 4 - 1, sender, media) + fci


def _report_bytes(reports: Iterable[RtcpReportBlock]) -> tuple[int, bytes]:
    out = bytearray()
    count = 0
    for block in reports:
        count += 1
        if count > 31:
            raise ValueError("at most 31 report blocks fit one packet")
        lost = operator.index(block.packets_lost)
        if lost < -0x800000 or lost > 0x7FFFFF:
            raise ValueError(f"packets_lost out of range: {lost}")
        out += _REPORT_BLOCK.pack(
            _index("ssrc", block.ssrc, 0xFFFFFFFF),
            _index("fraction_lost", block.fraction_lost, 0xFF) << 24 | (lost & 0xFFFFFF),
            _index("highest_sequence", block.highest_sequence, 0xFFFFFFFF),
            _index("jitter", block.jitter, 0xFFFFFFFF),
            _index("lsr", block.lsr, 0xFFFFFFFF),
            _index("dlsr", block.dlsr, 0xFFFFFFFF),
        )
    return count, bytes(out)


def build_sr(
    ssrc: int,
    ntp_timestamp: int,
    rtp_timestamp: int,
    packet_count: int,
    octet_count: int,
    reports: Iterable[RtcpReportBlock] = (),
) -> bytes:
    """RFC 3550 section 6.4.1: a sender report; reports are RtcpReportBlock-like objects."""
    info = _SR_INFO.pack(
        _index("ssrc", ssrc, 0xFFFFFFFF),
        _index("ntp_timestamp", ntp_timestamp, 0xFFFFFFFFFFFFFFFF),
        _index("rtp_timestamp", rtp_timestamp, 0xFFFFFFFF),
        _index("packet_count", packet_count, 0xFFFFFFFF),
        _index("octet_count", octet_count, 0xFFFFFFFF),
    )
    count, blocks = _report_bytes(reports)
    return _header(0x80 | count, RTCP_SR, 4 + len(info) + len(blocks)) + info + blocks


def build_rr(ssrc: int, reports: Iterable[RtcpReportBlock] = ()) -> bytes:
    """RFC 3550 section 6.4.2: a receiver report."""
    sender = _U32.pack(_index("ssrc", ssrc, 0xFFFFFFFF))
    count, blocks = _report_bytes(reports)
    return _header(0x80 | count, RTCP_RR, 8 + len(blocks)) + sender + blocks


def build_sdes(ssrc: int, cname: str) -> bytes:
    """RFC 3550 section 6.5: an SDES packet with one chunk carrying the CNAME, null-terminated and padded
    to a 32-bit boundary."""
    if not isinstance(cname, str):
        raise TypeError(f"Argument 'cname' has incorrect type (expected str, got {type(cname).__name__})")
    value = cname.encode("utf-8")
    if len(value) > 255:
        raise ValueError(f"CNAME of {len(value)} bytes is longer than 255")
    chunk = _U32.pack(_index("ssrc", ssrc, 0xFFFFFFFF)) + bytes((SDES_CNAME, len(value))) + value
    chunk += bytes(4 - len(chunk) % 4)
    return _header(0x81, RTCP_SDES, 4 + len(chunk)) + chunk


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: Iterable[int]) -> bytes:
    """draft-alvestrand-rmcat-remb section 2.2: bitrate is encoded as an 18-bit mantissa and a 6-bit
    exponent, rounded down."""
    sender = _index("sender_ssrc", sender_ssrc, 0xFFFFFFFF)
    mantissa = _index("bitrate", bitrate, 0xFFFFFFFFFFFFFFFF)
    exp = 0
    while mantissa > 0x3FFFF:
        mantissa >>= 1
        exp += 1
    listed = [_index("ssrc", value, 0xFFFFFFFF) for value in ssrcs]
    if len(listed) > 255:
        raise ValueError(f"REMB lists at most 255 SSRCs, got {len(listed)}")
    fci = b"REMB" + bytes((len(listed), exp << 2 | mantissa >> 16)) + _U16.pack(mantissa & 0xFFFF)
    fci += b"".join(_U32.pack(value) for value in listed)
    return _FEEDBACK_HEAD.pack(0x80 | PSFB_AFB, RTCP_PSFB, (12 + len(fci)) // 4 - 1, sender, 0) + fci
