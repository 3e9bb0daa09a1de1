"""RTMP without sockets (media.rtmp): AMF0, the chunk stream, the handshake, a publisher's session
through the server's state machine, the FLV bodies of H.264 and AAC, and what hostile input does to
each (a reason, and for the connection a ProtocolViolation that closes it)."""

from __future__ import annotations

import struct

import pytest

from media.rtmp import amf0
from media.rtmp.chunk import MAX_CHUNK_STREAMS, ChunkError, ChunkReader, ChunkWriter
from media.rtmp.client import PublishClient, Published, PublishTarget, Refused, RtmpUrlError
from media.rtmp.connection import (
    Connected,
    Media,
    Metadata,
    ProtocolViolation,
    PublishRequested,
    ServerConnection,
    Unpublished,
)
from media.rtmp.flv import (
    FlvError,
    UnsupportedCodec,
    audio_config_body,
    parse_aac_config,
    parse_audio,
    parse_video,
    split_nal_units,
    video_config_body,
    video_frame_body,
)
from media.rtmp.handshake import PACKET, HandshakeError, ServerHandshake, client_hello
from tests.support.rtmp_client import IDR, PPS, SPS, Publisher, audio_body, video_body

# --- AMF0 -------------------------------------------------------------------------------------------


def test_amf0_round_trip() -> None:
    values = ["connect", 1.0, {"app": "live", "nested": {"a": [1.0, "x", None, True]}}, None, False, "é" * 3]
    assert amf0.decode_all(amf0.encode(*values)) == values
    long_text = "x" * 70000
    assert amf0.decode_all(amf0.encode(long_text)) == [long_text]


def test_amf0_ecma_array_and_date() -> None:
    data = bytes((amf0.ECMA_ARRAY,)) + struct.pack(">I", 1) + b"\x00\x01k" + amf0.encode(2.0) + b"\x00\x00\x09"
    data += bytes((amf0.DATE,)) + struct.pack(">d", 1000.0) + b"\x00\x00"
    assert amf0.decode_all(data) == [{"k": 2.0}, 1000.0]


@pytest.mark.parametrize("data, reason", [
    (b"\x00\x01\x02", "number at byte 1 is cut short"),
    (b"\x02\x00\x10abc", "string at byte 3 is cut short"),
    (b"\x03\x00\x01k", "cut short"),
    (b"\x0d", "type marker 13"),
    (b"\x0a\xff\xff\xff\xff", "strict array of 4294967295 items"),
    (b"\x0a\x00\x00\x00\x01" * 40, "nested deeper"),
])
def test_amf0_rejects_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(amf0.Amf0Error, match=reason):
        amf0.decode_all(data)


# --- chunk stream -----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 128, 4096, 70000])
@pytest.mark.parametrize("csid", [3, 63, 64, 319, 320, 65599])
def test_chunks_round_trip_in_any_split(chunk_size: int, csid: int) -> None:
    writer = ChunkWriter()
    writer.chunk_size = chunk_size
    payloads = [bytes(range(256)) * 3, b"", b"x", bytes(5000)]
    stamps = [0, 40, 0xFFFFFF, 0x12345678]
    wire = b"".join(writer.write(csid, 9, 1, ts, p) for ts, p in zip(stamps, payloads, strict=True))
    for step in (1, 7, len(wire)):
        reader = ChunkReader()
        reader.chunk_size = chunk_size
        got = []
        for start in range(0, len(wire), step):
            got += reader.feed(wire[start:start + step])
        assert [(m.type_id, m.stream_id, m.timestamp, m.payload) for m in got] == \
            [(9, 1, ts, p) for ts, p in zip(stamps, payloads, strict=True)]


