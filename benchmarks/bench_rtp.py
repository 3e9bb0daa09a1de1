"""RTP/RTCP per-packet work: the native modules (media._native.rtp, .rtcp) against their Python twins,
measured in the same run.

    .venv/bin/python benchmarks/bench_rtp.py [--quick]

Prints a table (packets per second per implementation and the native/twin ratio) and then one JSON line
starting with {"bench": "rtp", ...}. Runs in well under 30 s; --quick is for smoke tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import twin_timing  # beside this script
from twin_timing import Case

try:
    import media._native.rtcp as native_rtcp
    import media._native.rtp as native_rtp
    import media.rtcp as twin_rtcp
    import media.rtp as twin_rtp
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import media._native.rtcp as native_rtcp
    import media._native.rtp as native_rtp
    import media.rtcp as twin_rtcp
    import media.rtp as twin_rtp

SUBSCRIBERS = 4
ROUNDS = 5


def _pattern(size: int, seed: int) -> bytes:
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(size))


def rtp_workload(mod: ModuleType) -> list[bytes]:
    """A mix like a publisher's: Opus audio, VP8 video at MTU size, padded H.264, each with Chrome's
    one-byte header extensions (RFC 8285)."""
    opus_ext = bytes.fromhex("10a4221b7c3e3104d2403000")
    video_ext = bytes.fromhex("221b7c523104d34031000000")
    packets = []
    for i in range(32):
        header = mod.RtpHeader(
            extension=True,
            extension_profile=0xBEDE,
            payload_type=111,
            sequence_number=(1000 + i) & 0xFFFF,
            timestamp=960 * i,
            ssrc=0x5D2E0F11,
            extension_data=opus_ext,
        )
        packets.append(bytes(header) + _pattern(90, i))
        header = mod.RtpHeader(
            extension=True,
            extension_profile=0xBEDE,
            marker=i % 8 == 7,
            payload_type=96,
            sequence_number=(60000 + i) & 0xFFFF,
            timestamp=3000 * (i // 8),
            ssrc=0x1B2C3D4E,
            extension_data=video_ext,
        )
        packets.append(bytes(header) + _pattern(1150, i))
        if i % 4 == 0:
            header = mod.RtpHeader(
                padding=True,
                extension=True,
                extension_profile=0xBEDE,
                payload_type=102,
                sequence_number=i,
                timestamp=3000 * i,
                ssrc=0x0A0B0C0D,
                extension_data=video_ext,
            )
            packets.append(bytes(header) + _pattern(700, i) + b"\x00\x00\x00\x04")
    return packets


def rtcp_workload(mod: ModuleType) -> list[bytes]:
    """Compounds an SFU sees: SR+SDES from a publisher, RR+REMB, RR+NACK, RR+PLI from viewers."""
    block = mod.RtcpReportBlock(0x1B2C3D4E, 12, 345, 0x00010F01, 27, 0xB2C3D4E5, 0x00020000)
    return [
        mod.build_sr(0x5D2E0F11, 0xE9A1B2C3D4E5F607, 0x8F1B2C40, 1523, 98772)
        + mod.build_sdes(0x5D2E0F11, "mEq1nl0mNXFxWb3w"),
        mod.build_rr(1, [block]) + mod.build_sdes(1, "viewer-cname") + mod.build_remb(1, 1500000, [0x1B2C3D4E]),
        mod.build_rr(1) + mod.build_nack(1, 0x1B2C3D4E, [100, 102, 103, 130]),
        mod.build_rr(1) + mod.build_pli(1, 0x1B2C3D4E),
    ]


def case_parse(mod: ModuleType) -> tuple[Callable[[], None], int]:
    packets = rtp_workload(mod)
    parse = mod.parse_rtp

    def run() -> None:
        for data in packets:
            parse(data)

    return run, len(packets)


def case_forward(mod: ModuleType) -> tuple[Callable[[], None], int]:
    """The forwarding path: parse once, then per subscriber copy the packet and rewrite it in place."""
    packets = rtp_workload(mod)
    parse = mod.parse_rtp
    rewriters = [mod.RtpRewriter(0x7000 + k, 100 + k) for k in range(SUBSCRIBERS)]

    def run() -> None:
        now = 1.0
        for data in packets:
            parse(data)
            for rewriter in rewriters:
                rewriter.rewrite(bytearray(data), now)

    return run, len(packets)


def case_rewrite(mod: ModuleType) -> tuple[Callable[[], None], int]:
    buffers = [bytearray(data) for data in rtp_workload(mod)]
    rewrite = mod.rewrite_rtp

    def run() -> None:
        for buf in buffers:
            rewrite(buf, 0x01020304, 100, 17, 90000)

    return run, len(buffers)


def case_rtcp_walk(mod: ModuleType) -> tuple[Callable[[], None], int]:
    compounds = rtcp_workload(mod)
    parse = mod.parse_rtcp

    def run() -> None:
        for data in compounds:
            parse(data)

    return run, len(compounds)


def case_rtcp_rewrite(mod: ModuleType) -> tuple[Callable[[], None], int]:
    buffers = [bytearray(data) for data in rtcp_workload(mod)]
    rewrite = mod.rewrite_rtcp_ssrcs
    mapping = {0x1B2C3D4E: 0x1B2C3D4E}  # identity: every run does the same work

    def run() -> None:
        for buf in buffers:
            rewrite(buf, mapping, 0x42)

    return run, len(buffers)


RTP = (twin_rtp, native_rtp)
RTCP = (twin_rtcp, native_rtcp)
# (name, case, (twin, native) module pair the case is built for)
CASES: list[tuple[str, Case, tuple[ModuleType, ModuleType]]] = [
    ("rtp parse", case_parse, RTP),
    (f"rtp parse + rewrite x{SUBSCRIBERS} subscribers", case_forward, RTP),
    ("rtp rewrite_rtp (stateless)", case_rewrite, RTP),
    ("rtcp compound walk", case_rtcp_walk, RTCP),
    ("rtcp rewrite_rtcp_ssrcs", case_rtcp_rewrite, RTCP),
]


def measure(case: Case, modules: tuple[ModuleType, ModuleType], budget: float) -> tuple[float, float]:
    return twin_timing.measure(case, modules[0], modules[1], budget, ROUNDS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short rounds, for smoke tests")
    args = parser.parse_args()
    budget = 0.05 if args.quick else 0.6

    results = {}
    for name, make, modules in CASES:
        twin_pps, native_pps = measure(make, modules, budget)
        results[name] = {
            "twin_pps": round(twin_pps),
            "native_pps": round(native_pps),
            "ratio": round(native_pps / twin_pps, 2),
        }

    width = max(len(name) for name in results)
    print(f"{'case':<{width}}  {'twin pkt/s':>12}  {'native pkt/s':>13}  {'native/twin':>11}")
    for name, row in results.items():
        print(f"{name:<{width}}  {row['twin_pps']:>12,}  {row['native_pps']:>13,}  {row['ratio']:>10.1f}x")
    print(
        json.dumps(
            {
                "bench": "rtp",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "native_module": Path(native_rtp.__file__ or "").name,
                "native_rtcp_module": Path(native_rtcp.__file__ or "").name,
                "subscribers": SUBSCRIBERS,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
