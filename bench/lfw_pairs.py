"""Verification as the field measures it, on people no network here trained on: a pairs file in LFW's format
(10 folds, people dealt to folds) built from the lfw_train people that the development competition's test split
holds out (data/dev, bench/table.py prepare), then `facematch evaluate --pairs … --covers` for each checkpoint:
ten-fold accuracy mean ± std and TAR@FAR, clean and with the second photo of every pair covered by each kind.

    .venv/bin/python bench/lfw_pairs.py                                   # dlib_ft_best and dlib_frozen_best_chain
    .venv/bin/python bench/lfw_pairs.py --rows dlib_ft_best --per-fold 60
    .venv/bin/python bench/lfw_pairs.py --view2 data/lfw --rows mfn192_as_is   # LFW View 2 itself: 6,000 pairs

Writes data/dev_pairs.txt (once) and the section "pairs" of bench/RESULTS.md; with --view2, LFW's own View 2
(DIR/lfw_dir_names/pairs.txt over DIR/images/: LFW from its public repository, umass-vis-lfw/umass-vis-lfw.github.io)
clean, into the section "lfw-view2". Many of View 2's people are lfw_train people, whom the fine-tuned rows trained
on: the section says which rows saw them, and scores the pairs of people no row trained on apart.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "dev"
LFW = ROOT.parent / "shared" / "data" / "lfw_train"
PAIRS = ROOT / "data" / "dev_pairs.txt"
CKPT = ROOT / "checkpoints" / "table"
OUT = ROOT / "outputs" / "pairs"


def held_out_people() -> dict[str, list[Path]]:
    """The lfw_train people in data/dev's test split (queries and gallery): trained on by no dev checkpoint."""
    from dataset import list_identities

    key = json.loads((DEV / "key.json").read_text())
    names = {Path(source).parent.name.removeprefix("lfw_") for source in key.values()
             if Path(source).parent.name.startswith("lfw_")}
    people = list_identities(LFW, 2)
    return {name: people[name] for name in sorted(names) if name in people}


