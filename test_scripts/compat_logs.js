// Seed-era: writeLog, then listLogs reads the lines back.
writeLog("logs script loaded");

function writeHandler(req) {
  writeLog("note: " + (req.query.msg || "nothing"));
  return { status: 200, body: "logged" };
}
function readHandler(req) {
  return { status: 200, body: JSON.stringify(listLogs()), contentType: "application/json" };
}
register("/logs/write", "writeHandler");
register("/logs/read", "readHandler");
