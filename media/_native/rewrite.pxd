# One subscriber's RTP rewrite state and the rewrite itself, with no Python objects in it: shared by
# rtp.pyx (RtpRewriter, one packet per call) and fanout.pyx (every subscriber of a packet in one loop with
# the GIL released). Inline: each module compiles its own copy from this one source.
# Semantics and their reasons: media/rtp.py RtpRewriter (the readable twin).

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from media._native.wire cimport _rd16, _rd32, _wr16, _wr32


cdef struct RewriteState:
    uint32_t out_ssrc
    uint8_t out_payload_type
    uint32_t clock_rate
    uint32_t switch_ts_step
    unsigned long long packet_count
    unsigned long long byte_count
    unsigned long long switches
    uint16_t seq_offset
    uint32_t ts_offset
    bint has_source
    uint32_t in_ssrc
    bint has_last
    uint16_t last_seq
    uint32_t last_timestamp
    bint has_now
    double last_now


cdef inline void write_rtp_fields(uint8_t* p, uint8_t payload_type, uint16_t seq, uint32_t ts,
                                  uint32_t ssrc) noexcept nogil:
    """Payload type (marker bit kept), sequence number, timestamp and SSRC of a fixed RTP header."""
    p[1] = (p[1] & 0x80) | payload_type
    _wr16(p + 2, seq)
    _wr32(p + 4, ts)
    _wr32(p + 8, ssrc)


cdef inline uint16_t rewrite_packet(RewriteState* s, uint8_t* p, Py_ssize_t n, bint has_now,
                                    double now) noexcept nogil:
    """Rewrite one packet in place (its fixed header checked by the caller: n >= 12, version 2) and
    return its output sequence number."""
    cdef uint16_t in_seq, seq
    cdef uint32_t in_ts, in_ssrc, ts, step
    cdef double ticks
    in_seq = _rd16(p + 2)
    in_ts = _rd32(p + 4)
    in_ssrc = _rd32(p + 8)
    if not s.has_source or in_ssrc != s.in_ssrc:
        if s.has_last:
            step = s.switch_ts_step
            if has_now and s.has_now:
                ticks = (now - s.last_now) * <double>s.clock_rate
                if ticks >= 1.0:
                    if ticks > 2147483647.0:
                        ticks = 2147483647.0
                    step = <uint32_t>ticks
            s.seq_offset = <uint16_t>(s.last_seq + 1 - in_seq)
            s.ts_offset = s.last_timestamp + step - in_ts
            s.switches += 1
        s.in_ssrc = in_ssrc
        s.has_source = True
    seq = <uint16_t>(in_seq + s.seq_offset)
    ts = in_ts + s.ts_offset
    if not s.has_last or 0 < <uint16_t>(seq - s.last_seq) < 0x8000:
        s.last_seq = seq
        s.last_timestamp = ts
        s.has_last = True
        if has_now:
            s.last_now = now
            s.has_now = True
    write_rtp_fields(p, s.out_payload_type, seq, ts, s.out_ssrc)
    s.packet_count += 1
    s.byte_count += <unsigned long long>n
    return seq


cdef inline void retransmit_packet(RewriteState* s, uint8_t* p) noexcept nogil:
    """A cached packet again with the offsets in force, the state unchanged (same SSRC and numbering:
    the subscriber's NACK asked for exactly this sequence number)."""
    write_rtp_fields(p, s.out_payload_type, <uint16_t>(_rd16(p + 2) + s.seq_offset),
                     _rd32(p + 4) + s.ts_offset, s.out_ssrc)
