"""HTTP through a real server: the req object, response mapping, 404/405/413, request ids, health."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
from types import FrameType

import aiohttp
import pytest
from conftest import MakeClient

from engine.errors import HTTPError
from engine.http.request import MAX_FORM_FIELDS, parse_form, parse_off_loop


async def test_req_object_has_every_field(engine_client: MakeClient) -> None:
    client = await engine_client("api_request.js")
    resp = await client.post("/echo?a=1&a=2&b=", data={"f": "v", "g": "é"}, headers={"X-Thing": "Yes"})
    req = await resp.json()
    assert req["method"] == "POST"
    assert req["path"] == "/echo"
    assert req["query"] == {"a": "1", "b": ""}  # first value of a repeated name
    assert req["form"] == {"f": "v", "g": "é"}
    assert req["headers"]["x-thing"] == "Yes"
    assert all(k == k.lower() for k in req["headers"])
    assert req["body"] == "f=v&g=%C3%A9"
    assert req["params"] == {}
    assert "json" not in req


async def test_nul_bytes_in_path_and_body_arrive_whole(engine_client: MakeClient) -> None:
    client = await engine_client("api_request.js")
    req = await (await client.get("/files/a%00b")).json()
    assert req["path"] == "/files/a\x00b" and req["params"] == {"*": "a\x00b"}
    req = await (await client.post("/echo", data=b"x\x00y\x00z")).json()
    assert req["body"] == "x\x00y\x00z"
    json_type = {"Content-Type": "application/json"}
    req = await (await client.post("/echo", data=b'{"a":"\\u0000"}', headers=json_type)).json()
    assert req["json"] == {"a": "\x00"}
    req = await (await client.get("/echo?q=%00v&k%00=1")).json()
    assert req["query"] == {"q": "\x00v", "k\x00": "1"}


async def test_header_and_query_names_cannot_touch_prototypes(engine_client: MakeClient) -> None:
    client = await engine_client("api_request.js")
    req = await (await client.get("/echo?__proto__=x&constructor=y", headers={"__proto__": "z"})).json()
    assert req["query"] == {"__proto__": "x", "constructor": "y"}
    assert req["headers"]["__proto__"] == "z"


async def test_get_without_body_has_empty_body_and_form(engine_client: MakeClient) -> None:
    client = await engine_client("api_request.js")
    req = await (await client.get("/echo")).json()
    assert req["body"] == "" and req["form"] == {} and req["query"] == {}


async def test_json_body_is_parsed(engine_client: MakeClient) -> None:
    client = await engine_client("api_request.js")
    req = await (await client.put("/echo", json={"x": [1, 2], "y": None})).json()
    assert req["json"] == {"x": [1, 2], "y": None}
    assert json.loads(req["body"]) == {"x": [1, 2], "y": None}
    req = await (await client.patch("/echo", data=b'{"a":1}',
                                     headers={"Content-Type": "application/vnd.api+json"})).json()
    assert req["json"] == {"a": 1}


async def test_json_content_type_with_bad_json_leaves_json_undefined(engine_client: MakeClient) -> None:
    client = await engine_client("api_request.js")
    resp = await client.post("/echo", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 200
    req = await resp.json()
    assert "json" not in req and req["body"] == "{not json"


async def test_path_parameters_and_prefix(engine_client: MakeClient) -> None:
    client = await engine_client("api_request.js")
    req = await (await client.get("/users/42/posts/hello%20world")).json()
    assert req["params"] == {"id": "42", "post": "hello world"}
    req = await (await client.get("/users/a%2Fb/posts/x")).json()
    assert req["params"] == {"id": "a/b", "post": "x"}
    req = await (await client.get("/files/a/b/c.txt")).json()
    assert req["params"] == {"*": "a/b/c.txt"}
    req = await (await client.get("/files")).json()
    assert req["params"] == {"*": ""}
    # a literal route beats a parameter route
    assert await (await client.get("/users/me")).text() == "me"
    assert await (await client.post("/users/me")).text() == "posted to me"


async def test_not_found_and_method_not_allowed_are_json(engine_client: MakeClient) -> None:
    client = await engine_client("api_request.js")
    resp = await client.get("/nowhere")
    assert resp.status == 404 and resp.content_type == "application/json"
    err = (await resp.json())["error"]
    assert err["code"] == "not_found" and "/nowhere" in err["message"]
    assert err["request_id"] == resp.headers["X-Request-Id"]
    resp = await client.delete("/users/1/posts/2")
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    resp = await client.options("/users/1/posts/2")
    assert resp.status == 204 and resp.headers["Allow"] == "GET, HEAD, OPTIONS"


async def test_head_is_answered_by_get(engine_client: MakeClient) -> None:
    client = await engine_client("api_response.js")
    resp = await client.head("/r/string")
    assert resp.status == 200
    assert await resp.read() == b""
    assert resp.headers["Content-Length"] == str(len("plain text"))


async def test_request_id_on_every_response(engine_client: MakeClient) -> None:
    client = await engine_client("api_response.js")
    ids = set()
    for path in ("/r/string", "/health", "/nope", "/bad/throw"):
        resp = await client.get(path)
        ids.add(resp.headers["X-Request-Id"])
    assert len(ids) == 4
    resp = await client.get("/r/string", headers={"X-Request-Id": "trace-123"})
    assert resp.headers["X-Request-Id"] == "trace-123"
    resp = await client.get("/r/string", headers={"X-Request-Id": "bad id\twith tab"})
    assert resp.headers["X-Request-Id"] != "bad id\twith tab"


@pytest.mark.parametrize(
    ("path", "status", "content_type", "body"),
    [
        ("/r/string", 200, "text/plain", "plain text"),
        ("/r/object", 200, "application/json", {"a": 1, "list": [1, 2, "three"], "nested": {"ok": True}}),
        ("/r/array", 200, "application/json", [1, 2, 3]),
        ("/r/status", 201, "text/plain", "made"),
        ("/r/status-string", 202, "text/plain", "accepted"),
        ("/r/empty", 204, None, ""),
        ("/r/unicode", 200, "application/json", {"text": "héllo ✓ 😀", "lone": "\ud800"}),  # escaped, as browsers do
        ("/r/promise?x=7", 200, "text/plain", "resolved 7"),
    ],
)
async def test_response_mapping(engine_client: MakeClient, path: str, status: int, content_type: str | None,
                                body: object) -> None:
    client = await engine_client("api_response.js")
    resp = await client.get(path)
    assert resp.status == status
    if content_type:
        assert resp.content_type == content_type
    if isinstance(body, str):
        assert await resp.text() == body
    else:
        assert json.loads((await resp.read()).decode("utf-8", "replace")) == body


async def test_response_headers_and_content_type(engine_client: MakeClient) -> None:
    client = await engine_client("api_response.js")
    resp = await client.get("/r/headers")
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["X-Custom"] == "yes" and resp.headers["X-Count"] == "3"
    assert resp.headers["Content-Length"] == str(len("<b>hi</b>"))  # framing stays the server's
    assert await resp.text() == "<b>hi</b>"


@pytest.mark.parametrize(
    ("path", "status", "code", "logged"),
    [
        ("/bad/throw", 500, "script_error", "Error: handler exploded"),
        ("/bad/throw-string", 500, "script_error", "uncaught just a string"),
        ("/bad/nothing", 500, "bad_response", "returned nothing"),
        ("/bad/number", 500, "bad_response", "returned number 42"),
        ("/bad/array", 500, "bad_response", "returned an array"),
        ("/bad/status", 500, "bad_response", "status must be an integer from 200 to 599, got number 99"),
        ("/bad/status-big", 500, "bad_response", "got number 700"),
        ("/bad/body", 500, "bad_response", "body must be a string, an object or an array"),
        ("/bad/header", 500, "bad_response", "header X-Evil contains a line break"),
        ("/bad/header-name", 500, "bad_response", "not a valid HTTP token"),
        ("/bad/cyclic", 500, "bad_response", "could not be serialized"),
        ("/r/async-throw", 500, "script_error", "Error: async failure"),
    ],
)
async def test_bad_handler_results_are_json_errors(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture, path: str, status: int, code: str, logged: str
) -> None:
    client = await engine_client("api_response.js")
    resp = await client.get(path)
    assert resp.status == status
    err = (await resp.json())["error"]
    assert err["code"] == code
    assert err["request_id"] == resp.headers["X-Request-Id"]
    assert "exploded" not in err["message"] and "at " not in err["message"]  # no internals to the client
    assert any(logged in r.getMessage() and err["request_id"] in r.getMessage() for r in caplog.records), logged
    # and the script still serves
    assert (await client.get("/r/string")).status == 200


async def test_pending_promise_times_out(engine_client: MakeClient) -> None:
    client = await engine_client("api_response.js", handler_timeout_ms=200)
    resp = await client.get("/r/never")
    assert resp.status == 504
    assert (await resp.json())["error"]["code"] == "script_timeout"


async def test_body_over_the_limit_is_413(engine_client: MakeClient) -> None:
    client = await engine_client("api_request.js", max_body_bytes=1000)
    resp = await client.post("/echo", data=b"x" * 1001)
    assert resp.status == 413
    err = (await resp.json())["error"]
    assert err["code"] == "body_too_large" and "1000" in err["message"]

    async def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b"y" * 100

    resp = await client.post("/echo", data=chunks())
    assert resp.status == 413
    assert (await client.post("/echo", data=b"x" * 1000)).status == 200


async def test_malformed_form_bodies(engine_client: MakeClient) -> None:
    client = await engine_client("api_request.js")
    # multipart without a boundary
    resp = await client.post("/echo", data=b"--x\r\nstuff", headers={"Content-Type": "multipart/form-data"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad_form"
    # multipart whose body never closes its boundary
    resp = await client.post("/echo", data=b"--abc\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1",
                             headers={"Content-Type": "multipart/form-data; boundary=abc"})
    assert resp.status == 400
    # urlencoded junk and bad UTF-8 are read leniently, as browsers send them
    resp = await client.post("/echo", data=b"a=%zz&&b=\xff\xfe&=c",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200
    req = await resp.json()
    assert req["form"]["a"] == "%zz" and req["form"]["b"] == "\ufffd\ufffd"


async def test_multipart_form(engine_client: MakeClient) -> None:
    client = await engine_client("api_request.js")
    form = aiohttp.FormData()
    form.add_field("name", "Ada")
    form.add_field("file", b"file contents", filename="a.txt", content_type="text/plain")
    req = await (await client.post("/echo", data=form)).json()
    assert req["form"] == {"name": "Ada", "file": "file contents"}


URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}


def multipart(n: int, value: bytes = b"v") -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body of `n` fields f0..f{n-1}, and its Content-Type."""
    parts = (b'--bnd\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n%b\r\n' % (i, value) for i in range(n))
    return b"".join(parts) + b"--bnd--\r\n", {"Content-Type": "multipart/form-data; boundary=bnd"}


