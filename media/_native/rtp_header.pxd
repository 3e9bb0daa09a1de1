# Shared by the native modules that take RTP packets in (rtp, track, depacketize): the RTP header checks
# of media.rtp.parse_rtp, with the same ValueError messages, giving only where the payload is. The
# big-endian readers come from wire.pxd; modules cimport them from here or from there alike. Inline:
# each module compiles its own copy from this one source.

from libc.stdint cimport uint8_t, uint32_t
from media._native.wire cimport _rd16, _rd32


cdef inline int _check_rtp_fixed(const uint8_t* p, Py_ssize_t n) except -1:
    """RFC 3550 section 5.1: the 12-byte fixed header is there and says version 2. All a rewrite needs."""
    if n < 12 or (p[0] >> 6) != 2:
        _rtp_header_error(p, n)
        return -1
    return 0


cdef inline int _rtp_payload(const uint8_t* p, Py_ssize_t n, Py_ssize_t* offset, Py_ssize_t* length) except -1:
    """RFC 3550 section 5.1: fixed header, CSRCs, extension and padding, every length checked. The checks
    are all here and small enough to inline into every caller's hot path; the messages are built apart
    (_rtp_header_error), only for a packet that failed."""
    cdef Py_ssize_t pos, end, pad = 0
    if n < 12 or (p[0] >> 6) != 2:
        _rtp_header_error(p, n)
        return -1
    pos = 12 + 4 * (p[0] & 0x0F)
    if pos > n:
        _rtp_header_error(p, n)
        return -1
    if p[0] & 0x10:
        # RFC 3550 section 5.3.1: 16-bit profile, 16-bit length in 32-bit words, then the data.
        if pos + 4 > n:
            _rtp_header_error(p, n)
            return -1
        end = pos + 4 + 4 * <Py_ssize_t>_rd16(p + pos + 2)
        if end > n:
            _rtp_header_error(p, n)
            return -1
        pos = end
    if p[0] & 0x20:
        # RFC 3550 section 5.1: the last octet counts the padding octets, itself included.
        if pos == n:
            _rtp_header_error(p, n)
            return -1
        pad = p[n - 1]
        if pad == 0 or pad > n - pos:
            _rtp_header_error(p, n)
            return -1
    offset[0] = pos
    length[0] = n - pos - pad
    return 0


cdef inline int _rtp_header_error(const uint8_t* p, Py_ssize_t n) except -1:
    """Raise the ValueError of media.rtp.parse_rtp for a packet whose header failed a check above."""
    cdef Py_ssize_t pos, end, pad
    cdef int cc
    cdef uint32_t words
    if n < 12:
        raise ValueError(f"RTP packet truncated: {n} bytes, header needs 12")
    if (p[0] >> 6) != 2:
        raise ValueError(f"RTP version {p[0] >> 6} is not 2")
    cc = p[0] & 0x0F
    pos = 12 + 4 * cc
    if pos > n:
        raise ValueError(f"RTP packet truncated: {n} bytes, {cc} CSRCs need {pos}")
    if p[0] & 0x10:
        if pos + 4 > n:
            raise ValueError(f"RTP packet truncated: {n} bytes, extension header needs {pos + 4}")
        words = _rd16(p + pos + 2)
        end = pos + 4 + 4 * <Py_ssize_t>words
        if end > n:
            raise ValueError(f"RTP packet truncated: {n} bytes, extension of {words} words needs {end}")
        pos = end
    if p[0] & 0x20:
        if pos == n:
            raise ValueError("RTP padding flag set but packet has no payload")
        pad = p[n - 1]
        if pad == 0:
            raise ValueError("RTP padding count 0 is invalid")
        raise ValueError(f"RTP padding count {pad} exceeds payload of {n - pos} bytes")
    raise AssertionError("_rtp_header_error called for a valid header")
