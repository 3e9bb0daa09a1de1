"""RTP to frames (Depacketizer.push): the native module against the Python twin, measured in the same run.

    .venv/bin/python benchmarks/bench_depacketize.py [--quick]

The streams are 720p-sized at 30 frames per second with a keyframe every 60 frames, as a Chrome publisher
sends them: H.264 (a STAP-A with SPS and PPS ahead of each 60 kB IDR, 6-15 kB P slices, everything else
FU-A fragments of about 1200 bytes, so FU-A heavy) and VP8 (descriptor with a 15-bit PictureID, 1200-byte
packets, 50 kB keyframes and 5-12 kB interframes), with Chrome's one-byte header extensions. Each timed
call starts the depacketizer afresh (reset()) and pushes the whole stream (in order, no loss).

Prints a table (packets per second and frames per second per implementation and the native/twin ratio)
and then one JSON line starting with {"bench": "depacketize", ...}. Runs in well under 30 s; --quick is
for smoke tests.
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

try:
    import media._native.depacketize as native_dep
    import media.depacketize as twin_dep
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import media._native.depacketize as native_dep
    import media.depacketize as twin_dep

ROUNDS = 5
FRAMES = 300  # 10 s of video per stream
KEYFRAME_INTERVAL = 60
MTU = 1200

CHROME_EXT = bytes.fromhex("bede0003221b7c523104d34031000000")
SPS = bytes.fromhex("6742c01fda014016ec0440000003004000000f23c60ca8")
PPS = bytes.fromhex("68ce3c80")
VP8_KEY_HEADER = bytes.fromhex("5002009d012a0005d002")  # P=0, start code, 1280x720
VP8_DELTA_HEADER = bytes.fromhex("310a00")


def _pattern(size: int, seed: int) -> bytes:
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(size))


def _rtp(seq: int, ts: int, ssrc: int, pt: int, payload: bytes, marker: bool) -> bytes:
    header = struct.pack("!BBHII", 0x90, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    return header + CHROME_EXT + payload


def _frame_size(frame: int, key: bool) -> int:
    return 60_000 if key else 6_000 + (frame * 2654435761) % 9_000


def h264_stream() -> tuple[list[bytes], int]:
    out = []
    seq, ts = 64000, 1000
    for frame in range(FRAMES):
        idr = frame % KEYFRAME_INTERVAL == 0
        payloads = []
        if idr:
            payloads.append(b"\x78" + b"".join(struct.pack("!H", len(n)) + n for n in (SPS, PPS)))
        header = 0x65 if idr else 0x41
        body = b"\x88" + _pattern(_frame_size(frame, idr), frame)
        chunk = MTU - 2
        pieces = [body[k : k + chunk] for k in range(0, len(body), chunk)]
        for k, piece in enumerate(pieces):
            fu = (0x80 if k == 0 else 0) | (0x40 if k == len(pieces) - 1 else 0) | header & 0x1F
            payloads.append(bytes([header & 0xE0 | 28, fu]) + piece)
        for k, payload in enumerate(payloads):
            out.append(_rtp(seq, ts, 0x0A0B0C0D, 102, payload, k == len(payloads) - 1))
            seq += 1
        ts += 3000
    return out, FRAMES


def vp8_stream() -> tuple[list[bytes], int]:
    out = []
    seq, ts = 61000, 3_000_000_000
    for frame in range(FRAMES):
        key = frame % KEYFRAME_INTERVAL == 0
        data = (VP8_KEY_HEADER if key else VP8_DELTA_HEADER) + _pattern(_frame_size(frame, key) - 10, frame)
        picture_id = frame & 0x7FFF
        room = MTU - 4
        pieces = [data[k : k + room] for k in range(0, len(data), room)]
        for k, piece in enumerate(pieces):
            descriptor = bytes([0x90 if k == 0 else 0x80, 0x80, 0x80 | picture_id >> 8, picture_id & 0xFF])
            out.append(_rtp(seq, ts, 0x1B2C3D4E, 96, descriptor + piece, k == len(pieces) - 1))
            seq += 1
        ts += 3000
    return out, FRAMES


STREAMS = {"H264": h264_stream, "VP8": vp8_stream}


def case_for(codec: str) -> Callable[[ModuleType], tuple[Callable[[], None], int]]:
    def case(mod: ModuleType) -> tuple[Callable[[], None], int]:
        stream, _ = STREAMS[codec]()
        dep = mod.Depacketizer(codec, 90000)
        reset, push = dep.reset, dep.push

        def run() -> None:
            reset()
            for packet in stream:
                push(packet)

        return run, len(stream)

    return case


CASES = [
    ("push H.264 720p (FU-A, STAP-A SPS/PPS)", "H264"),
    ("push VP8 720p (15-bit PictureID)", "VP8"),
]


def check_same_results() -> None:
    """The two implementations must agree on the benchmark streams, or the numbers compare nothing."""
    for codec, make in STREAMS.items():
        stream, frames = make()
        outputs = []
        for mod in (twin_dep, native_dep):
            dep = mod.Depacketizer(codec, 90000)
            got = [(f.data, f.timestamp, f.keyframe) for p in stream for f in dep.push(p)]
            assert dep.dropped_frames == 0, codec
            outputs.append(got)
        assert outputs[0] == outputs[1] and len(outputs[0]) == frames, (codec, len(outputs[0]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short rounds, for smoke tests")
    args = parser.parse_args()
    budget = 0.1 if args.quick else 1.5

    check_same_results()
    results = {}
    for name, codec in CASES:
        stream, frames = STREAMS[codec]()
        packets = len(stream)
        twin_pps, native_pps = twin_timing.measure(case_for(codec), twin_dep, native_dep, budget, ROUNDS)
        results[name] = {
            "packets": packets,
            "twin_packets_per_s": round(twin_pps),
            "native_packets_per_s": round(native_pps),
            "twin_frames_per_s": round(twin_pps * frames / packets),
            "native_frames_per_s": round(native_pps * frames / packets),
            "ratio": round(native_pps / twin_pps, 2),
        }

    width = max(len(name) for name in results)
    print(f"{'case':<{width}}  {'twin pkt/s':>11}  {'native pkt/s':>12}  {'twin fr/s':>10}  {'native fr/s':>11}"
          f"  {'native/twin':>11}")
    for name, row in results.items():
        print(f"{name:<{width}}  {row['twin_packets_per_s']:>11,}  {row['native_packets_per_s']:>12,}  "
              f"{row['twin_frames_per_s']:>10,}  {row['native_frames_per_s']:>11,}  {row['ratio']:>10.1f}x")
    print(
        json.dumps(
            {
                "bench": "depacketize",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "native_module": Path(native_dep.__file__ or "").name,
                "frames_per_stream": FRAMES,
                "keyframe_interval": KEYFRAME_INTERVAL,
                "mtu": MTU,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