def urlencoded(n: int, value: str = "v") -> str:
    return "&".join(f"f{i}={value}" for i in range(n))


async def test_a_form_of_1000_fields_is_parsed_and_more_is_413(engine_client: MakeClient) -> None:
    client = await engine_client("api_request.js")
    assert MAX_FORM_FIELDS == 1000
    fields = {f"f{i}": "v" for i in range(1000)}
    for value in ("v", "v" * 900):  # a small body is parsed on the loop, a large one on a thread
        want = {k: value for k in fields}
        body, headers = multipart(1000, value.encode())
        req = await (await client.post("/echo", data=body, headers=headers)).json()
        assert req["form"] == want
        req = await (await client.post("/echo", data=urlencoded(1000, value), headers=URLENCODED)).json()
        assert req["form"] == want
    too_many = [(urlencoded(1001), URLENCODED), (urlencoded(100_000, ""), URLENCODED), multipart(1001),
                multipart(15_000)]  # about 1 MB each, as an attack would send
    for body, headers in too_many:
        data = io.BytesIO(body.encode() if isinstance(body, str) else body)  # aiohttp warns of raw bytes this large
        resp = await client.post("/echo", data=data, headers=headers)
        assert resp.status == 413
        error = (await resp.json())["error"]
        assert error["code"] == "too_many_fields"
        assert "holds more than 1000 fields" in error["message"] and "at most 1000" in error["message"]


