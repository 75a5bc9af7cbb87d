// Every shape a handler may return, and the ones it may not.
register("/r/string", function () { return "plain text"; });
register("/r/object", function () { return { body: { a: 1, list: [1, 2, "three"], nested: { ok: true } } }; });
register("/r/array", function () { return { body: [1, 2, 3] }; });
register("/r/status", function () { return { status: 201, body: "made" }; });
register("/r/status-string", function () { return { status: "202", body: "accepted" }; });
register("/r/empty", function () { return { status: 204 }; });
register("/r/headers", function () {
  return { body: "<b>hi</b>", contentType: "text/html; charset=utf-8", headers: { "X-Custom": "yes", "X-Count": 3, "Content-Length": "999" } };
});
register("/r/unicode", function () { return { body: { text: "héllo ✓ 😀", lone: "\ud800" } }; });
register("/r/promise", function (req) {
  return new Promise(function (resolve) { setTimeout(function () { resolve({ status: 200, body: "resolved " + req.query.x }); }, 20); });
});
register("/r/async-throw", async function () { await null; throw new Error("async failure"); });
register("/r/never", function () { return new Promise(function () {}); });
// Bad returns: each must give a JSON 500 with a request id, and the log says why.
register("/bad/throw", function () { throw new Error("handler exploded"); });
register("/bad/throw-string", function () { throw "just a string"; });
register("/bad/nothing", function () {});
register("/bad/number", function () { return 42; });
register("/bad/array", function () { return [1, 2]; });
register("/bad/status", function () { return { status: 99, body: "x" }; });
register("/bad/status-big", function () { return { status: 700 }; });
register("/bad/body", function () { return { body: 12 }; });
register("/bad/header", function () { return { body: "x", headers: { "X-Evil": "a\r\nSet-Cookie: x=1" } }; });
register("/bad/header-name", function () { return { body: "x", headers: { "Bad Name": "v" } }; });
register("/bad/cyclic", function () { const o = {}; o.self = o; return { body: o }; });
