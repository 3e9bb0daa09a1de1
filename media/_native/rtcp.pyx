# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, autotestdict=False
"""RTCP wire formats for the forwarding path, in Cython: the fast twin of media/rtcp.py.

Same API, same results, same exceptions and messages as the Python module (tests/test_rtcp.py holds them
to it). This file is compiled with bounds checking off: every read goes through a raw pointer after an
explicit length check, so each check below is what stands between hostile input and an out-of-bounds
read. No I/O, no clock reads.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.number cimport PyNumber_Index
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from media._native.rtp cimport _Record
from media._native.wire cimport _acquire_writable, _index, _rd16, _rd32, _rd64, _wr16, _wr32, _wr64

import typing

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
PSFB_AFB = 15

SDES_CNAME = 1

# 'REMB' as a big-endian word: the unique identifier of draft-alvestrand-rmcat-remb section 2.2.
cdef enum:
    _REMB_ID = 0x52454D42


# --- RTCP packets ---

@cython.final
cdef class RtcpReportBlock(_Record):
    """RFC 3550 section 6.4.1: one reception report. packets_lost is the signed 24-bit cumulative count."""

    cdef public long long ssrc
    cdef public long long fraction_lost
    cdef public long long packets_lost
    cdef public long long highest_sequence
    cdef public long long jitter
    cdef public long long lsr
    cdef public long long dlsr

    __match_args__ = ("ssrc", "fraction_lost", "packets_lost", "highest_sequence", "jitter", "lsr", "dlsr")

    def __init__(self, ssrc=0, fraction_lost=0, packets_lost=0, highest_sequence=0, jitter=0, lsr=0,
                 dlsr=0):
        self.ssrc = ssrc
        self.fraction_lost = fraction_lost
        self.packets_lost = packets_lost
        self.highest_sequence = highest_sequence
        self.jitter = jitter
        self.lsr = lsr
        self.dlsr = dlsr

    cdef tuple _values(self):
        return (self.ssrc, self.fraction_lost, self.packets_lost, self.highest_sequence, self.jitter,
                self.lsr, self.dlsr)


@cython.final
cdef class RtcpSenderReport(_Record):
    """RFC 3550 section 6.4.1 (PT 200). ntp_timestamp is the 64-bit NTP time as one integer."""

    cdef public long long ssrc
    cdef public unsigned long long ntp_timestamp
    cdef public long long rtp_timestamp
    cdef public long long packet_count
    cdef public long long octet_count
    cdef public object reports

    packet_type = RTCP_SR
    __match_args__ = ("ssrc", "ntp_timestamp", "rtp_timestamp", "packet_count", "octet_count", "reports")

    def __init__(self, ssrc=0, ntp_timestamp=0, rtp_timestamp=0, packet_count=0, octet_count=0,
                 reports=()):
        self.ssrc = ssrc
        self.ntp_timestamp = ntp_timestamp
        self.rtp_timestamp = rtp_timestamp
        self.packet_count = packet_count
        self.octet_count = octet_count
        self.reports = reports

    cdef tuple _values(self):
        return (self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count,
                self.reports)

    @property
    def count(self):
        return len(self.reports)


@cython.final
cdef class RtcpReceiverReport(_Record):
    """RFC 3550 section 6.4.2 (PT 201)."""

    cdef public long long ssrc
    cdef public object reports

    packet_type = RTCP_RR
    __match_args__ = ("ssrc", "reports")

    def __init__(self, ssrc=0, reports=()):
        self.ssrc = ssrc
        self.reports = reports

    cdef tuple _values(self):
        return (self.ssrc, self.reports)

    @property
    def count(self):
        return len(self.reports)


@cython.final
cdef class RtcpSdesChunk(_Record):
    """RFC 3550 section 6.5: one SSRC and its (item type, value) pairs."""

    cdef public long long ssrc
    cdef public object items

    __match_args__ = ("ssrc", "items")

    def __init__(self, ssrc=0, items=()):
        self.ssrc = ssrc
        self.items = items

    cdef tuple _values(self):
        return (self.ssrc, self.items)

    @property
    def cname(self):
        for item_type, value in self.items:
            if item_type == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None


@cython.final
cdef class RtcpSdes(_Record):
    """RFC 3550 section 6.5 (PT 202). `ssrc` is the first chunk's, 0 when there is none."""

    cdef public object chunks

    packet_type = RTCP_SDES
    __match_args__ = ("chunks",)

    def __init__(self, chunks=()):
        self.chunks = chunks

    cdef tuple _values(self):
        return (self.chunks,)

    @property
    def count(self):
        return len(self.chunks)

    @property
    def ssrc(self):
        return self.chunks[0].ssrc if self.chunks else 0


