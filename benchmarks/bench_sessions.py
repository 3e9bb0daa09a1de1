"""Benchmark: many concurrent WebSocket sessions of the WebSDK client protocol, all on loopback.

Starts the real server as a subprocess (as `streaming serve`), opens N sessions with bounded
concurrency, each sending `connection` as the WebSDK does and waiting for `getUserData` (the default
application, so every session also costs the server one `connect` hook and one ConnectionStatusEvent to
its embedded echo backend). It measures:

- latency: connection sent -> getUserData, and socket open started -> getUserData (p50, p99, max);
- memory per idle session: server RSS (VmRSS) once all sessions are established and the server is
  quiet, minus RSS before, divided by N;
- server CPU time (utime + stime) spent from the first session to the last one established, per session.

Sessions answer the server's protocol pings (as the WebSDK does) while they stay open. At the end
all sessions close and the benchmark checks that the server drops them.

Run it in a loopback-only network namespace:
    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/bench_sessions.py'
Prints a table, then one JSON line {"bench": "sessions", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.server import ServerProcess  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

CONNECTION = {
    "appKey": "defaultApp",
    "mediaProviders": ["WebRTC", "MSE", "WSPlayer"],
    "keepAlive": False,
    "clientVersion": "2.0",
    "clientOSVersion": "5.0 (X11; Linux x86_64)",
    "clientBrowserVersion": "Mozilla/5.0 (X11; Linux x86_64) bench_sessions",
    "msePacketizationVersion": 2,
    "clientInfo": {},
}
PONG = json.dumps({"message": "pong", "data": [None]})


# -- the server process as /proc sees it ---------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLK_TCK


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- client sessions ---------------------------------------------------------------------------------


@dataclass
class Client:
    index: int
    ws: aiohttp.ClientWebSocketResponse | None = None
    reader: asyncio.Task[None] | None = None
    open_started: float = 0.0
    sent: float = 0.0
    user_data_at: float = 0.0
    session_id: str | None = None
    error: str | None = None
    got_user_data: asyncio.Event = field(default_factory=asyncio.Event)
    pings: int = 0

    @property
    def connect_latency(self) -> float:
        return self.user_data_at - self.sent

    @property
    def open_latency(self) -> float:
        return self.user_data_at - self.open_started


async def read_loop(client: Client) -> None:
    """Take getUserData, answer the server's pings; note a fail or an early close."""
    assert client.ws is not None
    try:
        async for msg in client.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            doc = json.loads(msg.data)
            name = doc.get("message")
            if name == "getUserData" and not client.got_user_data.is_set():
                client.user_data_at = time.perf_counter()
                client.session_id = doc["data"][0].get("sessionId")
                client.got_user_data.set()
            elif name == "ping":
                client.pings += 1
                await client.ws.send_str(PONG)
            elif name == "fail" and not client.got_user_data.is_set():
                client.error = f"fail: {doc['data'][0]}"
                client.got_user_data.set()
    except (aiohttp.ClientError, ConnectionError) as exc:
        client.error = client.error or f"{type(exc).__name__}: {exc}"
    finally:
        if not client.got_user_data.is_set():
            client.error = client.error or f"socket closed before getUserData (code {client.ws.close_code})"
            client.got_user_data.set()


async def open_session(http: aiohttp.ClientSession, url: str, client: Client, limit: asyncio.Semaphore,
                       timeout: float) -> None:
    async with limit:
        client.open_started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                client.ws = await http.ws_connect(url, autoping=True, max_msg_size=0)
                client.reader = asyncio.get_running_loop().create_task(read_loop(client))
                client.sent = time.perf_counter()
                await client.ws.send_str(json.dumps({"message": "connection", "data": [CONNECTION]}))
                await client.got_user_data.wait()
        except TimeoutError:
            client.error = f"no getUserData within {timeout} s"
        except (aiohttp.ClientError, OSError) as exc:
            client.error = f"{type(exc).__name__}: {exc}"


async def health(http: aiohttp.ClientSession, rest_url: str) -> dict[str, Any]:
    async with http.get(rest_url + "/health") as resp:
        resp.raise_for_status()
        return dict(await resp.json())


