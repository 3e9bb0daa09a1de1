"""RTP/RTCP parsing and rewriting: the Python twin (media/rtp.py) and the native module
(media/_native/rtp.pyx) against known answers, the committed corpus (tests/fixtures/rtp/), hostile input,
and each other. Randomized parity lives in test_rtp_fuzz.py."""

from __future__ import annotations

import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import media._native.rtp as native_rtp
import media.rtp as twin_rtp

MODULES = [twin_rtp, native_rtp]
FIXTURES = Path(__file__).parent / "fixtures" / "rtp"

PUBLIC_API = (
    "RTP_VERSION RTP_HEADER_LENGTH RTCP_HEADER_LENGTH RTCP_SR RTCP_RR RTCP_SDES RTCP_BYE RTCP_APP RTCP_RTPFB "
    "RTCP_PSFB RTPFB_NACK PSFB_PLI PSFB_FIR PSFB_AFB SDES_CNAME is_rtcp RtpHeader parse_rtp rewrite_rtp "
    "RtpRewriter RtcpReportBlock RtcpSenderReport RtcpReceiverReport RtcpSdesChunk RtcpSdes RtcpBye RtcpNack "
    "RtcpPli RtcpFir RtcpRemb RtcpFeedback RtcpUnknown RtcpPacket iter_rtcp parse_rtcp rewrite_rtcp_ssrcs "
    "build_pli build_fir build_nack build_sr build_rr build_sdes build_remb"
).split()


@pytest.fixture(params=MODULES, ids=["twin", "native"])
def rtp(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


# --- helpers ------------------------------------------------------------------------------------------


def norm(value: Any) -> Any:
    """A plain, comparable form of any result, so twin and native objects can be compared."""
    if isinstance(value, bytes | bytearray | memoryview):
        return ("bytes", bytes(value))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(norm(item) for item in value))
    fields = getattr(type(value), "__match_args__", None)
    if fields is not None:
        derived = ("packet_type", "count", "ssrc", "cname", "lost", "extension_length")
        extra = tuple((name, norm(getattr(value, name))) for name in derived if hasattr(value, name))
        return (type(value).__name__, tuple((name, norm(getattr(value, name))) for name in fields), extra)
    return value


def outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    try:
        return ("ok", norm(fn(*args, **kwargs)))
    except Exception as exc:  # noqa: BLE001 - the exception is the result being compared
        return ("raise", type(exc).__name__, str(exc))


def iter_outcome(mod: ModuleType, data: bytes) -> tuple[Any, ...]:
    """What iter_rtcp yields before it stops or raises, and how it ends."""
    got = []
    try:
        for packet in mod.iter_rtcp(data):
            got.append(norm(packet))
    except Exception as exc:  # noqa: BLE001
        return (tuple(got), type(exc).__name__, str(exc))
    return (tuple(got), "ok")


def rewrite_outcome(fn: Any, data: bytes, *args: Any) -> tuple[Any, bytes]:
    buf = bytearray(data)
    return outcome(fn, buf, *args), bytes(buf)


def assert_parity(name: str, *args: Any) -> Any:
    results = [outcome(getattr(mod, name), *args) for mod in MODULES]
    assert results[0] == results[1], (name, args)
    return results[0]


