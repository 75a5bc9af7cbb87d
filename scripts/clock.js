// Timers and Promises: a ticking counter, and a handler that waits before it answers.
// Try: curl localhost:3000/clock      curl 'localhost:3000/slow?ms=300'

let ticks = 0;
setInterval(function () { ticks++; }, 1000);

function sleep(ms) {
  return new Promise(function (resolve) { setTimeout(resolve, ms); });
}

register("/clock", function () {
  return { body: { now: new Date().toISOString(), ticksSinceLoad: ticks } };
});

register("/slow", async function (req) {
  const ms = Math.min(Number(req.query.ms) || 100, 5000);
  await sleep(ms);
  return { body: { waitedMs: ms } };
});
