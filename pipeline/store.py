"""The gallery store: photos, their crops and embeddings, the search index, and the fingerprint
of the checkpoint and preprocessing that made them, in one folder. Photos are added (cropped and
embedded) and removed without a rebuild; every change is one SQLite transaction, and the index
file is rewritten atomically after it.

    store = GalleryStore.open("stores/lfw")
    store.add([...]); store.remove([...]); store.search(vectors, k) -> (distances, names)
    store.learn_name("Ann", [photo names]); store.search_name("Ann", k) -> (distances, names)

A store refuses, with a message naming both, to take embeddings from another checkpoint. Its command
line is `facematch store` (cli/gallery.py).

A crash loses nothing acknowledged and leaves nothing behind for long: an add writes its photos' files, then the
transaction that names them, holding a shared lock on store.lock meanwhile; a process killed between the two leaves
files no row names, and the next open, finding the lock free (the kernel lets go of a dead process's locks), deletes
them all. While another process's add runs, an open deletes only those older than SWEEP_AFTER.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from dataset import DataSettings
from runtime import EmbeddingSettings
from search.retrieval_settings import RetrievalSettings
from utils import FacematchError, atomic_write, connect, get_logger

log = get_logger()
NO_FACE = ("center", "guess")  # chain steps that always give a crop, face or not
SWEEP_AFTER = 600  # seconds: where an add may be running, a file no row names older than this is a crashed add's
LOCK = "store.lock"  # every add holds a shared lock on it while it writes files; a sweep that gets it alone knows none runs

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    id      INTEGER PRIMARY KEY,     -- the id the index knows the photo by
    name    TEXT NOT NULL UNIQUE,    -- the photo's name (its file name when added)
    sha1    TEXT NOT NULL UNIQUE,    -- the photo's content: the same photo is stored once
    file    TEXT NOT NULL,           -- the photo, copied into <store>/photos/
    crop    TEXT NOT NULL,           -- the crop that was embedded, in <store>/crops/
    how     TEXT NOT NULL,           -- how the face was found: a detector's name, or center
    vector  BLOB NOT NULL,           -- float32 embedding
    added   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS names (   -- names learned from feedback: a prototype per name
    name      TEXT PRIMARY KEY,
    vector    BLOB NOT NULL,         -- sum of the marked embeddings (normalised when used)
    marks     INTEGER NOT NULL,
    updated   REAL NOT NULL
);
"""


class StoreError(FacematchError, RuntimeError):
    """A store that cannot be opened or changed as asked; the message names the store and why."""


class NotFoundError(StoreError, LookupError):
    """A photo or learned name the store does not hold; the message names it."""


@dataclass
class AddReport:
    """What happened to each photo given to add(): nothing is dropped without a word."""
    added: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)   # the same content is already stored
    skipped: list[str] = field(default_factory=list)      # unreadable, or no face on a chain without center
    no_face: list[str] = field(default_factory=list)      # no detector found a face (a guess or the centre): left out
    crop_summary: str = ""

    def summary(self) -> str:
        text = f"{len(self.added)} added, {len(self.duplicates)} already stored, {len(self.skipped)} skipped"
        if self.skipped:
            text += " (" + ", ".join(self.skipped[:5]) + (" …" if len(self.skipped) > 5 else "") + ")"
        if self.no_face:
            text += (f", {len(self.no_face)} left out with no face found (" + ", ".join(self.no_face[:5]) +
                     (" …" if len(self.no_face) > 5 else "") + "; add them with --allow-no-face)")
        return text


