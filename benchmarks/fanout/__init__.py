"""Support modules of benchmarks/bench_fanout.py: the media it publishes (source), the counting viewer
(viewer), the client worker processes (worker), the loopback sniffer (sniffer), the aiortc MediaRelay
server it compares with (relay_server) and /proc readings of the server process (procstat)."""
