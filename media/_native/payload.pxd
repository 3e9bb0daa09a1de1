# The video payload formats, read in place through a raw pointer: the native twin of media/payload.py
# (whose documentation says what each function means) for the modules that look into payloads (track,
# depacketize). Inline: each module compiles its own copy from this one source. Every read is guarded by
# the payload's end: the modules are compiled with bounds checking off.
#
# RFC 7741 section 4 (VP8 payload descriptor), RFC 6386 section 9.1 (VP8 keyframe header), RFC 6184
# section 5 (H.264: single NAL units, STAP-A, FU-A).

from libc.stdint cimport uint8_t

cdef enum:
    # H.264 NAL unit types, RFC 6184 section 5.2 and ITU-T H.264 table 7-1.
    NAL_IDR = 5
    NAL_SPS = 7
    NAL_PPS = 8
    NAL_STAP_A = 24
    NAL_FU_A = 28
    MIN_SPS = 4
    MIN_PPS = 2
    # FU header bits, RFC 6184 section 5.8.
    FU_START = 0x80
    FU_END = 0x40


# --- VP8 -------------------------------------------------------------------------------------------------


cdef inline bint vp8_starts_frame(uint8_t first) noexcept nogil:
    return (first & 0x10) != 0 and (first & 0x07) == 0


cdef inline Py_ssize_t vp8_payload_start(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end) noexcept nogil:
    cdef uint8_t first = p[pos], extension
    pos += 1
    if first & 0x80:
        if pos >= end:
            return -1
        extension = p[pos]
        pos += 1
        if extension & 0x80:
            if pos >= end:
                return -1
            pos += 2 if p[pos] & 0x80 else 1
        if extension & 0x40:
            pos += 1
        if extension & 0x30:
            pos += 1
        if pos > end:
            return -1
    return pos


cdef inline bint vp8_keyframe_header(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end) noexcept nogil:
    return (pos + 10 <= end and not (p[pos] & 0x01) and p[pos + 3] == 0x9D and p[pos + 4] == 0x01
            and p[pos + 5] == 0x2A)


cdef inline int vp8_width(const uint8_t* p, Py_ssize_t pos) noexcept nogil:
    return (p[pos + 6] | (p[pos + 7] << 8)) & 0x3FFF


cdef inline int vp8_height(const uint8_t* p, Py_ssize_t pos) noexcept nogil:
    return (p[pos + 8] | (p[pos + 9] << 8)) & 0x3FFF


cdef inline bint vp8_keyframe_start(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end) noexcept nogil:
    if pos >= end or not vp8_starts_frame(p[pos]):
        return False
    pos = vp8_payload_start(p, pos, end)
    return pos >= 0 and vp8_keyframe_header(p, pos, end)


# --- H.264 -----------------------------------------------------------------------------------------------


cdef inline Py_ssize_t h264_stap_a_unit(const uint8_t* p, Py_ssize_t at, Py_ssize_t end) noexcept nogil:
    cdef Py_ssize_t size
    if at + 2 > end:
        return -1
    size = (<Py_ssize_t>p[at] << 8) | p[at + 1]
    if size == 0 or at + 2 + size > end:
        return -1
    return size


cdef inline int h264_parameter_set(int nal_type, Py_ssize_t size) noexcept nogil:
    if nal_type == NAL_SPS and size >= MIN_SPS:
        return NAL_SPS
    if nal_type == NAL_PPS and size >= MIN_PPS:
        return NAL_PPS
    return 0


cdef inline bint h264_begins(int nal_type, const uint8_t* p, Py_ssize_t body, Py_ssize_t end) noexcept nogil:
    if 6 <= nal_type <= 9:
        return True
    if nal_type == 1 or nal_type == NAL_IDR:
        return body < end and (p[body] & 0x80) != 0
    return False


cdef inline bint h264_keyframe_start(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t* sps,
                                     Py_ssize_t* sps_len, Py_ssize_t* pps, Py_ssize_t* pps_len) noexcept nogil:
    # The parameter sets come back as offsets into p (-1: none); a malformed STAP-A gives none at all.
    cdef int nal_type, inner, kept
    cdef Py_ssize_t size
    cdef bint idr = False
    sps[0] = -1
    pps[0] = -1
    if pos >= end:
        return False
    nal_type = p[pos] & 0x1F
    if nal_type == NAL_STAP_A:
        pos += 1
        while pos < end:
            size = h264_stap_a_unit(p, pos, end)
            if size < 0:
                sps[0] = -1
                pps[0] = -1
                return False
            pos += 2
            inner = p[pos] & 0x1F
            kept = h264_parameter_set(inner, size)
            if inner == NAL_IDR:
                idr = True
            elif kept == NAL_SPS:
                sps[0] = pos
                sps_len[0] = size
            elif kept == NAL_PPS:
                pps[0] = pos
                pps_len[0] = size
            pos += size
        return idr
    if nal_type == NAL_FU_A:
        if pos + 2 > end:
            return False
        return (p[pos + 1] & FU_START) != 0 and (p[pos + 1] & 0x1F) == NAL_IDR
    if nal_type == NAL_IDR:
        return True
    kept = h264_parameter_set(nal_type, end - pos)
    if kept == NAL_SPS:
        sps[0] = pos
        sps_len[0] = end - pos
    elif kept == NAL_PPS:
        pps[0] = pos
        pps_len[0] = end - pos
    return False
