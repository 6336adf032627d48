"""The search page's HTTP side: FastAPI routes with typed form and file parameters over
webapp.service.Service, Jinja2 templates, static files, and exception handlers that turn every
refusal into the page with its message and a 4xx status (a failure: 500, its details in the log).

Each action is a POST that answers 303 back to the page (or the page itself with the message when
it is refused); /mark answers JSON for the page's script. A form from another origin is refused (403).
"""
from __future__ import annotations

import contextlib
import hmac
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from dataset import DataSettings
from search.feedback import FeedbackSettings
from utils import FacematchError, get_logger
from webapp.api import api
from webapp.dependencies import POST, marks, read, read_all, run, service, with_cookie
from webapp.errors import BodyTooLarge, Forbidden, UserError
from webapp.guards import TOKEN_COOKIE, allowed_hosts, check_serving, security_headers
from webapp.service import Service, WebSettings

log = get_logger()
HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
routes = APIRouter(include_in_schema=False)  # the page's routes; the API's are in webapp/api.py


def create_app(store_root: str | Path, web: WebSettings = WebSettings(), feedback: FeedbackSettings = FeedbackSettings(),
               *, fpir: float, data: DataSettings | None = None) -> FastAPI:
    """The search page's app over the store at `store_root`, with the page's bounds (web), the feedback
    methods' settings, the starting 'no one matches' rate and the caches (data). app.state.web is the
    Service; close it when done."""
    check_serving(web.host, str(web.token or ""), list(web.allowed_hosts))
    service = Service(store_root, web, feedback, fpir=fpir, data=data)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()  # on every way out uvicorn takes, a SIGTERM's included

    app = FastAPI(title="facematch", description="The search page's JSON API (webapp/api.py)", redoc_url=None,
                  docs_url=None, lifespan=lifespan)
    app.state.web = service
    app.add_middleware(BodyLimit, uploads=int(web.max_upload_bytes) * int(web.max_files) + 2 ** 20,
                       other=int(web.max_body_bytes))
    app.add_middleware(SecurityHeaders)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(web.host, list(web.allowed_hosts)))
    app.mount("/static/swagger", StaticFiles(directory=swagger_files()), name="swagger")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(routes)
    app.include_router(api)
    app.add_exception_handler(UserError, refused)
    app.add_exception_handler(FacematchError, refused)
    app.add_exception_handler(RequestValidationError, refused)
    app.add_exception_handler(HTTPException, refused)
    return app


# ---------------------------------------------------------------- answers

async def show_page(request: Request, status: int = 200, error: str = "", gallery_page: int = 0) -> Response:
    """The page for this browser's session, with `error` shown when given."""
    svc = service(request)
    view = await run(request, svc.view, gallery_page, keep=False)
    return with_cookie(request, TEMPLATES.TemplateResponse(request, "page.html", {**view, "error": error},
                                                           status_code=status))


async def act(request: Request, action, *args) -> Response:
    """Run a service action for this browser's session, then back to the page (303)."""
    await run(request, action, *args)
    return with_cookie(request, RedirectResponse("/", status_code=303))


async def refused(request: Request, exc: Exception) -> Response:
    """Any refusal as the page with its message and status; where even the page cannot be drawn
    (the store failing), a bare page with the message. Never a traceback."""
    if isinstance(exc, UserError):
        status, message = exc.status, str(exc)
    elif isinstance(exc, RequestValidationError):
        status, message = 400, "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'the request'}: {e['msg']}"
                                          for e in exc.errors())
    elif isinstance(exc, HTTPException):
        status, message = exc.status_code, str(exc.detail)
        if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI's form or JSON parsing met BodyLimit's stop
            status, message = 413, too_large(request.app.state.web.web, exc.__cause__.args[0])
    else:
        status, message = 400, str(exc)
    headers = {"Retry-After": "2"} if status == 503 else None
    if request.url.path.startswith("/api/"):
        return with_cookie(request, JSONResponse({"error": message, "status": status}, status_code=status,
                                                 headers=headers))
    try:
        return await show_page(request, status, message)
    except Exception as failure:  # noqa: BLE001 - the page itself failing: say so, still no traceback
        log.exception(f"web: {failure.__class__.__name__} while drawing the page")
        return with_cookie(request, TEMPLATES.TemplateResponse(
            request, "error.html", {"error": message,
                                    "detail": f"(the page could not be drawn: {failure.__class__.__name__})"},
            status_code=status))


def too_large(web: WebSettings, photos: bool) -> str:
    if not photos:
        return f"the request is too large: at most {int(web.max_body_bytes):,} bytes (web.max_body_bytes)"
    return (f"the upload is too large: at most {web.max_files} files of {int(web.max_upload_bytes) / 1e6:.1f} MB "
            f"(web.max_upload_bytes)")


# ---------------------------------------------------------------- routes

