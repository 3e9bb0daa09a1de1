"""RTP to frames: the Python twin (media/depacketize.py) and the native module (media/_native/depacketize.pyx)
against known answers (access units packetized here, with single NAL units, STAP-A and FU-A at a given MTU;
VP8 frames with every descriptor layout; Opus), loss, reordering, wraps, hostile input, real encoders
(PyAV: libx264 and libvpx, decoded back), and each other. Randomized parity lives in
test_depacketize_fuzz.py.

Known answers use the `dep` fixture (each test runs on both modules); parity tests push the same packets
through both and compare the frames and the whole observable state after every step.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from fractions import Fraction
from types import ModuleType
from typing import Any

import pytest

import media._native.depacketize as native_dep
import media.depacketize as twin_dep
import media.rtp as twin_rtp
from tests.test_track import PPS, RTP_FIXTURES, SPS, filler, load, rtp_packet

MODULES = [twin_dep, native_dep]
PUBLIC_API = ("CODECS RTP_SEQ_MOD MAX_DROPOUT MAX_MISORDER MAX_PENDING_PACKETS MAX_PENDING_FRAMES START_CODE "
              "Frame Depacketizer").split()
PROPERTIES = ("codec clock_rate max_frame_bytes max_pending_frames frames keyframes dropped_frames "
              "ignored_packets waiting_keyframe pending_frames pending_packets sps pps width height").split()
METHODS = ["push", "reset"]
FRAME_FIELDS = "data timestamp keyframe sequence_first sequence_last complete codec".split()

SC = b"\x00\x00\x00\x01"
SSRC = 0x0A0B0C0D
VP8_KEY_HEADER = bytes.fromhex("5002009d012a0005d002")  # P=0, start code, 1280x720
VP8_DELTA_HEADER = bytes.fromhex("310a00")  # P=1


@pytest.fixture(params=MODULES, ids=["twin", "native"])
def dep(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


def as_tuple(frame: Any) -> tuple[Any, ...]:
    return tuple(getattr(frame, name) for name in FRAME_FIELDS)


# --- a tiny packetizer (RFC 6184 non-interleaved mode, RFC 7741) ----------------------------------------


def nal(header: int, size: int, seed: int, first_mb_zero: bool = True) -> bytes:
    """A NAL unit of `size` bytes; for slices the first bit of the body is first_mb_in_slice == 0."""
    body = bytearray(filler(size - 1, seed))
    if body:
        body[0] = body[0] | 0x80 if first_mb_zero else body[0] & 0x7F
    return bytes([header]) + bytes(body)


def h264_payloads(nals: list[bytes], mtu: int = 1200, stap: bool = True) -> list[bytes]:
    """One access unit as RTP payloads: small NAL units aggregated into STAP-A (when `stap`), the rest as
    single NAL unit packets or FU-A fragments of at most `mtu` bytes."""
    out: list[bytes] = []
    i = 0
    while i < len(nals):
        if stap:
            j, size = i, 1
            while j < len(nals) and size + 2 + len(nals[j]) <= mtu:
                size += 2 + len(nals[j])
                j += 1
            if j - i >= 2:
                nri = max(n[0] & 0x60 for n in nals[i:j])
                out.append(bytes([nri | 24]) + b"".join(struct.pack("!H", len(n)) + n for n in nals[i:j]))
                i = j
                continue
        unit = nals[i]
        if len(unit) <= mtu:
            out.append(unit)
        else:
            body = unit[1:]
            chunk = mtu - 2
            pieces = [body[k : k + chunk] for k in range(0, len(body), chunk)]
            for k, piece in enumerate(pieces):
                fu = (0x80 if k == 0 else 0) | (0x40 if k == len(pieces) - 1 else 0) | unit[0] & 0x1F
                out.append(bytes([unit[0] & 0xE0 | 28, fu]) + piece)
        i += 1
    return out


VP8_DESCRIPTORS: dict[str, Callable[[bool, int], bytes]] = {
    "minimal": lambda start, pid: bytes([0x10 if start else 0x00]),
    "x-empty": lambda start, pid: bytes([0x90 if start else 0x80, 0x00]),
    "pid7": lambda start, pid: bytes([0x90 if start else 0x80, 0x80, pid & 0x7F]),
    "pid15": lambda start, pid: bytes([0x90 if start else 0x80, 0x80, 0x80 | pid >> 8 & 0x7F, pid & 0xFF]),
    "full": lambda start, pid: bytes([0xB0 if start else 0xA0, 0xF0, 0x80 | pid >> 8 & 0x7F, pid & 0xFF, 7, 0x65]),
    "tl0-tid": lambda start, pid: bytes([0x90 if start else 0x80, 0x60, 3, 0x40]),
    "keyidx": lambda start, pid: bytes([0x90 if start else 0x80, 0x10, 0x05]),
}


def vp8_payloads(frame: bytes, mtu: int = 1200, form: str = "pid15", picture_id: int = 0) -> list[bytes]:
    descriptor = VP8_DESCRIPTORS[form]
    room = mtu - len(descriptor(True, picture_id))
    return [descriptor(k == 0, picture_id) + frame[k : k + room] for k in range(0, len(frame), room)]


def rtp_frames(payload_lists: list[list[bytes]], seq: int = 1000, ts: int = 90000, step: int = 3000,
               ssrc: int = SSRC) -> list[list[bytes]]:
    """RTP packets per frame: one timestamp per frame, the marker on each frame's last packet."""
    out = []
    for payloads in payload_lists:
        frame = []
        for k, payload in enumerate(payloads):
            frame.append(rtp_packet(seq, ts, ssrc, 102, payload, marker=k == len(payloads) - 1))
            seq += 1
        out.append(frame)
        ts += step
    return out


