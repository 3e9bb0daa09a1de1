"""RTP to media frames (access units) for the sinks that need whole frames: the HLS segmenter, the
recorder, the transcoder, snapshots.

This is the readable Python twin of media/_native/depacketize.pyx. Both modules have the same API and give
the same frames, counters and exceptions (same messages) for the same input; tests/test_depacketize.py and
tests/test_depacketize_fuzz.py hold them to it. Nothing here does I/O or reads a clock.

RFC 6184 section 5 (H.264: single NAL units, STAP-A, FU-A; output is Annex B with 4-byte start codes),
RFC 7741 section 4 (VP8 payload descriptor and payload header), RFC 6386 section 9.1 (VP8 keyframe header),
RFC 7587 (Opus: one packet, one frame), RFC 3550 appendix A.1 (sequence numbers). The H.264 and VP8
payloads are read by media.payload.

How packets become frames
- A frame is the packets of one RTP timestamp, from its first packet to the packet with the marker bit,
  in sequence order. Packets may arrive in any order; up to `max_pending_frames` frames are assembled at
  once. A frame is COMPLETE when its lowest-numbered packet starts a frame, its highest-numbered packet
  carries the marker bit, and every sequence number in between has arrived. "Starts a frame" is, for VP8,
  S=1 with PID=0; for H.264, the first NAL unit of the packet (single, the first one of a STAP-A, or the
  first fragment of an FU-A) is an SEI, SPS, PPS or access unit delimiter (types 6-9) or a slice whose
  first_mb_in_slice is 0 (types 1 and 5 with the first bit after the NAL header set).
- A complete frame is emitted as soon as nothing can be missing before it either: its first packet
  follows the last finished frame (or a packet of another pending frame), or some later packet has
  arrived since (the first frame of a stream, or one after a loss, thus comes out with the next packet:
  a reordered packet ahead of it, such as the STAP-A with SPS and PPS before an IDR, still gets in).
  Frames come out in sequence order: when a frame is emitted, the pending frames older than it are
  emitted first if complete, else dropped (their gap stayed open while a later frame completed). The
  oldest pending frame is also finished (emitted if complete, else dropped) when there are more than
  `max_pending_frames` of them or more than MAX_PENDING_PACKETS packets wait, and a frame is dropped as
  soon as its output passes `max_frame_bytes`.
- Dropping, not concealing: a frame with a gap, without its end (no marker) or with a malformed packet is
  never emitted, so every emitted frame has complete=True (the attribute is there for a future policy).
  Each dropped frame counts in `dropped_frames`.
- Video: after a drop, or when sequence numbers are missing between the last frame and a new one (a whole
  frame may have been lost), `waiting_keyframe` is set and frames are dropped until a keyframe is emitted:
  decoders cannot use frames whose references are broken. A new depacketizer, a new SSRC and a sequence
  number restart also wait for a keyframe. Opus frames are independent: nothing waits.
- Packets that arrive after their frame was emitted or dropped (a sequence number at or below the last
  finished frame's end, or that frame's timestamp), duplicates, packets with an empty payload (RTP
  padding only), H.264 STAP-B, MTAP16, MTAP24, FU-B and NAL unit types 0, 30 and 31 are counted in
  `ignored_packets`; the ignored H.264 types still fill their place in their frame. A padding-only packet
  right after the last finished frame moves that frame's end on, so that it does not look like loss.
- Malformed payloads make their frame broken (dropped): a VP8 descriptor cut short, a VP8 keyframe
  whose payload header is cut short or lacks the 9d 01 2a start code, a STAP-A whose lengths do not end
  exactly at the end of the payload (or that is empty or holds a type 0 or aggregation NAL unit), an FU-A
  shorter than 3 bytes or of type 0 or 24-31, FU-A fragments that do not run start ... end with one type.
- Sequence numbers follow RFC 3550 A.1: a jump of MAX_DROPOUT or more forward (or MAX_MISORDER or more
  back) sets the packet aside (ignored) unless it is the successor of the previous set-aside packet, which
  restarts the numbering. A new SSRC restarts too. A restart drops the pending frames (counted).
- A broken RTP header raises ValueError with media.rtp.parse_rtp's message and changes nothing.

H.264 keyframes are frames with an IDR slice (type 5). Parameter sets are taken from emitted frames,
unfragmented only (single NAL units and STAP-A); `sps` and `pps` are the last ones. A keyframe that lacks
an SPS or a PPS gets the last known one inserted right before its first slice (an SPS alone goes before
the frame's own PPS; SPS before PPS; an access unit delimiter stays first), so that every keyframe can
start a decoder or a segment; an IDR with no parameter set known at all is emitted as it is. max_frame_bytes bounds the
output before that prepending. VP8 keyframes are frames whose first packet has P=0 in the payload header;
their width and height (14-bit fields; the scale bits are dropped) become `width` and `height`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from media.payload import (
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
from media.rtp import parse_rtp

CODECS = ("VP8", "H264", "opus")
_CODEC_NAMES = {name.lower(): name for name in CODECS}

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MAX_PENDING_PACKETS = 8192  # over every pending frame
MAX_PENDING_FRAMES = 256  # the highest max_pending_frames setting

START_CODE = b"\x00\x00\x00\x01"

# What one packet brings to its frame.
_RAW = 0  # data[start:end] as it is (VP8 partitions, an Opus packet, STAP-A already in Annex B)
_NAL = 1  # one whole NAL unit: start code + data[start:end]
_FU_START = 2  # start code + reconstructed NAL header + data[start:end]
_FU_MIDDLE = 3
_FU_END = 4
_FU_WHOLE = 5  # an FU-A with both S and E set: a whole NAL unit
_IGNORED = 6  # contributes nothing (STAP-B, MTAP, FU-B, reserved types)
_BROKEN = 7  # malformed: its frame cannot be emitted


@dataclass(frozen=True, slots=True)
class Frame:
    """One media frame (an H.264 access unit in Annex B, a VP8 frame, an Opus packet)."""

    data: bytes
    timestamp: int
    keyframe: bool
    sequence_first: int
    sequence_last: int
    complete: bool
    codec: str


class _Packet:
    """One stored packet: what it brings to its frame."""

    __slots__ = (
        "data", "start", "end", "kind", "header", "ts", "begins", "key", "vcl", "pps_vcl", "sps", "pps", "width",
        "height",
    )

    def __init__(self, data: bytes, start: int, end: int, kind: int, ts: int) -> None:
        self.data = data
        self.start = start
        self.end = end
        self.kind = kind
        self.header = 0  # FU-A: the reconstructed NAL header; its type for the other fragments
        self.ts = ts
        self.begins = False  # starts a frame
        self.key = False
        self.vcl = -1  # H.264: where the first slice starts in what this packet brings, -1 for none
        self.pps_vcl = -1  # the same for the first PPS or slice
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        self.width = 0
        self.height = 0

    def size(self) -> int:
        """Bytes this packet adds to the frame's output."""
        n = self.end - self.start
        if self.kind == _NAL:
            return n + 4
        if self.kind == _FU_START or self.kind == _FU_WHOLE:
            return n + 5
        if self.kind == _IGNORED or self.kind == _BROKEN:
            return 0
        return n


