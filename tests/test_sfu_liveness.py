"""Peers that vanish without a word: a frozen viewer is cleaned up while the publisher goes on; a frozen
publisher fails with "Failed by RTP activity". The peers are the project's Python client as separate
processes, frozen with SIGSTOP (their sockets stay open; nothing answers)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.server import REPO, ServerProcess
from tests.test_websdk_session import rest


class ClientProcess:
    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "streaming.client", *args, "--ice-address", "127.0.0.1"],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            if sel.select(0.2):
                line = self.proc.stderr.readline()
                if not line:
                    break
                lines.append(line)
                if line.startswith("ready "):
                    return
        raise AssertionError("client not ready:\n" + "".join(lines))

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def clients() -> Iterator[Callable[..., ClientProcess]]:
    started: list[ClientProcess] = []

    def start(*args: str) -> ClientProcess:
        client = ClientProcess(*args)
        started.append(client)
        return client

    yield start
    for client in started:
        client.kill()


def streams(server: ServerProcess) -> list[dict[str, Any]]:
    status, answer = rest(server, "/rest-api/stream/find_all")
    return [] if status == 404 else answer


def wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


FAST = ["--webrtc-activity-timeout", "2", "--ws-ping-interval", "30"]


def test_a_frozen_viewer_is_cleaned_up_and_the_publisher_goes_on(
        start_server: Callable[..., ServerProcess], clients: Callable[..., ClientProcess]) -> None:
    server = start_server(extra_args=FAST)
    publisher = clients("publish", "--server", server.ws_url, "--name", "live", "--duration", "60")
    publisher.wait_ready()
    viewer = clients("play", "--server", server.ws_url, "--name", "live", "--duration", "60")
    viewer.wait_ready()
    wait(lambda: any(not s["published"] and s["status"] == "PLAYING" for s in streams(server)), 10, "PLAYING")
    viewer.signal(signal.SIGSTOP)
    wait(lambda: [s for s in streams(server) if not s["published"]] == [], 15, "the frozen viewer removed")
    publisher_entry = [s for s in streams(server) if s["published"]]
    assert [s["status"] for s in publisher_entry] == ["PUBLISHING"]
    before = publisher_entry[0]["tracks"][0]["packets"]
    wait(lambda: streams(server)[0]["tracks"][0]["packets"] > before + 30, 10, "the publisher going on")
    viewer.signal(signal.SIGCONT)


def test_a_frozen_publisher_fails_by_rtp_activity(
        start_server: Callable[..., ServerProcess], clients: Callable[..., ClientProcess]) -> None:
    server = start_server(extra_args=FAST)
    publisher = clients("publish", "--server", server.ws_url, "--name", "stalls", "--duration", "60")
    publisher.wait_ready()
    viewer = clients("play", "--server", server.ws_url, "--name", "stalls", "--duration", "60")
    viewer.wait_ready()
    publisher.signal(signal.SIGSTOP)
    wait(lambda: streams(server) == [], 15, "the stalled stream ended")
    viewer.proc.wait(20)  # the player ends: its stream was stopped by the publisher's failure
    summary = viewer.proc.stdout.read() if viewer.proc.stdout else ""
    assert "Stopped by publisher stop" in summary, summary
    publisher.signal(signal.SIGCONT)
    assert "Failed by RTP activity" in server.log()
