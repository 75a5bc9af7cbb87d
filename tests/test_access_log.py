"""The access log never carries a `?token=` (nor `access_token`): routes, streams, the admin API."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest
from conftest import MakeClient, make_config, wait_for
from test_front import STREAM_GET, connect, read_head, read_until

from engine.http.access_log import REDACTED, redact
from engine.http.keys import STREAMS

SECRET = "s3cret"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]


async def test_tokens_are_redacted_from_the_access_log(
    engine_client: MakeClient, scripts_dir, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(scripts_dir)
    config = replace(config, logs=replace(config.logs, access=True), admin=replace(config.admin, token=SECRET))
    client = await engine_client("api_request.js", "api_streams.js", config=config)
    caplog.set_level(logging.INFO, logger="aiohttp.access")

    # A route, with the token among other parameters and in the Referer.
    resp = await client.get(f"/echo?a=1&token={SECRET}&b=2", headers={"Referer": f"http://page/?token={SECRET}"})
    assert resp.status == 200 and (await resp.json())["query"]["token"] == SECRET  # the script still gets it
    assert (await client.get(f"/echo?access_token={SECRET}")).status == 200
    # The admin API, which reads ?token= (EventSource cannot send headers); also as %74oken, which
    # the server decodes to `token` (raw bytes: a client library might normalise it).
    assert (await client.get(f"/_engine/scripts?token={SECRET}")).status == 200
    reader, writer = await connect(client)
    writer.write(f"GET /_engine/scripts?%74oken={SECRET} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert (await read_head(reader))[0] == "HTTP/1.1 200 OK"
    writer.close()
    # Streams: a lean reader, one that aiohttp serves (a second request on its connection), the live log.
    lean_r, lean_w = await connect(client)
    lean_w.write(STREAM_GET.replace(b"/s/a", f"/s/a?token={SECRET}".encode()))
    await read_head(lean_r)
    served = await client.get(f"/s/a?token={SECRET}")
    logs = await client.get(f"/_engine/logs?token={SECRET}")
    assert served.status == 200 and logs.status == 200
    await read_until(lean_r, b"retry: 2000\n\n\r\n")
    await wait_for(lambda: client.app[STREAMS].connection_count == 3, what="three readers")
    client.app[STREAMS].close_all()  # their responses end, and are logged
    await asyncio.wait_for(served.read(), 5)
    await asyncio.wait_for(logs.read(), 5)
    lean_w.close()

    lines = await wait_for(lambda: (ls := access_lines(caplog)) and len(ls) >= 7 and ls, what="every access line")
    assert not [r for r in caplog.records if SECRET in r.getMessage() or SECRET in str(r.__dict__)]
    assert sum(REDACTED in line for line in lines) == 6, lines
    assert any('"GET /s/a HTTP/1.1" 200 stream' in line for line in lines), lines  # the lean reader's: path only
    assert any(f'"GET /echo?a=1&token={REDACTED}&b=2 HTTP/1.1" 200' in line and f'"http://page/?token={REDACTED}"'
               in line for line in lines), lines


@pytest.mark.parametrize(("line", "expected"), [
    ("GET /a?token=x HTTP/1.1", f"GET /a?token={REDACTED} HTTP/1.1"),
    ("GET /a?x=1&TOKEN=y&z=2;access_token=w HTTP/1.1",
     f"GET /a?x=1&TOKEN={REDACTED}&z=2;access_token={REDACTED} HTTP/1.1"),
    ("GET /a?%74oken=x&tok=y HTTP/1.1", f"GET /a?%74oken={REDACTED}&tok=y HTTP/1.1"),
    ("http://page/p?token=x#frag", f"http://page/p?token={REDACTED}#frag"),
    ("GET /token=x HTTP/1.1", "GET /token=x HTTP/1.1"),  # a path, not a query
    ("GET /a?tokens=x&token HTTP/1.1", "GET /a?tokens=x&token HTTP/1.1"),
])
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected
