"""What an RTMP publisher sends, as bytes, for tests of the server side without sockets (and for the
hostile-client tests, which send pieces of it over a socket): the handshake, connect, createStream,
publish, metadata, FLV audio and video bodies."""

from __future__ import annotations

import struct

from media.rtmp import amf0
from media.rtmp.chunk import ChunkWriter
from media.rtmp.handshake import PACKET, client_hello

COMMAND, DATA, AUDIO, VIDEO, SET_CHUNK_SIZE = 20, 18, 8, 9, 1

# A 64x64 H.264 baseline SPS/PPS pair and an IDR slice (not decodable, only parsed)
SPS = bytes.fromhex("6742c00ad9010404f6c04400000300040000030083c489a8")
PPS = bytes.fromhex("68ce3c80")
IDR = b"\x65\x88\x84" + bytes(40)
SLICE = b"\x41\x9a\x02" + bytes(20)
AAC_CONFIG = bytes.fromhex("1210")  # AAC-LC, 44100 Hz, stereo


def avc_config(sps: bytes = SPS, pps: bytes = PPS) -> bytes:
    return (bytes((1, sps[1], sps[2], sps[3], 0xFF, 0xE1)) + struct.pack(">H", len(sps)) + sps
            + b"\x01" + struct.pack(">H", len(pps)) + pps)


def video_body(kind: str, nals: list[bytes] | None = None, keyframe: bool = True, cts: int = 0) -> bytes:
    first = (0x10 if keyframe else 0x20) | 7
    if kind == "config":
        return bytes((first, 0)) + cts.to_bytes(3, "big", signed=True) + avc_config()
    payload = b"".join(struct.pack(">I", len(n)) + n for n in nals or [])
    return bytes((first, 1)) + cts.to_bytes(3, "big", signed=True) + payload


def audio_body(kind: str, data: bytes = b"\x21\x00\x03") -> bytes:
    return bytes((0xAF, 0 if kind == "config" else 1)) + (AAC_CONFIG if kind == "config" else data)


class Publisher:
    """Builds a publisher's byte stream, message by message."""

    def __init__(self, chunk_size: int = 128):
        self.writer = ChunkWriter()
        self.chunk_size = chunk_size

    def handshake(self) -> bytes:
        return client_hello() + bytes(PACKET)  # C0 C1, then C2 (not checked by the server)

    def command(self, name: str, txn: float, *args: object, stream_id: int = 0) -> bytes:
        return self.writer.write(3, COMMAND, stream_id, 0, amf0.encode(name, txn, *args))

    def set_chunk_size(self) -> bytes:
        out = self.writer.write(2, SET_CHUNK_SIZE, 0, 0, struct.pack(">I", self.chunk_size))
        self.writer.chunk_size = self.chunk_size
        return out

    def start(self, key: str = "cam1", app: str = "live") -> bytes:
        """Everything up to and including publish (on stream 1)."""
        return (self.handshake() + self.set_chunk_size()
                + self.command("connect", 1, {"app": app, "tcUrl": f"rtmp://127.0.0.1/{app}", "type": "nonprivate",
                                              "flashVer": "FMLE/3.0"})
                + self.command("releaseStream", 2, None, key) + self.command("FCPublish", 3, None, key)
                + self.command("createStream", 4, None)
                + self.command("publish", 5, None, key, "live", stream_id=1))

    def metadata(self) -> bytes:
        body = amf0.encode("@setDataFrame", "onMetaData", {"videocodecid": 7, "audiocodecid": 10, "width": 64})
        return self.writer.write(4, DATA, 1, 0, body)

    def video(self, timestamp: int, body: bytes) -> bytes:
        return self.writer.write(6, VIDEO, 1, timestamp, body)

    def audio(self, timestamp: int, body: bytes) -> bytes:
        return self.writer.write(4, AUDIO, 1, timestamp, body)

    def media(self, seconds: float = 1.0, fps: int = 30) -> bytes:
        """Configs, then `seconds` of video (a keyframe each second) and AAC frames (1024 samples)."""
        out = [self.metadata(), self.video(0, video_body("config")), self.audio(0, audio_body("config"))]
        frames = int(seconds * fps)
        for k in range(frames):
            nals = [IDR] if k % fps == 0 else [SLICE]
            out.append(self.video(k * 1000 // fps, video_body("nalus", nals, keyframe=k % fps == 0)))
        for k in range(int(seconds * 44100 / 1024)):
            out.append(self.audio(k * 1024 * 1000 // 44100, audio_body("frame")))
        return b"".join(out)

    def unpublish(self, key: str = "cam1") -> bytes:
        return self.command("FCUnpublish", 6, None, key) + self.command("deleteStream", 7, None, 1.0)


def real_h264(seconds: float, fps: int = 30) -> tuple[bytes, list[tuple[bool, list[bytes]]]]:
    """Decodable H.264 (320x240 numbered pictures, a keyframe a second): the video config body, and per
    frame (keyframe, NAL units without SPS/PPS), as an encoder sends them over RTMP."""
    from tests.support.media_gen import encode_video

    samples = encode_video("H264", 320, 240, frames=int(seconds * fps), fps=fps, keyframe_interval=fps)
    nals = [[n.lstrip(b"\x00") for n in s.data.split(b"\x00\x00\x01") if n.strip(b"\x00")] for s in samples]
    sps = next(n for n in nals[0] if n[0] & 0x1F == 7)
    pps = next(n for n in nals[0] if n[0] & 0x1F == 8)
    config = bytes((0x17, 0)) + bytes(3) + avc_config(sps, pps)
    frames = [(s.keyframe, [n for n in units if n[0] & 0x1F not in (7, 8)]) for s, units in zip(samples, nals,
                                                                                               strict=True)]
    return config, frames