def idr_unit(seed: int, size: int = 5000, params: bool = True) -> list[bytes]:
    return ([SPS, PPS] if params else []) + [nal(0x65, size, seed)]


def p_unit(seed: int, size: int = 1500) -> list[bytes]:
    return [nal(0x41, size, seed)]


def annex_b(nals: list[bytes]) -> bytes:
    return b"".join(SC + n for n in nals)


def vp8_key(seed: int, size: int = 4000) -> bytes:
    return VP8_KEY_HEADER + filler(size, seed)


def vp8_delta(seed: int, size: int = 1500) -> bytes:
    return VP8_DELTA_HEADER + filler(size, seed)


def then(packets: list[bytes]) -> list[bytes]:
    """The packets and a padding-only packet after them: a frame at the start of a stream is emitted when
    a later packet shows that nothing before it is missing (see the module documentation)."""
    last = twin_rtp.parse_rtp(packets[-1])
    return packets + [rtp_packet(last.sequence_number + 1, last.timestamp, last.ssrc, 102, b"", pad=4)]


def push_all(d: Any, packets: list[bytes]) -> list[Any]:
    frames = []
    for p in packets:
        frames += d.push(p)
    return frames


# --- parity harness -----------------------------------------------------------------------------------


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the exception is the result being compared
        return ("raise", type(exc).__name__, str(exc))
    if isinstance(result, list):
        result = [as_tuple(f) for f in result]
    return ("ok", result)


def snapshot(d: Any) -> tuple[Any, ...]:
    return tuple((name, getattr(d, name)) for name in PROPERTIES)