def test_fields_are_counted_before_parsing() -> None:
    """The count is an upper bound: what it lets through parses to at most that many fields."""
    with pytest.raises(HTTPError, match="1001 counted"):  # a trailing `&` counts: it is only a bound
        parse_form("application/x-www-form-urlencoded", "", urlencoded(1000).encode() + b"&")
    body, headers = multipart(1000)
    assert len(parse_form("multipart/form-data", headers["Content-Type"], body)) == 1000
    # a quoted boundary is the same boundary
    with pytest.raises(HTTPError, match="1001 counted"):
        parse_form("multipart/form-data", 'multipart/form-data; boundary="bnd"', multipart(1001)[0])


def test_which_forms_are_parsed_off_the_loop() -> None:
    small, _ = multipart(20)
    assert not parse_off_loop("multipart/form-data", small)
    assert parse_off_loop("multipart/form-data", multipart(40)[0])  # many parts, however small
    nested = (b'--o\r\nContent-Disposition: form-data; name="a"\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n'
              + b"".join(b"--i\r\n\r\nx\r\n" for _ in range(40)) + b"--i--\r\n--o--\r\n")
    assert parse_off_loop("multipart/form-data", nested)  # parts inside a part count too
    assert not parse_off_loop("application/x-www-form-urlencoded", urlencoded(1000).encode())
    assert parse_off_loop("application/x-www-form-urlencoded", urlencoded(1000, "v" * 70).encode())
    assert not parse_off_loop("application/json", b"x" * 100_000)


def _in(frame: FrameType | None, code: object) -> bool:
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