class _Pending:
    """A frame being assembled: the sequence numbers of its packets and a few sums."""

    __slots__ = ("ts", "lowest", "highest", "marker", "count", "size", "exts", "ready")

    def __init__(self, ts: int, ext: int) -> None:
        self.ts = ts
        self.lowest = ext
        self.highest = ext
        self.marker: int | None = None
        self.count = 0
        self.size = 0
        self.exts: list[int] = []
        self.ready = False  # whole: starts a frame, ends with the marker, nothing missing in between


def _lowest(frame: _Pending) -> int:
    return frame.lowest


def _index(name: str, value: int, minimum: int, maximum: int) -> int:
    value = operator.index(value)
    if value < minimum or value > maximum:
        raise ValueError(f"{name} out of range: {value}")
    return value


def _h264_packet(data: bytes, pos: int, end: int, ts: int) -> _Packet:
    """RFC 6184 section 5: one H.264 payload (data[pos:end], not empty)."""
    nal_type = data[pos] & 0x1F
    if 1 <= nal_type <= 23:
        p = _Packet(data, pos, end, _NAL, ts)
        p.begins = h264_begins(nal_type, data, pos + 1, end)
        p.key = nal_type == NAL_IDR
        if nal_type <= NAL_IDR:
            p.vcl = p.pps_vcl = 0
        elif nal_type == NAL_PPS:
            p.pps_vcl = 0
        kept = h264_parameter_set(nal_type, end - pos)
        if kept == NAL_SPS:
            p.sps = data[pos:end]
        elif kept == NAL_PPS:
            p.pps = data[pos:end]
        return p
    if nal_type == NAL_STAP_A:
        return _stap_a(data, pos, end, ts)
    if nal_type == NAL_FU_A:
        if end - pos < 3:
            return _Packet(data, pos, pos, _BROKEN, ts)
        fu = data[pos + 1]
        inner = fu & 0x1F
        if inner == 0 or inner > 23:
            return _Packet(data, pos, pos, _BROKEN, ts)
        if fu & FU_START:
            kind = _FU_WHOLE if fu & FU_END else _FU_START
        else:
            kind = _FU_END if fu & FU_END else _FU_MIDDLE
        p = _Packet(data, pos + 2, end, kind, ts)
        p.header = data[pos] & 0xE0 | inner
        p.begins = bool(fu & FU_START) and h264_begins(inner, data, pos + 2, end)
        p.key = inner == NAL_IDR
        if fu & FU_START and inner <= NAL_IDR:
            p.vcl = p.pps_vcl = 0
        elif fu & FU_START and inner == NAL_PPS:
            p.pps_vcl = 0
        return p
    # 0, 30, 31: reserved; 25, 26, 27, 29: STAP-B, MTAP16, MTAP24, FU-B (interleaved mode only).
    return _Packet(data, pos, pos, _IGNORED, ts)


