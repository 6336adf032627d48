"""Are two photos of the same person? The answer at a known false-accept rate, from the checkpoint's
calibration (its validation people, never trained on: evaluation/calibration.py).

    facematch compare A.jpg B.jpg --checkpoint checkpoints/best/best.pt
    facematch compare A.jpg B.jpg --checkpoint checkpoints/best/best.pt --far 0.01

Prints "same person" or "not the same person" with the distance, the threshold, the false-accept rate
it was set for and what that rests on (the true-accept rate there and the impostor pairs behind it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluation.calibration import decide, threshold_for_far
from utils import ConfigError, DataError
from settings import run_command


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", nargs=2, help="the two photos")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py (calibrated)")
    parser.add_argument("--far", type=float, default=1e-3, help="the false-accept rate to decide at (default 1e-3)")


def compare(args: argparse.Namespace) -> int:
    from settings import load_for_inference
    from search.exact import unit
    from pipeline.embedding import embed_paths
    from settings import embed_settings

    model, cfg, device = load_for_inference(args.checkpoint, args.config, args.overrides)
    calib = model.meta.get("calibration")
    if not calib:
        raise ConfigError(f"{args.checkpoint} carries no calibration (written by train.py since it calibrates on "
                          f"its validation people): `python train.py --calibrate {args.checkpoint}` adds one")
    if not 0 < args.far < 1:
        raise ConfigError(f"--far must lie between 0 and 1, got {args.far}")
    paths = [Path(p) for p in args.photos]
    emb = embed_paths(paths, model, device, "photos", **embed_settings(cfg))
    if len(emb.embeddings) < 2:
        raise DataError(f"no face to compare in {', '.join(emb.skipped) or 'the photos'}")
    a, b = unit(emb.embeddings)
    distance = max(0.0, float(1.0 - a @ b))  # cosine distance, as search answers it; rounding: never below 0
    limit = threshold_for_far(calib, args.far)
    verdict = "same person" if decide(distance, limit) else "not the same person"
    print(f"{verdict}: distance {distance:.3f}, threshold {limit['threshold']:.3f} at a false-accept rate of "
          f"{args.far:g} (true-accept rate {limit['tar']:.3f} there on {calib['people']} validation people; "
          f"{limit['pairs']} of {calib['impostor_pairs']} impostor pairs at or below it"
          f"{'' if limit['supported'] else ': too few to trust that rate'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(__doc__, arguments, compare, argv, prog="facematch compare", config="the checkpoint's")


if __name__ == "__main__":
    sys.exit(main())
