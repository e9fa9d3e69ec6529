"""The playground page at `/`: a browser front end to this API, from files inside the package.

The page (`service/web/`) is plain HTML, CSS and an ES module: no build step, no CDN, nothing
fetched from elsewhere, so it works offline and from an installed wheel. It calls the /v1 API
from the browser with the key the user types (kept in session storage), so the page itself is
open to everyone: it holds no data.

Every asset is read once, when the app is built, and answered from memory with its content
type, an ETag (a hash of its bytes) and `Cache-Control: no-cache` (the browser revalidates, so
an upgraded service never runs a stale script; an unchanged asset costs a 304). The page's
responses carry a strict Content-Security-Policy: scripts, styles, images and requests from
this origin only (images also as `blob:` URLs, which is how the page shows pictures it fetched
with the key), no inline script or style, no plugins, no framing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import Response

from engine.plotting import CLASS_COLOURS
from service.errors import NotFound

PAGE_PATH = "/"
ASSETS_PATH = "/playground"
WEB_PACKAGE = "service"
WEB_FOLDER = "web"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Asset:
    """One file of the page, as answered."""

    content: bytes
    media_type: str
    etag: str


def _asset(content: bytes, suffix: str) -> Asset:
    return Asset(content, MEDIA_TYPES[suffix], '"' + hashlib.sha256(content).hexdigest()[:32] + '"')


def palette_css() -> bytes:
    """The pictures' class colours (engine.plotting.CLASS_COLOURS) as CSS custom properties
    `--class-0` … `--class-9`, so the page colours classes exactly as the pictures do."""
    lines = [f"  --class-{index}: {colour};" for index, colour in enumerate(CLASS_COLOURS)]
    lines.append(f"  --class-count: {len(CLASS_COLOURS)};")
    return (":root {\n" + "\n".join(lines) + "\n}\n").encode()


def load_assets() -> dict[str, Asset]:
    """The page's files by name (`index.html`, `playground.js`, …) and the generated
    `palette.css`. Raises if the package holds no page: a wheel built without its package data
    fails at start, not at the first visit."""
    folder = files(WEB_PACKAGE) / WEB_FOLDER
    assets: dict[str, Asset] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in MEDIA_TYPES:
            assets[entry.name] = _asset(entry.read_bytes(), suffix)
    if "index.html" not in assets:
        raise RuntimeError(f"the playground page is missing from the package ({folder})")
    assets["palette.css"] = _asset(palette_css(), ".css")
    return assets


def _answer(request: Request, asset: Asset) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.content, media_type=asset.media_type, headers=headers)


def install_playground(app: FastAPI) -> None:
    """GET / answers the page, GET /playground/{name} its assets (404 for any other name)."""
    assets = load_assets()
    page = assets["index.html"]

    @app.get(PAGE_PATH, include_in_schema=False)
    async def playground_page(request: Request) -> Response:
        return _answer(request, page)

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False)
    async def playground_asset(request: Request, name: str) -> Response:
        asset = assets.get(name)
        if asset is None or name == "index.html":
            raise NotFound(f"the playground has no file {name!r}")
        return _answer(request, asset)
