# Shared by the native modules that take RTP packets in (track, depacketize): big-endian reads and the
# RTP header checks of media.rtp.parse_rtp, with the same ValueError messages, giving only where the
# payload is. Inline: each module compiles its own copy from this one source.

from libc.stdint cimport uint8_t, uint16_t, uint32_t


cdef inline uint16_t _rd16(const uint8_t* p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline uint32_t _rd32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | <uint32_t>p[3]


cdef inline int _rtp_payload(const uint8_t* p, Py_ssize_t n, Py_ssize_t* offset, Py_ssize_t* length) except -1:
    """RFC 3550 section 5.1: fixed header, CSRCs, extension and padding, every length checked."""
    cdef Py_ssize_t pos, end, pad = 0
    cdef int version, cc
    cdef uint32_t words
    if n < 12:
        raise ValueError(f"RTP packet truncated: {n} bytes, header needs 12")
    version = p[0] >> 6
    if version != 2:
        raise ValueError(f"RTP version {version} is not 2")
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
        if pad > n - pos:
            raise ValueError(f"RTP padding count {pad} exceeds payload of {n - pos} bytes")
    offset[0] = pos
    length[0] = n - pos - pad
    return 0
