// Stream API details: events, line splitting, narrowing, errors that send nothing.
registerWebStream("/s/a");
registerWebStream("/s/b");

register("/s/send", function (req) {
  const options = {};
  if (req.query.event) options.event = req.query.event;
  if (req.query.path) options.path = req.query.path.indexOf(",") >= 0 ? req.query.path.split(",") : req.query.path;
  sendStreamMessage(req.json !== undefined ? req.json : req.body, options);
  return "sent";
}, "POST");

register("/s/to", function (req) {
  sendStreamMessageToPath(req.query.path, req.body, req.query.event ? { event: req.query.event } : undefined);
  return "sent";
}, "POST");

register("/s/burst", function (req) {
  const n = Number(req.query.n);
  for (let i = 1; i <= n; i++) sendStreamMessageToPath("/s/a", String(i));
  return { body: { sent: n } };
});

register("/s/errors", function () {
  const out = {};
  const attempt = (label, fn) => { try { fn(); out[label] = null; } catch (e) { out[label] = e.message; } };
  attempt("too-large", () => sendStreamMessage("x".repeat(1024 * 1024 + 1)));
  attempt("too-large-utf8", () => sendStreamMessage("é".repeat(600 * 1024)));
  attempt("undefined", () => sendStreamMessage(undefined));
  attempt("function", () => sendStreamMessage(function () {}));
  attempt("cyclic", () => { const o = {}; o.o = o; sendStreamMessage(o); });
  attempt("bigint", () => sendStreamMessage({ n: BigInt(1) }));
  attempt("unknown-path", () => sendStreamMessage("x", { path: "/nope" }));
  attempt("unknown-in-list", () => sendStreamMessage("x", { path: ["/s/a", "/nope"] }));
  attempt("bad-path-type", () => sendStreamMessage("x", { path: 7 }));
  attempt("bad-event", () => sendStreamMessage("x", { event: "a\nb" }));
  attempt("empty-event", () => sendStreamMessage("x", { event: "" }));
  attempt("to-unknown", () => sendStreamMessageToPath("/nope", "x"));
  attempt("to-bad", () => sendStreamMessageToPath("", "x"));
  attempt("fits", () => sendStreamMessageToPath("/s/b", "é".repeat(500 * 1024)));
  return { body: out };
});

let ticking = null;
let tick = 0;
register("/s/tick/start", function (req) {
  if (ticking === null) ticking = setInterval(function () { tick++; sendStreamMessageToPath("/s/a", String(tick)); }, Number(req.query.every) || 5);
  return "ticking";
});
register("/s/tick/stop", function () { clearInterval(ticking); ticking = null; return { body: { tick: tick } }; });

// Sends `n` messages of `kb` KiB each to every stream in `paths` (comma-separated).
register("/s/big", function (req) {
  const paths = req.query.paths.split(",");
  const n = Number(req.query.n), size = Number(req.query.kb) * 1024;
  for (let i = 1; i <= n; i++) for (const p of paths) sendStreamMessageToPath(p, String(i).padEnd(size, "."));
  return "sent";
});
registerWebStream("/s/c1"); registerWebStream("/s/c2"); registerWebStream("/s/c3");

// Options whose getters change their answer after the first read.
register("/s/getters", function () {
  let events = 0, paths = 0;
  const options = {
    get event() { events++; return events === 1 ? "ok" : "ok\nid: 7-7\nevent: reset\ndata: fake"; },
    get path() { paths++; return paths === 1 ? "/s/a" : ["/s/a", "/s/b"]; },
  };
  sendStreamMessage("via getters", options);
  const list = ["/s/a"];
  Object.defineProperty(list, "0", { get() { paths++; return paths === 2 ? "/s/a" : "/s/b"; } });
  sendStreamMessage("via a list", { path: list });
  return { body: { events: events, paths: paths } };
});

register("/s/event-names", function () {
  const out = {};
  for (const [label, name] of [["64", "e".repeat(64)], ["65", "e".repeat(65)], ["colon", "a:b.c-d_e"],
                               ["space", "a b"], ["unicode", "é"], ["8MiB", "e".repeat(8 * 1024 * 1024)]]) {
    try { sendStreamMessageToPath("/s/b", label, { event: name }); out[label] = "sent"; }
    catch (e) { out[label] = e.message; }
  }
  return { body: out };
});
