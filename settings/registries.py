"""The code's registries the schema names (`registry:` rules in config/schema.yaml), each imported only when a value
is checked against it: named here, at the top, so no floor below imports one above it."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator

from utils import training_package


# ---------------------------------------------------------------- the registries the schema names

def _steps():
    from detection.chain import STEPS
    return STEPS


def _alignments():
    from detection.align import ALIGNMENTS
    return ALIGNMENTS


def _backbones():
    from backbones.registry import BACKBONES
    return BACKBONES


def _poolings():
    from network import POOLINGS
    return POOLINGS


def _heads():
    from network import HEADS
    return HEADS


def _landmarks():
    from detection.chain import LANDMARKS
    return LANDMARKS


def _precisions():
    from runtime.onnx_model import PRECISIONS
    return PRECISIONS


def _tta():
    from runtime import TTA
    return TTA


def _losses():
    from training.losses import LOSSES
    return LOSSES


def _degradations():
    from dataset import DEGRADATIONS
    return DEGRADATIONS


def _cover_kinds():
    from occlusion.covers import COVERS
    return COVERS


def _crop_degradations():
    from dataset import CROP_DEGRADATIONS
    return CROP_DEGRADATIONS


def _val_degradations():
    from dataset import VAL_DEGRADATIONS
    return VAL_DEGRADATIONS


def _distances():
    from search.exact import DISTANCES
    return DISTANCES


def _rerankers():
    from search.rerank import RERANKERS
    return RERANKERS


def _feedback_methods():
    from search.feedback import FEEDBACK
    return FEEDBACK


class _Registries(Mapping):
    """The schema's registry names -> the code's registries, each imported only when a value is checked
    against it (a command that never names a loss never imports the losses)."""
    _table: dict[str, Callable[[], Any]] = {
        "detection_steps": _steps, "alignments": _alignments, "landmarks": _landmarks, "backbones": _backbones, "poolings": _poolings,
        "heads": _heads, "tta": _tta, "precisions": _precisions, "losses": _losses, "degradations": _degradations, "crop_degradations": _crop_degradations,
        "val_degradations": _val_degradations,
        "cover_kinds": _cover_kinds,
        "distances": _distances,
        "rerankers": _rerankers, "feedback_methods": _feedback_methods,
    }

    def __getitem__(self, name: str):
        return list(self._table[name]())

    def get(self, name: str, default=None):
        """The registry's names, or `default` where its code needs a package the inference install leaves out
        (torch for the networks' parts, pytorch-metric-learning for the losses): what configures a network that is
        built or trained is checked where one can be, on the full install."""
        try:
            return self[name]
        except ModuleNotFoundError as exc:
            if training_package(exc) is None:
                raise
            return default

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


REGISTRIES = _Registries()
