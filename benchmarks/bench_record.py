"""Recording (media/record.py): CPU seconds per media second of our remux to a crash-safe file, against
`ffmpeg -c copy` writing the same container from the same frames, measured in the same run.

    .venv/bin/python benchmarks/bench_record.py [--seconds 30] [--size 640x360] [--quick]

Media: H.264 (libx264 baseline, the way a browser sends it) or VP8 (libvpx realtime), 30 fps with a keyframe
every 2 s, and Opus (20 ms packets, 48 kHz stereo), encoded once by PyAV at the start
(tests/support/media_gen.py).

- Ours: a Recorder (the loop side queueing, the worker thread muxing through PyAV into a file opened by
  us) is pushed every frame as fast as it takes them (its queue holds them all), then stopped; measured
  with time.process_time (every thread of this process), from the first push to the finished file.
- FFmpeg: the same frames in a Matroska file, remuxed by `ffmpeg -i input.mkv -c copy` into the same
  container with the same fragmenting options (fMP4 with frag_keyframe+empty_moov+default_base_moof and
  1 s fragments for H.264; WebM with 1 s clusters for VP8); measured by the child's resource usage, which
  includes its start-up and probing (shown on its own line: `-t 0.1` of the same input) and reading the
  input. Best of ROUNDS for each.

Prints a table and then one JSON line starting with {"bench": "record", ...}.
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
    from media.encoded import EncodedFrame
    from media.record import MATROSKA, Recorder, RecordSettings, RecordWriter, container_for, muxer_options
    from tests.support.media_gen import encode_opus, encode_video
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from media.encoded import EncodedFrame
    from media.record import MATROSKA, Recorder, RecordSettings, RecordWriter, container_for, muxer_options
    from tests.support.media_gen import encode_opus, encode_video

ROUNDS = 3
FPS = 30
FRAGMENT = 1.0


def make_frames(codec: str, seconds: float, width: int, height: int) -> list[EncodedFrame]:
    video = [EncodedFrame(codec, s.data, s.pts, 90000, s.keyframe)
             for s in encode_video(codec, width, height, frames=round(seconds * FPS), fps=FPS,
                                   keyframe_interval=2 * FPS, bitrate=1_500_000)]
    audio = [EncodedFrame("opus", s.data, s.pts, 48000, True, channels=2) for s in encode_opus(seconds)]
    return sorted(video + audio, key=lambda f: f.seconds)


async def ours(frames: list[EncodedFrame], codec: str, folder: Path) -> tuple[float, float, int]:
    """CPU and wall seconds of our recording of `frames`, and the file's size."""
    container = container_for(codec, "opus")
    path = folder / f"ours{container.extension}"
    settings = RecordSettings(fragment_duration=FRAGMENT, queue_frames=len(frames) + 1)
    cpu, wall = time.process_time(), time.perf_counter()
    recorder = Recorder(path.open("wb", buffering=0), container, codec, "opus", settings)
    for frame in frames:
        recorder.push(frame)
    recorder.stop()
    result = await recorder.wait(timeout=300)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert result is not None and result.ok and result.dropped == 0, result
    return cpu, wall, result.bytes


def write_input(frames: list[EncodedFrame], codec: str, path: Path) -> None:
    with path.open("wb") as file:
        writer = RecordWriter(file, MATROSKA, codec, "opus", fragment_duration=FRAGMENT)
        for frame in frames:
            writer.write(frame)
        writer.close()


def theirs(source: Path, codec: str, folder: Path, limit: float | None = None) -> tuple[float, float, int]:
    """CPU (user + system of the child) and wall seconds of `ffmpeg -c copy` to the same container."""
    container = container_for(codec, "opus")
    out = folder / f"ffmpeg{container.extension}"
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    if limit is not None:
        command += ["-t", str(limit)]
    command += ["-i", str(source), "-map", "0", "-c", "copy", "-f", container.format]
    for key, value in muxer_options(container, FRAGMENT).items():
        command += [f"-{key}", value]
    command.append(str(out))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(command, check=True, timeout=300)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, out.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="media recorded per run")
    parser.add_argument("--size", default="640x360", help="video width x height")
    parser.add_argument("--quick", action="store_true", help="short runs, for smoke tests")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 5.0
    rounds = 1 if args.quick else ROUNDS
    width, height = (int(n) for n in args.size.split("x"))

    rows = {}
    encode_seconds = 0.0
    for codec in ("H264", "VP8"):
        started = time.perf_counter()
        frames = make_frames(codec, args.seconds, width, height)
        encode_seconds += time.perf_counter() - started
        media_seconds = max(f.seconds for f in frames)
        container = container_for(codec, "opus")
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            source = folder / "input.mkv"
            write_input(frames, codec, source)
            startup = min(theirs(source, codec, folder, limit=0.1)[0] for _ in range(rounds))
            our = min(asyncio.run(ours(frames, codec, folder)) for _ in range(rounds))
            their = min(theirs(source, codec, folder) for _ in range(rounds))
        rows[f"{codec}+Opus -> {container.format}"] = {
            "frames": len(frames),
            "media_s": round(media_seconds, 2),
            "ours_cpu_s": round(our[0], 3),
            "ours_wall_s": round(our[1], 3),
            "ours_cpu_per_media_s": round(our[0] / media_seconds, 5),
            "ours_bytes": our[2],
            "ffmpeg_cpu_s": round(their[0], 3),
            "ffmpeg_wall_s": round(their[1], 3),
            "ffmpeg_cpu_per_media_s": round(their[0] / media_seconds, 5),
            "ffmpeg_bytes": their[2],
            "ffmpeg_startup_cpu_s": round(startup, 3),
            "ours_over_ffmpeg": round(our[0] / max(their[0], 1e-6), 2),
            "ours_over_ffmpeg_without_startup": round(our[0] / max(their[0] - startup, 1e-6), 2),
        }

    print(f"Recording remux CPU, {args.seconds:g} s of {width}x{height} {FPS} fps video + Opus, "
          f"{FRAGMENT:g} s fragments (best of {rounds})")
    print(f"{'case':<22} {'ours CPU s':>10} {'per media s':>11}  {'ffmpeg CPU s':>12} {'per media s':>11}"
          f"  {'start-up':>8}  {'ours/ffmpeg':>11} {'w/o start-up':>12}")
    for name, row in rows.items():
        print(f"{name:<22} {row['ours_cpu_s']:>10.3f} {row['ours_cpu_per_media_s']:>11.5f}  "
              f"{row['ffmpeg_cpu_s']:>12.3f} {row['ffmpeg_cpu_per_media_s']:>11.5f}  "
              f"{row['ffmpeg_startup_cpu_s']:>8.3f}  {row['ours_over_ffmpeg']:>10.2f}x "
              f"{row['ours_over_ffmpeg_without_startup']:>11.2f}x")
    print(json.dumps({
        "bench": "record",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "ffmpeg": subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0],
        "video": f"{width}x{height}@{FPS}, keyframe every 2 s, 1.5 Mbps",
        "fragment_s": FRAGMENT,
        "encode_s": round(encode_seconds, 2),
        "remux": rows,
        "statistics": f"best of {rounds}",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
