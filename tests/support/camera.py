"""An IP camera stand-in: GStreamer's RTSP server (gst-rtsp-server, Debian's gir1.2-gst-rtsp-server-1.0)
serving a live test picture, H.264 or VP8, with Opus audio, at rtsp://127.0.0.1:PORT/PATH.

Runs under the system Python, which has PyGObject and GStreamer (not the project's virtual environment):
    /usr/bin/python3 tests/support/camera.py --port 0 --path /cam --codec h264 [--user u --password p]
Prints `ready PORT` once it listens, then serves until killed. `--port 0` picks a free port.

`--rtp-video-port` (and `--rtp-audio-port`) serve RTP that another process sends to those UDP ports on
127.0.0.1 instead: H.264 (and Opus), passed through as it arrives (no depacketizing, no re-encoding), the
RTSP server's shared media fanning it out (benchmarks/bench_rtsp_fanout.py).
"""

from __future__ import annotations

import argparse
import socket
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_line(codec: str, width: int, height: int, fps: int, audio: bool, source: str | None) -> str:
    if source is not None:
        # A recorded H.264 file, looped by the media factory (benchmarks): parsed, never re-encoded.
        return f"( filesrc location={source} ! qtdemux ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )"
    video = (f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 "
             "! videoconvert ! ")
    if codec == "h264":
        video += (f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=1000 "
                  "! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=-1")
    else:
        video += f"vp8enc deadline=1 keyframe-max-dist={fps} target-bitrate=1000000 ! rtpvp8pay name=pay0 pt=96"
    line = video
    if audio:
        line += (" audiotestsrc is-live=true wave=sine freq=440 ! audio/x-raw,rate=48000,channels=2 "
                 "! opusenc ! rtpopuspay name=pay1 pt=111")
    return f"( {line} )"


def relay_line(video_port: int, audio_port: int | None, sprop: str | None, buffer_size: int) -> str:
    """Pre-encoded RTP from UDP ports, as it is: each udpsrc is the media's payloader."""
    caps = "application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload=96,packetization-mode=(string)1"
    if sprop:
        caps += f",sprop-parameter-sets=(string)\\\"{sprop}\\\""
    line = f'udpsrc name=pay0 address=127.0.0.1 port={video_port} buffer-size={buffer_size} caps="{caps}"'
    if audio_port is not None:
        audio_caps = ("application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload=111,"
                      "encoding-params=(string)2")
        line += f' udpsrc name=pay1 address=127.0.0.1 port={audio_port} buffer-size={buffer_size} caps="{audio_caps}"'
    return f"( {line} )"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--codec", choices=("h264", "vp8"), default="h264")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--no-audio", action="store_true")
    parser.add_argument("--file", help="serve this MP4 (H.264) in a loop instead of a test picture")
    parser.add_argument("--rtp-video-port", type=int, help="serve the H.264 RTP arriving on this UDP port")
    parser.add_argument("--rtp-audio-port", type=int, help="and the Opus RTP arriving on this one")
    parser.add_argument("--sprop", help="sprop-parameter-sets of the H.264 RTP (for the SDP)")
    parser.add_argument("--udp-buffer", type=int, default=4 << 20, help="receive buffer of those UDP ports")
    parser.add_argument("--user")
    parser.add_argument("--password", default="")
    parser.add_argument("--auth", choices=("basic", "digest"), default="digest")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    port = args.port or free_port()
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    if args.rtp_video_port:
        factory.set_launch(relay_line(args.rtp_video_port, args.rtp_audio_port, args.sprop, args.udp_buffer))
    else:
        factory.set_launch(launch_line(args.codec, args.width, args.height, args.fps, not args.no_audio, args.file))
    factory.set_shared(True)  # one pipeline for every client, as a camera has
    if args.file or args.rtp_video_port:
        factory.set_eos_shutdown(False)
        factory.set_suspend_mode(GstRtspServer.RTSPSuspendMode.NONE)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", args.user)
        if args.auth == "digest":
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(args.user, args.password, token)
        else:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        for permission in ("media.factory.access", "media.factory.construct"):
            permissions.add_permission_for_role(args.user, permission, True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {port}")
    print(f"ready {port}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
