"""RTCP parsing, SSRC rewriting and building: the Python twin (media/rtcp.py) and the native module
(media/_native/rtcp.pyx) against known answers, the committed corpus (tests/fixtures/rtp/), hostile input,
and each other. Randomized parity lives in test_rtcp_fuzz.py; RTP in test_rtp.py."""

from __future__ import annotations

import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import media._native.rtcp as native_rtcp
import media.rtcp as twin_rtcp
from tests.support.wire_parity import (
    BAD,
    FIXTURES,
    GOOD,
    corpus_id,
    iter_outcome,
    load,
    of_kind,
    outcome,
    rewrite_outcome,
    same_outcome,
)

MODULES = [twin_rtcp, native_rtcp]

PUBLIC_API = (
    "RTCP_HEADER_LENGTH RTCP_SR RTCP_RR RTCP_SDES RTCP_BYE RTCP_APP RTCP_RTPFB RTCP_PSFB RTPFB_NACK PSFB_PLI "
    "PSFB_FIR PSFB_AFB SDES_CNAME RtcpReportBlock RtcpSenderReport RtcpReceiverReport RtcpSdesChunk RtcpSdes "
    "RtcpBye RtcpNack RtcpPli RtcpFir RtcpRemb RtcpFeedback RtcpUnknown RtcpPacket iter_rtcp parse_rtcp "
    "rewrite_rtcp_ssrcs build_pli build_fir build_nack build_sr build_rr build_sdes build_remb"
).split()


