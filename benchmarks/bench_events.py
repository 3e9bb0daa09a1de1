"""Stream event fan-out: how long a publisher's sendStreamEvent takes to reach every subscriber of the
stream as notifyStreamEvent, for 1, 10 and 100 subscribers, measured in the same run.

    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/bench_events.py' [--events 300]

Starts the real server as a subprocess (as `streaming serve`, the embedded echo backend as defaultApp, so
every event also costs the server one StreamEvent hook). For each group size N, one publisher session and
N subscriber sessions (each its own WebSocket) are protocol clients in this process, as
tests/support/wsclient.py speaks it: the publisher sends publishStream with an aiortc offer, each
subscriber playStream with a recvonly offer, and the server answers both. Fan-out is signalling only, so
no peer completes ICE and no media flows (the connect timeout is raised for the run): what is measured
is the server's event path, not a codec.

1. Closed loop: `--events` events, one at a time (the next is sent when all N subscribers have the last
   one). "last" is send -> the N-th subscriber's receipt, "each" is send -> every single receipt. The
   five event types (audioMuted, audioUnmuted, videoMuted, videoUnmuted, data) take turns; each carries
   its number in the payload.
2. Burst: `--events` events (at most 200: a session's messages in flight are bounded) sent back to
   back; deliveries per second = N x events / (first send -> last receipt). Server CPU per event is
   the server process's utime + stime over the burst (until it is quiet again, so the StreamEvent
   hooks are in), divided by the events.

Times include this process reading N sockets on one event loop (the clients share the machine's 2
cores with the server), so they are an upper bound of what a subscriber sees on loopback.
Prints a table and then one JSON line starting with {"bench": "events", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aiortc import RTCPeerConnection  # noqa: E402

from benchmarks.bench_sessions import CONNECTION, PONG, cpu_seconds, interfaces, wait_quiet  # noqa: E402
from media import ice  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402
from tests.test_webrtc_bridge import Pattern, offer_from  # noqa: E402

GROUPS = (1, 10, 100)
TYPES = ("audioMuted", "audioUnmuted", "videoMuted", "videoUnmuted", "data")
WARMUP = 20
# Events sent back to back: fewer than the messages a session may have in flight (streaming/ws.py
# MAX_PENDING_MESSAGES, 256), beyond which the server answers `fail` and drops them.
BURST = 200


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Fanout:
    """Receipts of the events of one stream, by event number."""

    subscribers: int
    arrivals: dict[int, list[float]] = field(default_factory=dict)
    complete: dict[int, asyncio.Future[float]] = field(default_factory=dict)

    def expect(self, seq: int) -> asyncio.Future[float]:
        future = self.complete[seq] = asyncio.get_running_loop().create_future()
        self.arrivals[seq] = []
        return future

    def received(self, seq: int, at: float) -> None:
        got = self.arrivals.get(seq)
        if got is None:
            return
        got.append(at)
        if len(got) == self.subscribers and not self.complete[seq].done():
            self.complete[seq].set_result(at)


class Client:
    """One session of the client protocol: answers pings, hands notifyStreamEvent receipts on."""

    def __init__(self, http: aiohttp.ClientSession, url: str, fanout: Fanout | None = None):
        self.http = http
        self.url = url
        self.fanout = fanout
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.waiting: dict[str, asyncio.Future[Any]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
        self.reader = asyncio.get_running_loop().create_task(self._read())
        await self.request("connection", CONNECTION, "getUserData")

    async def request(self, message: str, obj: Any, answer: str, timeout: float = 30.0) -> Any:
        future = self.waiting[answer] = asyncio.get_running_loop().create_future()
        await self.send(message, obj)
        return await asyncio.wait_for(future, timeout)

    async def send(self, message: str, obj: Any) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps({"message": message, "data": [obj]}))

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            at = time.perf_counter()
            doc = json.loads(msg.data)
            name = doc.get("message")
            if name == "notifyStreamEvent" and self.fanout is not None:
                self.fanout.received(doc["data"][0]["payload"]["seq"], at)
            elif name == "ping":
                await self.ws.send_str(PONG)
            elif name == "fail":
                print(f"server says: {doc['data'][0]}", file=sys.stderr)
            elif name in self.waiting and not self.waiting[name].done():
                self.waiting[name].set_result(doc["data"])

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()


def stream_request(name: str, published: bool, sdp: str) -> tuple[str, dict[str, Any]]:
    msid = str(uuid.uuid4())
    return msid, {"mediaSessionId": msid, "name": name, "published": published, "hasVideo": True,
                  "hasAudio": False, "status": "PENDING", "record": False, "mediaProvider": "WebRTC", "sdp": sdp}


async def offers() -> tuple[str, str]:
    """A publisher's offer (a video track) and a subscriber's (recvonly): every session sends its copy."""
    publisher, viewer = RTCPeerConnection(), RTCPeerConnection()
    publisher.addTrack(Pattern())
    viewer.addTransceiver("video", direction="recvonly")
    try:
        return await offer_from(publisher), await offer_from(viewer)
    finally:
        await publisher.close()
        await viewer.close()


async def measure_group(http: aiohttp.ClientSession, server: ServerProcess, pid: int, size: int,
                        publish_sdp: str, play_sdp: str, events: int) -> dict[str, Any]:
    name = f"bench-events-{size}"
    fanout = Fanout(size)
    publisher = Client(http, server.ws_url)
    subscribers = [Client(http, server.ws_url, fanout) for _ in range(size)]
    clients = [publisher, *subscribers]
    try:
        await asyncio.gather(*(c.open() for c in clients))
        msid, request = stream_request(name, True, publish_sdp)
        await publisher.request("publishStream", request, "setRemoteSDP")
        for subscriber in subscribers:  # one at a time: the server makes a peer for each
            await subscriber.request("playStream", stream_request(name, False, play_sdp)[1], "setRemoteSDP")

        async def event(seq: int) -> None:
            await publisher.send("sendStreamEvent", {"mediaSessionId": msid, "type": TYPES[seq % len(TYPES)],
                                                     "payload": {"seq": seq}})

        seq = 0
        for _ in range(WARMUP):
            done = fanout.expect(seq)
            await event(seq)
            await asyncio.wait_for(done, 10)
            seq += 1
        last: list[float] = []
        each: list[float] = []
        for _ in range(events):
            done = fanout.expect(seq)
            sent = time.perf_counter()
            await event(seq)
            finished = await asyncio.wait_for(done, 10)
            last.append(finished - sent)
            each.extend(at - sent for at in fanout.arrivals[seq])
            seq += 1
        await wait_quiet(pid)
        cpu_before = cpu_seconds(pid)
        burst_events = min(events, BURST)
        pending = [fanout.expect(s) for s in range(seq, seq + burst_events)]
        started = time.perf_counter()
        for s in range(seq, seq + burst_events):
            await event(s)
        await asyncio.wait_for(asyncio.gather(*pending), 60)
        burst = time.perf_counter() - started
        await wait_quiet(pid)
        cpu = cpu_seconds(pid) - cpu_before
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {
        "subscribers": size,
        "events": events,
        "last_p50_ms": round(percentile(last, 0.5) * 1000, 3),
        "last_p95_ms": round(percentile(last, 0.95) * 1000, 3),
        "last_max_ms": round(max(last) * 1000, 3),
        "each_p50_ms": round(percentile(each, 0.5) * 1000, 3),
        "burst_events": burst_events,
        "burst_s": round(burst, 4),
        "burst_deliveries_per_s": round(size * burst_events / burst),
        "server_cpu_ms_per_event": round(cpu / burst_events * 1000, 3),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ice.use_host_addresses(["127.0.0.1"])
    publish_sdp, play_sdp = await offers()
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        server = ServerProcess(Path(tmp) / "data", ["--webrtc-connect-timeout", "600", "--log-level", "warning"])
        server.start()
        assert server.proc is not None
        try:
            connector = aiohttp.TCPConnector(limit=0, force_close=True)
            async with aiohttp.ClientSession(connector=connector, trust_env=False) as http:
                rows = [await measure_group(http, server, server.proc.pid, size, publish_sdp, play_sdp, args.events)
                        for size in GROUPS]
        finally:
            server.stop()
    return {"bench": "events", "groups": list(GROUPS), "rows": rows}


def table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [f"Stream event fan-out, publisher -> N subscribers (protocol clients on loopback), "
             f"{rows[0]['events']} events closed loop, then {rows[0]['burst_events']} back to back",
             f"{'subscribers':>11} {'last p50 ms':>11} {'last p95 ms':>11} {'last max ms':>11} "
             f"{'each p50 ms':>11} {'burst deliv/s':>13} {'server CPU ms/event':>19}"]
    for r in rows:
        lines.append(f"{r['subscribers']:>11} {r['last_p50_ms']:>11.2f} {r['last_p95_ms']:>11.2f} "
                     f"{r['last_max_ms']:>11.2f} {r['each_p50_ms']:>11.2f} {r['burst_deliveries_per_s']:>13} "
                     f"{r['server_cpu_ms_per_event']:>19.3f}")
    one, most = rows[0], rows[-1]
    cpu_one, cpu_most = one["server_cpu_ms_per_event"], most["server_cpu_ms_per_event"]
    per_subscriber_us = (cpu_most - cpu_one) * 1000 / (most["subscribers"] - one["subscribers"])
    lines.append(f"{most['subscribers']} vs {one['subscribers']} subscriber(s): last p50 x"
                 f"{most['last_p50_ms'] / one['last_p50_ms']:.1f}, server CPU per event x"
                 f"{cpu_most / max(cpu_one, 1e-9):.1f}, server CPU per extra subscriber {per_subscriber_us:.1f} us")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300, help="events per measurement (default 300)")
    args = parser.parse_args()
    if args.events < 1:
        parser.error("--events must be positive")
    others = [i for i in interfaces() if i != "lo"]
    if others:
        print(f"note: network interfaces besides lo exist ({', '.join(others)}); all traffic goes to "
              "127.0.0.1 anyway, but run under `unshare --net` for a loopback-only namespace", file=sys.stderr)
    started = time.monotonic()
    try:
        result = asyncio.run(asyncio.wait_for(run(args), timeout=110))
    except TimeoutError:
        print("benchmark exceeded its 110 s budget", file=sys.stderr)
        return 1
    result["total_s"] = round(time.monotonic() - started, 2)
    print(table(result))
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
