"""RTSP 1.0 (RFC 2326) for a server, with no I/O: bytes in, events out; decisions in, bytes out.

Each part is usable alone and tested without sockets (tests/test_rtsp_protocol.py):
- parser: requests, responses and interleaved frames on a connection, every limit checked before the
  bytes are kept; serialization of requests and responses;
- session: what a request URI names, and the session states of one connection with their 4xx rules;
- transport: the Transport header of SETUP and its answer;
- sdp: the SDP of DESCRIBE;
- auth: Basic and Digest (RFC 2617, MD5).

The client side (media.rtsp_client) shares the parser, its limits and the Digest computation.
"""
