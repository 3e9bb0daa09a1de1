"""What a capture (no_media bug report, sessionDebug) costs per packet, measured in one run: a published
track's ingest (PublishedTrack.on_rtp with the native IngestTrack, as a publisher's packets arrive) with
no capture, and with a capture tapping it (the packet listener building a pcap record per packet).

    .venv/bin/python benchmarks/bench_capture.py [--quick]

The stream is VP8 as bench_track.py makes it (30 fps, keyframe every 60 frames, about 1% loss). Rounds
alternate between the two cases, each keeping its best. "off" is the media path as it is when no
capture runs (the taps are removed when a capture ends): the ratio says what running one costs.

Prints a table and then one JSON line starting with {"bench": "capture", ...}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

try:
    import media._native.track as native_track
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import media._native.track as native_track

from bench_track import vp8_stream  # beside this script

from media.stream import Codec, PublishedTrack
from streaming.capture import Capture


class _Peer:
    """What a capture reads of a peer: the connected candidate pair's addresses."""

    addresses = (("127.0.0.1", 40000), ("127.0.0.1", 50000))


def _track() -> PublishedTrack:
    ingest = native_track.IngestTrack("VP8", 90000)
    return PublishedTrack(Codec("video", "VP8", 90000, 96), ingest, native_track, lambda ssrc: None)


def run_once(packets: list[tuple[bytes, float]], capture: bool) -> float:
    """Seconds to ingest the stream once, on a fresh track, with or without a capture tapping it."""
    track = _track()
    tap = Capture([], max_bytes=1 << 30) if capture else None
    if tap is not None:
        tap._tap_track(track, _Peer(), inbound=True)  # what Capture.start does for a publisher's track
    on_rtp = track.on_rtp
    start = time.perf_counter()
    for packet, now in packets:
        on_rtp(packet, now)
    elapsed = time.perf_counter() - start
    if tap is not None:
        data = tap.stop()
        assert tap.buffer.packets == len(packets) and len(data) > 24
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds (a smoke test)")
    args = parser.parse_args()
    rounds = 3 if args.quick else 15
    packets = vp8_stream()
    best = {"off": float("inf"), "on": float("inf")}
    for _ in range(rounds):
        for case in ("off", "on"):
            best[case] = min(best[case], run_once(packets, capture=case == "on"))
    per_packet = {case: best[case] / len(packets) * 1e9 for case in best}
    print(f"{'case':<28}{'ns/packet':>12}{'packets/s':>14}")
    labels = {"off": "no capture (the media path)", "on": "capture running (pcap)"}
    for case in ("off", "on"):
        print(f"{labels[case]:<28}{per_packet[case]:>12.0f}{1e9 / per_packet[case]:>14,.0f}")
    ratio = per_packet["on"] / per_packet["off"]
    print(f"capture running / none: {ratio:.2f}x per packet ({per_packet['on'] - per_packet['off']:.0f} ns more)")
    print(json.dumps({"bench": "capture", "packets": len(packets), "rounds": rounds,
                      "ns_per_packet": {k: round(v, 1) for k, v in per_packet.items()},
                      "ratio_on_off": round(ratio, 3), "python": platform.python_version()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
