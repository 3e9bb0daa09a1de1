"""Per-track ingest state: the Python twin (media/track.py) and the native module (media/_native/track.pyx)
against known answers, the committed corpus (tests/fixtures/track/), hostile input, and each other.
Randomized parity lives in test_track_fuzz.py.

Known answers use the `track` fixture (each test runs on both modules); parity tests push the same
packets through both and compare the result and the whole observable state after every step.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import media._native.rtcp as native_rtcp
import media._native.track as native_track
import media.rtcp as twin_rtcp
import media.rtp as twin_rtp
import media.track as twin_track

MODULES = [twin_track, native_track]
FIXTURES = Path(__file__).parent / "fixtures" / "track"
RTP_FIXTURES = Path(__file__).parent / "fixtures" / "rtp"

PUBLIC_API = (
    "KEYFRAME SPS_PPS NEW_SSRC OUT_OF_ORDER DUPLICATE SEQ_JUMP RTP_SEQ_MOD MAX_DROPOUT MAX_MISORDER CODECS "
    "IngestTrack"
).split()
PROPERTIES = (
    "codec is_video clock_rate cache_size gop_max_packets gop_max_bytes ssrc packets bytes duplicates "
    "extended_highest_seq lost jitter keyframes gop_overflows gop_packets gop_bytes last_keyframe_at "
    "last_packet_at last_timestamp last_sr sps pps"
).split()
METHODS = "push get gop reset report_block on_sender_report".split()

KEYFRAME = twin_track.KEYFRAME
SPS_PPS = twin_track.SPS_PPS
NEW_SSRC = twin_track.NEW_SSRC
OUT_OF_ORDER = twin_track.OUT_OF_ORDER
DUPLICATE = twin_track.DUPLICATE
SEQ_JUMP = twin_track.SEQ_JUMP
FLAG_NAMES = {"KEYFRAME": KEYFRAME, "SPS_PPS": SPS_PPS, "NEW_SSRC": NEW_SSRC, "OUT_OF_ORDER": OUT_OF_ORDER,
              "DUPLICATE": DUPLICATE, "SEQ_JUMP": SEQ_JUMP}

VP8_SSRC = 0x1B2C3D4E
H264_SSRC = 0x0A0B0C0D
OPUS_SSRC = 0x5D2E0F11


@pytest.fixture(params=MODULES, ids=["twin", "native"])
def track(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


# --- packets like Chrome's ---------------------------------------------------------------------------

CHROME_EXT = bytes.fromhex("bede0003221b7c523104d34031000000")  # abs-send-time, transport-cc, mid
VP8_KEY_HEADER = bytes.fromhex("5002009d012a8002e001")  # P=0, start code 9d 01 2a, 640x480
VP8_DELTA_HEADER = bytes.fromhex("310a00")  # P=1
SPS = bytes.fromhex("6742c01fda014016ec0440000003004000000f23c60ca8")
PPS = bytes.fromhex("68ce3c80")


def filler(size: int, seed: int) -> bytes:
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(size))


def rtp_packet(
    seq: int,
    ts: int,
    ssrc: int,
    pt: int = 96,
    payload: bytes = b"",
    marker: bool = False,
    pad: int = 0,
    ext: bytes = CHROME_EXT,
) -> bytes:
    first = 0x80 | (0x10 if ext else 0) | (0x20 if pad else 0)
    out = struct.pack("!BBHII", first, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    out += ext + payload
    if pad:
        out += bytes(pad - 1) + bytes([pad])
    return out


def vp8_descriptor(start: bool, picture_id: int) -> bytes:
    """RFC 7741 section 4.2 as Chrome writes it: X, S, PID 0; I with a 15-bit PictureID."""
    return bytes([0x90 if start else 0x80, 0x80, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF])


def vp8_frame(
    seq: int, ts: int, picture_id: int, key: bool, packets: int = 3, ssrc: int = VP8_SSRC, size: int = 1000
) -> list[bytes]:
    out = []
    for i in range(packets):
        body = (VP8_KEY_HEADER if key else VP8_DELTA_HEADER) if i == 0 else b""
        payload = vp8_descriptor(i == 0, picture_id) + body + filler(size, seq + i)
        out.append(rtp_packet(seq + i, ts, ssrc, 96, payload, marker=i == packets - 1))
    return out


def stap_a(*nals: bytes) -> bytes:
    """RFC 6184 section 5.7.1: STAP-A indicator (NRI 3), then 16-bit size and NAL unit, each."""
    return b"\x78" + b"".join(struct.pack("!H", len(nal)) + nal for nal in nals)


def fu_a(nal_header: int, chunk: bytes, start: bool, end: bool) -> bytes:
    """RFC 6184 section 5.8: FU indicator (the NAL's F and NRI, type 28), FU header (S, E, type)."""
    header = (0x80 if start else 0) | (0x40 if end else 0) | nal_header & 0x1F
    return bytes([nal_header & 0xE0 | 28, header]) + chunk


def h264_frame(
    seq: int, ts: int, idr: bool, packets: int = 3, params: bool = True, ssrc: int = H264_SSRC, size: int = 1000
) -> list[bytes]:
    """An access unit as Chrome sends it: for an IDR a STAP-A with SPS and PPS first, then the slice as FU-A
    fragments (or a single NAL unit when packets == 1)."""
    out = []
    if idr and params:
        out.append(rtp_packet(seq, ts, ssrc, 102, stap_a(SPS, PPS)))
        seq += 1
    nal = 0x65 if idr else 0x41
    if packets == 1:
        out.append(rtp_packet(seq, ts, ssrc, 102, bytes([nal]) + filler(size, seq), marker=True))
        return out
    for i in range(packets):
        payload = fu_a(nal, filler(size, seq + i), i == 0, i == packets - 1)
        out.append(rtp_packet(seq + i, ts, ssrc, 102, payload, marker=i == packets - 1))
    return out


def opus_packet(seq: int, ts: int, ssrc: int = OPUS_SSRC) -> bytes:
    return rtp_packet(seq, ts, ssrc, 111, b"\x78" + filler(60, seq))


def load(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    hexed = []
    for line in path.read_text().splitlines():
        if line.startswith("# ") and ":" in line and line[2:].split(":", 1)[0] in ("codec", "expect", "kind"):
            key, value = line[2:].split(":", 1)
            meta[key] = value.strip()
        elif not line.startswith("#"):
            hexed.append(line)
    meta["data"] = bytes.fromhex("".join(hexed))
    return meta


def expected_flags(text: str) -> int:
    return 0 if text == "none" else sum(FLAG_NAMES[name] for name in text.split("|"))


CORPUS = sorted(FIXTURES.glob("*.hex"))


# --- parity harness ----------------------------------------------------------------------------------


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - the exception is the result being compared
        return ("raise", type(exc).__name__, str(exc))


def snapshot(t: Any, probe: tuple[int, ...] = ()) -> tuple[Any, ...]:
    """Everything observable about a track (plus get() of the probed sequence numbers)."""
    return (
        tuple((name, getattr(t, name)) for name in PROPERTIES),
        tuple(t.gop()),
        tuple(t.get(seq) for seq in probe),
    )


class Twins:
    """One track per module, driven in lockstep: every call must give the same result and leave the same
    observable state."""

    def __init__(self, *args: Any, probe: tuple[int, ...] = (), **kwargs: Any) -> None:
        self.tracks = [mod.IngestTrack(*args, **kwargs) for mod in MODULES]
        self.probe = probe

    def outcome(self, name: str, *args: Any) -> tuple[Any, ...]:
        """The common outcome of one call on both tracks; a call that raises must change nothing."""
        before = snapshot(self.tracks[0], self.probe)
        results = [outcome(getattr(t, name), *args) for t in self.tracks]
        assert results[0] == results[1], (name, args)
        states = [snapshot(t, self.probe) for t in self.tracks]
        assert states[0] == states[1], (name, args)
        if results[0][0] == "raise":
            assert states[0] == before, (name, args)
        return results[0]

    def call(self, name: str, *args: Any) -> Any:
        result = self.outcome(name, *args)
        if result[0] == "raise":
            raise AssertionError(result)
        return result[1]

    def push(self, packet: bytes, now: float) -> int:
        result: int = self.call("push", packet, now)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracks[0], name)


# --- API ----------------------------------------------------------------------------------------------


def test_both_modules_export_the_same_api() -> None:
    for name in PUBLIC_API:
        assert getattr(twin_track, name) == getattr(native_track, name) or name == "IngestTrack", name
    flags = [getattr(twin_track, name) for name in FLAG_NAMES]
    assert len(set(flags)) == len(flags) and all(f & (f - 1) == 0 for f in flags)
    for cls in (twin_track.IngestTrack, native_track.IngestTrack):
        public = {name for name in dir(cls) if not name.startswith("_")}
        assert public == set(PROPERTIES) | set(METHODS), cls


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("AV1", 90000), ValueError, "unsupported codec 'AV1': expected one of VP8, H264, opus"),
        (("", 90000), ValueError, "unsupported codec ''"),
        ((8, 90000), TypeError, "codec must be str, not int"),
        (("VP8", 0), ValueError, "clock_rate out of range: 0"),
        (("VP8", -1), ValueError, "clock_rate out of range: -1"),
        (("VP8", 1 << 32), ValueError, "clock_rate out of range: 4294967296"),
        (("VP8", 90000.0), TypeError, "'float' object cannot be interpreted as an integer"),
        (("VP8", 90000, 1000), ValueError, "cache_size must be a power of two from 1 to 65536, got 1000"),
        (("VP8", 90000, 0), ValueError, "cache_size must be a power of two from 1 to 65536, got 0"),
        (("VP8", 90000, 131072), ValueError, "cache_size must be a power of two from 1 to 65536, got 131072"),
        (("VP8", 90000, -4), ValueError, "cache_size must be a power of two from 1 to 65536, got -4"),
        (("VP8", 90000, 1024, 0), ValueError, "gop_max_packets out of range: 0"),
        (("VP8", 90000, 1024, 1 << 31), ValueError, "gop_max_packets out of range: 2147483648"),
        (("VP8", 90000, 1024, 10, 0), ValueError, "gop_max_bytes out of range: 0"),
        (("VP8", 90000, 1024, 10, 1 << 63), ValueError, "gop_max_bytes out of range: 9223372036854775808"),
    ],
)
def test_settings_are_validated(track: ModuleType, args: tuple[Any, ...], error: type, message: str) -> None:
    with pytest.raises(error) as info:
        track.IngestTrack(*args)
    assert str(info.value).startswith(message)


