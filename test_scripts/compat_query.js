// Seed-era: query parameters arrive in req.query.
function searchHandler(req) {
  const q = req.query;
  return {
    status: 200,
    contentType: "application/json",
    body: JSON.stringify({ term: q.term || null, page: q.page || "1", all: q }),
  };
}
register("/search", "searchHandler", "GET");
