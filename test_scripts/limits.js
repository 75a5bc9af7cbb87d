// Runaway code: each call fails alone, the context stays usable.
let calls = 0;
register("/limits/loop", function () { calls++; while (true) {} });
register("/limits/bomb", function () { calls++; const a = []; while (true) a.push("x".repeat(1024) + a.length); });
register("/limits/bomb-caught", function () {
  // The pattern that crashed quickjs 1.19.4: catch the out-of-memory error, then allocate from it.
  calls++;
  try { const a = []; while (true) a.push("x".repeat(1024) + a.length); }
  catch (e) { return { body: { caught: e.name + ": " + e.message, stack: String(e.stack) } }; }
});
register("/limits/string-bomb", function () { calls++; let s = "x"; while (true) s = s + s; });
register("/limits/stack", function () { calls++; function r() { return r() + 1; } return String(r()); });
register("/limits/busy", function (req) {
  const ms = Number(req.query.ms || 200);
  writeLog("busy for " + ms + " ms");
  const until = Date.now() + ms;
  while (Date.now() < until) {}
  return "done";
});
register("/limits/promise-loop", function () { return Promise.resolve().then(function () { while (true) {} }); });
register("/limits/calls", function () { return { body: { calls: calls } }; });
register("/limits/spin-after-await", async function () { calls++; await null; while (true) {} });
register("/limits/spin-after-then", function () { calls++; return Promise.resolve(1).then(() => { for (;;) {} }); });
register("/limits/logs", function (req) {
  const n = Number(req.query.n);
  for (let i = 0; i < n; i++) writeLog("line " + i);
  return "logged " + n;
});
registerWebStream("/limits/stream");
register("/limits/sends", function (req) {
  const n = Number(req.query.n);
  for (let i = 1; i <= n; i++) sendStreamMessage(String(i));
  return "sent " + n;
});
let release = null;
const held = new Promise((resolve) => { release = resolve; });
register("/limits/hold", async function () { await held; return "released"; });
register("/limits/release", function () { release(); return "ok"; });
