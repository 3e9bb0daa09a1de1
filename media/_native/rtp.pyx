# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, autotestdict=False
"""RTP wire format for the forwarding path, in Cython: the fast twin of media/rtp.py.

Same API, same results, same exceptions and messages as the Python module (tests/test_rtp.py holds them
to it). This file is compiled with bounds checking off: every read goes through a raw pointer after an
explicit length check, so each check below is what stands between hostile input and an out-of-bounds
read. No I/O, no clock reads; `now` comes in as an argument. RTCP is in rtcp.pyx.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsUnsignedLongLongMask
from cpython.number cimport PyNumber_Index
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset
from media._native.rewrite cimport RewriteState, rewrite_packet, write_rtp_fields
from media._native.rtp_header cimport _check_rtp_fixed, _rtp_payload
from media._native.wire cimport _acquire_writable, _index, _ranged, _rd16, _rd32, _wr16, _wr32

RTP_VERSION = 2
RTP_HEADER_LENGTH = 12


def is_rtcp(data):
    """RTP/RTCP demultiplexing on one port, RFC 5761 section 4: with the marker bit masked off, RTCP's
    packet types 192..223 land on RTP payload types 64..95, which RTP must not use when multiplexing."""
    cdef Py_buffer view
    cdef uint8_t pt
    if type(data) is bytes:
        if PyBytes_GET_SIZE(data) < 2:
            return False
        pt = (<const uint8_t*>PyBytes_AS_STRING(data))[1] & 0x7F
        return 64 <= pt <= 95
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len < 2:
            return False
        pt = (<const uint8_t*>view.buf)[1] & 0x7F
        return 64 <= pt <= 95
    finally:
        PyBuffer_Release(&view)


cdef class _Record:
    """Shared equality and repr for the result classes, matching what @dataclass gives the twin. The
    RTCP packet classes (rtcp.pyx) derive from it too, through rtp.pxd."""

    cdef tuple _values(self):
        return ()

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == (<_Record>other)._values()

    def __repr__(self):
        names = type(self).__match_args__
        values = self._values()
        fields = ", ".join([f"{name}={value!r}" for name, value in zip(names, values)])
        return f"{type(self).__qualname__}({fields})"

    __hash__ = None


@cython.final
cdef class RtpHeader(_Record):
    """The RTP fixed header, CSRC list and header extension block (RFC 3550 section 5.1, 5.3.1).

    `parse` also reports where the payload is: data[payload_offset:payload_offset + payload_length],
    padding removed. `bytes(header)` writes the header back (up to the payload) and round-trips.
    The header extension's elements (RFC 8285) are left in `extension_data` uninterpreted.
    """

    cdef public bint padding
    cdef public bint extension
    cdef public bint marker
    cdef public long long payload_type
    cdef public long long sequence_number
    cdef public long long timestamp
    cdef public long long ssrc
    cdef public object csrc
    cdef public long long extension_profile
    cdef public object extension_data
    cdef public Py_ssize_t payload_offset
    cdef public Py_ssize_t payload_length
    cdef public Py_ssize_t padding_length

    __match_args__ = (
        "padding", "extension", "marker", "payload_type", "sequence_number", "timestamp", "ssrc",
        "csrc", "extension_profile", "extension_data", "payload_offset", "payload_length",
        "padding_length",
    )

    def __init__(self, padding=False, extension=False, marker=False, payload_type=0, sequence_number=0,
                 timestamp=0, ssrc=0, csrc=(), extension_profile=0, extension_data=b"",
                 payload_offset=0, payload_length=0, padding_length=0):
        self.padding = padding
        self.extension = extension
        self.marker = marker
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.csrc = csrc
        self.extension_profile = extension_profile
        self.extension_data = extension_data
        self.payload_offset = payload_offset
        self.payload_length = payload_length
        self.padding_length = padding_length

    cdef tuple _values(self):
        return (self.padding, self.extension, self.marker, self.payload_type, self.sequence_number,
                self.timestamp, self.ssrc, self.csrc, self.extension_profile, self.extension_data,
                self.payload_offset, self.payload_length, self.padding_length)

    @property
    def extension_length(self):
        """Length of the header extension data in bytes (the length field counts 32-bit words)."""
        return len(self.extension_data)

    @classmethod
    def parse(cls, data):
        return parse_rtp(data)

    def __bytes__(self):
        payload_type = _index("payload_type", self.payload_type, 0x7F)
        seq = _index("sequence_number", self.sequence_number, 0xFFFF)
        ts = _index("timestamp", self.timestamp, 0xFFFFFFFF)
        ssrc = _index("ssrc", self.ssrc, 0xFFFFFFFF)
        cdef Py_ssize_t cc = len(self.csrc)
        if cc > 15:
            raise ValueError(f"too many CSRCs: {cc}, at most 15")
        csrcs = [_index("csrc", value, 0xFFFFFFFF) for value in self.csrc]
        cdef Py_ssize_t length = 0
        cdef long long profile = 0
        if self.extension:
            profile = _index("extension_profile", self.extension_profile, 0xFFFF)
            length = len(self.extension_data)
            if length % 4 or length > 4 * 0xFFFF:
                raise ValueError(f"extension_data of {length} bytes is not a 16-bit count of 32-bit words")
        cdef bytes ext = bytes(self.extension_data) if self.extension else b""
        cdef Py_ssize_t size = 12 + 4 * cc + (4 + length if self.extension else 0)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
        cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
        cdef Py_ssize_t i
        p[0] = <uint8_t>(0x80 | cc | (0x20 if self.padding else 0) | (0x10 if self.extension else 0))
        p[1] = <uint8_t>(<long long>payload_type | (0x80 if self.marker else 0))
        _wr16(p + 2, <uint16_t><long long>seq)
        _wr32(p + 4, <uint32_t><long long>ts)
        _wr32(p + 8, <uint32_t><long long>ssrc)
        for i in range(cc):
            _wr32(p + 12 + 4 * i, <uint32_t><long long>csrcs[i])
        if self.extension:
            i = 12 + 4 * cc
            _wr16(p + i, <uint16_t>profile)
            _wr16(p + i + 2, <uint16_t>(length // 4))
            if length:
                memcpy(p + i + 4, PyBytes_AS_STRING(ext), length)
        return out


cdef RtpHeader _parse_rtp(const uint8_t* p, Py_ssize_t n):
    cdef Py_ssize_t pos, length, at
    cdef int cc, i
    cdef uint32_t words
    cdef RtpHeader h
    # The checks of track.pyx and depacketize.pyx, with their messages: after them every read below
    # (CSRCs, extension header and data) is known to lie inside the n bytes.
    _rtp_payload(p, n, &pos, &length)
    cc = p[0] & 0x0F
    h = RtpHeader.__new__(RtpHeader)
    h.padding = (p[0] & 0x20) != 0
    h.extension = (p[0] & 0x10) != 0
    h.marker = (p[1] & 0x80) != 0
    h.payload_type = p[1] & 0x7F
    h.sequence_number = _rd16(p + 2)
    h.timestamp = _rd32(p + 4)
    h.ssrc = _rd32(p + 8)
    h.csrc = tuple([_rd32(p + 12 + 4 * i) for i in range(cc)]) if cc else ()
    if h.extension:
        at = 12 + 4 * cc
        words = _rd16(p + at + 2)
        h.extension_profile = _rd16(p + at)
        h.extension_data = PyBytes_FromStringAndSize(<const char*>p + at + 4, 4 * <Py_ssize_t>words)
    else:
        h.extension_profile = 0
        h.extension_data = b""
    h.payload_offset = pos
    h.payload_length = length
    h.padding_length = n - pos - length
    return h


def parse_rtp(data):
    cdef Py_buffer view
    if type(data) is bytes:
        return _parse_rtp(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _parse_rtp(<const uint8_t*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


def rewrite_rtp(buf, ssrc, payload_type, seq_offset, ts_offset):
    """Rewrite one forwarded packet in place: SSRC, payload type (marker bit kept), sequence number plus
    seq_offset modulo 2**16 and timestamp plus ts_offset modulo 2**32 (RFC 3550 section 5.1). Only the
    fixed header is checked. Returns the new sequence number. Offsets may be negative."""
    cdef Py_buffer view
    cdef uint8_t* p
    cdef Py_ssize_t n
    cdef uint16_t seq
    cdef uint32_t out_ssrc = <uint32_t>_ranged("ssrc", ssrc, 0xFFFFFFFF)
    cdef uint8_t out_pt = <uint8_t>_ranged("payload_type", payload_type, 0x7F)
    # (x + off) mod 2**k == (x + (off mod 2**64)) mod 2**k for any integer off, negative or huge.
    cdef uint16_t seq_off = <uint16_t>PyLong_AsUnsignedLongLongMask(PyNumber_Index(seq_offset))
    cdef uint32_t ts_off = <uint32_t>PyLong_AsUnsignedLongLongMask(PyNumber_Index(ts_offset))
    if type(buf) is bytearray:
        # Nothing below calls back into Python, so the bytearray cannot be resized under the pointer.
        p = <uint8_t*>PyByteArray_AS_STRING(buf)
        n = PyByteArray_GET_SIZE(buf)
        _check_rtp_fixed(p, n)
        seq = <uint16_t>(_rd16(p + 2) + seq_off)
        write_rtp_fields(p, out_pt, seq, _rd32(p + 4) + ts_off, out_ssrc)
        return seq
    _acquire_writable(buf, &view, "RTP rewrite needs a writable buffer such as bytearray")
    try:
        p = <uint8_t*>view.buf
        _check_rtp_fixed(p, view.len)
        seq = <uint16_t>(_rd16(p + 2) + seq_off)
        write_rtp_fields(p, out_pt, seq, _rd32(p + 4) + ts_off, out_ssrc)
        return seq
    finally:
        PyBuffer_Release(&view)


@cython.final
cdef class RtpRewriter:
    """Per-subscriber rewrite state (the idea of Janus's janus_rtp_switching_context): the caller owns
    one per outgoing track and passes every forwarded packet through `rewrite`.

    The output keeps one SSRC and payload type, and its sequence numbers and timestamps stay continuous
    when the input source changes: on a new input SSRC (or after `reset()`, for a new source that kept
    the SSRC) the next output sequence number is the highest one sent so far plus one, and the next
    timestamp is the timestamp sent with it plus the time elapsed since then in clock ticks (when `now`
    is given on both packets), or plus `switch_ts_step` ticks (default 20 ms). Within one source the
    offsets are fixed, so reordering and loss pass through unchanged. The first source passes through
    with zero offsets. A late packet of an old source counts as another switch.

    The state is a C struct (rewrite.pxd) that media/_native/fanout.pyx rewrites through directly.
    """

    def __init__(self, out_ssrc, out_payload_type, clock_rate=90000, switch_ts_step=None):
        memset(&self.state, 0, sizeof(RewriteState))
        self.state.out_ssrc = _index("out_ssrc", out_ssrc, 0xFFFFFFFF)
        self.state.out_payload_type = _index("out_payload_type", out_payload_type, 0x7F)
        self.state.clock_rate = _index("clock_rate", clock_rate, 0xFFFFFFFF)
        if self.state.clock_rate == 0:
            raise ValueError("clock_rate out of range: 0")
        if switch_ts_step is None:
            switch_ts_step = max(1, self.state.clock_rate // 50)
        self.state.switch_ts_step = _index("switch_ts_step", switch_ts_step, 0x7FFFFFFF)

    @property
    def out_ssrc(self):
        return self.state.out_ssrc

    @out_ssrc.setter
    def out_ssrc(self, value):
        self.state.out_ssrc = _index("out_ssrc", value, 0xFFFFFFFF)

    @property
    def out_payload_type(self):
        return self.state.out_payload_type

    @out_payload_type.setter
    def out_payload_type(self, value):
        self.state.out_payload_type = _index("out_payload_type", value, 0x7F)

    @property
    def clock_rate(self):
        return self.state.clock_rate

    @property
    def switch_ts_step(self):
        return self.state.switch_ts_step

    @property
    def packet_count(self):
        """Packets rewritten."""
        return self.state.packet_count

    @property
    def byte_count(self):
        """Bytes rewritten, whole packets."""
        return self.state.byte_count

    @property
    def switches(self):
        """Source changes handled (the first source is not counted)."""
        return self.state.switches

    @property
    def seq_offset(self):
        """Added to the current source's sequence numbers (mod 2**16); subtract it to map a NACKed output
        sequence number back to the source."""
        return self.state.seq_offset

    @property
    def ts_offset(self):
        return self.state.ts_offset

    @property
    def in_ssrc(self):
        """The current input SSRC, None before the first packet and after reset()."""
        return self.state.in_ssrc if self.state.has_source else None

    @property
    def last_seq(self):
        """The highest output sequence number so far, None before the first packet."""
        return self.state.last_seq if self.state.has_last else None

    @property
    def last_timestamp(self):
        """The output timestamp sent with last_seq, None before the first packet."""
        return self.state.last_timestamp if self.state.has_last else None

    def reset(self):
        """Forget the input source: the next packet starts a new one, continuing the output numbering."""
        self.state.has_source = False

    cdef int _rewrite(self, uint8_t* p, Py_ssize_t n, bint has_now, double now) except -1:
        _check_rtp_fixed(p, n)
        return rewrite_packet(&self.state, p, n, has_now, now)

    def rewrite(self, buf, now=None):
        """Rewrite one packet in place and return its output sequence number. A packet that fails the
        fixed-header check raises ValueError and changes neither the buffer nor this state."""
        cdef Py_buffer view
        cdef bint has_now = now is not None
        cdef double t = 0.0
        if has_now:
            t = now
        if type(buf) is bytearray:
            return self._rewrite(<uint8_t*>PyByteArray_AS_STRING(buf), PyByteArray_GET_SIZE(buf), has_now, t)
        _acquire_writable(buf, &view, "RTP rewrite needs a writable buffer such as bytearray")
        try:
            return self._rewrite(<uint8_t*>view.buf, view.len, has_now, t)
        finally:
            PyBuffer_Release(&view)
