#!/usr/bin/env bash
# Prepares the project on a Debian machine: build tools, the virtual environment at .venv and the
# native (Cython) media core. Safe to run again; it only does what is missing.
#   scripts/setup.sh          server dependencies
#   scripts/setup.sh --test   plus test tools, Debian packages for the tests and the WebSDK from npm
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf '[setup] %s\n' "$*" >&2; }

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        say "missing Debian packages: ${missing[*]} (run as root, or install them first)"
        exit 1
    fi
    say "installing Debian packages: ${missing[*]}"
    if [ -z "${_apt_updated:-}" ]; then
        apt-get update -qq
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

PY=${PYTHON:-python3}
# A compiler and the Python headers build the native core; venv makes the environment.
command -v "$PY" >/dev/null || apt_install python3
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then apt_install python3-venv; fi
command -v cc >/dev/null || apt_install gcc libc6-dev
if ! "$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    apt_install python3-dev
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
extras=""
[ $want_test = 1 ] && extras="[test]"
# Skip pip when nothing it depends on changed since the last successful run (a set-up machine then
# starts the server without reaching the package index).
stamp=.venv/.setup-stamp
digest=$(cat pyproject.toml setup.py media/_native/*.pyx media/_native/*.pxd | sha256sum | cut -d' ' -f1)
wanted="$digest$extras"
have=$(cat "$stamp" 2>/dev/null || true)
current=0
[ "$have" = "$wanted" ] && current=1
[ $want_test = 0 ] && [ "$have" = "$digest[test]" ] && current=1  # a test setup has all serve needs
if [ $current = 0 ] || ! "$VPY" -c 'import media.native as n; n.require_native()' 2>/dev/null; then
    "$VPY" -m pip install -q --upgrade pip >/dev/null
    say "installing Python dependencies and building the native core"
    "$VPY" -m pip install -q "setuptools>=77" wheel "Cython>=3.0.10,<3.4"
    # --no-build-isolation: build with the Cython just installed (no second download); -e keeps the
    # extension next to its .pyx so the tests import the tree they see.
    "$VPY" -m pip install -q --no-build-isolation -e ".${extras}"
    echo "$wanted" > "$stamp"
fi
"$VPY" -c 'import media.native as n; n.require_native(); print("[setup] native media core:", n.describe())' >&2

websdk_missing() {
    [ ! -f node_modules/@flashphoner/websdk/flashphoner.js ] || [ ! -f node_modules/hls.js/dist/hls.min.js ] \
        || [ package-lock.json -nt node_modules/.package-lock.json ]
}

if [ $want_test = 0 ] && command -v npm >/dev/null && websdk_missing; then
    # The demo pages need the WebSDK; the server runs without it.
    say "installing the WebSDK from npm for the demo pages"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null || say "npm failed: the demo pages will not load"
fi

if [ $want_test = 1 ]; then
    # Real clients for the tests: headless Chromium with its driver, ffmpeg, network namespaces.
    apt_install chromium chromium-driver ffmpeg iproute2 util-linux openssl ca-certificates
    # An independent RTSP server standing in for IP cameras (GStreamer's rtsp-server, system Python).
    apt_install python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
        gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
    # WHIP publishing with GStreamer's webrtcbin (tests/support/gst_whip.py): libnice, the GstWebRTC typelibs.
    apt_install gstreamer1.0-nice gir1.2-gst-plugins-bad-1.0
    # An independent reader of the pcap captures of no_media bug reports.
    apt_install tcpdump
    # An RTMP server receiving our pushes (nginx with its RTMP module, started by the tests themselves).
    apt_install nginx libnginx-mod-rtmp
    # SIPp: its captured RFC 2833 digits replayed to a call's media, and the callee of bench_sip.py.
    apt_install sip-tester
    command -v npm >/dev/null || apt_install npm
    if websdk_missing; then
        say "installing the official WebSDK from npm"
        npm ci --no-audit --no-fund --loglevel=error >/dev/null
    fi
    # SIP peers of the gateway's tests: kamailio (registrar, proxy), baresip (phones), SIPp (scenarios).
    apt_install kamailio baresip sip-tester
fi