async def test_a_large_form_is_parsed_while_the_loop_keeps_turning(engine_client: MakeClient) -> None:
    """A task that looks at every thread on each turn of the loop sees one of them in `parse_form`:
    the loop turned while the form was parsed. Parsed on the loop, no turn could ever see that."""
    client = await engine_client("api_request.js")
    body, headers = multipart(1000, b"v" * 900)
    loop_thread = threading.get_ident()
    turns_while_parsing = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal turns_while_parsing
        while not done.is_set():
            frames = sys._current_frames()
            if any(_in(f, parse_form.__code__) for tid, f in frames.items() if tid != loop_thread):
                turns_while_parsing += 1
            del frames
            await asyncio.sleep(0)

    task = asyncio.create_task(watch())
    resp = await client.post("/echo", data=body, headers=headers)
    done.set()
    await task
    assert resp.status == 200 and len((await resp.json())["form"]) == 1000
    assert turns_while_parsing >= 2


async def test_health(engine_client: MakeClient) -> None:
    client = await engine_client("other.js", "bad_syntax.js")
    resp = await client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "degraded"  # a script that does not load is something to look at
    assert body["scripts"] == {"loaded": 1, "failed": 1, "failed_names": ["bad_syntax.js"],
                               "failing_names": ["bad_syntax.js"]}
    assert body["uptime_seconds"] >= 0


HEADER_VALUES = {  # name -> (value, refused?)
    "vt": ("a\x0bb", True),
    "del": ("a\x7fb", True),
    "soh": ("a\x01b", True),
    "esc": ("\x1b[31m", True),
    "lone-surrogate": ("a\ud800b", True),
    "tab": ("a\tb", False),  # legal inside a field value
    "non-ascii": ("héllo ✓", False),  # sent as UTF-8 (obs-text), as aiohttp writes it
}
HEADER_SCRIPT = "\n".join(
    f'register("/h/{name}", () => ({{ body: "x", headers: {{ "X-V": {json.dumps(value)} }} }}));\n'
    f'register("/t/{name}", () => ({{ body: "x", contentType: "text/plain; x=" + {json.dumps(value)} }}));'
    for name, (value, _) in HEADER_VALUES.items()
)


@pytest.mark.parametrize("where", ["h", "t"], ids=["header", "contentType"])
@pytest.mark.parametrize("name", list(HEADER_VALUES))
async def test_header_values_http_cannot_carry_are_bad_responses(
    engine_client: MakeClient, caplog: pytest.LogCaptureFixture, where: str, name: str
) -> None:
    """What aiohttp's header writer refuses is refused first, as a JSON 500, not a dropped connection."""
    client = await engine_client(extra={"headers.js": HEADER_SCRIPT})
    value, refused = HEADER_VALUES[name]
    resp = await client.get(f"/{where}/{name}")
    if refused:
        assert resp.status == 500
        err = (await resp.json())["error"]
        assert err["code"] == "bad_response" and err["request_id"] == resp.headers["X-Request-Id"]
        what = "header X-V contains" if where == "h" else "contentType contains"
        assert any(what in r.getMessage() and f"U+{ord(value[1] if value[0] == 'a' else value[0]):04X}"
                   in r.getMessage() for r in caplog.records)
    else:
        assert resp.status == 200 and await resp.text() == "x"
        got = resp.headers["X-V"] if where == "h" else resp.headers["Content-Type"]
        assert got.endswith(value)
    assert (await client.get("/h/tab")).status == 200  # the same client, served on


ODD_PATHS = [
    "/a%0ab", "/%0a", "/a%0db", "/%0d%0a", "/a%00b", "/a%09b", "/a%7fb", "/a%ffb", "/a%c3%28", "/%E2%9C%93",
    "/a%", "/%zz", "/a%0", "//", "//x//y", "/a/../b", "/%2e%2e/x", "/a%2fb", "/a%20b", "/a;b",
    "/" + "x" * 4000, "/health%0a", "/graphql%0a", "/_engine/scripts/a%0a.js", "http://x/a%0ab",
]


@pytest.mark.parametrize("path", ODD_PATHS, ids=[p[:24] for p in ODD_PATHS])
async def test_odd_paths_get_the_json_404(engine_client: MakeClient, path: str) -> None:
    """Whatever a path decodes to, with nothing registered there the answer is the engine's 404.
    A raw socket: client libraries normalise paths."""
    client = await engine_client("api_request.js")
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert status == "HTTP/1.1 404 Not Found", raw
    assert headers["content-type"].startswith("application/json")
    err = json.loads(body)["error"]
    assert err["code"] == "not_found" and err["request_id"] == headers["x-request-id"]