def test_settings_and_codec_names(track: ModuleType) -> None:
    for name, canonical, video in [("vp8", "VP8", True), ("H264", "H264", True), ("h264", "H264", True),
                                   ("OPUS", "opus", False), ("Opus", "opus", False)]:
        t = track.IngestTrack(name, 90000)
        assert (t.codec, t.is_video) == (canonical, video)
    t = track.IngestTrack("VP8", 90000, 1, 1, 1)
    assert (t.clock_rate, t.cache_size, t.gop_max_packets, t.gop_max_bytes) == (90000, 1, 1, 1)
    t = track.IngestTrack("opus", 48000, 65536)
    assert t.cache_size == 65536
    with pytest.raises(AttributeError):
        t.packets = 5


def test_fresh_track_state(track: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000)
    assert (t.ssrc, t.packets, t.bytes, t.duplicates, t.extended_highest_seq, t.lost, t.jitter) == (
        None, 0, 0, 0, None, 0, 0,
    )
    assert (t.keyframes, t.gop_overflows, t.gop_packets, t.gop_bytes) == (0, 0, 0, 0)
    assert (t.last_keyframe_at, t.last_packet_at, t.last_timestamp, t.last_sr, t.sps, t.pps) == (None,) * 6
    assert t.gop() == [] and t.get(0) is None and t.get(65535) is None


# --- keyframes and the GOP ---------------------------------------------------------------------------


def test_vp8_stream_keyframes_and_gop(track: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000)
    key = vp8_frame(1000, 90000, 42, key=True)
    delta1 = vp8_frame(1003, 93000, 43, key=False, packets=2)
    delta2 = vp8_frame(1005, 96000, 44, key=False, packets=1)
    flags = [t.push(p, 10.0 + i / 100) for i, p in enumerate(key + delta1 + delta2)]
    assert flags == [NEW_SSRC | KEYFRAME, 0, 0, 0, 0, 0]
    assert t.gop() == key + delta1 + delta2
    assert (t.keyframes, t.last_keyframe_at, t.ssrc) == (1, 10.0, VP8_SSRC)
    assert (t.gop_packets, t.gop_bytes) == (6, sum(map(len, key + delta1 + delta2)))
    assert (t.packets, t.bytes, t.last_timestamp, t.extended_highest_seq) == (6, t.gop_bytes, 96000, 1005)
    assert t.last_packet_at == 10.05
    key2 = vp8_frame(1006, 99000, 45, key=True, packets=2)
    assert [t.push(p, 11.0) for p in key2] == [KEYFRAME, 0]
    assert t.gop() == key2
    assert (t.keyframes, t.last_keyframe_at, t.gop_overflows) == (2, 11.0, 0)


