"""Training under torchrun: two CPU processes (gloo, DDP) against one process on the same global
P×K batches, and resuming a checkpoint with another number of processes.

What "the same" means here: each process embeds half of the global batch, the embeddings are
gathered so the loss sees the whole batch, BatchNorm uses the whole batch's statistics and DDP
averages the gradients. That is the single-process computation up to float32 rounding (the batch
statistics and the gradient sums are added in another order); the first step's loss agrees to
~1e-5. AdamW then turns rounding noise in the few gradient entries that are ~0 into ±lr steps, and
a random-initialised 32-px ResNet amplifies such noise from step to step (two single-process runs
with 1 and 2 threads differ by as much), so the runs below use a small learning rate and few steps
and compare losses, AdamW's first moments (the averaged gradients: a gradient scaled by the number
of processes would double them, which the weights, AdamW being scale-invariant, would not show),
BatchNorm statistics and the weights' updates with tolerances a little above that noise.

This file is also the worker: torchrun runs it as a script in every process (see __main__), which
calls train.main() once per argument list, as `torchrun train.py ARGS` would (the first call
makes the process group, the next ones use it).
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import train  # noqa: E402
from dataset import PKSampler  # noqa: E402
from network import read_checkpoint  # noqa: E402
from settings import build_model  # noqa: E402
from utils import ConfigError, seed_everything  # noqa: E402

PEOPLE = ROOT / "tests" / "fixtures" / "people"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                                   reason="this torch build has no torch.distributed with the gloo backend")]


def tiny(tmp: Path, run: str, *extra: str) -> list[str]:
    """conftest's tiny CPU config (ResNet18, 32 px, random weights; 3 training people, so a batch
    is P×K = 3×2 = 6 photos, 3 a process), one epoch of two batches, a learning rate small enough
    that rounding noise stays rounding noise (at 1e-3 two single-process runs with 1 and 2 threads
    part ways within a few steps), no gradient clipping (AdamW's moments are the raw gradients)."""
    return [f"data.train_dir={PEOPLE}", f"data.cache_dir={tmp / 'cache'}", "data.val_fraction=0.4",
            "data.num_workers=0", "model.arch=resnet18", "model.weights=none", "model.embedding_size=16",
            "input.size=32", "crop.size=40", "device=cpu", "train.epochs=1", "train.P=3", "train.K=2",
            "train.batches_per_epoch=2", "train.patience=0", "train.lr_backbone=0.00001", "train.lr_head=0.00001",
            "train.grad_clip=0", "train.batch_size_eval=8", f"train.out_dir={tmp / run}",
            f"train.figure={tmp / run / 'curve.png'}", "embedding.batch_size=8", *extra]


def torchrun(tmp: Path, runs: list[list[str]]) -> str:
    """Run train.main(argv) for each argv in two gloo processes (one torchrun launch); its stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           __file__, json.dumps(runs)], cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stderr


def one_process(argv: list[str]) -> None:
    assert train.main(argv) == 0


def losses(run: Path) -> list[float]:
    return [float(r["train_loss"]) for r in csv.DictReader(open(run / "log.csv"))]


def assert_same_training(a: dict, b: dict, init: dict) -> None:
    """Two checkpoints of the same training from the same initial weights `init`, one trained by
    one process and one by two. Measured here: losses agree to ~1e-5 (relative), AdamW's first
    moments to ~5e-5, the weights' updates to ~1e-5; the tolerances leave a margin of 10-20."""
    assert set(a) == set(b) and list(a["model"]) == list(b["model"])  # no 'module.' prefixes
    assert a["epoch"] == b["epoch"] and a["people"] == b["people"]
    la, lb = [h["train_loss"] for h in a["history"]], [h["train_loss"] for h in b["history"]]
    assert la == pytest.approx(lb, rel=1e-4), (la, lb)
    # AdamW's first moments: the gradients averaged over the steps (the loss's own parameters too).
    ma = torch.cat([s["exp_avg"].flatten() for s in a["optimizer"]["state"].values()])
    mb = torch.cat([s["exp_avg"].flatten() for s in b["optimizer"]["state"].values()])
    assert ((ma - mb).norm() / ma.norm()).item() < 1e-3
    for name, u in a["loss"].items():  # e.g. ArcFace's class weights
        assert torch.allclose(u, b["loss"][name], rtol=1e-4, atol=1e-5), name
    floats = [k for k, v in a["model"].items() if v.is_floating_point()]  # weights and BatchNorm statistics
    for k in floats:
        assert torch.allclose(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-4), k
    du = torch.cat([(a["model"][k] - init[k]).flatten() for k in floats])  # what training changed
    dv = torch.cat([(b["model"][k] - init[k]).flatten() for k in floats])
    assert du.norm() > 0 and ((du - dv).norm() / du.norm()).item() < 2e-4
    for k in a["model"]:
        if not a["model"][k].is_floating_point():
            assert torch.equal(a["model"][k], b["model"][k]), k  # num_batches_tracked


def initial_weights(cfg: dict) -> dict:
    """The weights train() starts from (seeded), before any step."""
    seed_everything(cfg["seed"])
    return build_model(cfg)[0].state_dict()


# ---------------------------------------------------------------- the sampler, in this process

def test_the_shards_of_the_processes_are_the_single_process_batches():
    labels = [i // 3 for i in range(21)]
    whole = PKSampler(labels, 4, 3, 5, seed=7)
    for world in (2, 3, 4, 6):
        shards = [PKSampler(labels, 4, 3, 5, seed=7, rank=r, world_size=world) for r in range(world)]
        for epoch in (1, 2):
            for s in [whole, *shards]:
                s.set_epoch(epoch)
            for batch, *parts in zip(whole, *shards):
                assert sum(parts, []) == batch and all(len(p) == 12 // world for p in parts)
    with pytest.raises(ConfigError, match="cannot be shared evenly by 5 processes"):
        PKSampler(labels, 4, 3, 5, seed=7, rank=0, world_size=5)


# ---------------------------------------------------------------- two processes against one

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One epoch with triplet (batch-hard miner) and ArcFace (class weights in the loss), in one
    process and in two; then each ArcFace checkpoint resumed for a second epoch by the other
    number of processes."""
    tmp = tmp_path_factory.mktemp("ddp")
    names = ("triplet_batch_hard", "arcface")
    for name in names:
        one_process(tiny(tmp, f"1_{name}", f"loss.name={name}"))
    # One torchrun launch (process start-up is most of the time): both runs, then the 1-process
    # ArcFace checkpoint resumed by 2 processes; then the 2-process one resumed by 1.
    log = torchrun(tmp, [*(tiny(tmp, f"2_{name}", f"loss.name={name}") for name in names),
                         ["--resume", str(tmp / "1_arcface" / "last.pt"), "train.epochs=2", f"train.out_dir={tmp / 'r2'}"]])
    one_process(["--resume", str(tmp / "2_arcface" / "last.pt"), "train.epochs=2", f"train.out_dir={tmp / 'r1'}"])
    return tmp, log


@pytest.mark.parametrize("name", ["triplet_batch_hard", "arcface"])
def test_two_processes_train_as_one_does(runs, name):
    tmp, _ = runs
    one, two = read_checkpoint(tmp / f"1_{name}" / "last.pt"), read_checkpoint(tmp / f"2_{name}" / "last.pt")
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert_same_training(one, two, initial_weights(one["config"]))
    assert losses(tmp / f"2_{name}") == [h["train_loss"] for h in two["history"]]
    assert 0 <= two["history"][0]["map"] <= 1  # rank 0 validated
    assert (tmp / f"2_{name}" / "curve.png").stat().st_size > 1000


def test_only_rank_0_logs(runs):
    _, log = runs  # torchrun's stderr: both processes of the three runs
    assert log.count("facematch: epoch 1: loss") == 2 and log.count("facematch: epoch 2: loss") == 1
    assert log.count("training people (") == 3


def test_resume_with_another_number_of_processes(runs):
    tmp, log = runs
    r1, r2 = read_checkpoint(tmp / "r1" / "last.pt"), read_checkpoint(tmp / "r2" / "last.pt")
    assert r1["epoch"] == r2["epoch"] == 2 and r1["world_size"] == 1 and r2["world_size"] == 2
    assert r1["scheduler"]["last_epoch"] == r2["scheduler"]["last_epoch"] == 4
    assert_same_training(r1, r2, initial_weights(r1["config"]))
    assert len(losses(tmp / "r2")) == 2
    assert "trained by 1 process(es), continued by 2" in log


if __name__ == "__main__":  # one process of a torchrun launch
    for argv in json.loads(sys.argv[1]):
        if train.main(argv) != 0:
            sys.exit(2)