@cython.final
cdef class RtcpBye(_Record):
    """RFC 3550 section 6.6 (PT 203). `ssrc` is the first source's, 0 when there is none."""

    cdef public object sources
    cdef public object reason

    packet_type = RTCP_BYE
    __match_args__ = ("sources", "reason")

    def __init__(self, sources=(), reason=None):
        self.sources = sources
        self.reason = reason

    cdef tuple _values(self):
        return (self.sources, self.reason)

    @property
    def count(self):
        return len(self.sources)

    @property
    def ssrc(self):
        return self.sources[0] if self.sources else 0


@cython.final
cdef class RtcpNack(_Record):
    """RFC 4585 section 6.2.1: generic NACK (RTPFB, FMT 1) with its (PID, BLP) items."""

    cdef public long long ssrc
    cdef public long long media_ssrc
    cdef public object items

    packet_type = RTCP_RTPFB
    count = RTPFB_NACK
    __match_args__ = ("ssrc", "media_ssrc", "items")

    def __init__(self, ssrc=0, media_ssrc=0, items=()):
        self.ssrc = ssrc
        self.media_ssrc = media_ssrc
        self.items = items

    cdef tuple _values(self):
        return (self.ssrc, self.media_ssrc, self.items)

    @property
    def lost(self):
        """The lost sequence numbers, in item order: each PID, then PID+i+1 for each set BLP bit i."""
        cdef list lost = []
        cdef int bit
        for pid, blp in self.items:
            lost.append(pid)
            for bit in range(16):
                if blp & (1 << bit):
                    lost.append((pid + bit + 1) & 0xFFFF)
        return lost


@cython.final
cdef class RtcpPli(_Record):
    """RFC 4585 section 6.3.1: picture loss indication (PSFB, FMT 1)."""

    cdef public long long ssrc
    cdef public long long media_ssrc

    packet_type = RTCP_PSFB
    count = PSFB_PLI
    __match_args__ = ("ssrc", "media_ssrc")

    def __init__(self, ssrc=0, media_ssrc=0):
        self.ssrc = ssrc
        self.media_ssrc = media_ssrc

    cdef tuple _values(self):
        return (self.ssrc, self.media_ssrc)


@cython.final
cdef class RtcpFir(_Record):
    """RFC 5104 section 4.3.1: full intra request (PSFB, FMT 4); entries are (SSRC, command seq nr)."""

    cdef public long long ssrc
    cdef public long long media_ssrc
    cdef public object entries

    packet_type = RTCP_PSFB
    count = PSFB_FIR
    __match_args__ = ("ssrc", "media_ssrc", "entries")

    def __init__(self, ssrc=0, media_ssrc=0, entries=()):
        self.ssrc = ssrc
        self.media_ssrc = media_ssrc
        self.entries = entries

    cdef tuple _values(self):
        return (self.ssrc, self.media_ssrc, self.entries)


@cython.final
cdef class RtcpRemb(_Record):
    """draft-alvestrand-rmcat-remb section 2.2: receiver estimated maximum bitrate (PSFB, FMT 15)."""

    cdef public long long ssrc
    cdef public long long media_ssrc
    cdef public unsigned long long bitrate
    cdef public object ssrcs

    packet_type = RTCP_PSFB
    count = PSFB_AFB
    __match_args__ = ("ssrc", "media_ssrc", "bitrate", "ssrcs")

    def __init__(self, ssrc=0, media_ssrc=0, bitrate=0, ssrcs=()):
        self.ssrc = ssrc
        self.media_ssrc = media_ssrc
        self.bitrate = bitrate
        self.ssrcs = ssrcs

    cdef tuple _values(self):
        return (self.ssrc, self.media_ssrc, self.bitrate, self.ssrcs)


