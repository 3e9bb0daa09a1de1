"""Recording without a server: media.record's writer and recorder on encoded test media (PyAV), checked
with ffprobe/ffmpeg; the records folder (names from templates, hostile values, symlinks); byte ranges;
the record settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from media.encoded import EncodedFrame
from media.record import MATROSKA, MP4, WEBM, Recorder, RecordResult, RecordSettings, RecordWriter, container_for
from streaming import config as config_module
from streaming.byte_range import ByteRange, Unsatisfiable, parse_range
from streaming.config import ConfigError
from streaming.records import NameTemplate, RecordNotFound, RecordsFolder, TemplateError, template_values
from tests.support.media_gen import encode_opus, encode_video

FPS = 30


def media(codec: str, seconds: float, video_offset: int = 9000) -> list[EncodedFrame]:
    """Video (a keyframe a second) and Opus, interleaved by time as the routing core delivers them; video
    starts 0.1 s after audio, so the audio before the first keyframe is left out."""
    video = [EncodedFrame(codec, s.data, s.pts + video_offset, 90000, s.keyframe)
             for s in encode_video(codec, frames=round(seconds * FPS), fps=FPS, keyframe_interval=FPS)]
    audio = [EncodedFrame("opus", s.data, s.pts, 48000, True, channels=2) for s in encode_opus(seconds + 0.1)]
    return sorted(video + audio, key=lambda f: f.seconds)


def probe(path: Path) -> dict[str, Any]:
    """Per stream: codec, and the span of its packets (first pts to last pts + duration), in seconds."""
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                           "stream=index,codec_type,codec_name,width,height:packet=stream_index,pts_time,duration_time",
                           "-of", "json", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    out: dict[str, Any] = {}
    for stream in doc["streams"]:
        packets = [p for p in doc.get("packets", []) if p["stream_index"] == stream["index"] and "pts_time" in p]
        first = min(float(p["pts_time"]) for p in packets)
        last = max(float(p["pts_time"]) + float(p.get("duration_time", 0) or 0) for p in packets)
        out[stream["codec_type"]] = {**stream, "packets": len(packets), "start": first, "span": last - first}
    return out


def decoded_frames(path: Path) -> dict[str, int]:
    """Frames each stream decodes to, with every decoding error shown: (video, audio)."""
    done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0",
                           "-fps_mode", "passthrough", "-f", "framemd5", "-"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    counts = {"0": 0, "1": 0}
    for line in done.stdout.splitlines():
        if line and not line.startswith("#"):
            counts[line.split(",", 1)[0].strip()] = counts.get(line.split(",", 1)[0].strip(), 0) + 1
    return {"errors": len(done.stderr.strip().splitlines()), "video": counts["0"], "audio": counts["1"]}


# ---------------------------------------------------------------------------------------------------------
# Containers and the writer


def test_the_container_takes_the_codecs_as_they_are() -> None:
    assert container_for("H264", "opus") is MP4 and container_for("H264", "AAC") is MP4
    assert container_for("H264", None) is MP4 and container_for(None, "AAC") is MP4
    assert container_for("VP8", "opus") is WEBM and container_for(None, "opus") is WEBM
    assert container_for("VP8", "AAC") is MATROSKA
    for video, audio in ((None, None), ("VP9", "opus"), ("H264", "PCMU")):
        with pytest.raises(ValueError):
            container_for(video, audio)


@pytest.mark.parametrize("codec", ["H264", "VP8"])
def test_the_writer_remuxes_video_and_opus_into_a_file_that_decodes(tmp_path: Path, codec: str) -> None:
    container = container_for(codec, "opus")
    path = tmp_path / f"rec{container.extension}"
    with path.open("wb", buffering=0) as file:
        writer = RecordWriter(file, container, codec, "opus", fragment_duration=1.0)
        for frame in media(codec, 3.0):
            writer.write(frame)
        writer.close()
    assert writer.frames > 3 * FPS + 3 * 45 and abs(writer.media_seconds - 3.0) < 0.1
    streams = probe(path)
    assert streams["video"]["codec_name"] == codec.lower()
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
    assert streams["audio"]["codec_name"] == "opus"
    assert streams["video"]["start"] == 0.0  # the first keyframe is 0 in the file ...
    assert streams["audio"]["start"] < 0.03  # ... and audio keeps its place next to it
    for kind in ("video", "audio"):
        assert abs(streams[kind]["span"] - 2.9) < 0.15, streams[kind]
    frames = decoded_frames(path)
    assert frames["errors"] == 0 and frames["video"] == 3 * FPS and frames["audio"] >= 140


def test_video_waits_for_a_keyframe_and_frames_out_of_order_are_left_out(tmp_path: Path) -> None:
    frames = [f for f in media("H264", 2.0) if not (f.kind == "video" and f.pts == 9000)]  # no first keyframe
    late = frames[40]
    frames.insert(60, late)  # a repeat of an earlier frame
    path = tmp_path / "rec.mp4"
    with path.open("wb", buffering=0) as file:
        writer = RecordWriter(file, MP4, "H264", "opus")
        for frame in frames:
            writer.write(frame)
        writer.close()
    streams = probe(path)
    assert streams["video"]["packets"] == FPS  # the second second, from its keyframe on
    assert writer.skipped >= FPS - 1 + 1
    assert decoded_frames(path)["errors"] == 0


@pytest.mark.parametrize("codec", ["H264", "VP8"])
def test_a_file_cut_off_mid_recording_plays_up_to_its_last_fragment(tmp_path: Path, codec: str) -> None:
    """What a kill -9 leaves: the bytes the muxer handed to the kernel, no trailer, no index."""
    container = container_for(codec, "opus")
    path = tmp_path / f"rec{container.extension}"
    file = path.open("wb", buffering=0)
    writer = RecordWriter(file, container, codec, "opus", fragment_duration=1.0)
    for frame in media(codec, 4.0):
        writer.write(frame)
    cut = tmp_path / f"cut{container.extension}"
    shutil.copyfile(path, cut)  # as it is on disk now, before close
    writer.abandon()
    file.close()
    streams = probe(cut)
    for kind in ("video", "audio"):
        assert streams[kind]["span"] >= 3.9 - 1.0 - 0.1, (kind, streams[kind])  # at most a fragment lost
    frames = decoded_frames(cut)
    assert frames["errors"] == 0 and frames["video"] >= (3.9 - 1.1) * FPS


# ---------------------------------------------------------------------------------------------------------
# The recorder: loop side, worker thread, failures


async def record(file: Any, frames: list[EncodedFrame], settings: RecordSettings | None = None,
                 codec: str = "H264") -> tuple[Recorder, RecordResult, list[str]]:
    results: list[RecordResult] = []
    asked: list[str] = []
    recorder = Recorder(file, container_for(codec, "opus"), codec, "opus", settings, on_done=results.append)
    recorder.on_keyframe_needed = lambda: asked.append("keyframe")
    for frame in frames:
        recorder.push(frame)
    recorder.stop()
    result = await recorder.wait(timeout=30)
    assert result is not None and results == [result]  # on_done ran once, on the loop
    return recorder, result, asked


async def test_the_recorder_asks_for_a_keyframe_and_finishes_the_file(tmp_path: Path) -> None:
    frames = [f for f in media("H264", 3.0) if not (f.kind == "video" and f.pts == 9000)]  # no first keyframe
    path = tmp_path / "rec.mp4"
    recorder, result, asked = await record(path.open("wb", buffering=0), frames,
                                           RecordSettings(keyframe_interval=0.5))
    assert result.ok and result.reason is None and result.bytes == path.stat().st_size
    assert abs(result.media_seconds - 2.0) < 0.1 and result.dropped == 0
    # One ask while waiting for the first keyframe (at 1.1 s), then one 0.5 s after each keyframe without a
    # next one (1.6 s, 2.6 s); the source rate-limits what it passes on.
    assert len(asked) == 3, asked
    assert probe(path)["video"]["packets"] == 2 * FPS


async def test_a_full_queue_drops_and_counts_and_video_resumes_at_a_keyframe(tmp_path: Path) -> None:
    path = tmp_path / "rec.mp4"
    recorder, result, asked = await record(path.open("wb", buffering=0), media("H264", 3.0),
                                           RecordSettings(queue_frames=40))
    # All frames were pushed in one go: the worker could not keep up with 40 queued at most.
    assert result.ok and result.dropped > 0 and recorder.dropped == result.dropped
    assert recorder.pushed + recorder.dropped == len(media("H264", 3.0))
    assert asked  # a keyframe to resume video
    assert decoded_frames(path)["errors"] == 0


async def test_a_full_disk_fails_the_recording_with_the_reason(tmp_path: Path) -> None:
    full = Path("/dev/full").open("wb", buffering=0)  # noqa: ASYNC230 (a device: opening does not block)
    recorder, result, _ = await record(full, media("VP8", 3.0), codec="VP8")
    assert not result.ok and result.reason is not None
    assert "No space left on device" in result.reason, result.reason
    recorder.push(media("VP8", 0.1)[0])  # after a failure frames are not taken (no error either)


# ---------------------------------------------------------------------------------------------------------
# Names, the folder, ranges, settings


@pytest.mark.parametrize("template, problem", [
    ("../{streamName}", "letters, digits"),
    ("{streamName}/{mediaSessionId}", "letters, digits"),
    ("/abs/{streamName}", "letters, digits"),
    ("a\x00{streamName}", "letters, digits"),
    ("{streamName} {date}", "letters, digits"),
    ("{secret}", "unknown field"),
    ("{streamName.__class__}", "unknown field"),
    ("{streamName!r}", "conversion"),
    ("{streamName:>300}", "format spec"),
    (".{streamName}", "may not start"),
    ("plain", "at least one field"),
    ("{streamName", "not a valid template"),
    ("", "non-empty"),
])
def test_templates_that_could_leave_the_folder_are_refused(template: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem):
        NameTemplate.parse(template)
    with pytest.raises(ConfigError, match="record.template"):
        config_module.load(None, {"STREAMING_RECORD_TEMPLATE": template})


@pytest.mark.parametrize("stream_name, msid", [
    ("../../etc/passwd", "x"), ("/etc/passwd", "/tmp/evil"), ("a\x00b", "..\\..\\c"), ("..", ".."),
    ("-rf", "~root"), ("ok", "../" * 100 + "x" * 500),
])
def test_hostile_values_render_to_one_plain_name_in_the_folder(tmp_path: Path, stream_name: str, msid: str) -> None:
    folder = RecordsFolder(tmp_path / "records")
    stem = NameTemplate.parse("{streamName}-{mediaSessionId}").render(
        template_values(stream_name, msid, "s", "app", "node"))
    assert "/" not in stem and "\x00" not in stem and "\\" not in stem and not stem.startswith((".", "-"))
    name, file = folder.create(stem, ".mp4")
    file.close()
    assert [p.name for p in (tmp_path / "records").iterdir()] == [name]
    assert [r.name for r in folder.list()] == [name]


def test_names_are_never_reused_and_symlinks_are_never_followed(tmp_path: Path) -> None:
    folder = RecordsFolder(tmp_path / "records")
    folder.ensure()
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    (tmp_path / "records" / "cam.mp4").symlink_to(target)  # planted with the next record's name
    (tmp_path / "records" / "cam-1.mp4").write_bytes(b"an earlier record")
    name, file = folder.create("cam", ".mp4")
    file.write(b"new")
    file.close()
    assert name == "cam-2.mp4" and target.read_bytes() == b"keep me"
    assert (tmp_path / "records" / "cam-1.mp4").read_bytes() == b"an earlier record"
    assert [r.name for r in folder.list()] == ["cam-1.mp4", "cam-2.mp4"]  # the symlink is not listed
    for hostile in ("cam.mp4", "../precious", "/etc/passwd", "..", ".", "", "a/../cam-1.mp4", "cam-1.mp4\x00",
                    ".hidden.mp4", "records", "cam-1.txt", None, 7):
        with pytest.raises(RecordNotFound):
            folder.open(hostile)
    (tmp_path / "records" / "dir.mp4").mkdir()
    with pytest.raises(RecordNotFound):
        folder.open("dir.mp4")
    fd, info = folder.open("cam-2.mp4")
    try:
        assert os.pread(fd, 10, 0) == b"new" and info.st_size == 3
    finally:
        os.close(fd)


def test_byte_ranges() -> None:
    assert parse_range(None, 100) is None and parse_range("", 100) is None
    assert parse_range("bytes=0-9", 100) == ByteRange(0, 9)
    assert parse_range("bytes=90-", 100) == ByteRange(90, 99)
    assert parse_range("bytes=-10", 100) == ByteRange(90, 99)
    assert parse_range("bytes=-1000", 100) == ByteRange(0, 99)
    assert parse_range("bytes=50-1000", 100) == ByteRange(50, 99)
    assert ByteRange(0, 9).content_range(100) == "bytes 0-9/100" and ByteRange(0, 9).length == 10
    for ignored in ("bytes=0-1,5-6", "items=0-1", "bytes=5-1", "bytes=a-b", "bytes=-", "bytes=1"):
        assert parse_range(ignored, 100) is None, ignored
    for unsatisfiable in ("bytes=100-", "bytes=200-300", "bytes=-0"):
        with pytest.raises(Unsatisfiable):
            parse_range(unsatisfiable, 100)


def test_record_settings_are_checked() -> None:
    values = config_module.load(None, {}).values
    assert values["record.template"] == "{streamName}-{mediaSessionId}" and values["record.dir"] is None
    assert values["record.fragment_duration"] == 1.0 and values["record.keyframe_interval"] == 4.0
    assert config_module.load(None, {"STREAMING_RECORD_KEYFRAME_INTERVAL": "0"}).values["record.keyframe_interval"] == 0
    for name, bad in (("FRAGMENT_DURATION", "0"), ("KEYFRAME_INTERVAL", "-1"), ("KEYFRAME_INTERVAL", "x")):
        with pytest.raises(ConfigError, match=f"record.{name.lower()}"):
            config_module.load(None, {f"STREAMING_RECORD_{name}": bad})

