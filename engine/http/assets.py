"""`GET`/`HEAD` of an asset (`assets/`) at its path, when no script route took the path.

aiohttp's FileResponse does the serving: sendfile, `ETag`/`Last-Modified` and conditional requests,
ranges, a precompressed `.gz`/`.br` sibling when the client takes it. A path ending in `/` means its
`index.html`. Assets change through privileged scripts while clients hold copies, so every response
says `no-cache`: a client revalidates (a 304 when it has the current one).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from engine import rules
from engine.assets import AssetStore


async def serve_asset(request: web.Request, store: AssetStore) -> web.StreamResponse | None:
    """The asset at the request's path, or None: there is none."""
    path = request.path + "index.html" if request.path.endswith("/") else request.path
    if rules.asset_path_problem(path) is not None:  # decided here, without a thread hop
        return None
    found = await asyncio.to_thread(store.find, path)
    if found is None:
        return None
    file, asset = found
    return web.FileResponse(file, headers={"Content-Type": asset.content_type, "Cache-Control": "no-cache",
                                           "X-Content-Type-Options": "nosniff"})