@cython.final
cdef class RtcpFeedback(_Record):
    """Any other RTPFB/PSFB message (RFC 4585 section 6.1), e.g. transport-wide CC; fci is left raw."""

    cdef public long long packet_type
    cdef public long long fmt
    cdef public long long ssrc
    cdef public long long media_ssrc
    cdef public object fci

    __match_args__ = ("packet_type", "fmt", "ssrc", "media_ssrc", "fci")

    def __init__(self, packet_type=RTCP_RTPFB, fmt=0, ssrc=0, media_ssrc=0, fci=b""):
        self.packet_type = packet_type
        self.fmt = fmt
        self.ssrc = ssrc
        self.media_ssrc = media_ssrc
        self.fci = fci

    cdef tuple _values(self):
        return (self.packet_type, self.fmt, self.ssrc, self.media_ssrc, self.fci)

    @property
    def count(self):
        return self.fmt


@cython.final
cdef class RtcpUnknown(_Record):
    """Any other packet type (APP, XR, ...): body is everything after the 4-byte header, padding removed.
    `ssrc` is the body's first word, as in every RTCP packet type defined so far; 0 if it is shorter."""

    cdef public long long packet_type
    cdef public long long count
    cdef public object body

    __match_args__ = ("packet_type", "count", "body")

    def __init__(self, packet_type=0, count=0, body=b""):
        self.packet_type = packet_type
        self.count = count
        self.body = body

    cdef tuple _values(self):
        return (self.packet_type, self.count, self.body)

    @property
    def ssrc(self):
        return int.from_bytes(self.body[:4], "big") if len(self.body) >= 4 else 0


RtcpPacket = typing.Union[
    RtcpSenderReport, RtcpReceiverReport, RtcpSdes, RtcpBye, RtcpNack, RtcpPli, RtcpFir, RtcpRemb,
    RtcpFeedback, RtcpUnknown,
]


# --- RTCP compound walk ---

cdef struct _Bounds:
    int packet_type
    int count
    Py_ssize_t body_end
    Py_ssize_t end


cdef int _rtcp_bounds(const uint8_t* p, Py_ssize_t n, Py_ssize_t off, _Bounds* b) except -1:
    """Check the common header at `off` (RFC 3550 section 6.4.1)."""
    cdef Py_ssize_t remaining = n - off
    cdef Py_ssize_t length
    cdef int pad
    if remaining < 4:
        raise ValueError(f"RTCP packet truncated: {remaining} bytes at offset {off}, header needs 4")
    if (p[off] >> 6) != 2:
        raise ValueError(f"RTCP version {p[off] >> 6} is not 2 at offset {off}")
    length = (<Py_ssize_t>_rd16(p + off + 2) + 1) * 4
    if length > remaining:
        raise ValueError(f"RTCP length field says {length} bytes at offset {off}, only {remaining} remain")
    b.end = off + length
    b.body_end = b.end
    if p[off] & 0x20:
        pad = p[b.end - 1]
        if pad == 0:
            raise ValueError(f"RTCP padding count 0 is invalid at offset {off}")
        if pad > length - 4:
            raise ValueError(f"RTCP padding count {pad} exceeds packet of {length} bytes at offset {off}")
        b.body_end -= pad
    b.packet_type = p[off + 1]
    b.count = p[off] & 0x1F
    return 0


cdef tuple _report_blocks(const uint8_t* p, Py_ssize_t pos, int count):
    cdef list blocks = []
    cdef RtcpReportBlock block
    cdef long long lost
    cdef int i
    for i in range(count):
        block = RtcpReportBlock.__new__(RtcpReportBlock)
        block.ssrc = _rd32(p + pos)
        block.fraction_lost = p[pos + 4]
        lost = (<long long>p[pos + 5] << 16) | (<long long>p[pos + 6] << 8) | p[pos + 7]
        if lost & 0x800000:
            lost -= 0x1000000
        block.packets_lost = lost
        block.highest_sequence = _rd32(p + pos + 8)
        block.jitter = _rd32(p + pos + 12)
        block.lsr = _rd32(p + pos + 16)
        block.dlsr = _rd32(p + pos + 20)
        blocks.append(block)
        pos += 24
    return tuple(blocks)


