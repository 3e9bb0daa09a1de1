"""Structured logs: JSON lines with time, level, logger, message and the session and stream a line
concerns; the ids come from the context the WebSocket side binds, or from a call's `extra`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streaming import config as config_module
from streaming import logs
from streaming.client import Session
from tests.support.server import ServerProcess


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, Callable[[str], None]]]:
    """A logger writing to a buffer with the server's handler, in the format chosen."""
    buffer = io.StringIO()
    logger = logging.getLogger("tests.logs")
    logger.propagate = False
    handler = logging.StreamHandler(buffer)
    handler.addFilter(logs.ContextFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)

    def use(fmt: str) -> None:
        handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.TextFormatter())

    use("json")
    yield logger, buffer, use
    logger.removeHandler(handler)
    logs.bind(session_id=None, stream=None, media_session_id=None)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line]


def test_json_lines_carry_the_bound_ids(captured: tuple[logging.Logger, io.StringIO, Callable[[str], None]]) -> None:
    logger, buffer, _ = captured
    logger.info("before %s", "binding")
    logs.bind(session_id="s1", stream="cam1", media_session_id="m1")
    logger.warning("bound \"quoted\" ünïcode")
    logger.info("given", extra={"stream": "other"})  # extra wins over the context
    logs.bind(stream=None, media_session_id=None)
    logger.info("session only")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    first, bound, given, session_only, failed = lines(buffer)
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["message"] == "before binding" and first["level"] == "INFO" and first["logger"] == "tests.logs"
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    assert bound == {**bound, "message": 'bound "quoted" ünïcode', "level": "WARNING", "session_id": "s1",
                     "stream": "cam1", "media_session_id": "m1"}
    assert (given["stream"], given["session_id"]) == ("other", "s1")
    assert session_only["session_id"] == "s1" and "stream" not in session_only
    assert failed["exception"].startswith("Traceback") and "ValueError: boom" in failed["exception"]


async def test_tasks_started_for_a_message_keep_its_ids(
        captured: tuple[logging.Logger, io.StringIO, Callable[[str], None]]) -> None:
    logger, buffer, _ = captured

    async def handle(session: str) -> None:
        logs.bind(session_id=session, stream=f"{session}-cam")
        await asyncio.sleep(0)
        await asyncio.get_running_loop().create_task(later())

    async def later() -> None:
        logger.info("later")

    await asyncio.gather(asyncio.create_task(handle("a")), asyncio.create_task(handle("b")))
    assert sorted((line["session_id"], line["stream"]) for line in lines(buffer)) == [("a", "a-cam"), ("b", "b-cam")]
    assert logs.current() == {}  # the tasks' bindings stayed in the tasks


def test_text_lines_end_with_the_ids(captured: tuple[logging.Logger, io.StringIO, Callable[[str], None]]) -> None:
    logger, buffer, use = captured
    use("text")
    logger.info("plain")
    logs.bind(session_id="s1", stream="cam1")
    logger.info("with ids")
    plain, with_ids = buffer.getvalue().splitlines()
    assert plain.endswith("INFO tests.logs: plain")
    assert with_ids.endswith("INFO tests.logs: with ids [session_id=s1 stream=cam1]")


def test_log_format_is_checked() -> None:
    with pytest.raises(config_module.ConfigError, match="server.log_format must be one of TEXT, JSON"):
        config_module.load(None, environ={"STREAMING_SERVER_LOG_FORMAT": "xml"})


async def test_the_server_logs_json_lines_with_session_and_stream_ids(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(extra_args=["--log-format", "json", "--log-level", "debug"])
    async with Session.connect(server.ws_url) as session:
        assert session.user_data is not None
        session_id = session.user_data["sessionId"]
        publisher = await session.publish("cam1", codec="VP8", width=320, height=240)
        await publisher.stop(wait=True)
    server.stop()
    parsed = [json.loads(line) for line in server.log().splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(line) for line in parsed)
    assert any(line["level"] == "DEBUG" for line in parsed)  # --log-level debug
    mine = [line for line in parsed if line.get("session_id") == session_id]
    assert any(line["message"].startswith(f"session {session_id} established") for line in mine)
    published = [line for line in mine if line["message"] == "stream 'cam1' publisher PUBLISHING"]
    assert len(published) == 1 and published[0]["stream"] == "cam1" and published[0]["media_session_id"]
    assert any(line["logger"] == "streaming.session" and "closed" in line["message"] for line in mine)
