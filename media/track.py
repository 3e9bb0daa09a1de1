"""The ingest state of one published track: keyframe detection, the NACK packet cache, the GOP cache for
late joiners and receive statistics, updated once per received RTP packet.

This is the readable Python twin of media/_native/track.pyx. Both modules have the same API and raise the
same exceptions with the same messages for the same input; tests/test_track.py holds them to it. Nothing
here does I/O, reads a clock or imports asyncio: time comes in as the `now` argument (seconds).

RFC 3550 appendix A.1 (sequence number validation), A.3 (loss), A.8 (interarrival jitter) and 6.4.1
(report block fields), RFC 4585 (the cache that answers generic NACKs), RFC 7741 section 4 (VP8 payload
descriptor and header), RFC 6184 section 5 (H.264 single NAL units, STAP-A, FU-A), the last two read by
media.payload.

What counts as broken:
- A packet whose RTP header does not parse (media.rtp.parse_rtp) raises ValueError with parse_rtp's
  message and changes no state.
- A payload that does not parse (a truncated VP8 descriptor, a STAP-A whose lengths do not add up, a
  one-byte FU-A, an empty or padding-only payload) is taken as an ordinary packet that starts no keyframe
  and carries no parameter sets. It is still counted, cached and, inside a GOP, kept.
"""

from __future__ import annotations

import math
import operator

from media.payload import h264_keyframe_start, vp8_keyframe_start
from media.rtp import parse_rtp

# push() flags.
KEYFRAME = 0x01  # this packet starts a keyframe: a new GOP begins here
SPS_PPS = 0x02  # H.264 sequence or picture parameter set in this packet
NEW_SSRC = 0x04  # first packet of a new source (also the first packet after creation or reset())
OUT_OF_ORDER = 0x08  # older than the highest sequence number seen (late, reordered)
DUPLICATE = 0x10  # already received; nothing else was done with it
SEQ_JUMP = 0x20  # sequence number jumped (RFC 3550 A.1): alone, the packet was set aside; else a restart

# RFC 3550 appendix A.1.
RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100

CODECS = ("VP8", "H264", "opus")
_CODEC_NAMES = {name.lower(): name for name in CODECS}

_NO_BAD_SEQ = RTP_SEQ_MOD + 1  # A.1: a value no 16-bit sequence number can match
_TWO_32 = 1 << 32

# How push() classified a packet's sequence number.
_FIRST = 0
_IN_ORDER = 1
_LATE = 2


def _index(name: str, value: int, maximum: int) -> int:
    value = operator.index(value)
    if value < 0 or value > maximum:
        raise ValueError(f"{name} out of range: {value}")
    return value


