// Seed-era streams: valid, invalid and empty paths; two streams; string and object messages; a
// message at load time.
const results = {};
function attempt(label, fn) {
  try { fn(); results[label] = "ok"; } catch (e) { results[label] = e.message; }
}
attempt("valid", () => registerWebStream("/notifications"));
attempt("second", () => registerWebStream("/chat/room1"));
attempt("again", () => registerWebStream("/notifications"));
attempt("empty", () => registerWebStream(""));
attempt("missing", () => registerWebStream());
attempt("no-slash", () => registerWebStream("notifications"));
attempt("too-long", () => registerWebStream("/" + "x".repeat(200)));
attempt("space", () => registerWebStream("/a b"));
attempt("query", () => registerWebStream("/a?b"));
attempt("hash", () => registerWebStream("/a#b"));
attempt("control", () => registerWebStream("/a\u0001"));
attempt("number", () => registerWebStream(42));
attempt("reserved", () => registerWebStream("/graphql/subscription/x"));
attempt("bad-options", () => registerWebStream("/opt", 5));

sendStreamMessage({ type: "loaded", message: "sent at load time" });

function notify(req) {
  if (req.query.kind === "string") sendStreamMessage(JSON.stringify({ type: "string", n: Number(req.query.n) }));
  else sendStreamMessage({ type: "object", n: Number(req.query.n) });
  return { status: 200, body: "sent" };
}
register("/notify", "notify", "POST");
register("/stream-results", function () { return { body: results }; });
