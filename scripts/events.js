// Streams, as in the seed: a /events stream, a /trigger that broadcasts to it, and a ticking clock.
// Try:  curl -N localhost:3000/events            (in one terminal)
//       curl -X POST localhost:3000/trigger -d 'message=hello'     (in another)

registerWebStream("/events");
registerWebStream("/ticks");

function triggerEvent(req) {
  sendStreamMessage({
    type: "event",
    message: req.form.message || (req.json && req.json.message) || "Something happened!",
    timestamp: new Date().toISOString(),
  }, { path: "/events" });
  return { status: 200, body: "Event sent\n" };
}
register("/trigger", "triggerEvent", "POST");

let tick = 0;
setInterval(function () {
  tick++;
  sendStreamMessageToPath("/ticks", { tick: tick, at: new Date().toISOString() }, { event: "tick" });
}, 1000);
