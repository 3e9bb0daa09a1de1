"""Shared pieces of the RTMP tests: an encoder's clip (ffmpeg lavfi testsrc + sine, H.264 + AAC), ffmpeg
publishing it over RTMP, the REST API and waiting on a condition."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess


@pytest.fixture(scope="module", name="clip")
def clip_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six seconds of H.264 (constrained baseline, a keyframe a second) and AAC, as an encoder sends them."""
    path = tmp_path_factory.mktemp("rtmp") / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "6",
                    "-c:v", "libx264", "-profile:v", "baseline", "-g", "30", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-b:a", "96k", "-ac", "2", str(path)], check=True, timeout=60)
    return path


class FfmpegPublisher:
    def __init__(self, clip: Path, url: str, loop: bool = True):
        args = ["ffmpeg", "-v", "error", "-re"] + (["-stream_loop", "-1"] if loop else []) + [
            "-i", str(clip), "-c", "copy", "-f", "flv", url]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture(name="publish")
def publish_fixture(clip: Path) -> Iterator[Callable[..., FfmpegPublisher]]:
    started: list[FfmpegPublisher] = []

    def start(url: str, loop: bool = True) -> FfmpegPublisher:
        publisher = FfmpegPublisher(clip, url, loop)
        started.append(publisher)
        return publisher

    yield start
    for publisher in started:
        publisher.kill()


def rest(server: ServerProcess, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(server.rest_url + path, data=json.dumps(body or {}).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


def health(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.rest_url + "/health", timeout=10) as answer:
        return dict(json.loads(answer.read()))


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
