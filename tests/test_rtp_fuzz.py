"""Randomized parity of media/rtp.py (twin) and media._native.rtp: for the same input, the same result or
the same exception with the same message, and the same bytes left in rewritten buffers. Seeds come from
the committed corpus (tests/fixtures/rtp/) and from generators of well-formed packets, then mutated
(tests/support/wire_fuzz.py, shared with test_rtcp_fuzz.py).

Each test is bounded (500 examples unless RTP_FUZZ_EXAMPLES says otherwise) and runs without an example
database, so nothing is written to disk.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import media._native.rtp as native_rtp
import media.rtp as twin_rtp
from tests.support.wire_fuzz import ANY_PACKET, BOUNDED, rtp_packets, u16, u32, wide
from tests.support.wire_parity import outcome, same_outcome, same_rewrite

MODULES = (twin_rtp, native_rtp)


def same(name: str, *args: Any) -> tuple[Any, ...]:
    return same_outcome(MODULES, name, *args)


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
    for mod in MODULES:
        header = mod.parse_rtp(data)
        assert bytes(header) == data[: header.payload_offset]


@BOUNDED
@given(ANY_PACKET, st.binary(min_size=1, max_size=64))
def test_native_reads_nothing_past_the_end(data: bytes, tail: bytes) -> None:
    # The native module runs without bounds checks: a window on a longer buffer must give the same answer
    # as the exact bytes, or it read past the window.
    window = memoryview(data + tail)[: len(data)]
    assert outcome(native_rtp.parse_rtp, window) == outcome(native_rtp.parse_rtp, data)
    assert native_rtp.is_rtcp(window) == native_rtp.is_rtcp(data)


@BOUNDED
@given(ANY_PACKET, wide, st.integers(-5, 200), wide, wide)
def test_rewrite_rtp_parity(data: bytes, ssrc: int, payload_type: int, seq_offset: int, ts_offset: int) -> None:
    same_rewrite(MODULES, "rewrite_rtp", data, ssrc, payload_type, seq_offset, ts_offset)


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
    rewriters = [mod.RtpRewriter(0xABCDEF, 100, clock_rate, step) for mod in MODULES]
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
