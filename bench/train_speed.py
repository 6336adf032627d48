"""Training speed (issue 9): photos per second in a training step, for one process and for two
gloo processes under torchrun (DistributedDataParallel) on this machine.

    .venv/bin/python bench/train_speed.py                    # tests/fixtures/people, 3 runs each
    .venv/bin/python bench/train_speed.py --runs 5 --steps 20 --P 8 --K 4 --data ../shared/data/lfw_train

Each run is a real `train.py` run (one epoch of --steps batches of the same global P×K photos, no
validation people) in a fresh process, or under `torchrun --standalone --nproc_per_node=2`. A step
is timed from one batch to the next inside train.py's own loop (loading the batch, augmentation,
forward, the gathered loss, backward, the gradient all-reduce, the optimiser step); the first
--warmup steps are left out and the median step gives photos/s = P×K / step time. The figure is
the median over --runs runs. Writes the section "train-speed" of bench/RESULTS.md.

Settings compared: one process with 2 threads (every core: the default single-process run), one
process with 1 thread, and 2 gloo processes with 1 thread each (torchrun's default).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = [  # (label, processes, threads per process)
    ("1 process, 2 threads", 1, 2),
    ("1 process, 1 thread", 1, 1),
    ("2 gloo processes, 1 thread each", 2, 1),
]


def worker(out: str, overrides: list[str]) -> int:
    """One train.py run whose loop records the time of every batch (rank 0 writes them to out)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import train

    stamps: list[float] = []

    class Timed:  # stands in for tqdm around the epoch's batches: `for images, labels in tqdm(loader, ...)`
        def __init__(self, iterable, *args, **kwargs):
            self.iterable = iterable

        def __iter__(self):
            stamps.append(time.perf_counter())
            for item in self.iterable:
                stamps.append(time.perf_counter())
                yield item
            stamps.append(time.perf_counter())

        def set_postfix(self, *args, **kwargs):
            pass

    train.tqdm = Timed
    code = train.main(overrides)
    if int(os.environ.get("RANK", "0")) == 0:
        import torch

        # stamps: loop start, each batch handed over, loop end; a step runs from one batch to the next
        steps = [b - a for a, b in zip(stamps[1:], stamps[2:])]
        Path(out).write_text(json.dumps({"steps": steps, "threads": torch.get_num_threads()}))
    return code


def run_once(processes: int, threads: int, overrides: list[str], tmp: Path) -> dict:
    out = tmp / "steps.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NO_ALBUMENTATIONS_UPDATE": "1"}
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
              if processes > 1 else [sys.executable])
    cmd = launch + [__file__, "--worker", str(out), "--", *overrides]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per setting (the median is reported)")
    parser.add_argument("--steps", type=int, default=12, help="training steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of a run left out")
    parser.add_argument("--P", type=int, default=4, help="identities per global batch")
    parser.add_argument("--K", type=int, default=8, help="photos per identity (drawn again when fewer)")
    parser.add_argument("--size", type=int, default=64, help="input.size in pixels")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--loss", default="triplet_batch_hard")
    parser.add_argument("--data", default=str(ROOT / "tests" / "fixtures" / "people"), help="identity folders")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.exit(worker(args.worker, args.overrides))

    import tempfile

    from benchlib import git_rev, machine, write_section

    started, load_before = time.time(), os.getloadavg()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="train_speed.") as tmp_name:
        tmp = Path(tmp_name)
        overrides = [f"data.train_dir={args.data}", f"data.cache_dir={tmp / 'cache'}",
                     "data.val_fraction=0", "data.num_workers=0", f"model.arch={args.arch}", "model.weights=none",
                     f"input.size={args.size}", "device=cpu", f"loss.name={args.loss}", "train.epochs=1",
                     f"train.P={args.P}", f"train.K={args.K}", "train.patience=0",
                     f"train.out_dir={tmp / 'run'}", f"train.figure={tmp / 'curve.png'}"]
        run_once(1, 2, overrides + ["train.batches_per_epoch=1"], tmp)  # crops the photos once, into the cache
        overrides.append(f"train.batches_per_epoch={args.steps}")
        for label, processes, threads in SETTINGS:
            results[label] = []
            for i in range(args.runs):
                steps = run_once(processes, threads, overrides, tmp)["steps"][args.warmup:]
                rate = args.P * args.K / statistics.median(steps)
                results[label].append(rate)
                print(f"{label}, run {i + 1}: {rate:.1f} photos/s (median of {len(steps)} steps)", flush=True)
    minutes, load_after = (time.time() - started) / 60, os.getloadavg()

    base, one, two = (statistics.median(results[label]) for label, _, _ in SETTINGS)
    rows = []
    for label, processes, threads in SETTINGS:
        med = statistics.median(results[label])
        runs = ", ".join(f"{r:.1f}" for r in results[label])
        rows.append(f"| {label} | {processes} | {threads} | **{med:.1f}** ({runs}) | {med / base:.2f}× |")
    command = " ".join(["bench/train_speed.py", *sys.argv[1:]])
    md = f"""## Training speed: one process and two gloo processes

Command: `.venv/bin/python {command}` (commit {git_rev()} plus uncommitted changes in the working tree),
{time.strftime('%Y-%m-%d')}, {minutes:.0f} min in all. Machine: {machine()} (load average {load_before[0]:.1f} at the
start, {load_after[0]:.1f} at the end, this bench's own processes included).
Every run is `train.py` in a fresh process (`torchrun --standalone --nproc_per_node=2 train.py …` for two):
{args.arch}, random weights, {args.size} px, {args.loss}, global batch P×K = {args.P}×{args.K} = {args.P * args.K} photos
({args.P * args.K // 2} a process under torchrun), `data.num_workers=0`, no validation, data {Path(args.data).name}
(`{args.data}`). A step is timed inside train.py's loop from one batch to the next (loading and
augmenting the batch, forward, loss on the gathered global batch, backward with DDP's all-reduce,
AdamW step); the first {args.warmup} of {args.steps} steps are left out. Photos/s = P×K / median step time;
the median of {args.runs} runs (runs in brackets).

| setting | processes | threads a process | photos/s per training step | vs 1 process, 2 threads |
|---|---|---|---|---|
{chr(10).join(rows)}

Two gloo processes give {two / one:.2f}× the photos/s of one single-threaded process and
{two / base:.2f}× those of one process with 2 threads. On a 2-core machine they add no compute: they
split each batch between the cores instead of splitting each operation between 2 threads, and add
the gathering of embeddings, synchronised BatchNorm (two all-reduces per BatchNorm layer on the
CPU) and the gradient all-reduce. When other jobs hold the cores (see the load average), 2 OpenMP
threads in one process wait on each other at every operation, which is what the first row pays.
torchrun is for more cores than one process uses well, several machines, or GPUs (one process
each, nccl).
"""
    print(md)
    if not args.no_write:
        write_section("train-speed", md)


if __name__ == "__main__":
    main()