def test_header_types_1_2_3_carry_deltas() -> None:
    # fmt 0 at 1000, fmt 1 delta 40 (new length/type), fmt 2 delta 20, fmt 3 repeats delta 20
    wire = bytes((0x04,)) + (1000).to_bytes(3, "big") + (2).to_bytes(3, "big") + b"\x08" + b"\x01\x00\x00\x00" + b"ab"
    wire += bytes((0x44,)) + (40).to_bytes(3, "big") + (1).to_bytes(3, "big") + b"\x09" + b"c"
    wire += bytes((0x84,)) + (20).to_bytes(3, "big") + b"d"
    wire += bytes((0xC4,)) + b"e"
    messages = ChunkReader().feed(wire)
    assert [(m.type_id, m.stream_id, m.timestamp, m.payload) for m in messages] == [
        (8, 1, 1000, b"ab"), (9, 1, 1040, b"c"), (9, 1, 1060, b"d"), (9, 1, 1080, b"e")]


def test_set_chunk_size_applies_to_the_next_chunks() -> None:
    writer = ChunkWriter()
    wire = writer.write(2, 1, 0, 0, struct.pack(">I", 1000))
    writer.chunk_size = 1000
    wire += writer.write(3, 20, 0, 0, bytes(900))
    reader = ChunkReader()
    messages = reader.feed(wire)
    assert reader.chunk_size == 1000
    assert [len(m.payload) for m in messages] == [900]


def test_abort_drops_the_message_in_progress() -> None:
    writer = ChunkWriter()
    first_chunk = writer.write(5, 9, 1, 0, bytes(300))[:12 + 128]  # header and the first 128 bytes
    reader = ChunkReader()
    assert reader.feed(first_chunk) == []
    assert reader.buffered == 128
    assert reader.feed(ChunkWriter().write(2, 2, 0, 0, struct.pack(">I", 5))) == []
    assert reader.buffered == 0
    assert reader.feed(writer.write(5, 9, 1, 0, b"new"))[0].payload == b"new"


@pytest.mark.parametrize("wire, reason", [
    (ChunkWriter().write(2, 1, 0, 0, struct.pack(">I", 0)), "invalid chunk size 0"),
    (ChunkWriter().write(2, 1, 0, 0, struct.pack(">I", 0x80000000)), "invalid chunk size"),
    (ChunkWriter().write(2, 1, 0, 0, b"\x00"), "protocol control message 1 of 1 bytes"),
    (bytes((0x44,)) + bytes(7), "never began"),
    (bytes((0x04,)) + bytes(3) + (9_000_000).to_bytes(3, "big") + b"\x09" + bytes(4), "message of 9000000 bytes"),
])
def test_chunk_reader_rejects_hostile_input(wire: bytes, reason: str) -> None:
    with pytest.raises(ChunkError, match=reason):
        ChunkReader().feed(wire)


def test_huge_chunk_size_is_bounded_by_message_size() -> None:
    """0x7FFFFFFF is a valid chunk size; it means one chunk per message, still at most max_message_bytes."""
    reader = ChunkReader(max_message_bytes=1000)
    reader.feed(ChunkWriter().write(2, 1, 0, 0, struct.pack(">I", 0x7FFFFFFF)))
    writer = ChunkWriter()
    writer.chunk_size = 0xFFFFFF
    assert reader.feed(writer.write(3, 9, 1, 0, bytes(1000)))[0].payload == bytes(1000)
    with pytest.raises(ChunkError, match="message of 1001 bytes"):
        reader.feed(writer.write(3, 9, 1, 0, bytes(1001)))


def test_too_many_chunk_streams_and_open_messages() -> None:
    reader = ChunkReader()
    writer = ChunkWriter()
    with pytest.raises(ChunkError, match="messages in progress"):
        reader.feed(b"".join(writer.write(10 + k, 9, 1, 0, bytes(200))[:140] for k in range(17)))
    reader = ChunkReader()
    with pytest.raises(ChunkError, match=f"more than {MAX_CHUNK_STREAMS} chunk streams"):
        reader.feed(b"".join(writer.write(10 + k, 9, 1, 0, b"x") for k in range(MAX_CHUNK_STREAMS + 1)))


# --- handshake --------------------------------------------------------------------------------------


