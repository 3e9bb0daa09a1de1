"""The media of RTMP messages: FLV audio and video tag bodies (FLV spec 10.1, annex E), the H.264
decoder configuration (ISO 14496-15 5.2.4.1) and the AAC AudioSpecificConfig (ISO 14496-3 1.6.2.1).

Video: H.264 only (codec id 7); its NAL units come length-prefixed (AVCC) and leave as a list of NAL
units. Audio: AAC only (sound format 10). Other codecs raise UnsupportedCodec, malformed bodies
FlvError. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

AVC = 7
AAC = 10
VIDEO_CODECS = {2: "Sorenson H.263", 3: "Screen video", 4: "VP6", 5: "VP6 with alpha", 6: "Screen video 2",
                7: "H.264", 12: "HEVC"}
AUDIO_FORMATS = {0: "PCM", 1: "ADPCM", 2: "MP3", 3: "PCM LE", 4: "Nellymoser 16k", 5: "Nellymoser 8k",
                 6: "Nellymoser", 7: "G.711 A-law", 8: "G.711 mu-law", 10: "AAC", 11: "Speex", 14: "MP3 8k"}
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
MAX_NAL_UNITS = 1024


class FlvError(ValueError):
    pass


class UnsupportedCodec(FlvError):
    pass


@dataclass(slots=True)
class AvcConfig:
    sps: list[bytes]
    pps: list[bytes]
    length_size: int  # bytes of each NAL unit's length prefix

    @property
    def profile_level_id(self) -> str:
        return self.sps[0][1:4].hex() if self.sps and len(self.sps[0]) >= 4 else "42e01f"


@dataclass(slots=True)
class VideoTag:
    keyframe: bool
    kind: str  # "config" (AvcConfig), "nalus" (a frame), "end" (end of sequence)
    composition_time: int = 0  # ms, pts - dts
    config: AvcConfig | None = None
    data: bytes = b""  # "nalus": the AVCC body


@dataclass(slots=True)
class AudioTag:
    kind: str  # "config" (AudioSpecificConfig) or "frame" (raw AAC)
    data: bytes
    sample_rate: int = 0  # from the config
    channels: int = 0


@dataclass(slots=True)
class AacConfig:
    object_type: int
    sample_rate: int
    channels: int
    raw: bytes = field(default=b"")


def parse_video(body: bytes) -> VideoTag:
    if len(body) < 1:
        raise FlvError("empty video message")
    if body[0] & 0x80:
        raise UnsupportedCodec("enhanced RTMP video (HEVC, AV1, VP9 FourCC) is not supported: send H.264")
    frame_type, codec = body[0] >> 4, body[0] & 0x0F
    if codec != AVC:
        raise UnsupportedCodec(f"video codec {VIDEO_CODECS.get(codec, codec)} is not supported: send H.264")
    if len(body) < 5:
        raise FlvError(f"H.264 video message of {len(body)} bytes (at least 5)")
    packet_type = body[1]
    cts = int.from_bytes(body[2:5], "big", signed=True)
    keyframe = frame_type == 1
    if packet_type == 0:
        return VideoTag(keyframe, "config", cts, config=parse_avc_config(body[5:]))
    if packet_type == 1:
        return VideoTag(keyframe, "nalus", cts, data=body[5:])
    if packet_type == 2:
        return VideoTag(keyframe, "end", cts)
    raise FlvError(f"AVC packet type {packet_type} (0, 1 or 2 expected)")


def parse_avc_config(data: bytes) -> AvcConfig:
    """AVCDecoderConfigurationRecord: SPS and PPS, and the NAL unit length size."""
    if len(data) < 7 or data[0] != 1:
        raise FlvError("bad AVC decoder configuration record")
    length_size = (data[4] & 0x03) + 1
    if length_size == 3:
        raise FlvError("AVC NAL unit length size of 3 bytes is not allowed")
    pos = 5
    lists: list[list[bytes]] = []
    for count_mask in (0x1F, 0xFF):
        if pos >= len(data):
            raise FlvError("AVC decoder configuration record cut short")
        count = data[pos] & count_mask
        pos += 1
        units = []
        for _ in range(count):
            if pos + 2 > len(data):
                raise FlvError("AVC decoder configuration record cut short")
            size = int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
            if size == 0 or pos + size > len(data):
                raise FlvError("AVC decoder configuration record cut short")
            units.append(bytes(data[pos:pos + size]))
            pos += size
        lists.append(units)
    if not lists[0] or not lists[1]:
        raise FlvError("AVC decoder configuration record without SPS or PPS")
    return AvcConfig(lists[0], lists[1], length_size)


def split_nal_units(data: bytes, length_size: int) -> list[bytes]:
    """AVCC (length-prefixed) NAL units to a list; empty units are skipped."""
    out = []
    pos = 0
    end = len(data)
    while pos < end:
        if pos + length_size > end:
            raise FlvError(f"NAL unit length cut short at byte {pos}")
        size = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if size > end - pos:
            raise FlvError(f"NAL unit of {size} bytes at byte {pos}, {end - pos} left")
        if size:
            out.append(bytes(data[pos:pos + size]))
            if len(out) > MAX_NAL_UNITS:
                raise FlvError(f"more than {MAX_NAL_UNITS} NAL units in one frame")
        pos += size
    return out


def parse_audio(body: bytes) -> AudioTag:
    if len(body) < 1:
        raise FlvError("empty audio message")
    sound_format = body[0] >> 4
    if sound_format != AAC:
        raise UnsupportedCodec(f"audio format {AUDIO_FORMATS.get(sound_format, sound_format)} is not "
                               "supported: send AAC")
    if len(body) < 2:
        raise FlvError("AAC audio message without packet type")
    if body[1] == 0:
        config = parse_aac_config(body[2:])
        return AudioTag("config", bytes(body[2:]), config.sample_rate, config.channels)
    if body[1] == 1:
        return AudioTag("frame", bytes(body[2:]))
    raise FlvError(f"AAC packet type {body[1]} (0 or 1 expected)")


def parse_aac_config(data: bytes) -> AacConfig:
    """The first fields of an AudioSpecificConfig: object type, sample rate, channel configuration."""
    bits = int.from_bytes(bytes(data[:8]).ljust(8, b"\x00"), "big")
    pos = 64  # bits left to read, from the top

    def take(count: int) -> int:
        nonlocal pos
        if 64 - pos + count > len(data) * 8:
            raise FlvError(f"AAC AudioSpecificConfig of {len(data)} bytes is cut short")
        pos -= count
        return (bits >> pos) & ((1 << count) - 1)

    object_type = take(5)
    if object_type == 31:
        object_type = 32 + take(6)
    index = take(4)
    if index == 15:
        rate = take(24)
    elif index < len(AAC_RATES):
        rate = AAC_RATES[index]
    else:
        raise FlvError(f"AAC sampling frequency index {index} is reserved")
    channels = take(4)
    if not rate:
        raise FlvError("AAC sample rate 0")
    return AacConfig(object_type, rate, channels, bytes(data))


# -- writing (a publisher's side: pushes) ------------------------------------------------------------


def avc_config_record(sps: bytes, pps: bytes) -> bytes:
    """AVCDecoderConfigurationRecord of one SPS and one PPS, 4-byte NAL unit lengths."""
    if len(sps) < 4:
        raise FlvError(f"SPS of {len(sps)} bytes")
    return (bytes((1, sps[1], sps[2], sps[3], 0xFF, 0xE1)) + len(sps).to_bytes(2, "big") + sps
            + b"\x01" + len(pps).to_bytes(2, "big") + pps)


def video_config_body(sps: bytes, pps: bytes) -> bytes:
    return b"\x17\x00\x00\x00\x00" + avc_config_record(sps, pps)


def video_frame_body(nal_units: list[bytes], keyframe: bool, composition_time: int = 0) -> bytes:
    head = bytes((0x17 if keyframe else 0x27, 1)) + composition_time.to_bytes(3, "big", signed=True)
    return head + b"".join(len(n).to_bytes(4, "big") + n for n in nal_units)


def audio_config_body(audio_specific_config: bytes) -> bytes:
    return b"\xaf\x00" + audio_specific_config


def audio_frame_body(raw_aac: bytes) -> bytes:
    return b"\xaf\x01" + raw_aac
