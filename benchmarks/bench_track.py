"""Per-track ingest (IngestTrack.push and get): the native module against the Python twin, measured in the
same run.

    .venv/bin/python benchmarks/bench_track.py [--quick]

The streams are what a Chrome publisher sends at 30 frames per second with a keyframe every 60 frames:
VP8 (descriptor with a 15-bit PictureID, MTU-sized packets, 10 per keyframe and 3 per interframe) and
H.264 (a STAP-A with SPS and PPS ahead of each IDR, slices as FU-A fragments), with the one-byte header
extensions and about 1% loss. Each timed call starts the track afresh (reset()) and pushes the whole
stream, so sequence numbers run on as they would live; get() looks up recent packets (hits) and
long-gone ones (misses) as NACKs would.

Prints a table (calls per second per implementation and the native/twin ratio) and then one JSON line
starting with {"bench": "track", ...}. Runs in well under 30 s; --quick is for smoke tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import twin_timing  # beside this script
from twin_timing import Case

try:
    import media._native.track as native_track
    import media.track as twin_track
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import media._native.track as native_track
    import media.track as twin_track

ROUNDS = 5
FRAMES = 600  # 20 s of video per stream, 10 GOPs
KEYFRAME_INTERVAL = 60
LOSS_EVERY = 97  # about 1% of packets never arrive

CHROME_EXT = bytes.fromhex("bede0003221b7c523104d34031000000")
VP8_KEY_HEADER = bytes.fromhex("5002009d012a0005d002")  # P=0, start code, 1280x720
VP8_DELTA_HEADER = bytes.fromhex("310a00")
SPS = bytes.fromhex("6742c01fda014016ec0440000003004000000f23c60ca8")
PPS = bytes.fromhex("68ce3c80")


def _pattern(size: int, seed: int) -> bytes:
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(size))


def _rtp(seq: int, ts: int, ssrc: int, pt: int, payload: bytes, marker: bool) -> bytes:
    header = struct.pack("!BBHII", 0x90, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    return header + CHROME_EXT + payload


def vp8_stream() -> list[tuple[bytes, float]]:
    out = []
    seq, ts = 61000, 3_000_000_000  # both wrap during the stream
    for frame in range(FRAMES):
        key = frame % KEYFRAME_INTERVAL == 0
        count = 10 if key else 3
        picture_id = frame & 0x7FFF
        for i in range(count):
            descriptor = bytes([0x90 if i == 0 else 0x80, 0x80, 0x80 | picture_id >> 8, picture_id & 0xFF])
            body = (VP8_KEY_HEADER if key else VP8_DELTA_HEADER) if i == 0 else b""
            payload = descriptor + body + _pattern(1150 if key else 900, seq)
            out.append((_rtp(seq, ts, 0x1B2C3D4E, 96, payload, i == count - 1), 10.0 + frame / 30 + i * 0.0004))
            seq += 1
        ts += 3000
    return [item for n, item in enumerate(out) if n % LOSS_EVERY != LOSS_EVERY - 1]


def h264_stream() -> list[tuple[bytes, float]]:
    out = []
    seq, ts = 64000, 1000
    for frame in range(FRAMES):
        idr = frame % KEYFRAME_INTERVAL == 0
        now = 10.0 + frame / 30
        if idr:
            stap = b"\x78" + b"".join(struct.pack("!H", len(nal)) + nal for nal in (SPS, PPS))
            out.append((_rtp(seq, ts, 0x0A0B0C0D, 102, stap, False), now))
            seq += 1
        count = 9 if idr else 3
        nal = 0x65 if idr else 0x41
        for i in range(count):
            fu = bytes([nal & 0xE0 | 28, (0x80 if i == 0 else 0) | (0x40 if i == count - 1 else 0) | nal & 0x1F])
            payload = fu + _pattern(1150 if idr else 900, seq)
            out.append((_rtp(seq, ts, 0x0A0B0C0D, 102, payload, i == count - 1), now + i * 0.0004))
            seq += 1
        ts += 3000
    return [item for n, item in enumerate(out) if n % LOSS_EVERY != LOSS_EVERY - 1]


def _interleaved(a: list[tuple[bytes, float]], b: list[tuple[bytes, float]]) -> list[tuple[int, bytes, float]]:
    tagged = [(0, p, t) for p, t in a] + [(1, p, t) for p, t in b]
    return sorted(tagged, key=lambda item: item[2])


def case_push_vp8(mod: ModuleType) -> tuple[Callable[[], None], int]:
    stream = vp8_stream()
    track = mod.IngestTrack("VP8", 90000)
    reset, push = track.reset, track.push

    def run() -> None:
        reset()
        for packet, now in stream:
            push(packet, now)

    return run, len(stream)


def case_push_h264(mod: ModuleType) -> tuple[Callable[[], None], int]:
    stream = h264_stream()
    track = mod.IngestTrack("H264", 90000)
    reset, push = track.reset, track.push

    def run() -> None:
        reset()
        for packet, now in stream:
            push(packet, now)

    return run, len(stream)


def case_push_mixed(mod: ModuleType) -> tuple[Callable[[], None], int]:
    """Both publishers' packets in arrival order, each to its own track: the ingest loop of one server."""
    stream = _interleaved(vp8_stream(), h264_stream())
    tracks = [mod.IngestTrack("VP8", 90000), mod.IngestTrack("H264", 90000)]
    pushes = [t.push for t in tracks]

    def run() -> None:
        for t in tracks:
            t.reset()
        for which, packet, now in stream:
            pushes[which](packet, now)

    return run, len(stream)


