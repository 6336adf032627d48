"""What happened to every photo of a cropping pass, said out loud."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from detection.chain import CENTER


@dataclass
class CropReport:
    """What happened to each photo of a cropping pass, so nothing is hidden: photos per chain
    step, photos left out (no face anywhere on the chain, or unreadable), several faces."""
    primary: str = ""          # the chain's first step
    subject: str = "largest"   # crop.subject: which of several faces is kept
    counts: Counter = field(default_factory=Counter)
    by_path: dict[str, list[str]] = field(default_factory=dict)
    no_face: list[str] = field(default_factory=list)     # left out: no step of the chain found a face
    failed: list[str] = field(default_factory=list)      # left out: unreadable
    unaligned: list[str] = field(default_factory=list)   # alignment asked for, no landmarks on that path

    def add(self, path: str, name: str, faces: int, aligned: bool, align: str, from_cache: bool) -> None:
        self.counts[path] += 1
        self.counts["cached"] += from_cache
        self.counts["several"] += faces > 1
        self.by_path.setdefault(path, []).append(name)
        if align != "none" and not aligned and path != CENTER:
            self.unaligned.append(name)

    def found_by(self) -> dict[str, str]:
        """Each cropped photo (as add named it) -> the chain step that found its face."""
        return {name: step for step, names in self.by_path.items() for name in names}

    def summary(self) -> str:
        c = self.counts
        total = sum(len(v) for v in self.by_path.values()) + len(self.no_face) + len(self.failed)
        steps = ", ".join(f"{len(v)} by {p}" + ("" if p == self.primary else " (fallback)")
                          for p, v in self.by_path.items() if p != CENTER)
        text = (f"{total} photos: {steps or 'none by a detector'}, {c[CENTER]} centre crop (no face found), "
                f"{len(self.no_face)} left out (no face), {c['several']} with several faces ({self.subject} kept), "
                f"{len(self.failed)} unreadable, {c['cached']} from cache")
        if self.unaligned:
            text += f", {len(self.unaligned)} not aligned (no landmarks)"
        named = [(f"{p} (fallback)", v) for p, v in self.by_path.items() if p != self.primary] + \
                [("left out, no face", self.no_face), ("skipped, unreadable", self.failed)]
        for what, files in named:
            if files:
                text += f"\n  {what}: " + ", ".join(files[:10]) + (f" (+{len(files) - 10} more)" if len(files) > 10 else "")
        return text
