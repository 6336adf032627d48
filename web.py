"""The search page: one gallery store behind a small web app (FastAPI + uvicorn), on loopback.

    python web.py --store outputs/store                    # http://127.0.0.1:8000
    python web.py --store outputs/store web.port=8080 feedback.method=svm
    make serve                                             # builds outputs/store from the demo first

Upload a photo (or pick one from the gallery) and see the nearest gallery photos as a grid with
their distances and the crop that was searched; mark results relevant or irrelevant and press
'refine' for the next round of unseen photos by the chosen feedback method (search/feedback.py);
add photos to the gallery or remove one; type a name and mark results as that person to learn the
name (a prototype kept in the store), then search by the name.

Uploads are checked before anything else happens: size (web.max_upload_bytes), pixels
(web.max_pixels, against decompression bombs), type (decoded by Pillow, whatever the file is
called), a face found by the store model's detection chain (a centre crop is said out loud; no face
on a chain without `center` is refused). A refused upload is a message on the page with a 4xx
status, never a traceback, and leaves the store untouched.

Sessions: a random cookie id maps to the session's state in memory (query embedding and crop,
marks, rows shown, round, method); the web.max_sessions most recently used are kept. All store
work runs on one worker thread (SQLite's connection lives there), one request at a time.
The competition server (server.py) is separate and stays torch-free.
"""
from __future__ import annotations

import argparse
import asyncio
import html
import io
import ipaddress
import re
import secrets
import shutil
import sys
import tempfile
import time
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from search.exact import unit
from utils import FacematchError, get_logger, run_command

log = get_logger()
COOKIE = "facematch_session"
# Pillow's format name -> the suffix the saved upload gets (the pipeline reads all of these).
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
MARKS = {"relevant": True, "irrelevant": False}


class UserError(FacematchError, ValueError):
    """A request the page refuses, with the message shown to the user and an HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class BodyTooLarge(Exception):
    """A request body past the limit (raised while it is being read)."""


# ---------------------------------------------------------------- uploads

def check_upload(data: bytes, filename: str, max_bytes: int, max_pixels: int) -> tuple[str, str, str]:
    """Check an uploaded file before it goes anywhere: size, pixel count, type by decoding.
    Returns (Pillow format, suffix for it, a note such as 'JPEG, 640×480'); raises UserError
    (413 too large, 415 not a supported image, 400 damaged) with a message naming the file."""
    from PIL import Image, UnidentifiedImageError

    shown = filename or "the upload"
    if not data:
        raise UserError(f"{shown}: the file is empty", 400)
    if len(data) > max_bytes:
        raise UserError(f"{shown}: {len(data) / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.1f} MB "
                        f"(web.max_upload_bytes)", 413)
    fmt, frames = None, 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format, im.size
                if fmt not in FORMATS:
                    raise UserError(f"{shown}: a {fmt} image; the page takes {', '.join(FORMATS)}", 415)
                if w * h > max_pixels:
                    raise UserError(f"{shown}: {w}×{h} pixels, over the limit of {max_pixels:,} (web.max_pixels): "
                                    f"refused as a possible decompression bomb", 413)
                frames = int(getattr(im, "n_frames", 1) or 1)
                im.seek(0)
                im.load()  # decode the whole (first) frame: a truncated file fails here
        except UserError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UserError(f"{shown}: too many pixels, refused as a possible decompression bomb ({exc})", 413) from None
        except UnidentifiedImageError:
            raise UserError(f"{shown}: not an image (it cannot be decoded as {', '.join(FORMATS)}, "
                            f"whatever its name says)", 415) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise UserError(f"{shown}: a damaged {fmt or ''} image that cannot be decoded ({exc})", 400) from None
    note = f"{fmt}, {w}×{h}" + (f", first of {frames} frames used" if frames > 1 else "")
    return fmt, FORMATS[fmt], note


def safe_name(filename: str, suffix: str) -> str:
    """A plain file name for an upload: its stem's letters, digits, '-', '_' and '.', the real suffix."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename or "").stem).strip("._")[:80]
    return (stem or "upload") + suffix


