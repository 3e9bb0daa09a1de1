"""Real SIP peers for the tests, started on loopback with their configuration in a temporary folder:

- `Kamailio`: registrar and record-routing proxy. Users are a static list in the generated script (the
  `auth` module's pv_www_authenticate / pv_proxy_authenticate with the password chosen by From user, so no
  database is needed): REGISTER is challenged with 401, INVITE, MESSAGE, SUBSCRIBE and REFER from a
  known user with 407. Digest algorithm MD5 or SHA-256, qop=auth. Requests go to the registered contact
  (usrloc in memory); SUBSCRIBE can be sent on to a fixed address (a SIPp notifier).
- `Baresip`: a user agent with a config folder of its own: registers with kamailio, answers
  automatically, sends a sine tone (ausine) and records what it hears (sndfile module, WAV files); it
  is driven over its ctrl_tcp socket (JSON commands, JSON events).
- `Sipp`: runs a SIPp scenario (XML written by the test) and returns its exit status and output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

KAMAILIO = "/usr/sbin/kamailio"
BARESIP = "/usr/bin/baresip"
SIPP = "/usr/bin/sipp"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


def free_port(kind: int = socket.SOCK_DGRAM, both: bool = True) -> int:
    """A port free on 127.0.0.1 for UDP and (with `both`) TCP."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not both:
            return port
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)  # poll interval of a condition with a deadline
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Kamailio:
    def __init__(self, users: dict[str, str], *, algorithm: str = "MD5", domain: str = "127.0.0.1",
                 subscribe_to: int | None = None):
        self.users = users
        self.algorithm = algorithm
        self.domain = domain
        self.subscribe_to = subscribe_to
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kamailio-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "kamailio.log"

    def script(self) -> str:
        password_lines = "\n".join(
            f'    if ($fU == "{user}") {{ $var(pw) = "{password}"; }}' for user, password in self.users.items())
        subscribe = ""
        if self.subscribe_to is not None:
            subscribe = f"""
    if (is_method("SUBSCRIBE")) {{
        record_route();
        $du = "sip:127.0.0.1:{self.subscribe_to}";
        t_relay();
        exit;
    }}"""
        return f"""#!KAMAILIO
debug=2
log_stderror=yes
memdbg=5
memlog=5
children=1
tcp_children=2
auto_aliases=no
listen=udp:127.0.0.1:{self.port}
listen=tcp:127.0.0.1:{self.port}
mpath="{MODULES}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 1)
modparam("rr", "append_fromtag", 1)
modparam("auth", "algorithm", "{self.algorithm}")
modparam("auth", "nonce_expire", 300)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (!(uri == myself)) {{ t_relay(); exit; }}  # in-dialog, sent without a route set (SIPp)
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    t_check_trans();
    $var(pw) = "";
{password_lines}
    if (is_method("REGISTER")) {{
        if ($var(pw) == "" || !pv_www_authenticate("$td", "$var(pw)", "0")) {{
            auth_challenge("$td", "1");
            exit;
        }}
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if ($var(pw) != "" && is_method("INVITE|MESSAGE|SUBSCRIBE|REFER")) {{
        if (!pv_proxy_authenticate("$fd", "$var(pw)", "0")) {{
            auth_challenge("$fd", "1");
            exit;
        }}
        consume_credentials();
    }}{subscribe}
    if (is_method("INVITE|SUBSCRIBE|REFER")) {{ record_route(); }}
    # A URI with another port of this host is a peer called by address (SIPp): relayed to it as it is.
    if (!is_method("REGISTER") && $ru =~ "@127[.]0[.]0[.]1:[0-9]+" && !($ru =~ "@127[.]0[.]0[.]1:{self.port}")) {{
        t_relay();
        exit;
    }}
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    t_relay();
}}
"""

    def start(self) -> Kamailio:
        cfg = self.dir / "kamailio.cfg"
        cfg.write_text(self.script())
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen([KAMAILIO, "-f", str(cfg), "-DD", "-E", "-m", "64", "-M", "8",
                                      "-Y", str(self.dir), "-P", str(self.dir / "kamailio.pid")],
                                     stdout=log, stderr=log, start_new_session=True)
        wait_for(lambda: self._answers_options(), 15, "kamailio to answer OPTIONS")
        return self

    def _answers_options(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"kamailio exited: {self.log()}")
        msg = (f"OPTIONS sip:{self.domain}:{self.port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKprobe\r\n"
               f"From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:{self.domain}>\r\nCall-ID: probe{time.time()}\r\n"
               "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            msg = msg.replace("127.0.0.1:9", f"127.0.0.1:{s.getsockname()[1]}")
            s.settimeout(0.3)
            s.sendto(msg.encode(), ("127.0.0.1", self.port))
            try:
                return s.recv(4096).startswith(b"SIP/2.0")
            except OSError:
                return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class Baresip:
    """`user`@kamailio with `password`; `tone`: the frequency of the sine it sends (Hz)."""

    def __init__(self, user: str, password: str, registrar_port: int, *, tone: int = 440,
                 domain: str = "127.0.0.1", auto_answer: bool = True):
        self.user = user
        self.password = password
        self.registrar_port = registrar_port
        self.domain = domain
        self.tone = tone
        self.auto_answer = auto_answer
        self.sip_port = free_port()
        self.ctrl_port = free_port(socket.SOCK_STREAM, both=False)
        self.dir = Path(tempfile.mkdtemp(prefix="baresip-"))
        self.record_dir = self.dir / "rec"
        self.proc: subprocess.Popen[bytes] | None = None
        self.events: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def start(self) -> Baresip:
        self.record_dir.mkdir()
        answer = "auto" if self.auto_answer else "manual"
        (self.dir / "accounts").write_text(
            f"<sip:{self.user}@{self.domain}:{self.registrar_port};transport=udp>;auth_pass={self.password};"
            f"answermode={answer};regint=600;outbound=\"sip:127.0.0.1:{self.registrar_port}\";"
            "\n")
        (self.dir / "config").write_text(f"""
poll_method epoll
sip_listen 127.0.0.1:{self.sip_port}
sip_trans_def udp
audio_source ausine,{self.tone}
audio_player aubridge,nowhere
audio_alert aubridge,nowhere
audio_srate 8000-48000
ausrc_srate 48000
ausrc_channels 2
auplay_channels 1
rtp_ports 30000-30999
rtp_timeout 0
module_path /usr/lib/baresip/modules
module g711.so
module g722.so
module opus.so
module ausine.so
module aubridge.so
module sndfile.so
module ctrl_tcp.so
module_app account.so
module_app menu.so
ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}
snd_path {self.record_dir}
net_interface 127.0.0.1
dns_server 127.0.0.1:53
""")
        (self.dir / "contacts").write_text("")
        log = (self.dir / "baresip.log").open("wb")
        trace = ["-s"] if os.environ.get("BARESIP_TRACE") else []  # SIP trace in its log, for debugging
        self.proc = subprocess.Popen([BARESIP, "-f", str(self.dir), "-4", *trace], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log, cwd=self.dir, start_new_session=True)
        self._sock = wait_for(self._connect, 15, "baresip's ctrl_tcp socket")
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _connect(self) -> socket.socket | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"baresip exited: {self.log()}")
        try:
            return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
        except OSError:
            return None

    def _read(self) -> None:
        assert self._sock is not None
        self._sock.settimeout(None)
        buffer = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b":" in buffer:
                length_text, _, rest = buffer.partition(b":")
                if not length_text.isdigit():
                    return
                length = int(length_text)
                if len(rest) < length + 1:
                    break
                doc = json.loads(rest[:length])
                buffer = rest[length + 1:]
                with self._lock:
                    (self.events if doc.get("event") else self.responses).append(doc)

    def command(self, command: str, params: str = "", timeout: float = 10.0) -> str:
        """Run a command (as on baresip's console) and return its answer text."""
        assert self._sock is not None
        token = f"t{time.monotonic_ns()}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(str(len(body)).encode() + b":" + body + b",")

        def answered() -> str | None:
            with self._lock:
                for doc in self.responses:
                    if doc.get("token") == token:
                        return str(doc.get("data", "")) or " "
            return None
        return wait_for(answered, timeout, f"baresip's answer to {command}")  # type: ignore[no-any-return]

    def wait_registered(self, timeout: float = 15.0) -> None:
        wait_for(lambda: "OK" in self.command("reginfo"), timeout, f"baresip {self.user} to register")

    def event_types(self) -> list[str]:
        with self._lock:
            return [str(e.get("type")) for e in self.events]

    def wait_event(self, kind: str, timeout: float = 15.0, after: int = 0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            with self._lock:
                for event in self.events[after:]:
                    if event.get("type") == kind:
                        return event
            return None
        try:
            return wait_for(find, timeout, f"baresip event {kind}")  # type: ignore[no-any-return]
        except AssertionError:
            raise AssertionError(f"baresip {self.user}: no {kind} within {timeout} s; events: "
                                 f"{self.event_types()}\n{self.log()}") from None

    def event_count(self) -> int:
        with self._lock:
            return len(self.events)

    def recordings(self) -> list[Path]:
        return sorted(self.record_dir.glob("*.wav"))

    def log(self) -> str:
        try:
            return (self.dir / "baresip.log").read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class Sipp:
    """One SIPp run of a scenario file the test wrote."""

    def __init__(self, scenario: str, *, port: int | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="sipp-"))
        self.scenario = self.dir / "scenario.xml"
        self.scenario.write_text(scenario)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, remote: str | None, *extra: str, calls: int = 1) -> Sipp:
        args = [SIPP, "-sf", str(self.scenario), "-i", "127.0.0.1", "-p", str(self.port), "-m", str(calls),
                "-nostdin", "-trace_err", "-trace_msg", "-timeout", "60s", "-max_recv_loops", "100",
                *extra]
        if remote:
            args.append(remote)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.dir)
        return self

    def wait(self, timeout: float = 60.0) -> tuple[int, str]:
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return self.proc.returncode, out.decode(errors="replace")[-3000:] + self.messages()

    def messages(self) -> str:
        text = ""
        for path in list(self.dir.glob("*_messages.log")) + list(self.dir.glob("*_errors.log")):
            text += path.read_text(errors="replace")[-20000:]
        return text

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
