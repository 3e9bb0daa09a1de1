"""The wire format, without sockets."""

from __future__ import annotations

import json

import pytest

from streaming import protocol
from streaming.protocol import ProtocolError


def test_parses_a_websdk_frame() -> None:
    msg = protocol.parse_frame('{"message":"connection","data":[{"appKey":"defaultApp"}]}')
    assert msg.name == "connection"
    assert msg.data == {"appKey": "defaultApp"}


def test_ping_and_pong_carry_null() -> None:
    assert protocol.parse_frame('{"message":"ping","data":[null]}').data is None
    assert protocol.parse_frame('{"message":"pong"}').name == "pong"


@pytest.mark.parametrize("text, expected", [
    ("{not json", "Malformed JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"data": [{}]}', "'message' must be a non-empty string"),
    ('{"message": 7, "data": [{}]}', "'message' must be a non-empty string"),
    ('{"message": "dance", "data": [{}]}', "Unknown message: 'dance'"),
    ('{"message": "publishStream"}', "'data' must be a list holding one object"),
    ('{"message": "publishStream", "data": []}', "'data' must be a list holding one object"),
    ('{"message": "publishStream", "data": ["x"]}', "data[0] must be an object"),
    ("[" * 100000 + "]" * 100000, "Malformed"),
])
def test_bad_frames_raise_with_a_clear_info(text: str, expected: str) -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.parse_frame(text)
    assert expected in err.value.info


def test_an_overlong_message_name_is_not_echoed_whole() -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.parse_frame(json.dumps({"message": "x" * 10000, "data": [{}]}))
    assert len(err.value.info) < 200


def test_fail_frame_has_the_shape_the_websdk_reads() -> None:
    doc = json.loads(protocol.fail("Stream not found", "StreamStatusEvent", "abc"))
    assert doc == {"message": "fail", "data": [{"info": "Stream not found", "apiMethod": "StreamStatusEvent",
                                                 "id": "abc"}]}


def test_require_str_names_the_missing_field() -> None:
    with pytest.raises(ProtocolError, match="missing field 'name'"):
        protocol.require_str({}, "name", "publishStream")
    with pytest.raises(ProtocolError, match="must be a string"):
        protocol.require_str({"name": 5}, "name", "publishStream")
    with pytest.raises(ProtocolError, match="longer than 4"):
        protocol.require_str({"name": "abcde"}, "name", "publishStream", max_length=4)
    assert protocol.require_str({}, "name", "publishStream", optional=True) is None