def test_vp8_delta_frames_before_the_first_keyframe_are_not_kept(track: ModuleType) -> None:
    t = track.IngestTrack("vp8", 90000)
    for p in vp8_frame(1, 0, 1, key=False):
        t.push(p, 1.0)
    assert t.gop() == [] and t.keyframes == 0 and t.packets == 3
    assert t.get(2) is not None


@pytest.mark.parametrize(
    ("descriptor", "is_key"),
    [
        (b"\x10", True),  # no X
        (b"\x90\x80\x2a", True),  # 7-bit PictureID
        (b"\x90\x80\x80\x2a", True),  # 15-bit PictureID
        (b"\x90\xe0\x2a\x05\x20", True),  # I (7-bit), L, T
        (b"\x90\xf0\x80\x2a\x05\x20", True),  # I (15-bit), L, T and K share one byte
        (b"\x90\x10\x03", True),  # K only
        (b"\x90\x00", True),  # X with no optional fields
        (b"\x80\x80\x2a", False),  # S=0
        (b"\x92\x80\x2a", False),  # PID=2
        (b"\x90\xe0\x2a\x05", False),  # TID byte missing: the header is read one byte off
    ],
)
def test_vp8_descriptor_layouts(track: ModuleType, descriptor: bytes, is_key: bool) -> None:
    t = track.IngestTrack("VP8", 90000)
    flags = t.push(rtp_packet(7, 0, VP8_SSRC, 96, descriptor + VP8_KEY_HEADER + b"\x00" * 20), 1.0)
    assert flags == NEW_SSRC | (KEYFRAME if is_key else 0)


def test_h264_chrome_access_units(track: ModuleType) -> None:
    t = track.IngestTrack("H264", 90000)
    idr = h264_frame(100, 5000, idr=True, packets=3)  # STAP-A(SPS, PPS), FU-A start, middle, end
    p1 = h264_frame(104, 8000, idr=False, packets=2)
    p2 = h264_frame(106, 11000, idr=False, packets=1)
    flags = [t.push(p, 2.0) for p in idr + p1 + p2]
    assert flags == [NEW_SSRC | SPS_PPS | KEYFRAME, 0, 0, 0, 0, 0, 0]
    assert (t.sps, t.pps) == (SPS, PPS)
    assert t.gop() == idr + p1 + p2
    assert (t.keyframes, t.last_keyframe_at) == (1, 2.0)
    idr2 = h264_frame(107, 14000, idr=True, packets=2)
    assert [t.push(p, 3.0) for p in idr2] == [SPS_PPS | KEYFRAME, 0, 0]
    assert t.gop() == idr2 and t.keyframes == 2


def test_h264_separate_parameter_sets_and_multi_slice_idr(track: ModuleType) -> None:
    """SPS, PPS and two IDR slices as single NAL units, all with one timestamp: one GOP start."""
    t = track.IngestTrack("H264", 90000)
    sps2 = SPS[:-1] + b"\x99"
    packets = [
        rtp_packet(1, 900, H264_SSRC, 102, sps2),
        rtp_packet(2, 900, H264_SSRC, 102, PPS),
        rtp_packet(3, 900, H264_SSRC, 102, b"\x65\x88" + filler(100, 1)),
        rtp_packet(4, 900, H264_SSRC, 102, fu_a(0x65, filler(100, 2), True, False)),
        rtp_packet(5, 900, H264_SSRC, 102, fu_a(0x65, filler(100, 3), False, True), marker=True),
    ]
    assert [t.push(p, 1.0) for p in packets] == [NEW_SSRC | SPS_PPS | KEYFRAME, SPS_PPS, 0, 0, 0]
    assert (t.sps, t.pps, t.keyframes, t.gop()) == (sps2, PPS, 1, packets)


def test_h264_idr_without_parameter_sets_starts_a_gop(track: ModuleType) -> None:
    t = track.IngestTrack("H264", 90000)
    assert [t.push(p, 1.0) for p in h264_frame(1, 0, idr=False)] == [NEW_SSRC, 0, 0]
    frame = h264_frame(4, 3000, idr=True, params=False)
    assert [t.push(p, 1.1) for p in frame] == [KEYFRAME, 0, 0]
    assert t.gop() == frame and (t.sps, t.pps) == (None, None)
    # A STAP-A carrying the IDR slice itself also starts one.
    aggregate = rtp_packet(7, 6000, H264_SSRC, 102, stap_a(b"\x06\x05\x01", b"\x65\x88\x80"))
    assert t.push(aggregate, 1.2) == KEYFRAME


def test_h264_late_parameter_sets_become_the_gop_start(track: ModuleType) -> None:
    t = track.IngestTrack("H264", 90000)
    before = h264_frame(1, 0, idr=False, packets=1)
    stap, start, end = h264_frame(2, 3000, idr=True, packets=2)
    assert t.push(before[0], 1.0) == NEW_SSRC
    assert t.push(start, 1.1) == KEYFRAME  # the IDR start overtook the STAP-A
    assert t.push(stap, 1.1) == SPS_PPS | OUT_OF_ORDER  # same access unit: no second GOP
    assert t.push(end, 1.1) == 0
    assert t.gop() == [stap, start, end]
    assert (t.keyframes, t.sps, t.pps) == (1, SPS, PPS)


def test_late_packets_do_not_replace_newer_parameter_sets(track: ModuleType) -> None:
    t = track.IngestTrack("H264", 90000)
    old_sps = SPS[:-1] + b"\x01"
    late = rtp_packet(10, 0, H264_SSRC, 102, stap_a(old_sps, PPS))
    new = rtp_packet(11, 3000, H264_SSRC, 102, stap_a(SPS, PPS[:-1] + b"\x02"))
    t.push(rtp_packet(9, 0, H264_SSRC, 102, b"\x41\x00"), 1.0)
    t.push(new, 1.0)
    # Late, and from an access unit older than the current GOP: no new GOP, not kept.
    assert t.push(late, 1.0) == SPS_PPS | OUT_OF_ORDER
    assert (t.sps, t.pps, t.gop(), t.keyframes) == (SPS, PPS[:-1] + b"\x02", [new], 1)
    # ...but it fills in what is missing, and starts a GOP when there is none.
    t = track.IngestTrack("H264", 90000)
    t.push(rtp_packet(11, 3000, H264_SSRC, 102, b"\x41\x00"), 1.0)
    assert t.push(late, 1.0) == SPS_PPS | KEYFRAME | OUT_OF_ORDER
    assert (t.sps, t.pps, t.gop()) == (old_sps, PPS, [late])


