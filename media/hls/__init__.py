"""HLS output of one stream: MPEG-TS segments, or low-latency HLS (fMP4/CMAF parts), and their playlists.

No HTTP here: the server's HTTP layer serves what an `HlsOutput` makes, through a small API:

    hls = HlsOutput("cam1", folder, HlsSettings(low_latency=True))
    frames.subscribe(hls.push)                          # EncodedFrames, on the event loop thread
    hls.on_keyframe_needed = lambda: frames.request_keyframe(loop.time())
    await hls.wait_ready(timeout)                       # on-demand start: hold the first request
    text = await hls.playlist(msn, part)                # GET /cam1/cam1.m3u8[?_HLS_msn=M&_HLS_part=N]
    path = await hls.wait_file(name)                    # GET /cam1/<name>: a Path, or None (404)
    hls.content_type(name)
    hls.end()                                           # the publisher stopped: EXT-X-ENDLIST
    hls.close()                                         # every file and the folder deleted

playlist() raises PlaylistNotReady (answer 400), PlaylistTimeout (503) and HlsClosed (404); see there.

The modules, one concept each:
- `settings.py`: settings, errors and file names; `output.py`: `HlsOutput`, which ties the rest together
  on the event loop thread.
- `cut.py` (loop thread, no I/O): where segments and parts begin.
- `muxing.py`: the output's bounded worker (media/worker.py); `mux.py`, `ts.py`, `fmp4.py`: the container
  writers it runs (one MPEG-TS muxer per segment, muxing frames as they come; one fragmented-MP4 muxer
  per part, its ftyp+moov kept once as init.mp4, its moof+mdat written as the part's file and appended to
  the segment's file).
- `playlist.py` (loop thread, no I/O): what is listed and its text. The loop lists what the worker
  finished, wakes blocked playlist requests (RFC 8216bis 6.2.5.2) and waiters on the preload-hinted part
  (6.2.6), and has the worker delete what left the window, after a grace of a few segments for players
  still fetching them.

A segment or part is known to be finished when the frame after it arrives (about one frame interval);
the worker then needs a few milliseconds (`ready_delays`, benchmarks/bench_hls.py).

The tracks are those with a frame by the first cut: video and audio, video only, or audio only (when
`video` is None, after `detect_seconds` of audio with no video frame). A track that shows up later is
ignored (counted in `ignored`). The init segment is made from the first keyframe's SPS/PPS; parameter sets
that change later are carried in band only.

Timestamps: frames carry pts on the stream's timeline; segments keep them (the TS and tfdt times are the
stream's), and EXT-X-PROGRAM-DATE-TIME maps the timeline to the wall clock read when the first frame came.

File names are ours, never built from a request: segmentN.ts (or segmentN.m4s), partN.K.m4s, init.mp4.
`file(name)` is a lookup in the table of files this output made and still holds.
"""

from .output import HlsOutput
from .settings import (
    CONTENT_TYPES,
    HlsClosed,
    HlsSettings,
    PlaylistNotReady,
    PlaylistTimeout,
    ReadyDelay,
    part_name,
    segment_name,
)

__all__ = [
    "CONTENT_TYPES",
    "HlsClosed",
    "HlsOutput",
    "HlsSettings",
    "PlaylistNotReady",
    "PlaylistTimeout",
    "ReadyDelay",
    "part_name",
    "segment_name",
]
