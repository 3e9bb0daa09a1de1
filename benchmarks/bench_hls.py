"""HLS segmenter (media/hls.py): how soon a finished segment or part gets listed, and what our remux to HLS
costs in CPU against FFmpeg's own HLS muxer on the same media, measured in the same run.

    .venv/bin/python benchmarks/bench_hls.py [--seconds 10] [--remux-seconds 30] [--size 640x360] [--quick]

Media: H.264 (libx264 baseline, 30 fps, a keyframe every second) and AAC-LC (48 kHz stereo), encoded once by
PyAV at the start (tests/support/hls_media.py).

1. Ready delay: the frames are pushed at real-time pace (`--seconds` of media, once in TS mode with 2 s
   segments, once in LL-HLS mode with 2 s segments of 0.5 s parts). For each segment (and part) the delay
   runs from the loop time its last frame was pushed to the loop time it was listed in the playlist. It has
   two components, shown apart: waiting for the next frame (a unit is known to be complete only when the
   frame after it arrives, so about one frame interval) and the worker (mux, write, hand back to the loop).
2. CPU per media second of the remux to HLS: ours pushes all the encoded frames as fast as they are
   accepted (the worker queue holds them all) and waits for the last segment to be listed; measured with
   time.process_time (every thread of this process: the loop thread cutting and queueing, the worker
   muxing and writing). FFmpeg: `ffmpeg -i input.ts -c copy -f hls -hls_time 2 ...` on an MPEG-TS file of
   the same frames, measured by the child's resource usage (which includes its start-up and reading the
   input, shown on its own line). The LL row compares our fMP4 parts with FFmpeg's fMP4 segments
   (`-hls_segment_type fmp4 -bsf:a aac_adtstoasc`; FFmpeg makes no parts). Best of `ROUNDS` for each.

Prints a table and then one JSON line starting with {"bench": "hls", ...}. Takes about 2 x --seconds plus
15 s; --quick is for smoke tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from media.hls import HlsOutput, HlsSettings, ReadyDelay
    from tests.support.hls_media import encode_audio, encode_video, feed, interleave, write_ts
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from media.hls import HlsOutput, HlsSettings, ReadyDelay
    from tests.support.hls_media import encode_audio, encode_video, feed, interleave, write_ts

from media.encoded import EncodedFrame  # noqa: E402

ROUNDS = 3
SEGMENT = 2.0
PART = 0.5
FPS = 30


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def finished(out: HlsOutput, timeout: float = 60.0) -> None:
    """Until the playlist has EXT-X-ENDLIST (after end())."""
    deadline = time.monotonic() + timeout
    while "#EXT-X-ENDLIST" not in (out.playlist_now() or ""):
        if time.monotonic() > deadline:
            raise TimeoutError("the output did not finish")
        try:
            await out.playlist(out.segments, timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            pass


async def ready_delays(frames: list[EncodedFrame], low_latency: bool) -> list[ReadyDelay]:
    settings = HlsSettings(low_latency=low_latency, segment_duration=SEGMENT, part_duration=PART)
    with tempfile.TemporaryDirectory() as folder:
        out = HlsOutput("bench", Path(folder) / "bench", settings)
        try:
            await feed(out.push, frames, speed=1.0)
            await asyncio.sleep(0.3)  # the last cut's unit, listed
            delays = list(out.ready_delays)  # before end(): the unit it flushes has no next frame to wait for
            assert out.dropped == 0 and out.errors == 0, (out.dropped, out.errors)
        finally:
            out.close()
    return delays


def delay_rows(delays: list[ReadyDelay], label: str) -> dict[str, dict[str, float]]:
    rows = {}
    for kind in ("segment", "part"):
        chosen = [d for d in delays if d.kind == kind]
        if not chosen:
            continue
        total = [d.seconds * 1000 for d in chosen]
        waiting = [(d.cut - d.pushed) * 1000 for d in chosen]
        worker = [(d.listed - d.cut) * 1000 for d in chosen]
        rows[f"{label} {kind}s"] = {
            "count": len(chosen),
            "p50_ms": round(percentile(total, 0.5), 1),
            "p95_ms": round(percentile(total, 0.95), 1),
            "max_ms": round(max(total), 1),
            "next_frame_p50_ms": round(percentile(waiting, 0.5), 1),
            "worker_p50_ms": round(percentile(worker, 0.5), 1),
            "worker_p95_ms": round(percentile(worker, 0.95), 1),
            "worker_max_ms": round(max(worker), 1),
        }
    return rows


async def our_remux(frames: list[EncodedFrame], low_latency: bool) -> tuple[float, float]:
    """CPU and wall seconds of our remux of `frames` to HLS."""
    settings = HlsSettings(low_latency=low_latency, segment_duration=SEGMENT, part_duration=PART,
                           queue_frames=len(frames) + 1)
    with tempfile.TemporaryDirectory() as folder:
        out = HlsOutput("bench", Path(folder) / "bench", settings)
        try:
            cpu, wall = time.process_time(), time.perf_counter()
            for frame in frames:
                out.push(frame)
            out.end()
            await finished(out)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            assert out.dropped == 0 and out.errors == 0, (out.dropped, out.errors)
        finally:
            out.close()
    return cpu, wall


def ffmpeg_remux(source: Path, low_latency: bool, limit: float | None = None) -> tuple[float, float]:
    """CPU (user + system of the child) and wall seconds of `ffmpeg -c copy -f hls` on `source`."""
    with tempfile.TemporaryDirectory() as folder:
        command = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
        if limit is not None:
            command += ["-t", str(limit)]
        command += ["-i", str(source), "-c", "copy", "-f", "hls", "-hls_time", str(SEGMENT), "-hls_list_size", "6",
                    "-hls_flags", "delete_segments+independent_segments+program_date_time"]
        if low_latency:
            command += ["-hls_segment_type", "fmp4", "-bsf:a", "aac_adtstoasc"]  # ADTS in, raw AAC in MP4
        command.append(str(Path(folder) / "bench.m3u8"))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        subprocess.run(command, check=True, timeout=300)
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="media pushed at real-time pace, per mode")
    parser.add_argument("--remux-seconds", type=float, default=30.0, help="media remuxed for the CPU comparison")
    parser.add_argument("--size", default="640x360", help="video width x height")
    parser.add_argument("--quick", action="store_true", help="short runs, for smoke tests")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.remux_seconds = 3.0, 6.0
    rounds = 1 if args.quick else ROUNDS
    width, height = (int(n) for n in args.size.split("x"))

    media_seconds = max(args.seconds, args.remux_seconds)
    encode_started = time.perf_counter()
    frames = interleave(encode_video(media_seconds, width, height, FPS, keyframe_interval=FPS),
                        encode_audio(media_seconds))
    encode_seconds = time.perf_counter() - encode_started

    live = [f for f in frames if f.seconds < args.seconds]
    delays = {}
    delays.update(delay_rows(asyncio.run(ready_delays(live, low_latency=False)), "TS"))
    delays.update(delay_rows(asyncio.run(ready_delays(live, low_latency=True)), "LL"))

    remux_frames = [f for f in frames if f.seconds < args.remux_seconds]
    remux_media = max(f.seconds for f in remux_frames)
    remux = {}
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "input.ts"
        write_ts(remux_frames, source)
        startup = min(ffmpeg_remux(source, False, limit=0.1)[0] for _ in range(rounds))
        for label, low_latency in (("TS segments", False), ("LL fMP4 parts", True)):
            ours = min(asyncio.run(our_remux(remux_frames, low_latency)) for _ in range(rounds))
            theirs = min(ffmpeg_remux(source, low_latency) for _ in range(rounds))
            remux[label] = {
                "media_s": round(remux_media, 2),
                "ours_cpu_s": round(ours[0], 3),
                "ours_wall_s": round(ours[1], 3),
                "ours_cpu_per_media_s": round(ours[0] / remux_media, 5),
                "ffmpeg_cpu_s": round(theirs[0], 3),
                "ffmpeg_wall_s": round(theirs[1], 3),
                "ffmpeg_cpu_per_media_s": round(theirs[0] / remux_media, 5),
                "ours_over_ffmpeg": round(ours[0] / theirs[0], 2),
                "ours_over_ffmpeg_without_startup": round(ours[0] / max(theirs[0] - startup, 1e-6), 2),
            }

    print(f"Ready delay (last frame pushed -> listed), {args.seconds:g} s at real-time pace, {width}x{height} "
          f"{FPS} fps + AAC, segments {SEGMENT:g} s, parts {PART:g} s")
    print(f"{'unit':<12} {'count':>5}  {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}   {'next frame p50':>14}"
          f"  {'worker p50':>10} {'p95':>6} {'max':>6}")
    for name, row in delays.items():
        print(f"{name:<12} {row['count']:>5}  {row['p50_ms']:>7.1f} {row['p95_ms']:>7.1f} {row['max_ms']:>7.1f}"
              f"   {row['next_frame_p50_ms']:>14.1f}  {row['worker_p50_ms']:>10.1f} {row['worker_p95_ms']:>6.1f}"
              f" {row['worker_max_ms']:>6.1f}")
    print()
    print(f"Remux CPU, {remux_media:.1f} s of media (ffmpeg start-up and probe alone: {startup:.3f} s CPU)")
    print(f"{'case':<14} {'ours CPU s':>10} {'per media s':>11}  {'ffmpeg CPU s':>12} {'per media s':>11}"
          f"  {'ours/ffmpeg':>11} {'w/o start-up':>12}")
    for name, row in remux.items():
        print(f"{name:<14} {row['ours_cpu_s']:>10.3f} {row['ours_cpu_per_media_s']:>11.4f}  "
              f"{row['ffmpeg_cpu_s']:>12.3f} {row['ffmpeg_cpu_per_media_s']:>11.4f}  "
              f"{row['ours_over_ffmpeg']:>10.2f}x {row['ours_over_ffmpeg_without_startup']:>11.2f}x")
    print(json.dumps({
        "bench": "hls",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "ffmpeg": subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0],
        "video": f"{width}x{height}@{FPS} h264 baseline, keyframe every 1 s",
        "segment_s": SEGMENT,
        "part_s": PART,
        "live_seconds": args.seconds,
        "encode_s": round(encode_seconds, 2),
        "ready_delay": delays,
        "ffmpeg_startup_cpu_s": round(startup, 3),
        "remux": remux,
        "statistics": f"ready delay percentiles over units; remux best of {rounds}",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
