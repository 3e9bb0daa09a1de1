"""The media engine: streams, tracks, packet routing. Knows nothing of sessions, appKeys or JSON."""
