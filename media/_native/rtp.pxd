# The part of rtp.pyx that other native modules cimport: the rewrite state of a subscriber lives in
# RtpRewriter, and media/_native/fanout.pyx rewrites through it without a Python call per packet; the
# result classes of rtcp.pyx share RtpHeader's dataclass-like equality and repr (_Record).

cimport cython
from libc.stdint cimport uint8_t
from media._native.rewrite cimport RewriteState


cdef class _Record:
    cdef tuple _values(self)


@cython.final
cdef class RtpRewriter:
    cdef RewriteState state
    cdef int _rewrite(self, uint8_t* p, Py_ssize_t n, bint has_now, double now) except -1