cdef object _parse_sdes(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, int count, bint build):
    cdef list chunks = []
    cdef list items
    cdef RtcpSdesChunk chunk
    cdef RtcpSdes sdes
    cdef int index, item_type, length
    cdef uint32_t ssrc
    for index in range(count):
        # RFC 3550 section 6.5: SSRC, items, then one or more null octets up to a 32-bit boundary.
        if pos + 4 > end:
            raise ValueError(f"RTCP SDES truncated: chunk {index + 1} of {count} has no room for its SSRC")
        ssrc = _rd32(p + pos)
        pos += 4
        items = [] if build else None
        while True:
            if pos >= end:
                raise ValueError(f"RTCP SDES chunk {index + 1} of {count} is not terminated")
            item_type = p[pos]
            if item_type == 0:
                pos = (pos + 4) & ~(<Py_ssize_t>3)
                break
            if pos + 2 > end or pos + 2 + p[pos + 1] > end:
                raise ValueError(f"RTCP SDES item truncated in chunk {index + 1} of {count}")
            length = p[pos + 1]
            if build:
                items.append((item_type, PyBytes_FromStringAndSize(<const char*>p + pos + 2, length)))
            pos += 2 + length
        if pos > end:
            raise ValueError(f"RTCP SDES chunk {index + 1} of {count} is not terminated")
        if build:
            chunk = RtcpSdesChunk.__new__(RtcpSdesChunk)
            chunk.ssrc = ssrc
            chunk.items = tuple(items)
            chunks.append(chunk)
    if not build:
        return None
    sdes = RtcpSdes.__new__(RtcpSdes)
    sdes.chunks = tuple(chunks)
    return sdes


cdef object _parse_feedback(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, int packet_type, int fmt,
                            bint build):
    # RFC 4585 section 6.1: sender SSRC, media source SSRC, then the feedback control information.
    cdef Py_ssize_t size = end - pos
    cdef Py_ssize_t fci = pos + 8
    cdef Py_ssize_t fci_size, at, need
    cdef int num, exp, i
    cdef uint64_t mantissa, bitrate
    cdef RtcpNack nack
    cdef RtcpPli pli
    cdef RtcpFir fir
    cdef RtcpRemb remb
    cdef RtcpFeedback other
    if size < 8:
        raise ValueError(f"RTCP {'RTPFB' if packet_type == 205 else 'PSFB'} truncated: {size} bytes, needs 8")
    fci_size = end - fci
    if packet_type == 205 and fmt == 1:
        if fci_size == 0 or fci_size % 4:
            raise ValueError(f"RTCP NACK FCI of {fci_size} bytes is not a positive multiple of 4")
        if not build:
            return None
        nack = RtcpNack.__new__(RtcpNack)
        nack.ssrc = _rd32(p + pos)
        nack.media_ssrc = _rd32(p + pos + 4)
        nack.items = tuple([(_rd16(p + at), _rd16(p + at + 2)) for at in range(fci, end, 4)])
        return nack
    if packet_type == 206 and fmt == 1:
        if not build:
            return None
        pli = RtcpPli.__new__(RtcpPli)
        pli.ssrc = _rd32(p + pos)
        pli.media_ssrc = _rd32(p + pos + 4)
        return pli
    if packet_type == 206 and fmt == 4:
        if fci_size == 0 or fci_size % 8:
            raise ValueError(f"RTCP FIR FCI of {fci_size} bytes is not a positive multiple of 8")
        if not build:
            return None
        fir = RtcpFir.__new__(RtcpFir)
        fir.ssrc = _rd32(p + pos)
        fir.media_ssrc = _rd32(p + pos + 4)
        fir.entries = tuple([(_rd32(p + at), p[at + 4]) for at in range(fci, end, 8)])
        return fir
    if (packet_type == 206 and fmt == 15 and fci_size >= 4 and _rd32(p + fci) == _REMB_ID):
        if fci_size < 8:
            raise ValueError(f"RTCP REMB truncated: {fci_size} bytes of FCI, needs 8")
        num = p[fci + 4]
        need = 8 + 4 * num
        if fci_size < need:
            raise ValueError(f"RTCP REMB truncated: {fci_size} bytes of FCI, {num} SSRCs need {need}")
        exp = p[fci + 5] >> 2
        mantissa = (<uint64_t>(p[fci + 5] & 0x03) << 16) | _rd16(p + fci + 6)
        bitrate = mantissa << exp
        if (bitrate >> exp) != mantissa:
            raise ValueError(f"RTCP REMB bitrate {mantissa} << {exp} overflows 64 bits")
        if not build:
            return None
        remb = RtcpRemb.__new__(RtcpRemb)
        remb.ssrc = _rd32(p + pos)
        remb.media_ssrc = _rd32(p + pos + 4)
        remb.bitrate = bitrate
        remb.ssrcs = tuple([_rd32(p + fci + 8 + 4 * i) for i in range(num)])
        return remb
    if not build:
        return None
    other = RtcpFeedback.__new__(RtcpFeedback)
    other.packet_type = packet_type
    other.fmt = fmt
    other.ssrc = _rd32(p + pos)
    other.media_ssrc = _rd32(p + pos + 4)
    other.fci = PyBytes_FromStringAndSize(<const char*>p + fci, fci_size)
    return other