def test_handshake_echoes_c1_and_passes_on_what_follows() -> None:
    hello = client_hello()
    handshake = ServerHandshake()
    out, rest = handshake.feed(hello[:700])
    assert out == b"" and not handshake.done
    out, rest = handshake.feed(hello[700:] + bytes(PACKET) + b"chunks")
    assert out[0] == 3 and len(out) == 1 + 2 * PACKET and out[1 + PACKET:] == hello[1:]
    assert handshake.done and rest == b"chunks"


@pytest.mark.parametrize("first, reason", [(6, "RTMPE"), (0x47, "not an RTMP client"), (0x16, "version 22")])
def test_handshake_rejects_other_versions(first: int, reason: str) -> None:
    with pytest.raises(HandshakeError, match=reason):
        ServerHandshake().feed(bytes((first,)) + bytes(PACKET))


# --- a publisher's session --------------------------------------------------------------------------


def _session(conn: ServerConnection, wire: bytes, step: int = 0) -> list[object]:
    events: list[object] = []
    step = step or len(wire)
    for start in range(0, len(wire), step):
        events += conn.receive(wire[start:start + step], now=1.0)
    return events


def _commands(data: bytes) -> list[list[object]]:
    """The AMF0 commands the server sent (after S0 S1 S2)."""
    reader = ChunkReader()
    out = []
    for message in reader.feed(data[1 + 2 * PACKET:]):
        if message.type_id == 20:
            out.append(amf0.decode_all(message.payload))
    return out


@pytest.mark.parametrize("step", [0, 1, 333])
def test_publish_session(step: int) -> None:
    client = Publisher(chunk_size=4096)
    conn = ServerConnection()
    events = _session(conn, client.start("cam1?token=abc"), step)
    assert isinstance(events[0], Connected) and events[0].app == "live"
    request = events[1]
    assert isinstance(request, PublishRequested)
    assert (request.name, request.query, request.app, request.stream_id) == ("cam1", "token=abc", "live", 1)
    # media before the decision is handed out (the caller keeps it until it decides); the decision is answered
    early = [e for e in _session(conn, client.video(0, video_body("config")), step) if isinstance(e, Media)]
    assert [(m.kind, m.timestamp) for m in early] == [("video", 0)]
    conn.accept_publish()
    sent = conn.data_to_send()
    codes = [c[3]["code"] for c in _commands(sent) if c[0] in ("onStatus", "_result") and len(c) > 3
             and isinstance(c[3], dict)]
    assert codes == ["NetConnection.Connect.Success", "NetStream.Publish.Start"]
    events = _session(conn, client.media(seconds=1.0), step)
    assert isinstance(events[0], Metadata) and events[0].values["videocodecid"] == 7
    media = [e for e in events if isinstance(e, Media)]
    assert sum(1 for m in media if m.kind == "video") == 31 and sum(1 for m in media if m.kind == "audio") == 44
    events = _session(conn, client.unpublish(), step)
    assert [type(e) for e in events] == [Unpublished]
    assert not conn.closed


def test_refused_publish_is_told_and_closes() -> None:
    conn = ServerConnection()
    _session(conn, Publisher().start())
    conn.data_to_send()
    conn.refuse_publish("Restricted access")
    (status,) = _commands(bytes(1 + 2 * PACKET) + conn.data_to_send())
    assert status[0] == "onStatus" and status[3] == {"level": "error", "code": "NetStream.Publish.Denied",
                                                     "description": "Restricted access"}
    assert conn.closed and conn.receive(b"more", now=2.0) == []


def test_ping_and_acknowledgements() -> None:
    client = Publisher()
    conn = ServerConnection()
    wire = client.start() + client.writer.write(2, 5, 0, 0, struct.pack(">I", 1000))
    wire += client.writer.write(2, 4, 0, 0, struct.pack(">HI", 6, 1234))
    _session(conn, wire)
    conn.accept_publish()
    conn.receive(client.media(0.5), now=2.0)
    reader = ChunkReader()
    messages = reader.feed(conn.data_to_send()[1 + 2 * PACKET:])
    assert any(m.type_id == 4 and m.payload == struct.pack(">HI", 7, 1234) for m in messages)
    assert any(m.type_id == 3 for m in messages)  # acknowledged the client's window


