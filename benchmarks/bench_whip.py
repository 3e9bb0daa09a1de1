"""Stream setup over WHIP/WHEP against the WebSDK protocol, in the same run: how long a publisher and a
viewer take to get going, and the server CPU each setup costs.

    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/bench_whip.py' [--rounds 20]

Starts the real server as a subprocess. Each round publishes a stream and plays it, once over WHIP/WHEP
(streaming.client.whip: one HTTP POST each) and once over the WebSDK protocol (streaming.client: a
WebSocket session, publishStream/playStream), both with aiortc on loopback, 320x240 VP8. Measured per
round: "ready" (from making the offer to the media connected: ICE and DTLS for WHIP/WHEP;
PUBLISHING/PLAYING for the WebSDK, which the server sends once its side connected) and "first frame"
(from the viewer's offer to its first decoded frame). Server
CPU per round is the server process's utime + stime over the rounds of each kind, divided by the rounds.
The clients share the machine's cores with the server, so times are upper bounds.
Prints a table and then one JSON line starting with {"bench": "whip", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streaming.client import Session  # noqa: E402
from streaming.client.webrtc import use_ice_addresses  # noqa: E402
from streaming.client.whip import WhepPlayer, WhipPublisher  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, clock ticks of 10 ms


async def whip_round(server: ServerProcess, name: str) -> dict[str, float]:
    started = time.monotonic()
    publisher = await WhipPublisher.start(server.rest_url + f"/whip/{name}", codec="VP8", width=320, height=240)
    published = time.monotonic()
    play_started = time.monotonic()
    viewer = await WhepPlayer.start(server.rest_url + f"/whep/{name}")
    played = time.monotonic()
    await viewer.wait_frames(1, 20)
    assert viewer.first_frame_at is not None
    result = {"publish_ready": published - started, "play_ready": played - play_started,
              "first_frame": viewer.first_frame_at - play_started}
    await viewer.stop()
    await publisher.stop()
    return result


async def websdk_round(session: Session, name: str) -> dict[str, float]:
    started = time.monotonic()
    publisher = await session.publish(name, codec="VP8", width=320, height=240)
    published = time.monotonic()
    play_started = time.monotonic()
    player = await session.play(name)
    played = time.monotonic()
    await player.wait_frames(1, 20)
    assert player.video.first_frame_at is not None
    result = {"publish_ready": published - started, "play_ready": played - play_started,
              "first_frame": player.video.first_frame_at - play_started}
    await player.stop(wait=True)
    await publisher.stop(wait=True)
    return result


def summary(rounds: list[dict[str, float]], cpu: float) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": len(rounds), "server_cpu_ms_per_round": round(cpu * 1000 / len(rounds), 1)}
    for key in ("publish_ready", "play_ready", "first_frame"):
        values = sorted(r[key] for r in rounds)
        out[key] = {"median_ms": round(statistics.median(values) * 1000, 1),
                    "p90_ms": round(values[int(0.9 * (len(values) - 1))] * 1000, 1)}
    return out


async def run(rounds: int) -> dict[str, Any]:
    use_ice_addresses(["127.0.0.1"])
    with tempfile.TemporaryDirectory(prefix="bench-whip-") as tmp:
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            assert server.proc is not None
            pid = server.proc.pid
            await whip_round(server, "warmup")  # imports, first codec set-up
            cpu = cpu_seconds(pid)
            whip = [await whip_round(server, f"w{i}") for i in range(rounds)]
            whip_cpu = cpu_seconds(pid) - cpu
            async with Session.connect(server.ws_url) as session:
                await websdk_round(session, "warmup2")
                cpu = cpu_seconds(pid)
                websdk = [await websdk_round(session, f"s{i}") for i in range(rounds)]
                websdk_cpu = cpu_seconds(pid) - cpu
        finally:
            server.stop()
    return {"bench": "whip", "whip_whep": summary(whip, whip_cpu), "websdk": summary(websdk, websdk_cpu)}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'path':<10} {'publish ready':>16} {'play ready':>16} {'first frame':>16} {'server CPU':>12}",
             f"{'':<10} {'median / p90 ms':>16} {'median / p90 ms':>16} {'median / p90 ms':>16} {'ms/round':>12}"]
    for label, key in (("WHIP/WHEP", "whip_whep"), ("WebSDK", "websdk")):
        row = result[key]
        cells = [f"{row[k]['median_ms']:.0f} / {row[k]['p90_ms']:.0f}" for k in ("publish_ready", "play_ready",
                                                                              "first_frame")]
        lines.append(f"{label:<10} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} "
                     f"{row['server_cpu_ms_per_round']:>12.1f}")
    whip, websdk = result["whip_whep"], result["websdk"]
    ready = whip["publish_ready"]["median_ms"] / websdk["publish_ready"]["median_ms"]
    cpu = whip["server_cpu_ms_per_round"] / max(websdk["server_cpu_ms_per_round"], 0.1)
    lines.append(f"ratio WHIP/WebSDK: publish ready {ready:.2f}, server CPU per round {cpu:.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    result = asyncio.run(run(args.rounds))
    print(table(result))
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
