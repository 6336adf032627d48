"""The GPU path: training with mixed precision on CUDA, a GPU checkpoint used on a CPU machine, and
the automatic batch size from the GPU's free memory. Skipped where torch sees no CUDA device (CI);
run on a GPU machine with `python -m pytest tests/test_cuda.py`."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import PEOPLE
from settings import load_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# The fixture photos are face crops already: the centred square keeps these tests off the detectors.
ON_CUDA = ["device=cuda", "crop.detector=center", "crop.fallback=[]", "train.amp=true"]


def test_training_on_cuda_with_amp_gives_a_checkpoint_a_cpu_machine_uses_alike(tiny_cfg):
    import train
    from detection import crop_paths, list_images
    from network import embed, model_from_checkpoint

    cfg = load_config(overrides=ON_CUDA + ["train.batches_per_epoch=10"], base=tiny_cfg)
    state = train.train(cfg)
    assert state["epoch"] == 2 and np.isfinite(state["history"][-1]["train_loss"])
    best = f"{cfg['train']['out_dir']}/best.pt"
    on_gpu, _ = model_from_checkpoint(best, torch.device("cuda"))
    on_cpu, _ = model_from_checkpoint(best, torch.device("cpu"))
    assert next(on_gpu.parameters()).is_cuda and not next(on_cpu.parameters()).is_cuda
    photos = list_images(sorted(p for p in PEOPLE.iterdir() if p.is_dir())[0])
    crops, _ = crop_paths(photos, on_cpu.meta["crop"], cfg["data"]["cache_dir"])
    crops = [c for c in crops if c is not None]
    a = embed(on_gpu, crops, 4, "cuda")
    b = embed(on_cpu, crops, 4, "cpu")
    # CUDA embeds under bf16 autocast (network.embed): the same photo, the same direction to 3 digits.
    cosine = (a * b).sum(axis=1)
    assert a.shape == b.shape and cosine.min() > 0.999, cosine


def test_auto_batch_size_reads_the_gpus_free_memory(tiny_cfg, monkeypatch):
    import network
    from network import batch_size_for
    from settings import build_model

    model, _ = build_model(tiny_cfg)
    model.to("cuda")
    size = batch_size_for(model, "auto", torch.device("cuda"))
    assert size & (size - 1) == 0 and 1 <= size <= network.AUTO_BATCH_MOST
    free, _ = torch.cuda.mem_get_info()
    # A GPU with almost nothing free gets a smaller batch than this one, never zero.
    model2, _ = build_model(tiny_cfg)
    model2.to("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (free // 10**6, free))
    small = batch_size_for(model2, "auto", torch.device("cuda"))
    assert 1 <= small < size
