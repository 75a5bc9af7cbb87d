// Seed-era: one path, four methods, the usual REST answers.
let item = { id: 1, name: "first" };

function getItem(req) { return { status: 200, body: JSON.stringify(item), contentType: "application/json" }; }
function createItem(req) { item = { id: 2, name: req.form.name || "created" }; return { status: 201, body: "created " + item.name }; }
function updateItem(req) { item.name = req.form.name || "updated"; return { status: 200, body: "updated " + item.name }; }
function deleteItem(req) { item = null; return { status: 204, body: "" }; }

register("/item", "getItem", "GET");
register("/item", "createItem", "POST");
register("/item", "updateItem", "PUT");
register("/item", "deleteItem", "DELETE");
