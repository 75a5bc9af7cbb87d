"""The transports other than SSE (which lives in `engine.streams.sse`, below aiohttp as well): how one
channel is also served over WebSocket, long-poll and NDJSON, and how a request picks one."""
