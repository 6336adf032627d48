"""Time `make demo` and `make demo-scratch` from a clean state (venv kept) and record their scores in RESULTS.md.

    .venv/bin/python bench/demo.py --runs 3                  # both demos, 3 runs each
    .venv/bin/python bench/demo.py --runs 3 --targets demo   # one of them

Each run is `make clean` then the target, timed step by step; the scores are those `facematch evaluate` and the
local competition server print. Where runs differ (a network from random weights is not bit-identical
from run to run or CPU to CPU) the section shows the range seen, not one value.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import git_rev, machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"demo": "config/best.yaml: dlib's face network fine-tuned on the sample's training people, fused with HSE FaceRes",
           "demo-scratch": "config/demo.yaml: ResNet18 from random weights, 40 epochs at 64 px"}


def one_run(target: str) -> tuple[float, dict[str, float], str, str]:
    """Run make clean + make TARGET; returns (total seconds, seconds per step, evaluate line, server line)."""
    subprocess.run(["make", "clean"], cwd=ROOT, check=True, capture_output=True)
    started = time.time()
    proc = subprocess.Popen(["make", target], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    steps, current, mark, evaluation, answer = {}, None, started, "", ""
    for line in proc.stdout:
        sys.stdout.write(line)
        if line.startswith("== ") and "/" in line.split(":")[0]:
            now = time.time()
            if current:
                steps[current] = now - mark
            current, mark = line.split(":")[0][3:].strip(), now
        if line.startswith("top1="):
            evaluation = line.strip()
        if line.startswith("server answered"):
            answer = line.strip()
    if proc.wait() != 0:
        raise SystemExit(f"make {target} failed")
    end = time.time()
    if current is None:
        raise SystemExit(f"no steps seen in the output of make {target}")
    steps[current] = end - mark
    return end - started, steps, evaluation, answer


def scores(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"([a-z0-9@_]+)=([0-9.]+)", line)}


def spread(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.3f}" if lo == hi else f"{lo:.3f}–{hi:.3f}"


def section(target: str, runs: list) -> str:
    totals = [r[0] for r in runs]
    steps = "\n".join(f"| {s} | {statistics.median(r[1][s] for r in runs):.1f} |" for s in runs[0][1])
    evaluations, answers = [scores(r[2]) for r in runs], [scores(r[3]) for r in runs]
    keys = [k for k in ("top1", "top5", "top10", "map") if all(k in e for e in evaluations)]
    server = [k for k in ("top1", "top5", "top10", "map") if all(k in a for a in answers)]
    return f"""### `make {target}`: {TARGETS[target]}

Median wall time of {len(runs)} runs: **{statistics.median(totals):.0f} s** (runs: {', '.join(f'{t:.0f}' for t in totals)} s).

| step | median seconds |
|---|---|
{steps}

Scores on the sample's test people (never seen in training), {'the same in every run' if len({(r[2], r[3]) for r in runs}) == 1 else 'the range over the runs'}:
- evaluate.py, full ranking (mAP over the whole gallery): {', '.join(f'{k} {spread([e[k] for e in evaluations])}' for k in keys)}
- the competition server (mAP@10 over the submitted lists): {', '.join(f'{k} {spread([a[k] for a in answers])}' for k in server) or 'not submitted'}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    args = parser.parse_args()
    parts = [section(t, [one_run(t) for _ in range(args.runs)]) for t in args.targets]
    md = f"""## `make demo` and `make demo-scratch` on the embedded sample

Command: `.venv/bin/python bench/demo.py --runs {args.runs}{' --targets ' + ' '.join(args.targets) if args.targets != list(TARGETS) else ''}` (each run: `make clean`, then the target, `.venv`
kept; installing `requirements.txt` into a fresh `.venv` adds about 90 s). Commit {git_rev()}.
Machine: {machine()}.

{chr(10).join(parts)}"""
    write_section("demo", md)
    print(md)


if __name__ == "__main__":
    main()
