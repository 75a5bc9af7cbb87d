"""`GET <channel path>` served by aiohttp (a reader the front left to it, or whose stream asks for a
token or a script's say), and `POST <channel path>` with `X-Connection-Id`: a client's message."""

from __future__ import annotations

from aiohttp import web

from engine.http.keys import CONFIG, STREAMS
from engine.streams.registry import Stream
from engine.streams.sse import open_channel, serve_sse


async def read_channel(request: web.Request, stream: Stream, rid: str) -> web.StreamResponse:
    app = request.app
    registry = app[STREAMS]
    channel = open_channel(registry, request.path)
    return await serve_sse(request, channel, registry, app[CONFIG].streams, rid)
