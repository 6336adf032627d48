"""What the page's and the API's routes share: the service, the browser's session id and its cookie,
the same-origin check, the marks of a form and reading an uploaded file (FastAPI dependencies and helpers)."""
from __future__ import annotations

from fastapi import Depends, Request, UploadFile
from fastapi.responses import Response

from webapp.errors import TooLarge, UserError
from webapp.guards import same_origin
from webapp.service import Service
from webapp.session import MARKS

COOKIE = "facematch_session"


def service(request: Request) -> Service:
    return request.app.state.web


def session_id(request: Request) -> str:
    """This browser's session id (a new one when its cookie, or a program's X-Facematch-Session header,
    names no kept session), once per request."""
    if not hasattr(request.state, "sid"):
        given = request.headers.get("x-facematch-session") or request.cookies.get(COOKIE, "")
        request.state.sid = service(request).session_id(given)
    return request.state.sid


def with_cookie(request: Request, response: Response) -> Response:
    """The response, with the session's cookie where a session is kept (a request that only reads makes none)."""
    if service(request).kept(session_id(request)):
        response.set_cookie(COOKIE, session_id(request), httponly=True, samesite="strict")
    return response


async def run(request: Request, action, *args, keep: bool = True):
    """`action(session, *args)` for this request's session on the store's worker; keep=False for a request that
    only reads, which makes no session."""
    client = request.client.host if request.client else ""
    return await service(request).call(session_id(request), action, *args, client=client, keep=keep)


async def marks(request: Request) -> dict[str, bool | None]:
    """The result cards' radio buttons (fields mark:<photo name>): relevant, irrelevant or none."""
    form = await request.form()
    return {k[5:]: MARKS.get(str(v)) for k, v in form.multi_items() if k.startswith("mark:")}


async def read(upload: UploadFile | None, request: Request) -> tuple[str, bytes]:
    """(file name, bytes) of an uploaded file, read up to one byte past the limit (so the check sees it)."""
    if upload is None or not upload.filename:
        raise UserError("choose a photo first")
    return upload.filename, await upload.read(int(service(request).web.max_upload_bytes) + 1)


async def read_all(photos: list[UploadFile], request: Request) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each photo of an add: one at least, at most web.max_files."""
    chosen = [p for p in photos if p.filename]
    most = int(service(request).web.max_files)
    if len(chosen) > most:
        raise TooLarge(f"{len(chosen)} files: at most {most} at once (web.max_files)")
    if not chosen:
        raise UserError("choose one or more photos to add first")
    return [await read(p, request) for p in chosen]


POST = {"dependencies": [Depends(same_origin)]}
