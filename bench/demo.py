"""Time what a newcomer runs, on a quiet machine and on a busy one, and record the times and the demo's scores in
RESULTS.md (the README's times are these ranges).

    .venv/bin/python bench/demo.py --runs 3                  # make demo and make demo-scratch, quiet and busy
    .venv/bin/python bench/demo.py --runs 2 --targets demo --fresh --serve   # and a fresh clone's make venv, the
                                                             # first make serve
    .venv/bin/python bench/demo.py --loads quiet             # quiet only

Each demo run is `make clean` then the target, timed step by step; the scores are those `facematch evaluate` and
the local competition server print. "Busy": --busy-procs processes spinning on the CPU (as many as it has cores:
another user's training) for the whole run. --fresh clones this commit into a temporary folder and times
`make venv` there (install and weights, from the network or pip's cache) and the size of the `.venv` it made;
--serve times the first `make serve` (config/best.yaml's model trained, the store built, the page up) with
checkpoints/best and the store moved aside, then puts them back. Where runs differ the section shows the range
seen, not one value.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from benchlib import git_rev, machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"demo": "config/best.yaml: the 192-d MobileFaceNet fine-tuned with covers on the sample's training people",
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


def spin() -> None:
    while True:
        pass


@contextmanager
def load(kind: str, procs: int):
    """A quiet machine, or a busy one: `procs` processes spinning on the CPU while the block runs."""
    burners = [mp.Process(target=spin, daemon=True) for _ in range(procs if kind == "busy" else 0)]
    for b in burners:
        b.start()
    try:
        yield
    finally:
        for b in burners:
            b.terminate()
            b.join()


def fresh_venv() -> tuple[float, str]:
    """(seconds, size) of `make venv` in a fresh clone of this commit."""
    with tempfile.TemporaryDirectory(prefix="facematch-fresh-") as tmp:
        clone = Path(tmp) / "facematch"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        started = time.time()
        subprocess.run(["make", "venv"], cwd=clone, check=True, stdout=sys.stdout, stderr=sys.stderr)
        seconds = time.time() - started
        size = subprocess.run(["du", "-sh", str(clone / ".venv")], capture_output=True, text=True).stdout.split()[0]
    return seconds, size


def first_serve() -> float:
    """Seconds from `make serve` to the page answering, config/best.yaml's model and the store built first."""
    moved = [p for p in (ROOT / "checkpoints" / "best", ROOT / "outputs" / "best_store") if p.exists()]
    aside = Path(tempfile.mkdtemp(prefix="facematch-aside-"))
    for p in moved:
        shutil.move(str(p), aside / p.name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.time()
    proc = subprocess.Popen(["make", "serve", f"PORT={port}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            if "search page on" in line:
                return time.time() - started
        raise SystemExit("make serve stopped before the page was up")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait()
        for p in moved:
            shutil.rmtree(p, ignore_errors=True)
            shutil.move(str(aside / p.name), p)
        shutil.rmtree(aside, ignore_errors=True)


def span(values: list[float], unit: str = "s") -> str:
    lo, hi = min(values), max(values)
    show = (lambda v: f"{v / 60:.1f} min") if hi >= 120 else (lambda v: f"{v:.0f} {unit}")
    return show(lo) if round(lo) == round(hi) else f"{show(lo)}–{show(hi)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--loads", nargs="+", default=["quiet", "busy"], choices=["quiet", "busy"])
    parser.add_argument("--busy-procs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--fresh", action="store_true", help="also time make venv in a fresh clone (quiet)")
    parser.add_argument("--serve", action="store_true", help="also time the first make serve (quiet)")
    parser.add_argument("--busy-targets", nargs="+", choices=list(TARGETS),
                        help="the targets timed on the busy machine (default: --targets)")
    args = parser.parse_args()
    busy_targets = args.busy_targets or args.targets
    runs = {}
    serves: dict[str, list[float]] = {kind: [] for kind in args.loads}
    for kind in args.loads:
        with load(kind, args.busy_procs):
            for t in (args.targets if kind == "quiet" else busy_targets):
                runs[t, kind] = [one_run(t) for _ in range(args.runs)]
            if args.serve and kind == "quiet":
                serves[kind].append(first_serve())
    venv = fresh_venv() if args.fresh else None
    rows = []
    if venv:
        rows.append(f"| `make venv` in a fresh clone (install, weights) | {span([venv[0]])} | – | .venv: {venv[1]} |")
    for t in args.targets:
        rows.append(f"| `make clean && make {t}` | " + " | ".join(
            span([r[0] for r in runs[t, k]]) if (t, k) in runs else "–" for k in ("quiet", "busy")) + " | |")
    if args.serve:
        rows.append("| first `make serve` (model trained, store built, page up) | " + " | ".join(
            span(serves[k]) if serves.get(k) else "–" for k in ("quiet", "busy")) + " | |")
    flags = " ".join(filter(None, [f"--runs {args.runs}",
                                   "--targets " + " ".join(args.targets) if args.targets != list(TARGETS) else "",
                                   "--loads " + " ".join(args.loads) if args.loads != ["quiet", "busy"] else "",
                                   "--busy-targets " + " ".join(busy_targets) if busy_targets != args.targets else "",
                                   "--fresh" if args.fresh else "", "--serve" if args.serve else ""]))
    parts = [section(t, runs[t, args.loads[0]]) for t in args.targets]
    md = f"""## What a newcomer runs: times on a quiet and a busy machine, the demo's scores

Command: `.venv/bin/python bench/demo.py {flags}` (commit {git_rev()}; each demo run: `make clean`, then the
target, `.venv` kept). Machine: {machine()}. Busy: {args.busy_procs} processes spinning on the CPU throughout
(another user's work); the range over {args.runs} run{'s' * (args.runs > 1)} each.

| step | quiet | busy | |
|---|---|---|---|
{chr(10).join(rows)}

Step by step, {args.loads[0]}:

{chr(10).join(parts)}"""
    write_section("demo", md)
    print(md)


if __name__ == "__main__":
    main()
