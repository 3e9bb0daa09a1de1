"""Benchmark: RTSP fan-out on loopback, one stream to N RTSP clients (TCP interleaved and UDP), our server
against GStreamer's rtsp-server (gst-rtsp-server 1.22, shared media) serving the same input to the same
clients, in the same run.

The input: H.264 1280x720 at 30 fps (about 2 Mbit/s, constrained baseline, a keyframe every 2 s) and
Opus, encoded once into build/bench-media/ (benchmarks/fanout/source.py), packetized once by ffmpeg's RTP
muxer (-c copy) into a dump there, and sent as RTP, paced by its timestamps and looped, by a small sender
(rtsp_fanout/feeder.py) to a GStreamer RTSP server (tests/support/camera.py --rtp-video-port
--rtp-audio-port): its shared media passes the packets on as they are (no depacketizing, no re-encoding).
Our server pulls that GStreamer stream once over RTSP (REST /rest-api/rtsp/startup, over the transport of
the sweep: gst-rtsp-server slows a shared media that mixes TCP and UDP clients) and serves it again at
rtsp://127.0.0.1:PORT/cam1. So both servers forward the same packets; neither encodes.

For each transport and N, N clients on GStreamer's URL, then N clients on ours (the order alternates with
N), each in its own steady window. Clients (rtsp_fanout/client.py) run in worker processes, many per
process, and count packets and sequence gaps without decoding. Measured:
- each server's CPU (utime + stime of its process, /proc/PID/stat) over the window, minus its CPU with no
  client of its own (windows with no clients before and after each transport's sweep: ours then only
  pulls, GStreamer only feeds that pull), divided by N: CPU per client; and divided by the packets the clients received:
  CPU per client-packet;
- loss per client, expected (from RTP sequence numbers) vs received, over the window: p50 and max;
- media rate per client: seconds of video (from RTP timestamps) received per second of the window; a
  server that cannot keep up falls behind (under 1) before it loses anything;
- where packets go missing: the kernel's drops on the clients' UDP sockets (the clients' own share of the
  loss) and on the server's (ours' pull over UDP), the kernel's input backlog (loopback traffic queues
  there, /proc/net/softnet_stat), our server's own drops (a client's buffer full), and stale packets
  (duplicates or late ones, which do not count as received);
- the largest N each server held: every client joined and kept playing, the worst client lost at most
  0.5 % and got at least 0.95 s of video per second.

Run it as root in a loopback-only network namespace:
    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/bench_rtsp_fanout.py [--quick]'
Prints a table (drops cu/su/srv/kb: on the clients' UDP sockets / on the server's / by our server / in the
kernel's input backlog), then one JSON line {"bench": "rtsp_fanout", ...}.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.fanout import procstat  # noqa: E402
from benchmarks.fanout.children import BenchError, Child, call_all  # noqa: E402
from benchmarks.fanout.source import FPS, HEIGHT, WIDTH, ensure_media  # noqa: E402
from benchmarks.rtsp_fanout import client  # noqa: E402
from benchmarks.rtsp_fanout.feeder import ensure_input, ensure_rtp_dump, sprop_parameter_sets, start_feeder  # noqa: E402
from tests.support.camera_process import SYSTEM_PYTHON, Camera  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

STREAM = "cam1"
GST_PATH = "/live"
MAX_LOSS = 0.5  # % of packets the worst client may lose for N to count as held
MIN_MEDIA_RATE = 0.95  # media seconds per second the slowest client must get (else the server falls behind)
MIN_NET_SHARE = 0.01  # cores: below this, CPU net of the baseline is a few 10 ms clock ticks (no ratio)
SERVERS = {"gst": "gst-rtsp-server", "ours": "ours"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class GstServer(Camera):
    """tests/support/camera.py passing on the RTP that arrives on two UDP ports."""

    def __init__(self, log_path: Path, video_port: int, audio_port: int | None, sprop: str):
        args = ["--rtp-video-port", str(video_port), "--sprop", sprop]
        if audio_port is not None:
            args += ["--rtp-audio-port", str(audio_port)]
        super().__init__(*args, path=GST_PATH, log=log_path)

    def start(self, timeout: float = 20.0) -> GstServer:
        try:
            super().start(timeout)
        except AssertionError:
            raise BenchError(f"the GStreamer RTSP server did not start; log: {self.log}") from None
        return self

    def stop(self, gently: bool = True) -> int | None:
        return super().stop(gently)


def free_udp_ports(count: int) -> list[int]:
    """Even UDP ports free right now (each with the next one free too, for RTCP)."""
    found: list[int] = []
    socks = []
    while len(found) < count:
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0))
        port = a.getsockname()[1]
        socks.append(a)
        if port % 2 == 0:
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            socks.append(b)
            found.append(port)
    for sock in socks:
        sock.close()
    return found


def http_json(url: str, body: Any = None, timeout: float = 15.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise BenchError(f"{url}: HTTP {exc.code}: {exc.read()[:300]!r}") from None


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # poll interval of a condition with a deadline


def softnet_drops() -> int:
    """Packets the kernel dropped because a CPU's input backlog was full (net.core.netdev_max_backlog), all
    CPUs: loopback traffic goes through that queue (/proc/net/softnet_stat, second column, hex)."""
    with open("/proc/net/softnet_stat") as fh:
        return sum(int(line.split()[1], 16) for line in fh if line.strip())


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


# -- one step: N clients on one server ---------------------------------------------------------------------


@dataclass
class Step:
    server: str
    transport: str
    n: int
    clients_ok: int = 0
    join_errors: list[str] = field(default_factory=list)
    joins_ms: list[float] = field(default_factory=list)
    lost_connections: int = 0
    window_s: float = 0.0
    settle_s: float = 0.0  # from the joins to the window (the clients getting media at its pace)
    cpu_s: float = 0.0
    sys_s: float = 0.0
    base_share: float = 0.0  # the server's CPU share with no client of its own
    received: int = 0  # RTP packets the clients received in the window
    stale: int = 0  # of which not newer than the newest a client had: duplicates or late
    losses: list[float] = field(default_factory=list)
    media_rates: list[float] = field(default_factory=list)  # video seconds received per second, per client
    client_udp_drops: int = 0
    server_udp_drops: int = 0  # on the server's own UDP sockets (ours' pull over UDP receives on them)
    softnet_drops: int = 0  # the kernel's input backlog overflowing (machine-wide)
    server_dropped: int | None = None  # ours: packets dropped for full client buffers
    client_cpu: float = 0.0  # cores used by the client workers
    other_server_cpu: float = 0.0  # cores used by the other server meanwhile (idle-ish)
    machine_busy: float = 0.0  # cores busy on the whole machine
    other_load: float = 0.0  # cores busy with none of: both servers, the clients, the feeder
    rest_timeouts: int = 0  # our server's REST API not answering within 15 s during the step
    held: bool = True
    why_not: str = ""

    @property
    def share(self) -> float:
        return self.cpu_s / self.window_s if self.window_s else float("nan")

    @property
    def net_share(self) -> float:
        return self.share - self.base_share

    @property
    def us_per_client_packet(self) -> float:
        return self.net_share * self.window_s * 1e6 / self.received if self.received else float("nan")

    @property
    def pct_per_client(self) -> float:
        """% of one core per client."""
        return 100 * self.net_share / self.n

    @property
    def packets_per_client_s(self) -> float:
        return self.received / self.window_s / max(1, self.clients_ok) if self.window_s else float("nan")

    def summary(self) -> dict[str, Any]:
        def r(x: float | None, digits: int = 2) -> float | None:
            return None if x is None or x != x else round(x, digits)

        return {
            "server": self.server, "transport": self.transport, "clients": self.n, "clients_ok": self.clients_ok,
            "join_errors": len(self.join_errors), "first_join_errors": self.join_errors[:2],
            "lost_connections": self.lost_connections,
            "cpu_share": r(self.share, 4), "cpu_share_base": r(self.base_share, 4),
            "cpu_sys_share": r(self.sys_s / self.window_s, 4) if self.window_s else None,
            "cpu_pct_per_client": r(self.pct_per_client, 3),
            "cpu_us_per_client_packet": r(self.us_per_client_packet, 2),
            "packets_per_client_s": r(self.packets_per_client_s, 1),
            "packets_received": self.received,
            "stale_packets": self.stale,
            "loss_pct_p50": r(percentile(self.losses, 50), 3), "loss_pct_max": r(max(self.losses), 3)
            if self.losses else None,
            "loss_pct_mean": r(sum(self.losses) / len(self.losses), 3) if self.losses else None,
            "media_rate_min": r(min(self.media_rates), 3) if self.media_rates else None,
            "media_rate_p50": r(percentile(self.media_rates, 50), 3),
            "client_udp_drops": self.client_udp_drops, "server_dropped": self.server_dropped,
            "server_udp_drops": self.server_udp_drops, "softnet_drops": self.softnet_drops,
            "join_ms_p50": r(percentile(self.joins_ms, 50), 1),
            "join_ms_max": r(max(self.joins_ms), 1) if self.joins_ms else None,
            "settle_s": r(self.settle_s, 1),
            "client_cpu_cores": r(self.client_cpu, 3), "other_server_cpu_cores": r(self.other_server_cpu, 3),
            "machine_busy_cores": r(self.machine_busy, 3), "other_load_cores": r(self.other_load, 3),
            "rest_timeouts": self.rest_timeouts,
            "window_s": r(self.window_s, 3), "held": self.held, "why_not": self.why_not or None,
        }


class Bench:
    def __init__(self, args: argparse.Namespace, gst: GstServer, ours: ServerProcess, feeder_pid: int):
        self.args = args
        self.gst = gst
        self.ours = ours
        self.feeder_pid = feeder_pid
        assert ours.proc is not None
        self.pids = {"gst": gst.pid, "ours": ours.proc.pid}
        self.urls = {"gst": gst.url(), "ours": ours.urls["rtsp"].rstrip("/") + "/" + STREAM}
        self.ctx = multiprocessing.get_context("spawn")
        self.workers = [Child(self.ctx, f"clients-{i}", client.main, f"clients-{i}", args.client_nice)
                        for i in range(args.workers)]
        self.steps: list[Step] = []
        self.baselines: dict[str, list[dict[str, float]]] = {}
        self.skipped: list[str] = []
        self.warm_up_errors: list[str] = []
        self.rest_timeouts: list[str] = []
        self.started = time.monotonic()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > self.args.budget

    def ours_dropped(self) -> int | None:
        """Our server's count of packets dropped for full client buffers; None when its REST API does not
        answer within 15 s (an overloaded event loop), which the step records."""
        try:
            return int(http_json(f"{self.ours.rest_url}/health")["rtsp"]["dropped"])
        except (OSError, TimeoutError) as exc:
            self.rest_timeouts.append(f"GET /health: {type(exc).__name__}: {exc}")
            return None

    def baseline(self, transport: str) -> dict[str, float]:
        """Both servers' CPU share with no client of their own (the same window for both): ours pulling,
        GStreamer serving that pull, over `transport`."""
        t0 = time.monotonic()
        c0 = {k: procstat.cpu_seconds(p) for k, p in self.pids.items()}
        time.sleep(self.args.baseline_seconds)  # the fixed measurement window
        c1 = {k: procstat.cpu_seconds(p) for k, p in self.pids.items()}
        t1 = time.monotonic()
        shares = {k: (c1[k] - c0[k]) / (t1 - t0) for k in self.pids}
        self.baselines.setdefault(transport, []).append(shares)
        log(f"   no clients: gst {shares['gst'] * 100:.1f} %, ours {shares['ours'] * 100:.1f} % of a core")
        return shares

    def base_share(self, server: str, transport: str) -> float:
        found = self.baselines.get(transport, [])
        return sum(b[server] for b in found) / len(found) if found else 0.0

    def warm_up(self, transport: str) -> None:
        """One client per server before a transport's sweep, not measured. gst-rtsp-server 1.22 answers the
        first UDP client of a shared media that plays over TCP only with 500 to PLAY (the next ones play)."""
        for server in SERVERS:
            for _attempt in range(3):
                answer = self.workers[0].call("clients", self.args.join_timeout + 10, url=self.urls[server], count=1,
                                              tcp=transport == "tcp", concurrency=1, timeout=self.args.join_timeout)
                self.workers[0].call("close", 30)
                if not answer["errors"]:
                    break
                self.warm_up_errors.append(f"{server} {transport}: {answer['errors'][0]}")
                log(f"   warm-up {SERVERS[server]} {transport}: {answer['errors'][0]}")
        time.sleep(self.args.pause)

    def start_pull(self, transport: str) -> None:
        """Our server pulls GStreamer's stream over the transport of the sweep: gst-rtsp-server 1.22 slows
        a shared media that has both TCP-interleaved and UDP clients down for all of them (about 150 video
        packets/s delivered of 270, with no gap: a growing backlog), so the pull must not mix them."""
        rest = self.ours.rest_url
        if http_json(f"{rest}/rest-api/rtsp/find_all", {}):
            request = urllib.request.Request(f"{rest}/rest-api/rtsp/terminate", method="POST",
                                             data=json.dumps({"uri": self.gst.url()}).encode(),
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=15).close()
            wait_until(lambda: not http_json(f"{rest}/rest-api/stream/find_all", {}), 15, "the pulled stream to end")
        pull = http_json(f"{rest}/rest-api/rtsp/startup",
                         {"uri": self.gst.url(), "localStreamName": STREAM, "transport": transport}, timeout=30)
        log(f"   our pull: {pull.get('status')} over {pull.get('transport')}")
        tracks = 1 if self.args.no_audio else 2

        def pulled() -> bool:
            found = http_json(f"{rest}/rest-api/rtsp/find_all", {})
            return bool(found) and len(found[0]["tracks"]) >= tracks and all(
                t["packets"] > 0 for t in found[0]["tracks"]) and any(t["keyframes"] >= 2 for t in found[0]["tracks"])

        wait_until(pulled, 20, "our server's pull to carry media and two keyframes")

    def run(self) -> None:
        for transport in self.args.transports:
            log(f"== {transport.upper()}")
            self.start_pull(transport)
            self.warm_up(transport)
            self.baseline(transport)
            for i, n in enumerate(self.args.clients):
                order = ["gst", "ours"] if i % 2 == 0 else ["ours", "gst"]
                for server in order:
                    if self.out_of_time():
                        self.skipped.append(f"{server} {transport} N={n}: out of time budget")
                        continue
                    try:
                        step = self.run_step(server, transport, n)
                    except BenchError as exc:
                        log(f"   {SERVERS[server]} N={n}: {exc}")
                        self.skipped.append(f"{server} {transport} N={n}: {exc}")
                        self.check_alive()
                        continue
                    self.steps.append(step)
                    log(f"   {SERVERS[server]:>15} N={n}: {format_row(step)}")
            self.baseline(transport)
        for step in self.steps:  # per-client figures against the mean of the transport's two baselines
            step.base_share = self.base_share(step.server, step.transport)

    def settle(self) -> float:
        """Wait (at least --settle seconds, at most --settle-max) until the clients get media at the pace it is
        made: a server may still be sending the joins' bursts (ours gives a new client the stream from its
        last keyframe) or catching up, which is not the steady state the window measures."""
        started = time.monotonic()
        time.sleep(self.args.settle)  # the joins' bursts pass: not in the window
        previous = call_all(self.workers, "snapshot", 10)
        while time.monotonic() - started < self.args.settle_max:
            time.sleep(1.0)  # one-second look at the media rate
            current = call_all(self.workers, "snapshot", 10)
            rates = []
            for b, a in zip(previous, current, strict=True):
                span = a["at"] - b["at"]
                rates += [(m1 - b["clients"].get(i, (0, 0, m1, 0))[2]) / span
                          for i, (_e, _r, m1, _s) in a["clients"].items()]
            previous = current
            if rates and 0.9 <= percentile(rates, 50) <= 1.1 and max(rates) <= 1.2:
                break
        return time.monotonic() - started

    def check_alive(self) -> None:
        for name, proc in (("gst", self.gst.proc), ("ours", self.ours.proc)):
            if proc is not None and proc.poll() is not None:
                raise BenchError(f"the {SERVERS[name]} process exited with {proc.returncode}")

    def run_step(self, server: str, transport: str, n: int) -> Step:
        step = Step(server, transport, n)
        rest_timeouts = len(self.rest_timeouts)
        other = "ours" if server == "gst" else "gst"
        shares = [n // len(self.workers) + (1 if i < n % len(self.workers) else 0) for i in range(len(self.workers))]
        joining = [(w, s) for w, s in zip(self.workers, shares, strict=True) if s > 0]
        try:
            answers = call_all([w for w, _ in joining], "clients", self.args.join_timeout + 30,
                               [{"url": self.urls[server], "count": s, "tcp": transport == "tcp",
                                 "concurrency": self.args.join_concurrency, "timeout": self.args.join_timeout}
                                for _, s in joining])
            for answer in answers:
                step.joins_ms += answer["joins_ms"]
                step.join_errors += answer["errors"]
            step.settle_s = self.settle()

            worker_pids = [w.pid for w in self.workers]
            before = call_all(self.workers, "snapshot", 10)
            udp0 = procstat.udp_drops(worker_pids)
            server_udp0 = procstat.udp_drops([self.pids[server]])
            softnet0 = softnet_drops()
            dropped0 = self.ours_dropped() if server == "ours" else None
            client0 = sum(procstat.cpu_seconds(p) for p in worker_pids)
            other0 = procstat.cpu_seconds(self.pids[other])
            feeder0 = procstat.cpu_seconds(self.feeder_pid)
            machine0 = procstat.machine_times()
            (user0, sys0), t0 = procstat.cpu_times(self.pids[server]), time.monotonic()
            time.sleep(self.args.seconds)  # the fixed measurement window
            (user1, sys1), t1 = procstat.cpu_times(self.pids[server]), time.monotonic()
            machine1 = procstat.machine_times()
            feeder1 = procstat.cpu_seconds(self.feeder_pid)
            other1 = procstat.cpu_seconds(self.pids[other])
            client1 = sum(procstat.cpu_seconds(p) for p in worker_pids)
            dropped1 = self.ours_dropped() if server == "ours" else None
            udp1 = procstat.udp_drops(worker_pids)
            server_udp1 = procstat.udp_drops([self.pids[server]])
            softnet1 = softnet_drops()
            after = call_all(self.workers, "snapshot", 10)
        finally:
            call_all(self.workers, "close", 60)
        window = t1 - t0
        step.window_s = window
        step.cpu_s = (user1 + sys1) - (user0 + sys0)
        step.sys_s = sys1 - sys0
        step.base_share = self.base_share(server, transport)
        step.client_cpu = (client1 - client0) / window
        step.other_server_cpu = (other1 - other0) / window
        step.machine_busy = sum(machine1[k] - machine0[k] for k in machine1
                                if k not in ("idle", "iowait", "steal")) / window
        step.other_load = (step.machine_busy - step.share - step.client_cpu - step.other_server_cpu
                           - (feeder1 - feeder0) / window)
        step.client_udp_drops = udp1 - udp0
        step.server_udp_drops = server_udp1 - server_udp0
        step.softnet_drops = softnet1 - softnet0
        if dropped0 is not None and dropped1 is not None:
            step.server_dropped = dropped1 - dropped0
        for b, a in zip(before, after, strict=True):
            step.lost_connections += a["lost_connections"]
            span = a["at"] - b["at"]
            for index, (exp1, rcv1, media1, stale1) in a["clients"].items():
                exp0, rcv0, media0, stale0 = b["clients"].get(index, (0, 0, 0.0, 0))
                expected, received = exp1 - exp0, rcv1 - rcv0
                stale = stale1 - stale0
                step.stale += stale
                step.received += received
                step.media_rates.append((media1 - media0) / span if span > 0 else float("nan"))
                fresh = received - stale  # a duplicate does not make up for a lost packet
                step.losses.append(100.0 * max(0, expected - fresh) / expected if expected > 0 else 100.0)
        step.clients_ok = len(step.losses)
        step.rest_timeouts = len(self.rest_timeouts) - rest_timeouts
        step.held, step.why_not = judge(step)
        time.sleep(self.args.pause)  # the servers tear the sessions down before the next step
        return step


def judge(step: Step) -> tuple[bool, str]:
    reasons = []
    if step.join_errors:
        reasons.append(f"{len(step.join_errors)} clients failed to join ({step.join_errors[0]})")
    if step.lost_connections:
        reasons.append(f"{step.lost_connections} connections lost")
    if step.rest_timeouts:
        reasons.append("the REST API did not answer within 15 s")
    if step.clients_ok < step.n:
        reasons.append(f"{step.clients_ok} of {step.n} clients counted")
    if step.losses and max(step.losses) > MAX_LOSS:
        reasons.append(f"worst client lost {max(step.losses):.2f} % > {MAX_LOSS:g} %")
    if step.media_rates and min(step.media_rates) < MIN_MEDIA_RATE:
        reasons.append(f"falls behind: the slowest client got {min(step.media_rates):.2f} s of video per second")
    return not reasons, "; ".join(reasons)


# -- output ---------------------------------------------------------------------------------------------------


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None or x != x else format(x, fmt)


def format_row(step: Step) -> str:
    s = step.summary()
    return (f"cpu {s['cpu_share'] * 100:.1f} %, {_f(step.pct_per_client, '.3f')} %/client, "
            f"{_f(s['cpu_us_per_client_packet'], '.2f')} us/client-pkt, "
            f"{_f(s['packets_per_client_s'], '.0f')} pkt/s/client, "
            f"media {_f(s['media_rate_min'], '.3f')} s/s min, loss p50/max {_f(s['loss_pct_p50'], '.2f')}/"
            f"{_f(s['loss_pct_max'], '.2f')} %, drops: client udp {step.client_udp_drops}, server udp "
            f"{step.server_udp_drops}, server {step.server_dropped}, kernel backlog {step.softnet_drops}, "
            f"stale {step.stale}, settle {step.settle_s:.0f} s, "
            f"clients {s['client_cpu_cores']:.2f} cores, machine {s['machine_busy_cores']:.2f} cores"
            + ("" if step.held else f"  [not held: {step.why_not}]"))


def table(steps: list[Step]) -> str:
    header = ["transport", "N", "server", "CPU % (base)", "CPU %/client", "us/client-pkt", "pkt/s/client",
              "media s/s min", "loss % p50/max", "drops cu/su/srv/kb", "stale", "join ms p50/max", "settle s",
              "clients cores", "machine cores", "held"]
    rows = [header]
    for step in steps:
        s = step.summary()
        rows.append([
            step.transport, str(step.n) if s["clients_ok"] == step.n else f"{step.n} ({s['clients_ok']} ok)",
            SERVERS[step.server],
            f"{s['cpu_share'] * 100:.1f} ({step.base_share * 100:.1f})",
            _f(step.pct_per_client, ".3f"),
            _f(s["cpu_us_per_client_packet"], ".2f"),
            _f(s["packets_per_client_s"], ".0f"),
            _f(s["media_rate_min"], ".3f"),
            f"{_f(s['loss_pct_p50'], '.2f')} / {_f(s['loss_pct_max'], '.2f')}",
            f"{step.client_udp_drops}/{step.server_udp_drops}/"
            f"{'-' if step.server_dropped is None else step.server_dropped}/{step.softnet_drops}",
            str(step.stale),
            f"{_f(s['join_ms_p50'], '.0f')} / {_f(s['join_ms_max'], '.0f')}",
            f"{step.settle_s:.1f}",
            f"{step.client_cpu:.2f}",
            f"{step.machine_busy:.2f}",
            "yes" if step.held else "NO",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i > 2 else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def ratios(steps: list[Step]) -> list[dict[str, Any]]:
    """ours / gst per transport and N, from the same run."""
    found = {(s.server, s.transport, s.n): s for s in steps}
    out = []
    for (server, transport, n), ours in sorted(found.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        gst = found.get(("gst", transport, n))
        if server != "ours" or gst is None:
            continue

        def ratio(a: float, b: float) -> float | None:
            return round(a / b, 2) if b > 0 and a == a and b == b else None

        if min(ours.net_share, gst.net_share) < MIN_NET_SHARE:  # within a few clock ticks: noise, no ratio
            out.append({"transport": transport, "clients": n, "cpu_per_client": None, "cpu_per_client_packet": None,
                        "loss_max_ours": round(max(ours.losses), 3) if ours.losses else None,
                        "loss_max_gst": round(max(gst.losses), 3) if gst.losses else None})
            continue
        out.append({"transport": transport, "clients": n,
                    "cpu_per_client": ratio(ours.pct_per_client, gst.pct_per_client),
                    "cpu_per_client_packet": ratio(ours.us_per_client_packet, gst.us_per_client_packet),
                    "loss_max_ours": round(max(ours.losses), 3) if ours.losses else None,
                    "loss_max_gst": round(max(gst.losses), 3) if gst.losses else None})
    return out


def ratio_text(rows: list[dict[str, Any]]) -> str:
    lines = ["ours / gst-rtsp-server, same run (CPU net of each server's no-client baseline):"]
    for row in rows:
        lines.append(f"  {row['transport']:>3} N={row['clients']:<4} "
                     f"CPU per client x{_f(row['cpu_per_client'], '.2f')}, "
                     f"per client-packet x{_f(row['cpu_per_client_packet'], '.2f')}; worst client loss "
                     f"{_f(row['loss_max_ours'], '.2f')} % vs {_f(row['loss_max_gst'], '.2f')} %")
    return "\n".join(lines)


def max_held(steps: list[Step], server: str, transport: str) -> int:
    """The largest N held, counting only a run of held steps from the smallest N up."""
    best = 0
    for step in sorted((s for s in steps if s.server == server and s.transport == transport), key=lambda s: s.n):
        if not step.held:
            break
        best = step.n
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,10,50,100,200", help="client counts, comma-separated")
    parser.add_argument("--transports", default="tcp,udp", help="tcp, udp or both (default tcp,udp)")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady window per step (default 10)")
    parser.add_argument("--baseline-seconds", type=float, default=15.0, help="no-client window (default 15)")
    parser.add_argument("--quick", action="store_true", help="N=1,10,50, short windows: a smoke run")
    parser.add_argument("--workers", type=int, default=2, help="client worker processes (default 2)")
    parser.add_argument("--join-concurrency", type=int, default=20, help="joins at once per worker")
    parser.add_argument("--join-timeout", type=float, default=20.0, help="seconds one client may take to join")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after joins before the window, at least")
    parser.add_argument("--settle-max", type=float, default=30.0,
                        help="seconds after joins at most, waiting for the clients to get media at its pace")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds after a step's clients left")
    parser.add_argument("--client-nice", type=int, default=0,
                        help="nice value of the client workers (default 0: the servers and clients compete equally)")
    parser.add_argument("--no-audio", action="store_true", help="video only (no Opus track)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (kept anyway on failure)")
    args = parser.parse_args()
    try:
        args.clients = sorted({int(v) for v in args.clients.split(",") if v.strip()})
    except ValueError:
        parser.error("--clients takes comma-separated integers")
    args.transports = [t.strip().lower() for t in args.transports.split(",") if t.strip()]
    if not set(args.transports) <= {"tcp", "udp"} or not args.transports:
        parser.error("--transports takes tcp, udp or tcp,udp")
    if args.quick:
        args.clients = [n for n in args.clients if n <= 50] or [1, 10]
        args.seconds = min(args.seconds, 4.0)
        args.baseline_seconds = min(args.baseline_seconds, 4.0)
        args.settle = min(args.settle, 1.5)
    if not args.clients or min(args.clients) < 1 or args.seconds <= 0 or args.workers < 1:
        parser.error("client counts, --seconds and --workers must be positive")
    args.budget = 240.0 if args.quick else 1200.0  # seconds after which no new step starts
    if not Path(SYSTEM_PYTHON).exists():
        parser.error(f"{SYSTEM_PYTHON} (with PyGObject and gst-rtsp-server) is needed for the GStreamer server")
    others = sorted(name for _i, name in socket.if_nameindex() if name != "lo")
    if others:
        log(f"note: interfaces besides lo exist ({', '.join(others)}); all traffic goes to 127.0.0.1 anyway, "
            "but run under `unshare --net` for a loopback-only namespace")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 65536:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))

    started = time.monotonic()
    media = ensure_media()
    dump = ensure_rtp_dump(ensure_input(media.video, None if args.no_audio else media.audio))
    sprop = sprop_parameter_sets(media.video)
    before = procstat.machine_times()
    time.sleep(1.0)  # a one-second look at what else runs on the machine
    after = procstat.machine_times()
    busy_before = sum(after[k] - before[k] for k in after if k not in ("idle", "iowait", "steal"))
    if busy_before > 0.2:
        log(f"warning: the machine is already {busy_before:.2f} cores busy before the benchmark starts; other "
            "load skews every number (see other_load_cores per step)")

    tmp = Path(tempfile.mkdtemp(prefix="bench-rtsp-fanout-"))
    video_port, audio_port = free_udp_ports(2)
    gst = GstServer(tmp / "gst.log", video_port, None if args.no_audio else audio_port, sprop)
    ours = ServerProcess(tmp / "ours")
    feeder: subprocess.Popen[bytes] | None = None
    bench: Bench | None = None
    failed = False
    try:
        gst.start()
        feeder = start_feeder(dump, not args.no_audio, video_port, audio_port, tmp / "feeder.log")
        ours.start()
        log(f"gst-rtsp-server at {gst.url()} (pid {gst.pid}); ours pulls it, pid {ours.proc.pid if ours.proc else '?'}")
        bench = Bench(args, gst, ours, feeder.pid)
        bench.run()
    except BaseException:
        failed = True
        log(f"logs kept in {tmp}")
        raise
    finally:
        if bench is not None:
            bench.close()
        if feeder is not None and feeder.poll() is None:
            feeder.terminate()
            feeder.wait(5)
        codes = {"ours": ours.stop(), "gst": gst.stop()}
        for name, code in codes.items():
            if code not in (0, None, -signal.SIGTERM):
                log(f"warning: {SERVERS[name]} exited with {code}")
        if not failed and not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
        elif not failed:
            log(f"logs kept in {tmp}")

    assert bench is not None
    steps = bench.steps
    rows = ratios(steps)
    held = {f"{server}_{t}": max_held(steps, server, t) for t in args.transports for server in SERVERS}
    result: dict[str, Any] = {
        "bench": "rtsp_fanout",
        "params": {"clients": args.clients, "transports": args.transports, "seconds": args.seconds,
                   "workers": args.workers, "client_nice": args.client_nice,
                   "video": f"H.264 {WIDTH}x{HEIGHT} {FPS} fps ~2 Mbit/s constrained baseline, keyframe every 2 s",
                   "audio": None if args.no_audio else "Opus 48 kHz 20 ms", "max_loss_pct": MAX_LOSS,
                   "min_media_rate": MIN_MEDIA_RATE,
                   "input": "RTP dump (ffmpeg -c copy -f rtp) paced and looped -> gst-rtsp-server shared "
                            "media (pass-through) -> our server pulls it once, over the sweep's transport",
                   "cores": os.cpu_count()},
        "baselines_cpu_share": {t: [{k: round(v, 4) for k, v in b.items()} for b in found]
                                for t, found in bench.baselines.items()},
        "steps": [s.summary() for s in steps],
        "ratios_ours_over_gst": rows,
        "max_clients_held": held,
        "skipped": bench.skipped,
        "warm_up_errors": bench.warm_up_errors,
        "rest_timeouts": bench.rest_timeouts,
        "machine_busy_before_cores": round(busy_before, 3),
        "total_s": round(time.monotonic() - started, 1),
    }
    print(table(steps))
    print()
    print(ratio_text(rows))
    print("largest N held (all joined, worst client <= 0.5 % loss and >= 0.95 s of video per s): " + ", ".join(
        f"{k} {v}" for k, v in held.items()))
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
