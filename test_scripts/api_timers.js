// Timers run on the script's thread; state persists between calls.
let fired = [];
let ticks = 0;
let interval = null;

setTimeout(function (tag) { fired.push(tag); }, 10, "load-timeout");
const cancelled = setTimeout(function () { fired.push("cancelled-should-not-run"); }, 10);
clearTimeout(cancelled);

register("/timers/start", function (req) {
  const every = Number(req.query.every) || 10;
  if (interval !== null) clearInterval(interval);
  ticks = 0;
  interval = setInterval(function () { ticks++; }, every);
  return "started";
});
register("/timers/stop", function () { clearInterval(interval); interval = null; return { body: { ticks: ticks } }; });
register("/timers/state", function () { return { body: { fired: fired, ticks: ticks, running: interval !== null } }; });
register("/timers/throwing", function () {
  setTimeout(function () { throw new Error("timer exploded"); }, 0);
  setTimeout(function () { fired.push("after-throw"); }, 5);
  return "scheduled";
});
register("/timers/looping-interval", function () {
  setInterval(function () { while (true) {} }, 10);
  return "scheduled";
});
register("/timers/bad", function () {
  try { setTimeout("code string", 10); return "no error"; } catch (e) { return { status: 400, body: { error: e.message } }; }
});
