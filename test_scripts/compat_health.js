// Seed-era: a health handler answering JSON.
function healthCheck(req) {
  return {
    status: 200,
    contentType: "application/json",
    body: JSON.stringify({ status: "healthy", timestamp: new Date().toISOString(), checks: { scripts: "ok" } }),
  };
}
register("/app/health", "healthCheck");
