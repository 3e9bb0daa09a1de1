"""RTP parsing and rewriting: the Python twin (media/rtp.py) and the native module (media/_native/rtp.pyx)
against known answers, the committed corpus (tests/fixtures/rtp/), hostile input, and each other.
Randomized parity lives in test_rtp_fuzz.py; RTCP in test_rtcp.py."""

from __future__ import annotations

import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import media._native.rtp as native_rtp
import media.rtp as twin_rtp
from tests.support.wire_parity import (
    BAD,
    FIXTURES,
    GOOD,
    corpus_id,
    load,
    of_kind,
    outcome,
    rewrite_outcome,
    same_outcome,
)

MODULES = [twin_rtp, native_rtp]

PUBLIC_API = "RTP_VERSION RTP_HEADER_LENGTH is_rtcp RtpHeader parse_rtp rewrite_rtp RtpRewriter".split()


@pytest.fixture(params=MODULES, ids=["twin", "native"])
def rtp(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


# --- helpers ------------------------------------------------------------------------------------------


def assert_parity(name: str, *args: Any) -> Any:
    return same_outcome(MODULES, name, *args)


GOOD_RTP = [load(path)[2] for path in of_kind(GOOD, "rtp")]
GOOD_RTCP = [load(path)[2] for path in of_kind(GOOD, "rtcp")]
BAD_RTP = of_kind(BAD, "rtp")


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


def test_header_has_the_same_fields() -> None:
    assert twin_rtp.RtpHeader.__match_args__ == native_rtp.RtpHeader.__match_args__


def test_results_compare_and_print_like_dataclasses(rtp: ModuleType) -> None:
    header = rtp.RtpHeader.parse(GOOD_RTP[0])
    assert header == rtp.parse_rtp(GOOD_RTP[0])
    assert header != rtp.parse_rtp(GOOD_RTP[1])
    assert repr(twin_rtp.parse_rtp(GOOD_RTP[0])) == repr(native_rtp.parse_rtp(GOOD_RTP[0]))
    match rtp.parse_rtp(GOOD_RTP[0]):
        case rtp.RtpHeader(ssrc=ssrc):
            assert ssrc == header.ssrc
        case _:
            pytest.fail("RtpHeader did not match")


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


# --- the committed corpus -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", of_kind(GOOD, "rtp") + BAD_RTP, ids=corpus_id)
def test_corpus_expectation_and_parity(path: Path) -> None:
    _, expect, data = load(path)
    for buffer_type in (bytes, bytearray, memoryview):
        result = assert_parity("parse_rtp", buffer_type(data))
        if expect == "ok":
            assert result[0] == "ok", result
        else:
            assert result[0] == "raise" and f"{result[1]}: {result[2]}" == expect, result


@pytest.mark.parametrize("path", GOOD + BAD, ids=corpus_id)
def test_corpus_demux_and_rewrites_agree(path: Path) -> None:
    _, _, data = load(path)
    assert twin_rtp.is_rtcp(data) == native_rtp.is_rtcp(data)
    twin, native = (rewrite_outcome(mod.rewrite_rtp, data, 0x01020304, 100, -7, 1 << 31) for mod in MODULES)
    assert twin == native


def test_corpus_is_complete() -> None:
    assert len(GOOD_RTP) >= 8 and len(BAD_RTP) >= 10


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


def test_empty_buffer_everywhere(rtp: ModuleType) -> None:
    for call in (
        lambda: rtp.parse_rtp(b""),
        lambda: rtp.RtpHeader.parse(b""),
        lambda: rtp.rewrite_rtp(bytearray(), 1, 96, 0, 0),
        lambda: rtp.RtpRewriter(1, 96).rewrite(bytearray()),
    ):
        with pytest.raises(ValueError, match="truncated: 0 bytes"):
            call()
    assert rtp.is_rtcp(b"") is False


def test_garbage_types_are_type_errors(rtp: ModuleType) -> None:
    for call in (
        lambda: rtp.parse_rtp(None),
        lambda: rtp.parse_rtp("text"),
        lambda: rtp.rewrite_rtp([0] * 12, 1, 1, 0, 0),
        lambda: rtp.rewrite_rtp(bytearray(12), 1.5, 1, 0, 0),
    ):
        with pytest.raises(TypeError):
            call()
