"""The review page: one photo at a time, keyboard first, plain forms without JavaScript.

Safety, in one place:
* identity comes only from the sign-in proxy's header (ReviewSettings.user_header), or
  `single_user` on a laptop; without it every page and API call answers 401;
* a POST whose Origin (or Sec-Fetch-Site) says another site sent it is refused (403),
  forms also carry a token matching a SameSite=Strict cookie (double submit);
* templates escape everything (Jinja autoescape); the script sets text with textContent;
  pages are served with a Content-Security-Policy that allows only the app's own files;
* photos: tagging.review.photos (only a queued row's bytes, type sniffed, nosniff);
* `/metrics` (Prometheus) and `/healthz` need no identity: counts and ages only
  (tagging.review.metrics), nothing about a product or a reviewer.
"""


import hashlib
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import jinja2
from fastapi import Depends, FastAPI, Form, Request, Response
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from tagging.labels import CATEGORY_SLUGS
from tagging.review.api import api_router
from tagging.review.metrics import registry_of
from tagging.review.photos import PhotoUnavailable, load_photo
from tagging.review.service import CATEGORY_KEYS, NAMES, ReviewService, UnknownProduct, photo_url
from tagging.review.store import UnknownAnswer

HERE = Path(__file__).parent
CSRF_COOKIE = "review_csrf"
MAX_REVIEWER_LENGTH = 200
PAGE_CSP = ("default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PHOTO_CSP = "default-src 'none'; sandbox"


def create_app(service: ReviewService, *, single_user: str | None = None) -> FastAPI:
    """The app: the page, its forms, photos, static files and the /api routes."""
    settings = service.settings
    app = FastAPI(title="Catalogue review queue", version="1",
                  description="Merchandisers verify the categories the model gave product "
                              "photos. Identity comes from the sign-in proxy's "
                              f"`{settings.user_header}` header.", redoc_url=None)
    app.state.service = service
    templates = Jinja2Templates(env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined))
    # static URLs carry a hash of the files: a new version is never served from a cache
    templates.env.globals["assets"] = hashlib.sha256(b"".join(
        p.read_bytes() for p in sorted((HERE / "static").iterdir()))).hexdigest()[:12]
    identity = APIKeyHeader(name=settings.user_header, auto_error=False,
                            description="set by the single-sign-on proxy, never by the user")

    def reviewer(header: Annotated[str | None, Depends(identity)]) -> str:
        name = single_user or (header or "").strip()
        if not name:
            raise HTTPException(401, f"no reviewer: the sign-in proxy's {settings.user_header} "
                                     "header is missing (start with --single-user NAME on a "
                                     "laptop)")
        if len(name) > MAX_REVIEWER_LENGTH or not name.isprintable():
            raise HTTPException(400, "the reviewer name is too long or not printable")
        return name

    Reviewer = Annotated[str, Depends(reviewer)]

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if request.method not in ("GET", "HEAD", "OPTIONS") and not same_origin(
                request, settings.allowed_origins):
            return error_response(request, templates, 403,
                                  "refused: this request came from another site")
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith(("/docs", "/openapi")):
            response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(request, templates, exc.status_code, str(exc.detail))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request, who: Reviewer) -> Response:
        item = service.next_item(who)
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        others = [s for s in CATEGORY_SLUGS if s not in {g["category"] for g in
                                                          (item.top3 if item else [])}]
        response = templates.TemplateResponse(request, "review.html", {
            "item": item, "reviewer": who, "progress": service.progress(who),
            "last": service.store.last_answer(who), "csrf": token, "names": NAMES,
            "keys": CATEGORY_KEYS, "others": others,
            "photo": base_of(request) + photo_url(item.partition, item.product_id)
            if item else None, "base": base_of(request),
        }, headers={"Cache-Control": "no-store"})
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    def checked(request: Request, csrf: str) -> None:
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie or not secrets.compare_digest(cookie, csrf):
            raise HTTPException(403, "this form has expired: reload the page")

    Field = Annotated[str, Form(max_length=1000)]

    @app.post("/answer", include_in_schema=False)
    def answer_form(request: Request, who: Reviewer, partition: Field, product_id: Field,
                    answer: Field, csrf: Field) -> Response:
        checked(request, csrf)
        try:
            service.answer(who, partition, product_id, answer)
        except UnknownAnswer as e:
            raise HTTPException(422, str(e)) from None
        except UnknownProduct as e:
            raise HTTPException(404, str(e)) from None
        return RedirectResponse(base_of(request) + "/", status_code=303)

    @app.post("/skip", include_in_schema=False)
    def skip_form(request: Request, who: Reviewer, partition: Field, product_id: Field,
                  csrf: Field) -> Response:
        checked(request, csrf)
        service.skip(who, partition, product_id)
        return RedirectResponse(base_of(request) + "/", status_code=303)

    @app.post("/undo", include_in_schema=False)
    def undo_form(request: Request, who: Reviewer, csrf: Field) -> Response:
        checked(request, csrf)
        service.undo(who)
        return RedirectResponse(base_of(request) + "/", status_code=303)

    @app.get("/photos/{partition}/{product_id:path}", include_in_schema=False)
    def photo(partition: str, product_id: str, who: Reviewer) -> Response:
        try:
            found = load_photo(service.store, partition, product_id,
                               image_root=service.image_root,
                               max_bytes=settings.max_photo_bytes)
        except PhotoUnavailable as e:
            raise HTTPException(e.status, str(e)) from None
        return Response(found.data, media_type=found.content_type, headers={
            "Cache-Control": "private, max-age=3600", "Content-Security-Policy": PHOTO_CSP})

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    metrics = registry_of(service.store)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        """Prometheus scrape: store-wide counts and ages only, so no identity is needed."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST,
                        headers={"Cache-Control": "no-store"})

    app.include_router(api_router(reviewer))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


def same_origin(request: Request, allowed: tuple[str, ...]) -> bool:
    """False when the browser says another site sent this request.

    A request without Origin is not a browser's cross-site one (browsers send Origin on
    every POST); the app's own origin is its Host (or the proxy's X-Forwarded-Host).
    """
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if origin in allowed:
        return True
    parts = urlsplit(origin)
    hosts = {request.headers.get("host"), request.headers.get("x-forwarded-host")} - {None}
    return parts.scheme in ("http", "https") and parts.netloc in hosts


def error_response(request: Request, templates: Jinja2Templates, status: int,
                   message: str) -> Response:
    """JSON for the API (and clients asking for it), a small page otherwise."""
    if request.url.path.startswith("/api") or "text/html" not in request.headers.get(
            "accept", ""):
        return JSONResponse({"detail": message}, status_code=status)
    return templates.TemplateResponse(request, "error.html",
                                      {"status": status, "message": message,
                                       "base": base_of(request)}, status_code=status)


def base_of(request: Request) -> str:
    """The path the app is mounted at (uvicorn --root-path, behind a proxy): "" at the root."""
    return str(request.scope.get("root_path", "")).rstrip("/")
