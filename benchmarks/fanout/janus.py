"""Janus 1.1 (Debian's `janus`) as the peer of the fan-out benchmark: its streaming plugin with one RTP
mountpoint (H.264 + Opus from the RTSP benchmark's feeder, plain RTP over UDP), watched over WebRTC.

The driver's side lives here: the veth pair Janus needs (it gathers no ICE candidates on loopback), the
minimal configuration in a temp folder, the process, and what is read from it over HTTP (the Janus API
for the mountpoint, the Admin API for per-handle packet counters). The viewer's side of the Janus API
(create, attach, watch, start) is in janus_viewer.py.

Everything binds inside the benchmark's own network namespace; the veth pair's two ends are both in it.
Janus (libnice) binds its ICE sockets to its end, the viewers bind theirs to the other
(janus_viewer.bind_ice_to_device), so media between 10.254.0.1 and 10.254.0.2 crosses the pair.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .children import BenchError

INSTALL_HINT = "install it with `bash benchmarks/setup_peers.sh` (apt-get install janus), or pass --skip-janus"
LIB_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
PLUGIN = "libjanus_streaming.so"
TRANSPORT = "libjanus_http.so"
VETH = ("bfa", "bfb")  # Janus gathers on the first end, the viewers on the second
VETH_ADDRESSES = ("10.254.0.1", "10.254.0.2")
VETH_PREFIX = 30
MOUNTPOINT = 1
ADMIN_SECRET = "bench-fanout"  # only reachable inside the benchmark's namespace
VIDEO_FMTP = "profile-level-id=42e01f;packetization-mode=1"  # what aiortc (the viewers) answers for H.264


def janus_binary() -> str:
    """The janus executable, or a BenchError saying how to install it."""
    found = shutil.which("janus") or ("/usr/bin/janus" if Path("/usr/bin/janus").exists() else None)
    if not found or not (LIB_DIR / "plugins" / PLUGIN).exists():
        raise BenchError(f"Janus is not installed: {INSTALL_HINT}")
    return found


# -- the network namespace ---------------------------------------------------------------------------


def check_namespace() -> None:
    """Refuse to run unless the namespace has nothing but loopback (and our own veth pair): Janus binds
    and gathers candidates on real interfaces, which must not be this machine's."""
    others = sorted(name for _i, name in socket.if_nameindex() if name not in ("lo", *VETH))
    if others:
        raise BenchError(f"Janus needs a network namespace with only loopback, but {', '.join(others)} exist: "
                         "run the benchmark under `unshare --net sh -c 'ip link set lo up && exec ...'`, "
                         "or pass --skip-janus")