def main(argv: list[str] | None = None) -> int:
    from benchlib import git_rev, machine, write_section

    from dataset import make_pairs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=["dlib_ft_best", "dlib_frozen_best_chain"],
                        help="checkpoints/table/<row>/best.pt to score")
    parser.add_argument("--per-fold", type=int, default=60, help="same-person (and other-person) pairs per fold")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--view2", type=Path, metavar="DIR",
                        help="LFW's View 2 instead: DIR/lfw_dir_names/pairs.txt over DIR/images/")
    args = parser.parse_args(argv)
    if args.view2:
        return view2(args)
    if not (DEV / "key.json").exists() or not LFW.is_dir():
        print("needs data/dev (bench/table.py prepare) and ../shared/data/lfw_train: nothing to bench")
        return 0
    people = held_out_people()
    if not PAIRS.exists():
        PAIRS.write_text(make_pairs(people, folds=10, per_fold=args.per_fold, seed=0))
    header = PAIRS.read_text().splitlines()[0].split()
    OUT.mkdir(parents=True, exist_ok=True)
    started, tables = time.time(), []
    for row in args.rows:
        out = OUT / f"{row}.json"
        subprocess.run([sys.executable, "-m", "cli", "evaluate", "--checkpoint", str(CKPT / row / "best.pt"),
                        "--pairs", str(PAIRS), "--root", str(LFW), "--covers", "--json", str(out),
                        "data.cache_dir=data/cache/crops"], cwd=ROOT, check=True)
        reports = json.loads(out.read_text())
        tables.append((row, reports))
    from cli.evaluate import SHOWN_PAIRS, cover_table

    lines = [f"Command: `.venv/bin/python bench/lfw_pairs.py --rows {' '.join(args.rows)} --per-fold {args.per_fold}` "
             f"(commit {git_rev()}, {time.strftime('%Y-%m-%d')}; {machine()}; {(time.time() - started) / 60:.0f} min; "
             f"load average {os.getloadavg()[0]:.1f} at the end).", "",
             f"Pairs: `data/dev_pairs.txt`, LFW's format, {header[0]} folds of {header[1]} same-person and "
             f"{header[1]} other-person pairs, from the {len(people)} lfw_train people of data/dev's test split (no "
             "checkpoint here trained on them), each person in one fold; each fold's threshold chosen on the other "
             "nine. A cover is drawn on the second photo of every pair, before its face is looked for.", ""]
    for row, reports in tables:
        lines += [f"**{row}**", "", cover_table(reports, SHOWN_PAIRS), ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("pairs", "## Verification pairs in LFW's protocol, clean and covered\n\n" + text)
    return 0


def unseen_pairs(pairs_file: Path, trained: set[str]) -> tuple[str, int]:
    """LFW View 2's pairs of people in no training set here, still in LFW's format (every fold the same number of
    same-person and of other-person pairs: the fewest any fold keeps); and that number."""
    lines = [line.split() for line in pairs_file.read_text().splitlines() if line.strip()]
    folds, per_fold = int(lines[0][0]), int(lines[0][1])
    kept = []
    for fold in range(folds):
        block = lines[1 + 2 * per_fold * fold:1 + 2 * per_fold * (fold + 1)]
        same = [line for line in block[:per_fold] if line[0] not in trained]
        other = [line for line in block[per_fold:] if line[0] not in trained and line[2] not in trained]
        kept.append((same, other))
    n = min(min(len(same), len(other)) for same, other in kept)
    text = [f"{folds}\t{n}"] + ["\t".join(line) for same, other in kept for line in same[:n] + other[:n]]
    return "\n".join(text) + "\n", n


def view2(args) -> int:
    """LFW View 2's 6,000 pairs for each row, clean, ten-fold accuracy as LFW's protocol has it; and again on the
    pairs whose people are in no training set here (not lfw_train's, not data/sample's)."""
    from benchlib import git_rev, machine, write_section

    pairs_file, images = args.view2 / "lfw_dir_names" / "pairs.txt", args.view2 / "images"
    if not pairs_file.is_file() or not images.is_dir():
        print(f"needs LFW at {args.view2} (images/ and lfw_dir_names/pairs.txt): nothing to bench")
        return 0
    trained = {p.name for p in LFW.iterdir()} if LFW.is_dir() else set()
    trained |= {p.name for p in (ROOT / "data" / "sample" / "people").iterdir()}
    unseen = PAIRS.with_name("lfw_view2_unseen.txt")
    text, n = unseen_pairs(pairs_file, trained)
    unseen.write_text(text)
    OUT.mkdir(parents=True, exist_ok=True)
    started, rows = time.time(), []
    for row in args.rows:
        reports = {}
        for name, file in (("all", pairs_file), ("unseen", unseen)):
            out = OUT / f"view2_{name}_{row}.json"
            if not out.exists() or out.stat().st_mtime < (CKPT / row / "best.pt").stat().st_mtime:
                subprocess.run([sys.executable, "-m", "cli", "evaluate", "--checkpoint", str(CKPT / row / "best.pt"),
                                "--pairs", str(file), "--root", str(images), "--json", str(out),
                                "data.cache_dir=data/cache/crops"], cwd=ROOT, check=True)
            reports[name] = json.loads(out.read_text())
        rows.append((row, reports))

    def accuracy(report: dict) -> str:
        clean = report.get("clean", report)
        return f"{100 * clean['accuracy']:.2f} ± {100 * clean['accuracy_std']:.2f} %"

    lines = [f"Command: `.venv/bin/python bench/lfw_pairs.py --view2 {args.view2} --rows {' '.join(args.rows)}` "
             f"(commit {git_rev()}, {time.strftime('%Y-%m-%d')}; {machine()}; {(time.time() - started) / 60:.0f} min "
             "for what was not kept).", "",
             "LFW View 2 (`lfw_dir_names/pairs.txt` of umass-vis-lfw/umass-vis-lfw.github.io, over its `images/`, the "
             "original 250×250 photos): 10 folds of 300 same-person and 300 other-person pairs, each fold's threshold "
             "chosen on the other nine; each row's own crop chain and test-time augmentation. Many of View 2's people "
             "are lfw_train people, whom the fine-tuned rows trained on: *unseen* keeps the pairs of people in no "
             f"training set here ({n} same-person and {n} other-person pairs a fold), the honest number for those rows.",
             "", "| row | all 6,000 pairs | unseen pairs |", "|---|---|---|"]
    lines += [f"| {row} | {accuracy(r['all'])} | {accuracy(r['unseen'])} |" for row, r in rows]
    out = "\n".join(lines)
    print(out)
    if not args.no_write:
        write_section("lfw-view2", "## LFW View 2: the 6,000 pairs, ten folds\n\n" + out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
