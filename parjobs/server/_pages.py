"""The web dashboard's pages: ``/`` and its static assets, separate from the API's routes.

The dashboard is plain files shipped in the package (``parjobs/server/static/``: HTML, CSS,
ES modules; no build step, no CDN, so it works offline). They are read once when the app is
built and served from memory with a strict Content-Security-Policy: scripts, styles and
connections from this origin only, no inline script, no framing. The page talks to the
same API as every other client (REST with the session cookie, `/api/events` for live
updates), so it has no private endpoints.

Pages sit behind the same token gate as the API (a browser gets there through the printed
``/?token=...`` URL, which the gate swaps for a cookie); they are not in the OpenAPI
document, which describes the API only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import mimetypes

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

#: The policy every page and asset is served with (no inline script or style, no framing).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


@dataclasses.dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of the package's ``static/`` folder by name (read once, served from
    memory: a request can only name one of these, never a path on disk)."""
    out: dict[str, Asset] = {}
    root = importlib.resources.files(__package__ or "parjobs.server") / "static"
    for entry in root.iterdir():
        if not entry.is_file() or entry.name.startswith("."):
            continue
        body = entry.read_bytes()
        suffix = "." + entry.name.rpartition(".")[2]
        media = _TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0]
        out[entry.name] = Asset(
            body,
            media or "application/octet-stream",
            '"' + hashlib.sha256(body).hexdigest()[:20] + '"',
        )
    return out


def _serve(request: Request, asset: Asset, *, cache: str) -> Response:
    headers = {**_SECURITY_HEADERS, "etag": asset.etag, "cache-control": cache}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def page_routes(assets: dict[str, Asset] | None = None) -> list[Route]:
    """The routes of the dashboard: ``GET /`` (the page) and ``GET /static/{name}``."""
    files = load_assets() if assets is None else assets

    async def index(request: Request) -> Response:
        return _serve(request, files["index.html"], cache="no-cache")

    async def static(request: Request) -> Response:
        asset = files.get(request.path_params["name"])
        if asset is None:
            return Response(
                b'{"error": "not found"}',
                status_code=404,
                media_type="application/json",
                headers=_SECURITY_HEADERS,
            )
        return _serve(request, asset, cache="no-cache")  # revalidated: the ETag answers 304

    return [
        Route("/", index, methods=["GET"], name="dashboard"),
        Route("/static/{name}", static, methods=["GET"], name="static"),
    ]


#: (method, path) of the page routes, for tests and tools that tell pages from the API.
PAGES: tuple[tuple[str, str], ...] = (("GET", "/"), ("GET", "/static/{name}"))
