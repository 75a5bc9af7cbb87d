"""HTTP/1.0 stream readers get a plain body (no chunk framing), ended by closing the connection;
HTTP/1.1 readers of the same streams keep their chunked one. Raw sockets: the exact bytes matter."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

from conftest import MakeClient
from test_front import STREAM_GET, connect, read_head, read_until

from engine.http.keys import STREAMS, SUBSCRIPTIONS


async def body_to_eof(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5)


async def test_an_http10_stream_reader_gets_a_plain_body(engine_client: MakeClient) -> None:
    client = await engine_client("api_streams.js")
    assert (await client.post("/s/to?path=/s/a", data="before")).status == 200  # history to replay
    old_r, old_w = await connect(client)
    old_w.write(b"GET /s/a?lastEventId=nope HTTP/1.0\r\nHost: x\r\n\r\n")
    status, headers = await read_head(old_r)
    assert status == "HTTP/1.0 200 OK"
    assert "transfer-encoding" not in headers and "content-length" not in headers
    assert headers["content-type"] == "text/event-stream; charset=utf-8" and headers["x-request-id"]
    new_r, new_w = await connect(client)  # an HTTP/1.1 reader of the same stream, for comparison
    new_w.write(STREAM_GET)
    assert (await read_head(new_r))[1]["transfer-encoding"] == "chunked"
    await read_until(new_r, b"retry: 2000\n\n\r\n")

    assert (await client.post("/s/send", data="one\ntwo")).status == 200
    assert re.fullmatch(rb"[0-9a-f]+\r\nid: \S+\ndata: one\ndata: two\n\n\r\n",
                        await read_until(new_r, b"\n\n\r\n"))
    client.app[STREAMS].close_all()  # the server's end of the response: the connection closes
    body = await body_to_eof(old_r)
    assert re.fullmatch(rb"retry: 2000\n\n"
                        rb"event: reset\ndata: \{.*\}\n\n"  # its id was unknown: a notice, then the history
                        rb"id: \S+\ndata: before\n\n"
                        rb"id: \S+\ndata: one\ndata: two\n\n", body), body
    assert await body_to_eof(new_r) == b"0\r\n\r\n"  # HTTP/1.1: the last chunk, as before
    for w in (old_w, new_w):
        w.close()


async def test_an_http10_graphql_sse_reader_gets_a_plain_body(engine_client: MakeClient) -> None:
    client = await engine_client("graphql_types.js")
    query = quote("subscription { ticks(from: 1) }")
    reader, writer = await connect(client)
    writer.write(f"GET /graphql/sse?query={query} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    status, headers = await read_head(reader)
    assert status == "HTTP/1.0 200 OK" and "transfer-encoding" not in headers
    assert await read_until(reader, b"\n\n") == b'event: next\ndata: {"data":{"ticks":1}}\n\n'
    assert client.app[SUBSCRIPTIONS].count == 1
    assert (await client.get("/gql/tick?n=2")).status == 200
    assert await read_until(reader, b"\n\n") == b'event: next\ndata: {"data":{"ticks":2}}\n\n'
    client.app[SUBSCRIPTIONS].close_all()
    assert await body_to_eof(reader) == b"event: complete\ndata: \n\n"
    writer.close()

    # A document with errors: `next` and `complete` written at once, then the end.
    reader, writer = await connect(client)
    writer.write(f"GET /graphql/sse?query={quote('{ nope }')} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    status, _ = await read_head(reader)
    assert status == "HTTP/1.0 200 OK"
    body = await body_to_eof(reader)
    assert re.fullmatch(rb'event: next\ndata: \{"errors":\[.*\]\}\n\nevent: complete\ndata: \n\n', body), body
    writer.close()