cdef object _parse_packet(const uint8_t* p, Py_ssize_t off, _Bounds* b, bint build):
    """Validate the packet whose bounds are in b; build its object when asked (else return None)."""
    cdef Py_ssize_t pos = off + 4
    cdef Py_ssize_t size = b.body_end - pos
    cdef Py_ssize_t need
    cdef int count = b.count
    cdef int packet_type = b.packet_type
    cdef int i
    cdef RtcpSenderReport sr
    cdef RtcpReceiverReport rr
    cdef RtcpBye bye
    cdef RtcpUnknown unknown
    cdef object reason
    if packet_type == 200:
        need = 24 + 24 * count
        if size < need:
            raise ValueError(f"RTCP SR truncated: {size} bytes, {count} report blocks need {need}")
        if not build:
            return None
        sr = RtcpSenderReport.__new__(RtcpSenderReport)
        sr.ssrc = _rd32(p + pos)
        sr.ntp_timestamp = _rd64(p + pos + 4)
        sr.rtp_timestamp = _rd32(p + pos + 12)
        sr.packet_count = _rd32(p + pos + 16)
        sr.octet_count = _rd32(p + pos + 20)
        sr.reports = _report_blocks(p, pos + 24, count)
        return sr
    if packet_type == 201:
        need = 4 + 24 * count
        if size < need:
            raise ValueError(f"RTCP RR truncated: {size} bytes, {count} report blocks need {need}")
        if not build:
            return None
        rr = RtcpReceiverReport.__new__(RtcpReceiverReport)
        rr.ssrc = _rd32(p + pos)
        rr.reports = _report_blocks(p, pos + 4, count)
        return rr
    if packet_type == 202:
        return _parse_sdes(p, pos, b.body_end, count, build)
    if packet_type == 203:
        need = 4 * count
        if size < need:
            raise ValueError(f"RTCP BYE truncated: {size} bytes, {count} sources need {need}")
        reason = None
        if pos + need < b.body_end:
            i = p[pos + need]
            if pos + need + 1 + i > b.body_end:
                raise ValueError(f"RTCP BYE reason of {i} bytes runs past the packet")
            if build:
                reason = PyBytes_FromStringAndSize(<const char*>p + pos + need + 1, i)
        if not build:
            return None
        bye = RtcpBye.__new__(RtcpBye)
        bye.sources = tuple([_rd32(p + pos + 4 * i) for i in range(count)])
        bye.reason = reason
        return bye
    if packet_type == 205 or packet_type == 206:
        return _parse_feedback(p, pos, b.body_end, packet_type, count, build)
    if not build:
        return None
    unknown = RtcpUnknown.__new__(RtcpUnknown)
    unknown.packet_type = packet_type
    unknown.count = count
    unknown.body = PyBytes_FromStringAndSize(<const char*>p + pos, size)
    return unknown


cdef object _parse_at(object data, Py_ssize_t* off):
    """Parse the packet at off[0] and move off[0] to the next one; returns (packet, total length)."""
    cdef Py_buffer view
    cdef _Bounds b
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        _rtcp_bounds(<const uint8_t*>view.buf, view.len, off[0], &b)
        packet = _parse_packet(<const uint8_t*>view.buf, off[0], &b, True)
        off[0] = b.end
        return packet, view.len
    finally:
        PyBuffer_Release(&view)


def iter_rtcp(data):
    """Walk a compound RTCP packet (RFC 3550 section 6.1), yielding one object per packet. Every length
    is checked; the first bad packet raises ValueError (the ones before it have been yielded). An empty
    buffer is not a compound packet and raises too."""
    cdef Py_ssize_t off = 0
    while True:
        packet, n = _parse_at(data, &off)
        yield packet
        if off == n:
            return


