"""Randomized parity of media/depacketize.py (twin) and media._native.depacketize: the same packets in the
same order give the same frames (or the same exception and message), the same counters and the same state
after every step, within the bounds. Packets come from packetized access units (single NAL units, STAP-A,
FU-A; VP8 in every descriptor layout; Opus) shuffled, dropped, duplicated and mutated, and from generators
of hostile payloads (lying STAP-A lengths, one-byte FU-A, cut VP8 descriptors).

Each test is bounded (300 examples unless DEPACKETIZE_FUZZ_EXAMPLES says otherwise) and runs without an
example database, so nothing is written to disk.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_depacketize import (
    PPS,
    SPS,
    VP8_DELTA_HEADER,
    VP8_DESCRIPTORS,
    VP8_KEY_HEADER,
    Twins,
    h264_payloads,
    nal,
    vp8_payloads,
)
from tests.test_track import CHROME_EXT

BOUNDED = settings(
    max_examples=int(os.environ.get("DEPACKETIZE_FUZZ_EXAMPLES", "300")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

u8 = st.integers(0, 0xFF)


@st.composite
def h264_units(draw: st.DrawFn) -> list[bytes]:
    """One access unit's payloads, packetized at a random MTU."""
    key = draw(st.booleans())
    nals = [SPS, PPS] if key and draw(st.booleans()) else []
    for k in range(draw(st.integers(1, 3))):
        nals.append(nal(0x65 if key else 0x41, draw(st.integers(2, 900)), draw(u8), first_mb_zero=k == 0))
    if draw(st.booleans()):
        nals.insert(0, b"\x09\xf0")
    return h264_payloads(nals, draw(st.integers(40, 600)), draw(st.booleans()))


@st.composite
def vp8_units(draw: st.DrawFn) -> list[bytes]:
    key = draw(st.booleans())
    body = (VP8_KEY_HEADER if key else VP8_DELTA_HEADER) + bytes(draw(st.integers(0, 900)))
    return vp8_payloads(body, draw(st.integers(30, 600)), draw(st.sampled_from(sorted(VP8_DESCRIPTORS))),
                        draw(st.integers(0, 0x7FFF)))


hostile_h264 = st.one_of(
    st.binary(max_size=12),
    st.builds(lambda n, body: bytes([0x78]) + struct.pack("!H", n) + body, st.integers(0, 0xFFFF),
              st.binary(max_size=8)),
    st.builds(lambda a, b: bytes([a | 28, b]), u8, u8),
    st.sampled_from([b"\x7c", b"\x7c\x85", b"\x78", b"\x19", b"\x1d\x85ab", b"\x65", b"\x67"]),
)
hostile_vp8 = st.one_of(st.binary(max_size=12), st.sampled_from([b"\x90", b"\x90\x80", b"\x90\xff\x80", b"\x10P"]))

UNITS = {"H264": h264_units(), "VP8": vp8_units(), "opus": st.lists(st.binary(max_size=40), min_size=1, max_size=1)}
HOSTILE = {"H264": hostile_h264, "VP8": hostile_vp8, "opus": st.binary(max_size=20)}


@st.composite
def streams(draw: st.DrawFn, codec: str) -> list[bytes]:
    """Frames as RTP (one timestamp each, marker on the last packet), then loss, duplicates, reordering,
    hostile packets, mutations and the odd source change or sequence jump."""
    seq = draw(st.sampled_from([0, 65500, 30000]))
    ts = draw(st.sampled_from([0, 4294960000]))
    packets: list[bytes] = []
    for _ in range(draw(st.integers(1, 12))):
        payloads = draw(UNITS[codec])
        for k, payload in enumerate(payloads):
            marker = k == len(payloads) - 1
            header = struct.pack("!BBHII", 0x90, 96 | (0x80 if marker else 0), seq & 0xFFFF, ts, 0x1234)
            packets.append(header + CHROME_EXT + payload)
            seq += 1
        ts = (ts + draw(st.sampled_from([3000, 3000, 960, 0, 1]))) & 0xFFFFFFFF
    out = []
    for p in packets:
        action = draw(st.sampled_from(["keep"] * 12 + ["drop", "twice", "mutate", "hostile", "pad", "cut", "odd"]))
        if action == "drop":
            continue
        if action == "twice":
            out += [p, p]
        elif action == "mutate":
            data = bytearray(p)
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= 1 << draw(st.integers(0, 7))
            out.append(bytes(data))
        elif action == "hostile":
            marker = 0x80 if draw(st.booleans()) else 0
            out.append(p[:1] + bytes([p[1] & 0x7F | marker]) + p[2:28] + draw(HOSTILE[codec]))
        elif action == "pad":
            pad = draw(st.integers(1, 8))
            out.append(bytes([p[0] | 0x20]) + p[1:] + bytes(pad - 1) + bytes([pad]))
        elif action == "cut":
            out.append(p[: draw(st.integers(0, len(p)))])
        elif action == "odd":  # another source, or a far sequence number
            other = bytearray(p)
            if draw(st.booleans()):
                other[8:12] = b"\xca\xfe\x00\x01"
            else:
                other[2:4] = struct.pack("!H", (struct.unpack_from("!H", p, 2)[0] + 20000) & 0xFFFF)
            out.append(bytes(other))
        else:
            out.append(p)
    if len(out) > 2 and draw(st.booleans()):  # reorder a few neighbours
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(out) - 2))
            j = min(len(out) - 1, i + draw(st.integers(1, 3)))
            out[i], out[j] = out[j], out[i]
    return out


def run(codec: str, limits: tuple[int, int], packets: list[bytes], resets: bool) -> None:
    twins = Twins(codec, 90000, *limits)
    frames = 0
    for k, packet in enumerate(packets):
        result = twins.outcome("push", packet)
        if result[0] == "ok":
            frames += len(result[1])
            for frame in result[1]:
                assert len(frame[0]) <= limits[0] + (len(twins.sps or b"") + len(twins.pps or b"") + 8) * frame[2]
                assert frame[5] is True and frame[6] == twins.codec
        else:
            assert result[1] == "ValueError"
        if resets and k % 17 == 16:
            twins.outcome("reset")
            frames = 0
    assert twins.frames == frames


limits = st.tuples(st.sampled_from([50, 700, 4_000_000]), st.sampled_from([1, 2, 8]))


@BOUNDED
@given(limits, streams("H264"), st.booleans())
def test_h264_stream_parity(lim: tuple[int, int], packets: list[bytes], resets: bool) -> None:
    run("H264", lim, packets, resets)


@BOUNDED
@given(limits, streams("VP8"), st.booleans())
def test_vp8_stream_parity(lim: tuple[int, int], packets: list[bytes], resets: bool) -> None:
    run("VP8", lim, packets, resets)


@settings(BOUNDED, max_examples=min(BOUNDED.max_examples, 100))
@given(limits, streams("opus"), st.booleans())
def test_opus_stream_parity(lim: tuple[int, int], packets: list[bytes], resets: bool) -> None:
    run("opus", lim, packets, resets)


@BOUNDED
@given(st.sampled_from(["H264", "VP8", "opus"]), st.lists(st.binary(max_size=60), max_size=20))
def test_random_bytes_parity(codec: str, packets: list[Any]) -> None:
    """Anything at all: most of it fails the RTP header check, with the same message in both."""
    run(codec, (4_000_000, 8), [bytes([0x80 | p[0] & 0x3F]) + p[1:] if p else p for p in packets], False)