def case_get(mod: ModuleType) -> tuple[Callable[[], None], int]:
    """NACK lookups after a stream: three in four for one of the last 1024 packets, the rest long gone."""
    stream = vp8_stream()
    track = mod.IngestTrack("VP8", 90000)
    for packet, now in stream:
        track.push(packet, now)
    newest = track.extended_highest_seq
    wanted = [(newest - (k * 37) % 1024) & 0xFFFF for k in range(384)]
    wanted += [(newest - 2000 - k * 11) & 0xFFFF for k in range(128)]
    get = track.get

    def run() -> None:
        for seq in wanted:
            get(seq)

    return run, len(wanted)


CASES: list[tuple[str, Case]] = [
    ("push VP8 (keyframe every 60 frames)", case_push_vp8),
    ("push H.264 (STAP-A SPS/PPS + FU-A)", case_push_h264),
    ("push mixed VP8 + H.264, two tracks", case_push_mixed),
    ("get (NACK lookups, 75% hits)", case_get),
]


def measure(case: Case, budget: float) -> tuple[float, float]:
    return twin_timing.measure(case, twin_track, native_track, budget, ROUNDS)


def check_same_results() -> None:
    """The two implementations must agree on the benchmark streams, or the numbers compare nothing."""
    for codec, stream in (("VP8", vp8_stream()), ("H264", h264_stream())):
        tracks = [mod.IngestTrack(codec, 90000) for mod in (twin_track, native_track)]
        flags = [[t.push(p, now) for p, now in stream] for t in tracks]
        assert flags[0] == flags[1], codec
        assert tracks[0].keyframes == tracks[1].keyframes == FRAMES // KEYFRAME_INTERVAL, codec
        assert tracks[0].report_block(99.0) == tracks[1].report_block(99.0), codec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short rounds, for smoke tests")
    args = parser.parse_args()
    budget = 0.1 if args.quick else 1.0

    check_same_results()
    results = {}
    for name, make in CASES:
        twin_ops, native_ops = measure(make, budget)
        results[name] = {
            "twin_ops": round(twin_ops),
            "native_ops": round(native_ops),
            "ratio": round(native_ops / twin_ops, 2),
        }

    width = max(len(name) for name in results)
    print(f"{'case':<{width}}  {'twin ops/s':>12}  {'native ops/s':>13}  {'native/twin':>11}")
    for name, row in results.items():
        print(f"{name:<{width}}  {row['twin_ops']:>12,}  {row['native_ops']:>13,}  {row['ratio']:>10.1f}x")
    print(
        json.dumps(
            {
                "bench": "track",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "native_module": Path(native_track.__file__ or "").name,
                "frames_per_stream": FRAMES,
                "keyframe_interval": KEYFRAME_INTERVAL,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
