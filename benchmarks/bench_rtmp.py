"""RTMP ingest: server CPU seconds per ingested media second, against `ffmpeg -c copy` receiving the same
RTMP publish and remuxing it (its own RTMP server in listen mode, to FLV discarded), in the same run.

    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/bench_rtmp.py [--seconds 20]'

Media: a clip made once by ffmpeg (lavfi testsrc + sine): H.264 (libx264, keyframe every 2 s) + AAC
(44.1 kHz stereo, 128 kbit/s), WIDTHxHEIGHT at 30 fps. Each side is fed by the same publisher,
`ffmpeg -readrate R -i clip -c copy -f flv rtmp://127.0.0.1:PORT/live/bench` (R times real time).

- Ours: the real server (`streaming serve`, native core); its process CPU (utime + stime from /proc)
  from the publisher's start to the end of its stream, less the server's idle CPU over the same wall
  time. Two rows: the whole stream (H.264 packetized into RTP and AAC decoded and encoded to Opus by
  the transcoder, what every stream with AAC costs) and video only (the clip without audio: the RTMP,
  FLV and RTP work alone), and a third: x264 with B-frames (OBS's default), whose video the server
  re-encodes without them (published at 1x, real time, so the encoder keeps up). No viewer: the cost of
  ingest.
- FFmpeg: `ffmpeg -listen 1 -i rtmp://… -c copy -f flv -y /dev/null`, its CPU from the child's rusage
  (start-up included; a line shows it less the CPU of `-t 0` of the file, its start-up), less the CPU of
  the same publisher writing to /dev/null alone.

Prints a table and then one JSON line starting with {"bench": "rtmp", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

try:
    from tests.support.server import ServerProcess
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.server import ServerProcess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def make_clip(path: Path, seconds: float, size: str, audio: bool, b_frames: bool = False) -> None:
    args = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=30"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    profile = ["-bf", "3"] if b_frames else ["-profile:v", "baseline"]
    args += ["-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", *profile, "-g", "60",
             "-pix_fmt", "yuv420p", "-b:v", "2500k"]
    args += ["-c:a", "aac", "-b:a", "128k", "-ac", "2"] if audio else ["-an"]
    subprocess.run([*args, str(path)], check=True, timeout=600)


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def publisher(clip: Path, url: str, rate: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ffmpeg", "-v", "error", "-readrate", str(rate), "-i", str(clip), "-c", "copy",
                             "-f", "flv", url], stdin=subprocess.DEVNULL)


def rtmp_health(server: ServerProcess) -> dict[str, int]:
    with urllib.request.urlopen(server.rest_url + "/health", timeout=10) as answer:
        return dict(json.loads(answer.read())["rtmp"])


def ours(server: ServerProcess, clip: Path, rate: float, idle_rate: float) -> dict[str, float]:
    assert server.proc is not None
    pid = server.proc.pid
    counted = rtmp_health(server)
    before, started = process_cpu(pid), time.monotonic()
    pub = publisher(clip, server.urls["rtmp"] + "/live/bench", rate)
    pub.wait(timeout=600)
    while rtmp_health(server)["connections"]:  # the stream ends when the server has read it all
        time.sleep(0.05)
    wall = time.monotonic() - started
    cpu = process_cpu(pid) - before
    after = rtmp_health(server)
    return {"cpu": cpu, "net": max(0.0, cpu - idle_rate * wall), "wall": wall,
            "video_frames": float(after["videoFrames"] - counted["videoFrames"]),
            "audio_frames": float(after["audioFrames"] - counted["audioFrames"]),
            "reencoded": float(after["reencodedFrames"] - counted["reencodedFrames"])}


def ffmpeg_remux(clip: Path, rate: float) -> dict[str, float]:
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/bench"
    start = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    listener = subprocess.Popen(["ffmpeg", "-v", "fatal", "-listen", "1", "-i", url, "-c", "copy", "-f", "flv",
                                 "-y", "/dev/null"], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait for the listener, without connecting to it
        if f":{port:04X} 00000000:0000 0A" in Path("/proc/net/tcp").read_text():
            break
        time.sleep(0.02)
    pub = publisher(clip, url, rate)
    pub.wait(timeout=600)
    after_pub = resource.getrusage(resource.RUSAGE_CHILDREN)
    listener.wait(timeout=60)
    wall = time.monotonic() - began
    end = resource.getrusage(resource.RUSAGE_CHILDREN)
    pub_cpu = (after_pub.ru_utime + after_pub.ru_stime) - (start.ru_utime + start.ru_stime)
    total = (end.ru_utime + end.ru_stime) - (start.ru_utime + start.ru_stime)
    # the publisher ended first: its CPU is in after_pub; the listener's is the rest (its share before the
    # publisher ended is not separable this way, so the publisher is measured alone below and taken off)
    return {"cpu": total, "pub_and_listener": total, "pub_until_end": pub_cpu, "wall": wall}


def publisher_alone(clip: Path, rate: float) -> float:
    """CPU of the publisher itself against a sink that reads and discards (ffmpeg as RTMP server, -f null)."""
    start = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["ffmpeg", "-v", "error", "-readrate", str(rate), "-i", str(clip), "-c", "copy", "-f", "flv",
                    "-y", "/dev/null"], check=True, timeout=600)
    end = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (end.ru_utime + end.ru_stime) - (start.ru_utime + start.ru_stime)


def startup_cost(clip: Path) -> float:
    start = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-t", "0", "-c", "copy", "-f", "flv", "-y",
                    "/dev/null"], check=True, timeout=60)
    end = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (end.ru_utime + end.ru_stime) - (start.ru_utime + start.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="media seconds per run")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--readrate", type=float, default=4.0, help="publisher speed, times real time")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rtmp-"))
    clip, video_only, b_frames = work / "clip.mp4", work / "video.mp4", work / "bframes.mp4"
    make_clip(clip, args.seconds, args.size, audio=True)
    make_clip(video_only, args.seconds, args.size, audio=False)
    make_clip(b_frames, args.seconds, args.size, audio=True, b_frames=True)

    server = ServerProcess(work / "data", ["--log-level", "warning"]).start()
    try:
        assert server.proc is not None
        time.sleep(1.0)
        idle_before, idle_start = process_cpu(server.proc.pid), time.monotonic()
        time.sleep(3.0)
        idle_rate = (process_cpu(server.proc.pid) - idle_before) / (time.monotonic() - idle_start)
        full = ours(server, clip, args.readrate, idle_rate)
        video = ours(server, video_only, args.readrate, idle_rate)
        reencoded = ours(server, b_frames, 1.0, idle_rate)  # real time: the encoder keeps up
    finally:
        server.stop()
    pub = publisher_alone(clip, args.readrate)
    remux = ffmpeg_remux(clip, args.readrate)
    remux_listener = max(0.0, remux["cpu"] - pub)
    startup = startup_cost(clip)

    seconds = args.seconds
    rows = [
        ("ours: H.264 + AAC (AAC -> Opus)", full["net"], full["wall"]),
        ("ours: H.264 only", video["net"], video["wall"]),
        ("ours: H.264 B-frames (re-encoded) + AAC", reencoded["net"], reencoded["wall"]),
        ("ffmpeg -listen -c copy -f flv", remux_listener, remux["wall"]),
        ("  ffmpeg less its start-up (-t 0)", max(0.0, remux_listener - startup), 0.0),
    ]
    print(f"RTMP ingest, {args.size} 30 fps H.264 2.5 Mbit/s + AAC 128 kbit/s, {seconds:g} media s, "
          f"publisher at {args.readrate:g}x, {platform.processor() or platform.machine()}")
    print(f"server idle CPU: {idle_rate * 1000:.1f} ms/s (taken off ours); publisher alone: {pub:.3f} s "
          "(taken off ffmpeg's)")
    print(f"{'':42} {'CPU s':>8} {'ms CPU / media s':>17} {'vs ffmpeg':>10} {'wall s':>7}")
    for label, cpu, wall in rows:
        ratio = f"{cpu / remux_listener:.2f}x" if remux_listener and not label.startswith("  ") else ""
        print(f"{label:42} {cpu:8.3f} {cpu / seconds * 1000:17.2f} {ratio:>10} {wall:7.1f}")
    print(f"ingested: {full['video_frames']:.0f} video frames (of {seconds * 30:.0f}), "
          f"{full['audio_frames']:.0f} AAC frames (of {seconds * 44100 / 1024:.0f}); B-frames clip (at 1x): "
          f"{reencoded['reencoded']:.0f} of {reencoded['video_frames']:.0f} frames re-encoded")
    print(json.dumps({
        "bench": "rtmp", "size": args.size, "media_seconds": seconds, "readrate": args.readrate,
        "ours_ms_per_media_s": round(full["net"] / seconds * 1000, 2),
        "ours_video_only_ms_per_media_s": round(video["net"] / seconds * 1000, 2),
        "ours_b_frames_reencoded_ms_per_media_s": round(reencoded["net"] / seconds * 1000, 2),
        "b_frames_reencoded_frames": reencoded["reencoded"],
        "ffmpeg_copy_ms_per_media_s": round(remux_listener / seconds * 1000, 2),
        "ratio_vs_ffmpeg": round(full["net"] / remux_listener, 2) if remux_listener else None,
        "ratio_video_only_vs_ffmpeg": round(video["net"] / remux_listener, 2) if remux_listener else None,
        "ffmpeg_startup_s": round(startup, 3),
        "ratio_video_only_vs_ffmpeg_less_startup":
            round(video["net"] / (remux_listener - startup), 2) if remux_listener > startup else None,
        "idle_ms_per_s": round(idle_rate * 1000, 2),
        "video_frames": full["video_frames"], "aac_frames": full["audio_frames"],
    }))


if __name__ == "__main__":
    main()
