// A small in-memory notes API: GET/POST on /notes, GET/PUT/DELETE on /notes/{id}.
// Try:
//   curl -X POST localhost:3000/notes -H 'Content-Type: application/json' -d '{"text":"buy milk"}'
//   curl -X POST localhost:3000/notes -d 'text=call mum'          (form data works too)
//   curl localhost:3000/notes
//   curl -X DELETE localhost:3000/notes/1

const notes = new Map();
let nextId = 1;

function noteText(req) {
  if (req.json && typeof req.json.text === "string") return req.json.text;
  if (typeof req.form.text === "string") return req.form.text;
  return null;
}

function notFound(id) {
  return { status: 404, body: { error: "no note " + id } };
}

register("/notes", function () {
  return { body: Array.from(notes.values()) };
});

register("/notes", function (req) {
  const text = noteText(req);
  if (text === null) return { status: 400, body: { error: "send a text field (JSON or form)" } };
  const note = { id: nextId++, text: text, created: new Date().toISOString() };
  notes.set(note.id, note);
  console.log("note", note.id, "created");
  return { status: 201, headers: { Location: "/notes/" + note.id }, body: note };
}, "POST");

register("/notes/{id}", function (req) {
  const note = notes.get(Number(req.params.id));
  return note ? { body: note } : notFound(req.params.id);
});

register("/notes/{id}", function (req) {
  const note = notes.get(Number(req.params.id));
  if (!note) return notFound(req.params.id);
  const text = noteText(req);
  if (text === null) return { status: 400, body: { error: "send a text field (JSON or form)" } };
  note.text = text;
  return { body: note };
}, "PUT");

register("/notes/{id}", function (req) {
  return notes.delete(Number(req.params.id)) ? { status: 204 } : notFound(req.params.id);
}, "DELETE");
