// One channel over every transport: a pattern with every hook, a plain stream, a stream that needs
// a token. What the hooks saw is kept for the tests to ask.
const seen = { connects: [], messages: [], disconnects: [] };

registerWebStream("/t/{room}", {
  onConnect(conn) {
    seen.connects.push({ id: conn.id, transport: conn.transport });
    if (conn.query.deny === "1") return false;
    if (conn.query.spin === "1") { const t = Date.now(); while (Date.now() - t < 5000) {} }
    return { hello: conn.transport };
  },
  onMessage(conn, data) {
    seen.messages.push({ id: conn.id, transport: conn.transport, data: data });
    if (data === "kick") { closeConnection(conn.id, "kicked"); return undefined; }
    if (data === "whoami") return { id: conn.id, transport: conn.transport };
    if (data === "private") { sendToConnection(conn.id, { just: "you" }); return undefined; }
    if (data === "throw") throw new Error("bad message");
    if (data !== null && typeof data === "object" && data.wait) {
      return new Promise((resolve) => setTimeout(() => resolve("waited " + data.n), data.wait));
    }
    if (data !== null && typeof data === "object" && data.echo !== undefined) return data.echo;
    sendStreamMessageToPath(conn.path, { from: conn.id, text: data });
    return undefined;
  },
  onDisconnect(conn, reason) {
    seen.disconnects.push({ id: conn.id, transport: conn.transport, reason: reason });
  },
});
registerWebStream("/plain");
registerWebStream("/secret/{x}", { auth: "required" });

register("/ctl/seen", () => ({ body: seen }));
register("/ctl/send", (req) => {
  const n = Number(req.query.n || 1);
  const from = Number(req.query.from || 0);
  for (let i = from; i < from + n; i++) {
    const data = req.query.text ? req.query.text + i : { n: i };
    sendStreamMessageToPath(req.query.path, data, req.query.event ? { event: req.query.event } : undefined);
  }
  return "ok";
});
register("/ctl/burst", (req) => {
  const text = "x".repeat(Number(req.query.kb) * 1024);
  for (let i = 0; i < Number(req.query.n); i++) sendStreamMessageToPath(req.query.path, text);
  return "ok";
});
register("/ctl/close", (req) => { closeConnection(req.query.id, req.query.reason || "closed by test"); return "ok"; });
