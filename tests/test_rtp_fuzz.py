"""Randomized parity of media/rtp.py (twin) and media._native.rtp: for the same input, the same result or
the same exception with the same message, and the same bytes left in rewritten buffers. Seeds come from
the committed corpus (tests/fixtures/rtp/) and from generators of well-formed packets, then mutated.

Each test is bounded (500 examples unless RTP_FUZZ_EXAMPLES says otherwise) and runs without an example
database, so nothing is written to disk.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import media._native.rtp as native_rtp
import media.rtp as twin_rtp

FIXTURES = Path(__file__).parent / "fixtures" / "rtp"
# RTP_FUZZ_EXAMPLES=20000 for a deeper run by hand; the suite default stays bounded.
BOUNDED = settings(
    max_examples=int(os.environ.get("RTP_FUZZ_EXAMPLES", "500")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
# Mostly valid values, sometimes out of range or wildly large, to compare argument checking as well.
wide = st.one_of(u32, st.integers(-(2**40), 2**70), st.sampled_from([-1, 0x100000000, 2**63, -(2**63)]))


def norm(value: Any) -> Any:
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


def outcome(fn: Any, *args: Any) -> tuple[Any, ...]:
    try:
        return ("ok", norm(fn(*args)))
    except Exception as exc:  # noqa: BLE001 - the exception is the result being compared
        return ("raise", type(exc).__name__, str(exc))


def same(name: str, *args: Any) -> tuple[Any, ...]:
    twin = outcome(getattr(twin_rtp, name), *args)
    native = outcome(getattr(native_rtp, name), *args)
    assert twin == native
    return twin


def same_rewrite(name: str, data: bytes, *args: Any) -> None:
    results = []
    for mod in (twin_rtp, native_rtp):
        buf = bytearray(data)
        results.append((outcome(getattr(mod, name), buf, *args), bytes(buf)))
    assert results[0] == results[1]
    if results[0][0][0] == "raise":
        assert results[0][1] == data  # a refused packet is left untouched


def iter_outcome(mod: Any, data: bytes) -> tuple[Any, ...]:
    got = []
    try:
        for packet in mod.iter_rtcp(data):
            got.append(norm(packet))
    except Exception as exc:  # noqa: BLE001
        return (tuple(got), type(exc).__name__, str(exc))
    return (tuple(got), "ok")


def corpus() -> list[bytes]:
    packets = []
    for path in sorted(FIXTURES.glob("*/*.hex")):
        lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
        packets.append(bytes.fromhex("".join(lines)))
    return packets


CORPUS = corpus()


@st.composite
def rtp_packets(draw: st.DrawFn) -> bytes:
    csrcs = draw(st.lists(u32, max_size=15))
    ext = draw(st.none() | st.tuples(u16, st.binary(max_size=40).map(lambda b: b + bytes(-len(b) % 4))))
    payload = draw(st.binary(max_size=120))
    pad = draw(st.integers(0, 255)) if draw(st.booleans()) else 0
    first = 0x80 | len(csrcs) | (0x20 if pad else 0) | (0x10 if ext is not None else 0)
    out = struct.pack("!BBHII", first, draw(u8), draw(u16), draw(u32), draw(u32))
    out += b"".join(struct.pack("!I", csrc) for csrc in csrcs)
    if ext is not None:
        out += struct.pack("!HH", ext[0], len(ext[1]) // 4) + ext[1]
    out += payload
    if pad:
        out += bytes(pad - 1) + bytes([pad])
    return out


@st.composite
def report_blocks(draw: st.DrawFn) -> list[Any]:
    blocks = draw(st.lists(st.tuples(u32, u8, st.integers(-(2**23), 2**23 - 1), u32, u32, u32, u32), max_size=3))
    return [twin_rtp.RtcpReportBlock(*block) for block in blocks]


def rtcp_piece() -> st.SearchStrategy[bytes]:
    b = twin_rtp
    # FMTs with no parser here (NACK, PLI, FIR and AFB have their own pieces): FCI kept raw.
    raw_fmts = st.sampled_from([0, 2, 3, *range(5, 15), *range(16, 32)])
    feedback = st.tuples(st.sampled_from([205, 206]), raw_fmts, u32, u32, st.lists(u32, max_size=4))
    return st.one_of(
        st.builds(b.build_sr, u32, st.integers(0, 2**64 - 1), u32, u32, u32, report_blocks()),
        st.builds(b.build_rr, u32, report_blocks()),
        st.builds(b.build_sdes, u32, st.text(max_size=40).filter(lambda t: len(t.encode()) <= 255)),
        st.builds(b.build_pli, u32, u32),
        st.builds(b.build_fir, u32, u32, u8),
        st.builds(b.build_nack, u32, u32, st.lists(u16, min_size=1, max_size=40)),
        st.builds(b.build_remb, u32, st.integers(0, 2**64 - 1), st.lists(u32, max_size=4)),
        feedback.map(
            lambda f: (
                struct.pack("!BBHII", 0x80 | f[1], f[0], 2 + len(f[4]), f[2], f[3])
                + b"".join(struct.pack("!I", word) for word in f[4])
            )
        ),
        st.tuples(st.lists(u32, max_size=4), st.binary(max_size=20)).map(
            lambda bye: (
                struct.pack("!BBH", 0x80 | len(bye[0]), 203, len(bye[0]) + (len(bye[1]) + 4) // 4)
                + b"".join(struct.pack("!I", s) for s in bye[0])
                + (bytes([len(bye[1])]) + bye[1] + bytes(3 - len(bye[1]) % 4))
            )
        ),
        st.tuples(
            st.sampled_from([*range(192, 200), 204, *range(207, 224)]), st.integers(0, 31), st.lists(u32, max_size=4)
        ).map(
            lambda u: struct.pack("!BBH", 0x80 | u[1], u[0], len(u[2])) + b"".join(struct.pack("!I", w) for w in u[2])
        ),
    )


@st.composite
def rtcp_compounds(draw: st.DrawFn) -> bytes:
    pieces = draw(st.lists(rtcp_piece(), min_size=1, max_size=5))
    data = bytearray(b"".join(pieces))
    if draw(st.booleans()):
        # RFC 3550 section 6.4.1: padding on the last packet, its length field covering it.
        pad = draw(st.sampled_from([4, 8, 12]))
        last = len(data) - len(pieces[-1])
        data[last] |= 0x20
        struct.pack_into("!H", data, last + 2, struct.unpack_from("!H", data, last + 2)[0] + pad // 4)
        data += bytes(pad - 1) + bytes([pad])
    return bytes(data)


@st.composite
def mutated(draw: st.DrawFn, seeds: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(seeds))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["flip", "set", "truncate", "append", "insert"]))
        if action in ("flip", "set") and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] = data[at] ^ (1 << draw(st.integers(0, 7))) if action == "flip" else draw(u8)
        elif action == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif action == "append":
            data += draw(st.binary(min_size=1, max_size=8))
        elif action == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


ANY_PACKET = st.one_of(
    st.binary(max_size=160),
    mutated(st.sampled_from(CORPUS)),
    mutated(rtp_packets()),
    mutated(rtcp_compounds()),
)


@BOUNDED
@given(ANY_PACKET)
def test_rtp_parse_parity(data: bytes) -> None:
    result = same("parse_rtp", data)
    assert same("parse_rtp", bytearray(data)) == result
    assert result[0] == "ok" or result[1] == "ValueError"
    same("is_rtcp", data)


@BOUNDED
@given(rtp_packets())
def test_well_formed_rtp_parses_and_round_trips(data: bytes) -> None:
    result = same("parse_rtp", data)
    assert result[0] == "ok"
    for mod in (twin_rtp, native_rtp):
        header = mod.parse_rtp(data)
        assert bytes(header) == data[: header.payload_offset]


@BOUNDED
@given(ANY_PACKET, st.binary(min_size=1, max_size=64))
def test_native_reads_nothing_past_the_end(data: bytes, tail: bytes) -> None:
    # The native module runs without bounds checks: a window on a longer buffer must give the same answer
    # as the exact bytes, or it read past the window.
    window = memoryview(data + tail)[: len(data)]
    assert outcome(native_rtp.parse_rtp, window) == outcome(native_rtp.parse_rtp, data)
    assert outcome(native_rtp.parse_rtcp, window) == outcome(native_rtp.parse_rtcp, data)
    assert native_rtp.is_rtcp(window) == native_rtp.is_rtcp(data)


@BOUNDED
@given(ANY_PACKET)
def test_rtcp_walk_parity(data: bytes) -> None:
    result = same("parse_rtcp", data)
    assert result[0] == "ok" or result[1] == "ValueError"
    assert iter_outcome(twin_rtp, data) == iter_outcome(native_rtp, data)


@BOUNDED
@given(rtcp_compounds())
def test_well_formed_rtcp_parses(data: bytes) -> None:
    assert same("parse_rtcp", data)[0] == "ok"


@BOUNDED
@given(ANY_PACKET, wide, st.integers(-5, 200), wide, wide)
def test_rewrite_rtp_parity(data: bytes, ssrc: int, payload_type: int, seq_offset: int, ts_offset: int) -> None:
    same_rewrite("rewrite_rtp", data, ssrc, payload_type, seq_offset, ts_offset)


@BOUNDED
@given(
    ANY_PACKET,
    st.dictionaries(st.one_of(u32, st.sampled_from([455884110, 1, 2])), st.one_of(u32, wide), max_size=4),
    st.none() | wide,
)
def test_rewrite_rtcp_ssrcs_parity(data: bytes, mapping: dict[int, int], sender: int | None) -> None:
    same_rewrite("rewrite_rtcp_ssrcs", data, mapping, sender)


rewriter_steps = st.lists(
    st.tuples(
        st.sampled_from([0x11, 0x22, 0x33]),
        u16,
        u32,
        st.none() | st.floats(-10.0, 1e6) | st.sampled_from([float("inf"), float("nan")]),
        st.sampled_from(["packet", "packet", "packet", "reset", "bad", "marker"]),
    ),
    max_size=40,
)


@BOUNDED
@given(st.integers(1, 200000), st.none() | st.integers(1, 10000), rewriter_steps)
def test_rewriter_parity(clock_rate: int, step: int | None, steps: list[Any]) -> None:
    rewriters = [mod.RtpRewriter(0xABCDEF, 100, clock_rate, step) for mod in (twin_rtp, native_rtp)]
    for ssrc, seq, ts, now, action in steps:
        if action == "reset":
            for r in rewriters:
                r.reset()
            continue
        second = 0x80 | 96 if action == "marker" else 111
        data = struct.pack("!BBHII", 0x80 if action != "bad" else 0x40, second, seq, ts, ssrc) + b"xyz"
        results = []
        for r in rewriters:
            buf = bytearray(data)
            results.append((outcome(r.rewrite, buf, now), bytes(buf)))
        assert results[0] == results[1]
    state = [
        (
            r.packet_count,
            r.byte_count,
            r.switches,
            r.seq_offset,
            r.ts_offset,
            r.in_ssrc,
            r.last_seq,
            r.last_timestamp,
            r.switch_ts_step,
        )
        for r in rewriters
    ]
    assert state[0] == state[1]


@BOUNDED
@given(wide, wide, wide, st.lists(st.one_of(u16, wide), max_size=30))
def test_builder_parity(a: int, b: int, c: int, seqs: list[int]) -> None:
    same("build_pli", a, b)
    same("build_fir", a, b, c)
    same("build_nack", a, b, seqs)
    same("build_rr", a)
    same("build_remb", a, b, seqs)
    same("build_sr", a, b, c, a, b)


@BOUNDED
@given(u32, st.integers(0, 2**64 - 1), u32, u32, u32, report_blocks(), st.text(max_size=60))
def test_built_compounds_parse_back(
    ssrc: int, ntp: int, rtp_ts: int, packets: int, octets: int, blocks: list[Any], cname: str
) -> None:
    for mod in (twin_rtp, native_rtp):
        own_blocks = [mod.RtcpReportBlock(*(getattr(blk, f) for f in blk.__match_args__)) for blk in blocks]
        sr = mod.build_sr(ssrc, ntp, rtp_ts, packets, octets, own_blocks)
        if len(cname.encode()) > 255:
            continue
        parsed = mod.parse_rtcp(sr + mod.build_sdes(ssrc, cname))
        assert parsed[0] == mod.RtcpSenderReport(ssrc, ntp, rtp_ts, packets, octets, tuple(own_blocks))
        assert parsed[1].chunks[0].cname == cname
    assert same("build_sr", ssrc, ntp, rtp_ts, packets, octets, blocks)[0] == "ok"
