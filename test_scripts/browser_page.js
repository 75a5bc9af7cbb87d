// A page with an EventSource, and a route that sends numbered messages (named every third one).
registerWebStream("/b/events");

const PAGE = `<!doctype html><meta charset="utf-8"><title>stream</title>
<ul id="log"></ul>
<script>
  window.received = [];
  window.opens = 0;
  const source = new EventSource("/b/events");
  source.onopen = () => { window.opens++; };
  source.onmessage = (e) => { window.received.push({ kind: "message", data: e.data, id: e.lastEventId }); };
  source.addEventListener("named", (e) => { window.received.push({ kind: "named", data: e.data, id: e.lastEventId }); });
  source.addEventListener("reset", (e) => { window.received.push({ kind: "reset", data: e.data }); });
</script>`;

register("/b/page", function () { return { body: PAGE, contentType: "text/html; charset=utf-8" }; });

register("/b/send", function (req) {
  const from = Number(req.query.from), to = Number(req.query.to);
  for (let i = from; i <= to; i++) {
    if (i % 3 === 0) sendStreamMessage(JSON.stringify({ n: i }), { event: "named" });
    else sendStreamMessage({ n: i });
  }
  return "sent";
});
