"""What a person does on the page, with no HTTP in it: search by an uploaded photo, a gallery photo or a
learned name, mark results, refine by a feedback method, add and remove photos, learn names; and what
the page shows (`view`). Every call takes the browser's Session; refusals raise webapp.errors' typed
errors. The store lives on one worker thread (SQLite's connection is made there): `call` runs an
action there, one at a time.

Sessions: a random cookie id maps to the session's state in memory (webapp/session.py: query embedding and crop,
marks, rows shown, round, method); the web.max_sessions most recently used are kept.
"""
from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dataset import DataSettings
from evaluation.calibration import decide
from search.exact import cosine_distance, unit
from search.feedback import FEEDBACK, NEEDS, FeedbackSettings, available_methods, next_round
from evaluation.calibration import match_words
from pipeline.store import NO_FACE, NewPhoto, NotFoundError, StoreError
from utils import TRAIN_INSTALL, get_logger, lookup
from webapp import fields
from webapp.errors import Busy, NoFace, NotFound, ServerFailure, TooLarge, UserError
from webapp.session import FPIRS, MARKS, Checked, Session, how_words, png_bytes
from webapp.uploads import check_upload, safe_name

log = get_logger()


@dataclass(frozen=True)
class WebSettings:
    """The web section (config/default.yaml documents each field): where the page listens and its bounds."""
    host: str = "127.0.0.1"
    port: int = 8000
    k: int = 12
    max_upload_bytes: int = 10_000_000
    max_body_bytes: int = 2_000_000
    max_pixels: int = 40_000_000
    max_files: int = 20
    max_sessions: int = 100
    max_sessions_per_client: int = 20
    max_marks: int = 1000
    max_queued: int = 4
    read_timeout: float = 60.0
    header_timeout: float = 2.0
    max_connections: int = 64
    max_connections_per_client: int = 16
    gallery_page: int = 48
    allowed_hosts: list[str] = field(default_factory=list)
    token: str = ""