@routes.get("/docs", response_class=HTMLResponse)
async def docs() -> Response:
    """Swagger UI over /openapi.json, from files served here, so it works offline."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title="facematch API",
                               swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                               swagger_css_url="/static/swagger/swagger-ui.css",
                               swagger_favicon_url="/static/swagger/favicon.png")


def swagger_files() -> Path:
    """Swagger UI 5 (it reads FastAPI's OpenAPI 3.1; swagger-ui-bundle's 4.15 could not), as the fastapi-offline
    package ships it: its static folder, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise FacematchError("the package fastapi-offline (Swagger UI's files for /docs) is not installed: make venv")
    return Path(spec.origin).parent / "static"


@routes.get("/login")
async def login(request: Request, token: str = "") -> Response:
    """Beyond loopback: open /login?token=TOKEN once, and the browser keeps the token (an HttpOnly cookie)."""
    expected = str(request.app.state.web.web.token or "")
    response = RedirectResponse("/", status_code=303)
    if expected:
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise Forbidden("wrong token")
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
    return response


@routes.get("/", response_class=HTMLResponse)
async def index(request: Request, page: int = 0) -> Response:
    """The page; ?page=N shows the gallery's page N."""
    return await show_page(request, gallery_page=page)


@routes.post("/search", **POST)
async def search(request: Request, photo: UploadFile | None = File(None)) -> Response:
    svc = service(request)
    prepared = await svc.prepare([await read(photo, request)], "nothing was searched")
    return await act(request, svc.search_checked, prepared)


@routes.post("/pick", **POST)
async def pick(request: Request, name: str = Form("")) -> Response:
    return await act(request, service(request).pick, name)


@routes.post("/mark", **POST)
async def mark(request: Request, name: str = Form(""), value: str = Form("none")) -> Response:
    svc = service(request)
    return with_cookie(request, JSONResponse(await run(request, svc.mark, name, value)))


@routes.post("/refine", **POST)
async def refine(request: Request, method: str = Form(""), marked: dict = Depends(marks)) -> Response:
    svc = service(request)
    return await act(request, svc.refine, marked, method or svc.method)


@routes.post("/add", **POST)
async def add(request: Request, photos: list[UploadFile] = File([]), allow_no_face: str = Form("")) -> Response:
    svc = service(request)
    prepared = await svc.prepare(await read_all(photos, request), "nothing was added to the gallery")
    return await act(request, svc.add_checked, prepared, bool(allow_no_face))


@routes.post("/fpir", **POST)
async def fpir(request: Request, rate: str = Form("")) -> Response:
    return await act(request, service(request).set_fpir, rate)


@routes.post("/remove", **POST)
async def remove(request: Request, name: str = Form("")) -> Response:
    return await act(request, service(request).remove, name)


@routes.post("/name/learn", **POST)
async def learn(request: Request, person: str = Form(""), marked: dict = Depends(marks)) -> Response:
    return await act(request, service(request).learn, person, marked)


@routes.post("/name/forget", **POST)
async def forget(request: Request, person: str = Form("")) -> Response:
    return await act(request, service(request).forget, person)


@routes.post("/name/search", **POST)
async def name_search(request: Request, person: str = Form("")) -> Response:
    return await act(request, service(request).search_name, person)


@routes.get("/photo")
async def photo(request: Request, name: str) -> Response:
    svc = service(request)
    path = await run(request, svc.photo_path, name, "file", keep=False)
    return with_cookie(request, FileResponse(path, headers={"Cache-Control": "private, max-age=3600"}))


@routes.get("/crop")
async def crop(request: Request, name: str) -> Response:
    svc = service(request)
    path = await run(request, svc.photo_path, name, "crop", keep=False)
    return with_cookie(request, FileResponse(path, headers={"Cache-Control": "private, max-age=3600"}))


@routes.get("/query.png")
async def query_png(request: Request) -> Response:
    svc = service(request)
    png = await run(request, svc.query_crop, keep=False)
    return with_cookie(request, Response(png, media_type="image/png", headers={"Cache-Control": "no-store"}))


# ---------------------------------------------------------------- the headers and the body limit

class SecurityHeaders:
    """ASGI middleware: every answer carries webapp.guards.security_headers (no framing, no sniffing, the policy)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = [(k.lower().encode(), v.encode()) for k, v in security_headers(scope["path"]).items()]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


UPLOADS = {"/search", "/add", "/api/search", "/api/photos"}  # the routes that take photos; every other body is small


class BodyLimit:
    """ASGI middleware: a request body past its route's limit (`uploads` for the routes that take photos, `other`,
    web.max_body_bytes, for every other) is refused with 413 at once when its Content-Length says so, and stops being
    read (BodyTooLarge) at the limit when it comes without one: a large body to a small route is never read whole."""

    def __init__(self, app, uploads: int, other: int):
        self.app, self.uploads, self.other = app, uploads, other

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        photos = scope["path"] in UPLOADS
        limit = self.uploads if photos else self.other
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            message = (f"the request is too large: {int(declared):,} bytes, more than {limit:,} in all "
                       + ("(web.max_upload_bytes × web.max_files)" if photos else "(web.max_body_bytes)"))
            if scope["path"].startswith("/api/"):
                return await JSONResponse({"error": message, "status": 413}, status_code=413)(scope, receive, send)
            text = TEMPLATES.get_template("error.html").render(error=message + ".")
            return await HTMLResponse(text, status_code=413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(photos)
            return message

        await self.app(scope, limited, send)
