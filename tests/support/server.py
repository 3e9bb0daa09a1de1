"""Starts the real server as a subprocess (the `streaming serve` a user runs), on loopback and free ports,
with its own data folder."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    def __init__(self, data_dir: Path, extra_args: list[str] | None = None, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.extra_args = list(extra_args or [])
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.urls: dict[str, str] = {}
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def ws_url(self) -> str:
        return self.urls["ws"]

    @property
    def rest_url(self) -> str:
        return self.urls["rest"]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "streaming", "serve", "--data-dir", str(self.data_dir),
                "--bind", "127.0.0.1", "--ws-port", "0", "--rest-port", "0", "--hls-port", "0", "--rtsp-port", "0",
                "--rtmp-port", "0", "--ice-address", "127.0.0.1", "--sip-udp-port", "0", "--sip-tcp-port", "0",
                *self.extra_args]

    def start(self, timeout: float = 30.0) -> ServerProcess:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self._log = self.log_path.open("a")
        self.proc = subprocess.Popen(self.command(), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True)
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.2):
                if self.proc.poll() is not None:
                    break
                continue
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("ready "):
                self.urls = json.loads(line[len("ready "):])
                return self
        self.stop()
        raise RuntimeError(f"server did not start; its log:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def app_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `streaming app ARGS` on this server's data folder, as a user would."""
        return subprocess.run([sys.executable, "-m", "streaming", "app", "--data-dir", str(self.data_dir), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=30)

    def add_app(self, name: str, key: str, url: str, *extra: str) -> None:
        done = self.app_cli("add", name, key, url, *extra)
        assert done.returncode == 0, done.stderr

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