@pytest.mark.parametrize("wire, reason", [
    (b"\x06" + bytes(PACKET), "RTMPE"),
    (b"GET / HTTP/1.1\r\n\r\n", "not an RTMP client"),
    (Publisher().handshake() + ChunkWriter().write(3, 20, 0, 0, amf0.encode("publish", 1, None, "x")),
     "command 'publish' before connect"),
    (Publisher().handshake() + ChunkWriter().write(3, 77, 0, 0, b"zz"), "unknown RTMP message type 77"),
    (Publisher().handshake() + ChunkWriter().write(3, 20, 0, 0, b"\x02\x00"), "string length"),
    (Publisher().start() + Publisher().command("publish", 9, None, "again", stream_id=1), "second publish"),
    (Publisher().handshake() + Publisher().command("connect", 1, {"app": "a"}) + b"".join(
        Publisher().command("createStream", 2 + k, None) for k in range(9)), "more than 8 streams"),
])
def test_hostile_sessions_end_with_a_reason(wire: bytes, reason: str) -> None:
    conn = ServerConnection()
    events = _session(conn, wire)
    assert isinstance(events[-1], ProtocolViolation) and reason in events[-1].reason
    assert conn.closed and conn.receive(b"\x03", now=2.0) == []


def test_ignored_types_and_play_do_not_close() -> None:
    client = Publisher()
    conn = ServerConnection()
    wire = client.handshake() + client.command("connect", 1, {"app": "live"})
    wire += client.writer.write(3, 22, 0, 0, b"aggregate") + client.writer.write(3, 17, 0, 0, b"\x00amf3")
    wire += client.command("createStream", 2, None) + client.command("play", 3, None, "x", stream_id=1)
    events = _session(conn, wire)
    assert [type(e) for e in events] == [Connected] and not conn.closed
    assert any(c[0] == "onStatus" and c[3]["code"] == "NetStream.Play.Failed" for c in _commands(conn.data_to_send()))


# --- FLV bodies -------------------------------------------------------------------------------------


def test_video_bodies() -> None:
    config = parse_video(video_body("config"))
    assert config.kind == "config" and config.config is not None
    assert config.config.sps == [SPS] and config.config.pps == [PPS] and config.config.length_size == 4
    assert config.config.profile_level_id == "42c00a"
    frame = parse_video(video_body("nalus", [SPS, PPS, IDR], cts=-40))
    assert frame.keyframe and frame.composition_time == -40
    assert split_nal_units(frame.data, 4) == [SPS, PPS, IDR]


@pytest.mark.parametrize("body, error, reason", [
    (b"", FlvError, "empty"),
    (b"\x12\x00", UnsupportedCodec, "Sorenson H.263"),
    (b"\x9c\x00", UnsupportedCodec, "enhanced RTMP"),
    (b"\x17\x00\x00\x00\x00\x02", FlvError, "configuration record"),
    (b"\x17\x05\x00\x00\x00", FlvError, "AVC packet type 5"),
])
def test_bad_video_bodies(body: bytes, error: type[Exception], reason: str) -> None:
    with pytest.raises(error, match=reason):
        parse_video(body)


def test_nal_units_cut_short() -> None:
    with pytest.raises(FlvError, match="NAL unit of 100 bytes"):
        split_nal_units(struct.pack(">I", 100) + b"abc", 4)
    with pytest.raises(FlvError, match="length cut short"):
        split_nal_units(b"\x00\x00", 4)


def test_audio_bodies() -> None:
    config = parse_audio(audio_body("config"))
    assert (config.kind, config.sample_rate, config.channels) == ("config", 44100, 2)
    assert parse_audio(audio_body("frame", b"abc")).data == b"abc"
    assert parse_aac_config(bytes.fromhex("1190")).sample_rate == 48000
    with pytest.raises(UnsupportedCodec, match="MP3"):
        parse_audio(b"\x2f\x00")
    with pytest.raises(FlvError, match="index 13 is reserved"):
        parse_aac_config(bytes((0x16, 0x90)))