class GalleryStore:
    """One gallery on disk. State is real here (a database, an index, a model, the face finder its photos are
    cropped by), hence a class."""

    def __init__(self, root: Path, conn: sqlite3.Connection, data: DataSettings = DataSettings()):
        from detection import FaceFinder

        self.root, self.conn, self.data, self.finder = root, conn, data, FaceFinder()
        self.meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        self._model = None
        self._index = None

    # ------------------------------------------------------------ opening
    @classmethod
    def create(cls, root: str | Path, checkpoint: str | Path, model, retrieval: RetrievalSettings = RetrievalSettings(),
               data: DataSettings = DataSettings(), embedding: EmbeddingSettings = EmbeddingSettings()) -> "GalleryStore":
        """A new, empty store for embeddings of `model` (read from `checkpoint`), searched as `retrieval` says and
        embedded as `embedding` says (retrieval's index, nprobe and ef_search and embedding's tta are the store's
        from now on); photos are cropped and embedded through data's caches."""
        root = Path(root)
        if (root / "store.sqlite").exists():
            raise StoreError(f"{root} already holds a store: add to it, or remove the folder to rebuild")
        root.mkdir(parents=True, exist_ok=True)
        conn = connect(root / "store.sqlite", SCHEMA)
        r = retrieval
        source = getattr(model, "source", None) or checkpoint  # an export made for model.runtime: onnx is the model
        meta = {"checkpoint": str(Path(source).resolve()), "fingerprint": model.content_fingerprint(),
                "preprocessing": model.meta, "arch": getattr(model, "arch", ""), "dim": model.embedding_size, "tta": embedding.tta,
                "index": r.index, "nprobe": r.nprobe, "ef_search": r.ef_search, "version": 0,
                "created": time.time(), "data": asdict(data)}
        with conn:
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        store = cls(root, conn, data)
        store._model = model
        return store

    @classmethod
    def open(cls, root: str | Path, data: DataSettings | None = None) -> "GalleryStore":
        """An existing store; photos added to it are cropped and embedded through data's caches (None: the
        caches it was built with)."""
        root = Path(root)
        if not (root / "store.sqlite").is_file():
            raise StoreError(f"{root}: no store here (create one with `facematch store build`)")
        try:
            store = cls(root, connect(root / "store.sqlite", SCHEMA))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{root}/store.sqlite cannot be read: {exc}") from None
        store.data = data or DataSettings(**store.meta.get("data", {}))
        store.sweep()
        return store

    def sweep(self, older_than: float = SWEEP_AFTER) -> int:
        """Delete the files in photos/ and crops/ that no row names (left by an add killed between writing them and
        its transaction); returns how many. When no add is running in any process (the store's lock is free: a
        killed process holds none), every such file goes; while one runs, only those older than `older_than` s."""
        with _lock(self.root, fcntl.LOCK_EX | fcntl.LOCK_NB) as alone:
            named = {p for row in self.conn.execute("SELECT file, crop FROM photos") for p in row}
            now, swept = time.time(), 0
            for folder in ("photos", "crops"):
                for path in (self.root / folder).glob("*") if (self.root / folder).is_dir() else []:
                    if f"{folder}/{path.name}" not in named and (alone or now - path.stat().st_mtime > older_than):
                        path.unlink(missing_ok=True)
                        swept += 1
        if swept:
            log.info(f"{self.root}: {swept} files no photo names (an add that was killed) swept away")
        return swept

    def model(self, checkpoint: str | Path | None = None):
        """The model that embeds for this store, read from its checkpoint once; another model is refused."""
        from pipeline.model_file import model_from_file

        if self._model is not None and checkpoint is None:
            return self._model
        path = checkpoint or self.meta["checkpoint"]
        model, _ = model_from_file(path)
        fingerprint = model.content_fingerprint()
        if fingerprint != self.meta["fingerprint"]:
            raise StoreError(
                f"{self.root} holds embeddings of {self.meta['checkpoint']} (fingerprint {self.meta['fingerprint'][:12]}); "
                f"{path} is another model or preprocessing (fingerprint {fingerprint[:12]}): its embeddings cannot be "
                f"mixed in. Build a new store for it with `facematch store build`.")
        self._model = model
        return self._model

    def embed(self, paths: list[Path], what: str, checkpoint: str | Path | None = None):
        """Photos cropped and embedded as this store's are (its model, its test-time augmentation): an
        EmbeddedFolder (pipeline.embedding)."""
        from pipeline.embedding import embed_paths

        return embed_paths(paths, self.model(checkpoint), "cpu", what, data=self.data,
                           embedding=EmbeddingSettings(tta=self.meta["tta"]), finder=self.finder)

    # ------------------------------------------------------------ contents
    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0]

    def vectors(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(ids, names, embeddings) of every stored photo, in id order."""
        rows = self.conn.execute("SELECT id, name, vector FROM photos ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.stack([np.frombuffer(r[2], dtype="<f4") for r in rows]) if rows else \
            np.zeros((0, int(self.meta["dim"])), np.float32)
        return ids, [r[1] for r in rows], vecs.astype(np.float32)

    def photo(self, name: str) -> dict:
        """One stored photo: its files and how its face was found."""
        row = self.conn.execute("SELECT id, name, file, crop, how, added FROM photos WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no photo named '{name}' in this store")
        return {"id": row[0], "name": row[1], "file": self.root / row[2], "crop": self.root / row[3],
                "how": row[4], "added": row[5]}

    def names_of(self, ids: np.ndarray) -> list[list[str | None]]:
        """Names for an array of ids (None for -1, faiss's 'no result')."""
        lookup = dict(self.conn.execute("SELECT id, name FROM photos"))
        return [[lookup.get(int(i)) for i in row] for row in np.atleast_2d(ids)]

    # ------------------------------------------------------------ the index
    def index(self):
        """The search index over every stored photo, loaded from disk when current, else rebuilt."""
        from search.index import build_index, load_index

        if self._index is not None:
            return self._index
        path, stamp = self.root / "index.bin", self.root / "index.json"
        if path.exists() and stamp.exists() and json.loads(stamp.read_text()).get("version") == self.meta["version"]:
            self._index = load_index(path)
            return self._index
        ids, _, vecs = self.vectors()
        self._index = build_index(self.meta["index"], int(self.meta["dim"]), "cosine",
                                  nprobe=int(self.meta["nprobe"]), ef_search=int(self.meta["ef_search"]))
        if len(ids):
            self._index.add(vecs, ids)
        self._save_index()
        return self._index

    def _save_index(self) -> None:
        if self._index is None:
            return
        self._index.save(self.root / "index.bin")
        atomic_write(self.root / "index.json",
                     lambda tmp: Path(tmp).write_text(json.dumps({"version": self.meta["version"]})))

    def _bump(self, conn: sqlite3.Connection) -> None:
        self.meta["version"] += 1
        conn.execute("UPDATE meta SET value=? WHERE key='version'", (json.dumps(self.meta["version"]),))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str | None]]]:
        """The k nearest stored photos of each query embedding: (distances, names), nearest first."""
        dist, ids = self.index().search(np.asarray(queries, dtype=np.float32), k)
        return dist, self.names_of(ids)

    # ------------------------------------------------------------ changes
    def add(self, paths: list[str | Path], checkpoint: str | Path | None = None, allow_no_face: bool = False) -> AddReport:
        """Crop, embed and store photos (files, or folders searched recursively) in one transaction;
        the same content is stored once. A photo where no detector found a face (the chain fell back to a guess or
        the centre) is left out and reported, unless `allow_no_face`. Nothing is stored when anything fails."""
        report = AddReport()
        fresh = _new_photos(_image_files(paths), self._stored_sha1s(), report)
        if not fresh:
            return report
        emb = self.embed([f for f, _ in fresh], "photos to add", checkpoint)
        sha_of = dict(fresh)
        report.skipped = list(emb.skipped)
        new = [NewPhoto(f.name, sha_of[f], f.suffix.lower(), lambda target, f=f: shutil.copyfile(f, target), crop,
                        how, vector, str(f))
               for f, crop, how, vector in zip(emb.paths, emb.crops, emb.found_by, emb.embeddings)]
        return self.add_embedded(new, allow_no_face, report)

    def add_embedded(self, photos: list["NewPhoto"], allow_no_face: bool = False,
                     report: AddReport | None = None) -> AddReport:
        """Store photos already cropped and embedded as this store embeds (an upload the page checked in memory) in
        one transaction; the same content is stored once, a photo with no face found is left out unless
        `allow_no_face`. Files are written before the transaction that names them, under the store's shared lock:
        a crash between leaves files no row names, which the next open sweeps away."""
        report = report or AddReport()
        known, taken = self._stored_sha1s(), {r[0] for r in self.conn.execute("SELECT name FROM photos")}
        rows, written = [], []
        with _lock(self.root, fcntl.LOCK_SH):
            try:
                for photo in photos:
                    if photo.sha in known:
                        report.duplicates.append(photo.shown or photo.name)
                        continue
                    if not allow_no_face and photo.how in NO_FACE:
                        report.no_face.append(photo.shown or photo.name)
                        continue
                    known.add(photo.sha)
                    unique = photo.name if photo.name not in taken else f"{photo.sha[:8]}_{photo.name}"
                    taken.add(unique)
                    photo_file, crop_file = Path("photos") / f"{photo.sha}{photo.suffix}", Path("crops") / f"{photo.sha}.png"
                    for folder in ("photos", "crops"):
                        (self.root / folder).mkdir(exist_ok=True)
                    written.append(self.root / photo_file)
                    photo.write(self.root / photo_file)
                    written.append(self.root / crop_file)
                    _write_crop(photo.crop, self.root / crop_file)
                    rows.append((unique, photo.sha, str(photo_file), str(crop_file), photo.how, photo.vector))
                if not rows:  # every photo was left out: nothing changes, not even the version
                    return report
                with self.conn:
                    new_ids = []
                    for name, sha, pf, cf, how, vector in rows:
                        cur = self.conn.execute(
                            "INSERT INTO photos (name, sha1, file, crop, how, vector, added) VALUES (?,?,?,?,?,?,?)",
                            (name, sha, pf, cf, how, np.asarray(vector, "<f4").tobytes(), time.time()))
                        new_ids.append(cur.lastrowid)
                        report.added.append(name)
                    self._bump(self.conn)
            except BaseException:
                for path in written:  # a failed add leaves no stray files behind
                    if path.exists() and not self.conn.execute(
                            "SELECT 1 FROM photos WHERE file=? OR crop=?", (str(path.relative_to(self.root)),) * 2).fetchone():
                        path.unlink()
                raise
        if self._index is not None:
            self._index.add(np.stack([r[5] for r in rows]).astype(np.float32), np.array(new_ids, dtype=np.int64))
            self._save_index()
        else:
            self.index()
        return report

    def _stored_sha1s(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT sha1 FROM photos")}

    def remove(self, names: list[str]) -> int:
        """Remove photos by name; returns how many were removed. An unknown name is an error."""
        rows = [self.conn.execute("SELECT id, file, crop FROM photos WHERE name=?", (n,)).fetchone() for n in names]
        unknown = [n for n, r in zip(names, rows) if r is None]
        if unknown:
            raise NotFoundError(f"no photo named {', '.join(repr(u) for u in unknown[:5])} in this store")
        with self.conn:
            self.conn.executemany("DELETE FROM photos WHERE id=?", [(r[0],) for r in rows])
            self._bump(self.conn)
        for _, photo_file, crop_file in rows:
            for f in (photo_file, crop_file):
                (self.root / f).unlink(missing_ok=True)
        if self._index is not None:
            self._index.remove(np.array([r[0] for r in rows], dtype=np.int64))
            self._save_index()
        else:
            self.index()
        return len(rows)

    # ------------------------------------------------------------ names learned from feedback
    def learn_name(self, name: str, photo_names: list[str]) -> int:
        """Mark stored photos as the person `name`: their embeddings are added to the name's
        prototype (created on the first mark) in one transaction. Returns the name's marks in all.
        The prototype is the normalised mean of every marked embedding (the sum is stored, so a later
        mark moves it); a photo given twice in one call counts once, in two calls twice. An unknown
        photo is an error and nothing is learned."""
        name = _clean_name(name, self.root)
        photos = list(dict.fromkeys(photo_names))
        if not photos:
            raise StoreError(f"{self.root}: no photo to learn '{name}' from: mark at least one")
        rows = [self.conn.execute("SELECT vector FROM photos WHERE name=?", (p,)).fetchone() for p in photos]
        unknown = [p for p, r in zip(photos, rows) if r is None]
        if unknown:
            raise NotFoundError(f"no photo named {', '.join(repr(u) for u in unknown[:5])} in this store")
        total = np.sum([np.frombuffer(r[0], dtype="<f4") for r in rows], axis=0, dtype=np.float64)
        with self.conn:
            old = self.conn.execute("SELECT vector, marks FROM names WHERE name=?", (name,)).fetchone()
            if old is not None:
                total = total + np.frombuffer(old[0], dtype="<f8")
            marks = len(photos) + (old[1] if old else 0)
            self.conn.execute("INSERT OR REPLACE INTO names (name, vector, marks, updated) VALUES (?,?,?,?)",
                              (name, np.asarray(total, "<f8").tobytes(), marks, time.time()))
        return marks

    def name_prototype(self, name: str) -> np.ndarray:
        """The learned name's prototype: the normalised mean of its marked embeddings, float32 (D,)."""
        row = self.conn.execute("SELECT vector FROM names WHERE name=?", (_clean_name(name, self.root),)).fetchone()
        if row is None:
            raise NotFoundError(f"no learned name '{name}' (learned: "
                             f"{', '.join(self.learned_names()) or 'none yet'})")
        vector = np.frombuffer(row[0], dtype="<f8")
        return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)

    def name_marks(self, name: str) -> int:
        """How many marks made the learned name's prototype."""
        self.name_prototype(name)  # unknown: StoreError
        return self.conn.execute("SELECT marks FROM names WHERE name=?", (_clean_name(name, self.root),)).fetchone()[0]

    def threshold(self, fpir: float) -> dict | None:
        """The distance under which a stranger's photo would match someone in this store with probability
        about `fpir` (false-positive identification rate, for this store's size), from the checkpoint's
        calibration (evaluation/calibration.py); None when the model carries none."""
        from evaluation.calibration import threshold_for_gallery

        calib = self.meta["preprocessing"].get("calibration")
        return threshold_for_gallery(calib, fpir, max(1, len(self))) if calib else None

    def search_name(self, name: str, k: int) -> tuple[np.ndarray, list[str]]:
        """The k stored photos nearest the learned name's prototype: (distances (k,), names), nearest
        first. An unknown name is a StoreError that says so."""
        dist, names = self.search(self.name_prototype(name)[None, :], k)
        keep = [i for i, n in enumerate(names[0]) if n is not None]
        return dist[0][keep], [names[0][i] for i in keep]

    def learned_names(self) -> list[str]:
        """Every learned name, sorted."""
        return [r[0] for r in self.conn.execute("SELECT name FROM names ORDER BY name")]

    def forget_name(self, name: str) -> None:
        """Drop a learned name and its prototype."""
        self.name_prototype(name)  # unknown: StoreError
        with self.conn:
            self.conn.execute("DELETE FROM names WHERE name=?", (_clean_name(name, self.root),))

    def networks(self) -> list[dict]:
        """Each network that embeds for this store and how it crops a photo: one for a single network, one per
        member of a fusion ({'network', 'weight', 'crop': its saved crop settings})."""
        pre = self.meta["preprocessing"]
        names = str(self.meta.get("arch") or "").split("+")
        parts = pre["members"] if "members" in pre else [pre]
        weights = pre.get("weights") or [1.0] * len(parts)
        return [{"network": names[i] if len(names) == len(parts) and names[i] else f"network {i + 1}",
                 "weight": float(w), "crop": part["crop"]} for i, (part, w) in enumerate(zip(parts, weights))]

    def info(self) -> dict:
        """What the store holds and what made it (a fusion's crops member by member)."""
        ids, _, _ = self.vectors()
        nets = self.networks()
        crops = [f"{n['crop']['detector']} + {n['crop']['align']}" for n in nets]
        return {"store": self.root.name, "photos": len(ids), "checkpoint": Path(self.meta["checkpoint"]).name,
                "fingerprint": self.meta["fingerprint"], "index": self.meta["index"], "dim": self.meta["dim"],
                "tta": self.meta["tta"],
                "crop": crops[0] if len(nets) == 1 else "; ".join(
                    f"{n['network']} ({n['weight']:g}): {c}" for n, c in zip(nets, crops)),
                "networks": [{"network": n["network"], "weight": n["weight"], "detector": n["crop"]["detector"],
                              "align": n["crop"]["align"], "size": n["crop"]["size"]} for n in nets],
                "names learned": self.conn.execute("SELECT COUNT(*) FROM names").fetchone()[0],
                "version": self.meta["version"]}


