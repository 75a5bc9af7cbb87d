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