def _stap_a(data: bytes, pos: int, end: int, ts: int) -> _Packet:
    """RFC 6184 section 5.7.1: 16-bit sizes and NAL units, ending exactly at the end of the payload;
    returned as Annex B."""
    out = bytearray()
    sps = pps = None
    key = begins = False
    vcl = pps_vcl = -1
    at = pos + 1
    while at < end:
        size = h264_stap_a_unit(data, at, end)
        if size < 0:
            return _Packet(data, pos, pos, _BROKEN, ts)
        at += 2
        inner = data[at] & 0x1F
        if inner == 0 or inner > 23:
            return _Packet(data, pos, pos, _BROKEN, ts)
        if not out:
            begins = h264_begins(inner, data, at + 1, at + size)
        if vcl < 0 and inner <= NAL_IDR:
            vcl = len(out)
        if pps_vcl < 0 and (inner <= NAL_IDR or inner == NAL_PPS):
            pps_vcl = len(out)
        kept = h264_parameter_set(inner, size)
        if inner == NAL_IDR:
            key = True
        elif kept == NAL_SPS:
            sps = data[at : at + size]
        elif kept == NAL_PPS:
            pps = data[at : at + size]
        out += START_CODE
        out += data[at : at + size]
        at += size
    if not out:
        return _Packet(data, pos, pos, _BROKEN, ts)
    annex_b = bytes(out)
    p = _Packet(annex_b, 0, len(annex_b), _RAW, ts)
    p.begins = begins
    p.key = key
    p.vcl = vcl
    p.pps_vcl = pps_vcl
    p.sps = sps
    p.pps = pps
    return p


def _vp8_packet(data: bytes, pos: int, end: int, ts: int) -> _Packet:
    """RFC 7741 section 4.2: the payload descriptor (media.payload.vp8_payload_start), then the partition
    data. Where the descriptor starts a frame, the frame starts with the payload header (RFC 6386 9.1):
    P=0 marks a keyframe, whose header must be whole (media.payload.vp8_keyframe_header)."""
    broken = _Packet(data, pos, pos, _BROKEN, ts)
    broken.begins = vp8_starts_frame(data[pos])  # so that its frame is dropped at once
    at = vp8_payload_start(data, pos, end)
    if at < 0:
        return broken
    p = _Packet(data, at, end, _RAW, ts)
    if broken.begins:
        p.begins = True
        if at < end and not data[at] & 0x01:
            if not vp8_keyframe_header(data, at, end):
                return broken
            p.key = True
            p.width = vp8_width(data, at)
            p.height = vp8_height(data, at)
    return p


