# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, autotestdict=False
"""RTP to media frames, in Cython: the fast twin of media/depacketize.py.

Same API, same frames, counters, exceptions and messages as the Python module (tests/test_depacketize.py
and tests/test_depacketize_fuzz.py hold them to it); the documentation of the behaviour lives there. This
file is compiled with bounds checking off: every read of a packet goes through a raw pointer after an
explicit length check, so each check below is what stands between hostile input and an out-of-bounds
read. Frames are assembled with one allocation and memcpy from the stored packets.

RFC 6184 section 5, RFC 7741 section 4 and RFC 6386 section 9.1 (media/_native/payload.pxd); RFC 7587;
RFC 3550 appendix A.1.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from media._native.payload cimport (
    FU_END,
    FU_START,
    NAL_FU_A,
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    NAL_STAP_A,
    h264_begins,
    h264_parameter_set,
    h264_stap_a_unit,
    vp8_height,
    vp8_keyframe_header,
    vp8_payload_start,
    vp8_starts_frame,
    vp8_width,
)
from media._native.rtp_header cimport _rd16, _rd32, _rtp_payload
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy

import operator

CODECS = ("VP8", "H264", "opus")
_CODEC_NAMES = {name.lower(): name for name in CODECS}

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MAX_PENDING_PACKETS = 8192
MAX_PENDING_FRAMES = 256

START_CODE = b"\x00\x00\x00\x01"

cdef enum:
    _RAW = 0
    _NAL = 1
    _FU_START = 2
    _FU_MIDDLE = 3
    _FU_END = 4
    _FU_WHOLE = 5
    _IGNORED = 6
    _BROKEN = 7
    _SEQ_MOD = 65536
    _DROPOUT = 3000
    _MISORDER = 100
    _NO_BAD_SEQ = 65537
    _MAX_PACKETS = 8192


cdef object _index(str name, object value, object minimum, object maximum):
    value = operator.index(value)
    if value < minimum or value > maximum:
        raise ValueError(f"{name} out of range: {value}")
    return value


cdef inline uint8_t* _annex_b(uint8_t* w, bytes nal) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(nal)
    w[0] = 0
    w[1] = 0
    w[2] = 0
    w[3] = 1
    memcpy(w + 4, PyBytes_AS_STRING(nal), n)
    return w + 4 + n


@cython.final
cdef class Frame:
    """One media frame (an H.264 access unit in Annex B, a VP8 frame, an Opus packet)."""

    cdef readonly bytes data
    cdef readonly object timestamp
    cdef readonly bint keyframe
    cdef readonly object sequence_first
    cdef readonly object sequence_last
    cdef readonly bint complete
    cdef readonly str codec

    def __init__(self, data, timestamp, keyframe, sequence_first, sequence_last, complete, codec):
        self.data = data
        self.timestamp = timestamp
        self.keyframe = keyframe
        self.sequence_first = sequence_first
        self.sequence_last = sequence_last
        self.complete = complete
        self.codec = codec

    cdef tuple _fields(self):
        return (self.data, self.timestamp, self.keyframe, self.sequence_first, self.sequence_last,
                self.complete, self.codec)

    def __eq__(self, other):
        if type(other) is not Frame:
            return NotImplemented
        return self._fields() == (<Frame>other)._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        return (f"Frame(data={self.data!r}, timestamp={self.timestamp!r}, keyframe={self.keyframe!r}, "
                f"sequence_first={self.sequence_first!r}, sequence_last={self.sequence_last!r}, "
                f"complete={self.complete!r}, codec={self.codec!r})")


cdef Frame _frame(bytes data, uint32_t ts, bint key, uint16_t first, uint16_t last, str codec):
    cdef Frame f = Frame.__new__(Frame)
    f.data = data
    f.timestamp = ts
    f.keyframe = key
    f.sequence_first = first
    f.sequence_last = last
    f.complete = True
    f.codec = codec
    return f


@cython.final
@cython.freelist(64)
cdef class _Packet:
    cdef bytes data
    cdef Py_ssize_t start
    cdef Py_ssize_t end
    cdef int kind
    cdef uint8_t header
    cdef bint begins
    cdef bint key
    cdef Py_ssize_t vcl
    cdef Py_ssize_t pps_vcl
    cdef object sps
    cdef object pps
    cdef int width
    cdef int height

    cdef inline Py_ssize_t size(self) noexcept:
        cdef Py_ssize_t n = self.end - self.start
        if self.kind == _NAL:
            return n + 4
        if self.kind == _FU_START or self.kind == _FU_WHOLE:
            return n + 5
        if self.kind == _IGNORED or self.kind == _BROKEN:
            return 0
        return n


cdef inline _Packet _packet(bytes data, Py_ssize_t start, Py_ssize_t end, int kind):
    cdef _Packet p = _Packet.__new__(_Packet)
    p.data = data
    p.start = start
    p.end = end
    p.kind = kind
    p.vcl = -1
    p.pps_vcl = -1
    return p


@cython.final
cdef class _Pending:
    cdef object ts
    cdef long long lowest
    cdef long long highest
    cdef long long marker
    cdef bint has_marker
    cdef Py_ssize_t count
    cdef long long size
    cdef list exts
    cdef bint ready


def _lowest(_Pending frame):
    return frame.lowest


cdef _Packet _h264_packet(bytes data, const uint8_t* p, Py_ssize_t pos, Py_ssize_t end):
    cdef int nal_type = p[pos] & 0x1F
    cdef int inner, kind, kept
    cdef uint8_t fu
    cdef _Packet pk
    if 1 <= nal_type <= 23:
        pk = _packet(data, pos, end, _NAL)
        pk.begins = h264_begins(nal_type, p, pos + 1, end)
        pk.key = nal_type == NAL_IDR
        if nal_type <= NAL_IDR:
            pk.vcl = 0
            pk.pps_vcl = 0
        elif nal_type == NAL_PPS:
            pk.pps_vcl = 0
        kept = h264_parameter_set(nal_type, end - pos)
        if kept == NAL_SPS:
            pk.sps = PyBytes_FromStringAndSize(<const char*>p + pos, end - pos)
        elif kept == NAL_PPS:
            pk.pps = PyBytes_FromStringAndSize(<const char*>p + pos, end - pos)
        return pk
    if nal_type == NAL_STAP_A:
        return _stap_a(data, p, pos, end)
    if nal_type == NAL_FU_A:
        if end - pos < 3:
            return _packet(data, pos, pos, _BROKEN)
        fu = p[pos + 1]
        inner = fu & 0x1F
        if inner == 0 or inner > 23:
            return _packet(data, pos, pos, _BROKEN)
        if fu & FU_START:
            kind = _FU_WHOLE if fu & FU_END else _FU_START
        else:
            kind = _FU_END if fu & FU_END else _FU_MIDDLE
        pk = _packet(data, pos + 2, end, kind)
        pk.header = (p[pos] & 0xE0) | inner
        pk.begins = (fu & FU_START) != 0 and h264_begins(inner, p, pos + 2, end)
        pk.key = inner == NAL_IDR
        if (fu & FU_START) and inner <= NAL_IDR:
            pk.vcl = 0
            pk.pps_vcl = 0
        elif (fu & FU_START) and inner == NAL_PPS:
            pk.pps_vcl = 0
        return pk
    return _packet(data, pos, pos, _IGNORED)


cdef _Packet _stap_a(bytes data, const uint8_t* p, Py_ssize_t pos, Py_ssize_t end):
    cdef Py_ssize_t at = pos + 1, size, total = 0, first_at = -1, sps = -1, sps_len = 0, pps = -1, pps_len = 0
    cdef Py_ssize_t vcl = -1, pps_vcl = -1
    cdef int inner, kept
    cdef bint key = False
    # First pass: check the lengths and find the parameter sets; second: copy out as Annex B.
    while at < end:
        size = h264_stap_a_unit(p, at, end)
        if size < 0:
            return _packet(data, pos, pos, _BROKEN)
        at += 2
        inner = p[at] & 0x1F
        if inner == 0 or inner > 23:
            return _packet(data, pos, pos, _BROKEN)
        if first_at < 0:
            first_at = at
        if vcl < 0 and inner <= NAL_IDR:
            vcl = total
        if pps_vcl < 0 and (inner <= NAL_IDR or inner == NAL_PPS):
            pps_vcl = total
        kept = h264_parameter_set(inner, size)
        if inner == NAL_IDR:
            key = True
        elif kept == NAL_SPS:
            sps = at
            sps_len = size
        elif kept == NAL_PPS:
            pps = at
            pps_len = size
        total += 4 + size
        at += size
    if first_at < 0:
        return _packet(data, pos, pos, _BROKEN)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t* w = <uint8_t*>PyBytes_AS_STRING(out)
    at = pos + 1
    while at < end:
        size = _rd16(p + at)
        at += 2
        w[0] = 0
        w[1] = 0
        w[2] = 0
        w[3] = 1
        memcpy(w + 4, p + at, size)
        w += 4 + size
        at += size
    cdef _Packet pk = _packet(out, 0, total, _RAW)
    pk.begins = h264_begins(p[first_at] & 0x1F, p, first_at + 1, first_at + _rd16(p + first_at - 2))
    pk.key = key
    pk.vcl = vcl
    pk.pps_vcl = pps_vcl
    if sps >= 0:
        pk.sps = PyBytes_FromStringAndSize(<const char*>p + sps, sps_len)
    if pps >= 0:
        pk.pps = PyBytes_FromStringAndSize(<const char*>p + pps, pps_len)
    return pk


cdef _Packet _vp8_packet(bytes data, const uint8_t* p, Py_ssize_t pos, Py_ssize_t end):
    cdef Py_ssize_t at
    cdef _Packet pk
    cdef _Packet broken = _packet(data, pos, pos, _BROKEN)
    broken.begins = vp8_starts_frame(p[pos])  # so that its frame is dropped at once
    at = vp8_payload_start(p, pos, end)
    if at < 0:
        return broken
    pk = _packet(data, at, end, _RAW)
    if broken.begins:
        pk.begins = True
        if at < end and not (p[at] & 0x01):
            if not vp8_keyframe_header(p, at, end):
                return broken
            pk.key = True
            pk.width = vp8_width(p, at)
            pk.height = vp8_height(p, at)
    return pk


@cython.final
cdef class Depacketizer:
    """RTP packets of one track in, whole frames out; see media/depacketize.py."""

    cdef str _codec
    cdef bint _video
    cdef bint _h264
    cdef uint32_t _clock_rate
    cdef long long _max_frame_bytes
    cdef Py_ssize_t _max_pending_frames
    cdef bint _has_ssrc
    cdef uint32_t _ssrc
    cdef uint16_t _max_seq
    cdef long long _cycles
    cdef uint32_t _bad_seq
    cdef bint _has_done
    cdef long long _done_ext
    cdef uint32_t _done_ts
    cdef dict _pending
    cdef dict _packets
    cdef bint _waiting
    cdef long long _frames
    cdef long long _keyframes
    cdef long long _dropped
    cdef long long _ignored
    cdef object _sps
    cdef object _pps
    cdef object _width
    cdef object _height

    def __init__(self, codec, clock_rate, max_frame_bytes=4_000_000, max_pending_frames=8):
        if not isinstance(codec, str):
            raise TypeError(f"codec must be str, not {type(codec).__name__}")
        name = _CODEC_NAMES.get(codec.lower())
        if name is None:
            raise ValueError(f"unsupported codec {codec!r}: expected one of VP8, H264, opus")
        clock = _index("clock_rate", clock_rate, 1, 0xFFFFFFFF)
        max_bytes = _index("max_frame_bytes", max_frame_bytes, 1, 0x7FFFFFFF)
        max_frames = _index("max_pending_frames", max_pending_frames, 1, MAX_PENDING_FRAMES)
        self._codec = name
        self._video = name != "opus"
        self._h264 = name == "H264"
        self._clock_rate = clock
        self._max_frame_bytes = max_bytes
        self._max_pending_frames = max_frames
        self._pending = {}
        self._packets = {}
        self.reset()

    def reset(self):
        """Forget everything: as new (settings kept)."""
        self._frames = 0
        self._keyframes = 0
        self._dropped = 0
        self._ignored = 0
        self._sps = None
        self._pps = None
        self._width = None
        self._height = None
        self._has_ssrc = False
        self._pending = {}
        self._packets = {}
        self._restart(0)

    cdef int _restart(self, uint16_t seq) except -1:
        self._dropped += len(self._pending)
        self._pending.clear()
        self._packets.clear()
        self._max_seq = seq
        self._cycles = 0
        self._bad_seq = _NO_BAD_SEQ
        self._has_done = False
        self._done_ext = 0
        self._done_ts = 0
        self._waiting = self._video
        return 0

    def push(self, packet):
        """Take one RTP packet (decrypted) and return the frames it completed, oldest first. A packet
        whose RTP header does not parse raises ValueError and changes nothing."""
        if not isinstance(packet, bytes):
            raise TypeError(f"packet must be bytes, not {type(packet).__name__}")
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(packet)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(packet)
        cdef Py_ssize_t offset, length
        _rtp_payload(p, n, &offset, &length)
        return self._push(<bytes>packet, p, offset, offset + length)

    cdef list _push(self, bytes packet, const uint8_t* p, Py_ssize_t pos, Py_ssize_t end):
        cdef uint16_t seq = _rd16(p + 2)
        cdef uint32_t ts = _rd32(p + 4)
        cdef uint32_t ssrc = _rd32(p + 8)
        cdef bint marker = (p[1] & 0x80) != 0
        cdef uint16_t udelta
        cdef long long ext
        cdef bint late, stored
        cdef _Packet pk
        if not self._has_ssrc or ssrc != self._ssrc:
            self._has_ssrc = True
            self._ssrc = ssrc
            self._restart(seq)
            ext = seq
        else:
            udelta = <uint16_t>(seq - self._max_seq)
            if udelta < _DROPOUT:
                if seq < self._max_seq:
                    self._cycles += _SEQ_MOD
                self._max_seq = seq
                ext = self._cycles + seq
            elif udelta <= _SEQ_MOD - _MISORDER:
                if seq != self._bad_seq:
                    self._bad_seq = (seq + 1) & 0xFFFF
                    self._ignored += 1
                    return []
                self._restart(seq)
                ext = seq
            else:
                ext = self._cycles + seq - (_SEQ_MOD if seq > self._max_seq else 0)

        late = self._has_done and (ext <= self._done_ext or ts == self._done_ts)
        stored = len(self._packets) != 0 and ext in self._packets
        if late or pos == end or stored:
            self._ignored += 1
            if not self._video:
                return []
            out = self._settle(ext)
            if self._has_done and ext == self._done_ext + 1 and not stored:
                self._done_ext = ext
                if self._pending:
                    out += self._settle(ext)
            return out

        if not self._video:
            return self._opus(packet, pos, end, ts, ext)
        if self._h264:
            pk = _h264_packet(packet, p, pos, end)
        else:
            pk = _vp8_packet(packet, p, pos, end)
        if pk.kind == _IGNORED:
            self._ignored += 1
        return self._store(pk, ts, ext, marker)

    cdef list _opus(self, bytes packet, Py_ssize_t pos, Py_ssize_t end, uint32_t ts, long long ext):
        self._has_done = True
        self._done_ext = ext
        self._done_ts = ts
        if end - pos > self._max_frame_bytes:
            self._dropped += 1
            return []
        self._frames += 1
        self._keyframes += 1
        cdef bytes data = PyBytes_FromStringAndSize(PyBytes_AS_STRING(packet) + pos, end - pos)
        return [_frame(data, ts, True, <uint16_t>ext, <uint16_t>ext, self._codec)]

    cdef list _store(self, _Packet pk, uint32_t ts, long long ext, bint marker):
        cdef object key = ts
        cdef _Pending frame
        cdef object found = self._pending.get(key)
        if found is None:
            frame = _Pending.__new__(_Pending)
            frame.ts = key
            frame.lowest = ext
            frame.highest = ext
            frame.exts = []
            self._pending[key] = frame
        else:
            frame = <_Pending>found
        ext_key = ext
        self._packets[ext_key] = pk
        frame.exts.append(ext_key)
        frame.count += 1
        frame.size += pk.size()
        if ext < frame.lowest:
            frame.lowest = ext
        if ext > frame.highest:
            frame.highest = ext
        if marker and (not frame.has_marker or ext < frame.marker):
            frame.marker = ext
            frame.has_marker = True
        if frame.size > self._max_frame_bytes:
            return self._through(frame, False)
        frame.ready = (frame.has_marker and frame.marker == frame.highest
                       and frame.count == frame.highest - frame.lowest + 1
                       and (pk.begins if ext == frame.lowest else (<_Packet>self._packets[frame.lowest]).begins))
        return self._settle(ext)

    cdef list _settle(self, long long ext):
        cdef _Pending target = None, f, oldest
        cdef list out
        for f in self._pending.values():
            if f.ready and (f.highest < ext
                            or (self._has_done and f.lowest == self._done_ext + 1)
                            or (f.lowest - 1) in self._packets):
                if target is None or f.lowest > target.lowest:
                    target = f
        out = [] if target is None else self._through(target, True)
        while len(self._pending) > self._max_pending_frames or len(self._packets) > _MAX_PACKETS:
            oldest = None
            for f in self._pending.values():
                if oldest is None or f.lowest < oldest.lowest:
                    oldest = f
            out += self._through(oldest, oldest.ready)
        return out

    cdef list _through(self, _Pending target, bint emit):
        cdef list out = []
        cdef list older
        cdef _Pending f
        if len(self._pending) > 1:
            older = [f for f in self._pending.values() if (<_Pending>f).lowest < target.lowest]
            if older:
                older.sort(key=_lowest)
                for f in older:
                    out += self._finish(f, f.ready)
        out += self._finish(target, emit)
        return out

    cdef list _finish(self, _Pending frame, bint emit):
        cdef bint lost_before = self._has_done and frame.lowest != self._done_ext + 1
        del self._pending[frame.ts]
        if not self._has_done or frame.highest > self._done_ext:
            self._done_ext = frame.highest
        self._has_done = True
        self._done_ts = frame.ts
        if not emit:
            for ext in frame.exts:
                del self._packets[ext]
            return self._drop()
        cdef Py_ssize_t count = frame.highest - frame.lowest + 1, i
        cdef list packets = [self._packets.pop(ext) for ext in range(frame.lowest, frame.highest + 1)]
        cdef _Packet pk, first = <_Packet>packets[0]
        cdef bint key = False
        cdef object sps = None, pps = None
        cdef int fu_type = -1, kind
        cdef Py_ssize_t total = 0, prefix = 0, vcl_index = -1, pps_vcl_index = -1, size
        # Check the frame, size its output and find its first slice.
        for i in range(count):
            pk = <_Packet>packets[i]
            kind = pk.kind
            if kind == _BROKEN:
                return self._drop()
            if self._h264:
                if kind == _FU_MIDDLE or kind == _FU_END:
                    if fu_type != (pk.header & 0x1F):
                        return self._drop()
                    if kind == _FU_END:
                        fu_type = -1
                elif fu_type != -1:
                    return self._drop()
                elif kind == _FU_START:
                    fu_type = pk.header & 0x1F
                if vcl_index < 0 and pk.vcl >= 0:
                    vcl_index = i
                if pps_vcl_index < 0 and pk.pps_vcl >= 0:
                    pps_vcl_index = i
                if pk.key:
                    key = True
                if pk.sps is not None:
                    sps = pk.sps
                if pk.pps is not None:
                    pps = pk.pps
            total += pk.size()
        if fu_type != -1:
            return self._drop()
        if not self._h264:
            key = first.key
        if (self._waiting or lost_before) and not key:
            return self._drop()
        self._waiting = False
        cdef bint add_sps = False, add_pps = False
        if self._h264 and key:
            add_sps = sps is None and self._sps is not None
            add_pps = pps is None and self._pps is not None
            if add_sps:
                prefix += 4 + PyBytes_GET_SIZE(self._sps)
            if add_pps:
                prefix += 4 + PyBytes_GET_SIZE(self._pps)
        cdef bytes data = PyBytes_FromStringAndSize(NULL, prefix + total)
        cdef uint8_t* w = <uint8_t*>PyBytes_AS_STRING(data)
        cdef const uint8_t* src
        cdef Py_ssize_t before, at_index = vcl_index if pps is None else pps_vcl_index
        if at_index < 0:
            at_index = 0  # (a keyframe always has a slice: only for safety, as the twin's max(vcl, 0))
        for i in range(count):
            pk = <_Packet>packets[i]
            kind = pk.kind
            src = <const uint8_t*>PyBytes_AS_STRING(pk.data) + pk.start
            size = pk.end - pk.start
            if i == at_index and prefix:
                # The last known parameter sets go right before the first slice (or an SPS alone before
                # the frame's own PPS).
                before = pk.vcl if pps is None else pk.pps_vcl
                if before < 0 or before > size:
                    before = 0
                if before:
                    memcpy(w, src, before)
                    w += before
                    src += before
                    size -= before
                if add_sps:
                    w = _annex_b(w, self._sps)
                if add_pps:
                    w = _annex_b(w, self._pps)
            if kind == _NAL or kind == _FU_START or kind == _FU_WHOLE:
                w[0] = 0
                w[1] = 0
                w[2] = 0
                w[3] = 1
                w += 4
                if kind != _NAL:
                    w[0] = pk.header
                    w += 1
            if size > 0:
                memcpy(w, src, size)
                w += size
        if self._h264:
            if sps is not None:
                self._sps = sps
            if pps is not None:
                self._pps = pps
        elif key:
            self._width = first.width
            self._height = first.height
        self._frames += 1
        if key:
            self._keyframes += 1
        return [_frame(data, <uint32_t>frame.ts, key, <uint16_t>frame.lowest, <uint16_t>frame.highest,
                       self._codec)]

    cdef list _drop(self):
        self._dropped += 1
        self._waiting = self._video
        return []

    # --- queries ---

    @property
    def codec(self):
        return self._codec

    @property
    def clock_rate(self):
        return self._clock_rate

    @property
    def max_frame_bytes(self):
        return self._max_frame_bytes

    @property
    def max_pending_frames(self):
        return self._max_pending_frames

    @property
    def frames(self):
        return self._frames

    @property
    def keyframes(self):
        return self._keyframes

    @property
    def dropped_frames(self):
        return self._dropped

    @property
    def ignored_packets(self):
        return self._ignored

    @property
    def waiting_keyframe(self):
        return self._waiting

    @property
    def pending_frames(self):
        return len(self._pending)

    @property
    def pending_packets(self):
        return len(self._packets)

    @property
    def sps(self):
        return self._sps

    @property
    def pps(self):
        return self._pps

    @property
    def width(self):
        return self._width

    @property
    def height(self):
        return self._height