# ---------------------------------------------------------------- sessions

@dataclass
class Session:
    """One browser's search: what was searched, the marks, the rows shown, the current round."""
    method: str
    query: np.ndarray | None = None       # unit embedding searched (a photo's, or a name's prototype)
    label: str = ""                       # what was searched, in words
    crop_png: bytes | None = None         # the crop that was searched (None: a name's prototype)
    how: str = ""                         # how the face was found, said out loud
    exclude: set[str] = field(default_factory=set)      # the query photo itself, never a result
    marks: dict[str, bool] = field(default_factory=dict)  # photo name -> relevant?
    shown: list[str] = field(default_factory=list)      # every photo shown this search, in order
    results: list[tuple[str, float]] = field(default_factory=list)  # this round: (name, distance)
    round: int = 0
    learned: dict[str, set[str]] = field(default_factory=dict)  # name -> photos learned as it this session
    notes: list[str] = field(default_factory=list)      # messages for the next page, shown once
    used: float = field(default_factory=time.time)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class Web:
    """The page's state: the store (opened on the worker thread), the sessions, the settings."""

    def __init__(self, store_root: str | Path, cfg: dict):
        from search.feedback import FEEDBACK

        self.root, self.cfg, self.w = Path(store_root), cfg, cfg["web"]
        self.fcfg = cfg.get("feedback")
        if not isinstance(self.fcfg, dict):
            raise UserError("the config has no 'feedback' section (search/feedback.py's settings): "
                            "config/default.yaml documents it")
        self.methods = list(FEEDBACK)
        self.method = self.fcfg.get("method", "rocchio")
        if self.method not in self.methods:
            raise UserError(f"feedback.method '{self.method}' is not one of {', '.join(self.methods)}")
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="facematch-store")
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.scratch = Path(tempfile.mkdtemp(prefix="facematch-web-"))
        self._store = None
        self.worker.submit(self.store).result()  # a missing store fails now, not on the first request

    def store(self):
        """The gallery store; call on the worker thread only."""
        from search.store import GalleryStore

        if self._store is None:
            self._store = GalleryStore.open(self.root)
        return self._store

    def close(self) -> None:
        self.worker.shutdown(wait=True)
        shutil.rmtree(self.scratch, ignore_errors=True)

    # ------------------------------------------------------------ running a request
    async def run(self, request: Request, action, *args) -> Response:
        """Run `action(session, *args)` on the worker thread; None means 'done, back to the page'
        (303), a Response is sent as it is; refusals and failures become the page with a message."""
        sid = request.cookies.get(COOKIE, "")
        return await asyncio.get_running_loop().run_in_executor(self.worker, self._run, sid, action, args)

    def _run(self, sid: str, action, args) -> Response:
        from search.store import StoreError

        session = self.sessions.get(sid)
        if session is None:
            sid, session = secrets.token_urlsafe(18), Session(self.method)
            self.sessions[sid] = session
            while len(self.sessions) > int(self.w["max_sessions"]):
                self.sessions.popitem(last=False)
        self.sessions.move_to_end(sid)
        session.used = time.time()
        try:
            response = action(session, *args) or RedirectResponse("/", status_code=303)
        except UserError as exc:
            response = self._error_page(session, exc.status, str(exc))
        except StoreError as exc:
            response = self._error_page(session, 404 if "no photo named" in str(exc) or "no learned name" in str(exc)
                                        else 400, str(exc))
        except FacematchError as exc:
            response = self._error_page(session, 400, str(exc))
        except Exception as exc:  # never a traceback on the page: it goes to the server's log
            log.exception(f"web: {exc.__class__.__name__} while serving a request")
            response = self._error_page(session, 500, f"the server failed on this request "
                                                       f"({exc.__class__.__name__}); its log has the details")
        response.set_cookie(COOKIE, sid, httponly=True, samesite="strict")
        return response

    def _error_page(self, session: Session, status: int, message: str) -> HTMLResponse:
        """The page with the message; a bare page with it where the page itself cannot be drawn."""
        try:
            return self.page(session, status, message)
        except Exception as exc:  # noqa: BLE001 - the store itself failing: say so, still no traceback
            log.exception(f"web: {exc.__class__.__name__} while drawing the page")
            return HTMLResponse(HEAD + f"<div class=error role=alert id=error>{html.escape(message)}</div>"
                                f"<p>(the page could not be drawn: {html.escape(exc.__class__.__name__)})</p>"
                                "</body></html>", status_code=status)

    # ------------------------------------------------------------ the pipeline for one photo
    def crop_and_embed(self, path: Path, shown: str) -> tuple[np.ndarray, np.ndarray, str, str]:
        """(unit embedding, crop, how the face was found in words, chain step) of an uploaded photo,
        with the store model's own crop settings; no face on a chain without centre is a 422."""
        from detection import CENTER, ImageReadError, chain, crop_one, load_crop
        from search.retrieval import embed_paths

        model, cfg = self.store().model()
        ccfg = model.meta["crop"]
        try:
            item, meta, _ = crop_one(path, ccfg, cfg["data"]["cache_dir"])
        except ImageReadError as exc:
            raise UserError(f"{shown}: not a readable image ({str(exc).replace(str(path), '').strip(': ')})") from None
        steps = chain(ccfg)
        if item is None:
            raise UserError(f"{shown}: no face found (tried {' → '.join(steps)}; the store's model has no "
                            f"centre-crop fallback)", 422)
        step = meta["path"]
        if step == CENTER:
            how = (f"no face found by {' → '.join(s for s in steps if s != CENTER) or 'any detector'}: "
                   f"the centred square of the photo was used instead (crop.fallback: center)")
        else:
            how = f"face found by {step}" + (" (fallback)" if step != ccfg["detector"] else "") + \
                  (", aligned" if meta["aligned"] else "") + \
                  (f"; {meta['faces']} faces, the largest kept" if meta["faces"] > 1 else "")
        emb = embed_paths([path], model, cfg, "cpu", "query")
        if not len(emb.embeddings):
            raise UserError(f"{shown}: could not be embedded ({', '.join(emb.skipped)})", 422)
        return unit(emb.embeddings[0]), load_crop(item), how, step

    def checked_files(self, uploads: list[tuple[str, bytes]], outcome: str) -> tuple[Path, list[tuple]]:
        """Check, crop and embed every upload, saved under a fresh scratch folder: (folder, [(shown
        name, path, note, chain step, embedding, crop, how)]). Any refusal raises before the store is
        touched, naming each bad file and saying `outcome` (what was not done)."""
        folder = Path(tempfile.mkdtemp(dir=self.scratch))
        good, bad, taken = [], [], set()
        try:
            for filename, data in uploads:
                try:
                    _, suffix, note = check_upload(data, filename, int(self.w["max_upload_bytes"]),
                                                   int(self.w["max_pixels"]))
                    name = safe_name(filename, suffix)
                    while name in taken:
                        name = f"{Path(name).stem}_{len(taken)}{suffix}"
                    taken.add(name)
                    path = folder / name
                    path.write_bytes(data)
                    vector, crop, how, step = self.crop_and_embed(path, filename)
                    good.append((filename, path, note, step, vector, crop, how))
                except UserError as exc:
                    bad.append(exc)
            if bad:
                status = max(e.status for e in bad) if len({e.status for e in bad}) == 1 else 400
                raise UserError(" | ".join(str(e) for e in bad) + f" — {outcome}", status)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder, good

    # ------------------------------------------------------------ actions (worker thread)
    def start(self, s: Session, query: np.ndarray, label: str, crop_png: bytes | None, how: str,
              exclude: set[str], first: list[tuple[str, float]] | None = None) -> None:
        """A new search: round 1 is `first`, or the store's own nearest-neighbour search."""
        store = self.store()
        k = int(self.w["k"])
        s.query, s.label, s.crop_png, s.how, s.exclude = unit(query), label, crop_png, how, set(exclude)
        s.marks, s.shown, s.results, s.round = {}, [], [], 1  # s.learned stays: a photo counts once per session
        if first is not None:
            s.results = list(first)
        elif len(store):
            dist, names = store.search(s.query[None, :], min(k + len(exclude), len(store)))
            s.results = [(n, float(d)) for n, d in zip(names[0], dist[0]) if n is not None and n not in exclude][:k]
        s.shown = [n for n, _ in s.results]
        if not s.results:
            s.notes.append("the gallery is empty: add photos to it below")

    def search_upload(self, s: Session, filename: str, data: bytes) -> None:
        folder, files = self.checked_files([(filename, data)], "nothing was searched")
        shutil.rmtree(folder, ignore_errors=True)
        shown, _, note, _, vector, crop, how = files[0]
        self.start(s, vector, f"the uploaded photo {shown} ({note})", _png(crop), how, set())

    def pick(self, s: Session, name: str) -> None:
        store = self.store()
        photo = store.photo(name)
        ids, names, vectors = store.vectors()
        vector = vectors[names.index(photo["name"])]
        self.start(s, vector, f"the gallery photo {name}", photo["crop"].read_bytes(), _how_words(photo["how"]), {name})

    def refine(self, s: Session, marks: dict[str, bool | None], method: str) -> None:
        from search.feedback import next_round

        self._apply_marks(s, marks)
        if s.query is None:
            raise UserError("nothing to refine yet: upload a photo, pick one from the gallery or search by a name first")
        if method not in self.methods:
            raise UserError(f"method '{method}' is not one of {', '.join(self.methods)}")
        s.method = method
        _, names, vectors = self.store().vectors()
        row = {n: i for i, n in enumerate(names)}
        marked = {row[n]: v for n, v in s.marks.items() if n in row}
        shown = {row[n] for n in list(s.shown) + list(s.exclude) if n in row}
        rows = next_round(method, s.query, vectors, marked, shown, int(self.w["k"]), self.fcfg) if len(names) else []
        dist = 1.0 - vectors[rows] @ s.query if rows else []
        s.results = [(names[r], float(d)) for r, d in zip(rows, dist)]
        s.shown += [n for n, _ in s.results]
        s.round += 1
        relevant = sum(s.marks.values())
        s.notes.append(f"round {s.round} by {method}, from {relevant} relevant and {len(s.marks) - relevant} "
                       f"irrelevant marks" + ("" if s.results else ": every gallery photo has been shown"))

    def mark(self, s: Session, name: str, value: str) -> Response:
        self._apply_marks(s, {name: MARKS.get(value)})
        relevant = sum(s.marks.values())
        return JSONResponse({"name": name, "mark": value, "relevant": relevant, "irrelevant": len(s.marks) - relevant})

    def learn(self, s: Session, person: str, marks: dict[str, bool | None]) -> None:
        store = self.store()
        self._apply_marks(s, marks)
        person = " ".join(person.split())
        if not person:
            raise UserError("type the person's name first, then mark their photos relevant and press 'learn name'")
        present = set(store.vectors()[1])
        new = [n for n, v in s.marks.items() if v and n in present and n not in s.learned.get(person, set())]
        if not new:
            raise UserError(f"no new relevant mark to learn '{person}' from: mark their photos relevant first")
        total = store.learn_name(person, new)
        s.learned.setdefault(person, set()).update(new)
        s.notes.append(f"learned '{person}' from {len(new)} more photo{'s' * (len(new) > 1)}: "
                       f"its prototype is the mean of {total} marked photos")

    def search_name(self, s: Session, person: str) -> None:
        store = self.store()
        person = " ".join(person.split())
        if not person:
            raise UserError("type a learned name to search for it")
        dist, names = store.search_name(person, int(self.w["k"]))  # unknown: 'no learned name', a 404
        self.start(s, store.name_prototype(person), f"the learned name '{person}'", None,
                   f"its prototype: the normalised mean of {store.name_marks(person)} marked photos", set(),
                   [(n, float(d)) for n, d in zip(names, dist)])

    def add(self, s: Session, uploads: list[tuple[str, bytes]]) -> None:
        if not uploads:
            raise UserError("choose one or more photos to add first")
        if len(uploads) > int(self.w["max_files"]):
            raise UserError(f"{len(uploads)} files: at most {self.w['max_files']} at once (web.max_files)", 413)
        folder, files = self.checked_files(uploads, "nothing was added to the gallery")
        try:
            report = self.store().add([f[1] for f in files])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        centre = [f[0] for f in files if f[3] == "center"]
        text = f"gallery: {len(report.added)} added" + (f" ({', '.join(report.added)})" if report.added else "")
        if report.duplicates:
            text += f", {len(report.duplicates)} already in the gallery (the same photo is stored once)"
        if report.skipped:
            text += f", {len(report.skipped)} skipped"
        if centre:
            text += f"; no face found in {', '.join(centre)}: the centred square was stored instead"
        s.notes.append(text)

    def remove(self, s: Session, name: str) -> None:
        self.store().remove([name])
        s.results = [(n, d) for n, d in s.results if n != name]
        s.marks.pop(name, None)
        s.notes.append(f"removed {name} from the gallery")

    def _apply_marks(self, s: Session, marks: dict[str, bool | None]) -> None:
        for name, value in marks.items():
            if value is None:
                s.marks.pop(name, None)
            else:
                s.marks[name] = value

    # ------------------------------------------------------------ files
    def photo_file(self, s: Session, name: str, what: str) -> Response:
        path = self.store().photo(name)[what]
        if not path.is_file():
            raise UserError(f"{name}: its {what} file is missing from the store ({path})", 404)
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    def query_crop(self, s: Session) -> Response:
        if s.crop_png is None:
            return Response(status_code=404)
        return Response(s.crop_png, media_type="image/png", headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------ the page
    def page(self, s: Session, status: int = 200, error: str = "", gallery_page: int = 0) -> HTMLResponse:
        store = self.store()
        e = html.escape
        _, names, _ = store.vectors()
        learned = store.learned_names()
        model_crop = store.meta["preprocessing"]["crop"]
        notes, s.notes = s.notes, []
        parts = [HEAD, f"<header><h1>facematch</h1><p class=meta>store <code>{e(str(self.root))}</code> · "
                       f"{len(names)} photos · faces by {e(' → '.join([model_crop['detector']] + list(model_crop.get('fallback') or [])))}"
                       f", align {e(model_crop['align'])} · {len(learned)} learned names</p></header>"]
        if error:
            parts.append(f"<div class=error role=alert id=error>{e(error)}</div>")
        parts += [f"<div class=note role=status>{e(n)}</div>" for n in notes]
        # --- search controls
        options = "".join(f"<option value='{e(n)}'>" for n in learned)
        parts.append(
            "<section id=search><h2>Search</h2><div class=row>"
            "<form action=/search method=post enctype=multipart/form-data>"
            "<label>Photo <input type=file name=photo accept='image/*' required id=upload></label> "
            "<button type=submit id=search-button>Search</button></form>"
            "<form action=/name/search method=post><label>Learned name "
            f"<input name=person list=learned id=name-search placeholder='a learned name' required></label> "
            f"<datalist id=learned>{options}</datalist><button type=submit id=name-search-button>Search by name</button>"
            "</form></div>")
        if learned:
            parts.append("<p class=meta>learned: " + ", ".join(e(n) for n in learned) + "</p>")
        parts.append("</section>")
        # --- the query and this round
        if s.query is not None:
            crop = (f"<img src='/query.png?r={s.round}-{int(s.used * 1000)}' alt='the crop that was searched' "
                    f"id=query-crop>") if s.crop_png is not None else ""
            parts.append(f"<section id=query><h2>Searched</h2><figure>{crop}<figcaption>{e(s.label)}<br>"
                         f"<span class=how>{e(s.how)}</span></figcaption></figure></section>")
            parts.append(self._round(s, store))
        # --- the gallery
        parts.append(self._gallery(store, names, gallery_page))
        parts.append(SCRIPT + "</body></html>")
        return HTMLResponse("".join(parts), status_code=status)

    def _round(self, s: Session, store) -> str:
        e = html.escape
        relevant = sum(s.marks.values())
        cards = []
        for name, dist in s.results:
            try:
                how = store.photo(name)["how"]
            except FacematchError:
                continue  # removed meanwhile
            mark = s.marks.get(name)
            cls = {True: " relevant", False: " irrelevant"}.get(mark, "")
            field_name = e(f"mark:{name}")
            radios = "".join(
                f"<label><input type=radio name='{field_name}' value={v}{' checked' if mark is m else ''}> {t}</label>"
                for v, m, t in (("relevant", True, "relevant"), ("irrelevant", False, "irrelevant"), ("none", None, "unmarked")))
            cards.append(
                f"<div class='card{cls}' data-name='{e(name)}'><a href='/photo?name={quote(name)}' target=_blank>"
                f"<img src='/crop?name={quote(name)}' alt='{e(name)}' loading=lazy></a>"
                f"<div class=name title='{e(name)}'>{e(name)}</div><div class=dist>distance {dist:.3f}</div>"
                f"<div class=how>{e(_how_words(how))}</div><div class=marks>{radios}</div>"
                f"<div class=actions><button type=submit formaction=/pick name=name value='{e(name)}'>search with this</button>"
                f"<button type=submit formaction=/remove name=name value='{e(name)}' class=danger>remove</button></div></div>")
        methods = "".join(f"<option{' selected' if m == s.method else ''}>{e(m)}</option>" for m in self.methods)
        return (f"<section id=results><h2 id=round>Round {s.round}</h2>"
                f"<p class=meta id=counts>{len(s.results)} results (distance: to the query) · <span id=marked>"
                f"{relevant} marked relevant, {len(s.marks) - relevant} irrelevant so far</span> · "
                f"{len(s.shown)} shown this search</p>"
                f"<form method=post action=/refine id=marks>"
                f"<button type=submit hidden tabindex=-1 aria-hidden=true></button><div class=grid>{''.join(cards)}</div>"
                f"<div class=row><label>Method <select name=method id=method>{methods}</select></label>"
                f"<button type=submit id=refine>Refine: next round</button></div>"
                f"<div class=row><label>This person is <input name=person id=person placeholder='a name'></label>"
                f"<button type=submit formaction=/name/learn id=learn>Learn name from the relevant marks</button>"
                f"</div></form></section>")

    def _gallery(self, store, names: list[str], page: int) -> str:
        e = html.escape
        per = max(1, int(self.w["gallery_page"]))
        pages = max(1, -(-len(names) // per))
        page = min(max(0, page), pages - 1)
        thumbs = "".join(
            f"<div class=thumb><img src='/crop?name={quote(n)}' alt='{e(n)}' loading=lazy title='{e(n)}'>"
            f"<form method=post action=/pick><button name=name value='{e(n)}'>search</button></form>"
            f"<form method=post action=/remove><button name=name value='{e(n)}' class=danger>remove</button></form></div>"
            for n in names[page * per:(page + 1) * per])
        nav = " ".join(f"<a href='/?page={p}'{' class=current' if p == page else ''}>{p + 1}</a>" for p in range(pages)) \
            if pages > 1 else ""
        return (f"<section id=gallery><h2>Gallery: {len(names)} photos</h2>"
                "<form action=/add method=post enctype=multipart/form-data class=row>"
                "<label>Add photos <input type=file name=photos multiple accept='image/*' required id=add-photos></label> "
                "<button type=submit id=add-button>Add to gallery</button></form>"
                f"<div class=thumbs>{thumbs}</div><nav>{nav}</nav></section>")


def _how_words(how: str) -> str:
    return "no face found: centre crop" if how == "center" else f"face by {how}"


# ---------------------------------------------------------------- the app

def create_app(store_root: str | Path, cfg: dict) -> FastAPI:
    """The search page's app over the store at `store_root` (cfg: the full config; web and
    feedback sections are read)."""
    web = Web(store_root, cfg)
    app = FastAPI(title="facematch", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = web
    app.add_middleware(BodyLimit, limit=int(cfg["web"]["max_upload_bytes"]) * int(cfg["web"]["max_files"]) + 2 ** 20)

    async def form(request: Request):
        """The request's form, or a UserError that says why not (too large, not a form, foreign origin)."""
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            raise UserError(f"a form from {origin} is not accepted here", 403)
        try:
            return await request.form(max_files=int(cfg["web"]["max_files"]) + 1, max_fields=10000)
        except BodyTooLarge:
            raise UserError(f"the upload is too large: at most {cfg['web']['max_files']} files of "
                            f"{int(cfg['web']['max_upload_bytes']) / 1e6:.1f} MB (web.max_upload_bytes)", 413) from None
        except Exception as exc:
            raise UserError(f"the request could not be read as a form ({exc.__class__.__name__}: {exc})", 400) from None

    async def handle(request: Request, make):
        """Read the form, turn it into (action, args) with `make`, run it; refusals become the page."""
        try:
            data = await form(request)
            action, *args = await make(data)
        except UserError as exc:
            message, status = str(exc), exc.status
            return await web.run(request, lambda s: web.page(s, status, message))
        return await web.run(request, action, *args)

    def marks_of(data) -> dict[str, bool | None]:
        return {k[5:]: MARKS.get(str(v)) for k, v in data.multi_items() if k.startswith("mark:")}

    async def read_upload(value, max_bytes: int) -> tuple[str, bytes]:
        if value is None or isinstance(value, str) or not getattr(value, "filename", None):
            raise UserError("choose a photo first")
        data = await value.read(max_bytes + 1)
        return value.filename, data

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request, page: int = 0):
        return await web.run(request, lambda s: web.page(s, gallery_page=page))

    @app.post("/search")
    async def search(request: Request):
        async def make(data):
            return (web.search_upload, *await read_upload(data.get("photo"), int(cfg["web"]["max_upload_bytes"])))
        return await handle(request, make)

    @app.post("/pick")
    async def pick(request: Request):
        async def make(data):
            return web.pick, str(data.get("name", ""))
        return await handle(request, make)

    @app.post("/mark")
    async def mark(request: Request):
        async def make(data):
            value = str(data.get("value", "none"))
            if value not in ("relevant", "irrelevant", "none"):
                raise UserError(f"mark '{value}' is not relevant, irrelevant or none")
            return web.mark, str(data.get("name", "")), value
        return await handle(request, make)

    @app.post("/refine")
    async def refine(request: Request):
        async def make(data):
            return web.refine, marks_of(data), str(data.get("method", web.method))
        return await handle(request, make)

    @app.post("/add")
    async def add(request: Request):
        async def make(data):
            files = [v for v in data.getlist("photos") if not isinstance(v, str) and getattr(v, "filename", None)]
            return web.add, [await read_upload(v, int(cfg["web"]["max_upload_bytes"])) for v in files]
        return await handle(request, make)

    @app.post("/remove")
    async def remove(request: Request):
        async def make(data):
            return web.remove, str(data.get("name", ""))
        return await handle(request, make)

    @app.post("/name/learn")
    async def learn(request: Request):
        async def make(data):
            return web.learn, str(data.get("person", "")), marks_of(data)
        return await handle(request, make)

    @app.post("/name/search")
    async def name_search(request: Request):
        async def make(data):
            return web.search_name, str(data.get("person", ""))
        return await handle(request, make)

    @app.get("/photo")
    async def photo(request: Request, name: str):
        return await web.run(request, web.photo_file, name, "file")

    @app.get("/crop")
    async def crop(request: Request, name: str):
        return await web.run(request, web.photo_file, name, "crop")

    @app.get("/query.png")
    async def query_png(request: Request):
        return await web.run(request, web.query_crop)

    return app


class BodyLimit:
    """ASGI middleware: a request body past `limit` bytes stops being read (BodyTooLarge), even
    when it comes without a Content-Length; one that declares more is refused with 413 at once."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = HTMLResponse(HEAD + f"<div class=error role=alert id=error>the upload is too large: "
                                    f"{int(declared) / 1e6:.1f} MB, more than {self.limit / 1e6:.1f} MB in all "
                                    f"(web.max_upload_bytes × web.max_files). <a href='/'>Back</a></div></body></html>",
                                    status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)


HEAD = """<!doctype html><html lang=en><head><meta charset=utf-8><title>facematch search</title>
<meta name=viewport content='width=device-width, initial-scale=1'>
<style>
body{font-family:system-ui,sans-serif;margin:1rem 2rem;color:#222;max-width:1200px}
h1{margin:0}h2{margin:1.2rem 0 .4rem;font-size:1.2rem}.meta{color:#666;font-size:.9rem}
.row{display:flex;gap:1rem;align-items:center;flex-wrap:wrap;margin:.5rem 0}
.error{background:#fde8e8;border:1px solid #c0392b;color:#7b1d12;padding:.6rem;margin:.6rem 0;border-radius:4px}
.note{background:#e8f4fd;border:1px solid #2e86c1;padding:.5rem;margin:.4rem 0;border-radius:4px}
figure{display:flex;gap:1rem;align-items:center;margin:0}figure img{width:128px;height:128px;border:2px solid #444}
.how{color:#555;font-size:.85rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.7rem}
.card{border:3px solid #ddd;border-radius:6px;padding:.4rem;font-size:.8rem}
.card img{width:100%;aspect-ratio:1;object-fit:cover}
.card.relevant{border-color:#27ae60;background:#eafaf1}.card.irrelevant{border-color:#c0392b;background:#fdedec}
.name{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-family:monospace}
.dist{font-weight:bold}.marks label{display:block}.actions{display:flex;gap:.3rem;margin-top:.3rem}
.thumbs{display:flex;flex-wrap:wrap;gap:.4rem}.thumb{width:80px;font-size:.7rem;text-align:center}
.thumb img{width:80px;height:80px;object-fit:cover}.thumb form{display:inline}
button.danger{color:#a93226}nav a{margin-right:.4rem}nav a.current{font-weight:bold}
</style></head><body>"""

SCRIPT = """<script>
// Marks are sent as soon as they are made (the refine form carries them too, so the page works without this).
document.querySelectorAll('.card input[type=radio]').forEach(function (radio) {
  radio.addEventListener('change', function () {
    var card = radio.closest('.card');
    card.classList.remove('relevant', 'irrelevant');
    if (radio.value !== 'none') card.classList.add(radio.value);
    fetch('/mark', {method: 'POST', body: new URLSearchParams({name: card.dataset.name, value: radio.value})})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (d) document.getElementById('marked').textContent =
          d.relevant + ' marked relevant, ' + d.irrelevant + ' irrelevant so far';
      });
  });
});
var person = document.getElementById('person');
if (person) person.addEventListener('keydown', function (event) {
  if (event.key === 'Enter') { event.preventDefault(); document.getElementById('learn').click(); }
});
document.querySelectorAll('button.danger').forEach(function (button) {
  button.addEventListener('click', function (event) {
    if (!confirm('Remove ' + button.value + ' from the gallery?')) event.preventDefault();
  });
});
</script>"""


# ---------------------------------------------------------------- command line

def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="the gallery store's folder (python -m search.store build)")


def serve(args: argparse.Namespace) -> int:
    import uvicorn
    from PIL import Image

    cfg = args.cfg
    Image.MAX_IMAGE_PIXELS = int(cfg["web"]["max_pixels"])  # the pipeline's own reads refuse bombs too
    app = create_app(args.store, cfg)
    web = app.state.web
    web.worker.submit(lambda: web.store().model()).result()  # load the model now: a bad checkpoint fails here
    host, port = cfg["web"]["host"], int(cfg["web"]["port"])
    try:
        if not ipaddress.ip_address(host).is_loopback:
            log.warning(f"web.host={host}: the page (which can add and remove photos) is open to other machines")
    except ValueError:
        pass
    log.info(f"search page on http://{host}:{port}/ for {args.store} ({web.worker.submit(lambda: len(web.store())).result()} photos)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
    web.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(__doc__, arguments, serve, argv, prog="python web.py")


if __name__ == "__main__":
    sys.exit(main())
