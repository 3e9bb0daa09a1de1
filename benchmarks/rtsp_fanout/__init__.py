"""Pieces of benchmarks/bench_rtsp_fanout.py: the RTP feeder and the counting RTSP clients."""
