# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, autotestdict=False
"""The ingest state of one published track, in Cython: the fast twin of media/track.py.

Same API, same results, same exceptions and messages as the Python module (tests/test_track.py holds them
to it); the documentation of the behaviour lives there. This file is compiled with bounds checking off:
every read of a packet goes through a raw pointer after an explicit length check, so each check below is
what stands between hostile input and an out-of-bounds read. No I/O, no clock reads; `now` comes in as an
argument.

RFC 3550 appendix A.1, A.3, A.8 and section 6.4.1; RFC 4585; RFC 7741 section 4 and RFC 6184 section 5
(media/_native/payload.pxd).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport floor, fmod, isfinite
from media._native.payload cimport h264_keyframe_start, vp8_keyframe_start
from media._native.rtp_header cimport _rd16, _rd32, _rtp_payload
from media._native.wire cimport _index, _ranged
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memset

import operator

# push() flags.
KEYFRAME = 0x01
SPS_PPS = 0x02
NEW_SSRC = 0x04
OUT_OF_ORDER = 0x08
DUPLICATE = 0x10
SEQ_JUMP = 0x20

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100

CODECS = ("VP8", "H264", "opus")
_CODEC_NAMES = {name.lower(): name for name in CODECS}

cdef enum:
    _F_KEYFRAME = 0x01
    _F_SPS_PPS = 0x02
    _F_NEW_SSRC = 0x04
    _F_OUT_OF_ORDER = 0x08
    _F_DUPLICATE = 0x10
    _F_SEQ_JUMP = 0x20
    _SEQ_MOD = 65536
    _DROPOUT = 3000
    _MISORDER = 100
    _NO_BAD_SEQ = 65537
    # how push() classified a packet's sequence number
    _FIRST = 0
    _IN_ORDER = 1
    _LATE = 2


cdef double _seconds(str name, object value) except? -1.0:
    cdef double seconds = value
    if not isfinite(seconds):
        raise ValueError(f"{name} out of range: {value!r}")
    return seconds


@cython.final
cdef class IngestTrack:
    """The per-packet state of one received track (one SSRC at a time); see media/track.py."""

    # settings
    cdef str _codec
    cdef bint _video
    cdef bint _h264
    cdef uint32_t _clock_rate
    cdef Py_ssize_t _cache_size
    cdef Py_ssize_t _mask
    cdef long long _gop_max_packets
    cdef long long _gop_max_bytes
    # the current source
    cdef bint _has_ssrc
    cdef uint32_t _ssrc
    cdef uint16_t _base_seq
    cdef uint16_t _max_seq
    cdef uint32_t _bad_seq
    cdef long long _cycles
    cdef long long _received
    cdef long long _expected_prior
    cdef long long _received_prior
    cdef uint32_t _transit
    cdef long long _jitter16
    cdef bint _has_timestamp
    cdef uint32_t _last_timestamp
    cdef bint _has_keyframe_at
    cdef double _last_keyframe_at
    cdef object _last_sr
    cdef list _cache
    cdef long long* _cache_ext
    cdef list _gop
    cdef long long _gop_bytes
    cdef bint _gop_active
    cdef bint _gop_full
    cdef long long _gop_start_ext
    cdef uint32_t _gop_ts
    # the track's life
    cdef long long _packets
    cdef long long _bytes
    cdef long long _duplicates
    cdef long long _keyframes
    cdef long long _gop_overflows
    cdef object _sps
    cdef object _pps
    cdef bint _has_packet_at
    cdef double _last_packet_at

    def __init__(self, codec, clock_rate, cache_size=1024, gop_max_packets=4096, gop_max_bytes=8_000_000):
        if not isinstance(codec, str):
            raise TypeError(f"codec must be str, not {type(codec).__name__}")
        name = _CODEC_NAMES.get(codec.lower())
        if name is None:
            raise ValueError(f"unsupported codec {codec!r}: expected one of VP8, H264, opus")
        clock = _index("clock_rate", clock_rate, 0xFFFFFFFF)
        if clock == 0:
            raise ValueError("clock_rate out of range: 0")
        size = operator.index(cache_size)
        if size < 1 or size > _SEQ_MOD or size & (size - 1):
            raise ValueError(f"cache_size must be a power of two from 1 to 65536, got {size}")
        max_packets = _index("gop_max_packets", gop_max_packets, 0x7FFFFFFF)
        if max_packets == 0:
            raise ValueError("gop_max_packets out of range: 0")
        max_bytes = _index("gop_max_bytes", gop_max_bytes, 0x7FFFFFFFFFFFFFFF)
        if max_bytes == 0:
            raise ValueError("gop_max_bytes out of range: 0")
        cdef long long* ext = <long long*>PyMem_Malloc(<Py_ssize_t>size * sizeof(long long))
        if ext == NULL:
            raise MemoryError()
        PyMem_Free(self._cache_ext)
        self._cache_ext = ext
        self._codec = name
        self._video = name != "opus"
        self._h264 = name == "H264"
        self._clock_rate = clock
        self._cache_size = size
        self._mask = self._cache_size - 1
        self._gop_max_packets = max_packets
        self._gop_max_bytes = max_bytes
        self.reset()

    def __dealloc__(self):
        PyMem_Free(self._cache_ext)
        self._cache_ext = NULL

    # --- state changes ---

    def reset(self):
        """Forget everything: the track is as new (settings kept)."""
        self._packets = 0
        self._bytes = 0
        self._duplicates = 0
        self._keyframes = 0
        self._gop_overflows = 0
        self._sps = None
        self._pps = None
        self._has_packet_at = False
        self._last_sr = None
        self._has_ssrc = False
        self._forget_source()

    cdef void _forget_source(self):
        self._forget_numbering()
        self._has_keyframe_at = False

    cdef void _forget_numbering(self):
        self._base_seq = 0
        self._max_seq = 0
        self._bad_seq = _NO_BAD_SEQ
        self._cycles = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._transit = 0
        self._jitter16 = 0
        self._has_timestamp = False
        self._cache = [None] * self._cache_size
        memset(self._cache_ext, 0, self._cache_size * sizeof(long long))
        self._gop = []
        self._gop_bytes = 0
        self._gop_active = False
        self._gop_full = False
        self._gop_start_ext = 0
        self._gop_ts = 0

    cdef inline void _start_numbering(self, uint16_t seq):
        # A.1 init_seq().
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = _NO_BAD_SEQ
        self._cycles = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0

    def push(self, packet, now):
        """Take one received RTP packet (decrypted) and return its flags. A packet whose RTP header does
        not parse raises ValueError and changes nothing."""
        if not isinstance(packet, bytes):
            raise TypeError(f"packet must be bytes, not {type(packet).__name__}")
        cdef double seconds = _seconds("now", now)
        cdef double ticks = seconds * <double>self._clock_rate
        if not isfinite(ticks):
            raise ValueError(f"now out of range: {now!r}")
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(packet)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(packet)
        cdef Py_ssize_t offset, length
        _rtp_payload(p, n, &offset, &length)
        return self._push(<bytes>packet, p, n, offset, length, seconds, ticks)

    cdef int _push(self, bytes packet, const uint8_t* p, Py_ssize_t n, Py_ssize_t offset, Py_ssize_t length,
                   double seconds, double ticks) except -1:
        cdef uint16_t seq = _rd16(p + 2)
        cdef uint32_t ts = _rd32(p + 4)
        cdef uint32_t ssrc = _rd32(p + 8)
        cdef uint16_t udelta
        cdef int flags = 0, kind
        cdef long long ext
        cdef Py_ssize_t slot
        cdef double arrival
        cdef uint32_t transit
        cdef long long d
        cdef bint start
        cdef Py_ssize_t sps, sps_len = 0, pps, pps_len = 0
        self._has_packet_at = True
        self._last_packet_at = seconds

        if not self._has_ssrc or ssrc != self._ssrc:
            if self._has_ssrc:
                self._forget_source()
                self._last_sr = None
            self._ssrc = ssrc
            self._has_ssrc = True
            self._start_numbering(seq)
            flags = _F_NEW_SSRC
            kind = _FIRST
            ext = seq
        else:
            udelta = <uint16_t>(seq - self._max_seq)
            if udelta == 0:
                self._duplicates += 1
                return _F_DUPLICATE
            if udelta < _DROPOUT:
                kind = _IN_ORDER
                ext = self._cycles + seq + (_SEQ_MOD if seq < self._max_seq else 0)
            elif udelta <= _SEQ_MOD - _MISORDER:
                if seq != self._bad_seq:
                    self._bad_seq = (seq + 1) & 0xFFFF
                    return _F_SEQ_JUMP
                # Two sequential packets: the sender restarted its numbering (A.1).
                self._forget_numbering()
                self._start_numbering(seq)
                flags = _F_SEQ_JUMP
                kind = _FIRST
                ext = seq
            else:
                kind = _LATE
                ext = self._cycles + seq - (_SEQ_MOD if seq > self._max_seq else 0)
                slot = seq & self._mask
                if self._cache[slot] is not None and self._cache_ext[slot] == ext:
                    self._duplicates += 1
                    return _F_DUPLICATE
                flags = _F_OUT_OF_ORDER

        if kind == _IN_ORDER:
            if seq < self._max_seq:
                self._cycles += _SEQ_MOD
            self._max_seq = seq
        self._received += 1
        self._packets += 1
        self._bytes += n

        slot = seq & self._mask
        if self._cache[slot] is None or self._cache_ext[slot] < ext:
            self._cache[slot] = packet
            self._cache_ext[slot] = ext

        if kind != _LATE:
            # A.8, with the jitter kept scaled by 16 in integers.
            arrival = fmod(floor(ticks), 4294967296.0)
            if arrival < 0.0:
                arrival += 4294967296.0
            transit = <uint32_t>arrival - ts
            if kind == _IN_ORDER:
                d = <int32_t>(transit - self._transit)
                if d < 0:
                    d = -d
                self._jitter16 += d - ((self._jitter16 + 8) >> 4)
            self._transit = transit
            self._last_timestamp = ts
            self._has_timestamp = True

        if self._video:
            if self._h264:
                start = h264_keyframe_start(p, offset, offset + length, &sps, &sps_len, &pps, &pps_len)
                if sps >= 0 or pps >= 0:
                    flags |= _F_SPS_PPS
                    start = True
                    # A late packet does not replace newer parameter sets.
                    if sps >= 0 and (kind != _LATE or self._sps is None):
                        self._sps = PyBytes_FromStringAndSize(<const char*>p + sps, sps_len)
                    if pps >= 0 and (kind != _LATE or self._pps is None):
                        self._pps = PyBytes_FromStringAndSize(<const char*>p + pps, pps_len)
            else:
                start = vp8_keyframe_start(p, offset, offset + length)
            flags |= self._keep(packet, n, ext, ts, start, length, seconds)
        return flags

    cdef int _keep(self, bytes packet, Py_ssize_t size, long long ext, uint32_t ts, bint start,
                   Py_ssize_t payload_length, double seconds) except -1:
        cdef list old
        cdef long long highest
        cdef uint16_t seq
        cdef const uint8_t* q
        if start:
            if self._gop_active and ts == self._gop_ts:
                if ext < self._gop_start_ext:
                    self._gop_start_ext = ext
                    if self._gop_room(size):
                        self._gop.insert(0, packet)
                        self._gop_bytes += size
                else:
                    self._append(packet, size)
                return 0
            if self._gop_active and ext < self._gop_start_ext:
                return 0  # a late packet of a keyframe older than the current GOP: not kept
            old = self._gop
            self._gop = []
            self._gop_bytes = 0
            self._gop_active = True
            self._gop_full = False
            self._gop_start_ext = ext
            self._gop_ts = ts
            self._keyframes += 1
            self._has_keyframe_at = True
            self._last_keyframe_at = seconds
            self._append(packet, size)
            highest = self._cycles + self._max_seq
            if ext < highest:
                # The keyframe start arrived late: what already arrived after it belongs to its GOP.
                for earlier in old:
                    q = <const uint8_t*>PyBytes_AS_STRING(earlier)
                    seq = _rd16(q + 2)
                    if highest - <uint16_t>(self._max_seq - seq) > ext:
                        self._append(<bytes>earlier, PyBytes_GET_SIZE(earlier))
            return _F_KEYFRAME
        if payload_length and self._gop_active and ext > self._gop_start_ext:
            self._append(packet, size)
        return 0

    cdef inline bint _gop_room(self, Py_ssize_t size):
        if self._gop_full:
            return False
        if len(self._gop) >= self._gop_max_packets or size > self._gop_max_bytes - self._gop_bytes:
            self._gop_full = True
            self._gop_overflows += 1
            return False
        return True

    cdef inline int _append(self, bytes packet, Py_ssize_t size) except -1:
        if self._gop_room(size):
            self._gop.append(packet)
            self._gop_bytes += size
        return 0

    def on_sender_report(self, ntp_timestamp, rtp_timestamp, now):
        """Record the source's latest RTCP sender report (RFC 3550 section 6.4.1), received at `now`."""
        ntp = _index("ntp_timestamp", ntp_timestamp, 0xFFFFFFFFFFFFFFFF)
        rtp_ts = _index("rtp_timestamp", rtp_timestamp, 0xFFFFFFFF)
        self._last_sr = (ntp, rtp_ts, _seconds("now", now))

    def report_block(self, now, last_sr_ntp_middle32=0, last_sr_at=None):
        """The fields of an RTCP reception report block for this source, RFC 3550 section 6.4.1:
        (ssrc, fraction_lost, cumulative_lost, extended_highest_seq, jitter, lsr, dlsr)."""
        cdef double seconds = _seconds("now", now)
        cdef long long lsr = _ranged("last_sr_ntp_middle32", last_sr_ntp_middle32, 0xFFFFFFFF)
        cdef bint has_sr = False
        cdef double sr_at = 0.0, delay
        cdef long long dlsr = 0
        if last_sr_at is not None:
            sr_at = _seconds("last_sr_at", last_sr_at)
            has_sr = True
        elif lsr:
            raise ValueError("last_sr_ntp_middle32 needs last_sr_at")
        if not self._has_ssrc:
            raise ValueError("no RTP packet received yet: nothing to report")
        if not has_sr and self._last_sr is not None:
            lsr = (self._last_sr[0] >> 16) & 0xFFFFFFFF
            sr_at = self._last_sr[2]
            has_sr = True
        if has_sr:
            delay = (seconds - sr_at) * 65536.0
            if delay >= 4294967295.0:
                dlsr = 0xFFFFFFFF
            elif delay > 0.0:
                dlsr = <long long>delay

        cdef long long highest = self._cycles + self._max_seq
        cdef long long expected = highest - self._base_seq + 1
        cdef long long expected_interval = expected - self._expected_prior
        cdef long long received_interval = self._received - self._received_prior
        cdef long long lost_interval = expected_interval - received_interval
        cdef long long fraction = 0
        cdef long long cumulative = expected - self._received
        self._expected_prior = expected
        self._received_prior = self._received
        if expected_interval > 0 and lost_interval > 0:
            fraction = (lost_interval << 8) // expected_interval
            if fraction > 255:
                fraction = 255
        if cumulative > 0x7FFFFF:
            cumulative = 0x7FFFFF
        elif cumulative < -0x800000:
            cumulative = -0x800000
        return (self._ssrc, fraction, cumulative, highest & 0xFFFFFFFF, self._jitter16 >> 4, lsr, dlsr)

    # --- queries ---

    def get(self, seq):
        """The cached packet with exactly this sequence number, or None."""
        cdef uint16_t s = <uint16_t>_ranged("seq", seq, 0xFFFF)
        cdef Py_ssize_t slot = s & self._mask
        packet = self._cache[slot]
        if packet is None:
            return None
        if self._cache_ext[slot] != self._cycles + self._max_seq - <uint16_t>(self._max_seq - s):
            return None
        return packet

    def gop(self):
        """The packets from the last keyframe start onward, in arrival order."""
        return list(self._gop)

    @property
    def codec(self):
        return self._codec

    @property
    def is_video(self):
        return self._video

    @property
    def clock_rate(self):
        return self._clock_rate

    @property
    def cache_size(self):
        return self._cache_size

    @property
    def gop_max_packets(self):
        return self._gop_max_packets

    @property
    def gop_max_bytes(self):
        return self._gop_max_bytes

    @property
    def ssrc(self):
        return self._ssrc if self._has_ssrc else None

    @property
    def packets(self):
        return self._packets

    @property
    def duplicates(self):
        return self._duplicates

    @property
    def extended_highest_seq(self):
        return self._cycles + self._max_seq if self._has_ssrc else None

    @property
    def lost(self):
        if not self._has_ssrc:
            return 0
        return self._cycles + self._max_seq - self._base_seq + 1 - self._received

    @property
    def jitter(self):
        return self._jitter16 >> 4

    @property
    def keyframes(self):
        return self._keyframes

    @property
    def gop_overflows(self):
        return self._gop_overflows

    @property
    def gop_packets(self):
        return len(self._gop)

    @property
    def gop_bytes(self):
        return self._gop_bytes

    @property
    def last_keyframe_at(self):
        return self._last_keyframe_at if self._has_keyframe_at else None

    @property
    def last_packet_at(self):
        return self._last_packet_at if self._has_packet_at else None

    @property
    def last_timestamp(self):
        return self._last_timestamp if self._has_timestamp else None

    @property
    def last_sr(self):
        return self._last_sr

    @property
    def sps(self):
        return self._sps

    @property
    def pps(self):
        return self._pps

    @property
    def bytes(self):
        return self._bytes
