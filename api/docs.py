"""`/docs` (Swagger UI) and `/redoc` served by this server, so that they work without internet.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and ReDoc's fonts from Google): behind a hospital firewall or
in an air-gapped container they render blank. The bundles come from the pinned `fastapi-offline` package (its
`static/` folder: `swagger-ui-bundle.js`, `swagger-ui.css`, `redoc.standalone.js`), never copied into this repository;
we serve them ourselves rather than through its `FastAPIOffline` factory to keep our titles, root path and CSP.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PACKAGE = ("fastapi_offline", "static")  # (package, folder inside it), as Starlette's StaticFiles takes it
ASSETS_PATH = "/docs-assets"
# Nothing from elsewhere: ReDoc would still fetch its "API docs by Redocly" logo from cdn.redoc.ly. Inline scripts
# start the viewers; ReDoc's search runs in a blob: worker.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def install_docs(app: FastAPI) -> None:
    """Serve the packaged assets and the two pages; the app must be created with `docs_url=None, redoc_url=None`."""
    app.mount(ASSETS_PATH, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root_path(request)
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} {app.version} – API",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}/favicon.ico",
        )
        return _self_contained(page)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root_path(request)
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} {app.version} – API",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}/favicon.ico",
            with_google_fonts=False,
        )
        return _self_contained(page)


def _self_contained(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def _root_path(request: Request) -> str:
    # Behind a proxy that strips a prefix (uvicorn --root-path), links must carry it, as FastAPI's own pages do.
    return str(request.scope.get("root_path", "")).rstrip("/")
