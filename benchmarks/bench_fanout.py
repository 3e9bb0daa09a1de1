"""Benchmark: one publisher fanned out to N viewers over WebRTC, all on loopback.

The publisher sends H.264 1280x720 at 30 fps (about 2 Mbit/s, constrained baseline, a keyframe every 2 s)
and Opus, both pre-encoded once into build/bench-media/ and looped as they are (no encode at run time).
Viewers receive without decoding (benchmarks/fanout/viewer.py): aiortc does ICE, DTLS and SRTP, and the
decrypted RTP is counted and inspected instead of reaching aiortc's receiver. Publisher and viewers run in
worker processes; what is measured is the server process. For each implementation and N:

- server CPU per forwarded packet: utime + stime of the server process (/proc/PID/stat) over a steady
  window, divided by the RTP packets it sent to viewers in that window (the REST API's per-viewer `sent`;
  for the relay, its senders' packetsSent);
- packets forwarded per second, and the server's CPU share of one core;
- loss per viewer: expected (from sequence numbers) vs received, at the viewer, over the window;
- server-added latency p50/p99: a publisher packet's arrival on lo to each viewer copy's departure,
  matched by (sequence number, timestamp), from kernel timestamps of a raw socket (fanout/sniffer.py;
  sampled by sequence number when the packet rate is high). For the relay, which re-encodes, a video
  frame's last packet in to the last packet of its re-encoded copy out;
- join time: playStream (or the relay's HTTP offer) sent to the first H.264 keyframe at the viewer;
- server memory per viewer: RSS growth since the publisher alone, divided by N.

The idle baseline: the server's CPU share with the publisher alone, before any viewer joins (IDLE_SECONDS);
"net us/pkt" leaves it out of the window's CPU. Every CPU figure counts the whole server process.

Implementations: the server with its native core; Janus 1.1 (Debian's `janus`, fanout/janus.py; --skip-janus)
right after it, so that every run prints the ratio ours / Janus per N; the same server on the Python twin
(--python-core); and aiortc's MediaRelay (fanout/relay_server.py: decode once, encode per viewer), taken up in N until
its viewers lose more than 5 % or it cannot keep up (video frame rate at the viewers under 80 % of the
source, or frame latency over 1 s). Then a py-spy profile of the native server at the largest N.

Janus: its streaming plugin with one RTP mountpoint (H.264 + Opus), fed by the RTSP benchmark's feeder
(rtsp_fanout/feeder.py: the same pre-encoded files, packetized once by ffmpeg into 1,200-byte RTP and sent
over plain UDP; about 317 packets/s against the WebRTC publisher's 266, for the same bytes, hence the
per-viewer CPU figure beside the per-packet one). The viewers are the same processes and the same
non-decoding viewer; they watch over Janus's HTTP API, where Janus offers and the viewer answers. Janus
gathers no ICE candidates on loopback, so the benchmark adds a veth pair to its own namespace (Janus on
10.254.0.1, the viewers on 10.254.0.2) and refuses to run if the namespace has any other interface. Its
packet counters come from the Admin API (handle_info per viewer); its keyframe buffer (bufferkf) plays
the part of our GOP cache at join; its latency is matched by learning each viewer's rewritten sequence
numbers (fanout/offsets.py). Install it first: bash benchmarks/setup_peers.sh.

Run it as root in a loopback-only network namespace:
    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/bench_fanout.py'
Prints a table, the ratios ours / Janus per N, the profile summary, then one JSON line
{"bench": "fanout", ..., "janus_ratios": [...]}.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.fanout import janus, procstat, sniffer, worker  # noqa: E402
from benchmarks.fanout.children import BenchError, Child, call_all  # noqa: E402
from benchmarks.fanout.source import FPS, MediaFiles, ensure_media  # noqa: E402
from benchmarks.rtsp_fanout.feeder import AUDIO_SSRC, VIDEO_SSRC, ensure_input, ensure_rtp_dump  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

STREAM = "fanout"
PACKETS_PER_VIEWER = 260  # about 210 video + 50 audio packets/s: sizes the sniffer's sampling
SAMPLED_PER_SECOND = 2000  # what the sniffer is asked to time at most (in Python, on a 2-core machine)
RELAY_MAX_LOSS = 5.0
RELAY_MIN_FPS_SHARE = 0.8
RELAY_MAX_LATENCY_MS = 1000.0
IMPLEMENTATIONS = {
    "native": "SFU, native core",
    "twin": "SFU, Python twin",
    "relay": "aiortc MediaRelay",
    "janus": "Janus 1.1 streaming",
}
IDLE_SECONDS = 2.0  # publisher alone, no viewer: the server's idle CPU share, subtracted for the net figure


class RelayProcess:
    """benchmarks/fanout/relay_server.py as a subprocess, ready when it prints its URL."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.rest_url = ""

    def start(self, timeout: float = 30.0) -> RelayProcess:
        self._log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / "fanout" / "relay_server.py"), "--ice-address", "127.0.0.1"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if sel.select(timeout=0.2):
                line = self.proc.stdout.readline()
                if line.startswith("ready "):
                    self.rest_url = json.loads(line[len("ready "):])["rest"]
                    return self
        self.stop()
        raise BenchError(f"the relay server did not start; log: {self.log_path}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


# -- the server's counters ---------------------------------------------------------------------------


def http_json(url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


@dataclass
class ServerCounters:
    sent: int  # RTP packets sent to viewers
    dropped: int  # packets the server dropped (a viewer's transport was full)
    ingested: int  # RTP packets received from the publisher
    viewers: int
    keyframes: int


def sfu_counters(rest_url: str) -> ServerCounters:
    entries = http_json(f"{rest_url}/rest-api/stream/find_all", {})
    sent = dropped = ingested = viewers = keyframes = 0
    for entry in entries:
        if entry.get("published"):
            for track in entry.get("tracks", []):
                ingested += track["packets"]
                if track["kind"] == "video":
                    keyframes += track["keyframes"]
        elif entry.get("status") == "PLAYING":
            viewers += 1
            sent += entry.get("sent", 0)
            dropped += entry.get("dropped", 0)
    return ServerCounters(sent, dropped, ingested, viewers, keyframes)


def relay_counters(rest_url: str) -> ServerCounters:
    stats = http_json(f"{rest_url}/stats")
    return ServerCounters(stats["sent"], 0, 0, stats["viewers"], 0)


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # poll interval of a condition with a deadline


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def sample_mask(n: int) -> int:
    """Time every (mask+1)-th sequence number, so the sniffer sees at most about SAMPLED_PER_SECOND."""
    ratio = PACKETS_PER_VIEWER * (n + 1) / SAMPLED_PER_SECOND
    return 0 if ratio <= 1 else (1 << math.ceil(math.log2(ratio))) - 1


# -- one implementation, N after N -------------------------------------------------------------------


@dataclass
class Step:
    impl: str
    n: int
    viewers_ok: int = 0
    join_errors: list[str] = field(default_factory=list)
    joins_ms: list[float] = field(default_factory=list)
    window_s: float = 0.0
    cpu_s: float = 0.0
    sys_s: float = 0.0  # of which in the kernel (stime)
    sent: int = 0
    ingested: int = 0
    server_dropped: int = 0
    losses: list[float] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)
    latency: dict[str, Any] = field(default_factory=dict)
    rss_kib: int = 0
    rss_base_kib: int = 0
    idle_share: float = float("nan")  # server CPU share with the publisher alone (ingest, timers)
    server_udp_drops: int = 0
    viewer_udp_drops: int = 0
    client_cpu: dict[str, float] = field(default_factory=dict)  # process -> share of one core
    machine_cpu: dict[str, float] = field(default_factory=dict)  # /proc/stat state -> cores
    other_load: float = 0.0  # cores busy with neither the server nor our clients (softirq included)
    held: bool = True
    why_not: str = ""

    @property
    def us_per_packet(self) -> float:
        return self.cpu_s * 1e6 / self.sent if self.sent else float("nan")

    @property
    def net_us_per_packet(self) -> float:
        """CPU per forwarded packet net of the idle baseline (what the viewers add)."""
        if not self.sent or self.idle_share != self.idle_share:
            return float("nan")
        return max(0.0, self.cpu_s - self.idle_share * self.window_s) * 1e6 / self.sent

    @property
    def cpu_ms_per_viewer_s(self) -> float:
        """Server CPU ms per viewer per second of media: independent of how the media is cut into packets
        (Janus's feed has more, smaller packets than the WebRTC publisher's: same bytes, see the docstring)."""
        return self.cpu_s * 1000 / self.window_s / self.n if self.window_s else float("nan")

    @property
    def packets_per_s(self) -> float:
        return self.sent / self.window_s if self.window_s else float("nan")

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.window_s if self.window_s else float("nan")

    @property
    def rss_per_viewer_kib(self) -> float:
        return (self.rss_kib - self.rss_base_kib) / self.n

    def summary(self) -> dict[str, Any]:
        def r(x: float, digits: int = 2) -> float | None:
            return None if x != x else round(x, digits)  # NaN -> null

        return {
            "impl": self.impl, "viewers": self.n, "viewers_ok": self.viewers_ok,
            "join_errors": len(self.join_errors), "first_join_errors": self.join_errors[:2],
            "cpu_us_per_packet": r(self.us_per_packet),
            "cpu_net_us_per_packet": r(self.net_us_per_packet),
            "server_idle_cpu_share": r(self.idle_share, 3),
            "cpu_ms_per_viewer_s": r(self.cpu_ms_per_viewer_s, 3),
            "cpu_sys_us_per_packet": r(self.sys_s * 1e6 / self.sent) if self.sent else None,
            "server_cpu_share": r(self.cpu_share, 3),
            "packets_per_s": r(self.packets_per_s, 1), "packets_sent": self.sent,
            "ingested_per_s": r(self.ingested / self.window_s, 1) if self.window_s and self.impl != "janus" else None,
            "loss_pct_mean": r(sum(self.losses) / len(self.losses), 3) if self.losses else None,
            "loss_pct_max": r(max(self.losses), 3) if self.losses else None,
            "video_fps_mean": r(sum(self.fps) / len(self.fps), 1) if self.fps else None,
            "video_fps_min": r(min(self.fps), 1) if self.fps else None,
            "latency_ms_p50": r(self.latency.get("p50_us", float("nan")) / 1000, 3),
            "latency_ms_p99": r(self.latency.get("p99_us", float("nan")) / 1000, 3),
            "latency_ms_max": r(self.latency.get("max_us", float("nan")) / 1000, 3),
            "latency_samples": self.latency.get("samples"),
            "latency_unit": "frame" if self.impl == "relay" else "packet",
            "latency_sampling": self.latency.get("sampling"),
            "latency_unmatched": self.latency.get("unmatched"),
            "sniffer_drops": self.latency.get("kernel_drops"),
            "join_ms_p50": r(percentile(self.joins_ms, 50), 1), "join_ms_max": r(max(self.joins_ms), 1)
            if self.joins_ms else None,
            "rss_kib": self.rss_kib, "rss_per_viewer_kib": r(self.rss_per_viewer_kib, 1),
            "server_dropped": self.server_dropped, "server_udp_drops": self.server_udp_drops,
            "viewer_udp_drops": self.viewer_udp_drops, "client_cpu_share": self.client_cpu,
            "machine_cores": self.machine_cpu, "other_load_cores": self.other_load,
            "window_s": r(self.window_s, 3),
            "held": self.held, "why_not": self.why_not or None,
        }


class Bench:
    def __init__(self, args: argparse.Namespace, media: MediaFiles, tmp: Path):
        self.args = args
        self.media = media
        self.tmp = tmp
        self.ctx = multiprocessing.get_context("spawn")
        self.started = time.monotonic()
        self.sniffer = Child(self.ctx, "sniffer", sniffer.main, args.client_nice)
        self.publisher = Child(self.ctx, "publisher", worker.main, "publisher")
        self.viewers = [Child(self.ctx, f"viewers-{i}", worker.main, f"viewers-{i}", args.client_nice)
                        for i in range(args.workers)]
        self.steps: list[Step] = []
        self.profile: dict[str, Any] = {}
        self.skipped: list[str] = []
        self.source_pid = self.publisher.pid  # what sends the media: the publisher, or Janus's feeder

    def close(self) -> None:
        for child in [self.publisher, *self.viewers, self.sniffer]:
            child.stop()

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > self.args.budget

    def run(self) -> None:
        impls = ["native"]
        if not self.args.skip_janus:
            impls.append("janus")  # right after ours, so the ratio is always in the run
        if not self.args.skip_twin:
            impls.append("twin")
        if not self.args.skip_relay:
            impls.append("relay")
        for impl in impls:
            if self.out_of_time():
                self.skipped.append(f"{impl}: out of time budget")
                continue
            self.run_impl(impl)

    def run_impl(self, impl: str) -> None:
        log(f"== {IMPLEMENTATIONS[impl]}")
        data = self.tmp / impl
        proc: RelayProcess | ServerProcess | janus.JanusPeer
        counters: Callable[[str], ServerCounters]
        self.source_pid = self.publisher.pid
        if impl == "janus":
            peer = janus.JanusPeer(data, ensure_rtp_dump(ensure_input(self.media.video, self.media.audio)))
            proc, pid, url, rest_url = peer, 0, peer.janus.url, peer.janus.admin_url

            def janus_counters(_url: str) -> ServerCounters:
                totals = peer.totals()
                return ServerCounters(totals.sent, 0, 0, totals.viewers, 0)
            counters = janus_counters
        elif impl == "relay":
            relay = RelayProcess(self.tmp / "relay.log").start()
            assert relay.proc is not None
            proc, pid, url, rest_url = relay, relay.proc.pid, relay.rest_url, relay.rest_url
            counters = relay_counters
        else:
            server = ServerProcess(data, ["--python-core"] if impl == "twin" else []).start()
            assert server.proc is not None
            proc, pid, url, rest_url = server, server.proc.pid, server.ws_url, server.rest_url
            counters = sfu_counters
        try:
            mode = {"relay": "relay", "janus": "janus"}.get(impl, "sfu")
            if mode == "janus":  # the feeder sends the same media as pre-packetized RTP over UDP
                peer.start()
                pid, self.source_pid = peer.pid, peer.feeder_pid
                ssrcs = {"video": VIDEO_SSRC, "audio": AUDIO_SSRC}
            else:
                ssrcs = self.publisher.call("publish", 40, mode=mode, url=url, name=STREAM,
                                            video=str(self.media.video), audio=str(self.media.audio))["ssrcs"]
            if mode == "sfu":
                # Steady state: a whole GOP seen (the GOP cache full), before the memory baseline.
                wait_until(lambda: counters(rest_url).keyframes >= 2, 20, "the publisher's second keyframe")
            elif mode == "relay":
                wait_until(lambda: http_json(f"{rest_url}/stats")["tracks"] >= 2, 20, "the publisher's tracks")
            base_rss = procstat.rss_kib(pid)
            idle_share = idle_cpu_share(pid, self.args.idle_seconds)
            steps = self.steps_for(impl)
            have = [0] * len(self.viewers)
            for n in steps:
                if self.out_of_time():
                    self.skipped.append(f"{impl} N={n}: out of time budget")
                    break
                try:
                    step = self.run_step(impl, n, have, mode, url, rest_url, pid, ssrcs, counters)
                except BenchError as exc:
                    log(f"   N={n}: {exc}")
                    self.skipped.append(f"{impl} N={n}: {exc}")
                    break
                step.rss_base_kib = base_rss
                step.idle_share = idle_share
                self.steps.append(step)
                log(f"   N={n}: {format_row(step)}")
                if impl == "relay" and not step.held:
                    break
            if impl == "native" and not self.args.no_profile and self.steps and self.steps[-1].impl == "native":
                self.profile = profile(pid, self.args.profile_seconds, self.tmp / "profile.txt")
        finally:
            try:
                call_all([self.publisher, *self.viewers], "close", 60)
            finally:
                code = proc.stop()
                if code not in (0, None, -signal.SIGTERM):
                    log(f"warning: {impl} server exited with {code}")

    def steps_for(self, impl: str) -> list[int]:
        steps = sorted(set(self.args.viewers))
        if impl == "relay":
            low = [n for n in (1, 2, 5) if n < max(steps)]
            steps = sorted(set(low + steps))
        return steps

    def join(self, step: Step, have: list[int], mode: str, url: str) -> None:
        """New viewers up to step.n, spread over the workers; each worker joins a few at a time."""
        add = step.n - sum(have)
        shares = [add // len(self.viewers) + (1 if i < add % len(self.viewers) else 0)
                  for i in range(len(self.viewers))]
        joining = [(w, s) for w, s in zip(self.viewers, shares, strict=True) if s > 0]
        where = ({"name": str(janus.MOUNTPOINT), "ice_address": janus.VETH_ADDRESSES[1], "ice_device": janus.VETH[1]}
                 if mode == "janus" else {"name": STREAM})
        answers = call_all([w for w, _ in joining], "viewers", self.args.join_timeout + 30,
                           [{"mode": mode, "url": url, "count": s, "concurrency": self.args.join_concurrency,
                             "timeout": self.args.join_timeout, **where} for _, s in joining])
        for i, s in enumerate(shares):
            have[i] += s
        for answer in answers:
            step.joins_ms += answer["joins_ms"]
            step.join_errors += answer["errors"]

    def run_step(self, impl: str, n: int, have: list[int], mode: str, url: str, rest_url: str, pid: int,
                 ssrcs: dict[str, int], counters: Any) -> Step:
        step = Step(impl, n)
        self.join(step, have, mode, url)
        playing = sum(len(s.joins_ms) for s in self.steps if s.impl == impl) + len(step.joins_ms)
        wait_until(lambda: counters(rest_url).viewers >= playing, 20, f"{playing} viewers at the server")
        ts_offset = (http_json(f"{rest_url}/stats").get("video_origin") or 0) if mode == "relay" else 0
        # Janus rewrites sequence numbers and timestamps per viewer: the sniffer learns the offsets.
        match = {"relay": "frame", "janus": "offset"}.get(mode, "packet")
        self.sniffer.call("start", 10, mask=0 if mode == "relay" else sample_mask(n),
                          inbound_ssrcs=list(ssrcs.values()), video_ssrc=ssrcs.get("video"),
                          mode=match, ts_offset=ts_offset)
        time.sleep(self.args.settle)  # let the joins' GOP bursts and handshakes pass: not in the window

        # The window.
        viewer_pids = [w.pid for w in self.viewers]
        self.sniffer.call("window", 10, from_ns=time.time_ns())
        before = call_all(self.viewers, "snapshot", 10)
        udp_server0, udp_viewers0 = procstat.udp_drops([pid]), procstat.udp_drops(viewer_pids)
        c0 = counters(rest_url)
        clients = {"viewers": viewer_pids, "publisher": [self.source_pid], "sniffer": [self.sniffer.pid]}
        client0 = {k: sum(procstat.cpu_seconds(p) for p in pids) for k, pids in clients.items()}
        machine0 = procstat.machine_times()
        (user0, sys0), t0 = procstat.cpu_times(pid), time.monotonic()
        time.sleep(self.args.seconds)  # the fixed measurement window
        c1 = counters(rest_url)
        (user1, sys1), t1 = procstat.cpu_times(pid), time.monotonic()
        client1 = {k: sum(procstat.cpu_seconds(p) for p in pids) for k, pids in clients.items()}
        machine1 = procstat.machine_times()
        step.client_cpu = {k: round((client1[k] - client0[k]) / (t1 - t0), 3) for k in clients}
        step.machine_cpu = {k: round((machine1[k] - machine0[k]) / (t1 - t0), 3) for k in machine1}
        busy = sum(v for k, v in step.machine_cpu.items() if k not in ("idle", "iowait", "steal"))
        server_share = ((user1 + sys1) - (user0 + sys0)) / (t1 - t0)
        step.other_load = round(busy - server_share - sum(step.client_cpu.values()), 3)
        after = call_all(self.viewers, "snapshot", 10)
        udp_server1, udp_viewers1 = procstat.udp_drops([pid]), procstat.udp_drops(viewer_pids)
        step.latency = self.sniffer.call("stop", 30)
        step.latency["sampling"] = "every frame" if mode == "relay" else f"1/{sample_mask(n) + 1}"
        step.rss_kib = procstat.rss_kib(pid)

        step.window_s = t1 - t0
        step.cpu_s = (user1 + sys1) - (user0 + sys0)
        step.sys_s = sys1 - sys0
        step.sent = c1.sent - c0.sent
        step.ingested = c1.ingested - c0.ingested
        step.server_dropped = c1.dropped - c0.dropped
        step.server_udp_drops = udp_server1 - udp_server0
        step.viewer_udp_drops = udp_viewers1 - udp_viewers0
        for b, a in zip(before, after, strict=True):
            for index, (exp1, rcv1, frames1) in a["viewers"].items():
                exp0, rcv0, frames0 = b["viewers"].get(index, (0, 0, 0))
                expected, received = exp1 - exp0, rcv1 - rcv0
                step.losses.append(100.0 * max(0, expected - received) / expected if expected > 0 else 100.0)
                step.fps.append((frames1 - frames0) / (a["at"] - b["at"]))
        step.viewers_ok = len(step.losses)
        step.held, step.why_not = judge(step)
        return step


def idle_cpu_share(pid: int, seconds: float) -> float:
    """The server's CPU share with the publisher alone (no viewer): ingest and timers, the baseline that
    the net CPU per forwarded packet leaves out."""
    (user0, sys0), t0 = procstat.cpu_times(pid), time.monotonic()
    time.sleep(seconds)  # the idle measurement window
    (user1, sys1), t1 = procstat.cpu_times(pid), time.monotonic()
    return ((user1 + sys1) - (user0 + sys0)) / (t1 - t0)


def judge(step: Step) -> tuple[bool, str]:
    """Whether N viewers were served: loss, frame rate and latency within bounds, every viewer joined."""
    reasons = []
    if step.join_errors:
        reasons.append(f"{len(step.join_errors)} viewers failed to join")
    if step.losses and sum(step.losses) / len(step.losses) > RELAY_MAX_LOSS:
        reasons.append(f"mean loss {sum(step.losses) / len(step.losses):.1f} % > {RELAY_MAX_LOSS:g} %")
    if step.fps and sum(step.fps) / len(step.fps) < RELAY_MIN_FPS_SHARE * FPS:
        reasons.append(f"video at {sum(step.fps) / len(step.fps):.1f} fps < {RELAY_MIN_FPS_SHARE * FPS:g}")
    p50 = step.latency.get("p50_us", float("nan")) / 1000
    if p50 > RELAY_MAX_LATENCY_MS:
        reasons.append(f"latency p50 {p50:.0f} ms > {RELAY_MAX_LATENCY_MS:g} ms")
    if not step.losses:
        reasons.append("no viewer")
    return not reasons, "; ".join(reasons)


# -- profile -------------------------------------------------------------------------------------------


def profile(pid: int, seconds: float, out: Path) -> dict[str, Any]:
    """py-spy on the running server: top functions by own time (and including callees)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy is not installed (.venv/bin/pip install py-spy)"}
    log(f"   profiling the server with py-spy for {seconds:g} s")
    errors = []
    # Python frames only, without stopping the server to sample (--nonblocking): C code (SRTP, sendto)
    # counts as its Python caller's own time. Stopping it, as --native must, skews a busy event loop.
    for extra in (["--nonblocking"], []):
        cmd = [spy, "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate", "200",
               "--format", "raw", "--output", str(out), *extra]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            errors.append(f"{' '.join(extra)} timed out")
            continue
        if done.returncode == 0 and out.exists() and out.stat().st_size:
            return summarize_profile(out.read_text(), bool(extra))
        errors.append(f"{' '.join(extra)}: {(done.stderr or done.stdout).strip().splitlines()[:1]}")
    return {"error": "py-spy could not record: " + "; ".join(errors)}


def _frame_name(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else where
    return f"{name} ({short})" if where else name


IDLE_FRAMES = ("epoll_wait", "PyThread_acquire_lock_timed", "_queue_SimpleQueue_get", "EpollSelector.select")
PLUMBING = ("asyncio/", "<frozen runpy>", "threading.py", "streaming/cli.py", "streaming/__main__.py",
            "futures/thread.py", "_asynciomodule.c", "libpython", "(libc.so.6)", "0x")


def summarize_profile(raw: str, nonblocking: bool) -> dict[str, Any]:
    """Own time and time including callees per function, as shares of the samples where the server was
    busy (stacks waiting in epoll or on a lock are idle and left out)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    busy = idle = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if any(f.startswith(IDLE_FRAMES) for f in frames):
            idle += count
            continue
        busy += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    busy = max(busy, 1)
    top_own = [{"function": name, "pct": round(100 * c / busy, 1)} for name, c in own.most_common(15)]
    interesting = [(name, c) for name, c in inclusive.most_common()
                   if not any(p in name for p in PLUMBING) or name.startswith(("sendto", "recvfrom"))]
    top_incl = [{"function": name, "pct": round(100 * c / busy, 1)} for name, c in interesting[:25]]
    return {"busy_samples": busy, "idle_samples": idle, "nonblocking": nonblocking, "top_self": top_own,
            "top_inclusive": top_incl}


# -- output ------------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None or x != x else format(x, fmt)


def format_row(step: Step) -> str:
    s = step.summary()
    return (f"{_f(s['cpu_us_per_packet'], '.1f')} us/pkt, {_f(s['packets_per_s'], '.0f')} pkt/s, "
            f"cpu {_f(s['server_cpu_share'] * 100 if s['server_cpu_share'] is not None else None, '.0f')} %, "
            f"loss {_f(s['loss_pct_mean'], '.2f')}/{_f(s['loss_pct_max'], '.2f')} %, "
            f"lat {_f(s['latency_ms_p50'], '.2f')}/{_f(s['latency_ms_p99'], '.2f')} ms, "
            f"join {_f(s['join_ms_p50'], '.0f')} ms, rss/viewer {_f(s['rss_per_viewer_kib'], '.0f')} KiB"
            + ("" if step.held else f"  [not held: {step.why_not}]"))


def table(steps: list[Step]) -> str:
    header = ["implementation", "N", "CPU us/pkt (sys)", "net us/pkt", "pkt/s fwd", "CPU %", "loss % mean/max",
              "lat ms p50/p99", "join ms p50", "RSS/viewer KiB", "fps min", "drops srv/viewer", "other load"]
    rows = [header]
    for step in steps:
        s = step.summary()
        rows.append([
            IMPLEMENTATIONS[step.impl] + ("" if step.held else " (!)"),
            str(step.n) if s["viewers_ok"] == step.n else f"{step.n} ({s['viewers_ok']} ok)",
            f"{_f(s['cpu_us_per_packet'], '.1f')} ({_f(s['cpu_sys_us_per_packet'], '.1f')})",
            _f(s["cpu_net_us_per_packet"], ".1f"),
            _f(s["packets_per_s"], ".0f"),
            _f(s["server_cpu_share"] * 100 if s["server_cpu_share"] is not None else None, ".0f"),
            f"{_f(s['loss_pct_mean'], '.2f')} / {_f(s['loss_pct_max'], '.2f')}",
            f"{_f(s['latency_ms_p50'], '.2f')} / {_f(s['latency_ms_p99'], '.2f')}"
            + (" (frame)" if step.impl == "relay" else ""),
            _f(s["join_ms_p50"], ".0f"),
            _f(s["rss_per_viewer_kib"], ".0f"),
            _f(s["video_fps_min"], ".1f"),
            f"{s['server_dropped'] + s['server_udp_drops']} / {s['viewer_udp_drops']}",
            f"{step.other_load:.2f}",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                             strict=True)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def janus_ratios(steps: list[Step]) -> list[dict[str, Any]]:
    """Per N that both ran: our server (native core) over Janus, CPU per forwarded packet (gross and net of
    the idle baseline); below 1 means we spend less than Janus."""
    ours = {s.n: s for s in steps if s.impl == "native"}
    ratios = []
    for theirs in (s for s in steps if s.impl == "janus"):
        mine = ours.get(theirs.n)
        if mine is None:
            continue

        def ratio(a: float, b: float) -> float | None:
            return round(a / b, 3) if a == a and b == b and b > 0 else None

        ratios.append({"viewers": theirs.n, "native_us_per_packet": mine.summary()["cpu_us_per_packet"],
                       "janus_us_per_packet": theirs.summary()["cpu_us_per_packet"],
                       "ratio": ratio(mine.us_per_packet, theirs.us_per_packet),
                       "native_net_us_per_packet": mine.summary()["cpu_net_us_per_packet"],
                       "janus_net_us_per_packet": theirs.summary()["cpu_net_us_per_packet"],
                       "net_ratio": ratio(mine.net_us_per_packet, theirs.net_us_per_packet),
                       "native_cpu_ms_per_viewer_s": mine.summary()["cpu_ms_per_viewer_s"],
                       "janus_cpu_ms_per_viewer_s": theirs.summary()["cpu_ms_per_viewer_s"],
                       "per_viewer_ratio": ratio(mine.cpu_ms_per_viewer_s, theirs.cpu_ms_per_viewer_s),
                       "rss_per_viewer_ratio": ratio(mine.rss_per_viewer_kib, theirs.rss_per_viewer_kib)})
    return ratios


def _pair(ratio: dict[str, Any], figure: str, fmt: str) -> str:
    return f"{_f(ratio['native_' + figure], fmt)} vs {_f(ratio['janus_' + figure], fmt)}"


def ratio_text(ratios: list[dict[str, Any]]) -> str:
    if not ratios:
        return "ours / Janus: no N with both"
    lines = ["ours (native core) / Janus 1.1 (< 1: we spend less), CPU per forwarded packet, and per viewer "
             "(per second of the same media, however packetized):"]
    for r in ratios:
        lines.append(f"  N={r['viewers']:<4} {_f(r['ratio'], '.2f')}x gross "
                     f"({_pair(r, 'us_per_packet', '.1f')} us), "
                     f"{_f(r['net_ratio'], '.2f')}x net of idle "
                     f"({_pair(r, 'net_us_per_packet', '.1f')} us); "
                     f"CPU per viewer {_f(r['per_viewer_ratio'], '.2f')}x "
                     f"({_pair(r, 'cpu_ms_per_viewer_s', '.2f')} ms/s); "
                     f"RSS/viewer {_f(r['rss_per_viewer_ratio'], '.2f')}x")
    return "\n".join(lines)


def profile_text(prof: dict[str, Any], us_per_packet: float | None) -> str:
    if not prof:
        return "profile: not taken"
    if "error" in prof:
        return f"profile: {prof['error']}"
    per = us_per_packet if us_per_packet and us_per_packet == us_per_packet else None

    def line(entry: dict[str, Any]) -> str:
        cost = f"{entry['pct'] * per / 100:6.2f} us/pkt" if per else ""
        return f"  {entry['pct']:5.1f} %  {cost}  {entry['function']}"

    lines = [f"py-spy profile of the native server at the largest N ({prof['busy_samples']} busy samples, "
             f"{prof['idle_samples']} idle left out, Python frames{', nonblocking' if prof['nonblocking'] else ''}; "
             f"us/pkt = share x the step's {_f(per, '.1f')} us per forwarded packet). Own time:"]
    lines += [line(e) for e in prof["top_self"][:12]]
    lines.append("Including callees (event loop plumbing left out):")
    lines += [line(e) for e in prof["top_inclusive"][:20]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", default="1,10,50,100", help="viewer counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady window per step (default 10)")
    parser.add_argument("--quick", action="store_true", help="N=1,10, short windows: a smoke run")
    parser.add_argument("--skip-relay", action="store_true", help="leave out the aiortc MediaRelay server")
    parser.add_argument("--skip-twin", action="store_true", help="leave out the Python twin of the core")
    parser.add_argument("--skip-janus", action="store_true", help="leave out Janus 1.1 (its streaming plugin)")
    parser.add_argument("--idle-seconds", type=float, default=IDLE_SECONDS,
                        help="publisher-only window for the server's idle CPU baseline (default 2)")
    parser.add_argument("--workers", type=int, default=3, help="viewer worker processes (default 3)")
    parser.add_argument("--join-concurrency", type=int, default=5, help="joins at once per worker")
    parser.add_argument("--join-timeout", type=float, default=30.0, help="seconds one viewer may take to join")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds after joins before the window")
    parser.add_argument("--profile-seconds", type=float, default=5.0, help="py-spy duration")
    parser.add_argument("--client-nice", type=int, default=10,
                        help="nice value of the viewer workers and the sniffer, so that on a small machine the "
                             "server gets the CPU it needs and the clients the rest (default 10; 0: equal)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (kept anyway on failure)")
    args = parser.parse_args()
    try:
        args.viewers = [int(v) for v in args.viewers.split(",") if v.strip()]
    except ValueError:
        parser.error("--viewers takes comma-separated integers")
    if args.quick:
        args.viewers = [n for n in args.viewers if n <= 10] or [1, 10]
        args.seconds = min(args.seconds, 3.0)
        args.settle = min(args.settle, 1.0)
        args.profile_seconds = min(args.profile_seconds, 3.0)
        args.idle_seconds = min(args.idle_seconds, 1.0)
    if not args.viewers or min(args.viewers) < 1 or args.seconds <= 0 or args.workers < 1:
        parser.error("viewer counts, --seconds and --workers must be positive")
    args.budget = 100.0 if args.quick else 540.0  # seconds after which no new step starts
    if os.geteuid() != 0:
        parser.error("run as root: the latency sniffer needs a raw packet socket")
    others = sorted(name for _i, name in socket.if_nameindex() if name != "lo")
    if not args.skip_janus:
        try:
            janus.janus_binary()
            janus.setup_veth()  # refuses unless this namespace has nothing but loopback
        except BenchError as exc:
            parser.error(str(exc))
    elif others:
        log(f"note: interfaces besides lo exist ({', '.join(others)}); all traffic goes to 127.0.0.1 anyway, "
            "but run under `unshare --net` for a loopback-only namespace")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 65536:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))

    started = time.monotonic()
    media = ensure_media()
    before = procstat.machine_times()
    time.sleep(1.0)  # a one-second look at what else runs on the machine
    after = procstat.machine_times()
    busy = sum(after[k] - before[k] for k in after if k not in ("idle", "iowait", "steal"))
    if busy > 0.2:
        log(f"warning: the machine is already {busy:.2f} cores busy before the benchmark starts; other load "
            "skews every number (see other_load_cores per step)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    bench = Bench(args, media, tmp)
    try:
        bench.run()
    except BaseException:
        log(f"server logs kept in {tmp}")
        raise
    finally:
        bench.close()
    if args.keep_logs:
        log(f"server logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    relay_held = [s.n for s in bench.steps if s.impl == "relay" and s.held]
    native_last = next((s for s in reversed(bench.steps) if s.impl == "native"), None)
    native_us = native_last.summary()["cpu_us_per_packet"] if native_last else None
    result = {
        "bench": "fanout",
        "params": {"viewers": args.viewers, "seconds": args.seconds, "workers": args.workers,
                   "video": "H.264 1280x720 30 fps ~2 Mbit/s constrained baseline, keyframe every 2 s",
                   "audio": "Opus 48 kHz 20 ms ~32 kbit/s", "cores": os.cpu_count()},
        "steps": [s.summary() for s in bench.steps],
        "relay_max_viewers": max(relay_held, default=0) if not args.skip_relay else None,
        "janus_ratios": janus_ratios(bench.steps) if not args.skip_janus else None,
        "native_us_per_packet_at_max_n": native_us,
        "goal_us_per_packet": 5.0,
        "profile": bench.profile,
        "skipped": bench.skipped,
        "machine_busy_before_cores": round(busy, 3),
        "total_s": round(time.monotonic() - started, 1),
    }
    print(table(bench.steps))
    print()
    if not args.skip_janus:
        print(ratio_text(janus_ratios(bench.steps)))
        print()
    print(profile_text(bench.profile, native_us))
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
