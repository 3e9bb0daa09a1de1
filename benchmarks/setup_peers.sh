#!/usr/bin/env bash
# The peers the benchmarks run beside our server (Debian packages), installed before entering the
# benchmark's network namespace (no package registry inside it). Needs root.
#   janus: Janus 1.1 for benchmarks/bench_fanout.py (its streaming plugin; --skip-janus leaves it out).
# No service is started for it: the benchmark runs its own `janus -F <temp folder>`.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "setup_peers: run as root (apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! dpkg -s janus >/dev/null 2>&1; then
    apt-get update
    apt-get install -y janus
fi
janus --version | head -1