@pytest.fixture(params=MODULES, ids=["twin", "native"])
def rtcp(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


def assert_parity(name: str, *args: Any) -> Any:
    return same_outcome(MODULES, name, *args)


GOOD_RTCP = [load(path)[2] for path in of_kind(GOOD, "rtcp")]
BAD_RTCP = of_kind(BAD, "rtcp")


# --- API ----------------------------------------------------------------------------------------------


def test_both_modules_export_the_same_api() -> None:
    for name in PUBLIC_API:
        assert hasattr(twin_rtcp, name), name
        assert hasattr(native_rtcp, name), name
    for name in PUBLIC_API:
        if name.isupper():
            assert getattr(twin_rtcp, name) == getattr(native_rtcp, name), name


def test_native_module_is_compiled() -> None:
    assert native_rtcp.__file__ is not None
    assert not native_rtcp.__file__.endswith(".py")


def test_result_classes_have_the_same_fields_and_class_constants() -> None:
    for name in PUBLIC_API:
        twin_cls, native_cls = getattr(twin_rtcp, name), getattr(native_rtcp, name)
        if isinstance(twin_cls, type) and hasattr(twin_cls, "__match_args__"):
            assert twin_cls.__match_args__ == native_cls.__match_args__, name
            for const in ("packet_type", "count"):
                value = twin_cls.__dict__.get(const)
                if isinstance(value, int):
                    assert getattr(native_cls, const) == value, (name, const)


def test_results_compare_and_print_like_dataclasses(rtcp: ModuleType) -> None:
    block = rtcp.RtcpReportBlock(1, 2, -3, 4, 5, 6, 7)
    assert block == rtcp.RtcpReportBlock(1, 2, -3, 4, 5, 6, 7)
    assert block != rtcp.RtcpReportBlock(1, 2, -3, 4, 5, 6, 8)
    assert repr(block) == (
        "RtcpReportBlock(ssrc=1, fraction_lost=2, packets_lost=-3, highest_sequence=4, jitter=5, lsr=6, dlsr=7)"
    )
    match rtcp.parse_rtcp(rtcp.build_pli(1, 2))[0]:
        case rtcp.RtcpPli(ssrc=1, media_ssrc=media):
            assert media == 2
        case _:
            pytest.fail("PLI did not match")


# --- RTCP known answers -------------------------------------------------------------------------------


def test_build_pli_known_bytes(rtcp: ModuleType) -> None:
    assert rtcp.build_pli(0x11223344, 0x55667788).hex() == "81ce00021122334455667788"


def test_build_fir_known_bytes(rtcp: ModuleType) -> None:
    # RFC 5104 section 4.3.1.2: the header's media source SSRC is 0, the target is in the FCI entry.
    assert rtcp.build_fir(1, 0x0A0B0C0D, 7).hex() == "84ce000400000001000000000a0b0c0d07000000"


def test_build_nack_known_bytes_across_wraparound(rtcp: ModuleType) -> None:
    data = rtcp.build_nack(1, 2, [65535, 0, 1, 17])
    assert data.hex() == "81cd00040000000100000002ffff000300110000"
    (nack,) = rtcp.parse_rtcp(data)
    assert nack.items == ((0xFFFF, 3), (0x11, 0))
    assert nack.lost == [65535, 0, 1, 17]


def test_build_nack_packs_a_full_bitmask(rtcp: ModuleType) -> None:
    lost = list(range(1000, 1017)) + [1000]  # PID + 16 following; a duplicate is dropped
    data = rtcp.build_nack(1, 2, lost)
    assert data[12:].hex() == "03e8ffff"
    assert rtcp.parse_rtcp(data)[0].lost == list(range(1000, 1017))


def test_build_nack_rejects_empty_and_bad_numbers(rtcp: ModuleType) -> None:
    with pytest.raises(ValueError, match="at least one lost sequence number"):
        rtcp.build_nack(1, 2, [])
    with pytest.raises(ValueError, match="lost sequence number out of range: 65536"):
        rtcp.build_nack(1, 2, [65536])


def test_build_sr_known_bytes(rtcp: ModuleType) -> None:
    data = rtcp.build_sr(0x01020304, 0x0102030405060708, 0xAABBCCDD, 10, 1000)
    assert data.hex() == "80c80006010203040102030405060708aabbccdd0000000a000003e8"
    block = rtcp.RtcpReportBlock(5, 0x80, -1, 0x00010002, 3, 4, 5)
    data = rtcp.build_sr(1, 2, 3, 4, 5, [block])
    assert data[:4].hex() == "81c8000c"
    assert data[28:].hex() == "0000000580ffffff00010002000000030000000400000005"
    (sr,) = rtcp.parse_rtcp(data)
    assert sr.reports == (block,)
    assert (sr.ssrc, sr.ntp_timestamp, sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (1, 2, 3, 4, 5)


def test_build_rr_and_sdes_known_bytes(rtcp: ModuleType) -> None:
    assert rtcp.build_rr(9).hex() == "80c9000100000009"
    assert rtcp.build_sdes(1, "ab").hex() == "81ca0003000000010102616200000000"
    assert rtcp.build_sdes(1, "abc").hex() == "81ca0003000000010103616263000000"
    (sdes,) = rtcp.parse_rtcp(rtcp.build_sdes(0x42, "user@host"))
    assert (sdes.ssrc, sdes.count, sdes.chunks[0].cname) == (0x42, 1, "user@host")


def test_build_remb_known_bytes(rtcp: ModuleType) -> None:
    # 1 500 000 = 187 500 << 3: exponent 3, mantissa 0x2dc6c.
    data = rtcp.build_remb(1, 1500000, [2])
    assert data.hex() == "8fce0005000000010000000052454d42010edc6c00000002"
    (remb,) = rtcp.parse_rtcp(data)
    assert (remb.bitrate, remb.ssrcs, remb.packet_type, remb.count) == (1500000, (2,), 206, 15)
    assert rtcp.parse_rtcp(rtcp.build_remb(1, (1 << 64) - 1, []))[0].bitrate == 0x3FFFF << 46


def test_builders_reject_out_of_range_values(rtcp: ModuleType) -> None:
    with pytest.raises(ValueError, match="sender_ssrc out of range"):
        rtcp.build_pli(1 << 32, 1)
    with pytest.raises(ValueError, match="seq_nr out of range: 256"):
        rtcp.build_fir(1, 2, 256)
    with pytest.raises(ValueError, match="packets_lost out of range"):
        rtcp.build_rr(1, [rtcp.RtcpReportBlock(packets_lost=1 << 23)])
    with pytest.raises(ValueError, match="at most 31 report blocks"):
        rtcp.build_rr(1, [rtcp.RtcpReportBlock()] * 32)
    with pytest.raises(ValueError, match="longer than 255"):
        rtcp.build_sdes(1, "x" * 256)
    with pytest.raises(TypeError):
        rtcp.build_pli(1.5, 1)


def test_parse_chrome_sr_sdes(rtcp: ModuleType) -> None:
    sr, sdes = rtcp.parse_rtcp(load(FIXTURES / "good" / "rtcp_chrome_sr_sdes.hex")[2])
    assert isinstance(sr, rtcp.RtcpSenderReport) and isinstance(sdes, rtcp.RtcpSdes)
    assert (sr.packet_type, sr.count, sr.ssrc) == (200, 0, 0x5D2E0F11)
    assert (sr.ntp_timestamp, sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (
        0xE9A1B2C3D4E5F607,
        0x8F1B2C40,
        1523,
        98772,
    )
    assert (sdes.packet_type, sdes.ssrc, sdes.chunks[0].cname) == (202, 0x5D2E0F11, "mEq1nl0mNXFxWb3w")


def test_parse_every_supported_type(rtcp: ModuleType) -> None:
    def packets(name: str) -> list[Any]:
        return list(rtcp.parse_rtcp(load(FIXTURES / "good" / name)[2]))

    rr, sdes, remb = packets("rtcp_chrome_rr_remb.hex")
    assert rr.reports[0] == rtcp.RtcpReportBlock(0x1B2C3D4E, 12, 345, 0x00010F01, 27, 0xB2C3D4E5, 0x00020000)
    assert (remb.bitrate, remb.ssrcs) == (1500000, (0x1B2C3D4E, 0x5D2E0F11))
    _, nack = packets("rtcp_nack.hex")
    assert (nack.packet_type, nack.count, nack.media_ssrc) == (205, 1, 0x1B2C3D4E)
    assert nack.lost == [0x0F00, 0x0F02, 0x0F11, 0x2000]
    _, pli = packets("rtcp_pli.hex")
    assert (pli.packet_type, pli.count, pli.ssrc, pli.media_ssrc) == (206, 1, 1, 0x1B2C3D4E)
    (fir,) = packets("rtcp_fir_two_entries.hex")
    assert (fir.count, fir.entries) == (4, ((0x1B2C3D4E, 7), (0x0A0B0C0D, 8)))
    (tcc,) = packets("rtcp_transport_cc.hex")
    assert isinstance(tcc, rtcp.RtcpFeedback)
    assert (tcc.packet_type, tcc.fmt, tcc.count, tcc.media_ssrc) == (205, 15, 15, 0x1B2C3D4E)
    assert tcc.fci == bytes.fromhex("0f0000030001a2b320030000")
    *_, bye = packets("rtcp_sr_sdes_bye.hex")
    assert (bye.packet_type, bye.sources, bye.reason, bye.ssrc) == (203, (0x5D2E0F11,), b"shutdown", 0x5D2E0F11)
    _, app, xr = packets("rtcp_app_xr.hex")
    assert (app.packet_type, app.count, app.ssrc, app.body[4:8]) == (204, 1, 1, b"test")
    assert (xr.packet_type, xr.ssrc) == (207, 1)
    _, padded = packets("rtcp_padded_last.hex")
    assert padded.chunks[0].items == ((1, b"xy"),)


def test_iter_rtcp_yields_until_the_bad_packet(rtcp: ModuleType) -> None:
    data = rtcp.build_rr(1) + rtcp.build_pli(1, 2) + b"\x81\xcd\x00\x05"
    walk = rtcp.iter_rtcp(data)
    assert next(walk) == rtcp.RtcpReceiverReport(1, ())
    assert next(walk) == rtcp.RtcpPli(1, 2)
    with pytest.raises(ValueError, match="RTCP length field says 24 bytes at offset 20, only 4 remain"):
        next(walk)


def test_rewrite_rtcp_ssrcs_known_answer(rtcp: ModuleType) -> None:
    pub, view, srv = 0x1B2C3D4E, 0xAABBCCDD, 0x42
    before = (
        rtcp.build_rr(9, [rtcp.RtcpReportBlock(ssrc=view, jitter=3)])
        + rtcp.build_nack(9, view, [5, 6])
        + rtcp.build_pli(9, view)
        + rtcp.build_fir(9, view, 1)
        + rtcp.build_remb(9, 1000, [view, 5])
        + rtcp.build_sdes(9, "x")
    )
    after = (
        rtcp.build_rr(srv, [rtcp.RtcpReportBlock(ssrc=pub, jitter=3)])
        + rtcp.build_nack(srv, pub, [5, 6])
        + rtcp.build_pli(srv, pub)
        + rtcp.build_fir(srv, pub, 1)
        + rtcp.build_remb(srv, 1000, [pub, 5])
        + rtcp.build_sdes(9, "x")
    )
    buf = bytearray(before)
    assert rtcp.rewrite_rtcp_ssrcs(buf, {view: pub}, sender_ssrc=srv) == 10
    assert bytes(buf) == after
    buf = bytearray(before)
    assert rtcp.rewrite_rtcp_ssrcs(buf, {view: pub}) == 5
    assert rtcp.rewrite_rtcp_ssrcs(buf, {}) == 0


def test_rewrite_rtcp_ssrcs_validates_before_writing(rtcp: ModuleType) -> None:
    good = rtcp.build_pli(1, 2)
    for data in (good + b"\x81\xce\x00\x09", good + b"\x81", b""):
        buf = bytearray(data)
        with pytest.raises(ValueError):
            rtcp.rewrite_rtcp_ssrcs(buf, {2: 3}, sender_ssrc=4)
        assert buf == data
    buf = bytearray(good)
    with pytest.raises(ValueError, match="mapping value out of range"):
        rtcp.rewrite_rtcp_ssrcs(buf, {2: -3})
    with pytest.raises(TypeError, match="writable buffer"):
        rtcp.rewrite_rtcp_ssrcs(good, {2: 3})
    assert buf == good


# --- the committed corpus -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", of_kind(GOOD, "rtcp") + BAD_RTCP, ids=corpus_id)
def test_corpus_expectation_and_parity(path: Path) -> None:
    _, expect, data = load(path)
    for buffer_type in (bytes, bytearray, memoryview):
        result = assert_parity("parse_rtcp", buffer_type(data))
        if expect == "ok":
            assert result[0] == "ok", result
        else:
            assert result[0] == "raise" and f"{result[1]}: {result[2]}" == expect, result
    assert iter_outcome(twin_rtcp, data) == iter_outcome(native_rtcp, data)


@pytest.mark.parametrize("path", GOOD + BAD, ids=corpus_id)
def test_corpus_rewrites_agree(path: Path) -> None:
    _, _, data = load(path)
    twin, native = (rewrite_outcome(mod.rewrite_rtcp_ssrcs, data, {0x1B2C3D4E: 5, 0: 6}, 0x42) for mod in MODULES)
    assert twin == native


def test_corpus_is_complete() -> None:
    assert len(GOOD_RTCP) >= 9 and len(BAD_RTCP) >= 20


# --- hostile input ------------------------------------------------------------------------------------


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
        assert outcome(native_rtcp.parse_rtcp, memoryview(data)[:length]) == result
        assert iter_outcome(twin_rtcp, prefix) == iter_outcome(native_rtcp, prefix)
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


@pytest.mark.parametrize("version", [0, 1, 3])
def test_wrong_versions(rtcp: ModuleType, version: int) -> None:
    data = bytes([version << 6 | 1]) + rtcp.build_pli(1, 2)[1:]
    with pytest.raises(ValueError, match=f"^RTCP version {version} is not 2 at offset 0$"):
        rtcp.parse_rtcp(data)


def test_empty_buffer_everywhere(rtcp: ModuleType) -> None:
    for call in (
        lambda: rtcp.parse_rtcp(b""),
        lambda: list(rtcp.iter_rtcp(b"")),
        lambda: rtcp.rewrite_rtcp_ssrcs(bytearray(), {}),
    ):
        with pytest.raises(ValueError, match="truncated: 0 bytes"):
            call()


def test_rtcp_padding_counts(rtcp: ModuleType) -> None:
    base = bytearray(rtcp.build_rr(1) + b"\0\0\0\0")
    base[0] |= 0x20
    struct.pack_into("!H", base, 2, 2)
    for count in range(256):
        base[-1] = count
        if count == 0:
            with pytest.raises(ValueError, match="^RTCP padding count 0 is invalid at offset 0$"):
                rtcp.parse_rtcp(bytes(base))
        elif count > 8:
            with pytest.raises(ValueError, match=f"^RTCP padding count {count} exceeds packet of 12 bytes"):
                rtcp.parse_rtcp(bytes(base))
        elif count > 4:
            with pytest.raises(ValueError, match="^RTCP RR truncated"):
                rtcp.parse_rtcp(bytes(base))
        else:
            assert rtcp.parse_rtcp(bytes(base)) == [rtcp.RtcpReceiverReport(1, ())]


def test_rtcp_compound_ending_mid_header(rtcp: ModuleType) -> None:
    good = rtcp.build_sr(1, 2, 3, 4, 5) + rtcp.build_sdes(1, "c")
    for extra in (1, 2, 3):
        with pytest.raises(ValueError, match=f"^RTCP packet truncated: {extra} bytes at offset {len(good)}"):
            rtcp.parse_rtcp(good + b"\x81\xc9\x00"[:extra])


def test_garbage_types_are_type_errors(rtcp: ModuleType) -> None:
    with pytest.raises(TypeError):
        rtcp.parse_rtcp(12)


def test_build_nack_too_long_for_the_length_field(rtcp: ModuleType) -> None:
    alternating = [0, 1000] * 32767  # every number starts a new item: 65534 items
    with pytest.raises(ValueError, match="^NACK of 65534 items does not fit an RTCP length field$"):
        rtcp.build_nack(1, 2, alternating)
    assert len(rtcp.build_nack(1, 2, alternating[:-1])) == 12 + 4 * 65533
