"""Verification as the field measures it, on people no network here trained on: a pairs file in LFW's format
(10 folds, people dealt to folds) built from the lfw_train people that the development competition's test split
holds out (data/dev, bench/table.py prepare), then `facematch evaluate --pairs … --covers` for each checkpoint:
ten-fold accuracy mean ± std and TAR@FAR, clean and with the second photo of every pair covered by each kind.

    .venv/bin/python bench/lfw_pairs.py                                   # dlib_ft_best and dlib_frozen_best_chain
    .venv/bin/python bench/lfw_pairs.py --rows dlib_ft_best --per-fold 60

Writes data/dev_pairs.txt (once) and the section "pairs" of bench/RESULTS.md.
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
    args = parser.parse_args(argv)
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
        write_section("pairs", "## Verification pairs in LFW's protocol, clean and covered (issue 27)\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
