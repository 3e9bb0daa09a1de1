"""Randomized RTMP input (hypothesis): whatever a peer sends, the server's machine (media.rtmp) answers
with events or a ProtocolViolation, never an exception, and holds a bounded amount; chunk parsing does
not depend on how the bytes are split; AMF0 and FLV readers raise only their own errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.rtmp import amf0
from media.rtmp.chunk import ChunkError, ChunkReader, ChunkWriter
from media.rtmp.client import PublishClient, Published, PublishTarget, Refused
from media.rtmp.connection import (
    Connected,
    Media,
    Metadata,
    ProtocolViolation,
    PublishRequested,
    ServerConnection,
    Unpublished,
)
from media.rtmp.flv import FlvError, parse_aac_config, parse_audio, parse_video, split_nal_units
from media.rtmp.handshake import PACKET
from tests.support.rtmp_client import IDR, SLICE, Publisher, audio_body, video_body
from tests.support.wire_fuzz import BOUNDED

EVENTS = (Connected, PublishRequested, Media, Metadata, Unpublished, ProtocolViolation)
MAX_MESSAGE = 64 * 1024


def _valid_session() -> bytes:
    client = Publisher(chunk_size=256)
    return client.start() + client.media(0.2) + client.unpublish()


VALID = _valid_session()


@st.composite
def mutated_sessions(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[pos:pos + draw(st.integers(1, 64))]
        if not data:
            data = bytearray(b"\x03")
    return bytes(data)


def _feed(data: bytes, splits: list[int], accept: bool = True) -> ServerConnection:
    conn = ServerConnection(max_message_bytes=MAX_MESSAGE)
    pos = 0
    cuts = sorted({min(len(data), s) for s in splits}) + [len(data)]
    for cut in cuts:
        for event in conn.receive(data[pos:cut], now=1.0):
            assert isinstance(event, EVENTS)
            if isinstance(event, PublishRequested) and accept:
                conn.accept_publish()
            if isinstance(event, ProtocolViolation):
                assert conn.closed and event.reason
        conn.data_to_send()
        assert conn.reader.buffered <= len(data)  # nothing grows beyond what was sent
        pos = cut
    return conn


@BOUNDED
@given(mutated_sessions(), st.lists(st.integers(0, len(VALID)), max_size=6), st.booleans())
def test_mutated_sessions_never_raise(data: bytes, splits: list[int], accept: bool) -> None:
    _feed(data, splits, accept)


@BOUNDED
@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=4))
def test_random_bytes_after_handshake_never_raise(data: bytes, splits: list[int]) -> None:
    _feed(Publisher().handshake() + data, splits)


@BOUNDED
@given(st.lists(st.tuples(st.integers(2, 400), st.sampled_from([8, 9, 18, 20]), st.integers(0, 5),
                          st.integers(0, 0xFFFFFFFF), st.binary(max_size=700)), max_size=8),
       st.integers(1, 1000), st.lists(st.integers(0, 20000), max_size=8))
def test_chunk_reader_does_not_depend_on_splits(messages: list[tuple[int, int, int, int, bytes]], chunk_size: int,
                                                splits: list[int]) -> None:
    writer = ChunkWriter()
    writer.chunk_size = chunk_size
    wire = b"".join(writer.write(*m) for m in messages)
    whole = ChunkReader()
    whole.chunk_size = chunk_size
    expected = [(m.chunk_stream, m.type_id, m.stream_id, m.timestamp, m.payload) for m in whole.feed(wire)]
    assert expected == list(messages)
    pieces = ChunkReader()
    pieces.chunk_size = chunk_size
    got = []
    pos = 0
    for cut in sorted({min(len(wire), s) for s in splits}) + [len(wire)]:
        got += pieces.feed(wire[pos:cut])
        pos = cut
    assert [(m.chunk_stream, m.type_id, m.stream_id, m.timestamp, m.payload) for m in got] == expected


@BOUNDED
@given(st.binary(max_size=300))
def test_chunk_reader_random_input(data: bytes) -> None:
    reader = ChunkReader(max_message_bytes=MAX_MESSAGE)
    try:
        reader.feed(data)
    except ChunkError as exc:
        assert str(exc)


@BOUNDED
@given(st.binary(max_size=200))
def test_amf0_random_input(data: bytes) -> None:
    try:
        amf0.decode_all(data)
    except amf0.Amf0Error as exc:
        assert str(exc)


@BOUNDED
@given(st.one_of(st.binary(max_size=120),
                 st.sampled_from([video_body("config"), video_body("nalus", [IDR, SLICE]), audio_body("config")])
                 .flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n]))))
def test_flv_bodies_random_input(data: bytes) -> None:
    for parse in (parse_video, parse_audio, parse_aac_config, lambda d: split_nal_units(d, 4)):
        try:
            parse(data)
        except FlvError as exc:
            assert str(exc)


def test_the_valid_session_is_valid() -> None:
    """The corpus the mutations start from publishes cleanly (so mutations test more than the handshake)."""
    conn = ServerConnection()
    events = conn.receive(VALID, now=1.0)
    kinds = [type(e) for e in events]
    assert PublishRequested in kinds and ProtocolViolation not in kinds
    with pytest.raises(AssertionError):
        assert conn.closed


@BOUNDED
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=4))
def test_client_takes_any_server_answer(data: bytes, splits: list[int]) -> None:
    """Our push client (media.rtmp.client) after a proper S0 S1 S2: random answers are events, never errors."""
    client = PublishClient(PublishTarget.parse("rtmp://h/live/x"))
    wire = b"\x03" + bytes(2 * PACKET) + data
    pos = 0
    for cut in sorted({min(len(wire), s) for s in splits}) + [len(wire)]:
        for event in client.receive(wire[pos:cut]):
            assert isinstance(event, Published | Refused | ProtocolViolation)
        client.data_to_send()
        pos = cut
