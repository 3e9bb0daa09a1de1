"""What /metrics costs the server: one scrape, and the once-a-second sweep of its viewers' counters, with
10 to 10,000 viewer tracks, against a plain read of the same counters, measured in the same run.

    .venv/bin/python benchmarks/bench_metrics.py [--quick]

An in-process Server (no listeners) gets N RTSP client tracks with real native fan-out outputs (TrackSink,
as every viewer has); the sweep (Ledger.update over them) and a whole scrape (collect + text encoding,
`generate_latest`) are timed, and so is summing the same four counters over the same sinks with nothing
else (what /rest-api/stream/find_all does per viewer). Nothing of this runs per packet: the sweep runs
once a second, a scrape every scrape interval (15 s is Prometheus's default).

Prints a table (microseconds per call, the sweep/plain-read ratio, and the share of one core the sweep
takes at one per second) and one JSON line starting with {"bench": "metrics", ...}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

try:
    from media import native
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from media import native

from prometheus_client.exposition import generate_latest

from media.stream import TrackSink
from streaming import config as config_module
from streaming.metrics import _sink_counters
from streaming.server import Server


class Connection:
    """Stands for an RtspConnection: what the metrics read of one is its clients."""

    clients: dict[int, Any]


def timed(fn: Callable[[], Any], rounds: int) -> float:
    """Median seconds per call."""
    fn()  # warm
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and rounds (a smoke test)")
    args = parser.parse_args()
    sizes = [10, 1000] if args.quick else [10, 100, 1000, 10000]
    rounds = 3 if args.quick else 15
    rtp = native.rtp_module(False)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        cli = config_module.argparse.Namespace(**{"server.data_dir": folder})
        server = Server(config_module.load(cli, environ={}))
        try:
            for n in sizes:
                sinks = [TrackSink(rtp, 1000 + i, 96, 90000, video=i % 2 == 0, send_rtp=lambda _p: True,
                                   send_rtcp=lambda _p: True) for i in range(n)]
                # N RTSP clients of one track each, as the RTSP service holds them.
                connection: Any = Connection()
                connection.clients = {i: SimpleNamespace(sinks=[(None, sink)], attached=True)
                                      for i, sink in enumerate(sinks)}
                server.rtsp.connections.add(connection)

                def plain(sinks: list[TrackSink] = sinks) -> None:
                    totals = [0, 0, 0, 0]
                    for sink in sinks:
                        for i, value in enumerate(_sink_counters(sink)):
                            totals[i] += value

                sweep = timed(server.metrics.sweep, rounds)
                read = timed(plain, rounds)
                scrape = timed(lambda: generate_latest(server.metrics.registry), rounds)
                size = len(generate_latest(server.metrics.registry))
                server.rtsp.connections.discard(connection)
                server.metrics.sweep()  # they go: read once more, then let go
                server.metrics.sweep()
                results.append({"viewer_tracks": n, "sweep_us": round(sweep * 1e6, 1),
                                "plain_read_us": round(read * 1e6, 1), "sweep_vs_plain": round(sweep / read, 2),
                                "scrape_us": round(scrape * 1e6, 1), "scrape_bytes": size,
                                "sweep_core_share_pct": round(sweep * 100, 3)})
        finally:
            server.transcoders.close()
            server.apps.close()

    print(f"{'viewer tracks':>13} {'sweep µs':>10} {'plain read µs':>14} {'ratio':>6} {'scrape µs':>10} "
          f"{'scrape bytes':>12} {'sweep % core':>12}")
    for r in results:
        print(f"{r['viewer_tracks']:>13} {r['sweep_us']:>10} {r['plain_read_us']:>14} {r['sweep_vs_plain']:>6} "
              f"{r['scrape_us']:>10} {r['scrape_bytes']:>12} {r['sweep_core_share_pct']:>12}")
    print(json.dumps({"bench": "metrics", "python": platform.python_version(), "results": results}))


if __name__ == "__main__":
    main()