class Twins:
    """One depacketizer per module, driven in lockstep: every call must give the same result and leave
    the same observable state; a call that raises must change nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.deps = [mod.Depacketizer(*args, **kwargs) for mod in MODULES]

    def outcome(self, name: str, *args: Any) -> tuple[Any, ...]:
        before = snapshot(self.deps[0])
        results = [outcome(getattr(d, name), *args) for d in self.deps]
        assert results[0] == results[1], (name, args)
        states = [snapshot(d) for d in self.deps]
        assert states[0] == states[1], (name, args)
        if results[0][0] == "raise":
            assert states[0] == before, (name, args)
        self.check_bounds()
        return results[0]

    def check_bounds(self) -> None:
        d = self.deps[0]
        assert d.pending_frames <= d.max_pending_frames
        assert d.pending_packets <= twin_dep.MAX_PENDING_PACKETS
        if d.codec == "opus":
            assert not d.waiting_keyframe and d.pending_packets == 0

    def push(self, packet: bytes) -> list[tuple[Any, ...]]:
        result = self.outcome("push", packet)
        if result[0] == "raise":
            raise AssertionError(result)
        frames: list[tuple[Any, ...]] = result[1]
        return frames

    def push_all(self, packets: list[bytes]) -> list[tuple[Any, ...]]:
        frames = []
        for p in packets:
            frames += self.push(p)
        return frames

    def __getattr__(self, name: str) -> Any:
        return getattr(self.deps[0], name)


# --- API ----------------------------------------------------------------------------------------------


def test_both_modules_export_the_same_api() -> None:
    for name in PUBLIC_API:
        assert name in ("Frame", "Depacketizer") or getattr(twin_dep, name) == getattr(native_dep, name), name
    for cls in (twin_dep.Depacketizer, native_dep.Depacketizer):
        public = {name for name in dir(cls) if not name.startswith("_")}
        assert public == set(PROPERTIES) | set(METHODS), cls
    for mod in MODULES:
        frame = mod.Frame(b"x", 1, True, 2, 3, True, "VP8")
        assert as_tuple(frame) == (b"x", 1, True, 2, 3, True, "VP8")
        assert frame == mod.Frame(b"x", 1, True, 2, 3, True, "VP8") and hash(frame) == hash(
            mod.Frame(b"x", 1, True, 2, 3, True, "VP8"))
        assert frame != mod.Frame(b"y", 1, True, 2, 3, True, "VP8")
        assert repr(frame).startswith("Frame(data=b'x', timestamp=1, keyframe=True")
        with pytest.raises(AttributeError):
            frame.data = b"z"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("AV1", 90000), ValueError, "unsupported codec 'AV1': expected one of VP8, H264, opus"),
        (("", 90000), ValueError, "unsupported codec ''"),
        ((8, 90000), TypeError, "codec must be str, not int"),
        (("VP8", 0), ValueError, "clock_rate out of range: 0"),
        (("VP8", 1 << 32), ValueError, "clock_rate out of range: 4294967296"),
        (("VP8", 90000.0), TypeError, "'float' object cannot be interpreted as an integer"),
        (("VP8", 90000, 0), ValueError, "max_frame_bytes out of range: 0"),
        (("VP8", 90000, 1 << 31), ValueError, "max_frame_bytes out of range: 2147483648"),
        (("VP8", 90000, 1000, 0), ValueError, "max_pending_frames out of range: 0"),
        (("VP8", 90000, 1000, 257), ValueError, "max_pending_frames out of range: 257"),
    ],
)
def test_settings_are_validated(dep: ModuleType, args: tuple[Any, ...], error: type, message: str) -> None:
    with pytest.raises(error) as info:
        dep.Depacketizer(*args)
    assert str(info.value).startswith(message)


def test_settings_codec_names_and_fresh_state(dep: ModuleType) -> None:
    for name, canonical, waiting in [("vp8", "VP8", True), ("h264", "H264", True), ("OPUS", "opus", False)]:
        d = dep.Depacketizer(name, 90000)
        assert (d.codec, d.waiting_keyframe) == (canonical, waiting)
        assert (d.frames, d.keyframes, d.dropped_frames, d.ignored_packets, d.pending_frames) == (0,) * 5
        assert (d.sps, d.pps, d.width, d.height) == (None,) * 4
    d = dep.Depacketizer("VP8", 90000, 1, 256)
    assert (d.clock_rate, d.max_frame_bytes, d.max_pending_frames) == (90000, 1, 256)
    assert dep.Depacketizer("VP8", 90000).max_frame_bytes == 4_000_000
    with pytest.raises(AttributeError):
        d.frames = 5


# --- H.264 known answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("stap", [True, False], ids=["stap-a", "single-nal"])
@pytest.mark.parametrize("mtu", [1200, 500])
def test_h264_access_units_come_back_as_annex_b(dep: ModuleType, stap: bool, mtu: int) -> None:
    units = [idr_unit(1), p_unit(2, 300), p_unit(3, 1500), p_unit(4, 2500), idr_unit(5, 3000), p_unit(6, 40)]
    packets = rtp_frames([h264_payloads(u, mtu, stap) for u in units], seq=65530, ts=4294967296 - 6000)
    kinds = {p[28] & 0x1F for f in packets for p in f}  # after the 12-byte header and Chrome's extensions
    assert kinds == ({1, 24, 28} if stap else {1, 7, 8, 28})
    d = dep.Depacketizer("H264", 90000)
    frames = push_all(d, packets[0])
    assert frames == [] and d.pending_frames == 1  # the first one: is anything missing before it?
    for k, frame_packets in enumerate(packets[1:], 1):
        frames += push_all(d, frame_packets)
        assert len(frames) == k + 1 and d.pending_frames == 0  # the others: emitted by their last packet
    assert [f.data for f in frames] == [annex_b(u) for u in units]
    assert [f.keyframe for f in frames] == [True, False, False, False, True, False]
    assert [f.timestamp for f in frames] == [(4294967296 - 6000 + 3000 * k) & 0xFFFFFFFF for k in range(6)]
    first = [f.sequence_first for f in frames]
    last = [f.sequence_last for f in frames]
    assert first[0] == 65530 and all(last[k] + 1 & 0xFFFF == first[k + 1] for k in range(5))
    assert all(f.complete and f.codec == "H264" for f in frames)
    assert (d.frames, d.keyframes, d.dropped_frames, d.ignored_packets, d.waiting_keyframe) == (6, 2, 0, 0, False)
    assert (d.sps, d.pps) == (SPS, PPS)


def test_h264_multi_slice_frames_and_non_vcl_units(dep: ModuleType) -> None:
    aud = b"\x09\xf0"
    sei = nal(0x06, 30, 9)
    key = [aud, SPS, PPS, sei, nal(0x65, 2500, 1), nal(0x65, 2500, 2, first_mb_zero=False)]
    delta = [nal(0x41, 900, 3), nal(0x41, 1300, 4, first_mb_zero=False), nal(0x41, 10, 5, first_mb_zero=False)]
    packets = rtp_frames([h264_payloads(key), h264_payloads(delta)])
    d = dep.Depacketizer("H264", 90000)
    frames = push_all(d, [p for f in packets for p in f])
    assert [f.data for f in frames] == [annex_b(key), annex_b(delta)]
    assert [f.keyframe for f in frames] == [True, False]


@pytest.mark.parametrize("seed", range(4))
def test_reordering_inside_a_frame(dep: ModuleType, seed: int) -> None:
    units = [idr_unit(1, 9000), p_unit(2, 4000), p_unit(3, 3000)]
    packets = rtp_frames([h264_payloads(u) for u in units])
    rnd = random.Random(seed)
    d = dep.Depacketizer("H264", 90000)
    frames = []
    for frame_packets in packets:
        shuffled = frame_packets[:]
        rnd.shuffle(shuffled)
        frames += push_all(d, shuffled)
    assert [f.data for f in frames] == [annex_b(u) for u in units]
    assert d.dropped_frames == 0


def test_reordering_across_frames_keeps_frame_order(dep: ModuleType) -> None:
    units = [idr_unit(1), p_unit(2, 3000), p_unit(3, 3000)]
    f0, f1, f2 = rtp_frames([h264_payloads(u) for u in units])
    d = dep.Depacketizer("H264", 90000)
    # Frame 1's last packet and all of frame 2 except its first arrive before frame 0's last packet.
    order = f0[:-1] + f1[:-1] + f2[1:] + [f0[-1], f1[-1], f2[0]]
    out = [[f.data for f in d.push(p)] for p in order]
    assert [x for x in out if x] == [[annex_b(units[0]), annex_b(units[1])], [annex_b(units[2])]]
    assert d.dropped_frames == 0 and d.pending_frames == 0


def test_lost_middle_fu_a_fragment_drops_the_frame_until_the_next_idr(dep: ModuleType) -> None:
    units = [idr_unit(1), p_unit(2, 4000), p_unit(3), p_unit(4), idr_unit(5, params=False), p_unit(6)]
    packets = rtp_frames([h264_payloads(u) for u in units])
    assert len(packets[1]) >= 4
    d = dep.Depacketizer("H264", 90000)
    assert [f.data for f in push_all(d, packets[0] + packets[1][:1] + packets[1][2:])] == [annex_b(units[0])]
    assert (d.pending_frames, d.waiting_keyframe, d.dropped_frames) == (1, False, 0)
    # The next frame completes: the gap stayed open, the broken frame goes, and so does every delta frame.
    assert push_all(d, packets[2]) == []
    assert (d.pending_frames, d.waiting_keyframe, d.dropped_frames) == (0, True, 2)
    assert push_all(d, packets[3]) == [] and d.dropped_frames == 3
    frames = push_all(d, packets[4] + packets[5])
    # Recovery at the IDR, which had no parameter sets of its own: the last ones are prepended.
    assert [f.data for f in frames] == [annex_b([SPS, PPS] + units[4]), annex_b(units[5])]
    assert (d.waiting_keyframe, d.frames, d.keyframes, d.dropped_frames) == (False, 3, 2, 3)
    # The lost fragment arriving now is late.
    assert d.push(packets[1][1]) == [] and d.ignored_packets == 1


def test_lost_marker_packet_drops_the_frame(dep: ModuleType) -> None:
    units = [idr_unit(1), p_unit(2, 3000), p_unit(3), idr_unit(4)]
    packets = rtp_frames([h264_payloads(u) for u in units])
    d = dep.Depacketizer("H264", 90000)
    frames = push_all(d, packets[0] + packets[1][:-1])
    assert len(frames) == 1 and d.pending_frames == 1
    # Frame 2 is whole, but what is missing before it could be its own: it waits for one more packet.
    assert push_all(d, packets[2]) == [] and d.pending_frames == 2
    assert [f.data for f in push_all(d, packets[3])] == [annex_b(units[3])]
    assert (d.dropped_frames, d.waiting_keyframe, d.frames) == (2, False, 2)


def test_a_wholly_lost_frame_is_loss_too(dep: ModuleType) -> None:
    units = [idr_unit(1), p_unit(2), p_unit(3), p_unit(4)]
    packets = rtp_frames([h264_payloads(u) for u in units])
    d = dep.Depacketizer("H264", 90000)
    frames = push_all(d, packets[0] + packets[2] + packets[3])
    assert len(frames) == 1 and d.dropped_frames == 2 and d.waiting_keyframe


def test_h264_keyframe_parameter_sets_are_prepended(dep: ModuleType) -> None:
    idr_only = [nal(0x65, 900, 2)]
    with_pps = [PPS, nal(0x65, 900, 3)]
    new_sps = SPS[:-1] + b"\x99"
    units = [idr_unit(1), idr_only, with_pps, [new_sps, nal(0x65, 300, 4)], idr_only, p_unit(5)]
    packets = rtp_frames([h264_payloads(u) for u in units])
    d = dep.Depacketizer("H264", 90000)
    frames = push_all(d, [p for f in packets for p in f])
    assert [f.data for f in frames] == [
        annex_b(units[0]),
        annex_b([SPS, PPS] + idr_only),
        annex_b([SPS] + with_pps),
        annex_b([new_sps, PPS, nal(0x65, 300, 4)]),  # its own SPS, the last PPS
        annex_b([new_sps, PPS] + idr_only),
        annex_b(units[5]),
    ]
    assert (d.sps, d.pps) == (new_sps, PPS)


def test_idr_without_any_known_parameter_sets_is_emitted_as_it_is(dep: ModuleType) -> None:
    unit = [nal(0x65, 3000, 1)]
    d = dep.Depacketizer("H264", 90000)
    frames = push_all(d, then(rtp_frames([h264_payloads(unit)])[0]))
    assert [(f.data, f.keyframe) for f in frames] == [(annex_b(unit), True)] and d.sps is None


def test_delta_frames_before_the_first_keyframe_are_dropped(dep: ModuleType) -> None:
    units = [p_unit(1), p_unit(2), idr_unit(3), p_unit(4)]
    d = dep.Depacketizer("H264", 90000)
    frames = push_all(d, [p for f in rtp_frames([h264_payloads(u) for u in units]) for p in f])
    assert [f.data for f in frames] == [annex_b(units[2]), annex_b(units[3])]
    assert (d.dropped_frames, d.frames) == (2, 2)


def test_padding_only_packets_and_rtp_padding(dep: ModuleType) -> None:
    units = [idr_unit(1), p_unit(2), p_unit(3)]
    payload_lists = [h264_payloads(u) for u in units]
    d = dep.Depacketizer("H264", 90000)
    seq, ts = 100, 0
    out = []
    for k, payloads in enumerate(payload_lists):
        for i, payload in enumerate(payloads):
            out += d.push(rtp_packet(seq, ts, SSRC, 102, payload, marker=i == len(payloads) - 1, pad=(i * 7) % 9))
            seq += 1
        if k == 0:  # bandwidth probing: two padding-only packets between frames
            out += d.push(rtp_packet(seq, ts, SSRC, 102, b"", pad=200))
            out += d.push(rtp_packet(seq + 1, ts, SSRC, 102, b"", pad=1))
            seq += 2
        ts += 3000
    assert [f.data for f in out] == [annex_b(u) for u in units]
    assert (d.ignored_packets, d.dropped_frames, d.waiting_keyframe) == (2, 0, False)


def test_h264_interleaved_mode_packets_are_ignored_in_place(dep: ModuleType) -> None:
    unit = idr_unit(1, 500)
    payloads = h264_payloads(unit, stap=False)
    stray = [b"\x19\x00\x01\x65", b"\x1a\x00\x01\x65", b"\x1b\x00", b"\x7d\x85\x00\x01xx", b"\x00\x01", b"\x1e",
             b"\x1f"]  # STAP-B, MTAP16, MTAP24, FU-B, reserved types
    d = dep.Depacketizer("H264", 90000)
    frames = push_all(d, then(rtp_frames([payloads[:1] + stray + payloads[1:]])[0]))
    assert [f.data for f in frames] == [annex_b(unit)]
    assert d.ignored_packets == len(stray) + 1


def test_fu_a_inconsistencies_break_the_frame(dep: ModuleType) -> None:
    slice_ = nal(0x65, 3000, 1)
    good = h264_payloads([slice_])
    cases = {
        "no-start": good[1:],
        "no-end": good[:-1] + [bytes([good[-1][0], good[-1][1] & ~0x40]) + good[-1][2:]],
        "two-starts": good[:1] + [bytes([good[1][0], good[1][1] | 0x80]) + good[1][2:]] + good[2:],
        "type-change": good[:1] + [bytes([good[1][0], good[1][1] ^ 0x04]) + good[1][2:]] + good[2:],
        "interrupted": good[:1] + [nal(0x41, 20, 2)] + good[1:],
    }
    for name, payloads in cases.items():
        d = dep.Depacketizer("H264", 90000)
        frames = push_all(d, rtp_frames([payloads])[0] + then(rtp_frames([good], seq=2000, ts=999)[0]))
        assert [f.data for f in frames] == [annex_b([slice_])], name
        assert d.dropped_frames == 1, name


def test_fu_a_with_start_and_end_set_is_a_whole_nal_unit(dep: ModuleType) -> None:
    slice_ = nal(0x65, 50, 1)
    d = dep.Depacketizer("H264", 90000)
    frames = push_all(d, then([rtp_packet(1, 0, SSRC, 102, bytes([0x7C, 0xC5]) + slice_[1:], marker=True)]))
    assert [f.data for f in frames] == [annex_b([slice_])]


# --- VP8 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", list(VP8_DESCRIPTORS))
def test_vp8_frames_with_every_descriptor_layout(dep: ModuleType, form: str) -> None:
    frames_in = [vp8_key(1), vp8_delta(2), vp8_delta(3, 20), vp8_key(4, 9000), vp8_delta(5)]
    payloads = [vp8_payloads(f, 1000, form, k + 120) for k, f in enumerate(frames_in)]
    d = dep.Depacketizer("VP8", 90000)
    assert (d.width, d.height) == (None, None)
    frames = push_all(d, [p for f in rtp_frames(payloads, seq=65500) for p in f])
    assert [f.data for f in frames] == frames_in
    assert [f.keyframe for f in frames] == [True, False, False, True, False]
    assert all(f.codec == "VP8" and f.complete for f in frames)
    assert (d.width, d.height, d.keyframes, d.dropped_frames) == (1280, 720, 2, 0)


def test_vp8_waits_for_a_keyframe_and_recovers(dep: ModuleType) -> None:
    frames_in = [vp8_delta(1), vp8_key(2), vp8_delta(3, 3000), vp8_delta(4), vp8_key(5), vp8_delta(6)]
    packets = rtp_frames([vp8_payloads(f) for f in frames_in])
    d = dep.Depacketizer("vp8", 90000)
    stream = [p for f in packets for p in f]
    lost = packets[2][1]
    frames = push_all(d, [p for p in stream if p is not lost])
    assert [f.data for f in frames] == [frames_in[1], frames_in[4], frames_in[5]]
    assert d.dropped_frames == 3


def test_vp8_size_scale_bits_and_broken_keyframe_header(dep: ModuleType) -> None:
    header = bytes.fromhex("5002009d012a") + struct.pack("<HH", 0xC000 | 640, 0x4000 | 360)
    d = dep.Depacketizer("VP8", 90000)
    assert len(push_all(d, then([rtp_packet(1, 0, SSRC, 96, b"\x10" + header + b"xx", marker=True)]))) == 1
    assert (d.width, d.height) == (640, 360)
    # P=0 without the start code: the frame is broken.
    assert d.push(rtp_packet(3, 3000, SSRC, 96, b"\x10\x50\x02\x00\x9d\x01\x2b" + bytes(10), marker=True)) == []
    assert d.dropped_frames == 1 and d.waiting_keyframe


# --- Opus ---------------------------------------------------------------------------------------------


def test_opus_each_packet_is_a_frame(dep: ModuleType) -> None:
    d = dep.Depacketizer("opus", 48000)
    payloads = [b"\x78" + filler(60, k) for k in range(5)]
    packets = [rtp_packet(65534 + k, 4294966336 + 960 * k, SSRC, 111, pl, pad=3 if k == 1 else 0)
               for k, pl in enumerate(payloads)]
    frames = [as_tuple(f) for p in packets for f in d.push(p)]
    assert frames == [(pl, (4294966336 + 960 * k) & 0xFFFFFFFF, True, (65534 + k) & 0xFFFF, (65534 + k) & 0xFFFF,
                       True, "opus") for k, pl in enumerate(payloads)]
    assert d.push(packets[2]) == [] and d.push(rtp_packet(3, 99, SSRC, 111, b"", pad=4)) == []
    assert (d.frames, d.keyframes, d.ignored_packets, d.waiting_keyframe, d.pending_frames) == (5, 5, 2, False, 0)
    small = dep.Depacketizer("opus", 48000, max_frame_bytes=10)
    assert small.push(packets[0]) == [] and small.dropped_frames == 1


# --- sequence numbers, sources, bounds ----------------------------------------------------------------


def test_duplicates_are_ignored(dep: ModuleType) -> None:
    packets = rtp_frames([h264_payloads(idr_unit(1, 3000)), h264_payloads(p_unit(2))])
    d = dep.Depacketizer("H264", 90000)
    frames = push_all(d, [packets[0][0], packets[0][0], packets[0][1]] + packets[0][1:] + packets[1] + packets[1])
    assert len(frames) == 2 and d.ignored_packets == 2 + len(packets[1]) and d.dropped_frames == 0


def test_new_ssrc_drops_what_is_pending_and_waits_for_a_keyframe(dep: ModuleType) -> None:
    a = rtp_frames([h264_payloads(idr_unit(1)), h264_payloads(p_unit(2, 3000))])
    b = rtp_frames([h264_payloads(p_unit(3)), h264_payloads(idr_unit(4))], seq=7, ts=5, ssrc=0xCAFE)
    d = dep.Depacketizer("H264", 90000)
    assert len(push_all(d, a[0] + a[1][:-1])) == 1
    assert push_all(d, b[0]) == [] and d.dropped_frames == 1  # the pending frame
    assert len(push_all(d, b[1])) == 1 and (d.sps, d.pps) == (SPS, PPS)
    assert d.dropped_frames == 2  # and b's delta frame


def test_sequence_jump_is_set_aside_then_restarts(dep: ModuleType) -> None:
    frames_in = [vp8_key(1, 300), vp8_delta(2, 300)]
    d = dep.Depacketizer("VP8", 90000)
    assert len(push_all(d, then(rtp_frames([vp8_payloads(frames_in[0])], seq=10)[0]))) == 1
    stray = rtp_packet(30000, 6000, SSRC, 96, b"\x10" + VP8_DELTA_HEADER, marker=True)
    assert d.push(stray) == [] and d.ignored_packets == 2 and not d.waiting_keyframe  # (and then()'s)
    restart = rtp_frames([vp8_payloads(vp8_delta(3, 10)), vp8_payloads(vp8_key(4, 10))], seq=40000, ts=9000)
    out = push_all(d, then(restart[0] + restart[1]))
    # 40000 is set aside, 40001 (its successor) restarts the numbering: that delta frame is gone anyway.
    assert [f.data for f in out] == [vp8_key(4, 10)]


def test_max_frame_bytes_drops_big_frames(dep: ModuleType) -> None:
    units = [idr_unit(1, 9000), idr_unit(2, 900), p_unit(3, 900)]
    packets = rtp_frames([h264_payloads(u) for u in units])
    d = dep.Depacketizer("H264", 90000, max_frame_bytes=3000)
    frames = push_all(d, packets[0])
    assert frames == [] and d.dropped_frames == 1 and d.pending_packets == 0
    frames = push_all(d, then(packets[1] + packets[2]))
    assert [f.data for f in frames] == [annex_b(units[1]), annex_b(units[2])]
    exact = dep.Depacketizer("H264", 90000, max_frame_bytes=len(annex_b(units[1])))
    assert len(push_all(exact, then(packets[1]))) == 1


def test_pending_frames_are_bounded(dep: ModuleType) -> None:
    units = [idr_unit(1, 300)] + [p_unit(k, 2500) for k in range(2, 30)]
    packets = rtp_frames([h264_payloads(u) for u in units])
    d = dep.Depacketizer("H264", 90000, max_pending_frames=3)
    assert len(push_all(d, then(packets[0]))) == 1
    for k in range(1, 29):  # every frame without its last packet: none completes
        push_all(d, packets[k][:-1])
        assert d.pending_frames == min(k, 3)
    assert d.dropped_frames == 25 and d.waiting_keyframe
    # A flood of one-byte packets of one frame never holds more than MAX_PENDING_PACKETS.
    flood = dep.Depacketizer("H264", 90000)
    for k in range(1, twin_dep.MAX_PENDING_PACKETS + 50):
        flood.push(rtp_packet(k, 7, SSRC, 102, b"\x41"))
        assert flood.pending_packets <= twin_dep.MAX_PENDING_PACKETS
    assert flood.dropped_frames == 1


def test_reset_forgets_everything(dep: ModuleType) -> None:
    d = dep.Depacketizer("H264", 90000, 5000, 2)
    fresh = snapshot(dep.Depacketizer("H264", 90000, 5000, 2))
    packets = rtp_frames([h264_payloads(idr_unit(1, 300)), h264_payloads(p_unit(2))])
    push_all(d, packets[0] + packets[1][:1])
    assert d.frames == 1 and d.pending_frames == 1
    d.reset()
    assert snapshot(d) == fresh
    assert len(push_all(d, then(packets[0]))) == 1


# --- hostile input ------------------------------------------------------------------------------------


def test_push_argument_checks(dep: ModuleType) -> None:
    d = dep.Depacketizer("VP8", 90000)
    good = rtp_packet(1, 0, SSRC, 96, b"\x10" + VP8_KEY_HEADER, marker=True)
    for bad, name in ((bytearray(good), "bytearray"), (memoryview(good), "memoryview"), (None, "NoneType")):
        with pytest.raises(TypeError, match=f"^packet must be bytes, not {name}$"):
            d.push(bad)
    assert len(push_all(d, then([good]))) == 1


RTP_BAD = [load(path) for path in sorted((RTP_FIXTURES / "bad").glob("rtp_*.hex"))]


@pytest.mark.parametrize("case", RTP_BAD, ids=[m["expect"][:40] for m in RTP_BAD])
def test_broken_rtp_header_raises_parse_rtp_message_and_changes_nothing(case: dict[str, Any]) -> None:
    for codec in ("VP8", "H264", "opus"):
        twins = Twins(codec, 90000)
        twins.push_all(rtp_frames([h264_payloads(idr_unit(1))])[0][:-1])
        result = twins.outcome("push", case["data"])
        assert result[0] == "raise" and f"ValueError: {result[2]}" == case["expect"]
        with pytest.raises(ValueError) as info:
            twin_rtp.parse_rtp(case["data"])
        assert str(info.value) == result[2]


HOSTILE = [
    ("VP8", b"\x90"),
    ("VP8", b"\x90\x80"),
    ("VP8", b"\x90\x80\x80"),
    ("VP8", b"\x90\xff\xff\xff\xff"),
    ("VP8", b"\x90\xf0\x80"),
    ("VP8", b"\xff" * 40),
    ("VP8", b"\x10" + VP8_KEY_HEADER[:9]),
    ("VP8", b"\x10\x00"),
    ("H264", b"\x7c"),
    ("H264", b"\x7c\x85"),
    ("H264", b"\x7c\x80\x00"),
    ("H264", b"\x7c\xe0\x00"),
    ("H264", b"\x78"),
    ("H264", b"\x78\x00"),
    ("H264", b"\x78\x00\x01"),
    ("H264", b"\x78\xff\xff\x67"),
    ("H264", b"\x78\x00\x00\x00\x01\x65"),
    ("H264", b"\x78\x00\x02\x78\x00"),
    ("H264", b"\x78\x00\x01\x65\x00"),
    ("H264", b"\x78\x00\x04" + SPS[:4] + b"\x00\x10" + PPS),
    ("H264", b"\x67"),
    ("H264", b"\x65"),
    ("H264", b"\x00"),
    ("H264", b"\x1f\xff"),
    ("H264", b"\x7d\x85" + SPS),
    ("opus", b"\x00"),
]


@pytest.mark.parametrize(("codec", "payload"), HOSTILE)
def test_hostile_payloads_change_nothing_they_should_not(codec: str, payload: bytes) -> None:
    """A hostile packet in a frame of its own, between two good ones: no crash, both modules agree, and a
    good keyframe afterwards still comes out whole."""
    if codec == "VP8":
        want = [vp8_key(1, 2000), vp8_key(2, 2000)]
        good = [vp8_payloads(w) for w in want]
    elif codec == "H264":
        good = [h264_payloads(idr_unit(1)), h264_payloads(idr_unit(2))]
        want = [annex_b(idr_unit(1)), annex_b(idr_unit(2))]
    else:
        good, want = [[b"\x78abc"], [b"\x78def"]], [b"\x78abc", b"\x78def"]
    for pad in (0, 1, 4):
        for marker in (False, True):
            twins = Twins(codec, 90000)
            a = rtp_frames(good[:1], seq=1, ts=0)[0]
            hostile = rtp_packet(1 + len(a), 1500, SSRC, 96, payload, marker=marker, pad=pad)
            b = rtp_frames(good[1:], seq=2 + len(a), ts=3000)[0]
            frames = twins.push_all(a + [hostile] + b)
            assert frames[0][0] == want[0] and frames[-1][:3] == (want[1], 3000, True)
            assert len(frames) in (2, 3)  # the hostile one when it passes for a frame (an SPS alone, say)


@pytest.mark.parametrize("codec", ["VP8", "H264", "opus"])
def test_truncated_packets_at_every_length(codec: str) -> None:
    if codec == "VP8":
        packet = rtp_frames([vp8_payloads(vp8_key(1, 100), form="full")])[0][0]
    elif codec == "H264":
        packet = rtp_packet(1, 0, SSRC, 102, h264_payloads([SPS, PPS, nal(0x65, 30, 1)])[0], marker=True)
    else:
        packet = rtp_packet(1, 0, SSRC, 111, b"\x78" + filler(20, 1), marker=True)
    for length in range(len(packet) + 1):
        cut = packet[:length]
        for m in (cut, cut[:1] + bytes([cut[1] | 0x80]) + cut[2:] if length > 2 else cut):
            twins = Twins(codec, 90000)
            expected = outcome(twin_rtp.parse_rtp, m)
            result = twins.outcome("push", m)
            assert result[0] == expected[0]


# --- real encoders ------------------------------------------------------------------------------------


def _encode(codec_name: str, options: dict[str, str]) -> tuple[list[bytes], list[bool], bytes]:
    """30 frames of a moving test pattern, 320x240: (packets, keyframe flags, the codec's extradata)."""
    import av
    import numpy as np

    ctx = av.CodecContext.create(codec_name, "w")
    ctx.width, ctx.height = 320, 240
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, 30)
    ctx.framerate = Fraction(30, 1)
    ctx.gop_size = 10
    ctx.options = options
    out: list[bytes] = []
    keys: list[bool] = []
    for i in range(30):
        img = np.zeros((240, 320, 3), dtype=np.uint8)
        img[:, :, 0] = (np.arange(320)[None, :] + i * 4) % 256
        img[:, :, 1] = (np.arange(240)[:, None] * 2 + i * 3) % 256
        img[60:120, (i * 8) % 280 : (i * 8) % 280 + 40, 2] = 255
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        for packet in ctx.encode(frame):
            out.append(bytes(packet))
            keys.append(packet.is_keyframe)
    for packet in ctx.encode(None):
        out.append(bytes(packet))
        keys.append(packet.is_keyframe)
    return out, keys, bytes(ctx.extradata or b"")


