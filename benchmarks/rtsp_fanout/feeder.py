"""The benchmark's input: the pre-encoded H.264 (and Opus) files of benchmarks/fanout/source.py, remuxed
once into MPEG-TS and packetized once by ffmpeg's RTP muxer (`-c copy -f rtp`, captured into a dump), then
sent to UDP ports on 127.0.0.1 by a small sender (`python -m benchmarks.rtsp_fanout.feeder DUMP VPORT
[APORT]`): each packet at the time of its RTP timestamp, looped with sequence numbers and timestamps
that keep going up. Never re-encoded, and the same packets at the same pace on every run. The receiving
GStreamer RTSP server passes those packets on as they are.
"""

from __future__ import annotations

import base64
import selectors
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import av

PACKET_SIZE = 1200  # RTP packet size limit of the feeder (bytes, as WebRTC senders use)
VIDEO_PT, AUDIO_PT = 96, 111
VIDEO_SSRC, AUDIO_SSRC = 0x11223344, 0x55667788


def sprop_parameter_sets(video: Path) -> str:
    """sprop-parameter-sets (RFC 6184) of an MP4's H.264 track, from its avcC record."""
    with av.open(str(video)) as container:
        avcc = bytes(container.streams.video[0].codec_context.extradata or b"")
    if len(avcc) < 7 or avcc[0] != 1:
        raise ValueError(f"{video}: no avcC record")
    sets: list[bytes] = []
    pos = 5
    for count_mask in (0x1F, 0xFF):  # SPS count (low 5 bits), then PPS count
        count = avcc[pos] & count_mask
        pos += 1
        for _ in range(count):
            length = int.from_bytes(avcc[pos:pos + 2], "big")
            sets.append(avcc[pos + 2:pos + 2 + length])
            pos += 2 + length
    return ",".join(base64.b64encode(s).decode() for s in sets)


def ensure_input(video: Path, audio: Path | None) -> Path:
    """The video (and audio) remuxed once into MPEG-TS next to them (no re-encoding): the TS demuxer gives
    H.264 in Annex B with SPS and PPS before every keyframe, so the RTP carries them in-band on every loop."""
    out = video.with_name(video.stem + ("-opus" if audio is not None else "") + ".ts")
    if out.is_file():
        return out
    partial = out.with_name(out.stem + ".partial.ts")
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(video)]
    if audio is not None:
        cmd += ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0"]
    cmd += ["-c", "copy", "-f", "mpegts", str(partial)]
    subprocess.run(cmd, check=True, timeout=120)
    partial.replace(out)
    return out


