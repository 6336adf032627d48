"""The JSON API: what a person does on the page, for a program, on the same app and the same service
(webapp/service.py): search by an uploaded photo, a gallery photo or a learned name, refine with marks,
add and remove photos, learn names, read the store. Every search answers the session's state: the
round's results with distances and same-person decisions. Errors are JSON, {"error": message}, with the
page's messages and statuses. FastAPI's generated schema documents it at /docs and /openapi.json.

    curl -F photo=@face.jpg -c cookies http://127.0.0.1:8000/api/search
    curl -b cookies -H 'content-type: application/json' -d '{"marks": {"a.jpg": true}}' http://127.0.0.1:8000/api/refine

The session (rounds, marks) is the page's: a cookie, or the header X-Facematch-Session with the id
every answer carries.
"""
from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from webapp.dependencies import POST, read, read_all, run, service, session_id, with_cookie


api = APIRouter(prefix="/api", tags=["search"])


class Name(BaseModel):
    name: str = Field(description="a gallery photo's name")


class Refine(BaseModel):
    marks: dict[str, bool | None] = Field(default_factory=dict,
                                          description="photo name -> relevant (true), irrelevant (false) or unmarked (null)")
    method: str | None = Field(None, description="a feedback method (GET /api/info lists them); default the session's")


class Learn(BaseModel):
    person: str = Field(description="the name to learn")
    marks: dict[str, bool | None] = Field(default_factory=dict, description="marks to apply first, as in /api/refine")


class Person(BaseModel):
    person: str = Field(description="a learned name")


async def answer(request: Request, action, *args):
    """Run the action for this session, then answer the session's state (and its id)."""
    svc = service(request)
    if action is not None:
        await run(request, action, *args)
    body = await run(request, svc.state)
    return with_cookie(request, JSONResponse(dict(body, session=session_id(request))))


@api.get("/info")
async def info(request: Request):
    """The store: photos, checkpoint, index, learned names, feedback methods, whether it is calibrated."""
    svc = service(request)
    return with_cookie(request, JSONResponse(await run(request, svc.info, keep=False)))


@api.post("/search", **POST)
async def search(request: Request, photo: UploadFile = File(..., description="a photo of a face")):
    """Search by an uploaded photo: round 1, the nearest gallery photos."""
    svc = service(request)
    prepared = await svc.prepare([await read(photo, request)], "nothing was searched")
    return await answer(request, svc.search_checked, prepared)


@api.post("/pick", **POST)
async def pick(request: Request, body: Name):
    """Search by a gallery photo (never its own result)."""
    return await answer(request, service(request).pick, body.name)


@api.post("/refine", **POST)
async def refine(request: Request, body: Refine):
    """The next round of unseen photos by a feedback method, from all marks so far."""
    svc = service(request)
    return await answer(request, svc.refine, body.marks, body.method)


@api.post("/names/search", **POST)
async def name_search(request: Request, body: Person):
    """Search by a learned name's prototype."""
    return await answer(request, service(request).search_name, body.person)


@api.post("/names/learn", **POST)
async def learn(request: Request, body: Learn):
    """Learn a name from the photos marked relevant (the marks given here and those before)."""
    return await answer(request, service(request).learn, body.person, body.marks)


@api.delete("/names/{person}", **POST)
async def forget(request: Request, person: str):
    """Forget a learned name."""
    return await answer(request, service(request).forget, person)


@api.post("/photos", **POST)
async def add(request: Request, photos: list[UploadFile] = File(..., description="photos to add"),
              allow_no_face: bool = Form(False, description="add a photo where no detector finds a face")):
    """Add photos to the gallery (checked first: nothing is added when one is refused, a photo with no face
    included unless allow_no_face)."""
    svc = service(request)
    prepared = await svc.prepare(await read_all(photos, request), "nothing was added to the gallery")
    return await answer(request, svc.add_checked, prepared, allow_no_face)


@api.delete("/photos/{name}", **POST)
async def remove(request: Request, name: str):
    """Remove a photo from the gallery."""
    return await answer(request, service(request).remove, name)