def _split_annex_b(data: bytes) -> list[bytes]:
    nals = []
    for chunk in data.split(b"\x00\x00\x01"):
        chunk = chunk.rstrip(b"\x00") if chunk else chunk
        if chunk:
            nals.append(chunk)
    return nals


def _decode(codec_name: str, frames: list[Any]) -> list[tuple[int, int]]:
    import av

    ctx = av.CodecContext.create(codec_name, "r")
    sizes = []
    for f in frames:
        for picture in ctx.decode(av.Packet(f.data)):
            sizes.append((picture.width, picture.height))
    for picture in ctx.decode(None):
        sizes.append((picture.width, picture.height))
    return sizes


@pytest.mark.parametrize("stap", [True, False], ids=["stap-a", "single-nal"])
def test_end_to_end_libx264(dep: ModuleType, stap: bool) -> None:
    encoded, keys, extradata = _encode("libx264", {"tune": "zerolatency", "preset": "ultrafast", "g": "10",
                                                   "keyint_min": "10"})
    assert len(encoded) == 30 and keys.count(True) == 3
    units = [_split_annex_b(data) for data in encoded]
    params = [n for n in _split_annex_b(extradata) if n[0] & 0x1F in (7, 8)]
    if not any(n[0] & 0x1F == 7 for n in units[0]):
        # x264 gave its SPS and PPS out of band: send them ahead of the first IDR only, as a browser that
        # signalled them in SDP might; the depacketizer must put them in front of the later IDRs itself.
        assert len(params) == 2
        units[0] = params + units[0]
    packets = rtp_frames([h264_payloads(u, 300, stap) for u in units])
    # Reorder a little inside each frame, as a network would.
    shuffled = [f[1:2] + f[:1] + f[2:] if len(f) > 1 else f for f in packets]
    d = dep.Depacketizer("H264", 90000)
    frames = push_all(d, [p for f in shuffled for p in f])
    assert len(frames) == 30 and [f.keyframe for f in frames] == keys
    assert [f.data for f in frames if not f.keyframe] == [annex_b(u) for u, k in zip(units, keys, strict=True) if not k]
    assert _decode("h264", frames) == [(320, 240)] * 30
    # Every keyframe starts a decoder on its own: SPS and PPS were prepended where x264 left them out.
    for f in frames:
        if f.keyframe:
            assert _decode("h264", [f]) == [(320, 240)]
    assert d.sps is not None and d.pps is not None