def parse_rtcp(data):
    """All the packets of a compound RTCP packet, or ValueError if any of it is malformed."""
    cdef Py_buffer view
    cdef _Bounds b
    cdef Py_ssize_t off = 0
    cdef const uint8_t* p
    cdef list packets = []
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t*>view.buf
        while True:
            _rtcp_bounds(p, view.len, off, &b)
            packets.append(_parse_packet(p, off, &b, True))
            off = b.end
            if off == view.len:
                return packets
    finally:
        PyBuffer_Release(&view)


cdef inline int _swap(uint8_t* p, const uint32_t* table, Py_ssize_t entries) noexcept nogil:
    cdef uint32_t value = _rd32(p)
    cdef Py_ssize_t i
    for i in range(entries):
        if table[2 * i] == value:
            _wr32(p, table[2 * i + 1])
            return 1
    return 0


def rewrite_rtcp_ssrcs(buf, mapping, sender_ssrc=None):
    """Rewrite SSRCs in place in a compound RTCP packet, for feedback relayed between legs.

    Media source SSRC fields found in `mapping` are replaced: report block SSRCs of SR/RR, the media
    source SSRC of every RTPFB/PSFB message, FIR entry SSRCs and REMB SSRC lists. With `sender_ssrc`, the
    sender SSRC of SR, RR, RTPFB and PSFB packets is replaced too. SDES, BYE and unknown types are left
    alone. The whole compound is validated (as by parse_rtcp) before any byte changes. Returns the number
    of SSRC fields written.
    """
    cdef Py_buffer view
    cdef _Bounds b
    cdef uint8_t* p
    cdef Py_ssize_t n, off, pos, fci, at, entries = 0
    cdef uint32_t* table = NULL
    cdef uint32_t sender = 0
    cdef bint has_sender = sender_ssrc is not None
    cdef int i, written = 0
    _acquire_writable(buf, &view, "RTCP rewrite needs a writable buffer such as bytearray")
    try:
        pairs = {
            _index("mapping key", key, 0xFFFFFFFF): _index("mapping value", value, 0xFFFFFFFF)
            for key, value in mapping.items()
        }
        if has_sender:
            sender = _index("sender_ssrc", sender_ssrc, 0xFFFFFFFF)
        # A dict lookup would box every SSRC read; the mapping is a handful of entries, so scan a C array.
        table = <uint32_t*>PyMem_Malloc(sizeof(uint32_t) * 2 * (len(pairs) + 1))
        if table == NULL:
            raise MemoryError()
        for key, value in pairs.items():
            table[2 * entries] = key
            table[2 * entries + 1] = value
            entries += 1
        p = <uint8_t*>view.buf
        n = view.len
        off = 0
        while True:
            _rtcp_bounds(p, n, off, &b)
            _parse_packet(p, off, &b, False)
            off = b.end
            if off == n:
                break
        off = 0
        while off < n:
            _rtcp_bounds(p, n, off, &b)
            pos = off + 4
            if has_sender and b.packet_type in (200, 201, 205, 206):
                _wr32(p + pos, sender)
                written += 1
            if b.packet_type == 200 or b.packet_type == 201:
                at = pos + (24 if b.packet_type == 200 else 4)
                for i in range(b.count):
                    written += _swap(p + at + 24 * i, table, entries)
            elif b.packet_type == 205 or b.packet_type == 206:
                written += _swap(p + pos + 4, table, entries)
                fci = pos + 8
                if b.packet_type == 206 and b.count == 4:
                    at = fci
                    while at < b.body_end:
                        written += _swap(p + at, table, entries)
                        at += 8
                elif (b.packet_type == 206 and b.count == 15 and b.body_end - fci >= 4
                        and _rd32(p + fci) == _REMB_ID):
                    for i in range(p[fci + 4]):
                        written += _swap(p + fci + 8 + 4 * i, table, entries)
            off = b.end
        return written
    finally:
        PyMem_Free(table)
        PyBuffer_Release(&view)


# --- RTCP builders ---

cdef inline uint32_t _u32(str name, object value) except? 0:
    return <uint32_t>(<long long>_index(name, value, 0xFFFFFFFF))


cdef bytes _new_bytes(Py_ssize_t size, uint8_t** p):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    p[0] = <uint8_t*>PyBytes_AS_STRING(out)
    return out