@dataclass
class NewPhoto:
    """A photo cropped and embedded, ready to store: its name, content, how to write its file, its crop, how its face
    was found and its embedding."""
    name: str                            # the name it is stored under (made unique when taken)
    sha: str                             # sha1 of its bytes: the same photo is stored once
    suffix: str                          # its file's suffix, lower case
    write: Callable[[Path], None]        # writes the photo's file to the path given
    crop: np.ndarray
    how: str                             # the chain step that found its face (NO_FACE: none did)
    vector: np.ndarray
    shown: str = ""                      # what a report calls it (its path or uploaded name)


@contextlib.contextmanager
def _lock(root: Path, how: int) -> Iterator[bool]:
    """The store's lock file held as `how` (fcntl.LOCK_SH for an add, LOCK_EX | LOCK_NB for a sweep) for the block;
    yields whether it was got. The kernel lets go of it when its process dies, however it dies."""
    with open(root / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, how)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _image_files(paths: list[str | Path]) -> list[Path]:
    """The image files named, and those under the folders named (searched recursively)."""
    from detection import IMAGE_EXTENSIONS, list_images

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += list_images(p, recursive=True)
        elif p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(p)
        else:
            raise StoreError(f"{p}: not an image file or a folder")
    return files


def _new_photos(files: list[Path], known: set[str], report: AddReport) -> list[tuple[Path, str]]:
    """(file, sha1) of each file whose content is neither stored (`known`) nor earlier in the list;
    the others are reported as duplicates."""
    from pipeline.embedding_cache import file_sha1

    fresh, seen = [], set()
    for f in files:
        sha = file_sha1(f)
        if sha in known or sha in seen:
            report.duplicates.append(str(f))
        else:
            seen.add(sha)
            fresh.append((f, sha))
    return fresh


def _clean_name(name: str, root: Path) -> str:
    """A learned name as stored: surrounding spaces dropped; empty or over 100 characters is an error."""
    text = " ".join(str(name).split())
    if not text or len(text) > 100:
        raise StoreError(f"{root}: a learned name needs 1 to 100 characters, got {name!r}")
    return text


def _write_crop(crop: np.ndarray, target: Path) -> None:
    from PIL import Image

    Image.fromarray(crop).save(target)
