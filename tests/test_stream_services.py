"""Stream keep-alive, stream events and bug reports on their own, in memory: each is given the stream
lookups, hooks client and session lookup it uses, here stand-ins, and no server runs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streaming.apps import App
from streaming.bug_reports import BugReports
from streaming.events import EventError, StreamEvents
from streaming.hooks import HookClient, HookResult
from streaming.keepalive import TERMINATED, StreamKeepAlive
from streaming.rest_config import MethodConfig, RestClientConfig
from streaming.session import Session
from streaming.streams import MediaSession

APP = App("testApp", "testApp", "http://127.0.0.1:9/backend", methods=frozenset({
    "StreamKeepAliveEvent", "OnDataEvent", "sendBugReport"}))


class Backend(HookClient):
    """Answers every call with `refuse` (a status) for the names in it, else allows; remembers calls."""

    def __init__(self, refuse: Mapping[str, int] | None = None):
        super().__init__()
        self.refuse = dict(refuse or {})
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, app: App, method: str, body: Mapping[str, Any], config: MethodConfig) -> HookResult:
        self.calls.append((method, dict(body)))
        status = self.refuse.get(str(body.get("name", "")))
        if status is not None:
            return HookResult(allowed=False, data=dict(body), status=status, reason="Payment due")
        return HookResult(allowed=True, data=dict(body), status=200)


class Streams:
    """The stream service's lookups, over a fixed list of media sessions."""

    def __init__(self, *media: MediaSession):
        self.media = list(media)
        self.terminated: list[tuple[str, str]] = []

    def media_sessions(self) -> list[MediaSession]:
        return list(self.media)

    def media_session(self, msid: str) -> MediaSession | None:
        return next((ms for ms in self.media if ms.id == msid), None)

    def publisher(self, name: str) -> MediaSession | None:
        return next((ms for ms in self.media if ms.published and ms.name == name), None)

    async def terminate(self, ms: MediaSession, info: str) -> None:
        ms.status = "FAILED"
        self.terminated.append((ms.id, info))


def session(hooks: HookClient) -> Session:
    return Session("node-1", APP, {"appKey": APP.app_key}, RestClientConfig(), hooks, "127.0.0.1")


def media(sess: Session, msid: str, name: str, status: str, published: bool = True) -> MediaSession:
    return MediaSession(msid, name, published, sess, True, True, status=status)


async def test_keep_alive_asks_about_active_streams_and_ends_the_refused() -> None:
    hooks = Backend(refuse={"unpaid": 403})
    sess = session(hooks)
    streams = Streams(media(sess, "a", "paid", "PUBLISHING"), media(sess, "b", "unpaid", "PUBLISHING"),
                      media(sess, "c", "waiting", "PENDING"))
    keepalive = StreamKeepAlive(streams, hooks, interval=60.0)
    await keepalive.round()
    assert sorted(body["mediaSessionId"] for _m, body in hooks.calls) == ["a", "b"]
    assert all(body["sessionId"] == sess.id and body["mediaProvider"] == "WebRTC" for _m, body in hooks.calls)
    assert streams.terminated == [("b", TERMINATED)]
    assert (keepalive.sent, keepalive.terminated) == (2, 1)


async def test_data_for_a_client_is_refused_for_another_node_or_an_unknown_session() -> None:
    hooks = Backend()
    sess = session(hooks)
    sessions = {sess.id: sess}
    events = StreamEvents(Streams(), hooks, sessions.get, "node-1", max_payload=64)
    for body, status in (({"sessionId": sess.id, "nodeId": "node-2"}, 404), ({"sessionId": "gone"}, 404),
                         ({"sessionId": sess.id, "payload": "x" * 100}, 413)):
        try:
            await events.send_to_client(body)
        except EventError as exc:
            assert exc.status == status
        else:
            raise AssertionError(f"{body} was sent")
    assert hooks.calls == []


def only_report(folder: Path) -> Any:
    (saved,) = folder.iterdir()
    return json.loads(saved.read_text())


async def test_a_bug_report_carries_its_sessions_streams_and_the_node(tmp_path: Path) -> None:
    hooks = Backend()
    sess, other = session(hooks), session(hooks)
    streams = Streams(media(sess, "a", "mine", "PUBLISHING"), media(other, "b", "theirs", "PLAYING", False))
    reports = BugReports(hooks, streams.media_sessions, "node-1", "native Cython", tmp_path)
    await reports.on_submit(sess, {"text": "the picture froze"})
    document = only_report(tmp_path)
    assert document["report"] == {"text": "the picture froze"}
    assert [s["mediaSessionId"] for s in document["streams"]] == ["a"]
    assert document["server"] == {"nodeId": "node-1", "mediaCore": "native Cython"}
    assert reports.saved == 1