def setup_veth() -> None:
    """A veth pair with private addresses, both ends in this namespace: an interface Janus accepts for
    ICE (it skips loopback) whose traffic still never leaves the namespace."""
    check_namespace()
    names = {name for _i, name in socket.if_nameindex()}
    commands = [] if VETH[0] in names else [["ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1]]]
    for name, address in zip(VETH, VETH_ADDRESSES, strict=True):
        commands += [["ip", "addr", "replace", f"{address}/{VETH_PREFIX}", "dev", name],
                     ["ip", "link", "set", name, "up"]]
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    # libnice binds Janus's sockets to its veth end, so its packets cross the pair and arrive from an address
    # that is local to this namespace, which Linux drops as martian unless accept_local is set. These
    # sysctls belong to the benchmark's namespace (checked above to be its own), not to the machine.
    for name in VETH:
        Path(f"/proc/sys/net/ipv4/conf/{name}/accept_local").write_text("1")
        Path(f"/proc/sys/net/ipv4/conf/{name}/rp_filter").write_text("0")


# -- configuration and process -----------------------------------------------------------------------


@dataclass
class Ports:
    http: int
    admin: int
    video: int  # the mountpoint's RTP ports, where the feeder sends
    audio: int


def free_ports() -> Ports:
    """Ports nobody in this namespace uses now (bound once, then released for Janus to bind)."""
    socks = []
    for kind in (socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_DGRAM):
        sock = socket.socket(socket.AF_INET, kind)
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    ports = [s.getsockname()[1] for s in socks]
    for sock in socks:
        sock.close()
    return Ports(*ports)


def _disable_others(kind: str, keep: str) -> str:
    """Every library of LIB_DIR/kind except `keep`, as Janus's comma-separated `disable` setting: only
    what the benchmark uses is loaded (no other plugin's threads or ports)."""
    folder = LIB_DIR / kind
    names = sorted(p.name for p in folder.glob("*.so")) if folder.is_dir() else []
    return ",".join(n for n in names if n != keep)


def write_config(folder: Path, ports: Ports, debug_level: int = 4) -> None:
    """janus.jcfg, the HTTP transport's and the streaming plugin's configuration, nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "janus.jcfg").write_text(f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{LIB_DIR / 'plugins'}"
    transports_folder = "{LIB_DIR / 'transports'}"
    events_folder = "{LIB_DIR / 'events'}"
    loggers_folder = "{LIB_DIR / 'loggers'}"
    debug_level = {debug_level}
    interface = "{VETH_ADDRESSES[0]}"
    admin_secret = "{ADMIN_SECRET}"
    session_timeout = 0   # viewers send no keepalives once playing
    server_name = "bench-fanout"
}}
media: {{
    ipv6 = false
    rtp_port_range = "20000-40000"
}}
nat: {{
    nice_debug = false
    ice_enforce_list = "{VETH[0]}"
    ignore_mdns = true
}}
plugins: {{ disable = "{_disable_others('plugins', PLUGIN)}" }}
transports: {{ disable = "{_disable_others('transports', TRANSPORT)}" }}
loggers: {{ disable = "{_disable_others('loggers', '')}" }}
events: {{ broadcast = false }}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {ports.http}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_base_path = "/admin"
    admin_http = true
    admin_port = {ports.admin}
    admin_ip = "127.0.0.1"
    admin_https = false
}}
""")
    # bufferkf: the mountpoint keeps the last keyframe and sends it to a new viewer at once, as our server's
    # GOP cache does; without it a viewer waits up to a GOP (2 s) and the join times would not compare.
    (folder / "janus.plugin.streaming.jcfg").write_text(f"""general: {{
    string_ids = false
    events = false
}}
bench: {{
    type = "rtp"
    id = {MOUNTPOINT}
    description = "bench-fanout"
    media = (
        {{ type = "audio" mid = "a" label = "audio" port = {ports.audio} pt = 111 codec = "opus" }},
        {{ type = "video" mid = "v" label = "video" port = {ports.video} pt = 96 codec = "h264"
           fmtp = "{VIDEO_FMTP}" bufferkf = true }}
    )
}}
""")


class JanusProcess:
    """`janus -F <folder>` as a subprocess, ready when its HTTP API answers."""

    def __init__(self, folder: Path, log_path: Path, debug_level: int = 4):
        self.folder = folder
        self.debug_level = debug_level
        self.log_path = log_path
        self.ports = free_ports()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}/janus"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.admin}/admin"

    def start(self, timeout: float = 20.0) -> JanusProcess:
        binary = janus_binary()
        write_config(self.folder, self.ports, self.debug_level)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([binary, "-F", str(self.folder), "-o"], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if post(f"{self.url}/info", {}, method="GET").get("janus") == "server_info":
                    return self
            except OSError:
                pass
            time.sleep(0.2)  # poll interval while Janus starts
        self.stop()
        raise BenchError(f"Janus did not start; log: {self.log_path}")

    def stop(self) -> int | None:
        """SIGINT is Janus's clean shutdown (it closes its PeerConnections and plugins)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


# -- the Janus API and Admin API, from the driver --------------------------------------------------------


def post(url: str, body: dict[str, Any], method: str = "POST", timeout: float = 10.0) -> dict[str, Any]:
    """One Janus API request (a transaction id added), its JSON answer."""
    data = None if method == "GET" else json.dumps({"transaction": uuid.uuid4().hex[:12], **body}).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def _admin(url: str, request: str) -> dict[str, Any]:
    answer = post(url, {"janus": request, "admin_secret": ADMIN_SECRET})
    if answer.get("janus") != "success":
        raise BenchError(f"Janus admin {request}: {answer.get('error')}")
    return answer


class Driver:
    """The driver's own Janus session with a streaming handle, to ask about the mountpoint."""

    def __init__(self, url: str):
        self.session = post(url, {"janus": "create"})["data"]["id"]
        self.handle = post(f"{url}/{self.session}", {"janus": "attach", "plugin": "janus.plugin.streaming"}
                           )["data"]["id"]
        self.url = f"{url}/{self.session}/{self.handle}"

    def mountpoint_fresh(self, max_age_ms: int = 500) -> bool:
        """Whether the mountpoint receives both audio and video now (each stream's last packet recent)."""
        answer = post(self.url, {"janus": "message", "body": {"request": "info", "id": MOUNTPOINT}})
        info = answer.get("plugindata", {}).get("data", {}).get("info", {})
        media = info.get("media", [])
        return len(media) >= 2 and all(0 <= m.get("age_ms", 1 << 30) <= max_age_ms for m in media)


@dataclass
class HandleTotals:
    sent: int  # RTP packets Janus sent to viewers (out-stats of every streaming handle, all media)
    viewers: int  # streaming handles whose PeerConnection is up and sending


def handle_totals(admin_url: str, skip_session: int | None = None) -> HandleTotals:
    """Sum over every session's handles of the Admin API's handle_info out-stats (one request per handle:
    Janus has no aggregate counter)."""
    sent = viewers = 0
    for session in _admin(admin_url, "list_sessions").get("sessions", []):
        if session == skip_session:
            continue
        for handle in _admin(f"{admin_url}/{session}", "list_handles").get("handles", []):
            info = _admin(f"{admin_url}/{session}/{handle}", "handle_info").get("info", {})
            packets = _out_packets(info)
            sent += packets
            viewers += 1 if packets and info.get("plugin_specific", {}).get("started") else 0
    return HandleTotals(sent, viewers)


def _out_packets(info: dict[str, Any]) -> int:
    """RTP packets sent on a handle's PeerConnection (Janus 1.1 layout: webrtc.media.<mid>.stats.out.packets;
    retransmissions are not in it)."""
    media = info.get("webrtc", {}).get("media", {})
    entries = media.values() if isinstance(media, dict) else media
    return sum(int(e.get("stats", {}).get("out", {}).get("packets", 0) or 0) for e in entries)


class JanusPeer:
    """Janus with its mountpoint fed by the RTSP benchmark's feeder (the pre-packetized RTP dump, plain UDP
    to the mountpoint's ports), ready once both streams arrive and a keyframe is buffered."""

    def __init__(self, folder: Path, dump: Path):
        self.janus = JanusProcess(folder / "conf", folder / "janus.log")
        self.dump = dump
        self.feeder: subprocess.Popen[bytes] | None = None
        self.driver: Driver | None = None

    def start(self, timeout: float = 20.0) -> JanusPeer:
        from benchmarks.rtsp_fanout.feeder import start_feeder  # the driver's import, not the workers'

        self.janus.start()
        ports = self.janus.ports
        self.feeder = start_feeder(self.dump, True, ports.video, ports.audio,
                                   self.janus.log_path.with_name("feeder.log"))
        self.driver = Driver(self.janus.url)
        deadline = time.monotonic() + timeout
        while not self.driver.mountpoint_fresh():
            if time.monotonic() > deadline:
                raise BenchError(f"Janus's mountpoint received no media within {timeout:g} s")
            time.sleep(0.2)  # poll interval while the feeder starts
        time.sleep(2.2)  # one GOP (2 s): the mountpoint holds a keyframe, as our server's GOP cache does
        return self

    @property
    def pid(self) -> int:
        assert self.janus.proc is not None
        return self.janus.proc.pid

    @property
    def feeder_pid(self) -> int:
        assert self.feeder is not None
        return self.feeder.pid

    def totals(self) -> HandleTotals:
        """The viewers' handles (the driver's own session left out)."""
        return handle_totals(self.janus.admin_url, self.driver.session if self.driver else None)

    def stop(self) -> int | None:
        if self.feeder is not None and self.feeder.poll() is None:
            self.feeder.terminate()
            self.feeder.wait(timeout=10)
        return self.janus.stop()
