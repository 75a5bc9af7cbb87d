"""Streams: the registry of paths, connections, ids and history, and one file per transport."""
