// A first script: routes with query parameters, path parameters and JSON answers.
// Try: curl 'localhost:3000/hello?name=Ada'   curl localhost:3000/hello/Grace   curl localhost:3000/status

function hello(req) {
  const name = req.query.name || "world";
  writeLog("said hello to " + name);
  return "Hello, " + name + "!\n";
}

register("/hello", "hello");

register("/hello/{name}", function (req) {
  return { body: { greeting: "Hello, " + req.params.name + "!", at: new Date().toISOString() } };
});

const started = Date.now();
let served = 0;

register("/status", function () {
  served++;
  return {
    status: 200,
    contentType: "application/json",
    body: JSON.stringify({ status: "healthy", uptimeMs: Date.now() - started, served: served }),
  };
});

register("/hello-logs", function () {
  return { body: listLogs() };
});