class Depacketizer:
    """RTP packets of one track in, whole frames out: `push(packet)` returns the frames that packet
    completed (usually none or one). See the module documentation for the rules."""

    __slots__ = (
        "_codec",
        "_video",
        "_h264",
        "_clock_rate",
        "_max_frame_bytes",
        "_max_pending_frames",
        "_ssrc",
        "_max_seq",
        "_cycles",
        "_bad_seq",
        "_has_done",
        "_done_ext",
        "_done_ts",
        "_pending",
        "_packets",
        "_waiting",
        "_frames",
        "_keyframes",
        "_dropped",
        "_ignored",
        "_sps",
        "_pps",
        "_width",
        "_height",
    )

    def __init__(self, codec: str, clock_rate: int, max_frame_bytes: int = 4_000_000,
                 max_pending_frames: int = 8) -> None:
        if not isinstance(codec, str):
            raise TypeError(f"codec must be str, not {type(codec).__name__}")
        name = _CODEC_NAMES.get(codec.lower())
        if name is None:
            raise ValueError(f"unsupported codec {codec!r}: expected one of VP8, H264, opus")
        self._codec = name
        self._video = name != "opus"
        self._h264 = name == "H264"
        self._clock_rate = _index("clock_rate", clock_rate, 1, 0xFFFFFFFF)
        self._max_frame_bytes = _index("max_frame_bytes", max_frame_bytes, 1, 0x7FFFFFFF)
        self._max_pending_frames = _index("max_pending_frames", max_pending_frames, 1, MAX_PENDING_FRAMES)
        self.reset()

    def reset(self) -> None:
        """Forget everything: as new (settings kept)."""
        self._frames = 0
        self._keyframes = 0
        self._dropped = 0
        self._ignored = 0
        self._sps: bytes | None = None
        self._pps: bytes | None = None
        self._width: int | None = None
        self._height: int | None = None
        self._ssrc: int | None = None
        self._pending: dict[int, _Pending] = {}  # by RTP timestamp
        self._packets: dict[int, _Packet] = {}  # by extended sequence number
        self._restart(0)

    def _restart(self, seq: int) -> None:
        """A new numbering starts at seq: what is pending is dropped."""
        self._dropped += len(self._pending)
        self._pending.clear()
        self._packets.clear()
        self._max_seq = seq
        self._cycles = 0
        self._bad_seq = RTP_SEQ_MOD + 1  # matches no sequence number
        self._has_done = False
        self._done_ext = 0
        self._done_ts = 0
        self._waiting = self._video

    def push(self, packet: bytes) -> list[Frame]:
        """Take one RTP packet (decrypted) and return the frames it completed, oldest first. A packet
        whose RTP header does not parse raises ValueError and changes nothing."""
        if not isinstance(packet, bytes):
            raise TypeError(f"packet must be bytes, not {type(packet).__name__}")
        header = parse_rtp(packet)
        seq = header.sequence_number
        ts = header.timestamp

        if header.ssrc != self._ssrc:
            self._ssrc = header.ssrc
            self._restart(seq)
            ext = seq
        else:
            udelta = (seq - self._max_seq) & 0xFFFF
            if udelta < MAX_DROPOUT:
                if seq < self._max_seq:
                    self._cycles += RTP_SEQ_MOD
                self._max_seq = seq
                ext = self._cycles + seq
            elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
                if seq != self._bad_seq:
                    self._bad_seq = (seq + 1) & 0xFFFF
                    self._ignored += 1
                    return []
                self._restart(seq)  # two sequential packets: the sender restarted its numbering
                ext = seq
            else:
                ext = self._cycles + seq - (RTP_SEQ_MOD if seq > self._max_seq else 0)

        pos = header.payload_offset
        end = pos + header.payload_length
        late = self._has_done and (ext <= self._done_ext or ts == self._done_ts)
        if late or pos == end or ext in self._packets:
            self._ignored += 1  # late, padding only, or a duplicate
            if not self._video:
                return []
            out = self._settle(ext)
            if self._has_done and ext == self._done_ext + 1 and ext not in self._packets:
                self._done_ext = ext  # right after the last finished frame: not a loss
                if self._pending:
                    out += self._settle(ext)
            return out

        if not self._video:
            return self._opus(packet, pos, end, ts, ext)
        if self._h264:
            p = _h264_packet(packet, pos, end, ts)
        else:
            p = _vp8_packet(packet, pos, end, ts)
        if p.kind == _IGNORED:
            self._ignored += 1
        return self._store(p, ext, header.marker)

    def _opus(self, packet: bytes, pos: int, end: int, ts: int, ext: int) -> list[Frame]:
        self._has_done = True
        self._done_ext = ext
        self._done_ts = ts
        if end - pos > self._max_frame_bytes:
            self._dropped += 1
            return []
        self._frames += 1
        self._keyframes += 1
        seq = ext & 0xFFFF
        return [Frame(packet[pos:end], ts, True, seq, seq, True, self._codec)]

    def _store(self, p: _Packet, ext: int, marker: bool) -> list[Frame]:
        frame = self._pending.get(p.ts)
        if frame is None:
            frame = self._pending[p.ts] = _Pending(p.ts, ext)
        self._packets[ext] = p
        frame.exts.append(ext)
        frame.count += 1
        frame.size += p.size()
        if ext < frame.lowest:
            frame.lowest = ext
        if ext > frame.highest:
            frame.highest = ext
        if marker and (frame.marker is None or ext < frame.marker):
            frame.marker = ext
        if frame.size > self._max_frame_bytes:
            return self._through(frame, False)
        frame.ready = (
            frame.marker == frame.highest
            and frame.count == frame.highest - frame.lowest + 1
            and self._packets[frame.lowest].begins
        )
        return self._settle(ext)

    def _settle(self, ext: int) -> list[Frame]:
        """Emit the newest frame that is whole and known to be: its first packet follows the last finished
        frame or another pending frame's packet, or a later packet (`ext`) has arrived since it completed.
        Then keep within the bounds."""
        target = None
        for f in self._pending.values():
            if f.ready and (
                f.highest < ext
                or self._has_done and f.lowest == self._done_ext + 1
                or f.lowest - 1 in self._packets
            ) and (target is None or f.lowest > target.lowest):
                target = f
        out = [] if target is None else self._through(target, True)
        while len(self._pending) > self._max_pending_frames or len(self._packets) > MAX_PENDING_PACKETS:
            oldest = min(self._pending.values(), key=_lowest)
            out += self._through(oldest, oldest.ready)
        return out

    def _through(self, target: _Pending, emit: bool) -> list[Frame]:
        """Finish every pending frame up to `target`, in order: the whole ones are emitted, the others
        dropped (their gaps stayed open while a later frame completed); then `target`."""
        out: list[Frame] = []
        for f in sorted((f for f in self._pending.values() if f.lowest < target.lowest), key=_lowest):
            out += self._finish(f, f.ready)
        return out + self._finish(target, emit)

    def _finish(self, frame: _Pending, emit: bool) -> list[Frame]:
        lost_before = self._has_done and frame.lowest != self._done_ext + 1
        del self._pending[frame.ts]
        self._done_ext = max(self._done_ext, frame.highest) if self._has_done else frame.highest
        self._has_done = True
        self._done_ts = frame.ts
        if not emit:
            for ext in frame.exts:
                del self._packets[ext]
            return self._drop()
        packets = [self._packets.pop(ext) for ext in range(frame.lowest, frame.highest + 1)]
        if self._h264:
            data, key, sps, pps, vcl, pps_vcl = self._h264_frame(packets)
        else:
            data, key, sps, pps, vcl, pps_vcl = self._vp8_frame(packets)
        if data is None or (self._waiting or lost_before) and not key:
            return self._drop()
        self._waiting = False
        if self._h264:
            if key and (sps is None or pps is None):
                # Decoders and muxers need the parameter sets at every keyframe: the last known ones go
                # right before the first slice (after an access unit delimiter, SEI and its own ones), or
                # an SPS alone before the frame's own PPS.
                missing = b""
                if sps is None and self._sps is not None:
                    missing += START_CODE + self._sps
                if pps is None and self._pps is not None:
                    missing += START_CODE + self._pps
                at = vcl if pps is None else pps_vcl
                data = data[:at] + missing + data[at:]
            if sps is not None:
                self._sps = sps
            if pps is not None:
                self._pps = pps
        elif key:
            self._width = packets[0].width
            self._height = packets[0].height
        self._frames += 1
        if key:
            self._keyframes += 1
        return [Frame(data, frame.ts, key, frame.lowest & 0xFFFF, frame.highest & 0xFFFF, True, self._codec)]

    def _drop(self) -> list[Frame]:
        self._dropped += 1
        self._waiting = self._video
        return []

    @staticmethod
    def _vp8_frame(packets: list[_Packet]) -> tuple[bytes | None, bool, None, None, int, int]:
        parts = []
        for p in packets:
            if p.kind == _BROKEN:
                return None, False, None, None, 0, 0
            parts.append(p.data[p.start : p.end])
        return b"".join(parts), packets[0].key, None, None, 0, 0

    @staticmethod
    def _h264_frame(
        packets: list[_Packet],
    ) -> tuple[bytes | None, bool, bytes | None, bytes | None, int, int]:
        """(Annex B, keyframe, last SPS, last PPS, offset of the first slice, offset of the first PPS or
        slice) from the packets in sequence order; None for the data when the FU-A fragments do not add
        up."""
        out = bytearray()
        key = False
        sps = pps = None
        vcl = pps_vcl = -1
        fu_type = -1  # the type of the FU-A being reassembled, -1 outside one
        for p in packets:
            kind = p.kind
            if kind == _BROKEN:
                return None, False, None, None, 0, 0
            if kind == _FU_MIDDLE or kind == _FU_END:
                if fu_type != p.header & 0x1F:
                    return None, False, None, None, 0, 0
                if kind == _FU_END:
                    fu_type = -1
            elif fu_type != -1:
                return None, False, None, None, 0, 0  # a fragmented NAL unit interrupted
            elif kind == _FU_START:
                fu_type = p.header & 0x1F
            if vcl < 0 and p.vcl >= 0:
                vcl = len(out) + p.vcl
            if pps_vcl < 0 and p.pps_vcl >= 0:
                pps_vcl = len(out) + p.pps_vcl
            if kind == _NAL:
                out += START_CODE
            elif kind == _FU_START or kind == _FU_WHOLE:
                out += START_CODE
                out.append(p.header)
            out += p.data[p.start : p.end]
            key = key or p.key
            if p.sps is not None:
                sps = p.sps
            if p.pps is not None:
                pps = p.pps
        if fu_type != -1:
            return None, False, None, None, 0, 0
        return bytes(out), key, sps, pps, max(vcl, 0), max(pps_vcl, 0)

    # --- queries -------------------------------------------------------------------------------------

    @property
    def codec(self) -> str:
        """"VP8", "H264" or "opus"."""
        return self._codec

    @property
    def clock_rate(self) -> int:
        return self._clock_rate

    @property
    def max_frame_bytes(self) -> int:
        return self._max_frame_bytes

    @property
    def max_pending_frames(self) -> int:
        return self._max_pending_frames

    @property
    def frames(self) -> int:
        """Frames emitted."""
        return self._frames

    @property
    def keyframes(self) -> int:
        """Keyframes emitted (every Opus frame is one)."""
        return self._keyframes

    @property
    def dropped_frames(self) -> int:
        return self._dropped

    @property
    def ignored_packets(self) -> int:
        return self._ignored

    @property
    def waiting_keyframe(self) -> bool:
        """Video only: frames are dropped until the next keyframe."""
        return self._waiting

    @property
    def pending_frames(self) -> int:
        return len(self._pending)

    @property
    def pending_packets(self) -> int:
        return len(self._packets)

    @property
    def sps(self) -> bytes | None:
        """The last H.264 sequence parameter set NAL unit of an emitted frame (header byte included)."""
        return self._sps

    @property
    def pps(self) -> bytes | None:
        """The last H.264 picture parameter set NAL unit of an emitted frame (header byte included)."""
        return self._pps

    @property
    def width(self) -> int | None:
        """VP8: the width of the last emitted keyframe, None before the first."""
        return self._width

    @property
    def height(self) -> int | None:
        return self._height
