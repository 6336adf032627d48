"""Covered queries on the development competition (data/dev, bench/table.py prepare): `facematch evaluate
--covers` for each checkpoint (clean queries, each kind of cover drawn on the query photo before its face is
looked for, and the kinds' mean), beside dlib's network as it is, scored in the same run.

    .venv/bin/python bench/covered_queries.py        # dlib_ft_best (config/best.yaml) and dlib_frozen_best_chain
    .venv/bin/python bench/covered_queries.py --rows dlib_ft_best

Each row's report is kept in outputs/covers/<row>.json and reused while it is newer than the checkpoint.
Writes the section "covered" of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "dev"
CKPT = ROOT / "checkpoints" / "table"
OUT = ROOT / "outputs" / "covers"
REFERENCE = "dlib_frozen_best_chain"  # dlib's network as it is, config/best.yaml's chain
# What the rows say, kept with the script so that a rerun writes it again (rows not in a run are left out).
NOTES = {
    "dlib_ft_covers_self": "dlib_ft_covers_self, which validation people with *training's* covers ranked above "
    "dlib_ft_best (0.824 against 0.815, section \"choice\"), is below it on the test people with the *evaluation's* "
    "covers: a network trained on one distribution of covers defends against that one. config/best_dlib.yaml keeps "
    "dlib_ft_best's recipe.",
    "best_fused_lm_ft": "best_fused_lm_ft is config/best.yaml now: dlib_ft_best_lmnet (dlib's network fine-tuned on "
    "chips aligned by the landmark network) and faceres_ft_covers (FaceRes fine-tuned with training's covers) fused at "
    "0.4 / 0.6, all chosen on validation people with training's covers (section \"choice\"); these test people were "
    "looked at once, after the choice.",
    "best_fused": "best_fused was config/best.yaml before the landmark network and FaceRes's fine-tuning: dlib_ft_best and faceres_best_chain fused at 0.4 / 0.6, the weights "
    "chosen on validation people with training's covers (section \"choice\"); these test people were looked at once, "
    "after the choice.",
}


def report_of(row: str) -> dict:
    """The row's `facematch evaluate --covers` report, computed unless a newer one is kept."""
    out, ckpt = OUT / f"{row}.json", CKPT / row / "best.pt"
    if not out.exists() or out.stat().st_mtime < ckpt.stat().st_mtime:
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "cli", "evaluate", "--checkpoint", str(ckpt), "--competition", str(DEV),
                        "--covers", "--json", str(out), f"evaluate.figure={OUT / row / 'retrieval.png'}",
                        "data.cache_dir=data/cache/crops"], cwd=ROOT, check=True)
    return json.loads(out.read_text())


def faces_found(row: str) -> dict[str, tuple[int, int]]:
    """For each kind: (queries whose face a detector found on the covered photo, queries), with the row's chain
    and the evaluation's covers seeded as `facematch evaluate --covers` seeds them (a guessed box is no find)."""
    from detection.chain import CENTER, GUESS
    from occlusion.covers import COVERS
    from detection.images import list_images
    from network import model_from_checkpoint
    from pipeline.embedding import covered_crops

    settings = model_from_checkpoint(CKPT / row / "best.pt")[0].crop_settings()
    paths = list_images(DEV / "test" / "query")
    found = {}
    for kind in COVERS:
        _, report = covered_crops(paths, settings, kind, seed=0)
        found[kind] = (sum(len(v) for p, v in report.by_path.items() if p not in (GUESS, CENTER)), len(paths))
    return found


def main(argv: list[str] | None = None) -> int:
    from benchlib import git_rev, machine, write_section

    from cli.evaluate import cover_table
    from occlusion.covers import COVERS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=["dlib_ft_best", REFERENCE], help="checkpoints/table/<row>")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--section", nargs=2, metavar=("NAME", "TITLE"),
                        help="write to this section of bench/RESULTS.md instead of \"covered\" (a later choice's test)")
    args = parser.parse_args(argv)
    if not (DEV / "ground_truth.json").exists():
        print("needs data/dev (bench/table.py prepare): nothing to bench")
        return 0
    rows = list(dict.fromkeys([*args.rows, REFERENCE]))
    started = time.time()
    reports = {row: report_of(row) for row in rows}
    ref = reports[REFERENCE]
    given = shlex.join(sys.argv[1:] if argv is None else argv)
    lines = [f"Command: `.venv/bin/python bench/covered_queries.py {given}` (commit {git_rev()}, "
             f"{time.strftime('%Y-%m-%d')}; {machine()}; load average {os.getloadavg()[0]:.1f} at the end; reports "
             f"kept in outputs/covers/). Each query photo of data/dev's test split (410 queries, 1,730 gallery photos, "
             "people no checkpoint trained on) is covered once per kind, drawn from the evaluation's distribution "
             "and seeded by its name, before its face is looked for; the gallery stays clean. Ratio: top-1 over "
             f"{REFERENCE}'s (dlib's network as it is) in the same run.", ""]
    for row in rows:
        rep = reports[row]
        ratio = rep["covers_mean"]["top1"] / max(ref["covers_mean"]["top1"], 1e-9)
        worst = min(COVERS, key=lambda kind: rep[kind]["top1"])
        lines += [f"**{row}**: covered top-1 {rep['covers_mean']['top1']:.3f} on average over the kinds "
                  f"({ratio:.2f}× {REFERENCE}), clean {rep['clean']['top1']:.3f}; hardest: {worst} "
                  f"{rep[worst]['top1']:.3f}", "", cover_table(rep), ""]
    found = faces_found(args.rows[0])
    lines += [f"Faces found on the covered query photos by {args.rows[0]}'s chain (a detector's box; a box guessed "
              "at the centre is not a find):", "", "| cover | " + " | ".join(found) + " |", "|---|" + "---|" * len(found),
              "| found | " + " | ".join(f"{n} of {t} ({n / t:.1%})" for n, t in found.values()) + " |", ""]
    lines.append(f"{(time.time() - started) / 60:.0f} min for what was not kept.")
    for row in rows:
        lines += ["", NOTES[row]] if row in NOTES else []
    text = "\n".join(lines)
    print(text)
    if not args.no_write and args.section:
        write_section(args.section[0], f"## {args.section[1]}\n\n" + text)
    elif not args.no_write:
        write_section("covered", "## Covered queries as people wear them: the test people\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
