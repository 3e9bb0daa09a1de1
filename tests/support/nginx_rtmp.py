"""nginx with its RTMP module (Debian's libnginx-mod-rtmp) as a real RTMP server for tests and benchmarks:
started from a temporary configuration on a free loopback port, in the foreground, recording every
stream it receives to `{dir}/rec/{name}.flv` so a test can read back what arrived."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

CONFIG = """load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            record all;
            record_path {dir}/rec;
            record_unique off;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NginxRtmp:
    def __init__(self, directory: Path):
        self.dir = directory
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The application URL: rtmp://127.0.0.1:PORT/live."""
        return f"rtmp://127.0.0.1:{self.port}/live"

    def start(self, timeout: float = 10.0) -> NginxRtmp:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        (self.dir / "rec").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.dir / "nginx.conf"
        config.write_text(CONFIG.format(module=MODULE, dir=self.dir, port=self.port))
        self.proc = subprocess.Popen([nginx, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c",
                                      str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx did not start: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {self.port}: {self.log()}")

    def recorded(self, name: str) -> Path:
        return self.dir / "rec" / f"{name}.flv"

    def log(self) -> str:
        try:
            return (self.dir / "error.log").read_text()[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
