"""Starts and stops tests/support/camera.py (GStreamer's rtsp-server as an IP camera) under the system
Python, which has PyGObject and GStreamer."""

from __future__ import annotations

import selectors
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = REPO / "tests/support/camera.py"


class Camera:
    def __init__(self, *args: str, path: str = "/cam", log: Path | None = None):
        self.args = list(args)
        self.path = path
        self.port = 0
        self.log = log
        self.proc: subprocess.Popen[str] | None = None

    def url(self, credentials: str = "") -> str:
        user = f"{credentials}@" if credentials else ""
        return f"rtsp://{user}127.0.0.1:{self.port}{self.path}"

    def start(self, timeout: float = 20.0) -> Camera:
        """Starts it (again on the same port, once it had one) and waits until it listens."""
        stderr = self.log.open("a") if self.log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SCRIPT), "--port", str(self.port), "--path", self.path,
                                      *self.args], stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert self.proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if selector.select(timeout=0.2):
                line = self.proc.stdout.readline()
                if line.startswith("ready "):
                    self.port = int(line.split()[1])
                    return self
                if not line:
                    break
            elif self.proc.poll() is not None:
                break
        self.stop()
        raise AssertionError(f"the camera ({SCRIPT.name} {' '.join(self.args)}) did not start")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, gently: bool = False) -> int | None:
        """Kills it (a camera losing power), or with `gently` asks it to end (SIGTERM); its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            if gently:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            else:
                proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode
