"""Covers as people wear them (occlusion/covers.py), shown on validation people's photos: figures/covers.png,
a row per photo, a column per kind, the evaluation's draws and, below each, training's own.

    .venv/bin/python bench/cover_grid.py                 # ../shared/data/lfw_train's validation people
    .venv/bin/python bench/cover_grid.py --people data/sample/people --rows 3

The validation people are those training holds out (dataset.identity_split with data.val_fraction and the
seed), so the figure shows faces no network here was trained on.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "lfw_train"


def main(argv: list[str] | None = None) -> int:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dataset import identity_split, list_identities
    from detection import read_image
    from occlusion.covers import COVERS, EVALUATION, TRAINING, cover, face_of
    from settings import load_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", default=str(SHARED), help="identity folders (default ../shared/data/lfw_train)")
    parser.add_argument("--rows", type=int, default=4, help="photos shown")
    parser.add_argument("--out", default=str(ROOT / "figures" / "covers.png"))
    args = parser.parse_args(argv)
    cfg = load_config()
    people = list_identities(args.people, 2)
    _, held_out = identity_split(list(people), cfg["data"]["val_fraction"], cfg["seed"])
    photos = [read_image(people[name][0]) for name in held_out[:args.rows]]
    textures = [read_image(people[name][1]) for name in held_out[args.rows:args.rows + 8]]
    kinds = ["clean", *COVERS]
    fig, axes = plt.subplots(2 * len(photos), len(kinds), figsize=(1.6 * len(kinds), 3.3 * len(photos)))
    for i, image in enumerate(photos):
        face = face_of(image)
        for j, kind in enumerate(kinds):
            for t, (ranges, label) in enumerate(((EVALUATION, "evaluation"), (TRAINING, "training"))):
                shown = image if kind == "clean" else cover(image, kind, face, np.random.default_rng(100 * i + j),
                                                            ranges, textures)
                ax = axes[2 * i + t, j]
                ax.imshow(shown)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0 and t == 0:
                    ax.set_title(kind, fontsize=10)
                if j == 0:
                    ax.set_ylabel(label, fontsize=8)
    fig.suptitle("Covers drawn from each face's landmarks: evaluation's draws, and training's own below them "
                 "(validation people)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=70)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
