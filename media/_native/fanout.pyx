# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, autotestdict=False
"""The per-subscriber send path in Cython: the fast twin of media/fanout.py.

One call per incoming packet forwards it to every output of a track: copy into the output's slot of a
preallocated buffer, rewrite (rewrite.pxd, the same state RtpRewriter keeps), SRTP-protect in place with
libsrtp's C API (the very srtp_protect and session that pylibsrtp, under aiortc, uses for that peer), and
send: UDP outputs in batches with sendmmsg (one batch per socket: RTSP clients share one), interleaved TCP
outputs with one send() of the whole `$`-framed packet. The loop runs with the GIL released; Python is
called only for outputs that have no native route (a callable) and for the tail of a TCP frame the kernel
did not take whole. Same semantics, counters and results as the twin (tests/test_fanout.py).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.errno cimport EINTR, errno
from posix.unistd cimport close, dup
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uintptr_t
from libc.string cimport memcpy, memset
from media._native.rewrite cimport RewriteState, retransmit_packet, rewrite_packet
from media._native.rtp cimport RtpRewriter

import socket as _socket
import sys

from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr_storage:
        pass
    struct iovec:
        void* iov_base
        size_t iov_len
    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int sendmmsg(int fd, mmsghdr* msgvec, unsigned int vlen, int flags)
    ssize_t send(int fd, const void* buf, size_t n, int flags)
    int MSG_DONTWAIT
    int MSG_NOSIGNAL

ctypedef int (*srtp_protect_t)(void* ctx, void* rtp, int* length) noexcept nogil

# A slot: 4 bytes for the interleaved prefix, the packet, room for the SRTP trailer (libsrtp protects in
# place and may add up to SRTP_MAX_TRAILER_LEN = 144 bytes).
cdef enum:
    SLOT = 4096
    PREFIX = 4
    TRAILER = 144
    MAX_PACKET = SLOT - PREFIX - TRAILER
    MAX_BATCH = 1024  # sendmmsg's UIO_MAXIOV

MAX_PACKET_SIZE = MAX_PACKET

# Routes.
cdef enum:
    R_NONE = 0
    R_UDP = 1
    R_TCP = 2
    R_CALL = 3

# What an output still needs from Python after the native loop.
cdef enum:
    P_NONE = 0
    P_CALL = 1
    P_TCP_REST = 2

cdef srtp_protect_t _PROTECT = <srtp_protect_t><uintptr_t>int(_srtp_ffi.cast("uintptr_t", _srtp_ffi.addressof(_srtp_lib, "srtp_protect")))


cdef struct OutState:
    RewriteState* rw
    int route
    int fd
    uint8_t addr[128]  # a sockaddr_in or sockaddr_in6
    socklen_t addrlen
    void* srtp
    uint8_t channel
    bint blocked
    bint video
    bint waiting_keyframe
    unsigned long long sent
    unsigned long long dropped
    unsigned long long skipped
    unsigned long long retransmitted
    unsigned long long bytes_sent
    int pending
    Py_ssize_t length
    Py_ssize_t written


cdef int _dup(int fd) except -1:
    cdef int copy = dup(fd)
    if copy < 0:
        raise OSError(errno, f"cannot duplicate socket {fd}")
    return copy


cdef bytes _sockaddr(int family, object address):
    """struct sockaddr_in / sockaddr_in6 of (host, port[, flowinfo, scope_id]) as Linux lays them out."""
    host, port = address[0], int(address[1])
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    if family == _socket.AF_INET:
        return (int(_socket.AF_INET).to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
                + _socket.inet_pton(_socket.AF_INET, host) + bytes(8))
    if family == _socket.AF_INET6:
        flowinfo = int(address[2]) if len(address) > 2 else 0
        scope = int(address[3]) if len(address) > 3 else 0
        return (int(_socket.AF_INET6).to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
                + flowinfo.to_bytes(4, "big") + _socket.inet_pton(_socket.AF_INET6, host)
                + scope.to_bytes(4, sys.byteorder))
    raise ValueError(f"unsupported address family {family}")


@cython.final
cdef class Output:
    """One subscriber's outgoing track: its rewrite state (an RtpRewriter), where packets go, and what
    happened to them. Routes: `use_udp` (a datagram socket and address, SRTP-protected with a pylibsrtp
    session or plain), `use_tcp` (RTSP interleaved on a stream socket), `use_callable` (anything else:
    the callable takes the rewritten packet and says whether it was sent), `clear_route` (drop)."""

    cdef OutState c
    cdef readonly RtpRewriter rewriter
    cdef object _srtp_session
    cdef object _call
    cdef object _write_raw
    cdef int _own_fd

    def __cinit__(self):
        memset(&self.c, 0, sizeof(OutState))
        self.c.fd = -1
        self._own_fd = -1

    def __init__(self, RtpRewriter rewriter not None, bint video):
        self.rewriter = rewriter
        self.c.rw = &rewriter.state
        self.c.video = video
        self.c.waiting_keyframe = video

    def __dealloc__(self):
        if self._own_fd >= 0:
            close(self._own_fd)
            self._own_fd = -1

    cdef void _drop_route(self):
        self.c.route = R_NONE
        self.c.fd = -1
        self.c.srtp = NULL
        self._srtp_session = None
        self._call = None
        self._write_raw = None
        if self._own_fd >= 0:
            close(self._own_fd)
            self._own_fd = -1

    def clear_route(self):
        """No route: packets are dropped (and counted) until one is set."""
        self._drop_route()

    def use_callable(self, send not None):
        self._drop_route()
        self._call = send
        self.c.route = R_CALL

    def use_udp(self, int fd, int family, object address, object srtp_session=None):
        """Datagrams from the socket `fd` (duplicated: the route holds the socket even after its owner
        closed it, so the number can never come to name another file) to `address`; SRTP-protected
        with `srtp_session` (a pylibsrtp.Session) when given."""
        name = _sockaddr(family, address)
        self._drop_route()
        self._own_fd = _dup(fd)
        self.c.fd = self._own_fd
        memcpy(self.c.addr, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
        self.c.addrlen = <socklen_t>PyBytes_GET_SIZE(name)
        if srtp_session is not None:
            self._srtp_session = srtp_session  # keeps the libsrtp context alive
            self.c.srtp = <void*><uintptr_t>int(_srtp_ffi.cast("uintptr_t", srtp_session._srtp[0]))
        self.c.route = R_UDP

    def use_tcp(self, int fd, int channel, object send_framed not None, object write_raw not None):
        """RTSP interleaved frames on channel `channel` of the stream socket `fd`, written whole by one
        send() while nothing waits in the connection's own buffer. While it does (`set_blocked(True)`,
        from the protocol's pause_writing), `send_framed(packet)` takes the packet instead, so bytes stay
        in order; `write_raw(tail)` takes the part of a frame the kernel did not accept."""
        if not 0 <= channel <= 255:
            raise ValueError(f"channel out of range: {channel}")
        self._drop_route()
        self._own_fd = _dup(fd)
        self.c.fd = self._own_fd
        self.c.channel = <uint8_t>channel
        self._call = send_framed
        self._write_raw = write_raw
        self.c.route = R_TCP

    def set_blocked(self, bint blocked):
        self.c.blocked = blocked

    @property
    def route(self):
        return ("none", "udp", "tcp", "callable")[self.c.route]

    @property
    def video(self):
        return self.c.video

    @property
    def waiting_keyframe(self):
        return self.c.waiting_keyframe

    @waiting_keyframe.setter
    def waiting_keyframe(self, bint value):
        self.c.waiting_keyframe = value

    @property
    def sent(self):
        return self.c.sent

    @property
    def dropped(self):
        return self.c.dropped

    @property
    def skipped_waiting_keyframe(self):
        return self.c.skipped

    @property
    def retransmitted(self):
        return self.c.retransmitted

    @property
    def bytes_sent(self):
        """Bytes handed to the kernel (SRTP trailer and interleaved prefix included)."""
        return self.c.bytes_sent

    cdef bint _finish(self, uint8_t* slot, Py_ssize_t n) except -1:
        """Protect and send one packet already rewritten at slot + PREFIX, on its own (the GOP of a new
        subscriber, a retransmission). True when it went out."""
        cdef int length = <int>n
        cdef Py_ssize_t r
        cdef msghdr msg
        cdef iovec iov
        if self.c.route == R_UDP:
            if self.c.srtp != NULL and _PROTECT(self.c.srtp, slot + PREFIX, &length) != 0:
                return False
            iov.iov_base = slot + PREFIX
            iov.iov_len = <size_t>length
            memset(&msg, 0, sizeof(msghdr))
            msg.msg_name = self.c.addr
            msg.msg_namelen = self.c.addrlen
            msg.msg_iov = &iov
            msg.msg_iovlen = 1
            if _sendmsg(self.c.fd, &msg) < 0:
                return False
            self.c.bytes_sent += <unsigned long long>length
            return True
        if self.c.route == R_TCP and not self.c.blocked:
            _frame(slot, self.c.channel, n)
            r = send(self.c.fd, slot, <size_t>(n + PREFIX), MSG_DONTWAIT | MSG_NOSIGNAL)
            if r <= 0:
                return False
            self.c.bytes_sent += <unsigned long long>r
            if r < n + PREFIX:
                self._write_raw(PyBytes_FromStringAndSize(<char*>slot + r, n + PREFIX - r))
            return True
        if self.c.route == R_CALL or self.c.route == R_TCP:
            if self._call(PyBytes_FromStringAndSize(<char*>slot + PREFIX, n)):
                self.c.bytes_sent += <unsigned long long>n
                return True
        return False

    def send(self, bytes packet not None, double now):
        """One packet to this output alone, rewritten with (and advancing) its state; the keyframe gate
        is the caller's. True when it went out; counted as sent or dropped."""
        cdef uint8_t slot[SLOT]
        cdef Py_ssize_t n = PyBytes_GET_SIZE(packet)
        if not _valid(<const uint8_t*>PyBytes_AS_STRING(packet), n):
            self.c.dropped += 1
            return False
        memcpy(slot + PREFIX, PyBytes_AS_STRING(packet), n)
        rewrite_packet(self.c.rw, slot + PREFIX, n, True, now)
        if self._finish(slot, n):
            self.c.sent += 1
            return True
        self.c.dropped += 1
        return False

    def retransmit(self, bytes packet not None):
        """A cached packet again with the offsets in force (same SSRC and numbering: RFC 4588 is not
        used), the rewrite state unchanged. True when it went out."""
        cdef uint8_t slot[SLOT]
        cdef Py_ssize_t n = PyBytes_GET_SIZE(packet)
        if not _valid(<const uint8_t*>PyBytes_AS_STRING(packet), n):
            return False
        memcpy(slot + PREFIX, PyBytes_AS_STRING(packet), n)
        retransmit_packet(self.c.rw, slot + PREFIX)
        if self._finish(slot, n):
            self.c.retransmitted += 1
            return True
        return False


