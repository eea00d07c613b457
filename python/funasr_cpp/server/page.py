"""The browser page at ``GET /``: live microphone transcription over ``/v1/realtime`` and a file
box for ``/v1/audio/transcriptions``. Plain files in ``static/`` (served as they are: no build
step, no CDN, works offline); the page itself needs no key, the API key is entered on it."""
from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
# revalidate (etag) on every load: after an upgrade the browser must not run an old app.js
NO_CACHE = {"Cache-Control": "no-cache"}


def page_routes() -> list:
    """Starlette routes: ``GET /`` (index.html) and the page's scripts under ``/static/``."""
    # imported here: `import funasr_cpp.server` works without the server extra
    from starlette.responses import FileResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    class Static(StaticFiles):
        def file_response(self, *args, **kwargs):
            response = super().file_response(*args, **kwargs)
            response.headers.update(NO_CACHE)
            return response

    async def index(request):
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=NO_CACHE)

    return [Route("/", index, methods=["GET"]),
            Mount("/static", app=Static(directory=STATIC), name="static")]
