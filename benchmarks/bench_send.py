"""The per-subscriber send path (Fanout.forward): the native module against its Python twin, measured in the
same run, over real loopback sockets.

    .venv/bin/python benchmarks/bench_send.py [--quick]

Each call forwards one 1,200-byte RTP packet to N outputs:
- webrtc: every output has its own UDP socket and an SRTP session (AES-128-CM + HMAC-SHA1-80, what
  libsrtp does for aiortc's peers), as WebRTC viewers have;
- rtsp-udp: every output sends plain RTP from one shared socket (RTSP clients over UDP), so the native
  module sends each packet's copies in one sendmmsg.
The receivers never read: the kernel does the whole send and delivery and drops at the full socket, the
same for both implementations. The twin's cost per copy is what the server paid per viewer before the
native fan-out (copy, rewrite, pylibsrtp protect, sendto from Python).

Prints a table (microseconds per forwarded copy, native/twin ratio) and one JSON line {"bench": "send", ...}.
Run it inside a loopback-only namespace like the other network benchmarks:
    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/bench_send.py'
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pylibsrtp
import twin_timing  # beside this script

try:
    import media._native.fanout as native_fanout

    import media._native.rtp as native_rtp
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import media._native.fanout as native_fanout

    import media._native.rtp as native_rtp
from media import fanout as twin_fanout  # noqa: E402
from media import rtp as twin_rtp  # noqa: E402

ROUNDS = 5
KEY = bytes(range(30))


def srtp_session() -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy)


class Sockets:
    """Senders and never-read receivers, closed at the end."""

    def __init__(self) -> None:
        self.all: list[socket.socket] = []

    def udp(self, rcvbuf: int = 0) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        self.all.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.all:
            sock.close()


def case(kind: str, outputs: int, sockets: Sockets) -> twin_timing.Case:
    def build(fanout: ModuleType) -> tuple[Callable[[], None], int]:
        rtp = native_rtp if fanout is native_fanout else twin_rtp
        fan = fanout.Fanout()
        shared = sockets.udp()
        for k in range(outputs):
            out = fanout.Output(rtp.RtpRewriter(0x1000 + k, 102, 90000), False)
            sink = sockets.udp(rcvbuf=4096)
            if kind == "webrtc":
                out.use_udp(sockets.udp().fileno(), socket.AF_INET, sink.getsockname(), srtp_session())
            else:
                out.use_udp(shared.fileno(), socket.AF_INET, sink.getsockname())
            fan.add(out)
        state = {"seq": 0}
        payload = bytes(1188)

        def run() -> None:
            seq = state["seq"] = (state["seq"] + 1) & 0xFFFF
            packet = struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 0x1111) + payload
            fan.forward(packet, False, seq / 1000)

        return run, outputs

    return build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    args = parser.parse_args()
    budget = 0.4 if args.quick else 3.0
    rows = []
    sockets = Sockets()
    try:
        for kind in ("webrtc", "rtsp-udp"):
            for outputs in (1, 10, 100):
                twin_rate, native_rate = twin_timing.measure(case(kind, outputs, sockets), twin_fanout,
                                                             native_fanout, budget, ROUNDS)
                rows.append({"case": kind, "outputs": outputs, "twin_us_per_copy": round(1e6 / twin_rate, 3),
                             "native_us_per_copy": round(1e6 / native_rate, 3),
                             "speedup": round(native_rate / twin_rate, 2)})
    finally:
        sockets.close()
    print(f"{'case':10} {'N':>4} {'twin us/copy':>13} {'native us/copy':>15} {'native/twin':>12}")
    for row in rows:
        print(f"{row['case']:10} {row['outputs']:>4} {row['twin_us_per_copy']:>13.3f} "
              f"{row['native_us_per_copy']:>15.3f} {row['speedup']:>11.2f}x")
    print(json.dumps({"bench": "send", "python": platform.python_version(), "rows": rows}))


if __name__ == "__main__":
    main()