def test_end_to_end_libvpx_vp8(dep: ModuleType) -> None:
    encoded, keys, _ = _encode("libvpx", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                                       "auto-alt-ref": "0"})
    assert len(encoded) == 30 and keys[0]
    packets = rtp_frames([vp8_payloads(data, 400, "pid15", k) for k, data in enumerate(encoded)])
    d = dep.Depacketizer("VP8", 90000)
    frames = push_all(d, [p for f in packets for p in f])
    assert [f.data for f in frames] == encoded and [f.keyframe for f in frames] == keys
    assert (d.width, d.height) == (320, 240)
    assert _decode("vp8", frames) == [(320, 240)] * 30


def test_end_to_end_with_loss_recovers_at_keyframes() -> None:
    encoded, keys, extradata = _encode("libx264", {"tune": "zerolatency", "preset": "ultrafast", "g": "10",
                                                   "keyint_min": "10"})
    units = [_split_annex_b(data) for data in encoded]
    units[0] = [n for n in _split_annex_b(extradata) if n[0] & 0x1F in (7, 8)] + units[0]
    packets = rtp_frames([h264_payloads(u, 300) for u in units])
    stream = [p for k, f in enumerate(packets) for i, p in enumerate(f) if not (k in (3, 14) and i == 1)]
    twins = Twins("H264", 90000)
    frames = twins.push_all(stream)
    assert twins.dropped_frames == 2 + 6 + 5  # from each lost packet to the next keyframe
    assert _decode("h264", [twin_dep.Frame(*f) for f in frames]) == [(320, 240)] * len(frames) == [(320, 240)] * 17