cdef inline void _wr_header(uint8_t* p, uint8_t first, uint8_t packet_type, Py_ssize_t length) noexcept nogil:
    # RFC 3550 section 6.4.1: the length field counts 32-bit words minus one.
    p[0] = first
    p[1] = packet_type
    _wr16(p + 2, <uint16_t>(length // 4 - 1))


def build_pli(sender_ssrc, media_ssrc):
    """RFC 4585 section 6.3.1: a 12-byte PLI."""
    cdef uint32_t sender = _u32("sender_ssrc", sender_ssrc)
    cdef uint32_t media = _u32("media_ssrc", media_ssrc)
    cdef uint8_t* p
    out = _new_bytes(12, &p)
    _wr_header(p, 0x80 | 1, 206, 12)
    _wr32(p + 4, sender)
    _wr32(p + 8, media)
    return out


def build_fir(sender_ssrc, media_ssrc, seq_nr):
    """RFC 5104 section 4.3.1.1: a FIR with one entry for media_ssrc; the header's media source field is
    0 as section 4.3.1.2 requires. seq_nr is the command sequence number (mod 256, bump per request)."""
    cdef uint32_t sender = _u32("sender_ssrc", sender_ssrc)
    cdef uint32_t media = _u32("media_ssrc", media_ssrc)
    cdef uint8_t seq = <uint8_t>(<long long>_index("seq_nr", seq_nr, 0xFF))
    cdef uint8_t* p
    out = _new_bytes(20, &p)
    _wr_header(p, 0x80 | 4, 206, 20)
    _wr32(p + 4, sender)
    _wr32(p + 8, 0)
    _wr32(p + 12, media)
    p[16] = seq
    p[17] = 0
    p[18] = 0
    p[19] = 0
    return out


def build_nack(sender_ssrc, media_ssrc, lost_seqs):
    """RFC 4585 section 6.2.1: a generic NACK. lost_seqs should come in sequence order (wrap-aware); each
    one within 16 after the current item's PID goes into its bitmask, any other starts a new item."""
    cdef uint32_t sender = _u32("sender_ssrc", sender_ssrc)
    cdef uint32_t media = _u32("media_ssrc", media_ssrc)
    cdef list items = []
    cdef long pid = -1
    cdef uint16_t blp = 0, delta
    cdef long seq
    cdef Py_ssize_t i, length
    cdef uint8_t* p
    for value in lost_seqs:
        seq = _index("lost sequence number", value, 0xFFFF)
        if pid >= 0:
            delta = <uint16_t>(seq - pid)
            if delta == 0:
                continue
            if delta <= 16:
                blp |= <uint16_t>(1 << (delta - 1))
                continue
            items.append((pid << 16) | blp)
        pid = seq
        blp = 0
    if pid < 0:
        raise ValueError("NACK needs at least one lost sequence number")
    items.append((pid << 16) | blp)
    length = 12 + 4 * len(items)
    if length > 4 * 0x10000:
        raise ValueError(f"NACK of {len(items)} items does not fit an RTCP length field")
    out = _new_bytes(length, &p)
    _wr_header(p, 0x80 | 1, 205, length)
    _wr32(p + 4, sender)
    _wr32(p + 8, media)
    for i in range(len(items)):
        _wr32(p + 12 + 4 * i, <uint32_t><long>items[i])
    return out


cdef bytes _report_bytes(object reports, int* count):
    cdef list blocks = []
    cdef long long lost
    cdef uint8_t* p
    cdef bytes out
    count[0] = 0
    for block in reports:
        count[0] += 1
        if count[0] > 31:
            raise ValueError("at most 31 report blocks fit one packet")
        lost = PyNumber_Index(block.packets_lost)
        if lost < -0x800000 or lost > 0x7FFFFF:
            raise ValueError(f"packets_lost out of range: {lost}")
        out = _new_bytes(24, &p)
        _wr32(p, _u32("ssrc", block.ssrc))
        p[4] = <uint8_t>(<long long>_index("fraction_lost", block.fraction_lost, 0xFF))
        p[5] = <uint8_t>(lost >> 16)
        p[6] = <uint8_t>(lost >> 8)
        p[7] = <uint8_t>lost
        _wr32(p + 8, _u32("highest_sequence", block.highest_sequence))
        _wr32(p + 12, _u32("jitter", block.jitter))
        _wr32(p + 16, _u32("lsr", block.lsr))
        _wr32(p + 20, _u32("dlsr", block.dlsr))
        blocks.append(out)
    return b"".join(blocks)


def build_sr(ssrc, ntp_timestamp, rtp_timestamp, packet_count, octet_count, reports=()):
    """RFC 3550 section 6.4.1: a sender report; reports are RtcpReportBlock-like objects."""
    cdef uint32_t sender = _u32("ssrc", ssrc)
    cdef uint64_t ntp = _index("ntp_timestamp", ntp_timestamp, 0xFFFFFFFFFFFFFFFF)
    cdef uint32_t rtp_ts = _u32("rtp_timestamp", rtp_timestamp)
    cdef uint32_t packets = _u32("packet_count", packet_count)
    cdef uint32_t octets = _u32("octet_count", octet_count)
    cdef int count
    cdef bytes blocks = _report_bytes(reports, &count)
    cdef uint8_t* p
    cdef Py_ssize_t length = 28 + len(blocks)
    out = _new_bytes(length, &p)
    _wr_header(p, <uint8_t>(0x80 | count), 200, length)
    _wr32(p + 4, sender)
    _wr64(p + 8, ntp)
    _wr32(p + 16, rtp_ts)
    _wr32(p + 20, packets)
    _wr32(p + 24, octets)
    memcpy(p + 28, PyBytes_AS_STRING(blocks), length - 28)
    return out


def build_rr(ssrc, reports=()):
    """RFC 3550 section 6.4.2: a receiver report."""
    cdef uint32_t sender = _u32("ssrc", ssrc)
    cdef int count
    cdef bytes blocks = _report_bytes(reports, &count)
    cdef uint8_t* p
    cdef Py_ssize_t length = 8 + len(blocks)
    out = _new_bytes(length, &p)
    _wr_header(p, <uint8_t>(0x80 | count), 201, length)
    _wr32(p + 4, sender)
    memcpy(p + 8, PyBytes_AS_STRING(blocks), length - 8)
    return out


def build_sdes(ssrc, str cname):
    """RFC 3550 section 6.5: an SDES packet with one chunk carrying the CNAME, null-terminated and padded
    to a 32-bit boundary."""
    cdef bytes value = cname.encode("utf-8")
    cdef Py_ssize_t size = len(value)
    if size > 255:
        raise ValueError(f"CNAME of {size} bytes is longer than 255")
    cdef uint32_t source = _u32("ssrc", ssrc)
    cdef Py_ssize_t chunk = 6 + size
    chunk += 4 - chunk % 4
    cdef Py_ssize_t length = 4 + chunk
    cdef Py_ssize_t i
    cdef uint8_t* p
    out = _new_bytes(length, &p)
    _wr_header(p, 0x81, 202, length)
    _wr32(p + 4, source)
    p[8] = 1
    p[9] = <uint8_t>size
    memset(p + 10, 0, length - 10)
    memcpy(p + 10, PyBytes_AS_STRING(value), size)
    return out


def build_remb(sender_ssrc, bitrate, ssrcs):
    """draft-alvestrand-rmcat-remb section 2.2: bitrate is encoded as an 18-bit mantissa and a 6-bit
    exponent, rounded down."""
    cdef uint32_t sender = _u32("sender_ssrc", sender_ssrc)
    cdef uint64_t mantissa = _index("bitrate", bitrate, 0xFFFFFFFFFFFFFFFF)
    cdef int exp = 0
    cdef Py_ssize_t i, length
    cdef uint8_t* p
    while mantissa > 0x3FFFF:
        mantissa >>= 1
        exp += 1
    listed = [_index("ssrc", value, 0xFFFFFFFF) for value in ssrcs]
    if len(listed) > 255:
        raise ValueError(f"REMB lists at most 255 SSRCs, got {len(listed)}")
    length = 20 + 4 * len(listed)
    out = _new_bytes(length, &p)
    _wr_header(p, 0x80 | 15, 206, length)
    _wr32(p + 4, sender)
    _wr32(p + 8, 0)
    _wr32(p + 12, _REMB_ID)
    p[16] = <uint8_t>len(listed)
    p[17] = <uint8_t>((exp << 2) | (mantissa >> 16))
    _wr16(p + 18, <uint16_t>mantissa)
    for i in range(len(listed)):
        _wr32(p + 20 + 4 * i, <uint32_t><long long>listed[i])
    return out
