"""Hypothesis strategies for the randomized twin-against-native tests of the wire formats (test_rtp_fuzz.py,
test_rtcp_fuzz.py): well-formed RTP packets and RTCP compounds, the committed corpus, and mutations of all
of them, so both test files draw from the same packets."""

from __future__ import annotations

import os
import struct
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import media.rtcp as twin_rtcp
from tests.support.wire_parity import CORPUS

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
    return [twin_rtcp.RtcpReportBlock(*block) for block in blocks]


def rtcp_piece() -> st.SearchStrategy[bytes]:
    b = twin_rtcp
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
