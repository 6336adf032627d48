"""The embedding cache: a photo's embedding kept under (its content, the model's fingerprint, the
test-time augmentation), in SQLite, so an unchanged photo is never embedded twice by the same model.

    cache = EmbeddingCache("data/cache/embeddings.sqlite")
    found = cache.get(keys)                 # {key: vector} for the keys already there
    cache.put({key: vector, ...})
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from utils import PerThread

SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    key    TEXT PRIMARY KEY,   -- sha1 of (photo content sha1, model fingerprint, tta)
    dim    INTEGER NOT NULL,
    vector BLOB NOT NULL       -- float32, little-endian
);
"""


def photo_key(content_sha1: str, fingerprint: str, tta: str) -> str:
    """The cache key of one photo embedded by one model with one test-time augmentation."""
    return hashlib.sha1(f"{content_sha1}:{fingerprint}:{tta}".encode()).hexdigest()


def file_sha1(path: str | Path) -> str:
    """sha1 of a file's bytes (the photo's identity, whatever its name)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha1").hexdigest()


class EmbeddingCache:
    """Embeddings by key in one SQLite file (WAL mode, one connection per thread)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._conn = PerThread(self.path, SCHEMA)
        self._conn()  # a bad path fails here, not at the first look-up

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The vectors of the keys that are cached."""
        found: dict[str, np.ndarray] = {}
        conn = self._conn()
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = conn.execute(f"SELECT key, dim, vector FROM embeddings WHERE key IN ({','.join('?' * len(chunk))})",
                                chunk).fetchall()
            for key, dim, blob in rows:
                vector = np.frombuffer(blob, dtype="<f4")
                if len(vector) == dim:
                    found[key] = vector.astype(np.float32)
        return found

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        """Store vectors by key, in one transaction."""
        rows = [(k, int(v.shape[0]), np.asarray(v, dtype="<f4").tobytes()) for k, v in vectors.items()]
        with self._conn() as conn:
            conn.executemany("INSERT OR REPLACE INTO embeddings (key, dim, vector) VALUES (?, ?, ?)", rows)

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