# --- whole streams through both modules ---------------------------------------------------------------


def lossy(packets: list[bytes], seed: int) -> list[bytes]:
    """Loss, duplicates and reordering (a packet overtaken by up to 3 later ones)."""
    rnd = random.Random(seed)
    out = []
    for p in packets:
        r = rnd.random()
        if r < 0.03:
            continue
        out.append(p)
        if r > 0.97:
            out.append(p)
    for _ in range(len(out) // 10):
        i = rnd.randrange(len(out) - 4)
        j = i + rnd.randint(1, 3)
        out[i], out[j] = out[j], out[i]
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("codec", ["H264", "VP8", "opus"])
def test_whole_lossy_streams_agree(codec: str, seed: int) -> None:
    rnd = random.Random(seed)
    if codec == "H264":
        units = [idr_unit(k, 4000, params=k % 20 == 0) if k % 10 == 0 else p_unit(k, rnd.randint(10, 3000))
                 for k in range(60)]
        payloads = [h264_payloads(u, 800, stap=bool(seed % 2)) for u in units]
    elif codec == "VP8":
        payloads = [vp8_payloads(vp8_key(k, 3000) if k % 10 == 0 else vp8_delta(k, rnd.randint(10, 2000)), 800,
                                 list(VP8_DESCRIPTORS)[seed], k) for k in range(60)]
    else:
        payloads = [[b"\x78" + filler(rnd.randint(0, 100), k)] for k in range(200)]
    packets = [p for f in rtp_frames(payloads, seq=65000 + seed * 100, ts=4294900000) for p in f]
    twins = Twins(codec, 90000, 200_000, 1 + seed)
    frames = twins.push_all(lossy(packets, seed))
    assert frames and twins.frames == len(frames)
    if codec != "opus":
        assert twins.dropped_frames > 0
