"""Score a model on people it never saw: top-1/5/10 accuracy, mAP, recall@k, R-precision and
nDCG@10 on a labelled query/gallery split, plus a retrieval figure; with --covers, once per kind of cover
drawn on the query photos (masks, glasses, hands, objects, squares, scarves, hair, caps) and their mean.

    facematch evaluate --checkpoint checkpoints/demo/best.pt --competition data/competition
    facematch evaluate --checkpoint checkpoints/demo/best.pt --competition data/competition evaluate.degrade=mask
    facematch evaluate --checkpoint checkpoints/demo/best.pt --competition data/competition --covers
    facematch evaluate --checkpoint checkpoints/celeba/best.pt --labelled path/to/identity/folders
    facematch evaluate --checkpoint checkpoints/best/best.pt --pairs pairs.txt --root lfw/   # LFW's protocol
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from competition.scoring import score_competition
from dataset import read_pairs
from occlusion.covers import COVERS
from pipeline.protocol import EvaluateSettings, evaluate_labelled, evaluate_pairs, format_report
from search.retrieval_settings import RetrievalSettings
from settings import embed_settings, load_for_inference, run_command

SHOWN = ("top1", "top5", "top10", "map@10", "map@r")  # the per-cover table's columns
SHOWN_PAIRS = ("accuracy", "accuracy_std", "tar@far=1e-2", "tar@far=1e-3")  # the same, on verification pairs


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--competition", help="folder from facematch split: test/query, test/gallery, ground_truth.json")
    where.add_argument("--labelled", help="identity folders <dir>/<person>/<photo>, split into query and gallery")
    where.add_argument("--pairs", help="verification pairs in LFW's pairs.txt format (10 folds: each fold's threshold "
                                       "chosen on the other nine); photos under --root")
    parser.add_argument("--root", help="--pairs: the folder of <name>/<name>_<n>.jpg photos")
    parser.add_argument("--covers", action="store_true", help="score clean queries and each kind of cover, and "
                                                              "the covers' mean (evaluate.degrade is ignored)")
    parser.add_argument("--json", help="also write the metrics to this JSON file")


def evaluate_checkpoint(checkpoint: str, cfg_files: list[str], overrides: list[str],
                        competition: str | None = None, labelled: str | None = None, covers: bool = False,
                        pairs: str | None = None, root: str | None = None) -> dict:
    """Score a checkpoint on a competition folder (with its ground truth), on identity folders or on verification
    pairs; with `covers`, {'clean': report, <kind>: report, ..., 'covers_mean': the kinds' mean of each metric}."""
    model, cfg, device = load_for_inference(checkpoint, cfg_files, overrides)
    evaluate = EvaluateSettings(**cfg["evaluate"])
    retrieval = RetrievalSettings(**cfg["retrieval"])
    name = Path(checkpoint).name
    listed = read_pairs(pairs, root or Path(pairs).parent) if pairs else []

    def score(settings: EvaluateSettings) -> dict:
        if pairs:
            return evaluate_pairs(model, device, listed, degradation=settings.degrade, **embed_settings(cfg))
        if competition:
            return score_competition(model, device, competition, name, evaluate=settings, retrieval=retrieval,
                                     **embed_settings(cfg))
        return evaluate_labelled(model, device, labelled, name, evaluate=settings, retrieval=retrieval,
                                 queries_per_person=cfg["split"]["queries_per_person"], **embed_settings(cfg))

    if not covers:
        return score(evaluate)
    figure = Path(evaluate.figure)
    reports = {kind: score(replace(evaluate, degrade=kind, figure=str(figure.with_stem(f"{figure.stem}_{kind}"))))
               for kind in ("none", *COVERS)}
    reports["clean"] = reports.pop("none")
    shown = SHOWN_PAIRS if pairs else SHOWN
    reports["covers_mean"] = {k: sum(reports[kind][k] for kind in COVERS) / len(COVERS) for k in shown}
    return reports


def cover_table(reports: dict, shown: tuple[str, ...] = SHOWN) -> str:
    """The per-cover scores as a Markdown table, clean first and the covers' mean last."""
    rows = ["| queries | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    for kind in ("clean", *COVERS, "covers_mean"):
        rows.append(f"| {kind} | " + " | ".join(f"{reports[kind][k]:.4f}" for k in shown) + " |")
    return "\n".join(rows)


def pair_line(report: dict) -> str:
    """LFW's way of saying it: accuracy mean ± std over the folds, then TAR@FAR and what it rests on."""
    return (f"accuracy {report['accuracy']:.4f} ± {report['accuracy_std']:.4f} ({report['folds']} folds, "
            f"{report['pairs']} pairs, {report['pairs_left_out']} left out)  " +
            "  ".join(f"{k}={report[k]:.4f}" for k in SHOWN_PAIRS[2:]))


def evaluate(args: argparse.Namespace) -> int:
    report = evaluate_checkpoint(args.checkpoint, args.config, args.overrides, args.competition, args.labelled,
                                 args.covers, args.pairs, args.root)
    if args.covers:
        print(cover_table(report, SHOWN_PAIRS if args.pairs else SHOWN))
    else:
        print(pair_line(report) if args.pairs else format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(__doc__, arguments, evaluate, argv, prog="facematch evaluate", config="the checkpoint's")


if __name__ == "__main__":
    sys.exit(main())