def test_vp8_late_keyframe_start_takes_the_packets_after_it(track: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000)
    first = vp8_frame(10, 0, 1, key=True, packets=2)
    k1, k2, k3 = vp8_frame(12, 3000, 2, key=True)
    d1 = vp8_frame(15, 6000, 3, key=False, packets=1)
    for p in first:
        t.push(p, 1.0)
    assert t.push(k2, 1.1) == 0  # goes to the old GOP for now
    assert t.push(k1, 1.1) == KEYFRAME | OUT_OF_ORDER
    assert t.gop() == [k1, k2]
    assert t.push(k3, 1.1) == 0 and t.push(d1[0], 1.2) == 0
    assert t.gop() == [k1, k2, k3] + d1
    # A late packet from before the keyframe start stays out of the GOP.
    t2 = track.IngestTrack("VP8", 90000)
    for p in [k1, k3, k2]:
        t2.push(p, 1.0)
    assert t2.gop() == [k1, k3, k2]
    before = vp8_frame(11, 0, 1, key=False, packets=1)[0]
    assert t2.push(before, 1.0) == OUT_OF_ORDER
    assert t2.gop() == [k1, k3, k2] and t2.get(11) == before


def test_opus_has_no_keyframes_and_no_gop(track: ModuleType) -> None:
    t = track.IngestTrack("opus", 48000)
    packets = [opus_packet(500 + i, 960 * i) for i in range(50)]
    flags = [t.push(p, 1.0 + 0.02 * i) for i, p in enumerate(packets)]
    assert flags == [NEW_SSRC] + [0] * 49
    assert t.gop() == [] and (t.keyframes, t.last_keyframe_at, t.gop_packets, t.is_video) == (0, None, 0, False)
    assert t.get(510) == packets[10] and t.get(549) == packets[49]
    assert (t.packets, t.extended_highest_seq, t.last_timestamp, t.lost) == (50, 549, 960 * 49, 0)


def test_gop_max_packets(track: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000, gop_max_packets=4)
    frames = vp8_frame(1, 0, 1, key=True) + vp8_frame(4, 3000, 2, key=False) + vp8_frame(7, 6000, 3, key=False)
    for p in frames:
        t.push(p, 1.0)
    assert t.gop() == frames[:4]
    assert (t.gop_overflows, t.gop_packets, t.packets) == (1, 4, 9)  # counted once per GOP
    key = vp8_frame(10, 9000, 4, key=True, packets=2)
    for p in key:
        t.push(p, 2.0)
    assert t.gop() == key and t.gop_overflows == 1
    for p in vp8_frame(12, 12000, 5, key=False):
        t.push(p, 2.1)
    assert t.gop_packets == 4 and t.gop_overflows == 2


def test_gop_max_bytes(track: ModuleType) -> None:
    frames = vp8_frame(1, 0, 1, key=True, size=500) + vp8_frame(4, 3000, 2, key=False, size=500)
    limit = sum(map(len, frames[:3])) + 10
    t = track.IngestTrack("VP8", 90000, gop_max_bytes=limit)
    for p in frames:
        t.push(p, 1.0)
    assert t.gop() == frames[:3] and t.gop_bytes == limit - 10 and t.gop_overflows == 1
    # A keyframe packet bigger than the whole budget leaves the GOP empty, and counts.
    t = track.IngestTrack("VP8", 90000, gop_max_bytes=100)
    assert t.push(frames[0], 1.0) == NEW_SSRC | KEYFRAME
    assert t.gop() == [] and t.gop_overflows == 1 and t.keyframes == 1


def test_padding_only_packets_are_cached_but_not_kept_in_the_gop(track: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000)
    key = vp8_frame(1, 0, 1, key=True, packets=1)
    probe = rtp_packet(2, 0, VP8_SSRC, 96, b"", pad=200)
    t.push(key[0], 1.0)
    assert t.push(probe, 1.0) == 0
    assert t.gop() == key and t.get(2) == probe and t.packets == 2


# --- sequence numbers, loss, jitter ------------------------------------------------------------------


