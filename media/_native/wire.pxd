# Shared by the wire-format modules (rtp.pyx, rtcp.pyx) and, through rtp_header.pxd and rewrite.pxd, by
# every native module that reads packets: network byte order (RFC 3550 section 2) and the argument and
# buffer checks whose messages the Python twins (media/rtp.py, media/rtcp.py) give too. Inline: each
# module compiles its own copy from this one source.

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.number cimport PyNumber_Index
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef inline uint16_t _rd16(const uint8_t* p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline uint32_t _rd32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | <uint32_t>p[3]


cdef inline uint64_t _rd64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>_rd32(p) << 32) | _rd32(p + 4)


cdef inline void _wr16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline void _wr32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef inline void _wr64(uint8_t* p, uint64_t v) noexcept nogil:
    _wr32(p, <uint32_t>(v >> 32))
    _wr32(p + 4, <uint32_t>v)


cdef inline object _index(str name, object value, object maximum):
    """operator.index(value), refused with the twins' message outside 0..maximum."""
    value = PyNumber_Index(value)
    if value < 0 or value > maximum:
        raise ValueError(f"{name} out of range: {value}")
    return value


cdef inline long long _ranged(str name, object value, long long maximum) except? -1:
    """_index for ranges that fit a long long, without a Python-level comparison on the hot path."""
    cdef int overflow = 0
    value = PyNumber_Index(value)
    cdef long long result = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or result < 0 or result > maximum:
        raise ValueError(f"{name} out of range: {value}")
    return result


cdef inline int _acquire_writable(object buf, Py_buffer* view, str message) except -1:
    """A simple buffer on buf, or TypeError(message) when it is read-only (a rewrite in place needs it)."""
    PyObject_GetBuffer(buf, view, PyBUF_SIMPLE)
    if view.readonly:
        PyBuffer_Release(view)
        raise TypeError(message)
    return 0
