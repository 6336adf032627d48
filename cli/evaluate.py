"""Score a model on people it never saw: top-1/5/10 accuracy, mAP, recall@k, R-precision and
nDCG@10 on a labelled query/gallery split, plus a retrieval figure.

    facematch evaluate --checkpoint checkpoints/demo/best.pt --competition data/competition
    facematch evaluate --checkpoint checkpoints/celeba/best.pt --labelled path/to/identity/folders
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from competition.scoring import score_competition
from settings import embed_settings, load_for_inference
from pipeline.protocol import EvaluateSettings, evaluate_labelled, format_report
from settings import run_command



def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--competition", help="folder from split.py: test/query, test/gallery, ground_truth.json")
    where.add_argument("--labelled", help="identity folders <dir>/<person>/<photo>, split into query and gallery")
    parser.add_argument("--json", help="also write the metrics to this JSON file")


def evaluate_checkpoint(checkpoint: str, cfg_files: list[str], overrides: list[str],
                        competition: str | None = None, labelled: str | None = None) -> dict:
    """Score a checkpoint on a competition folder (with its ground truth) or on identity folders."""
    model, cfg, device = load_for_inference(checkpoint, cfg_files, overrides)
    evaluate = EvaluateSettings(**cfg["evaluate"])
    if competition:
        return score_competition(model, device, competition, Path(checkpoint).name, evaluate=evaluate,
                                 **embed_settings(cfg))
    return evaluate_labelled(model, device, labelled, Path(checkpoint).name, evaluate=evaluate,
                             queries_per_person=cfg["split"]["queries_per_person"], **embed_settings(cfg))


def evaluate(args: argparse.Namespace) -> int:
    report = evaluate_checkpoint(args.checkpoint, args.config, args.overrides, args.competition, args.labelled)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(__doc__, arguments, evaluate, argv, prog="facematch evaluate", config="the checkpoint's")


if __name__ == "__main__":
    sys.exit(main())