def ensure_rtp_dump(source: Path) -> Path:
    """The TS's packets as ffmpeg's RTP muxer makes them (-c copy), captured once on loopback into a dump
    next to it: the feeder then only sends bytes, paced by their RTP timestamps (no muxer at run time)."""
    out = source.with_name(source.stem + f"-{PACKET_SIZE}.rtpdump")
    if out.is_file():
        return out
    socks = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 64 << 20)
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    ports = [s.getsockname()[1] for s in socks]
    has_audio = "-opus" in source.stem
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(source),
           "-map", "0:v:0", "-c", "copy", "-payload_type", str(VIDEO_PT), "-ssrc", str(VIDEO_SSRC),
           "-f", "rtp", f"rtp://127.0.0.1:{ports[0]}?pkt_size={PACKET_SIZE}"]
    if has_audio:
        cmd += ["-map", "0:a:0", "-c", "copy", "-payload_type", str(AUDIO_PT), "-ssrc", str(AUDIO_SSRC),
                "-f", "rtp", f"rtp://127.0.0.1:{ports[1]}?pkt_size={PACKET_SIZE}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    packets: list[tuple[int, bytes]] = []
    sel = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        sel.register(sock, selectors.EVENT_READ, i)
    quiet_since = None
    while True:
        events = sel.select(timeout=0.2)
        for key, _ in events:
            data = key.fileobj.recv(65536)  # type: ignore[union-attr]
            if len(data) >= 12 and 200 <= data[1] <= 204:
                continue  # RTCP (ffmpeg sends it to the RTP port + 1 normally; kept out anyway)
            packets.append((key.data, data))
        if proc.poll() is not None:
            if events:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 0.5:
                break
    for sock in socks:
        sock.close()
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg made no RTP from {source} (exit {proc.returncode})")
    for stream in (0, 1):
        seqs = [int.from_bytes(d[2:4], "big") for k, d in packets if k == stream]
        if any((b - a) & 0xFFFF != 1 for a, b in zip(seqs, seqs[1:], strict=False)):
            raise RuntimeError("packets were lost while capturing the RTP dump")
    partial = out.with_name(out.name + ".partial")
    with partial.open("wb") as fh:
        for stream, data in packets:
            fh.write(struct.pack("!BH", stream, len(data)) + data)
    partial.replace(out)
    return out


def read_rtp_dump(path: Path) -> list[list[bytes]]:
    """[video packets, audio packets] in order."""
    raw = path.read_bytes()
    streams: list[list[bytes]] = [[], []]
    pos = 0
    while pos < len(raw):
        stream, length = struct.unpack_from("!BH", raw, pos)
        streams[stream].append(raw[pos + 3:pos + 3 + length])
        pos += 3 + length
    return streams


class Schedule:
    """One stream's packets looped for ever: send times from RTP timestamps, and sequence numbers and
    timestamps that keep going up across loops (as a camera's would)."""

    def __init__(self, packets: list[bytes], clock: int, frame: int):
        self.packets = packets
        self.clock = clock
        self.ts0 = int.from_bytes(packets[0][4:8], "big")
        self.seq0 = int.from_bytes(packets[0][2:4], "big")
        self.period_ts = (int.from_bytes(packets[-1][4:8], "big") - self.ts0) % (1 << 32) + frame
        self.index = 0
        self.loop = 0

    def next_time(self) -> float:
        ts = (int.from_bytes(self.packets[self.index][4:8], "big") - self.ts0) % (1 << 32)
        return (self.loop * self.period_ts + ts) / self.clock

    def take(self) -> bytes:
        data = bytearray(self.packets[self.index])
        seq = (int.from_bytes(data[2:4], "big") + self.loop * len(self.packets)) & 0xFFFF
        ts = (int.from_bytes(data[4:8], "big") + self.loop * self.period_ts) & 0xFFFFFFFF
        data[2:4] = seq.to_bytes(2, "big")
        data[4:8] = ts.to_bytes(4, "big")
        self.index += 1
        if self.index == len(self.packets):
            self.index = 0
            self.loop += 1
        return bytes(data)


def send_forever(dump: Path, video_port: int, audio_port: int | None) -> None:
    """Send the dump's packets to 127.0.0.1, each at its RTP timestamp's time, looped until killed."""
    video, audio = read_rtp_dump(dump)
    schedules = [(Schedule(video, 90000, 90000 // 30), video_port)]
    if audio and audio_port is not None:
        schedules.append((Schedule(audio, 48000, 960), audio_port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic() + 0.05
    while True:
        schedule, port = min(schedules, key=lambda s: s[0].next_time())
        delay = start + schedule.next_time() - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # real-time pacing is the point of this sleep
        try:
            sock.sendto(schedule.take(), ("127.0.0.1", port))
        except ConnectionRefusedError:  # nobody listens yet (an ICMP error from an earlier datagram)
            pass


def start_feeder(dump: Path, audio: bool, video_port: int, audio_port: int | None,
                 log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "benchmarks.rtsp_fanout.feeder", str(dump), str(video_port)]
    if audio and audio_port is not None:
        cmd.append(str(audio_port))
    with log_path.open("ab") as log:
        return subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[2], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log)


if __name__ == "__main__":
    send_forever(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
