"""Re-ranker settings tuned on validation people, never on the test people: a checkpoint's own
validation people (the ones train.py held out to pick it) are embedded once, split into queries
and gallery several times (one query a person, seeds 0..N-1), and every re-ranker setting of the
grid is scored on those splits. The table then tells whether a setting beats no re-ranking before
anything is tried on the test competition.

    .venv/bin/python bench/tune_rerank.py                       # dlib, flip TTA, on data/dev's training people
    .venv/bin/python bench/tune_rerank.py --checkpoint checkpoints/table/dlib_alone/best.pt \\
        --people data/dev/train --splits 3
"""
from __future__ import annotations

import argparse
import copy
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from benchlib import git_rev, machine, write_section  # noqa: E402

# (re-rankers, settings) to score; k-reciprocal's defaults (k1 20) come from re-identification,
# where a person has many gallery photos, so the grid goes down to k1 3.
GRID: list[tuple[list[str], dict]] = (
    [([], {})]
    + [(["aqe"], {"qe_k": k}) for k in (1, 2, 3)]
    + [(["alpha_qe"], {"qe_k": k, "qe_alpha": a}) for k, a in itertools.product((2, 3), (1.0, 3.0))]
    + [(["dba"], {"dba_k": k}) for k in (1, 2)]
    + [(["k_reciprocal"], {"kr_k1": k1, "kr_k2": k2, "kr_lambda": lam})
       for k1, k2, lam in itertools.product((3, 5, 20), (1, 3), (0.3, 0.85))]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints/table/dlib_alone/best.pt"))
    parser.add_argument("--people", default=str(ROOT / "data/dev/train"),
                        help="the folder of identity folders the checkpoint was trained from")
    parser.add_argument("--tta", default="flip")
    parser.add_argument("--splits", type=int, default=3, help="query/gallery splits averaged (seeds 0..N-1)")
    parser.add_argument("--test", default=str(ROOT / "data/dev"),
                        help="a competition with a ground truth: the chosen setting, and none, scored on it once "
                             "('' to skip)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from tqdm import tqdm

    from pipeline.protocol import score_labelled
    from search.retrieval_settings import RetrievalSettings
    from settings import load_for_inference
    from pipeline.embedding import embed_paths
    from settings import embed_settings

    if not Path(args.checkpoint).is_file():
        raise SystemExit(f"{args.checkpoint}: no such checkpoint (bench/table.py train dlib_alone makes the default)")
    people = torch.load(args.checkpoint, map_location="cpu", weights_only=False)["people"]["val"]
    if not people:
        raise SystemExit(f"{args.checkpoint}: no validation people recorded in the checkpoint")
    missing = [person for person in people if not (Path(args.people) / person).is_dir()]
    if missing:
        raise SystemExit(f"{args.people}: no folder for {len(missing)} of the checkpoint's validation people "
                         f"({', '.join(missing[:3])}…): give --people the folder it was trained from")
    paths = [p for person in people for p in sorted((Path(args.people) / person).iterdir())]
    model, cfg, device = load_for_inference(args.checkpoint, [], [f"embedding.tta={args.tta}"])
    found = embed_paths(paths, model, device, "validation people", **embed_settings(cfg))
    labels = [p.parent.name for p in found.paths]  # photo names are unique within a person only
    rows = []
    for rerank, settings in tqdm(GRID, desc="settings"):
        scores = []
        for seed in range(args.splits):
            c = copy.deepcopy(cfg)
            c["seed"], c["split"]["queries_per_person"] = seed, 1
            c["retrieval"].update(rerank=rerank, **settings)
            report = score_labelled(found.embeddings, labels, RetrievalSettings(**c["retrieval"]), None, 1, seed)[0]
            scores.append((report["top1"], report["map@10"], report["map@r"]))
        rows.append(("+".join(rerank) or "none", settings, *np.mean(scores, axis=0)))
        print(rows[-1][0], settings, " ".join(f"{v:.4f}" for v in rows[-1][2:]), flush=True)
    base = rows[0]
    best = max(rows, key=lambda r: (r[2], r[4]))  # top-1 first, MAP@R between equals
    test = ""
    if args.test:
        from competition import load_ground_truth
        from pipeline.embedding import embed_folder
        from settings import embed_settings
        from table import score_report

        dev = Path(args.test)
        gt = load_ground_truth(dev)
        gallery = embed_folder(dev / "test" / "gallery", model, device, **embed_settings(cfg))
        queries = embed_folder(dev / "test" / "query", model, device, **embed_settings(cfg))
        found_test = []
        for name, settings in ((base[0], base[1]), (best[0], best[1])):
            rcfg = RetrievalSettings(**dict(cfg["retrieval"], rerank=[] if name == "none" else [name], **settings))
            r = score_report(gt, queries.names, queries.embeddings, gallery.names, gallery.embeddings, rcfg, 0.0)
            found_test.append(f"{name} {settings or ''}: top-1 {r['top1']:.3f}, mAP@10 {r['map@10']:.3f}, "
                              f"MAP@R {r['map@r']:.3f}")
        test = (f"\nThen, once, on the test people of `{dev.relative_to(ROOT) if dev.is_relative_to(ROOT) else dev}` "
                f"({len(gt['queries'])} queries): " + "; ".join(found_test) + ".\n")
    lines = "\n".join(f"| {r[0]} | {', '.join(f'{k} {v}' for k, v in r[1].items()) or '–'} | {r[2]:.3f} | "
                      f"{r[3]:.3f} | {r[4]:.3f} |" for r in rows)
    write_section("tune_rerank", f"""## Re-ranker settings tuned on validation people

Command: `.venv/bin/python bench/tune_rerank.py --checkpoint {Path(args.checkpoint).relative_to(ROOT)} --tta {args.tta} --splits {args.splits}`
(commit {git_rev()}). Machine: {machine()}.
The checkpoint's {len(people)} validation people ({len(labels)} photos; never in the test competition),
one query a person, the rest as gallery, averaged over {args.splits} splits.

| re-ranking | settings | top-1 | mAP@10 | MAP@R |
|---|---|---|---|---|
{lines}

Chosen (top-1 first, then MAP@R): {best[0]} {best[1] or ''}: top-1 {best[2]:.3f} and MAP@R {best[4]:.3f},
against {base[2]:.3f} and {base[4]:.3f} with no re-ranking.
{test}""")


if __name__ == "__main__":
    main()