def _seconds(name: str, value: float) -> float:
    """A time in seconds as a finite float. Accepts what a C double accepts (floats, ints, anything with
    __float__ or __index__), with the native module's TypeError for anything else."""
    if type(value) is float:
        seconds = value
    elif hasattr(type(value), "__float__") or hasattr(type(value), "__index__"):
        seconds = float(value)
    else:
        raise TypeError(f"must be real number, not {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValueError(f"{name} out of range: {value!r}")
    return seconds


class IngestTrack:
    """The per-packet state of one received track (one SSRC at a time).

    `push(packet, now)` takes every received RTP packet and returns flags (KEYFRAME, SPS_PPS, NEW_SSRC,
    OUT_OF_ORDER, DUPLICATE, SEQ_JUMP). The track keeps references to the packets (bytes, immutable):

    - a packet cache of the last `cache_size` sequence numbers, for NACK retransmission: `get(seq)`;
    - for video, the GOP: the packets from the last keyframe start onward in arrival order, so that a
      late joiner starts with a picture: `gop()`. At `gop_max_packets` packets or `gop_max_bytes` bytes
      it stops growing (counted in `gop_overflows`) until the next keyframe start. Padding-only packets
      and packets older than the keyframe start are not kept in it;
    - for H.264, the newest SPS and PPS NAL units (`sps`, `pps`), for sprop-parameter-sets.

    Keyframe starts: VP8 where S=1, PID=0 and the payload header is a keyframe's; H.264 at a packet with
    SPS or PPS, or the start of an IDR slice, unless the current GOP began at the same RTP timestamp (the
    same access unit: SPS/PPS then IDR, or several IDR slices). An earlier-numbered packet of that access
    unit arriving late becomes the GOP's first packet; a keyframe start that arrives out of order takes
    along the packets after it that already arrived; a late packet of a keyframe older than the current
    GOP's start is neither a start nor kept. Audio (opus) has no keyframes and no GOP.

    Statistics follow RFC 3550 appendix A, without probation: a new source is valid from its first packet.
    A jump of the sequence number by MAX_DROPOUT or more (or back by MAX_MISORDER or more) sets the packet
    aside (SEQ_JUMP alone: not counted, cached or kept); when the next packet confirms the new numbering,
    statistics, packet cache and GOP start again from it (SEQ_JUMP with whatever else applies). Duplicates
    are recognized by the packet cache and not counted. Jitter is updated by in-order packets only, so
    late and retransmitted packets do not inflate it.

    A packet with a new SSRC (the source restarted) starts a new source: sequence state, loss, jitter,
    packet cache, GOP, last keyframe time and the last sender report are forgotten. The track's totals
    (`packets`, `bytes`, `duplicates`, `keyframes`, `gop_overflows`), `last_packet_at` and `sps`/`pps`
    are kept. `reset()` forgets everything.
    """

    __slots__ = (
        "_codec",
        "_video",
        "_h264",
        "_clock_rate",
        "_cache_size",
        "_mask",
        "_gop_max_packets",
        "_gop_max_bytes",
        "_ssrc",
        "_base_seq",
        "_max_seq",
        "_bad_seq",
        "_cycles",
        "_received",
        "_expected_prior",
        "_received_prior",
        "_transit",
        "_jitter16",
        "_last_timestamp",
        "_last_keyframe_at",
        "_last_sr",
        "_cache",
        "_cache_ext",
        "_gop",
        "_gop_bytes",
        "_gop_active",
        "_gop_full",
        "_gop_start_ext",
        "_gop_ts",
        "_packets",
        "_bytes",
        "_duplicates",
        "_keyframes",
        "_gop_overflows",
        "_sps",
        "_pps",
        "_last_packet_at",
    )

    def __init__(
        self,
        codec: str,
        clock_rate: int,
        cache_size: int = 1024,
        gop_max_packets: int = 4096,
        gop_max_bytes: int = 8_000_000,
    ) -> None:
        if not isinstance(codec, str):
            raise TypeError(f"codec must be str, not {type(codec).__name__}")
        name = _CODEC_NAMES.get(codec.lower())
        if name is None:
            raise ValueError(f"unsupported codec {codec!r}: expected one of VP8, H264, opus")
        self._codec = name
        self._video = name != "opus"
        self._h264 = name == "H264"
        self._clock_rate = _index("clock_rate", clock_rate, 0xFFFFFFFF)
        if self._clock_rate == 0:
            raise ValueError("clock_rate out of range: 0")
        size = operator.index(cache_size)
        if size < 1 or size > RTP_SEQ_MOD or size & (size - 1):
            raise ValueError(f"cache_size must be a power of two from 1 to 65536, got {size}")
        self._cache_size = size
        self._mask = size - 1
        self._gop_max_packets = _index("gop_max_packets", gop_max_packets, 0x7FFFFFFF)
        if self._gop_max_packets == 0:
            raise ValueError("gop_max_packets out of range: 0")
        self._gop_max_bytes = _index("gop_max_bytes", gop_max_bytes, 0x7FFFFFFFFFFFFFFF)
        if self._gop_max_bytes == 0:
            raise ValueError("gop_max_bytes out of range: 0")
        self.reset()

    # --- state changes -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything: the track is as new (settings kept)."""
        self._packets = 0
        self._bytes = 0
        self._duplicates = 0
        self._keyframes = 0
        self._gop_overflows = 0
        self._sps: bytes | None = None
        self._pps: bytes | None = None
        self._last_packet_at: float | None = None
        self._last_sr: tuple[int, int, float] | None = None
        self._ssrc: int | None = None
        self._forget_source()

    def _forget_source(self) -> None:
        self._forget_numbering()
        self._last_keyframe_at: float | None = None

    def _forget_numbering(self) -> None:
        """Drop what is tied to the sequence numbering: statistics, packet cache, GOP."""
        self._base_seq = 0
        self._max_seq = 0
        self._bad_seq = _NO_BAD_SEQ
        self._cycles = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._transit = 0
        self._jitter16 = 0
        self._last_timestamp: int | None = None
        self._cache: list[bytes | None] = [None] * self._cache_size
        self._cache_ext = [0] * self._cache_size
        self._gop: list[bytes] = []
        self._gop_bytes = 0
        self._gop_active = False
        self._gop_full = False
        self._gop_start_ext = 0
        self._gop_ts = 0

    def push(self, packet: bytes, now: float) -> int:
        """Take one received RTP packet (decrypted) and return its flags. A packet whose RTP header does
        not parse raises ValueError and changes nothing."""
        if not isinstance(packet, bytes):
            raise TypeError(f"packet must be bytes, not {type(packet).__name__}")
        seconds = _seconds("now", now)
        ticks = seconds * self._clock_rate
        if not math.isfinite(ticks):
            raise ValueError(f"now out of range: {now!r}")
        header = parse_rtp(packet)
        seq = header.sequence_number
        ts = header.timestamp
        self._last_packet_at = seconds

        flags = 0
        if header.ssrc != self._ssrc:
            if self._ssrc is not None:
                self._forget_source()
                self._last_sr = None  # it described the old source
            self._ssrc = header.ssrc
            self._start_numbering(seq)
            flags = NEW_SSRC
            kind = _FIRST
            ext = seq
        else:
            udelta = (seq - self._max_seq) & 0xFFFF
            if udelta == 0:
                self._duplicates += 1
                return DUPLICATE
            if udelta < MAX_DROPOUT:
                kind = _IN_ORDER
                ext = self._cycles + seq + (RTP_SEQ_MOD if seq < self._max_seq else 0)
            elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
                if seq != self._bad_seq:
                    self._bad_seq = (seq + 1) & 0xFFFF
                    return SEQ_JUMP
                # Two sequential packets: the sender restarted its numbering (A.1).
                self._forget_numbering()
                self._start_numbering(seq)
                flags = SEQ_JUMP
                kind = _FIRST
                ext = seq
            else:
                kind = _LATE
                ext = self._cycles + seq - (RTP_SEQ_MOD if seq > self._max_seq else 0)
                slot = seq & self._mask
                if self._cache[slot] is not None and self._cache_ext[slot] == ext:
                    self._duplicates += 1
                    return DUPLICATE
                flags = OUT_OF_ORDER

        if kind == _IN_ORDER:
            if seq < self._max_seq:
                self._cycles += RTP_SEQ_MOD
            self._max_seq = seq
        self._received += 1
        self._packets += 1
        self._bytes += len(packet)

        slot = seq & self._mask
        if self._cache[slot] is None or self._cache_ext[slot] < ext:
            self._cache[slot] = packet
            self._cache_ext[slot] = ext

        if kind != _LATE:
            # A.8: transit time in timestamp units; its change between consecutive packets feeds the
            # jitter estimate, kept scaled by 16 in integers.
            arrival = math.floor(ticks) % _TWO_32
            transit = (arrival - ts) & 0xFFFFFFFF
            if kind == _IN_ORDER:
                d = ((transit - self._transit + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
                self._jitter16 += abs(d) - ((self._jitter16 + 8) >> 4)
            self._transit = transit
            self._last_timestamp = ts

        if self._video:
            pos = header.payload_offset
            end = pos + header.payload_length
            if self._h264:
                idr, sps, pps = h264_keyframe_start(packet, pos, end)
                start = idr
                if sps is not None or pps is not None:
                    flags |= SPS_PPS
                    start = True
                    # A late packet does not replace newer parameter sets.
                    if sps is not None and (kind != _LATE or self._sps is None):
                        self._sps = sps
                    if pps is not None and (kind != _LATE or self._pps is None):
                        self._pps = pps
            else:
                start = vp8_keyframe_start(packet, pos, end)
            flags |= self._keep(packet, ext, ts, start, header.payload_length, seconds)
        return flags

    def _keep(self, packet: bytes, ext: int, ts: int, start: bool, payload_length: int, now: float) -> int:
        """The GOP cache's part of push(): returns KEYFRAME when a new GOP begins with this packet."""
        if start:
            if self._gop_active and ts == self._gop_ts:
                # Another packet of the access unit that began the GOP.
                if ext < self._gop_start_ext:
                    self._gop_start_ext = ext
                    if self._gop_room(len(packet)):
                        self._gop.insert(0, packet)
                        self._gop_bytes += len(packet)
                else:
                    self._append(packet)
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
            self._last_keyframe_at = now
            self._append(packet)
            highest = self._cycles + self._max_seq
            if ext < highest:
                # The keyframe start arrived late: what already arrived after it belongs to its GOP.
                for earlier in old:
                    seq = earlier[2] << 8 | earlier[3]
                    if highest - ((self._max_seq - seq) & 0xFFFF) > ext:
                        self._append(earlier)
            return KEYFRAME
        if payload_length and self._gop_active and ext > self._gop_start_ext:
            self._append(packet)
        return 0

    def _gop_room(self, size: int) -> bool:
        if self._gop_full:
            return False
        if len(self._gop) >= self._gop_max_packets or self._gop_bytes + size > self._gop_max_bytes:
            self._gop_full = True
            self._gop_overflows += 1
            return False
        return True

    def _append(self, packet: bytes) -> None:
        if self._gop_room(len(packet)):
            self._gop.append(packet)
            self._gop_bytes += len(packet)

    def _start_numbering(self, seq: int) -> None:
        # A.1 init_seq().
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = _NO_BAD_SEQ
        self._cycles = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int, now: float) -> None:
        """Record the source's latest RTCP sender report (RFC 3550 section 6.4.1), received at `now`."""
        ntp = _index("ntp_timestamp", ntp_timestamp, 0xFFFFFFFFFFFFFFFF)
        rtp_ts = _index("rtp_timestamp", rtp_timestamp, 0xFFFFFFFF)
        self._last_sr = (ntp, rtp_ts, _seconds("now", now))

    def report_block(
        self, now: float, last_sr_ntp_middle32: int = 0, last_sr_at: float | None = None
    ) -> tuple[int, int, int, int, int, int, int]:
        """The fields of an RTCP reception report block for this source, RFC 3550 section 6.4.1:
        (ssrc, fraction_lost, cumulative_lost, extended_highest_seq, jitter, lsr, dlsr), in the order of
        media.rtcp.RtcpReportBlock. fraction_lost covers the interval since the previous call (A.3);
        cumulative_lost is clamped to 24 bits signed. LSR and DLSR (1/65536 s) come from
        last_sr_ntp_middle32 and last_sr_at when last_sr_at is given, else from on_sender_report(), else 0.
        Raises ValueError before the first packet (there is no source to report on)."""
        now = _seconds("now", now)
        lsr = _index("last_sr_ntp_middle32", last_sr_ntp_middle32, 0xFFFFFFFF)
        sr_at: float | None = None
        if last_sr_at is not None:
            sr_at = _seconds("last_sr_at", last_sr_at)
        elif lsr:
            raise ValueError("last_sr_ntp_middle32 needs last_sr_at")
        if self._ssrc is None:
            raise ValueError("no RTP packet received yet: nothing to report")
        if sr_at is None and self._last_sr is not None:
            lsr = (self._last_sr[0] >> 16) & 0xFFFFFFFF
            sr_at = self._last_sr[2]
        dlsr = 0
        if sr_at is not None:
            delay = (now - sr_at) * 65536.0
            if delay >= 4294967295.0:
                dlsr = 0xFFFFFFFF
            elif delay > 0.0:
                dlsr = int(delay)

        highest = self._cycles + self._max_seq
        expected = highest - self._base_seq + 1
        expected_interval = expected - self._expected_prior
        received_interval = self._received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        cumulative = max(-0x800000, min(0x7FFFFF, expected - self._received))
        return (self._ssrc, fraction, cumulative, highest & 0xFFFFFFFF, self._jitter16 >> 4, lsr, dlsr)

    # --- queries -------------------------------------------------------------------------------------

    def get(self, seq: int) -> bytes | None:
        """The cached packet with exactly this sequence number, or None: never one from an earlier
        cycle of the numbering that happens to share the slot."""
        seq = _index("seq", seq, 0xFFFF)
        packet = self._cache[seq & self._mask]
        if packet is None:
            return None
        want = self._cycles + self._max_seq - ((self._max_seq - seq) & 0xFFFF)
        return packet if self._cache_ext[seq & self._mask] == want else None

    def gop(self) -> list[bytes]:
        """The packets from the last keyframe start onward, in arrival order (empty for audio and before
        the first keyframe); a prefix only when the GOP outgrew its bounds."""
        return list(self._gop)

    @property
    def codec(self) -> str:
        """"VP8", "H264" or "opus"."""
        return self._codec

    @property
    def is_video(self) -> bool:
        return self._video

    @property
    def clock_rate(self) -> int:
        return self._clock_rate

    @property
    def cache_size(self) -> int:
        return self._cache_size

    @property
    def gop_max_packets(self) -> int:
        return self._gop_max_packets

    @property
    def gop_max_bytes(self) -> int:
        return self._gop_max_bytes

    @property
    def ssrc(self) -> int | None:
        """The current source, None before the first packet."""
        return self._ssrc

    @property
    def packets(self) -> int:
        """Packets taken (not duplicates, not set aside), over the track's life."""
        return self._packets

    @property
    def duplicates(self) -> int:
        return self._duplicates

    @property
    def extended_highest_seq(self) -> int | None:
        """Cycles times 65536 plus the highest sequence number (A.1), None before the first packet."""
        return None if self._ssrc is None else self._cycles + self._max_seq

    @property
    def lost(self) -> int:
        """Expected minus received for the current source (A.3): negative when late packets from before
        the first one arrive."""
        if self._ssrc is None:
            return 0
        return self._cycles + self._max_seq - self._base_seq + 1 - self._received

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units (A.8)."""
        return self._jitter16 >> 4

    @property
    def keyframes(self) -> int:
        """GOPs started, over the track's life."""
        return self._keyframes

    @property
    def gop_overflows(self) -> int:
        """GOPs that reached gop_max_packets or gop_max_bytes, over the track's life."""
        return self._gop_overflows

    @property
    def gop_packets(self) -> int:
        return len(self._gop)

    @property
    def gop_bytes(self) -> int:
        return self._gop_bytes

    @property
    def last_keyframe_at(self) -> float | None:
        """`now` of the current GOP's keyframe start, None when there is none."""
        return self._last_keyframe_at

    @property
    def last_packet_at(self) -> float | None:
        """`now` of the last packet whose header parsed (duplicates included)."""
        return self._last_packet_at

    @property
    def last_timestamp(self) -> int | None:
        """RTP timestamp of the newest packet (highest sequence number), None before the first."""
        return self._last_timestamp

    @property
    def last_sr(self) -> tuple[int, int, float] | None:
        """(ntp_timestamp, rtp_timestamp, now) of the source's latest sender report, or None."""
        return self._last_sr

    @property
    def sps(self) -> bytes | None:
        """The newest H.264 sequence parameter set NAL unit (header byte included)."""
        return self._sps

    @property
    def pps(self) -> bytes | None:
        """The newest H.264 picture parameter set NAL unit (header byte included)."""
        return self._pps

    # Last, so that the name `bytes` means the builtin everywhere above.
    @property
    def bytes(self) -> int:
        """Bytes of the packets taken (whole packets), over the track's life."""
        return self._bytes
