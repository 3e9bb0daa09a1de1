from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from media import ice
from tests.support.backend import Backend
from tests.support.server import ServerProcess


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    """Every test runs in a loopback-only network namespace, and aioice never gathers loopback on its
    own: in-process WebRTC peers gather on 127.0.0.1 (the servers get --ice-address 127.0.0.1)."""
    ice.use_host_addresses(["127.0.0.1"])
    yield
    ice.use_host_addresses(["127.0.0.1"])


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend().start()
    yield b
    b.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start a server (several may run at once): start_server(extra_args=[...], env={...})."""
    started: list[ServerProcess] = []

    def start(extra_args: list[str] | None = None, env: dict[str, str] | None = None,
              data_dir: Path | None = None) -> ServerProcess:
        folder = data_dir or tmp_path / f"server{len(started)}"
        proc = ServerProcess(folder, extra_args, env)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server()
