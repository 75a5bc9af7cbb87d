// Channels and connections: a pattern with every hook, a plain stream beside it, a pattern with no
// hooks, streams that need a token. What the hooks saw is kept for the tests to ask.
const seen = { connects: [], messages: [], disconnects: [] };

function spin(ms) { const t = Date.now(); while (Date.now() - t < ms) {} }

registerWebStream("/rooms/{room}", {
  onConnect(conn) {
    seen.connects.push({ id: conn.id, path: conn.path, params: conn.params, query: conn.query, transport: conn.transport, user: conn.user });
    if (conn.query.deny === "1") return false;
    if (conn.query.throw === "1") throw new Error("room " + conn.params.room + " is closed");
    if (conn.query.spin) spin(Number(conn.query.spin));
    if (conn.query.dm === "1") sendToConnection(conn.id, "early", { event: "dm" });
    if (conn.query.closeSelf === "1") { closeConnection(conn.id, "not today"); return { type: "never seen" }; }
    if (conn.query.waitThenJoin) {
      return new Promise((resolve) => setTimeout(() => {
        sendStreamMessageToPath(conn.path, { type: "join", id: conn.id });
        resolve({ type: "welcome", late: true });
      }, Number(conn.query.waitThenJoin)));
    }
    if (conn.query.wait) return new Promise((resolve) => setTimeout(() => resolve({ type: "welcome", late: true }), Number(conn.query.wait)));
    sendStreamMessageToPath(conn.path, { type: "join", id: conn.id });
    if (conn.query.quiet === "1") return undefined;
    return { type: "welcome", id: conn.id, room: conn.params.room };
  },
  onMessage(conn, data) {
    seen.messages.push({ id: conn.id, data: data });
    if (data === "throw") throw new Error("bad message");
    if (data === "spin") spin(5000);
    if (data === "private") { sendToConnection(conn.id, "just you", { event: "dm" }); return undefined; }
    if (data === "kick") { closeConnection(conn.id, "kicked"); return "bye"; }
    if (data !== null && typeof data === "object" && data.wait) {
      return new Promise((resolve) => setTimeout(() => resolve("waited " + data.n), data.wait));
    }
    if (data !== null && typeof data === "object" && data.echo !== undefined) return data.echo;
    if (data === "whoami") return { id: conn.id, room: conn.params.room };
    sendStreamMessageToPath(conn.path, { type: "say", from: conn.id, text: data });
    return undefined;
  },
  onDisconnect(conn, reason) {
    seen.disconnects.push({ id: conn.id, path: conn.path, reason: reason });
    console.log("left " + conn.id + ": " + reason);
    if (conn.query.throwOnLeave === "1") throw new Error("could not say goodbye");
    sendStreamMessageToPath(conn.path, { type: "leave", id: conn.id, reason: reason });
  },
});
registerWebStream("/rooms/lobby"); // a plain stream: more specific than the pattern, so it wins
registerWebStream("/feeds/{feed}"); // a pattern with no hooks: its readers are plain
registerWebStream("/inbox/{user}", { auth: "required" });
registerWebStream("/me", { auth: "required", onConnect: "greet", onDisconnect: "farewell" });

function greet(conn) { return { user: conn.user, query: conn.query }; }
function farewell(conn, reason) { seen.disconnects.push({ id: conn.id, path: conn.path, reason: reason }); }

register("/ch/seen", () => ({ body: seen }));
register("/ch/send", (req) => { sendStreamMessageToPath(req.query.path, req.query.data || "x", req.query.event ? { event: req.query.event } : undefined); return "ok"; });
register("/ch/broadcast", (req) => {
  sendStreamMessage(req.query.data || "all", req.query.path ? { path: req.query.path.split(",") } : undefined);
  return "ok";
});
register("/ch/burst", (req) => {
  const text = "x".repeat(Number(req.query.kb) * 1024);
  for (let i = 0; i < Number(req.query.n); i++) sendStreamMessageToPath(req.query.path, text);
  return "ok";
});
register("/ch/to", (req) => { sendToConnection(req.query.id, req.query.data || "x"); return "ok"; });
register("/ch/close", (req) => { closeConnection(req.query.id, req.query.reason); return "ok"; });
register("/ch/errors", () => {
  const out = {};
  const attempt = (label, fn) => { try { fn(); out[label] = "ok"; } catch (e) { out[label] = e.message; } };
  const someId = "0123abcd.AAAAAAAAAAAAAAAA";
  attempt("to-pattern", () => sendStreamMessageToPath("/rooms/{room}", "x"));
  attempt("to-encoded", () => sendStreamMessageToPath("/rooms/a%20b", "x"));
  attempt("to-unknown", () => sendStreamMessageToPath("/nope/x", "x"));
  attempt("to-deeper", () => sendStreamMessageToPath("/rooms/a/b", "x"));
  attempt("to-empty-param", () => sendStreamMessageToPath("/rooms/", "x"));
  attempt("to-channel", () => sendStreamMessageToPath("/rooms/made-by-a-send", "x"));
  attempt("path-unknown", () => sendStreamMessage("x", { path: ["/rooms/a", "/nope/x"] }));
  attempt("event-reserved", () => sendStreamMessageToPath("/rooms/a", "x", { event: "connected" }));
  attempt("event-reserved-to", () => sendToConnection(someId, "x", { event: "reset" }));
  attempt("conn-bad-id", () => sendToConnection("nope", "x"));
  attempt("conn-number-id", () => sendToConnection(5, "x"));
  attempt("conn-path", () => sendToConnection(someId, "x", { path: "/rooms/a" }));
  attempt("conn-big", () => sendToConnection(someId, "x".repeat(2 * 1024 * 1024)));
  attempt("close-reason-type", () => closeConnection(someId, 5));
  attempt("close-reason-long", () => closeConnection(someId, "x".repeat(201)));
  attempt("same-shape", () => registerWebStream("/rooms/{id}"));
  attempt("star", () => registerWebStream("/files/*"));
  attempt("percent", () => registerWebStream("/a%20b"));
  attempt("param-twice", () => registerWebStream("/p/{a}/{a}"));
  attempt("half-param", () => registerWebStream("/p/x{a}"));
  attempt("hook-type", () => registerWebStream("/h1", { onConnect: 5 }));
  attempt("hook-name", () => registerWebStream("/h2", { onMessage: "noSuchFunction" }));
  attempt("auth-value", () => registerWebStream("/h3", { auth: "yes" }));
  attempt("options-again", () => registerWebStream("/rooms/{room}", { onConnect() {} }));
  attempt("again", () => registerWebStream("/rooms/{room}"));
  attempt("get-route-shape", () => register("/rooms/{x}", () => "x"));
  return { body: out };
});
