"""An RTSP player that is not ffmpeg: GStreamer's rtspsrc, decoding the video it receives.

Runs under the system Python, which has PyGObject and GStreamer:
    /usr/bin/python3 tests/support/rtsp_player.py URL --transport tcp|udp --frames 30 [--timeout 30]
Plays URL, decodes video frames (audio goes to a fakesink), and once `--frames` frames are decoded
prints one JSON line {"frames": N, "width": W, "height": H, "audio": true|false} and exits 0. An error
of the pipeline or the timeout exits 1 with the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    Gst.init(None)
    pipeline = Gst.Pipeline.new("player")
    source = Gst.ElementFactory.make("rtspsrc")
    source.set_property("location", args.url)
    source.set_property("latency", 200)
    source.set_property("protocols", 0x4 if args.transport == "tcp" else 0x1)  # GST_RTSP_LOWER_TRANS_*
    pipeline.add(source)
    loop = GLib.MainLoop()
    state = {"frames": 0, "width": 0, "height": 0, "audio": False, "code": 1}

    def finish(code: int, why: str = "") -> None:
        state["code"] = code
        if why:
            print(why, file=sys.stderr)
        loop.quit()

    def on_frame(sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        structure = sample.get_caps().get_structure(0)
        state["width"], state["height"] = structure.get_value("width"), structure.get_value("height")
        state["frames"] += 1
        if state["frames"] == args.frames:
            GLib.idle_add(finish, 0)
        return Gst.FlowReturn.OK

    def on_pad(_source: Gst.Element, pad: Gst.Pad) -> None:
        media = pad.get_current_caps().get_structure(0).get_value("media")
        if media == "video":
            chain = [Gst.ElementFactory.make(name) for name in ("decodebin", "videoconvert", "appsink")]
            decode, convert, sink = chain
            sink.set_property("emit-signals", True)
            sink.set_property("sync", False)
            sink.set_property("caps", Gst.Caps.from_string("video/x-raw,format=I420"))
            sink.connect("new-sample", on_frame)
            for element in chain:
                pipeline.add(element)
                element.sync_state_with_parent()
            decode.connect("pad-added", lambda _d, p: p.link(convert.get_static_pad("sink")))
            convert.link(sink)
            pad.link(decode.get_static_pad("sink"))
        else:
            state["audio"] = state["audio"] or media == "audio"
            sink = Gst.ElementFactory.make("fakesink")
            pipeline.add(sink)
            sink.sync_state_with_parent()
            pad.link(sink.get_static_pad("sink"))

    def on_message(_bus: Gst.Bus, message: Gst.Message) -> None:
        if message.type == Gst.MessageType.ERROR:
            error, debug = message.parse_error()
            finish(1, f"error: {error.message} ({debug})")
        elif message.type == Gst.MessageType.EOS:
            finish(1, "end of stream before enough frames")

    source.connect("pad-added", on_pad)
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    GLib.timeout_add(int(args.timeout * 1000), lambda: finish(1, f"timeout: {state['frames']} frames decoded"))
    pipeline.set_state(Gst.State.PLAYING)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    if state["code"] == 0:
        print(json.dumps({k: state[k] for k in ("frames", "width", "height", "audio")}), flush=True)
    sys.exit(state["code"])


if __name__ == "__main__":
    main()
