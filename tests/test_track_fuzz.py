"""Randomized parity of media/track.py (twin) and media._native.track: the same packets and calls, in the
same order, give the same results (or the same exception and message) and leave the same observable state
after every step. Packets come from generators of plausible VP8, H.264 and Opus streams (sequence steps
with loss, reordering, duplicates and jumps; SSRC changes; every VP8 descriptor layout; single NAL units,
STAP-A and FU-A) and from the committed corpus (tests/fixtures/track/, tests/fixtures/rtp/good/), then
mutated.

Each test is bounded (300 examples unless TRACK_FUZZ_EXAMPLES says otherwise) and runs without an example
database, so nothing is written to disk.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import media.rtp as twin_rtp
from tests.test_track import (
    CHROME_EXT,
    CORPUS,
    PPS,
    SPS,
    VP8_DELTA_HEADER,
    VP8_KEY_HEADER,
    Twins,
    fu_a,
    load,
    stap_a,
)

# TRACK_FUZZ_EXAMPLES=20000 for a deeper run by hand; the suite default stays bounded.
BOUNDED = settings(
    max_examples=int(os.environ.get("TRACK_FUZZ_EXAMPLES", "300")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

u7 = st.integers(0, 0x7F)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

RTP_GOOD = [load(path)["data"] for path in sorted((Path(__file__).parent / "fixtures" / "rtp" / "good").glob("rtp_*"))]
SEEDS = [load(path)["data"] for path in CORPUS] + RTP_GOOD


@st.composite
def vp8_payloads(draw: st.DrawFn) -> bytes:
    """RFC 7741 section 4.2 descriptors in every layout, then a keyframe header, an interframe header or
    bytes; sometimes cut short."""
    x = draw(st.booleans())
    first = (0x80 if x else 0) | (0x10 if draw(st.booleans()) else 0) | draw(st.sampled_from([0, 0, 0, 1, 7]))
    first |= draw(st.sampled_from([0, 0, 0x20, 0x40]))  # N and the reserved bit, which change nothing
    out = bytearray([first])
    if x:
        has_pid, has_tl0, has_tid, has_keyidx = (draw(st.booleans()) for _ in range(4))
        out.append(has_pid << 7 | has_tl0 << 6 | has_tid << 5 | has_keyidx << 4)
        if has_pid:
            out += bytes([0x80 | draw(u7), draw(u8)]) if draw(st.booleans()) else bytes([draw(u7)])
        if has_tl0:
            out.append(draw(u8))
        if has_tid or has_keyidx:
            out.append(draw(u8))
    out += draw(st.sampled_from([VP8_KEY_HEADER, VP8_KEY_HEADER, VP8_DELTA_HEADER, b""]))
    out += draw(st.binary(max_size=16))
    cut = draw(st.none() | st.integers(0, len(out)))
    return bytes(out if cut is None else out[:cut])


nal_units = st.builds(
    lambda header, body: bytes([header]) + body,
    st.sampled_from([0x65, 0x67, 0x68, 0x41, 0x61, 0x06, 0x09, 0x00, 0x7F]),
    st.binary(max_size=10),
) | st.sampled_from([SPS, PPS])


@st.composite
def h264_payloads(draw: st.DrawFn) -> bytes:
    """RFC 6184 section 5: single NAL units, STAP-A (sometimes with a lying length) and FU-A."""
    kind = draw(st.sampled_from(["single", "stap", "stap", "fua", "fua", "raw"]))
    if kind == "single":
        return draw(nal_units)
    if kind == "stap":
        data = bytearray(stap_a(*draw(st.lists(nal_units, max_size=4))))
        if len(data) > 2 and draw(st.booleans()):
            at = draw(st.integers(1, len(data) - 1))
            data[at] = draw(u8)
        return bytes(data)
    if kind == "fua":
        fragment = fu_a(draw(st.sampled_from([0x65, 0x41, 0x67, 0x68])), draw(st.binary(max_size=12)),
                        draw(st.booleans()), draw(st.booleans()))
        return fragment[: draw(st.integers(1, len(fragment)))]
    return draw(st.binary(max_size=20))


PAYLOADS = {
    "VP8": vp8_payloads(),
    "H264": h264_payloads(),
    "opus": st.binary(max_size=30),
}

# Sequence number steps: mostly the next one, then loss, reordering, duplicates, jumps, anything.
seq_steps = st.one_of(
    st.sampled_from([1, 1, 1, 1, 1, 2, 3, 0, -1, -2]),
    st.integers(-120, 120),
    st.sampled_from([2999, 3000, -99, -100, 65535, 32768]),
    u16,
)
ts_steps = st.sampled_from([0, 0, 3000, 3000, 960, 1, -3000]) | u32
now_steps = st.sampled_from([0.0, 0.0, 1 / 30, 0.02, 0.001, 0.5]) | st.floats(-1.0, 5.0)
odd_now = st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e306, -1e306, 10**400, 7, True, "1"])


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["flip", "set", "truncate", "append"]))
        if action in ("flip", "set") and out:
            at = draw(st.integers(0, len(out) - 1))
            out[at] = out[at] ^ (1 << draw(st.integers(0, 7))) if action == "flip" else draw(u8)
        elif action == "truncate":
            del out[draw(st.integers(0, len(out))) :]
        elif action == "append":
            out += draw(st.binary(min_size=1, max_size=4))
    return bytes(out)


def push_step(codec: str) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(
        st.just("push"),
        seq_steps,
        ts_steps,
        st.sampled_from([0, 0, 0, 0, 0, 1]),  # SSRC: mostly the same source
        PAYLOADS[codec],
        st.sampled_from([0, 0, 0, 1, 4]),  # RTP padding
        st.booleans(),  # Chrome's header extensions
        now_steps,
        st.sampled_from([False, False, False, True]),  # mutate the whole packet
        st.randoms(use_true_random=False),
    )


def steps_for(codec: str) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    return st.lists(
        st.one_of(
            push_step(codec),
            push_step(codec),
            push_step(codec),
            st.tuples(st.just("seed"), st.sampled_from(SEEDS), now_steps),
            st.tuples(st.just("again"), st.integers(0, 8)),  # an earlier packet again (duplicate or late)
            st.tuples(st.just("get"), u16 | st.sampled_from([-1, 65536])),
            st.tuples(st.just("report"), now_steps, st.sampled_from([0, 0, 0x12345678, 1 << 32]),
                      st.none() | now_steps),
            st.tuples(st.just("sr"), st.integers(0, 2**64 - 1) | st.just(2**64), u32, now_steps),
            st.tuples(st.just("odd_now"), odd_now),
            st.tuples(st.just("reset")),
        ),
        max_size=50,
    )


def check_invariants(twins: Twins, codec: str) -> None:
    t = twins.tracks[1]
    gop = t.gop()
    assert t.gop_packets == len(gop) <= t.gop_max_packets
    assert t.gop_bytes == sum(map(len, gop)) <= t.gop_max_bytes
    if codec == "opus":
        assert gop == [] and t.keyframes == 0 and t.sps is None
    for seq in range(0, 65536, 4099):
        packet = t.get(seq)
        assert packet is None or struct.unpack_from("!H", packet, 2)[0] == seq


def run(codec: str, settings_args: tuple[int, int, int], steps: list[tuple[Any, ...]]) -> None:
    cache_size, max_packets, max_bytes = settings_args
    twins = Twins(codec, 90000 if codec != "opus" else 48000, cache_size, max_packets, max_bytes,
                  probe=(0, 1, 2, 100, 65535))
    seq, ts, now = 65500, 4294960000, 100.0
    sent: list[bytes] = []
    for step in steps:
        kind = step[0]
        if kind == "push":
            _, dseq, dts, ssrc_index, payload, pad, ext, dnow, mutate, rnd = step
            seq = (seq + dseq) & 0xFFFF
            ts = (ts + dts) & 0xFFFFFFFF
            now += dnow
            first = 0x80 | (0x10 if ext else 0) | (0x20 if pad else 0)
            ssrc = (0x1B2C3D4E, 0xCAFE)[ssrc_index]
            packet = struct.pack("!BBHII", first, 96, seq, ts, ssrc) + (CHROME_EXT if ext else b"") + payload
            if pad:
                packet += bytes(pad - 1) + bytes([pad])
            if mutate:
                data = bytearray(packet)
                for _ in range(rnd.randint(1, 2)):
                    if data:
                        data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
                packet = bytes(data[: rnd.randint(0, len(data))] if rnd.random() < 0.3 else data)
            result = twins.outcome("push", packet, now)
            sent.append(packet)
            parsed = _parse(packet)
            if parsed[0] == "raise":
                assert result == parsed
            else:
                assert result[0] == "ok"
        elif kind == "seed":
            now += step[2]
            result = twins.outcome("push", step[1], now)
            assert result[0] == "ok" or result[1] == "ValueError"
            sent.append(step[1])
        elif kind == "again":
            if sent:
                twins.outcome("push", sent[-1 - step[1] % len(sent)], now)
        elif kind == "get":
            twins.outcome("get", step[1])
        elif kind == "report":
            result = twins.outcome("report_block", now + step[1], step[2], None if step[3] is None else now - step[3])
            if result[0] == "ok":
                assert 0 <= result[1][1] <= 255 and -0x800000 <= result[1][2] <= 0x7FFFFF
        elif kind == "sr":
            twins.outcome("on_sender_report", step[1], step[2], now + step[3])
        elif kind == "odd_now":
            if sent:
                twins.outcome("push", sent[-1], step[1])
        else:
            twins.outcome("reset")
        check_invariants(twins, codec)
        # NACKs ask for recent packets: the caches must answer alike for every one of them.
        for packet in sent[-24:]:
            if len(packet) >= 4:
                seq = struct.unpack_from("!H", packet, 2)[0]
                assert twins.tracks[0].get(seq) == twins.tracks[1].get(seq)


def _parse(packet: bytes) -> tuple[Any, ...]:
    try:
        twin_rtp.parse_rtp(packet)
    except ValueError as exc:
        return ("raise", "ValueError", str(exc))
    return ("ok",)


track_settings = st.tuples(
    st.sampled_from([1, 2, 4, 16, 1024]),
    st.sampled_from([1, 3, 20, 4096]),
    st.sampled_from([1, 500, 3000, 8_000_000]),
)


@BOUNDED
@given(track_settings, steps_for("VP8"))
def test_vp8_stream_parity(settings_args: tuple[int, int, int], steps: list[tuple[Any, ...]]) -> None:
    run("VP8", settings_args, steps)


@BOUNDED
@given(track_settings, steps_for("H264"))
def test_h264_stream_parity(settings_args: tuple[int, int, int], steps: list[tuple[Any, ...]]) -> None:
    run("H264", settings_args, steps)


@BOUNDED
@given(track_settings, steps_for("opus"))
def test_opus_stream_parity(settings_args: tuple[int, int, int], steps: list[tuple[Any, ...]]) -> None:
    run("opus", settings_args, steps)


@BOUNDED
@given(st.sampled_from(["VP8", "H264", "opus"]), st.sampled_from(SEEDS).flatmap(mutated))
def test_mutated_corpus_packet_parity(codec: str, packet: bytes) -> None:
    twins = Twins(codec, 90000, probe=(0x0F00, 0x4E21, 0x3A1C))
    result = twins.outcome("push", packet, 1.0)
    assert result == _parse(packet) if result[0] == "raise" else result[0] == "ok"
    twins.outcome("push", packet, 1.0)  # the same again: a duplicate
    twins.outcome("report_block", 2.0)
