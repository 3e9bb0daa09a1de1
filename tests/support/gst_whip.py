"""A WHIP publisher on GStreamer's WebRTC stack (webrtcbin with libnice), run with the system Python:

    /usr/bin/python3 tests/support/gst_whip.py --url http://127.0.0.1:8081/whip/cam1 [--token T]
        [--codec vp8|h264] [--trickle] [--pattern ball]

It publishes videotestsrc and audiotestsrc like Meetecho's simple-whip-client (whose Debian 12 build
aborts at start: it links libsoup 2 while GStreamer 1.22's webrtc plugins link libsoup 3), with the
HTTP side done by urllib: POST the offer, read the 201's answer, Location and ETag; with --trickle the
offer goes out before gathering and every candidate follows in a PATCH (application/trickle-ice-sdpfrag,
If-Match), as a trickling client does. libnice gathers no loopback candidates on its own: 127.0.0.1 is
added to its agent. Prints `ready {"location": ..., "status": 201}` when ICE and DTLS are connected,
`refused {"status": ..., "text": ...}` when the endpoint says no (exit status 2), and DELETEs the session
on SIGTERM/SIGINT (printing `deleted {"status": ...}`).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import signal
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urljoin

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

VIDEO = {
    "vp8": "vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay pt=96 ! "
           "application/x-rtp,media=video,encoding-name=VP8,payload=96",
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! video/x-h264,profile=constrained-baseline"
            " ! rtph264pay pt=102 config-interval=-1 aggregate-mode=zero-latency ! "
            "application/x-rtp,media=video,encoding-name=H264,payload=102",
}


def add_local_address(webrtcbin: Gst.Element, address: str) -> None:
    """Have webrtcbin's ICE agent gather on `address` (its `add-local-ip-address` signal). Through
    GObject's C API: PyGObject drops the reference webrtcbin 1.22 hands out for its `ice-agent`
    property, which frees the agent under it."""
    gobject = ctypes.CDLL("libgobject-2.0.so.0")
    capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    capsule_pointer.restype = ctypes.c_void_p
    capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    element = capsule_pointer(webrtcbin.__gpointer__, None)
    agent = ctypes.c_void_p()
    gobject.g_object_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p),
                                     ctypes.c_void_p]
    gobject.g_object_get(element, b"ice-agent", ctypes.byref(agent), None)  # a reference of our own
    added = ctypes.c_int(0)
    gobject.g_signal_emit_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                              ctypes.POINTER(ctypes.c_int)]
    gobject.g_signal_emit_by_name(agent, b"add-local-ip-address", address.encode(), ctypes.byref(added))
    if not added.value:
        raise RuntimeError(f"webrtcbin's ICE agent refused the local address {address}")


def say(kind: str, obj: dict[str, Any]) -> None:
    print(f"{kind} {json.dumps(obj)}", flush=True)


class WhipClient:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.loop = GLib.MainLoop()
        self.location: str | None = None
        self.etag: str | None = None
        self.exit_code = 0
        self.posted = False
        self.pending: list[tuple[int, str]] = []  # trickled candidates before the POST answered
        video = (f"videotestsrc is-live=true pattern={args.pattern} ! video/x-raw,width=320,height=240,framerate=30/1"
                 f" ! videoconvert ! queue ! {VIDEO[args.codec]} ! queue ! sendonly.")
        audio = ("audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc ! "
                 "rtpopuspay pt=111 ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! queue ! "
                 "sendonly.")
        self.pipeline = Gst.parse_launch(f"webrtcbin name=sendonly bundle-policy=max-bundle {video} {audio}")
        self.webrtc = self.pipeline.get_by_name("sendonly")
        add_local_address(self.webrtc, "127.0.0.1")
        self.webrtc.connect("on-negotiation-needed", self._negotiation_needed)
        self.webrtc.connect("on-ice-candidate", self._ice_candidate)
        self.webrtc.connect("notify::ice-gathering-state", self._gathering)
        self.webrtc.connect("notify::connection-state", self._connection)

    # -- HTTP -----------------------------------------------------------------------------------

    def _request(self, method: str, url: str, body: bytes | None,
                 headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
        if self.args.token:
            headers = {**headers, "Authorization": f"Bearer {self.args.token}"}
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()
        except OSError as exc:  # nothing answered: told like a refusal, status 0
            return 0, {}, str(exc)

    def _post(self) -> None:
        sdp = self.webrtc.get_property("local-description").sdp.as_text()
        status, headers, text = self._request("POST", self.args.url, sdp.encode(), {"Content-Type": "application/sdp"})
        if status != 201:
            say("refused", {"status": status, "text": text.strip()})
            self.exit_code = 2
            self.loop.quit()
            return
        self.location = urljoin(self.args.url, headers["Location"])
        self.etag = headers.get("ETag")
        ok, answer = GstSdp.SDPMessage.new_from_text(text)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, answer)
        self.webrtc.emit("set-remote-description", description, Gst.Promise.new())
        self.posted = True
        for mline, candidate in self.pending:
            self._patch(mline, candidate)
        self.pending.clear()

    def _patch(self, mline: int, candidate: str) -> None:
        assert self.location is not None
        sdp = self.webrtc.get_property("local-description").sdp
        media = sdp.get_media(mline)
        fragment = (f"a=ice-ufrag:{media.get_attribute_val('ice-ufrag')}\r\n"
                    f"a=ice-pwd:{media.get_attribute_val('ice-pwd')}\r\n"
                    f"m={media.get_media()} 9 {media.get_proto()} {media.get_format(0)}\r\n"
                    f"a=mid:{media.get_attribute_val('mid')}\r\na={candidate}\r\n")
        headers = {"Content-Type": "application/trickle-ice-sdpfrag"}
        if self.etag:
            headers["If-Match"] = self.etag
        status, _headers, text = self._request("PATCH", self.location, fragment.encode(), headers)
        say("patched", {"status": status, "text": text.strip()})

    # -- webrtcbin --------------------------------------------------------------------------------

    def _negotiation_needed(self, element: Any) -> None:
        for index in range(2):  # the video and the audio pad's
            transceiver = self.webrtc.emit("get-transceiver", index)
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        promise = Gst.Promise.new_with_change_func(self._offer_created, None)
        self.webrtc.emit("create-offer", None, promise)

    def _offer_created(self, promise: Gst.Promise, _data: Any) -> None:
        # Runs on webrtcbin's own thread: never wait here for what that thread does next.
        reply = promise.get_reply()  # held while its offer is read: PyGObject frees a temporary early
        offer = reply.get_value("offer")
        done = Gst.Promise.new_with_change_func(self._offer_set, None)
        self.webrtc.emit("set-local-description", offer, done)

    def _offer_set(self, promise: Gst.Promise, _data: Any) -> None:
        if self.args.trickle:
            GLib.idle_add(self._post_once)

    def _post_once(self) -> bool:
        if not self.posted:
            self._post()
        return False

    def _ice_candidate(self, element: Any, mline: int, candidate: str) -> None:
        if not self.args.trickle:
            return
        if mline == 0:  # bundled: the first section's transport carries everything
            GLib.idle_add(self._on_candidate, mline, candidate)

    def _on_candidate(self, mline: int, candidate: str) -> bool:
        if self.posted:
            self._patch(mline, candidate)
        else:
            self.pending.append((mline, candidate))
        return False

    def _gathering(self, element: Any, _pspec: Any) -> None:
        state = self.webrtc.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE and not self.args.trickle and not self.posted:
            GLib.idle_add(self._post_once)

    def _connection(self, element: Any, _pspec: Any) -> None:
        state = self.webrtc.get_property("connection-state")
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            say("ready", {"location": self.location, "status": 201})
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            say("failed", {"location": self.location})
            self.exit_code = 3
            self.loop.quit()

    # -- life -------------------------------------------------------------------------------------

    def stop(self) -> bool:
        if self.location is not None:
            status, _headers, _text = self._request("DELETE", self.location, None, {})
            say("deleted", {"status": status})
        self.loop.quit()
        return False

    def run(self) -> int:
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, self.stop)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, self.stop)
        self.pipeline.set_state(Gst.State.PLAYING)
        try:
            self.loop.run()
        finally:
            self.pipeline.set_state(Gst.State.NULL)
        return self.exit_code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default=None)
    parser.add_argument("--codec", choices=sorted(VIDEO), default="vp8")
    parser.add_argument("--pattern", default="ball")
    parser.add_argument("--trickle", action="store_true")
    Gst.init(None)
    return WhipClient(parser.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
