"""The retrieval section (`retrieval:` in config/default.yaml, where every field is documented once) as typed
settings: what search, the indexes and the re-rankers receive."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetrievalSettings:
    """How a gallery is searched and re-ranked."""
    metric: str = "cosine"
    k: int = 10
    chunk_size: int = 1024
    index: str = "exact"
    nprobe: int = 16
    ef_search: int = 64
    rerank: list[str] = field(default_factory=list)
    shortlist: int = 100
    qe_k: int = 2
    qe_alpha: float = 3.0
    dba_k: int = 2
    dba_alpha: float = 3.0
    kr_k1: int = 20
    kr_k2: int = 6
    kr_lambda: float = 0.3
    fpir: float = 0.01
