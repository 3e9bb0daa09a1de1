"""rtsp.pull_allowed_hosts: a URL whose host is not allowed is refused with a clear error before any
connection is tried (REST startup and a player's rtsp:// stream name alike); an allowed one is pulled,
by the address that was checked."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streaming import config as config_module
from streaming.client import Session, StreamFailed
from streaming.rtsp_pull import NOT_ALLOWED, PullFailed
from streaming.rtsp_pull.allow import HostPolicy, check
from tests.support.camera_process import Camera
from tests.support.server import ServerProcess
from tests.test_rtsp_pull import cameras  # noqa: F401 - the fixture
from tests.test_websdk_session import rest

# -- the rule (no I/O) -------------------------------------------------------------------------------


def test_entries_parse_into_names_and_networks() -> None:
    policy = HostPolicy.parse(["cam1.example.com.", "*.cams.example.com", "10.20.0.0/16", "192.0.2.7",
                               "2001:db8::/32"])
    assert policy.names == {"cam1.example.com", "*.cams.example.com"}
    assert [str(n) for n in policy.networks] == ["10.20.0.0/16", "192.0.2.7/32", "2001:db8::/32"]
    assert HostPolicy.parse([]).allows_all
    for bad in ("not a host", "10.0.0.0/33", "-bad.example", "a..b", "http://x", ""):
        with pytest.raises(ValueError, match="is not a host name, an address or a network"):
            HostPolicy.parse([bad])


def test_decide() -> None:
    policy = HostPolicy.parse(["cam1.example.com", "*.cams.example.com", "10.20.0.0/16", "2001:db8::/32"])
    assert policy.decide("CAM1.example.com", None) is None  # a listed name: trusted as named
    assert policy.decide("door.cams.example.com", None) is None
    assert policy.decide("cams.example.com", None) == "cams.example.com is not in rtsp.pull_allowed_hosts"
    assert policy.decide("evilcams.example.com", None) is not None
    assert policy.decide("10.20.3.4", None) is None
    assert policy.decide("2001:db8::5", None) is None
    assert policy.decide("::ffff:10.20.3.4", None) is None  # IPv4-mapped is the IPv4 address
    assert policy.decide("10.21.0.1", None) == "10.21.0.1 is not in rtsp.pull_allowed_hosts"
    assert policy.decide("127.0.0.1", None) is not None
    assert policy.decide("169.254.169.254", None) is not None
    # A name that is not listed is judged by every address it resolves to.
    assert policy.decide("nvr.lan", ["10.20.0.9"]) is None
    assert policy.decide("nvr.lan", ["10.20.0.9", "127.0.0.1"]) == (
        "nvr.lan (127.0.0.1) is not in rtsp.pull_allowed_hosts")
    assert policy.decide("nvr.lan", []) == "nvr.lan resolves to no address"
    assert HostPolicy().decide("127.0.0.1", None) is None  # no entries: everything


def test_a_bad_entry_is_a_config_error() -> None:
    with pytest.raises(config_module.ConfigError, match="rtsp.pull_allowed_hosts 'bad!' is not a host name"):
        config_module.load(None, environ={"STREAMING_RTSP_PULL_ALLOWED_HOSTS": "10.0.0.0/8,bad!"})
    loaded = config_module.load(None, environ={"STREAMING_RTSP_PULL_ALLOWED_HOSTS": "10.0.0.0/8, cam.lan"})
    assert loaded["rtsp.pull_allowed_hosts"] == ["10.0.0.0/8", "cam.lan"]


async def test_check_resolves_names_and_pins_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: dict[str, list[str]] = {"nvr.lan": ["10.20.0.9"], "split.lan": ["10.20.0.9", "127.0.0.1"]}
    looked_up: list[str] = []

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        looked_up.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    policy = HostPolicy.parse(["10.20.0.0/16", "cam1.example.com"])
    target = await check(policy, "nvr.lan", 554)
    assert (target.host, target.connect_to) == ("nvr.lan", "10.20.0.9")
    with pytest.raises(PullFailed) as refused:
        await check(policy, "split.lan", 554)
    assert refused.value.info == NOT_ALLOWED and "127.0.0.1" in refused.value.detail
    with pytest.raises(PullFailed, match="cannot resolve unknown.lan"):
        await check(policy, "unknown.lan", 554)
    assert (await check(policy, "10.20.1.1", 554)).connect_to == "10.20.1.1"
    assert (await check(policy, "cam1.example.com", 554)).connect_to == "cam1.example.com"
    assert looked_up == ["nvr.lan", "split.lan", "unknown.lan"]  # literals and listed names: no lookup
    assert (await check(HostPolicy(), "anything.lan", 554)).connect_to == "anything.lan"


# -- the real server ----------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port on loopback that nobody should connect to: a connection would wait in its backlog."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


async def test_a_host_that_is_not_allowed_is_refused_without_a_connection(
        start_server: Callable[..., ServerProcess], listener: socket.socket) -> None:
    server = start_server(extra_args=["--rtsp-pull-allowed-hosts", "10.20.0.0/16,cam1.example.com"])
    port = listener.getsockname()[1]
    for uri, shown in ((f"rtsp://admin:pw@127.0.0.1:{port}/cam", "127.0.0.1"),
                       (f"rtsp://localhost:{port}/cam", "localhost (127.0.0.1)"),
                       (f"rtsp://[::ffff:127.0.0.1]:{port}/cam", "::ffff:127.0.0.1")):
        status, answer = await asyncio.to_thread(rest, server, "/rest-api/rtsp/startup", {"uri": uri})
        assert (status, answer["info"]) == (403, "Rtsp host is not allowed"), answer
        assert answer["reason"] == f"{shown} is not in rtsp.pull_allowed_hosts"
    # A player whose stream name is the URL gets the same answer.
    async with Session.connect(server.ws_url) as session:
        with pytest.raises(StreamFailed, match="Rtsp host is not allowed"):
            player = await session.play(f"rtsp://127.0.0.1:{port}/cam")
            await player.wait_frames(1, timeout=10)
    assert _connections(listener) == 0
    assert (await asyncio.to_thread(rest, server, "/rest-api/rtsp/find_all"))[0] == 404


def test_allowed_hosts_are_pulled(start_server: Callable[..., ServerProcess],
                                  cameras: Callable[..., Camera]) -> None:  # noqa: F811
    camera = cameras()
    server = start_server(extra_args=["--rtsp-pull-allowed-hosts", "127.0.0.0/8"])
    by_name = camera.url().replace("127.0.0.1", "localhost")  # resolved, checked, connected by address
    for uri in (camera.url(), by_name):
        status, answer = rest(server, "/rest-api/rtsp/startup", {"uri": uri})
        assert status == 200 and answer["status"] == "PLAYING", answer
        assert rest(server, "/rest-api/rtsp/terminate", {"uri": uri})[0] == 200