class Service:
    """The page's state: the store (opened on the worker thread), the sessions, the settings."""

    def __init__(self, store_root: str | Path, web: WebSettings = WebSettings(),
                 feedback: FeedbackSettings = FeedbackSettings(), *, fpir: float, data: DataSettings | None = None):
        """The page over the store at `store_root`: its bounds (web), the feedback methods' settings, the
        starting rate of 'no one in the gallery matches' (retrieval.fpir), the crop and embedding caches (data;
        None: the store's own)."""
        self.root, self.web, self.feedback, self.fpir, self.data = Path(store_root), web, feedback, fpir, data
        lookup(FEEDBACK, feedback.method, "feedback.method")  # an unknown method fails at start, not on a search
        self.methods = available_methods()  # the inference install: those whose packages it has
        self.method = feedback.method if feedback.method in self.methods else "rocchio"
        if self.method != feedback.method:
            log.warning(f"feedback.method {feedback.method} needs {NEEDS[feedback.method]}, not installed here: the page "
                        f"refines by rocchio ({', '.join(self.methods)} here; pip install -e .[feedback] adds svm and "
                        f"mlp, {TRAIN_INSTALL} all)")
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="facematch-store")
        # uploads are decoded, cropped and embedded here, so that a slow one never holds the store's worker (the
        # page, /api/info, other searches); at most web.max_queued wait, the next is told to come back (503)
        self.heavy = ThreadPoolExecutor(1, thread_name_prefix="facematch-embed")
        self.slots = threading.BoundedSemaphore(int(web.max_queued))
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self._store = None
        self.worker.submit(self.store).result()  # a missing store fails now, not on the first request

    def store(self):
        """The gallery store; call on the worker thread only."""
        from pipeline.store import GalleryStore

        if self._store is None:
            self._store = GalleryStore.open(self.root, self.data)
        return self._store

    def close(self) -> None:
        """Finish the work in hand and stop the workers (the app's shutdown calls it; so may its owner, again)."""
        self.heavy.shutdown(wait=True)
        self.worker.shutdown(wait=True)

    # ------------------------------------------------------------ running an action
    def session_id(self, cookie: str) -> str:
        """The browser's session id: its cookie's when the session is kept, else a new random one."""
        return cookie if cookie in self.sessions else secrets.token_urlsafe(18)

    async def call(self, sid: str, action: Callable[..., Any], *args, client: str = "", keep: bool = True) -> Any:
        """`action(session, *args)` on the worker thread; its result, or its error. A request that only reads
        (keep=False) never creates a session: it sees a blank one that is not kept."""
        return await asyncio.get_running_loop().run_in_executor(self.worker, self._call, sid, action, args, client,
                                                                keep)

    async def prepare(self, uploads: list[tuple[str, bytes]], outcome: str) -> list[Checked]:
        """Check, crop and embed uploads on the upload worker (checked_files), never on the store's; a Busy (503)
        when web.max_queued uploads are already waiting."""
        if not self.slots.acquire(blocking=False):
            raise Busy(f"{self.web.max_queued} uploads are being worked on (web.max_queued): {outcome}; try again "
                       "in a moment")
        try:
            return await asyncio.get_running_loop().run_in_executor(self.heavy, self._guarded, self.checked_files,
                                                                    uploads, outcome)
        finally:
            self.slots.release()

    @staticmethod
    def _guarded(work: Callable[..., Any], *args) -> Any:
        """work(*args) with its refusals as the page's errors and its unexpected failures a ServerFailure (the
        details in the log), never a traceback."""
        try:
            return work(*args)
        except NotFoundError as exc:
            raise NotFound(str(exc)) from None
        except StoreError as exc:
            raise UserError(str(exc)) from None
        except UserError:
            raise
        except Exception as exc:  # never a traceback on the page: it goes to the server's log
            log.exception(f"web: {exc.__class__.__name__} while serving a request")
            raise ServerFailure(f"the server failed on this request ({exc.__class__.__name__}); its log has "
                                "the details") from None

    def _call(self, sid: str, action: Callable[..., Any], args: tuple, client: str = "", keep: bool = True) -> Any:
        session = self.sessions.get(sid)
        if session is None:  # kept only once its action succeeded: a refused request leaves no session, no cookie
            session = Session(self.method, float(self.fpir), client=client)
            result = self._guarded(action, session, *args)
            if keep:
                self.keep(sid, session)
            return result
        self.sessions.move_to_end(sid)
        session.used = time.time()
        return self._guarded(action, session, *args)

    def keep(self, sid: str, session: Session) -> None:
        """Keep a new session: past web.max_sessions_per_client for its address that address's least recently
        used goes; past web.max_sessions the least recently used of the address holding the most, so that clients
        from many addresses wipe their own sessions, never one of a client that holds few."""
        mine = [k for k, v in self.sessions.items() if v.client == session.client]
        for old in mine[:max(0, len(mine) + 1 - int(self.web.max_sessions_per_client))]:
            del self.sessions[old]
        self.sessions[sid] = session
        while len(self.sessions) > int(self.web.max_sessions):
            held: dict[str, list[str]] = {}
            for k, v in self.sessions.items():  # least recently used first
                held.setdefault(v.client, []).append(k)
            del self.sessions[max(held.values(), key=len)[0]]

    def kept(self, sid: str) -> bool:
        return sid in self.sessions

    # ------------------------------------------------------------ the pipeline for one photo
    def crop_and_embed(self, data: bytes, shown: str) -> tuple[np.ndarray, np.ndarray, str, str]:
        """(unit embedding, crop, how the face was found in words, chain step) of an uploaded photo held in memory,
        cropped and embedded as the store's model does it (every network of a fusion, each its own way); no face on a
        chain without centre is a NoFace (422)."""
        from detection import CENTER, ImageReadError, chain_steps, read_image
        from pipeline.embedding import embed_photo
        from runtime import EmbeddingSettings

        store = self.store()
        model = store.model()
        crop = model.crop_settings()
        try:
            image = read_image(shown, data)
        except ImageReadError as exc:
            raise UserError(f"{shown}: not a readable image ({str(exc).replace(shown, '').strip(': ')})") from None
        vector, crops = embed_photo(image, model, "cpu", EmbeddingSettings(tta=store.meta["tta"]), store.finder)
        if vector is None:
            missed = [c for c in crops if c is None]
            steps = chain_steps(crop)
            raise NoFace(f"{shown}: no face found (tried {' → '.join(steps)}"
                         + (f"; {len(missed)} of the {len(crops)} networks' crops found none" if len(crops) > 1 else "")
                         + "; the store's model has no centre-crop fallback)")
        first = crops[0]
        step = first.path
        if step == CENTER:
            how = (f"no face found by {' → '.join(s for s in chain_steps(crop) if s != CENTER) or 'any detector'}: "
                   f"the centred square of the photo was used instead (crop.fallback: center)")
        else:
            how = f"face found by {step}" + (" (fallback)" if step != crop.detector else "") + \
                  (", aligned" if first.aligned else "") + \
                  (f"; {first.faces} faces, the {crop.subject} kept" if first.faces > 1 else "")
        return unit(vector), first.image, how, step

    def checked_files(self, uploads: list[tuple[str, bytes]], outcome: str) -> list[Checked]:
        """Check, crop and embed every upload in memory. Any refusal raises before the store is touched, naming each
        bad file and saying `outcome` (what was not done)."""
        good, bad, taken = [], [], set()
        for filename, data in uploads:
            try:
                filename = fields.text(filename or "", "the upload's file name")
                _, suffix, note = check_upload(data, filename, int(self.web.max_upload_bytes), int(self.web.max_pixels))
                name = safe_name(filename, suffix)
                while name in taken:
                    name = f"{Path(name).stem}_{len(taken)}{suffix}"
                taken.add(name)
                vector, crop, how, step = self.crop_and_embed(data, filename)
                good.append(Checked(filename, name, data, note, step, vector, crop, how))
            except UserError as exc:
                bad.append(exc)
        if bad:
            status = bad[0].status if len({e.status for e in bad}) == 1 else 400
            raise UserError(" | ".join(str(e) for e in bad) + f" — {outcome}", status)
        return good

    # ------------------------------------------------------------ actions (worker thread)
    def start(self, s: Session, query: np.ndarray, label: str, crop_png: bytes | None, how: str,
              exclude: set[str], first: list[tuple[str, float]] | None = None) -> None:
        """A new search: round 1 is `first`, or the store's own nearest-neighbour search."""
        store = self.store()
        k = int(self.web.k)
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
        self.search_checked(s, self.checked_files([(filename, data)], "nothing was searched"))

    def search_checked(self, s: Session, files: list[Checked]) -> None:
        """Search by an upload already checked, cropped and embedded (Service.prepare)."""
        f = files[0]
        self.start(s, f.vector, f"the uploaded photo {f.shown} ({f.note})", png_bytes(f.crop), f.how, set())

    def pick(self, s: Session, name: str) -> None:
        name = fields.text(name, "name")
        store = self.store()
        photo = store.photo(name)
        _, names, vectors = store.vectors()
        vector = vectors[names.index(photo["name"])]
        self.start(s, vector, f"the gallery photo {name}", photo["crop"].read_bytes(), how_words(photo["how"]), {name})

    def refine(self, s: Session, marks: dict[str, bool | None], method: str | None = None) -> None:
        """The next round by `method` (default: the session's), from all marks so far."""

        method = fields.text(method, "method") if method else s.method  # everything checked before anything changes
        merged = self.merged_marks(s, marks)
        if s.query is None:
            raise UserError("nothing to refine yet: upload a photo, pick one from the gallery or search by a name first")
        if method not in self.methods:
            raise UserError(f"method '{method}' is not one of {', '.join(self.methods)}")
        _, names, vectors = self.store().vectors()
        row = {n: i for i, n in enumerate(names)}
        marked = {row[n]: v for n, v in merged.items() if n in row}
        shown = {row[n] for n in list(s.shown) + list(s.exclude) if n in row}
        rows = next_round(method, s.query, vectors, marked, shown, int(self.web.k), self.feedback) if len(names) else []
        dist = cosine_distance(vectors[rows] @ s.query) if rows else []
        s.marks, s.method = merged, method
        s.results = [(names[r], float(d)) for r, d in zip(rows, dist)]
        s.shown += [n for n, _ in s.results]
        s.round += 1
        relevant = sum(s.marks.values())
        s.notes.append(f"round {s.round} by {method}, from {relevant} relevant and {len(s.marks) - relevant} "
                       f"irrelevant marks" + ("" if s.results else ": every gallery photo has been shown"))

    def mark(self, s: Session, name: str, value: str) -> dict:
        """One mark, as the page's script sends it; the counts so far."""
        if value not in ("relevant", "irrelevant", "none"):
            raise UserError(f"mark '{fields.text(value, 'mark', 20)}' is not relevant, irrelevant or none")
        self.apply_marks(s, {name: MARKS.get(value)})
        relevant = sum(s.marks.values())
        return {"name": name, "mark": value, "relevant": relevant, "irrelevant": len(s.marks) - relevant}

    def learn(self, s: Session, person: str, marks: dict[str, bool | None]) -> None:
        store = self.store()
        person = fields.person(person)
        self.apply_marks(s, marks)
        if not person:
            raise UserError("type the person's name first, then mark their photos relevant and press 'learn name'")
        present = set(store.vectors()[1])
        new = [n for n, v in s.marks.items() if v and n in present and n not in s.learned.get(person, set())]
        if not new:
            raise UserError(f"no new relevant mark to learn '{person}' from: mark their photos relevant first")
        total = store.learn_name(person, new)
        s.learned.setdefault(person, set()).update(new)
        s.notes.append(f"learned '{person}' from {len(new)} more photo{'s' * (len(new) > 1)}: "
                       f"its prototype is the mean of {total} marked photo{'s' * (total != 1)}")

    def search_name(self, s: Session, person: str) -> None:
        store = self.store()
        person = fields.person(person)
        if not person:
            raise UserError("type a learned name to search for it")
        dist, names = store.search_name(person, int(self.web.k))  # unknown: NotFoundError, a 404
        marked = store.name_marks(person)
        self.start(s, store.name_prototype(person), f"the learned name '{person}'", None,
                   f"its prototype: the normalised mean of {marked} marked photo{'s' * (marked != 1)}", set(),
                   [(n, float(d)) for n, d in zip(names, dist)])

    def add(self, s: Session, uploads: list[tuple[str, bytes]], allow_no_face: bool = False) -> None:
        """Add photos to the gallery: each checked, and one where no detector finds a face refused (unless
        `allow_no_face`): nothing is added when one is refused."""
        if not uploads:
            raise UserError("choose one or more photos to add first")
        if len(uploads) > int(self.web.max_files):
            raise TooLarge(f"{len(uploads)} files: at most {self.web.max_files} at once (web.max_files)")
        self.add_checked(s, self.checked_files(uploads, "nothing was added to the gallery"), allow_no_face)

    def add_checked(self, s: Session, files: list[Checked], allow_no_face: bool = False) -> None:
        """Add uploads already checked, cropped and embedded (Service.prepare) to the gallery: the store writes their
        files and rows, embedding nothing again."""
        faceless = [f.shown for f in files if f.step in NO_FACE]
        if faceless and not allow_no_face:
            raise NoFace(f"no face found in {', '.join(faceless)} (the detectors found none; the crop would be "
                         "a guess): nothing was added to the gallery; tick 'add even without a face' to add it")
        report = self.store().add_embedded(
            [NewPhoto(f.name, hashlib.sha1(f.data).hexdigest(), Path(f.name).suffix,
                      lambda target, data=f.data: target.write_bytes(data), f.crop, f.step, f.vector, f.shown)
             for f in files], allow_no_face=True)
        centre = [f.shown for f in files if f.step in NO_FACE]
        text = f"gallery: {len(report.added)} added" + (f" ({', '.join(report.added)})" if report.added else "")
        if report.duplicates:
            text += f", {len(report.duplicates)} already in the gallery (the same photo is stored once)"
        if report.skipped:
            text += f", {len(report.skipped)} skipped"
        if centre:
            text += f"; no face found in {', '.join(centre)}: stored as asked, with a guessed crop"
        s.notes.append(text)

    def forget(self, s: Session, person: str) -> None:
        """Forget a learned name (its prototype), for everyone."""
        person = fields.person(person)
        self.store().forget_name(person)  # unknown: NotFoundError, a 404
        s.learned.pop(person, None)
        s.notes.append(f"forgot the learned name '{person}'")

    def remove(self, s: Session, name: str) -> None:
        name = fields.text(name, "name")
        self.store().remove([name])
        s.results = [(n, d) for n, d in s.results if n != name]
        s.marks.pop(name, None)
        s.notes.append(f"removed {name} from the gallery")

    def set_fpir(self, s: Session, fpir: str) -> None:
        """The rate the page's 'no one in the gallery matches' is held to."""
        try:
            value = float(fields.text(fpir, "rate", 32))
        except ValueError:
            value = -1.0
        if not 0 < value < 1:
            raise UserError(f"false-positive identification rate '{fpir}' is not a number between 0 and 1")
        s.fpir = value

    def merged_marks(self, s: Session, marks: dict[str, bool | None]) -> dict[str, bool]:
        """The session's marks with `marks` applied (each name checked; at most web.max_marks in all), the session
        itself untouched."""
        merged = dict(s.marks)
        for name, value in fields.marks(marks, int(self.web.max_marks)).items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        if len(merged) > int(self.web.max_marks):
            raise TooLarge(f"marks: {len(merged):,} in this search, at most {self.web.max_marks} (web.max_marks)")
        return merged

    def apply_marks(self, s: Session, marks: dict[str, bool | None]) -> None:
        s.marks = self.merged_marks(s, marks)

    # ------------------------------------------------------------ files
    def photo_path(self, s: Session, name: str, what: str) -> Path:
        """The stored photo ('file') or its crop ('crop')."""
        path = self.store().photo(fields.text(name, "name"))[what]
        if not path.is_file():
            raise NotFound(f"{name}: its {what} file is missing from the store ({path})")
        return path

    def query_crop(self, s: Session) -> bytes:
        if s.crop_png is None:
            raise NotFound("nothing searched by a photo yet")
        return s.crop_png

    # ------------------------------------------------------------ what the API answers
    def state(self, s: Session) -> dict:
        """This session's search as data: what was searched, the round, its results with their distances
        and decisions, the marks so far (the JSON API's answer to every search action)."""
        store = self.store()
        limit = store.threshold(s.fpir)
        results = [{"name": n, "distance": max(0.0, round(d, 6)), "same_person": None if limit is None else decide(d, limit)}
                   for n, d in s.results]  # cosine distance: never below 0, however it rounds
        best = min((d for _, d in s.results), default=float("inf"))
        notes, s.notes = s.notes, []
        return {"searched": s.label or None, "how": s.how or None, "round": s.round, "method": s.method,
                "results": results, "decision": match_words(best, limit) if s.results and s.round == 1 else None,
                "threshold": limit, "marks": dict(s.marks), "notes": notes}

    def info(self, s: Session) -> dict:
        """The store: what it holds and what made it, its learned names, the feedback methods."""
        store = self.store()
        return dict(store.info(), learned=store.learned_names(), methods=self.methods,
                    calibrated=bool(store.meta["preprocessing"].get("calibration")))

    # ------------------------------------------------------------ what the page shows
    def view(self, s: Session, gallery_page: int = 0) -> dict:
        """Everything the page template draws, read once: the store, the search, this round, the gallery."""
        from detection import CropSettings, describe_chain

        store = self.store()
        _, names, _ = store.vectors()
        networks = [dict(n, chain=describe_chain(CropSettings.from_saved(n["crop"])), align=n["crop"]["align"])
                    for n in store.networks()]
        notes, s.notes = s.notes, []
        per = max(1, int(self.web.gallery_page))
        pages = max(1, -(-len(names) // per))
        page = min(max(0, gallery_page), pages - 1)
        limit = store.threshold(s.fpir)
        cards = []
        for name, dist in s.results:
            try:
                how = store.photo(name)["how"]
            except NotFoundError:
                continue  # removed meanwhile
            cards.append({"name": name, "distance": dist, "how": how_words(how), "mark": s.marks.get(name),
                          "beyond": limit is not None and not decide(dist, limit)})
        relevant = sum(s.marks.values())
        return {"root": str(self.root), "photos": len(names), "learned": store.learned_names(),
                "networks": networks,
                "notes": notes, "s": s, "crop_version": f"{s.round}-{int(s.used * 1000)}", "cards": cards,
                "relevant": relevant, "irrelevant": len(s.marks) - relevant, "methods": self.methods,
                "gallery": names[page * per:(page + 1) * per], "page": page, "pages": pages,
                "decision": match_words(min((c["distance"] for c in cards), default=float("inf")), limit)
                if cards and s.round == 1 else "", "no_match": bool(cards) and all(c["beyond"] for c in cards),
                "fpir": s.fpir, "fpirs": sorted(set(FPIRS) | {s.fpir}, reverse=True)}