def load(path: Path) -> tuple[str, str, bytes]:
    kind = expect = ""
    hexed = []
    for line in path.read_text().splitlines():
        if line.startswith("# kind:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("# expect:"):
            expect = line.split(":", 1)[1].strip()
        elif not line.startswith("#"):
            hexed.append(line)
    return kind, expect, bytes.fromhex("".join(hexed))


GOOD = sorted((FIXTURES / "good").glob("*.hex"))
BAD = sorted((FIXTURES / "bad").glob("*.hex"))
GOOD_RTP = [load(path)[2] for path in GOOD if load(path)[0] == "rtp"]
GOOD_RTCP = [load(path)[2] for path in GOOD if load(path)[0] == "rtcp"]


def rtp_packet(
    first: int = 0x80,
    second: int = 96,
    seq: int = 1,
    ts: int = 2,
    ssrc: int = 3,
    csrcs: tuple[int, ...] = (),
    ext: tuple[int, bytes] | None = None,
    payload: bytes = b"",
    pad: int = 0,
) -> bytes:
    out = struct.pack("!BBHII", first | len(csrcs), second, seq, ts, ssrc)
    out += b"".join(struct.pack("!I", csrc) for csrc in csrcs)
    if ext is not None:
        out += struct.pack("!HH", ext[0], len(ext[1]) // 4) + ext[1]
    out += payload
    if pad:
        out += bytes(pad - 1) + bytes([pad])
    return out


# --- API ----------------------------------------------------------------------------------------------


def test_both_modules_export_the_same_api() -> None:
    for name in PUBLIC_API:
        assert hasattr(twin_rtp, name), name
        assert hasattr(native_rtp, name), name
    for name in PUBLIC_API:
        if name.isupper():
            assert getattr(twin_rtp, name) == getattr(native_rtp, name), name


def test_native_module_is_compiled() -> None:
    assert native_rtp.__file__ is not None
    assert not native_rtp.__file__.endswith(".py")


def test_result_classes_have_the_same_fields_and_class_constants() -> None:
    for name in PUBLIC_API:
        twin_cls, native_cls = getattr(twin_rtp, name), getattr(native_rtp, name)
        if isinstance(twin_cls, type) and hasattr(twin_cls, "__match_args__"):
            assert twin_cls.__match_args__ == native_cls.__match_args__, name
            for const in ("packet_type", "count"):
                value = twin_cls.__dict__.get(const)
                if isinstance(value, int):
                    assert getattr(native_cls, const) == value, (name, const)


def test_results_compare_and_print_like_dataclasses(rtp: ModuleType) -> None:
    block = rtp.RtcpReportBlock(1, 2, -3, 4, 5, 6, 7)
    assert block == rtp.RtcpReportBlock(1, 2, -3, 4, 5, 6, 7)
    assert block != rtp.RtcpReportBlock(1, 2, -3, 4, 5, 6, 8)
    assert repr(block) == (
        "RtcpReportBlock(ssrc=1, fraction_lost=2, packets_lost=-3, highest_sequence=4, jitter=5, lsr=6, dlsr=7)"
    )
    header = rtp.RtpHeader.parse(GOOD_RTP[0])
    assert header == rtp.parse_rtp(GOOD_RTP[0])
    assert repr(twin_rtp.parse_rtp(GOOD_RTP[0])) == repr(native_rtp.parse_rtp(GOOD_RTP[0]))
    match rtp.parse_rtcp(rtp.build_pli(1, 2))[0]:
        case rtp.RtcpPli(ssrc=1, media_ssrc=media):
            assert media == 2
        case _:
            pytest.fail("PLI did not match")


# --- RTP known answers --------------------------------------------------------------------------------


def test_parse_chrome_opus_known_fields(rtp: ModuleType) -> None:
    data = load(FIXTURES / "good" / "rtp_chrome_opus.hex")[2]
    h = rtp.parse_rtp(data)
    assert (h.padding, h.extension, h.marker) == (False, True, False)
    assert (h.payload_type, h.sequence_number, h.timestamp, h.ssrc) == (111, 0x3A1C, 0x8F1B2C40, 0x5D2E0F11)
    assert h.csrc == ()
    assert h.extension_profile == 0xBEDE
    assert h.extension_data == bytes.fromhex("10a4221b7c3e3104d2403000")
    assert h.extension_length == 12
    assert (h.payload_offset, h.payload_length, h.padding_length) == (28, 61, 0)
    assert len(data) == 89
    assert data[h.payload_offset] == 0x78  # Opus TOC byte


def test_parse_padded_h264_with_marker(rtp: ModuleType) -> None:
    data = load(FIXTURES / "good" / "rtp_chrome_h264_fua_padded.hex")[2]
    h = rtp.parse_rtp(data)
    assert (h.padding, h.marker, h.payload_type, h.sequence_number) == (True, True, 102, 0xFFFF)
    assert h.padding_length == 4
    assert h.payload_offset + h.payload_length + 4 == len(data)
    assert data[h.payload_offset : h.payload_offset + 2] == bytes.fromhex("7c45")


def test_parse_padding_only_probe_has_empty_payload(rtp: ModuleType) -> None:
    data = load(FIXTURES / "good" / "rtp_padding_only_probe.hex")[2]
    h = rtp.parse_rtp(data)
    assert (h.payload_offset, h.payload_length, h.padding_length) == (12, 0, 224)


def test_parse_csrcs_and_two_byte_extension(rtp: ModuleType) -> None:
    h = rtp.parse_rtp(load(FIXTURES / "good" / "rtp_mixer_csrcs.hex")[2])
    assert h.csrc == (0x11111111, 0x22222222)
    assert (h.payload_offset, h.payload_length) == (20, 160)
    h = rtp.parse_rtp(load(FIXTURES / "good" / "rtp_two_byte_extension.hex")[2])
    assert (h.extension_profile, h.extension_data) == (0x1000, bytes.fromhex("0503616263000000"))
    assert h.payload_offset == 24


@pytest.mark.parametrize("data", GOOD_RTP)
def test_header_bytes_round_trip(rtp: ModuleType, data: bytes) -> None:
    h = rtp.parse_rtp(data)
    assert bytes(h) == data[: h.payload_offset]


def test_header_bytes_from_fields(rtp: ModuleType) -> None:
    h = rtp.RtpHeader(
        marker=True,
        payload_type=96,
        sequence_number=0x1234,
        timestamp=0x89ABCDEF,
        ssrc=0x01020304,
        csrc=(5,),
        extension=True,
        extension_profile=0xBEDE,
        extension_data=bytes.fromhex("10ff0000"),
    )
    assert bytes(h).hex() == "91e0123489abcdef0102030400000005bede000110ff0000"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"payload_type": 128}, "payload_type out of range: 128"),
        ({"sequence_number": 65536}, "sequence_number out of range: 65536"),
        ({"timestamp": -1}, "timestamp out of range: -1"),
        ({"ssrc": 1 << 32}, "ssrc out of range: 4294967296"),
        ({"csrc": tuple(range(16))}, "too many CSRCs: 16, at most 15"),
        ({"extension": True, "extension_data": b"abc"}, "extension_data of 3 bytes is not a 16-bit count"),
        ({"extension": True, "extension_profile": 0x10000}, "extension_profile out of range: 65536"),
    ],
)
def test_header_bytes_rejects_out_of_range_fields(rtp: ModuleType, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bytes(rtp.RtpHeader(**fields))


def test_is_rtcp_classifies_by_second_byte(rtp: ModuleType) -> None:
    # RFC 5761 section 4: RTCP packet types 192..223 with the marker bit masked are PT 64..95.
    for packet_type in (192, 200, 201, 205, 206, 207, 223):
        assert rtp.is_rtcp(bytes([0x80, packet_type]))
    for second in (0, 96, 111, 127, 0x80 | 96, 0x80 | 111, 191 & 0x7F, 224):
        assert not rtp.is_rtcp(bytes([0x80, second]))
    assert not rtp.is_rtcp(b"")
    assert not rtp.is_rtcp(b"\x80")
    for data in GOOD_RTP:
        assert not rtp.is_rtcp(data)
    for data in GOOD_RTCP:
        assert rtp.is_rtcp(data)
        assert rtp.is_rtcp(bytearray(data))
        assert rtp.is_rtcp(memoryview(data))


def test_rewrite_rtp_known_answer_with_wraparound(rtp: ModuleType) -> None:
    buf = bytearray.fromhex("80e0ffffffffffff11223344") + b"abcd"
    seq = rtp.rewrite_rtp(buf, 0xDEADBEEF, 111, 2, 3)
    # seq 0xffff + 2 wraps to 1 (mod 2**16), ts 0xffffffff + 3 wraps to 2 (mod 2**32), marker kept.
    assert seq == 1
    assert buf.hex() == "80ef000100000002deadbeef61626364"


def test_rewrite_rtp_negative_and_large_offsets(rtp: ModuleType) -> None:
    buf = bytearray(rtp_packet(second=96, seq=0, ts=0, ssrc=1))
    assert rtp.rewrite_rtp(buf, 1, 96, -1, -1) == 0xFFFF
    assert buf.hex() == "8060ffffffffffff00000001"
    assert rtp.rewrite_rtp(buf, 1, 96, 3 * 65536 + 5, (1 << 32) * 7 + 9) == 4
    assert buf.hex() == "806000040000000800000001"


def test_rewrite_rtp_clears_marker_only_when_it_was_clear(rtp: ModuleType) -> None:
    buf = bytearray(rtp_packet(second=0x80 | 111))
    rtp.rewrite_rtp(buf, 9, 96, 0, 0)
    assert buf[1] == 0x80 | 96
    buf = bytearray(rtp_packet(second=111))
    rtp.rewrite_rtp(buf, 9, 0, 0, 0)
    assert buf[1] == 0


def test_rewrite_rtp_leaves_extensions_and_payload_alone(rtp: ModuleType) -> None:
    for data in GOOD_RTP:
        buf = bytearray(data)
        rtp.rewrite_rtp(buf, 0x01020304, 100, 10, 20)
        assert buf[12:] == data[12:]
        assert buf[0] == data[0]


def test_rewrite_rtp_accepts_a_writable_memoryview_slice(rtp: ModuleType) -> None:
    datagram = bytearray(b"xxxx" + rtp_packet(seq=10, ts=20, ssrc=30) + b"tail")
    view = memoryview(datagram)[4:-4]
    assert rtp.rewrite_rtp(view, 7, 8, 1, 1) == 11
    assert datagram == bytearray(b"xxxx" + rtp_packet(second=8, seq=11, ts=21, ssrc=7) + b"tail")


def test_rewrite_rtp_rejects_read_only_buffers(rtp: ModuleType) -> None:
    with pytest.raises(TypeError, match="writable buffer"):
        rtp.rewrite_rtp(rtp_packet(), 1, 96, 0, 0)
    with pytest.raises(TypeError, match="writable buffer"):
        rtp.rewrite_rtp(memoryview(rtp_packet()), 1, 96, 0, 0)


@pytest.mark.parametrize(
    ("ssrc", "payload_type", "message"),
    [(-1, 96, "ssrc out of range: -1"), (1 << 32, 96, "ssrc out of range"), (1, 128, "payload_type out of range")],
)
def test_rewrite_rtp_rejects_bad_arguments(rtp: ModuleType, ssrc: int, payload_type: int, message: str) -> None:
    buf = bytearray(rtp_packet())
    with pytest.raises(ValueError, match=message):
        rtp.rewrite_rtp(buf, ssrc, payload_type, 0, 0)
    assert buf == rtp_packet()


# --- RtpRewriter -------------------------------------------------------------------------------------


def send(rewriter: Any, ssrc: int, seq: int, ts: int, now: float | None = None, marker: bool = False) -> bytes:
    buf = bytearray(rtp_packet(second=(0x80 if marker else 0) | 111, seq=seq, ts=ts, ssrc=ssrc))
    out_seq = rewriter.rewrite(buf, now)
    assert out_seq == struct.unpack_from("!H", buf, 2)[0]
    return bytes(buf)


def fields(packet: bytes) -> tuple[int, int, int, int]:
    _, second, seq, ts, ssrc = struct.unpack_from("!BBHII", packet)
    return second, seq, ts, ssrc


def test_rewriter_first_source_passes_through_with_its_numbering(rtp: ModuleType) -> None:
    r = rtp.RtpRewriter(0xAAAA, 96)
    assert (r.in_ssrc, r.last_seq, r.last_timestamp) == (None, None, None)
    assert fields(send(r, 1, 100, 1000, marker=True)) == (0x80 | 96, 100, 1000, 0xAAAA)
    assert fields(send(r, 1, 101, 4000)) == (96, 101, 4000, 0xAAAA)
    assert (r.in_ssrc, r.last_seq, r.last_timestamp, r.switches) == (1, 101, 4000, 0)
    assert (r.packet_count, r.byte_count) == (2, 24)


def test_rewriter_switch_uses_elapsed_time(rtp: ModuleType) -> None:
    r = rtp.RtpRewriter(0xAAAA, 96, clock_rate=90000)
    send(r, 1, 100, 1000, now=1.0)
    send(r, 1, 101, 4000, now=1.25)
    # New SSRC a quarter second later: seq continues at 102, ts advances by 0.25 s * 90 kHz.
    assert fields(send(r, 2, 5000, 777, now=1.5))[1:] == (102, 4000 + 22500, 0xAAAA)
    assert fields(send(r, 2, 5001, 3777, now=1.75))[1:] == (103, 4000 + 22500 + 3000, 0xAAAA)
    assert r.switches == 1
    assert r.seq_offset == (102 - 5000) & 0xFFFF
    assert r.ts_offset == 4000 + 22500 - 777


def test_rewriter_switch_without_time_uses_fixed_step(rtp: ModuleType) -> None:
    r = rtp.RtpRewriter(7, 111, clock_rate=48000)
    assert r.switch_ts_step == 960  # 20 ms at 48 kHz
    send(r, 1, 10, 500)
    assert fields(send(r, 2, 60000, 123456))[1:] == (11, 500 + 960, 7)
    r2 = rtp.RtpRewriter(7, 111, clock_rate=48000, switch_ts_step=3)
    send(r2, 1, 10, 500, now=5.0)
    assert fields(send(r2, 2, 0, 0, now=5.0))[1:] == (11, 503, 7)  # no time elapsed: fixed step


def test_rewriter_reset_rebases_a_source_that_kept_its_ssrc(rtp: ModuleType) -> None:
    r = rtp.RtpRewriter(7, 96)
    send(r, 1, 100, 1000)
    r.reset()
    assert r.in_ssrc is None
    assert fields(send(r, 1, 9000, 50))[1:3] == (101, 1000 + 1800)
    assert r.switches == 1


def test_rewriter_keeps_reordering_and_continues_after_the_highest(rtp: ModuleType) -> None:
    r = rtp.RtpRewriter(7, 96)
    assert [fields(send(r, 1, seq, seq * 10))[1] for seq in (100, 102, 101)] == [100, 102, 101]
    assert (r.last_seq, r.last_timestamp) == (102, 1020)
    assert fields(send(r, 2, 7, 7))[1:3] == (103, 1020 + 1800)


def test_rewriter_wraps_across_a_switch(rtp: ModuleType) -> None:
    r = rtp.RtpRewriter(7, 96)
    send(r, 1, 0xFFFF, 0xFFFFFFFF - 100)
    assert fields(send(r, 2, 500, 0))[1:3] == (0, 1799 - 100)
    assert fields(send(r, 2, 501, 90))[1:3] == (1, 1799 - 100 + 90)


def test_rewriter_late_packet_of_the_old_source_is_a_switch(rtp: ModuleType) -> None:
    r = rtp.RtpRewriter(7, 96)
    send(r, 1, 100, 0)
    send(r, 2, 5000, 0)
    assert fields(send(r, 1, 99, 0))[1] == 102
    assert r.switches == 2


def test_rewriter_bad_packet_changes_nothing(rtp: ModuleType) -> None:
    r = rtp.RtpRewriter(7, 96)
    send(r, 1, 100, 1000)
    bad = bytearray(b"\x40" + rtp_packet()[1:])
    for data in (bytearray(), bytearray(b"\x80"), bad):
        before = bytes(data)
        with pytest.raises(ValueError):
            r.rewrite(data, 1.0)
        assert data == before
    assert (r.packet_count, r.in_ssrc, r.last_seq) == (1, 1, 100)
    with pytest.raises(TypeError, match="writable buffer"):
        r.rewrite(rtp_packet())


def test_rewriter_settings_are_validated(rtp: ModuleType) -> None:
    with pytest.raises(ValueError, match="out_ssrc out of range"):
        rtp.RtpRewriter(-1, 96)
    with pytest.raises(ValueError, match="out_payload_type out of range"):
        rtp.RtpRewriter(1, 200)
    with pytest.raises(ValueError, match="clock_rate out of range"):
        rtp.RtpRewriter(1, 96, clock_rate=0)
    r = rtp.RtpRewriter(1, 96)
    r.out_payload_type = 100
    r.out_ssrc = 0xFFFFFFFF
    assert fields(send(r, 1, 1, 1))[0::3] == (100, 0xFFFFFFFF)
    with pytest.raises(ValueError):
        r.out_payload_type = 128
    with pytest.raises(AttributeError):
        r.packet_count = 5


# --- RTCP known answers -------------------------------------------------------------------------------


def test_build_pli_known_bytes(rtp: ModuleType) -> None:
    assert rtp.build_pli(0x11223344, 0x55667788).hex() == "81ce00021122334455667788"


def test_build_fir_known_bytes(rtp: ModuleType) -> None:
    # RFC 5104 section 4.3.1.2: the header's media source SSRC is 0, the target is in the FCI entry.
    assert rtp.build_fir(1, 0x0A0B0C0D, 7).hex() == "84ce000400000001000000000a0b0c0d07000000"


def test_build_nack_known_bytes_across_wraparound(rtp: ModuleType) -> None:
    data = rtp.build_nack(1, 2, [65535, 0, 1, 17])
    assert data.hex() == "81cd00040000000100000002ffff000300110000"
    (nack,) = rtp.parse_rtcp(data)
    assert nack.items == ((0xFFFF, 3), (0x11, 0))
    assert nack.lost == [65535, 0, 1, 17]


def test_build_nack_packs_a_full_bitmask(rtp: ModuleType) -> None:
    lost = list(range(1000, 1017)) + [1000]  # PID + 16 following; a duplicate is dropped
    data = rtp.build_nack(1, 2, lost)
    assert data[12:].hex() == "03e8ffff"
    assert rtp.parse_rtcp(data)[0].lost == list(range(1000, 1017))


def test_build_nack_rejects_empty_and_bad_numbers(rtp: ModuleType) -> None:
    with pytest.raises(ValueError, match="at least one lost sequence number"):
        rtp.build_nack(1, 2, [])
    with pytest.raises(ValueError, match="lost sequence number out of range: 65536"):
        rtp.build_nack(1, 2, [65536])


def test_build_sr_known_bytes(rtp: ModuleType) -> None:
    data = rtp.build_sr(0x01020304, 0x0102030405060708, 0xAABBCCDD, 10, 1000)
    assert data.hex() == "80c80006010203040102030405060708aabbccdd0000000a000003e8"
    block = rtp.RtcpReportBlock(5, 0x80, -1, 0x00010002, 3, 4, 5)
    data = rtp.build_sr(1, 2, 3, 4, 5, [block])
    assert data[:4].hex() == "81c8000c"
    assert data[28:].hex() == "0000000580ffffff00010002000000030000000400000005"
    (sr,) = rtp.parse_rtcp(data)
    assert sr.reports == (block,)
    assert (sr.ssrc, sr.ntp_timestamp, sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (1, 2, 3, 4, 5)


def test_build_rr_and_sdes_known_bytes(rtp: ModuleType) -> None:
    assert rtp.build_rr(9).hex() == "80c9000100000009"
    assert rtp.build_sdes(1, "ab").hex() == "81ca0003000000010102616200000000"
    assert rtp.build_sdes(1, "abc").hex() == "81ca0003000000010103616263000000"
    (sdes,) = rtp.parse_rtcp(rtp.build_sdes(0x42, "user@host"))
    assert (sdes.ssrc, sdes.count, sdes.chunks[0].cname) == (0x42, 1, "user@host")


def test_build_remb_known_bytes(rtp: ModuleType) -> None:
    # 1 500 000 = 187 500 << 3: exponent 3, mantissa 0x2dc6c.
    data = rtp.build_remb(1, 1500000, [2])
    assert data.hex() == "8fce0005000000010000000052454d42010edc6c00000002"
    (remb,) = rtp.parse_rtcp(data)
    assert (remb.bitrate, remb.ssrcs, remb.packet_type, remb.count) == (1500000, (2,), 206, 15)
    assert rtp.parse_rtcp(rtp.build_remb(1, (1 << 64) - 1, []))[0].bitrate == 0x3FFFF << 46


def test_builders_reject_out_of_range_values(rtp: ModuleType) -> None:
    with pytest.raises(ValueError, match="sender_ssrc out of range"):
        rtp.build_pli(1 << 32, 1)
    with pytest.raises(ValueError, match="seq_nr out of range: 256"):
        rtp.build_fir(1, 2, 256)
    with pytest.raises(ValueError, match="packets_lost out of range"):
        rtp.build_rr(1, [rtp.RtcpReportBlock(packets_lost=1 << 23)])
    with pytest.raises(ValueError, match="at most 31 report blocks"):
        rtp.build_rr(1, [rtp.RtcpReportBlock()] * 32)
    with pytest.raises(ValueError, match="longer than 255"):
        rtp.build_sdes(1, "x" * 256)
    with pytest.raises(TypeError):
        rtp.build_pli(1.5, 1)


def test_parse_chrome_sr_sdes(rtp: ModuleType) -> None:
    sr, sdes = rtp.parse_rtcp(load(FIXTURES / "good" / "rtcp_chrome_sr_sdes.hex")[2])
    assert isinstance(sr, rtp.RtcpSenderReport) and isinstance(sdes, rtp.RtcpSdes)
    assert (sr.packet_type, sr.count, sr.ssrc) == (200, 0, 0x5D2E0F11)
    assert (sr.ntp_timestamp, sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (
        0xE9A1B2C3D4E5F607,
        0x8F1B2C40,
        1523,
        98772,
    )
    assert (sdes.packet_type, sdes.ssrc, sdes.chunks[0].cname) == (202, 0x5D2E0F11, "mEq1nl0mNXFxWb3w")


def test_parse_every_supported_type(rtp: ModuleType) -> None:
    def packets(name: str) -> list[Any]:
        return list(rtp.parse_rtcp(load(FIXTURES / "good" / name)[2]))

    rr, sdes, remb = packets("rtcp_chrome_rr_remb.hex")
    assert rr.reports[0] == rtp.RtcpReportBlock(0x1B2C3D4E, 12, 345, 0x00010F01, 27, 0xB2C3D4E5, 0x00020000)
    assert (remb.bitrate, remb.ssrcs) == (1500000, (0x1B2C3D4E, 0x5D2E0F11))
    _, nack = packets("rtcp_nack.hex")
    assert (nack.packet_type, nack.count, nack.media_ssrc) == (205, 1, 0x1B2C3D4E)
    assert nack.lost == [0x0F00, 0x0F02, 0x0F11, 0x2000]
    _, pli = packets("rtcp_pli.hex")
    assert (pli.packet_type, pli.count, pli.ssrc, pli.media_ssrc) == (206, 1, 1, 0x1B2C3D4E)
    (fir,) = packets("rtcp_fir_two_entries.hex")
    assert (fir.count, fir.entries) == (4, ((0x1B2C3D4E, 7), (0x0A0B0C0D, 8)))
    (tcc,) = packets("rtcp_transport_cc.hex")
    assert isinstance(tcc, rtp.RtcpFeedback)
    assert (tcc.packet_type, tcc.fmt, tcc.count, tcc.media_ssrc) == (205, 15, 15, 0x1B2C3D4E)
    assert tcc.fci == bytes.fromhex("0f0000030001a2b320030000")
    *_, bye = packets("rtcp_sr_sdes_bye.hex")
    assert (bye.packet_type, bye.sources, bye.reason, bye.ssrc) == (203, (0x5D2E0F11,), b"shutdown", 0x5D2E0F11)
    _, app, xr = packets("rtcp_app_xr.hex")
    assert (app.packet_type, app.count, app.ssrc, app.body[4:8]) == (204, 1, 1, b"test")
    assert (xr.packet_type, xr.ssrc) == (207, 1)
    _, padded = packets("rtcp_padded_last.hex")
    assert padded.chunks[0].items == ((1, b"xy"),)


def test_iter_rtcp_yields_until_the_bad_packet(rtp: ModuleType) -> None:
    data = rtp.build_rr(1) + rtp.build_pli(1, 2) + b"\x81\xcd\x00\x05"
    walk = rtp.iter_rtcp(data)
    assert next(walk) == rtp.RtcpReceiverReport(1, ())
    assert next(walk) == rtp.RtcpPli(1, 2)
    with pytest.raises(ValueError, match="RTCP length field says 24 bytes at offset 20, only 4 remain"):
        next(walk)


def test_rewrite_rtcp_ssrcs_known_answer(rtp: ModuleType) -> None:
    pub, view, srv = 0x1B2C3D4E, 0xAABBCCDD, 0x42
    before = (
        rtp.build_rr(9, [rtp.RtcpReportBlock(ssrc=view, jitter=3)])
        + rtp.build_nack(9, view, [5, 6])
        + rtp.build_pli(9, view)
        + rtp.build_fir(9, view, 1)
        + rtp.build_remb(9, 1000, [view, 5])
        + rtp.build_sdes(9, "x")
    )
    after = (
        rtp.build_rr(srv, [rtp.RtcpReportBlock(ssrc=pub, jitter=3)])
        + rtp.build_nack(srv, pub, [5, 6])
        + rtp.build_pli(srv, pub)
        + rtp.build_fir(srv, pub, 1)
        + rtp.build_remb(srv, 1000, [pub, 5])
        + rtp.build_sdes(9, "x")
    )
    buf = bytearray(before)
    assert rtp.rewrite_rtcp_ssrcs(buf, {view: pub}, sender_ssrc=srv) == 10
    assert bytes(buf) == after
    buf = bytearray(before)
    assert rtp.rewrite_rtcp_ssrcs(buf, {view: pub}) == 5
    assert rtp.rewrite_rtcp_ssrcs(buf, {}) == 0


def test_rewrite_rtcp_ssrcs_validates_before_writing(rtp: ModuleType) -> None:
    good = rtp.build_pli(1, 2)
    for data in (good + b"\x81\xce\x00\x09", good + b"\x81", b""):
        buf = bytearray(data)
        with pytest.raises(ValueError):
            rtp.rewrite_rtcp_ssrcs(buf, {2: 3}, sender_ssrc=4)
        assert buf == data
    buf = bytearray(good)
    with pytest.raises(ValueError, match="mapping value out of range"):
        rtp.rewrite_rtcp_ssrcs(buf, {2: -3})
    with pytest.raises(TypeError, match="writable buffer"):
        rtp.rewrite_rtcp_ssrcs(good, {2: 3})
    assert buf == good


# --- the committed corpus -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOOD + BAD, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_corpus_expectation_and_parity(path: Path) -> None:
    kind, expect, data = load(path)
    name = "parse_rtp" if kind == "rtp" else "parse_rtcp"
    for buffer_type in (bytes, bytearray, memoryview):
        result = assert_parity(name, buffer_type(data))
        if expect == "ok":
            assert result[0] == "ok", result
        else:
            assert result[0] == "raise" and f"{result[1]}: {result[2]}" == expect, result
    if kind == "rtcp":
        assert iter_outcome(twin_rtp, data) == iter_outcome(native_rtp, data)
    assert twin_rtp.is_rtcp(data) == native_rtp.is_rtcp(data)


def test_corpus_is_complete() -> None:
    assert len(GOOD_RTP) >= 8 and len(GOOD_RTCP) >= 9 and len(BAD) >= 30


@pytest.mark.parametrize("path", GOOD + BAD, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_corpus_rewrites_agree(path: Path) -> None:
    _, _, data = load(path)
    twin, native = (rewrite_outcome(mod.rewrite_rtp, data, 0x01020304, 100, -7, 1 << 31) for mod in MODULES)
    assert twin == native
    twin, native = (rewrite_outcome(mod.rewrite_rtcp_ssrcs, data, {0x1B2C3D4E: 5, 0: 6}, 0x42) for mod in MODULES)
    assert twin == native


# --- hostile input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", GOOD_RTP)
def test_rtp_truncated_at_every_length(data: bytes) -> None:
    payload_offset = twin_rtp.parse_rtp(data).payload_offset
    for length in range(len(data) + 1):
        prefix = data[:length]
        result = assert_parity("parse_rtp", prefix)
        if length < payload_offset:
            assert result[:2] == ("raise", "ValueError"), (length, result)
        # Read through a window on the full packet: reading past the window would see real bytes
        # (a fitting extension, a different padding count) and change the answer.
        assert outcome(native_rtp.parse_rtp, memoryview(data)[:length]) == result
        twin, native = (rewrite_outcome(mod.rewrite_rtp, prefix, 1, 2, 3, 4) for mod in MODULES)
        assert twin == native
        if length < 12:
            assert twin[0][:2] == ("raise", "ValueError") and twin[1] == prefix


@pytest.mark.parametrize("data", GOOD_RTCP)
def test_rtcp_truncated_at_every_length(data: bytes) -> None:
    boundaries = {0}
    off = 0
    while off < len(data):
        off += (struct.unpack_from("!H", data, off + 2)[0] + 1) * 4
        boundaries.add(off)
    for length in range(len(data) + 1):
        prefix = data[:length]
        result = assert_parity("parse_rtcp", prefix)
        if length in boundaries and length:
            assert result[0] == "ok", (length, result)
        else:
            assert result[:2] == ("raise", "ValueError"), (length, result)
        assert outcome(native_rtp.parse_rtcp, memoryview(data)[:length]) == result
        assert iter_outcome(twin_rtp, prefix) == iter_outcome(native_rtp, prefix)
        twin, native = (rewrite_outcome(mod.rewrite_rtcp_ssrcs, prefix, {1: 2}, 3) for mod in MODULES)
        assert twin == native
        if result[0] == "raise":
            assert twin[1] == prefix


@pytest.mark.parametrize("data", GOOD_RTCP)
def test_rtcp_lying_length_fields(data: bytes) -> None:
    offsets = []
    off = 0
    while off < len(data):
        offsets.append(off)
        off += (struct.unpack_from("!H", data, off + 2)[0] + 1) * 4
    for off in offsets:
        words = struct.unpack_from("!H", data, off + 2)[0]
        for lie in {0, 1, 2, words - 1, words + 1, words + 2, 0x7FFF, 0xFFFF} - {words}:
            if lie < 0:
                continue
            bad = bytearray(data)
            struct.pack_into("!H", bad, off + 2, lie)
            result = assert_parity("parse_rtcp", bytes(bad))
            assert result[0] in ("ok", "raise")
            if off + (lie + 1) * 4 > len(data):
                assert result[:2] == ("raise", "ValueError")
                assert "RTCP length field says" in result[2]
            twin, native = (rewrite_outcome(mod.rewrite_rtcp_ssrcs, bytes(bad), {1: 2}, 3) for mod in MODULES)
            assert twin == native


def test_rtp_padding_counts(rtp: ModuleType) -> None:
    base = rtp_packet(first=0xA0, payload=b"abcdef")  # padding flag, 6-byte payload
    for count in range(256):
        data = base[:-1] + bytes([count])
        if count == 0:
            with pytest.raises(ValueError, match="^RTP padding count 0 is invalid$"):
                rtp.parse_rtp(data)
        elif count > 6:
            with pytest.raises(ValueError, match=f"^RTP padding count {count} exceeds payload of 6 bytes$"):
                rtp.parse_rtp(data)
        else:
            h = rtp.parse_rtp(data)
            assert (h.payload_length, h.padding_length) == (6 - count, count)
    with pytest.raises(ValueError, match="^RTP padding flag set but packet has no payload$"):
        rtp.parse_rtp(rtp_packet(first=0xA0))


def test_rtp_csrc_counts_past_the_end(rtp: ModuleType) -> None:
    for cc in range(1, 16):
        data = bytes([0x80 | cc]) + rtp_packet()[1:] + bytes(4 * cc - 1)
        with pytest.raises(ValueError, match=f"^RTP packet truncated: {len(data)} bytes, {cc} CSRCs need"):
            rtp.parse_rtp(data)
        assert rtp.parse_rtp(data + b"\0").csrc == (0,) * cc


def test_rtp_extension_lengths_past_the_end(rtp: ModuleType) -> None:
    with pytest.raises(ValueError, match="^RTP packet truncated: 14 bytes, extension header needs 16$"):
        rtp.parse_rtp(rtp_packet(first=0x90) + b"\xbe\xde")
    for words in (1, 2, 100, 0xFFFF):
        data = rtp_packet(first=0x90) + struct.pack("!HH", 0xBEDE, words) + bytes(4 * words - 1)
        with pytest.raises(ValueError, match=f"extension of {words} words needs {16 + 4 * words}$"):
            rtp.parse_rtp(data)


@pytest.mark.parametrize("version", [0, 1, 3])
def test_wrong_versions(rtp: ModuleType, version: int) -> None:
    data = bytes([version << 6 | (rtp_packet()[0] & 0x3F)]) + rtp_packet()[1:]
    with pytest.raises(ValueError, match=f"^RTP version {version} is not 2$"):
        rtp.parse_rtp(data)
    with pytest.raises(ValueError, match=f"^RTP version {version} is not 2$"):
        rtp.rewrite_rtp(bytearray(data), 1, 96, 0, 0)
    with pytest.raises(ValueError, match=f"^RTP version {version} is not 2$"):
        rtp.RtpRewriter(1, 96).rewrite(bytearray(data))
    rtcp = bytes([version << 6 | 1]) + rtp.build_pli(1, 2)[1:]
    with pytest.raises(ValueError, match=f"^RTCP version {version} is not 2 at offset 0$"):
        rtp.parse_rtcp(rtcp)


def test_empty_buffer_everywhere(rtp: ModuleType) -> None:
    for call in (
        lambda: rtp.parse_rtp(b""),
        lambda: rtp.RtpHeader.parse(b""),
        lambda: rtp.rewrite_rtp(bytearray(), 1, 96, 0, 0),
        lambda: rtp.RtpRewriter(1, 96).rewrite(bytearray()),
        lambda: rtp.parse_rtcp(b""),
        lambda: list(rtp.iter_rtcp(b"")),
        lambda: rtp.rewrite_rtcp_ssrcs(bytearray(), {}),
    ):
        with pytest.raises(ValueError, match="truncated: 0 bytes"):
            call()
    assert rtp.is_rtcp(b"") is False


def test_rtcp_padding_counts(rtp: ModuleType) -> None:
    base = bytearray(rtp.build_rr(1) + b"\0\0\0\0")
    base[0] |= 0x20
    struct.pack_into("!H", base, 2, 2)
    for count in range(256):
        base[-1] = count
        if count == 0:
            with pytest.raises(ValueError, match="^RTCP padding count 0 is invalid at offset 0$"):
                rtp.parse_rtcp(bytes(base))
        elif count > 8:
            with pytest.raises(ValueError, match=f"^RTCP padding count {count} exceeds packet of 12 bytes"):
                rtp.parse_rtcp(bytes(base))
        elif count > 4:
            with pytest.raises(ValueError, match="^RTCP RR truncated"):
                rtp.parse_rtcp(bytes(base))
        else:
            assert rtp.parse_rtcp(bytes(base)) == [rtp.RtcpReceiverReport(1, ())]


def test_rtcp_compound_ending_mid_header(rtp: ModuleType) -> None:
    good = rtp.build_sr(1, 2, 3, 4, 5) + rtp.build_sdes(1, "c")
    for extra in (1, 2, 3):
        with pytest.raises(ValueError, match=f"^RTCP packet truncated: {extra} bytes at offset {len(good)}"):
            rtp.parse_rtcp(good + b"\x81\xc9\x00"[:extra])


def test_garbage_types_are_type_errors(rtp: ModuleType) -> None:
    for call in (
        lambda: rtp.parse_rtp(None),
        lambda: rtp.parse_rtp("text"),
        lambda: rtp.parse_rtcp(12),
        lambda: rtp.rewrite_rtp([0] * 12, 1, 1, 0, 0),
        lambda: rtp.rewrite_rtp(bytearray(12), 1.5, 1, 0, 0),
    ):
        with pytest.raises(TypeError):
            call()


def test_build_nack_too_long_for_the_length_field(rtp: ModuleType) -> None:
    alternating = [0, 1000] * 32767  # every number starts a new item: 65534 items
    with pytest.raises(ValueError, match="^NACK of 65534 items does not fit an RTCP length field$"):
        rtp.build_nack(1, 2, alternating)
    assert len(rtp.build_nack(1, 2, alternating[:-1])) == 12 + 4 * 65533
