"""`GET /` when no script registered it: where things are. A browser gets a page, anything else JSON.

The operator (an admin request: the admin token, or loopback with none set) also sees every route
and stream the scripts registered; anyone else sees only the engine's own entrances, so the page
does not list an application's surface to the world.
"""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from engine import __version__
from engine.http.admin import admin_problem
from engine.http.keys import GRAPHQL, ROUTES, STREAMS


def landing(request: web.Request) -> web.Response:
    app = request.app
    listing: dict[str, Any] = {
        "name": "rtengine",
        "version": __version__,
        "links": {"console": "/_engine/", "graphql": "/graphql", "health": "/health", "metrics": "/metrics"},
    }
    if admin_problem(request) is None:
        listing["routes"] = sorted(f"{r.method} {r.path}" for r in app[ROUTES].routes())
        listing["streams"] = sorted(app[STREAMS].streams)
        listing["graphql_fields"] = sorted(app[GRAPHQL].fields)
    if "text/html" not in request.headers.get("Accept", ""):
        return web.json_response(listing)
    return web.Response(text=_page(listing), content_type="text/html", charset="utf-8")


def _page(listing: dict[str, Any]) -> str:
    e = html.escape
    links = "".join(f'<li><a href="{e(href)}">{e(name)}</a> <code>{e(href)}</code></li>'
                    for name, href in listing["links"].items())
    sections = ""
    for title, key in (("Routes", "routes"), ("Streams", "streams"), ("GraphQL fields", "graphql_fields")):
        items = listing.get(key)
        if items is None:
            continue
        rows = "".join(f"<li>{_item(key, item)}</li>" for item in items) or "<li class=none>none yet</li>"
        sections += f"<section><h2>{title}</h2><ul>{rows}</ul></section>"
    if "routes" not in listing:
        sections = "<p class=none>The routes and streams of this server are listed for its operator.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rtengine</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  :root {{ font: 15px/1.5 system-ui, sans-serif; color: #1d1d1f; background: #f6f6f8; }} body {{ margin: 0; }}
  header {{ background: #23232b; color: #fff; padding: 1.1rem 2rem; }}
  header h1 {{ margin: 0; font-size: 1.3rem; }} header p {{ margin: .2rem 0 0; color: #bbb; font-size: .9rem; }}
  main {{ max-width: 60rem; margin: 1.5rem auto; padding: 0 2rem; display: grid; gap: 1.2rem;
         grid-template-columns: repeat(auto-fit, minmax(16rem, 1fr)); }}
  section {{ background: #fff; border: 1px solid #e2e2e8; border-radius: 8px; padding: .8rem 1.1rem; }}
  h2 {{ font-size: .8rem; text-transform: uppercase; letter-spacing: .06em; color: #777; margin: .2rem 0 .5rem; }}
  ul {{ list-style: none; padding: 0; margin: 0; }} li {{ margin: .25rem 0; }}
  a {{ color: #1f61a0; text-decoration: none; }} a:hover {{ text-decoration: underline; }}
  code {{ font: 12.5px ui-monospace, monospace; color: #888; }} .none {{ color: #999; }}
</style></head>
<body><header><h1>rtengine</h1><p>a scriptable real-time engine · version {e(listing["version"])}</p></header>
<main><section><h2>Start here</h2><ul>{links}</ul></section>{sections}</main></body></html>
"""


def _item(key: str, item: str) -> str:
    e = html.escape
    if key == "routes":
        method, _, path = item.partition(" ")
        if method == "GET" and "{" not in path and "*" not in path:
            return f'<code>{e(method)}</code> <a href="{e(path)}">{e(path)}</a>'
        return f"<code>{e(method)}</code> {e(path)}"
    if key == "streams" and "{" not in item:
        return f'<a href="{e(item)}">{e(item)}</a>'
    return e(item)