async def wait_for(condition: Any, limit: float, what: str, interval: float = 0.1) -> Any:
    """Await `condition()` until it is truthy or `limit` seconds pass (then raise)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        value = await condition()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {limit} s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval)  # poll interval of a condition with a deadline


async def wait_quiet(pid: int, window: float = 0.5, cpu_share: float = 0.02, limit: float = 10.0) -> float:
    """Wait (at most `limit` s) until the server uses less than `cpu_share` of a core over `window`
    seconds; the time waited. Many idle sessions keep it slightly busy with pings, so running out of
    time is not an error."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < limit:
        before = cpu_seconds(pid)
        await asyncio.sleep(window)  # the measurement window itself
        if cpu_seconds(pid) - before < cpu_share * window:
            break
    return loop.time() - start


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def raise_fd_limit(needed: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(max(soft, needed), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def interfaces() -> list[str]:
    """The network interfaces of this process's network namespace."""
    return sorted(name for _index, name in socket.if_nameindex())


# -- the run -----------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.sessions
    # The server (a child, inheriting the limit) holds a socket per session plus its hook connections;
    # this process holds the client side of each.
    soft, _hard = raise_fd_limit(max(4 * n + 1024, 4096))
    if soft < 2 * n + 256:
        raise SystemExit(f"the open-files limit ({soft}) is too low for {n} sessions")
    extra = ["--log-level", args.log_level]
    if args.python_core:
        extra.append("--python-core")
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        server = ServerProcess(Path(tmp) / "data", extra).start()
        assert server.proc is not None
        pid = server.proc.pid
        try:
            return await measure(args, server, pid)
        finally:
            code = server.stop()
            if code not in (0, None):
                print(f"warning: server exited with {code}; log: {server.log_path}", file=sys.stderr)


async def measure(args: argparse.Namespace, server: ServerProcess, pid: int) -> dict[str, Any]:
    n = args.sessions
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as http:
        # Warm up (first imports, hook client connections, the echo backend) with sessions opened one
        # at a time: their latency is the unloaded one. They close before the baseline is taken.
        warm = [Client(-i - 1) for i in range(args.warmup)]
        one_at_a_time = asyncio.Semaphore(1)
        for c in warm:
            await open_session(http, server.ws_url, c, one_at_a_time, args.timeout)
        bad = [c.error for c in warm if c.error]
        if bad:
            raise SystemExit(f"warm-up sessions failed: {bad[:3]}; server log: {server.log_path}")
        unloaded = [c.connect_latency * 1000 for c in warm[len(warm) // 5:]]  # past the very first ones
        await close_all(warm)
        limit = asyncio.Semaphore(args.concurrency)
        await wait_for(lambda: _sessions_are(http, server, 0), 10, "warm-up sessions to close")
        await wait_quiet(pid)
        rss_before = rss_kib(pid)
        fds_before = open_fds(pid)
        cpu_before = cpu_seconds(pid)

        clients = [Client(i) for i in range(n)]
        t0 = time.perf_counter()
        await asyncio.gather(*(open_session(http, server.ws_url, c, limit, args.timeout) for c in clients))
        wall = time.perf_counter() - t0
        ok = [c for c in clients if c.error is None and c.session_id]
        errors = [c.error for c in clients if c.error]
        await wait_for(lambda: _sessions_are(http, server, len(ok)), 20, f"the server to count {len(ok)}")
        quiet_after = await wait_quiet(pid)
        cpu_after = cpu_seconds(pid)
        rss_after = rss_kib(pid)
        fds_after = open_fds(pid)
        status = await health(http, server.rest_url)

        t_close = time.perf_counter()
        await close_all(clients)
        await wait_for(lambda: _sessions_are(http, server, 0), 30, "the server to drop every session")
        close_wall = time.perf_counter() - t_close
        still_open_after_close = (await health(http, server.rest_url))["sessions"]
        await wait_quiet(pid)
        rss_after_close = rss_kib(pid)

    connect = [c.connect_latency * 1000 for c in ok]
    opened = [c.open_latency * 1000 for c in ok]
    distinct = len({c.session_id for c in ok})
    established = len(ok)
    return {
        "bench": "sessions",
        "sessions": n,
        "established": established,
        "distinct_session_ids": distinct,
        "errors": len(errors),
        "first_errors": errors[:3],
        "concurrency": args.concurrency,
        "media_core": status.get("mediaCore"),
        "unloaded_connect_to_user_data_ms": {"p50": round(percentile(unloaded, 50), 3),
                                             "p99": round(percentile(unloaded, 99), 3),
                                             "samples": len(unloaded)},
        "connect_to_user_data_ms": {"p50": round(percentile(connect, 50), 3),
                                    "p99": round(percentile(connect, 99), 3),
                                    "max": round(max(connect, default=float("nan")), 3)},
        "open_to_user_data_ms": {"p50": round(percentile(opened, 50), 3),
                                 "p99": round(percentile(opened, 99), 3),
                                 "max": round(max(opened, default=float("nan")), 3)},
        "establish_wall_s": round(wall, 3),
        "sessions_per_s": round(established / wall, 1) if wall > 0 else None,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_after_close_kib": rss_after_close,
        "rss_per_session_kib": round((rss_after - rss_before) / max(established, 1), 2),
        "server_fds_per_session": round((fds_after - fds_before) / max(established, 1), 2),
        "cpu_s": round(cpu_after - cpu_before, 3),
        "cpu_ms_per_session": round((cpu_after - cpu_before) * 1000 / max(established, 1), 3),
        "quiet_wait_s": round(quiet_after, 2),
        "hook_calls": status.get("hooks", {}).get("calls"),
        "hook_errors": status.get("hooks", {}).get("errors"),
        "close_all_s": round(close_wall, 3),
        "sessions_left_after_close": still_open_after_close,
    }


async def _sessions_are(http: aiohttp.ClientSession, server: ServerProcess, count: int) -> bool:
    return bool((await health(http, server.rest_url))["sessions"] == count)


async def close_all(clients: list[Client]) -> None:
    async def close(client: Client) -> None:
        if client.ws is not None:
            await client.ws.close()
        if client.reader is not None:
            await asyncio.gather(client.reader, return_exceptions=True)

    for start in range(0, len(clients), 200):
        await asyncio.gather(*(close(c) for c in clients[start:start + 200]))


def table(result: dict[str, Any]) -> str:
    c, o = result["connect_to_user_data_ms"], result["open_to_user_data_ms"]
    u = result["unloaded_connect_to_user_data_ms"]
    rows = [
        ("sessions established", f"{result['established']} / {result['sessions']} "
                                 f"(errors {result['errors']}, concurrency {result['concurrency']})"),
        ("media core", str(result["media_core"])),
        ("connection -> getUserData, alone", f"p50 {u['p50']:.2f} ms   p99 {u['p99']:.2f} ms   "
                                             f"({u['samples']} sessions opened one at a time)"),
        ("connection -> getUserData, loaded", f"p50 {c['p50']:.2f} ms   p99 {c['p99']:.2f} ms   max {c['max']:.2f} ms"),
        ("open -> getUserData", f"p50 {o['p50']:.2f} ms   p99 {o['p99']:.2f} ms   max {o['max']:.2f} ms"),
        ("establish all", f"{result['establish_wall_s']:.2f} s  ({result['sessions_per_s']} sessions/s)"),
        ("server RSS", f"{result['rss_before_kib'] / 1024:.1f} MiB -> {result['rss_after_kib'] / 1024:.1f} MiB "
                       f"(after closing all: {result['rss_after_close_kib'] / 1024:.1f} MiB)"),
        ("memory per idle session", f"{result['rss_per_session_kib']:.1f} KiB"),
        ("server fds per session", f"{result['server_fds_per_session']:.2f}"),
        ("server CPU", f"{result['cpu_s']:.2f} s  ({result['cpu_ms_per_session']:.3f} ms per session, "
                       f"incl. {result['hook_calls']} hook calls)"),
        ("close all", f"{result['close_all_s']:.2f} s, sessions left: {result['sessions_left_after_close']}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000, help="sessions to open (default 1000)")
    parser.add_argument("--concurrency", type=int, default=50, help="sessions opening at once (default 50)")
    parser.add_argument("--warmup", type=int, default=50,
                        help="sessions opened one at a time (unloaded latency) and closed before measuring")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one session may take to open")
    parser.add_argument("--log-level", default="info", help="server log level (default info, as deployed)")
    parser.add_argument("--python-core", action="store_true",
                        help="start the server on the Python twin of the media core (no native build)")
    args = parser.parse_args()
    if args.sessions < 1 or args.concurrency < 1 or args.warmup < 1:
        parser.error("--sessions, --concurrency and --warmup must be positive")
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
    return 0 if result["errors"] == 0 and result["sessions_left_after_close"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