# --- our client against our server, in memory -------------------------------------------------------


def _pump(client: PublishClient, server: ServerConnection, accept: bool | str = True) -> list[object]:
    """Bytes both ways until neither has anything to say; the server's publish decided as `accept`."""
    client_events: list[object] = []
    for _ in range(20):
        to_server = client.data_to_send()
        for event in server.receive(to_server, now=1.0) if to_server else []:
            if isinstance(event, PublishRequested):
                if accept is True:
                    server.accept_publish()
                else:
                    server.refuse_publish(str(accept))
        to_client = server.data_to_send()
        if to_client:
            client_events += client.receive(to_client)
        if not to_server and not to_client:
            break
    return client_events


def test_client_publishes_to_the_server_in_memory() -> None:
    target = PublishTarget.parse("rtmp://127.0.0.1:19350/live/sub/cam1?key=s3cret")
    assert (target.app, target.name, target.tc_url) == ("live/sub", "cam1?key=s3cret", "rtmp://127.0.0.1:19350/live/sub")
    client = PublishClient(target)
    server = ServerConnection()
    events = _pump(client, server)
    assert events == [Published(1)] and client.published
    assert server.publishing is not None and (server.publishing.name, server.publishing.query) == ("cam1", "key=s3cret")
    client.send_media("video", 0, video_config_body(SPS, PPS))
    client.send_media("video", 40, video_frame_body([SPS, PPS, IDR], keyframe=True))
    client.send_media("audio", 0x1234567, audio_config_body(bytes.fromhex("1210")))
    media = [e for e in server.receive(client.data_to_send(), now=2.0) if isinstance(e, Media)]
    assert [(m.kind, m.timestamp) for m in media] == [("video", 0), ("video", 40), ("audio", 0x1234567)]
    config = parse_video(media[0].body).config
    assert config is not None and (config.sps, config.pps) == ([SPS], [PPS])
    assert split_nal_units(parse_video(media[1].body).data, 4) == [SPS, PPS, IDR]
    assert parse_audio(media[2].body).sample_rate == 44100
    client.unpublish()
    assert [type(e) for e in server.receive(client.data_to_send(), now=3.0)] == [Unpublished]


def test_client_told_of_a_refusal() -> None:
    client = PublishClient(PublishTarget.parse("rtmp://h/live/x"))
    events = _pump(client, ServerConnection(), accept="Restricted access")
    assert events == [Refused("NetStream.Publish.Denied: Restricted access")] and not client.published


@pytest.mark.parametrize("url, reason", [
    ("rtmps://h/live/x", "only rtmp://"), ("rtmp:///live/x", "no host"), ("rtmp://h/live", "application and a stream"),
    ("rtmp://h:99999/live/x", "port"),
])
def test_push_urls(url: str, reason: str) -> None:
    with pytest.raises(RtmpUrlError, match=reason):
        PublishTarget.parse(url)


def test_client_rejects_a_server_that_is_not_rtmp() -> None:
    client = PublishClient(PublishTarget.parse("rtmp://h/live/x"))
    (event,) = client.receive(b"HTTP/1.1 400 Bad Request\r\n")
    assert isinstance(event, ProtocolViolation) and "version 72" in event.reason


def test_bytes_of_messages_in_progress_are_bounded() -> None:
    reader = ChunkReader(max_message_bytes=1000)
    reader.chunk_size = 500
    writer = ChunkWriter()
    writer.chunk_size = 500
    first_chunks = [writer.write(10 + k, 9, 1, 0, bytes(900))[:12 + 500] for k in range(5)]
    assert reader.feed(b"".join(first_chunks[:4])) == [] and reader.buffered == 2000
    with pytest.raises(ChunkError, match="more than 2000 bytes of messages in progress"):
        reader.feed(first_chunks[4])
