"""Development runs on CelebA, scored on people never used for training or model selection.

    .venv/bin/python bench/celeba.py losses        # 12-epoch comparison of every loss (validation people)
    .venv/bin/python bench/celeba.py long          # the long run, then evaluate.py on the test people

Needs ../shared/data/celeba (and ../shared/data/lfw_train for `long`). The competition folder
data/celeba is built with `facematch split` first (config/celeba.yaml: a quarter of the people held out).
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from benchlib import git_rev, machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SHORT = ["train.epochs=12", "train.patience=0"]
VARIANTS = [(f"loss.name={name}",) for name in ["triplet_batch_hard", "triplet_semihard", "contrastive", "arcface",
                                                 "multi_similarity"]] + [
    ("loss.name=multi_similarity", "input.size=96"),
    ("loss.name=multi_similarity", "model.arch=resnet50"),
]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def ensure_split() -> None:
    if not (ROOT / "data/celeba/ground_truth.json").exists():
        run([PY, "-m", "cli", "split", "--people", "../shared/data/celeba", "--out", "data/celeba", "--config", "config/celeba.yaml"])


def best_row(log: Path) -> dict:
    rows = list(csv.DictReader(open(log)))
    return max(rows, key=lambda r: float(r["map"]))


def losses() -> None:
    ensure_split()
    lines = []
    for variant in VARIANTS:
        out = "checkpoints/bench_" + "_".join(v.split("=")[1] for v in variant)
        started = time.time()
        run([PY, "train.py", "--config", "config/celeba.yaml", *SHORT, *variant,
             f"train.out_dir={out}", f"train.figure={out}/curve.png"])
        r = best_row(ROOT / out / "log.csv")
        lines.append(f"| {' '.join(variant)} | {float(r['top1']):.3f} | {float(r['top5']):.3f} | {float(r['top10']):.3f} | "
                     f"{float(r['map']):.3f} | {r['epoch']} | {time.time() - started:.0f} |")
    md = f"""## Choosing the recipe on CelebA (validation people)

Command: `.venv/bin/python bench/celeba.py losses` (commit {git_rev()}); each run:
`python train.py --config config/celeba.yaml {' '.join(SHORT)} <variant>` (ResNet18, 64 px,
128-d, random initial weights, learning rate 1e-3 unless the variant says otherwise).
Machine: {machine()}. One run per loss (seed 0), so differences of a few points are noise.
Training people: the 190 of data/celeba/train left after holding out 34 validation people; scores
are on those 34 validation people (67 queries; best epoch by mAP), not on the test people, who are
kept for the long run.

| variant | top-1 | top-5 | top-10 | mAP | best epoch | seconds |
|---|---|---|---|---|---|---|
{chr(10).join(lines)}
"""
    write_section("celeba-losses", md)
    print(md)


def long(extra: list[str]) -> None:
    ensure_split()
    cmd = [PY, "train.py", "--config", "config/celeba.yaml", *extra]
    started = time.time()
    run(cmd)
    hours = (time.time() - started) / 3600
    ev = [PY, "-m", "cli", "evaluate", "--checkpoint", "checkpoints/celeba/best.pt", "--competition", "data/celeba",
          "--json", "checkpoints/celeba/test_metrics.json"]
    run(ev)
    m = json.loads((ROOT / "checkpoints/celeba/test_metrics.json").read_text())
    gallery = len(json.loads((ROOT / "data/celeba/ground_truth.json").read_text())["gallery"])
    r = best_row(ROOT / "checkpoints/celeba/log.csv")
    md = f"""## CelebA: the long run, scored on held-out people

Commands (commit {git_rev()}), from `.venv/bin/python bench/celeba.py long {' '.join(extra)}`:
```
facematch split --people ../shared/data/celeba --out data/celeba --config config/celeba.yaml
{' '.join(['python'] + cmd[1:])}
{' '.join(['python'] + ev[1:])}
```
Machine: {machine()}. Training took {hours:.2f} h.

Test people: the {m['queries']} queries of data/celeba/test (a quarter of the CelebA people,
never used for training or to pick the checkpoint), each ranked against all {gallery} gallery photos.

| split | top-1 | top-5 | top-10 | mAP | recall@10 | R-precision | nDCG@10 |
|---|---|---|---|---|---|---|---|
| validation people (picks best.pt, epoch {r['epoch']}) | {float(r['top1']):.3f} | {float(r['top5']):.3f} | {float(r['top10']):.3f} | {float(r['map']):.3f} | | | |
| **test people** | **{m['top1']:.3f}** | **{m['top5']:.3f}** | **{m['top10']:.3f}** | **{m['map']:.3f}** | {m['recall@10']:.3f} | {m['r_precision']:.3f} | {m['ndcg@10']:.3f} |
"""
    write_section("celeba-long", md)
    print(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["losses", "long"])
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for `long`")
    args = parser.parse_args()
    losses() if args.what == "losses" else long(args.overrides)


if __name__ == "__main__":
    main()
