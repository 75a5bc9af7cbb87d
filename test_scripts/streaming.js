// Streaming handlers: routes that yield. What their `finally` blocks saw is counted for the tests.
const state = { produced: 0, finals: 0, running: 0, gated: 0 };
function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }
let gate = null;
function waitGate() { state.gated++; return new Promise((resolve) => { gate = resolve; }); }

register("/s/state", () => ({ body: state }));
register("/s/open", () => { if (gate) { const g = gate; gate = null; g(); } return "ok"; });

// yields one item, then waits until /s/open: proves the first item is written before the end
register("/s/gated", async function* () {
  yield { first: true };
  await waitGate();
  yield { second: true };
});

register("/s/many", async function* (req) {
  const n = Number(req.query.n || 100000);
  const pad = "x".repeat(Number(req.query.pad || 0));
  state.running++;
  try {
    for (let i = 0; i < n; i++) { state.produced = i + 1; yield { i: i, pad: pad }; }
  } finally {
    state.running--;
    state.finals++;
    sendStreamMessage({ finally: true });
  }
});
registerWebStream("/s/log");

register("/s/sse", async function* () {
  yield { event: "tick", id: "1", data: { n: 1 }, retry: 500 };
  yield "plain text";
  yield { n: 3 };
});
register("/s/csv", (req) => {
  function* rows() { yield "a,b\n"; for (let i = 0; i < 3; i++) yield i + "," + i * i + "\n"; }
  return { contentType: "text/csv", headers: { "Content-Disposition": "attachment; filename=rows.csv" }, body: rows() };
});
register("/s/bytes", () => {
  function* chunks() { yield new Uint8Array([0, 1, 2, 255]); yield new Uint8Array([128]).buffer; }
  return { contentType: "application/octet-stream", body: chunks() };
});
register("/s/throws", async function* () { yield 1; throw new Error("kaboom mid-stream"); });
register("/s/throws-first", async function* () { throw new Error("kaboom at once"); });
register("/s/spin", function* () { yield 1; while (true) {} });
register("/s/never", async function* () { await new Promise(() => {}); yield 1; });
register("/s/bad", function* (req) {
  if (req.query.kind === "undefined") yield undefined;
  if (req.query.kind === "function") yield function () {};
  const cycle = {}; cycle.self = cycle;
  yield cycle;
});
async function* ticks(n, every) { for (let i = 0; i < n; i++) { yield i; await sleep(every); } }
register("/s/slow", () => ({ body: ticks(20, 50) }));
register("/s/slow-long", () => ({ body: ticks(20, 50), maxSeconds: 10 }));
register("/s/bad-max", () => ({ body: ticks(1, 1), maxSeconds: -1 }));
register("/s/no-content", () => ({ status: 204, body: ticks(3, 1) }));
register("/s/late", async () => {
  // started (its first value taken here), so its `finally` is armed: a generator never started has none to run
  const g = (async function* () { try { yield 0; yield 1; yield 2; } finally { state.finals++; } })();
  await g.next();
  await waitGate();
  return { body: g };
});
register("/s/stuck", async function* () {
  try { yield 1; await sleep(700); yield 2; } finally { state.finals++; }
});
register("/s/unsendable", function* () { try { yield undefined; } finally { state.finals++; } });
register("/s/sleepy", async function* () {
  try { yield 1; await sleep(60000); yield 2; } finally { state.finals++; }
});
// an interval the generator set (ticking while it streams), and a later timer it leaves behind
// when it ends by itself; /s/probe measures, from JS, whether ticks go on after it stopped
state.ticks = 0;
state.probe = null;
state.late = null;
register("/s/ticking", async function* () {
  setInterval(() => { state.ticks++; }, 10);
  try { for (;;) { yield state.ticks; await sleep(60000); } } finally { state.finals++; }
});
register("/s/leaves-a-timer", async function* () {
  const at = Date.now();
  setTimeout(() => { state.late = Date.now() - at; }, 300);
  yield "done";
});
register("/s/probe", () => {
  const t0 = state.ticks;
  state.probe = null;
  setTimeout(() => { state.probe = state.ticks - t0; }, 200);
  return "probing";
});
// two sleeps in a row: the second is set in the first's continuation, after the engine's step returned
register("/s/sleepier", async function* () {
  try { yield 1; await sleep(60000); await sleep(60000); yield 2; } finally { state.finals++; }
});
// a generator that, once its client left, sleeps in a loop and never reaches a yield again
state.spins = 0;
state.spinRate = null;
register("/s/spinner", async function* () {
  yield 1;
  for (;;) { state.spins++; await sleep(50); }
});
register("/s/spin-rate", () => {
  const s0 = state.spins;
  state.spinRate = null;
  setTimeout(() => { state.spinRate = state.spins - s0; }, 500);
  return "measuring";
});
