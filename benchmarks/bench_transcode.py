"""Transcoding cost (media/transcode.py) against the ffmpeg command line, measured in the same run.

    .venv/bin/python benchmarks/bench_transcode.py [--seconds 5] [--preset veryfast]

A VP8 + Opus WebM source (1280x720, 30 fps, a keyframe every 2 s, 2.5 Mbit/s, a scrolling texture behind
the frame number so the encoders have a camera's amount of work; a 440 Hz stereo sine) is made with PyAV
first. Then:

1. Ours: the file's packets, packetized to RTP as a browser sends them, go into a stream's published
   tracks (native ingest and depacketizer) as fast as the transcoders take them (each next frame once
   its queue has room, so nothing is dropped and nothing is late), to H.264 (libx264, the preset, tune
   zerolatency, baseline, a keyframe every 2 s, 1.5 Mbit/s) and AAC-LC 128 kbit/s. Measured: the CPU
   time of the two worker threads (all codec work: codec threads are 1), per second of media; and the
   loop thread's CPU (RTP ingest, depacketizing, handing frames over) beside it. The ratio to ffmpeg
   counts both (ffmpeg's own CPU includes demuxing and muxing).
2. ffmpeg with the same settings on the same file, to MPEG-TS into /dev/null, its CPU time (user +
   system, os.wait4) per second of media: with -threads 1 (as ours) and with its default threads.
3. Ours with 1 and with 10 viewers of the H.264 output: that many output subscribers and that many
   TrackSinks on rtp_track() sending into a no-op. The transcoders' CPU should not change with the
   number of viewers (one encode, shared); the loop's grows with the fan-out.

Prints a table, then one JSON line {"bench": "transcode", ...}. About a minute with the defaults on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

try:
    from media import native
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from media import native
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support

from media.stream import Codec, PublishedTrack, Stream, TrackSink  # noqa: E402
from media.transcode import Target, Transcoders, default_bitrate  # noqa: E402
from tests.support import media_gen  # noqa: E402

WIDTH, HEIGHT, FPS = 1280, 720, 30
KEYFRAME_SECONDS = 2.0
AUDIO_BITRATE = 128_000


def make_source(folder: Path, seconds: float) -> Path:
    path = folder / "in.webm"
    media_gen.write_webm(path, seconds, WIDTH, HEIGHT, FPS, keyframe_interval=round(KEYFRAME_SECONDS * FPS),
                         video_bitrate=2_500_000)
    return path


async def until(condition: Callable[[], bool], interval: float) -> None:
    """Poll a counter of another thread (the queue depth, frames out): no event announces those."""
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(interval)


async def run_ours(path: Path, preset: str, viewers: int) -> dict[str, float]:
    samples = media_gen.read_packets(path)
    tracks = native.track_module()
    stream = Stream("bench")
    video = PublishedTrack(Codec("video", "VP8", 90000, 96), tracks.IngestTrack("VP8", 90000), tracks,
                           lambda ssrc: None)
    audio = PublishedTrack(Codec("audio", "opus", 48000, 111, {"channels": 2}), tracks.IngestTrack("opus", 48000),
                           tracks, lambda ssrc: None)
    stream.tracks += [video, audio]
    # Both tracks in media order, as they would arrive.
    schedule = sorted(
        [(s.pts / 90000, video, packets) for s, packets in zip(samples["VP8"], media_gen.packetize(
            "VP8", samples["VP8"]), strict=True)]
        + [(s.pts / 48000, audio, packets) for s, packets in zip(samples["opus"], media_gen.packetize(
            "opus", samples["opus"], payload_type=111, ssrc=0x0BADCAFE), strict=True)],
        key=lambda entry: entry[0])

    hub = Transcoders(tracks, native.rtp_module(), preset=preset,
                      keyframe_interval=KEYFRAME_SECONDS, late_after=1e9)
    loop = asyncio.get_running_loop()
    bitrate = default_bitrate(Target("video", "H264"), WIDTH, HEIGHT)
    h264 = hub.acquire(stream, Target("video", "H264", bitrate=bitrate), loop.time())
    aac = hub.acquire(stream, Target("audio", "AAC", bitrate=AUDIO_BITRATE), loop.time())
    aac.output.subscribe(lambda frame: None)
    sent = [0]

    def send(packet: bytes) -> bool:
        sent[0] += 1
        return True

    for k in range(viewers):
        h264.output.subscribe(lambda frame: None)
        sink = TrackSink(native.rtp_module(), 0x1000 + k, 102, 90000, True, send, lambda packet: True)
        h264.rtp_track().attach(sink, loop.time())

    queue_room = hub.settings.queue_frames - 1
    loop_cpu, wall = time.thread_time(), time.perf_counter()
    for _seconds, track, packets in schedule:
        transcoder = h264 if track is video else aac
        await until(lambda t=transcoder: t.queue_depth < queue_room, 0.001)  # type: ignore[misc]
        now = loop.time()
        for packet in packets:
            track.on_rtp(packet, now)
    video_frames = len(samples["VP8"])
    await until(lambda: h264.stats.frames_out >= video_frames and not aac.queue_depth, 0.002)
    await asyncio.sleep(0.05)  # the last batch reaches the subscribers
    loop_cpu, wall = time.thread_time() - loop_cpu, time.perf_counter() - wall
    assert h264.stats.dropped_input == h264.stats.dropped_late == aac.stats.dropped_input == 0
    result = {
        "video_cpu_s": h264.stats.encode_seconds,
        "audio_cpu_s": aac.stats.encode_seconds,
        "workers_cpu_s": h264.stats.encode_seconds + aac.stats.encode_seconds,
        "loop_cpu_s": loop_cpu,
        "wall_s": wall,
        "video_frames_out": h264.stats.frames_out,
        "audio_frames_out": aac.stats.frames_out,
        "rtp_packets_sent": sent[0],
    }
    hub.close()
    for transcoder in (h264, aac):
        transcoder.join(5)
    return result


def run_ffmpeg(path: Path, preset: str, threads: int | None) -> dict[str, float]:
    bitrate = default_bitrate(Target("video", "H264"), WIDTH, HEIGHT)
    gop = round(KEYFRAME_SECONDS * FPS)
    thread_args = ["-threads", str(threads)] if threads else []
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *thread_args, "-i", str(path),
               "-c:v", "libx264", "-preset", preset, "-tune", "zerolatency", "-profile:v", "baseline",
               "-g", str(gop), "-sc_threshold", "0", "-bf", "0", "-b:v", str(bitrate), "-maxrate", str(bitrate),
               "-bufsize", str(bitrate), *thread_args,
               "-c:a", "aac", "-b:a", str(AUDIO_BITRATE), "-f", "mpegts", "-y", "/dev/null"]
    wall = time.perf_counter()
    process = subprocess.Popen(command)
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - wall
    if process.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({process.returncode}): {' '.join(command)}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall, "command": " ".join(command)}  # type: ignore[dict-item]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the source (default 5)")
    parser.add_argument("--preset", default="veryfast", help="x264 preset, ours and ffmpeg's (default veryfast)")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed (scripts/setup.sh installs it)", file=sys.stderr)
        return 1
    seconds = args.seconds

    with tempfile.TemporaryDirectory(prefix="bench-transcode-") as folder:
        path = make_source(Path(folder), seconds)
        ours = {n: asyncio.run(run_ours(path, args.preset, n)) for n in (1, 10)}
        ffmpeg_1 = run_ffmpeg(path, args.preset, 1)
        ffmpeg_default = run_ffmpeg(path, args.preset, None)

    one = ours[1]
    rows = [
        ("ours, 1 viewer: transcoder workers", one["workers_cpu_s"], one["wall_s"]),
        ("  of which H.264 (decode VP8, encode)", one["video_cpu_s"], None),
        ("  of which AAC (decode Opus, encode)", one["audio_cpu_s"], None),
        ("  loop thread (ingest, depacketize, fan-out)", one["loop_cpu_s"], None),
        ("ours, workers + loop", one["workers_cpu_s"] + one["loop_cpu_s"], None),
        ("ffmpeg -threads 1", ffmpeg_1["cpu_s"], ffmpeg_1["wall_s"]),
        ("ffmpeg, default threads", ffmpeg_default["cpu_s"], ffmpeg_default["wall_s"]),
    ]
    width = max(len(name) for name, _cpu, _wall in rows) + 2
    print(f"VP8+Opus {WIDTH}x{HEIGHT} {FPS} fps, {seconds:g} s -> H.264 ({args.preset}, zerolatency, baseline) + AAC")
    print(f"{'case':<{width}}{'CPU s':>8}{'CPU s/media s':>15}{'wall s':>9}")
    for name, cpu, wall in rows:
        wall_text = f"{wall:>9.2f}" if wall is not None else f"{'':>9}"
        print(f"{name:<{width}}{cpu:>8.2f}{cpu / seconds:>15.3f}{wall_text}")
    total = one["workers_cpu_s"] + one["loop_cpu_s"]
    ratio = total / ffmpeg_1["cpu_s"]
    ratio_default = total / ffmpeg_default["cpu_s"]
    print(f"ours (workers + loop) / ffmpeg -threads 1: {ratio:.2f}x    "
          f"/ ffmpeg default threads: {ratio_default:.2f}x")
    print()
    print(f"{'viewers of the H.264 output':<{width}}{'workers CPU s':>14}{'loop CPU s':>12}{'RTP sent':>10}")
    for n, row in ours.items():
        print(f"{n:<{width}}{row['workers_cpu_s']:>14.2f}{row['loop_cpu_s']:>12.2f}{row['rtp_packets_sent']:>10}")
    flat = ours[10]["workers_cpu_s"] / ours[1]["workers_cpu_s"]
    print(f"workers CPU, 10 viewers / 1 viewer: {flat:.2f}x")
    print(json.dumps({
        "bench": "transcode",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "source": {"codec": "VP8+opus", "width": WIDTH, "height": HEIGHT, "fps": FPS, "seconds": seconds},
        "preset": args.preset,
        "ours": {str(n): {k: round(v, 4) for k, v in row.items()} for n, row in ours.items()},
        "ffmpeg_threads_1": {"cpu_s": round(ffmpeg_1["cpu_s"], 4), "wall_s": round(ffmpeg_1["wall_s"], 4)},
        "ffmpeg_default_threads": {"cpu_s": round(ffmpeg_default["cpu_s"], 4),
                                   "wall_s": round(ffmpeg_default["wall_s"], 4)},
        "ffmpeg_command": ffmpeg_1["command"],
        "ratio_ours_total_to_ffmpeg_threads_1": round(ratio, 3),
        "ratio_ours_total_to_ffmpeg_default": round(ratio_default, 3),
        "workers_cpu_10_viewers_over_1": round(flat, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