def test_sequence_wraparound_counts_cycles(track: ModuleType) -> None:
    t = track.IngestTrack("opus", 48000)
    for i, seq in enumerate([65533, 65534, 65535, 0, 1, 2]):
        t.push(opus_packet(seq, 960 * i), 1.0)
    assert (t.extended_highest_seq, t.lost, t.packets) == (65536 + 2, 0, 6)
    assert t.report_block(1.0)[:4] == (OPUS_SSRC, 0, 0, 65538)
    assert t.get(65535) is not None and t.get(2) is not None
    # A late packet from before the wrap is placed in the previous cycle.
    t.push(opus_packet(3, 0), 1.0)
    t.push(opus_packet(5, 0), 1.0)
    assert t.push(opus_packet(65532, 0), 1.0) == OUT_OF_ORDER
    assert (t.extended_highest_seq, t.lost) == (65536 + 5, 0)  # base was 65533: 65532 came from before it
    # Four more wraps in steps the validation accepts.
    for _ in range(4 * 65536 // 2000):
        t.push(opus_packet((t.extended_highest_seq + 2000) & 0xFFFF, 0), 1.0)
    assert t.extended_highest_seq == 65541 + (4 * 65536 // 2000) * 2000
    assert t.extended_highest_seq >> 16 == 4


def test_loss_and_fraction_lost_known_answers(track: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000)
    for seq in [1, 2, 4, 5, 6, 8, 9, 10]:  # 3 and 7 lost
        t.push(rtp_packet(seq, 0, VP8_SSRC), 1.0)
    assert (t.lost, t.extended_highest_seq) == (2, 10)
    # A.3: expected 10, received 8: fraction 2 * 256 // 10 = 51.
    assert t.report_block(1.0) == (VP8_SSRC, 51, 2, 10, 0, 0, 0)
    for seq in range(11, 21):
        t.push(rtp_packet(seq, 0, VP8_SSRC), 1.0)
    assert t.report_block(2.0)[1:3] == (0, 2)
    for seq in [21, 23, 24]:
        t.push(rtp_packet(seq, 0, VP8_SSRC), 1.0)
    assert t.push(rtp_packet(3, 0, VP8_SSRC), 1.0) == OUT_OF_ORDER  # a lost one turns up after all
    # Interval: 4 expected (21..24), 4 received (21, 23, 24, 3): fraction 0; cumulative 24 - 22.
    assert t.report_block(3.0)[1:3] == (0, 2)
    assert t.report_block(3.0)[1:3] == (0, 2)  # nothing new: fraction 0
    for seq in range(25, 35, 2):  # 25, 27, ..., 33: half of 25..33 lost (4 of 9)
        t.push(rtp_packet(seq, 0, VP8_SSRC), 1.0)
    assert t.report_block(4.0)[1:3] == (4 * 256 // 9, 6)


def test_duplicates_are_recognized_and_not_counted(track: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000)
    packets = [rtp_packet(seq, 0, VP8_SSRC, payload=b"\x80\x00") for seq in range(100, 110)]
    for p in packets:
        t.push(p, 1.0)
    assert t.push(packets[-1], 2.0) == DUPLICATE  # the newest one again
    assert t.push(packets[3], 2.0) == DUPLICATE  # an older one again
    assert t.push(packets[3], 2.0) == DUPLICATE
    assert (t.packets, t.duplicates, t.lost, t.last_packet_at) == (10, 3, 0, 2.0)
    assert t.report_block(2.0)[1:3] == (0, 0)
    # Beyond the cache, an old duplicate is indistinguishable from a late packet.
    t = track.IngestTrack("VP8", 90000, cache_size=4)
    for p in packets:
        t.push(p, 1.0)
    assert t.push(packets[0], 1.0) == OUT_OF_ORDER
    assert t.lost == -1  # A.1 counts it: received 11 of 10 expected


def test_jitter_known_answers(track: ModuleType) -> None:
    # 48 kHz, one packet every 1/16 s (3000 ticks): exact in binary floating point.
    t = track.IngestTrack("opus", 48000)
    for i in range(5):
        t.push(opus_packet(i, 3000 * i), 100 + i / 16)
    assert t.jitter == 0
    t.push(opus_packet(5, 15000), 100 + 5 / 16 + 1 / 128)  # 375 ticks late: J = 375 / 16
    assert t.jitter == 23
    t.push(opus_packet(6, 18000), 100 + 6 / 16)  # back on time: transit changes by 375 again
    assert t.jitter == (375 + 375 - (375 + 8 >> 4)) >> 4 == 45
    assert t.report_block(101.0)[4] == 45
    for i in range(7, 200):
        t.push(opus_packet(i, 3000 * i), 100 + i / 16)
    assert t.jitter == 0  # decays back once arrivals are regular


def test_jitter_ignores_late_and_duplicate_packets(track: ModuleType) -> None:
    t = track.IngestTrack("opus", 48000)
    for i in [0, 1, 2, 4, 5]:
        t.push(opus_packet(i, 3000 * i), i / 16)
    t.push(opus_packet(3, 9000), 10.0)  # very late, out of order
    t.push(opus_packet(5, 15000), 20.0)  # duplicate
    assert t.jitter == 0 and t.last_timestamp == 15000


def test_jitter_across_timestamp_and_arrival_wraparound(track: ModuleType) -> None:
    t = track.IngestTrack("opus", 48000)
    base = (1 << 32) - 6000
    start = 89478.0  # 4294944000 ticks at 48 kHz: arrival times wrap 2**32 after 8 packets
    for i in range(12):
        t.push(opus_packet(i, base + 3000 * i), start + i / 16)
    assert t.jitter == 0
    assert t.last_timestamp == (base + 33000) & 0xFFFFFFFF
    t.push(opus_packet(12, base + 36000), start + 12 / 16 + 1 / 128)
    assert t.jitter == 23


def test_seq_jump_sets_a_packet_aside_then_restarts_numbering(track: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000)
    for p in vp8_frame(1, 0, 1, key=True):
        t.push(p, 1.0)
    stray = rtp_packet(40000, 3000, VP8_SSRC, payload=b"\x80\x00")
    assert t.push(stray, 1.1) == SEQ_JUMP
    assert (t.packets, t.extended_highest_seq, t.get(40000), t.last_packet_at) == (3, 3, None, 1.1)
    # An isolated stray changes nothing: the numbering continues.
    assert t.push(rtp_packet(4, 3000, VP8_SSRC, payload=b"\x80\x00"), 1.2) == 0
    assert (t.extended_highest_seq, t.lost, t.gop_packets) == (4, 0, 4)
    # Two sequential packets confirm a new numbering: statistics, cache and GOP start again.
    t.push(rtp_packet(40000, 6000, VP8_SSRC, payload=b"\x80\x00"), 1.3)
    key = vp8_frame(40001, 9000, 2, key=True, packets=1)[0]
    assert t.push(key, 1.4) == SEQ_JUMP | KEYFRAME
    assert (t.extended_highest_seq, t.lost, t.packets, t.get(4), t.get(40001)) == (40001, 0, 5, None, key)
    assert t.gop() == [key] and t.report_block(1.5)[1:4] == (0, 0, 40001)
    # Back by MAX_MISORDER or more counts as a jump too; less is a late packet.
    assert t.push(rtp_packet(40001 - 100, 0, VP8_SSRC), 1.6) == SEQ_JUMP
    assert t.push(rtp_packet(40002, 0, VP8_SSRC), 1.6) == 0
    assert t.push(rtp_packet(40002 - 99, 0, VP8_SSRC), 1.6) == OUT_OF_ORDER


def test_new_ssrc_starts_a_new_source(track: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000)
    for p in vp8_frame(1000, 0, 1, key=True) + vp8_frame(1004, 3000, 2, key=False):  # 1003 lost
        t.push(p, 1.0)
    t.on_sender_report(1 << 40, 1234, 1.0)
    assert (t.lost, t.keyframes, t.gop_packets, t.last_sr) == (1, 1, 6, (1 << 40, 1234, 1.0))
    delta = vp8_frame(7, 50, 1, key=False, ssrc=0xFEED)
    assert t.push(delta[0], 2.0) == NEW_SSRC
    assert (t.ssrc, t.extended_highest_seq, t.lost, t.jitter, t.last_timestamp) == (0xFEED, 7, 0, 0, 50)
    assert (t.gop(), t.get(1000), t.get(7), t.last_sr, t.last_keyframe_at) == ([], None, delta[0], None, None)
    assert (t.packets, t.keyframes, t.last_packet_at) == (7, 1, 2.0)  # the track's totals go on
    assert t.report_block(2.0) == (0xFEED, 0, 0, 7, 0, 0, 0)
    # A late packet of the old source switches back, as any other SSRC change.
    assert t.push(vp8_frame(1006, 3000, 2, key=False)[0], 2.1) == NEW_SSRC
    assert t.ssrc == VP8_SSRC and t.get(7) is None


def test_h264_parameter_sets_survive_a_source_change(track: ModuleType) -> None:
    t = track.IngestTrack("H264", 90000)
    for p in h264_frame(1, 0, idr=True):
        t.push(p, 1.0)
    t.push(h264_frame(9, 0, idr=False, ssrc=77)[0], 2.0)
    assert (t.sps, t.pps, t.gop()) == (SPS, PPS, [])


# --- the packet cache --------------------------------------------------------------------------------


def test_cache_returns_exactly_the_asked_sequence_number(track: ModuleType) -> None:
    t = track.IngestTrack("opus", 48000, cache_size=16)
    packets = {seq: opus_packet(seq, seq * 960) for seq in range(0, 41)}
    for p in packets.values():
        t.push(p, 1.0)
    assert t.get(40) == packets[40] and t.get(25) == packets[25]
    assert t.get(24) is None  # its slot now holds 40
    assert t.get(41) is None and t.get(65535) is None
    with pytest.raises(ValueError, match="^seq out of range: 65536$"):
        t.get(65536)
    with pytest.raises(ValueError, match="^seq out of range: -1$"):
        t.get(-1)
    with pytest.raises(TypeError):
        t.get(1.0)


def test_cache_never_serves_a_packet_from_an_earlier_cycle(track: ModuleType) -> None:
    t = track.IngestTrack("opus", 48000, cache_size=1024)
    t.push(opus_packet(5, 0), 1.0)
    # A whole cycle later, in steps the validation accepts (most packets lost); none reuses slot 5.
    later = list(range(6, 6 + 65536 + 2000, 2000))
    assert all(seq & 1023 != 5 for seq in later) and later[-1] > 65536 + 5
    for seq in later:
        t.push(opus_packet(seq & 0xFFFF, 0), 1.0)
    # Slot 5 still holds sequence number 5 of the first cycle: 65541 is the one asked for now.
    assert t.extended_highest_seq == later[-1]
    assert t.get(5) is None
    assert t.get(later[-1] & 0xFFFF) is not None
    # The same numbers one cycle apart, both within reach: only the newer is answered.
    t = track.IngestTrack("opus", 48000, cache_size=65536)
    first = opus_packet(100, 1)
    t.push(first, 1.0)
    for seq in range(2100, 65536 + 2100, 2000):
        t.push(opus_packet(seq & 0xFFFF, 0), 1.0)
    assert t.get(100) is None  # a cycle old: 65636 would be the one, and it never came
    assert t.get(2100) is not None and t.get(66100 & 0xFFFF) is not None


def test_cache_keeps_the_newer_packet_when_a_late_one_shares_its_slot(track: ModuleType) -> None:
    t = track.IngestTrack("opus", 48000, cache_size=4)
    packets = [opus_packet(seq, 0) for seq in range(10, 20)]
    for p in packets[:6] + packets[7:]:  # 16 missing; slot 0 (16 & 3) holds 12
        t.push(p, 1.0)
    assert t.get(16) is None and t.get(12) == packets[2]  # nothing newer took 12's slot
    assert t.push(packets[6], 1.0) == OUT_OF_ORDER  # newer than 12: it takes the slot
    assert t.get(16) == packets[6] and t.get(12) is None
    t = track.IngestTrack("opus", 48000, cache_size=4)
    for p in packets:
        t.push(p, 1.0)
    late = opus_packet(15, 7)  # slot 3 holds 19: this is not a duplicate of anything cached
    assert t.push(late, 1.0) == OUT_OF_ORDER
    assert t.get(19) == packets[9] and t.get(15) is None


# --- RTCP ---------------------------------------------------------------------------------------------


def test_sender_report_gives_lsr_and_dlsr(track: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000)
    t.push(rtp_packet(1, 0, VP8_SSRC), 10.0)
    t.on_sender_report(0x0102030405060708, 0xAABBCCDD, 10.0)
    assert t.last_sr == (0x0102030405060708, 0xAABBCCDD, 10.0)
    assert t.report_block(10.5)[5:] == (0x03040506, 32768)  # middle 32 bits; 0.5 s in 1/65536 s
    # An explicit pair overrides the recorded report.
    assert t.report_block(11.0, 0x11223344, 10.75)[5:] == (0x11223344, 16384)
    assert t.report_block(9.0)[5:] == (0x03040506, 0)  # report older than now: no negative delay
    assert t.report_block(10.0 + 70000.0)[5:] == (0x03040506, 0xFFFFFFFF)
    with pytest.raises(ValueError, match="^last_sr_ntp_middle32 needs last_sr_at$"):
        t.report_block(11.0, 5)
    with pytest.raises(ValueError, match="^last_sr_ntp_middle32 out of range: 4294967296$"):
        t.report_block(11.0, 1 << 32, 1.0)
    with pytest.raises(ValueError, match="^ntp_timestamp out of range: 18446744073709551616$"):
        t.on_sender_report(1 << 64, 0, 1.0)
    with pytest.raises(ValueError, match="^rtp_timestamp out of range: -1$"):
        t.on_sender_report(0, -1, 1.0)
    with pytest.raises(ValueError, match="^now out of range: inf$"):
        t.on_sender_report(0, 0, float("inf"))
    with pytest.raises(ValueError, match="^last_sr_at out of range: nan$"):
        t.report_block(1.0, 0, float("nan"))
    assert t.last_sr == (0x0102030405060708, 0xAABBCCDD, 10.0)


def test_report_block_needs_a_source(track: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000)
    t.on_sender_report(5, 6, 1.0)
    with pytest.raises(ValueError, match="^no RTP packet received yet: nothing to report$"):
        t.report_block(1.0)
    t.push(rtp_packet(1, 0, VP8_SSRC), 1.0)
    assert t.last_sr == (5, 6, 1.0)  # a report before the first packet is kept for it
    assert t.report_block(2.0)[5:] == (0, 65536)


@pytest.mark.parametrize("rtcp", [twin_rtcp, native_rtcp], ids=["twin_rtcp", "native_rtcp"])
def test_report_block_feeds_build_rr(track: ModuleType, rtcp: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000)
    for seq in [65530, 65531, 65533, 65535, 0, 2]:
        t.push(rtp_packet(seq, 0, VP8_SSRC), 1.0)
    t.on_sender_report(0xE9A1B2C3D4E5F607, 0, 1.0)
    block = rtcp.RtcpReportBlock(*t.report_block(1.25))
    (rr,) = rtcp.parse_rtcp(rtcp.build_rr(0x42, [block]))
    assert rr.reports == (rtcp.RtcpReportBlock(VP8_SSRC, 3 * 256 // 9, 3, 65538, 0, 0xB2C3D4E5, 16384),)


def test_report_block_clamps_cumulative_loss_to_24_bits(track: ModuleType) -> None:
    t = track.IngestTrack("opus", 48000, cache_size=1)
    for i in range(2900):  # each step loses 2998 packets
        t.push(opus_packet(i * 2999 & 0xFFFF, 0), 1.0)
    assert t.lost == 2899 * 2998 > 0x7FFFFF
    ssrc, fraction, cumulative, highest, *_ = t.report_block(1.0)
    assert (fraction, cumulative, highest) == (2998 * 256 // 2999, 0x7FFFFF, 2899 * 2999 + 0)


# --- hostile input -----------------------------------------------------------------------------------


def test_push_argument_checks(track: ModuleType) -> None:
    t = track.IngestTrack("VP8", 90000)
    good = rtp_packet(1, 0, VP8_SSRC)
    with pytest.raises(TypeError, match="^packet must be bytes, not bytearray$"):
        t.push(bytearray(good), 1.0)
    with pytest.raises(TypeError, match="^packet must be bytes, not memoryview$"):
        t.push(memoryview(good), 1.0)
    with pytest.raises(TypeError, match="^must be real number, not str$"):
        t.push(good, "1.0")
    with pytest.raises(TypeError, match="^must be real number, not NoneType$"):
        t.push(good, None)
    for bad, text in ((float("nan"), "nan"), (float("inf"), "inf"), (-float("inf"), "-inf"), (1e305, "1e+305")):
        with pytest.raises(ValueError, match=f"^now out of range: {re.escape(text)}$"):
            t.push(good, bad)  # 1e305 s is finite, but not in 90 kHz ticks
    with pytest.raises(ValueError, match="^now out of range: 10{305}$"):
        t.push(good, 10**305)
    with pytest.raises(OverflowError):
        t.push(good, 10**400)
    assert t.packets == 0 and t.last_packet_at is None
    assert t.push(good, 5) == NEW_SSRC and t.last_packet_at == 5.0 and type(t.last_packet_at) is float
    assert t.push(rtp_packet(2, 0, VP8_SSRC), True) == 0 and t.last_packet_at == 1.0
    assert t.push(rtp_packet(3, 0, VP8_SSRC), -12.5) == 0  # any finite clock will do


RTP_BAD = [load(path) for path in sorted((RTP_FIXTURES / "bad").glob("rtp_*.hex"))]


@pytest.mark.parametrize("case", RTP_BAD, ids=[m["expect"][:40] for m in RTP_BAD])
def test_broken_rtp_header_raises_parse_rtp_message_and_changes_nothing(track: ModuleType,
                                                                        case: dict[str, Any]) -> None:
    for codec in ("VP8", "H264", "opus"):
        t = track.IngestTrack(codec, 90000)
        for p in vp8_frame(1, 0, 1, key=True):
            t.push(p, 1.0)
        before = snapshot(t, (1, 2, 3))
        with pytest.raises(ValueError) as info:
            t.push(case["data"], 2.0)
        assert f"ValueError: {info.value}" == case["expect"]
        with pytest.raises(ValueError) as parse_info:
            twin_rtp.parse_rtp(case["data"])
        assert str(parse_info.value) == str(info.value)
        assert snapshot(t, (1, 2, 3)) == before


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.stem)
def test_corpus_expectations_and_parity(path: Path) -> None:
    meta = load(path)
    twins = Twins(meta["codec"], 90000, probe=(0x0F00, 0x4E21, 0x3A1C))
    flags = twins.push(meta["data"], 1.0)
    assert flags & ~NEW_SSRC == expected_flags(meta["expect"]), path.name
    assert flags & NEW_SSRC
    # Every packet is taken (cached), whatever its payload.
    header = twin_rtp.parse_rtp(meta["data"])
    assert twins.tracks[1].get(header.sequence_number) == meta["data"]


def test_corpus_is_complete() -> None:
    codecs = [load(path)["codec"] for path in CORPUS]
    assert codecs.count("VP8") >= 12 and codecs.count("H264") >= 15 and "opus" in codecs


STREAM_SEEDS = [
    ("VP8", vp8_frame(1, 0, 1, key=True)[0]),
    ("VP8", rtp_packet(1, 0, VP8_SSRC, 96, b"\x90\xe0\x2a\x05\x20" + VP8_KEY_HEADER + filler(30, 1))),
    ("H264", rtp_packet(1, 0, H264_SSRC, 102, stap_a(SPS, PPS, b"\x65\x88\x80\x40"))),
    ("H264", h264_frame(1, 0, idr=True, params=False)[0]),
    ("H264", rtp_packet(1, 0, H264_SSRC, 102, SPS)),
    ("opus", opus_packet(1, 0)),
]


@pytest.mark.parametrize(("codec", "packet"), STREAM_SEEDS)
def test_truncated_payloads_at_every_length(codec: str, packet: bytes) -> None:
    """Cut a good packet at every length: a cut header raises parse_rtp's error, a cut payload is an
    ordinary packet; both modules agree on everything."""
    offset = twin_rtp.parse_rtp(packet).payload_offset
    for length in range(len(packet) + 1):
        twins = Twins(codec, 90000, probe=(1,))
        cut = packet[:length]
        expected = outcome(twin_rtp.parse_rtp, cut)
        results = [outcome(t.push, cut, 1.0) for t in twins.tracks]
        assert results[0] == results[1], length
        assert snapshot(twins.tracks[0], (1,)) == snapshot(twins.tracks[1], (1,))
        if expected[0] == "raise":
            assert results[0] == expected
        else:
            assert results[0][0] == "ok"
            if length < offset + 2:  # too short for any keyframe start or parameter set
                assert not results[0][1] & (KEYFRAME | SPS_PPS), length


@pytest.mark.parametrize(("codec", "packet"), STREAM_SEEDS[:5])
def test_payload_ends_where_the_padding_starts(codec: str, packet: bytes) -> None:
    """The rest of a keyframe header hidden in RTP padding must not be read: a parser that ran past the
    payload end would see a keyframe (the native module runs without bounds checks)."""
    header = twin_rtp.parse_rtp(packet)
    body = packet[header.payload_offset :][:40]
    for cut in range(len(body)):
        data = bytearray(packet[: header.payload_offset] + body)
        data[0] |= 0x20
        data.append(len(body) - cut + 1)  # padding = the rest of the payload + the count byte
        twins = Twins(codec, 90000)
        flags = twins.push(bytes(data), 1.0)
        full = Twins(codec, 90000).push(packet[: header.payload_offset] + body[:cut], 1.0)
        assert flags == full, cut


HOSTILE = [
    ("VP8", b""),
    ("VP8", b"\x90"),
    ("VP8", b"\x90\x80"),
    ("VP8", b"\x90\x80\x80"),
    ("VP8", b"\x90\xff\xff\xff\xff"),
    ("VP8", b"\xff" * 40),
    ("VP8", b"\x10" + VP8_KEY_HEADER[:9]),
    ("H264", b""),
    ("H264", b"\x7c"),
    ("H264", b"\x78"),
    ("H264", b"\x78\x00"),
    ("H264", b"\x78\x00\x01"),
    ("H264", b"\x78\xff\xff\x67"),
    ("H264", b"\x78\x00\x00\x00\x01\x65"),
    ("H264", stap_a(SPS) + b"\x00"),
    ("H264", b"\x67"),
    ("H264", b"\x68"),
    ("H264", b"\x00"),
    ("H264", b"\x1f\xff"),
    ("H264", b"\x7d\x85" + SPS),  # FU-B
    ("H264", b"\x7e\x85"),
    ("opus", b""),
]


@pytest.mark.parametrize(("codec", "payload"), HOSTILE)
def test_hostile_payloads_are_ordinary_packets(codec: str, payload: bytes) -> None:
    for pad in (0, 1, 4):
        twins = Twins(codec, 90000, probe=(9,))
        packet = rtp_packet(9, 0, 1, 96, payload, pad=pad)
        assert twins.push(packet, 1.0) == NEW_SSRC
        assert twins.tracks[0].get(9) == packet and twins.tracks[0].packets == 1


# --- reset and parity over whole streams ------------------------------------------------------------


def test_reset_forgets_everything(track: ModuleType) -> None:
    t = track.IngestTrack("H264", 90000, cache_size=64)
    fresh = snapshot(track.IngestTrack("H264", 90000, cache_size=64), (1, 2))
    for p in h264_frame(1, 0, idr=True):
        t.push(p, 1.0)
    t.push(h264_frame(1, 0, idr=True)[0], 1.0)
    t.on_sender_report(1, 2, 3.0)
    t.report_block(4.0)
    t.reset()
    assert snapshot(t, (1, 2)) == fresh
    assert t.push(h264_frame(1, 0, idr=True)[0], 5.0) == NEW_SSRC | SPS_PPS | KEYFRAME


def mixed_stream() -> list[tuple[str, Any]]:
    """A VP8 and an H.264 publisher's life: keyframes, loss, reordering, duplicates, a wrap, a stray jump,
    a source restart, sender reports and receiver report intervals."""
    steps: list[tuple[str, Any]] = []
    seq, ts, now = 65500, 4294960000, 50.0
    packets: list[bytes] = []
    for frame in range(90):
        key = frame % 30 == 0
        packets += vp8_frame(seq, ts, frame, key=key, packets=3 if key else 2, size=300)
        seq += 3 if key else 2
        ts += 3000
    for i, p in enumerate(packets):
        if i % 17 == 5:
            continue  # lost
        if i % 23 == 7 and i + 1 < len(packets):
            steps.append(("push", (packets[i + 1], now)))  # reordered pair
        steps.append(("push", (p, now + (i % 5) * 0.004)))
        if i % 29 == 3:
            steps.append(("push", (p, now)))  # duplicate
        if i % 40 == 0:
            steps.append(("on_sender_report", ((int(now) << 32) + i, ts & 0xFFFFFFFF, now)))
        if i % 31 == 0:
            steps.append(("report_block", (now,)))
        if i == 100:
            steps.append(("push", (rtp_packet(30000, 0, VP8_SSRC), now)))  # stray jump
        now += 1 / 90
    for p in vp8_frame(500, 100, 1, key=False, ssrc=0xCAFE) + vp8_frame(503, 3100, 2, key=True, ssrc=0xCAFE):
        steps.append(("push", (p, now)))
    steps.append(("report_block", (now + 1, 0x1234, now)))
    return steps


def h264_stream() -> list[tuple[str, Any]]:
    steps: list[tuple[str, Any]] = []
    seq, ts, now = 1, 0, 1.0
    for frame in range(120):
        idr = frame % 60 == 0
        for p in h264_frame(seq, ts, idr=idr, packets=4 if idr else 2, size=400):
            steps.append(("push", (p, now)))
            seq += 1
        if frame % 9 == 4:
            steps.append(("push", (p, now + 0.001)))  # the newest packet again
        if frame == 70:  # the IDR start overtakes its STAP-A
            frame_packets = h264_frame(seq, ts + 1, idr=True, packets=2)
            steps += [("push", (frame_packets[1], now)), ("push", (frame_packets[0], now)),
                      ("push", (frame_packets[2], now))]
            seq += 3
        ts += 3000
        now += 1 / 30
        if frame % 25 == 0:
            steps.append(("report_block", (now,)))
    steps.append(("reset", ()))
    steps += [("push", (p, now)) for p in h264_frame(7, 0, idr=True)]
    return steps


ALL_VP8 = KEYFRAME | NEW_SSRC | OUT_OF_ORDER | DUPLICATE | SEQ_JUMP
ALL_H264 = KEYFRAME | SPS_PPS | NEW_SSRC | OUT_OF_ORDER | DUPLICATE


@pytest.mark.parametrize(
    ("codec", "steps", "kwargs", "seen"),
    [
        ("VP8", mixed_stream(), {}, ALL_VP8),
        ("VP8", mixed_stream(), {"cache_size": 8, "gop_max_packets": 20, "gop_max_bytes": 5000}, ALL_VP8),
        ("H264", h264_stream(), {}, ALL_H264),
        ("H264", h264_stream(), {"cache_size": 2, "gop_max_packets": 3}, ALL_H264),
    ],
    ids=["vp8", "vp8-small-bounds", "h264", "h264-small-bounds"],
)
def test_whole_streams_agree(codec: str, steps: list[tuple[str, Any]], kwargs: dict[str, Any], seen: int) -> None:
    twins = Twins(codec, 90000, probe=(0, 1, 2, 65535, 65534, 100, 500, 503), **kwargs)
    keyframes = overflows = flags = 0
    for name, args in steps:
        result = twins.call(name, *args)
        if name == "push":
            flags |= result
        keyframes = max(keyframes, twins.tracks[0].keyframes)
        overflows = max(overflows, twins.tracks[0].gop_overflows)
    assert keyframes >= 3
    assert flags & seen == seen, bin(flags)
    assert (overflows > 0) == bool(kwargs)
