"""The embedding section (`embedding:` in config/default.yaml): how crops become embeddings, whatever runs the
network: test-time augmentation and batch size, their choices checked here and nowhere else. The keys were once
filed under retrieval (retrieval.tta, retrieval.batch_size): utils.moved_keys still reads them there."""
from __future__ import annotations

from dataclasses import dataclass

from utils import ConfigError, lookup

TTA = {"none": "each crop as it is", "flip": "each crop's and its mirror image's embeddings averaged"}


@dataclass(frozen=True)
class EmbeddingSettings:
    """How a model embeds crops: tta (none | flip) and batch_size (a number of crops per pass, or auto: the
    runtime's choice)."""
    tta: str = "none"
    batch_size: int | str = "auto"

    def __post_init__(self):
        check_tta(self.tta)
        batch_setting(self.batch_size)


def check_tta(tta: str) -> str:
    """embedding.tta, checked: one of TTA."""
    lookup(TTA, tta, "embedding.tta")
    return tta


def batch_setting(value: int | str) -> int | None:
    """embedding.batch_size, checked: a positive number, or None for auto."""
    if str(value) == "auto":
        return None
    if str(value).isdigit() and int(value) > 0:
        return int(value)
    raise ConfigError(f"embedding.batch_size must be a positive number or auto, got {value!r}")
