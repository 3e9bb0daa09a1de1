"""The WebSDK client protocol on the wire: frames in, frames out. No I/O.

Every frame is JSON text `{"message": NAME, "data": [obj]}` (reference/websdk-protocol.md). Parsing a
client frame either gives a ClientMessage or raises ProtocolError whose `info` is what the client is
told in a `fail` message; the session stays open either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Messages the official client sends (src/flashphoner-core.js).
CLIENT_MESSAGES = frozenset({
    "connection", "ping", "pong",
    "publishStream", "playStream", "unPublishStream", "stopStream",
    "sendStreamEvent", "sendData", "snapshot", "availableStream",
    "submitBugReport", "sessionDebug", "pushLogs",
    "call", "answer", "hangup", "hold", "unhold", "sendDtmf", "transfer",
    "sendMessage", "sendIMDN", "subscribe", "sendXcapRequest",
})
# Messages whose data is [null].
NULL_DATA_MESSAGES = frozenset({"ping", "pong"})

MAX_NAME_LENGTH = 64


class ProtocolError(ValueError):
    """A client frame that cannot be handled; `info` goes back to the client in a `fail` message."""

    def __init__(self, info: str, api_method: str | None = None, id: str | None = None):
        super().__init__(info)
        self.info = info
        self.api_method = api_method
        self.id = id


@dataclass(frozen=True)
class ClientMessage:
    name: str
    data: dict[str, Any] | None


def parse_frame(text: str) -> ClientMessage:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"Malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ProtocolError("Malformed JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ProtocolError("Malformed message: expected a JSON object with 'message' and 'data'")
    name = doc.get("message")
    if not isinstance(name, str) or not name:
        raise ProtocolError("Malformed message: 'message' must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise ProtocolError(f"Unknown message: {name[:MAX_NAME_LENGTH]!r}...")
    if name not in CLIENT_MESSAGES:
        raise ProtocolError(f"Unknown message: {name!r}", api_method=name)
    data = doc.get("data")
    if name in NULL_DATA_MESSAGES:
        return ClientMessage(name, None)
    if not isinstance(data, list) or len(data) < 1:
        raise ProtocolError(f"Malformed {name}: 'data' must be a list holding one object", api_method=name)
    obj = data[0]
    if not isinstance(obj, dict):
        raise ProtocolError(f"Malformed {name}: data[0] must be an object", api_method=name)
    return ClientMessage(name, obj)


def frame(message: str, *data: Any) -> str:
    return json.dumps({"message": message, "data": list(data)}, separators=(",", ":"))


def fail(info: str, api_method: str | None = None, id: str | None = None) -> str:
    obj: dict[str, Any] = {"info": info}
    if api_method is not None:
        obj["apiMethod"] = api_method
    if id is not None:
        obj["id"] = id
    return frame("fail", obj)


def require_str(obj: dict[str, Any], key: str, message: str, *, max_length: int = 1024,
                optional: bool = False) -> str | None:
    """A string field of a client object, or ProtocolError naming the field."""
    value = obj.get(key)
    if value is None:
        if optional:
            return None
        raise ProtocolError(f"Malformed {message}: missing field '{key}'", api_method=message)
    if not isinstance(value, str):
        raise ProtocolError(f"Malformed {message}: field '{key}' must be a string", api_method=message)
    if len(value) > max_length:
        raise ProtocolError(f"Malformed {message}: field '{key}' is longer than {max_length} characters",
                            api_method=message)
    return value


PING = frame("ping", None)
PONG = frame("pong", None)
