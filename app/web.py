"""The try-it web page: `GET /` serves one HTML page, `/static/*` its script and stylesheet.

The page is a client of the public `/v1` API like any other (it sends `X-API-Key` when the person enters a
key), so it stays open even when the server has API keys. No build step and no CDN: the files in `app/static/`
are served as they are.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


def install_web_page(app: FastAPI) -> None:
    """Serve the page at `/` and its assets at `/static/` (left out of the OpenAPI schema)."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
