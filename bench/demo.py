"""Time `make demo` from a clean state (venv kept) and record its scores in RESULTS.md.

    .venv/bin/python bench/demo.py --runs 3
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_rev, machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def one_run() -> tuple[float, dict[str, float], str, str]:
    """Run make clean + make demo; returns (total seconds, seconds per step, evaluate line, server line)."""
    subprocess.run(["make", "clean"], cwd=ROOT, check=True, capture_output=True)
    started = time.time()
    proc = subprocess.Popen(["make", "demo"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
        raise SystemExit("make demo failed")
    end = time.time()
    if current is None:
        raise SystemExit("no steps seen in the output of make demo")
    steps[current] = end - mark
    return end - started, steps, evaluation, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    totals = [r[0] for r in runs]
    step_names = list(runs[0][1])
    rows = "\n".join(f"| {s} | {statistics.median(r[1][s] for r in runs):.1f} |" for s in step_names)
    md = f"""## `make demo` on the embedded sample

Command: `.venv/bin/python bench/demo.py --runs {args.runs}` (each run: `make clean && make demo`, `.venv` kept;
installing `requirements.txt` into a fresh `.venv` adds about 90 s). Commit {git_rev()}.
Machine: {machine()}.

Median wall time of {args.runs} runs: **{statistics.median(totals):.0f} s** (runs: {', '.join(f'{t:.0f}' for t in totals)} s).

| step | median seconds |
|---|---|
{rows}

Scores on the sample's test people (never seen in training; random initial weights); the
{'same in every run' if len({(r[2], r[3]) for r in runs}) == 1 else 'runs differ, last shown'}:
- evaluate.py, full ranking (mAP over the whole gallery): `{runs[-1][2]}`
- the competition server (mAP@10 over the submitted lists): `{runs[-1][3] or 'not submitted'}`
"""
    write_section("demo", md)
    print(md)


if __name__ == "__main__":
    main()
