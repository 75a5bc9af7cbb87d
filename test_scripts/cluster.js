// Several engine processes on one Redis: a plain stream, a pattern with hooks, and routes that
// publish, address connections and report which process answered.
const me = Math.random().toString(36).slice(2, 10); // this process's copy of the script
const seen = { messages: [] };

registerWebStream("/feed");
registerWebStream("/burst"); // no hooks: every reader of it gets the same bytes
registerWebStream("/rooms/{room}", {
  onConnect(conn) { return { type: "welcome", id: conn.id, process: me }; },
  onMessage(conn, data) {
    seen.messages.push({ id: conn.id, data: data });
    if (data === "whereami") return { process: me, id: conn.id };
    sendStreamMessageToPath(conn.path, { type: "say", from: conn.id, text: data });
    return undefined;
  },
});

register("/who", () => ({ body: { process: me } }));
register("/pub", (req) => {
  const n = Number(req.query.n || 1);
  const path = req.query.path || "/feed";
  for (let i = 0; i < n; i++) sendStreamMessageToPath(path, { i: i, from: me });
  return { body: { sent: n, process: me } };
});
register("/to", (req) => { sendToConnection(req.query.id, { dm: req.query.text, from: me }, { event: "dm" }); return "ok"; });
register("/kick", (req) => { closeConnection(req.query.id, req.query.reason || "kicked"); return "ok"; });
register("/seen", () => ({ body: seen }));

// A ticker at the top level: the cluster's, run by one process however many there are. A local
// interval beside it runs on every process.
let tick = 0;
setInterval(() => { tick++; sendStreamMessageToPath("/ticks", { tick: tick, process: me }); }, 100);
registerWebStream("/ticks");
let localTicks = 0;
setLocalInterval(() => { localTicks++; }, 20);
register("/local-ticks", () => ({ body: { localTicks: localTicks, process: me } }));
// a top-level loop on a one-shot sleep: parked on the processes that are not elected
let looped = 0;
(async function loop() { for (;;) { await new Promise((r) => setTimeout(r, 50)); looped++; } })();
register("/looped", () => ({ body: { looped: looped, process: me } }));
