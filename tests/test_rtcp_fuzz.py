"""Randomized parity of media/rtcp.py (twin) and media._native.rtcp: for the same input, the same result or
the same exception with the same message, and the same bytes left in rewritten buffers. Seeds come from
the committed corpus (tests/fixtures/rtp/) and from generators of well-formed packets, then mutated
(tests/support/wire_fuzz.py, shared with test_rtp_fuzz.py).

Each test is bounded (500 examples unless RTP_FUZZ_EXAMPLES says otherwise) and runs without an example
database, so nothing is written to disk.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import media._native.rtcp as native_rtcp
import media.rtcp as twin_rtcp
from tests.support.wire_fuzz import ANY_PACKET, BOUNDED, report_blocks, rtcp_compounds, u16, u32, wide
from tests.support.wire_parity import iter_outcome, outcome, same_outcome, same_rewrite

MODULES = (twin_rtcp, native_rtcp)


def same(name: str, *args: Any) -> tuple[Any, ...]:
    return same_outcome(MODULES, name, *args)


@BOUNDED
@given(ANY_PACKET, st.binary(min_size=1, max_size=64))
def test_native_reads_nothing_past_the_end(data: bytes, tail: bytes) -> None:
    # The native module runs without bounds checks: a window on a longer buffer must give the same answer
    # as the exact bytes, or it read past the window.
    window = memoryview(data + tail)[: len(data)]
    assert outcome(native_rtcp.parse_rtcp, window) == outcome(native_rtcp.parse_rtcp, data)


@BOUNDED
@given(ANY_PACKET)
def test_rtcp_walk_parity(data: bytes) -> None:
    result = same("parse_rtcp", data)
    assert result[0] == "ok" or result[1] == "ValueError"
    assert iter_outcome(twin_rtcp, data) == iter_outcome(native_rtcp, data)


@BOUNDED
@given(rtcp_compounds())
def test_well_formed_rtcp_parses(data: bytes) -> None:
    assert same("parse_rtcp", data)[0] == "ok"


@BOUNDED
@given(
    ANY_PACKET,
    st.dictionaries(st.one_of(u32, st.sampled_from([455884110, 1, 2])), st.one_of(u32, wide), max_size=4),
    st.none() | wide,
)
def test_rewrite_rtcp_ssrcs_parity(data: bytes, mapping: dict[int, int], sender: int | None) -> None:
    same_rewrite(MODULES, "rewrite_rtcp_ssrcs", data, mapping, sender)


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
    for mod in MODULES:
        own_blocks = [mod.RtcpReportBlock(*(getattr(blk, f) for f in blk.__match_args__)) for blk in blocks]
        sr = mod.build_sr(ssrc, ntp, rtp_ts, packets, octets, own_blocks)
        if len(cname.encode()) > 255:
            continue
        parsed = mod.parse_rtcp(sr + mod.build_sdes(ssrc, cname))
        assert parsed[0] == mod.RtcpSenderReport(ssrc, ntp, rtp_ts, packets, octets, tuple(own_blocks))
        assert parsed[1].chunks[0].cname == cname
    assert same("build_sr", ssrc, ntp, rtp_ts, packets, octets, blocks)[0] == "ok"