cdef inline bint _valid(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    return PREFIX + n + TRAILER <= SLOT and n >= 12 and (p[0] >> 6) == 2


cdef inline void _frame(uint8_t* slot, uint8_t channel, Py_ssize_t n) noexcept nogil:
    """RFC 2326 section 10.12: '$', the channel, the length in network order, then the packet."""
    slot[0] = 0x24
    slot[1] = channel
    slot[2] = <uint8_t>(n >> 8)
    slot[3] = <uint8_t>n


cdef int _sendmsg(int fd, msghdr* msg) noexcept nogil:
    cdef mmsghdr one
    cdef int r
    one.msg_hdr = msg[0]
    one.msg_len = 0
    while True:
        r = sendmmsg(fd, &one, 1, MSG_DONTWAIT)
        if r < 0 and errno == EINTR:
            continue
        return r


@cython.final
cdef class Fanout:
    """The outputs of one published track, forwarded to by one `forward` call per incoming packet."""

    cdef list _outputs
    cdef OutState** _states
    cdef Py_ssize_t _capacity
    cdef uint8_t* _slots  # one per output: frames that wait for Python (TCP tails, callables)
    cdef uint8_t* _batch  # one per datagram of the batch being built
    cdef mmsghdr* _msgs
    cdef iovec* _iovs
    cdef Py_ssize_t* _owner
    cdef readonly unsigned long long oversized
    cdef readonly unsigned long long errors  # exceptions raised by callables, counted

    def __cinit__(self):
        self._outputs = []
        self._states = NULL
        self._capacity = 0
        self._slots = NULL
        self._batch = NULL
        self._msgs = NULL
        self._iovs = NULL
        self._owner = NULL
        self.oversized = 0
        self.errors = 0

    def __dealloc__(self):
        PyMem_Free(self._states)
        PyMem_Free(self._slots)
        PyMem_Free(self._batch)
        PyMem_Free(self._msgs)
        PyMem_Free(self._iovs)
        PyMem_Free(self._owner)

    def __len__(self):
        return len(self._outputs)

    @property
    def outputs(self):
        return list(self._outputs)

    cdef int _reserve(self, Py_ssize_t count) except -1:
        cdef Py_ssize_t capacity = self._capacity
        if count <= capacity:
            return 0
        while capacity < count:
            capacity = capacity * 2 if capacity else 8
        states = <OutState**>PyMem_Realloc(self._states, capacity * sizeof(OutState*))
        if states == NULL:
            raise MemoryError()
        self._states = states
        slots = <uint8_t*>PyMem_Realloc(self._slots, capacity * SLOT)
        if slots == NULL:
            raise MemoryError()
        self._slots = slots
        batch = <uint8_t*>PyMem_Realloc(self._batch, min(capacity, MAX_BATCH) * SLOT)
        if batch == NULL:
            raise MemoryError()
        self._batch = batch
        msgs = <mmsghdr*>PyMem_Realloc(self._msgs, capacity * sizeof(mmsghdr))
        if msgs == NULL:
            raise MemoryError()
        self._msgs = msgs
        iovs = <iovec*>PyMem_Realloc(self._iovs, capacity * sizeof(iovec))
        if iovs == NULL:
            raise MemoryError()
        self._iovs = iovs
        owner = <Py_ssize_t*>PyMem_Realloc(self._owner, capacity * sizeof(Py_ssize_t))
        if owner == NULL:
            raise MemoryError()
        self._owner = owner
        self._capacity = capacity
        return 0

    cdef void _index(self):
        cdef Py_ssize_t i
        cdef Output out
        for i in range(len(self._outputs)):
            out = <Output>self._outputs[i]
            self._states[i] = &out.c

    def add(self, Output output not None):
        if output in self._outputs:
            return
        self._reserve(len(self._outputs) + 1)
        self._outputs.append(output)
        self._index()

    def remove(self, Output output not None):
        if output in self._outputs:
            self._outputs.remove(output)
            self._index()

    cdef int _flush(self, Py_ssize_t m, int fd) noexcept nogil:
        """Send the batch of m datagrams on socket fd; a message the kernel refuses (full buffer, peer
        gone) is dropped and counted, and the rest are tried. Returns how many went."""
        cdef Py_ssize_t j = 0, i
        cdef int r, sent = 0
        cdef OutState* o
        while j < m:
            r = sendmmsg(fd, &self._msgs[j], <unsigned int>(m - j), MSG_DONTWAIT)
            if r > 0:
                for i in range(j, j + r):
                    o = self._states[self._owner[i]]
                    o.sent += 1
                    o.bytes_sent += self._iovs[i].iov_len
                sent += r
                j += r
            elif r < 0 and errno == EINTR:
                continue
            else:
                self._states[self._owner[j]].dropped += 1
                j += 1
        return sent

    def forward(self, bytes packet not None, bint keyframe, double now):
        """Forward one received packet to every output; returns how many took it. An output waiting for
        a keyframe skips (counted) until `keyframe` is set; a full socket or an SRTP failure drops
        (counted); a slow output never holds up the others."""
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(packet)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(packet)
        cdef Py_ssize_t count = len(self._outputs)
        cdef Py_ssize_t i, m = 0, r
        cdef int length, fd = -1, sent_now
        cdef OutState* o
        cdef uint8_t* slot
        cdef bint python_pass = False
        cdef Output out
        cdef int pending
        cdef Py_ssize_t written
        if count == 0:
            return 0
        if not _valid(p, n):
            self.oversized += 1
            for i in range(count):
                self._states[i].dropped += 1
            return 0
        sent_now = 0
        with nogil:
            for i in range(count):
                o = self._states[i]
                o.pending = P_NONE
                if o.waiting_keyframe:
                    if not keyframe:
                        o.skipped += 1
                        continue
                    o.waiting_keyframe = False
                if o.route == R_NONE:
                    o.dropped += 1
                    continue
                if o.route == R_UDP:
                    # Datagrams go in batches to one socket (RTSP clients share the server's RTP socket):
                    # a batch is sent when the next output has another socket (every WebRTC peer has its
                    # own), so its slots are reused at once and stay in the cache.
                    if m and (o.fd != fd or m == MAX_BATCH):
                        sent_now += self._flush(m, fd)
                        m = 0
                    fd = o.fd
                    slot = self._batch + m * SLOT
                    memcpy(slot + PREFIX, p, n)
                    rewrite_packet(o.rw, slot + PREFIX, n, True, now)
                    length = <int>n
                    if o.srtp != NULL and _PROTECT(o.srtp, slot + PREFIX, &length) != 0:
                        o.dropped += 1
                        continue
                    self._iovs[m].iov_base = slot + PREFIX
                    self._iovs[m].iov_len = <size_t>length
                    memset(&self._msgs[m], 0, sizeof(mmsghdr))
                    self._msgs[m].msg_hdr.msg_name = o.addr
                    self._msgs[m].msg_hdr.msg_namelen = o.addrlen
                    self._msgs[m].msg_hdr.msg_iov = &self._iovs[m]
                    self._msgs[m].msg_hdr.msg_iovlen = 1
                    self._owner[m] = i
                    m += 1
                    continue
                slot = self._slots + i * SLOT
                memcpy(slot + PREFIX, p, n)
                rewrite_packet(o.rw, slot + PREFIX, n, True, now)
                if o.route == R_TCP and not o.blocked:
                    _frame(slot, o.channel, n)
                    r = send(o.fd, slot, <size_t>(n + PREFIX), MSG_DONTWAIT | MSG_NOSIGNAL)
                    if r == n + PREFIX:
                        o.sent += 1
                        o.bytes_sent += <unsigned long long>r
                        sent_now += 1
                    elif r > 0:
                        # The kernel took part of the frame: the rest must follow before anything else.
                        o.sent += 1
                        o.bytes_sent += <unsigned long long>r
                        sent_now += 1
                        o.pending = P_TCP_REST
                        o.length = n + PREFIX
                        o.written = r
                        python_pass = True
                    else:
                        o.dropped += 1  # nothing of it went: the stream of frames stays whole
                else:
                    o.pending = P_CALL
                    o.length = n
                    python_pass = True
            if m:
                sent_now += self._flush(m, fd)
        if python_pass:
            # Callables may add or remove outputs (a route resolved, a viewer gone): walk a copy, and take
            # each slot from the current buffer (a reallocation keeps slots where they were).
            for i, obj in enumerate(list(self._outputs)):
                out = <Output>obj
                o = &out.c
                if o.pending == P_NONE:
                    continue
                pending = o.pending
                o.pending = P_NONE
                slot = self._slots + i * SLOT
                try:
                    if pending == P_TCP_REST:
                        written = o.written
                        o.written = 0
                        if out._write_raw is not None:
                            out._write_raw(PyBytes_FromStringAndSize(<char*>slot + written, o.length - written))
                    elif out._call is not None and out._call(PyBytes_FromStringAndSize(<char*>slot + PREFIX, o.length)):
                        o.sent += 1
                        o.bytes_sent += <unsigned long long>o.length
                        sent_now += 1
                    else:
                        o.dropped += 1
                except Exception:
                    o.dropped += 1
                    self.errors += 1
        return sent_now
