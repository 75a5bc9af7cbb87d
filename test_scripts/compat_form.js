// Seed-era: form posts arrive in req.form (as in the seed's sendAlert handler).
function sendAlert(req) {
  const { type, message, priority } = req.form;
  return {
    status: 200,
    body: JSON.stringify({ alertType: type, message: message, priority: priority || "normal" }),
    contentType: "application/json",
  };
}
register("/send-alert", "sendAlert", "POST");
