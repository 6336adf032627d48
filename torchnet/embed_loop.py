"""The embed loop: face crops to unit embeddings in PyTorch, in batches (batch_size_for sizes them), with the
model's own evaluation preprocessing and optional flip TTA, and the runtime.FaceNetwork call that runs it
(EmbedsCrops.embed_crops, which embedding_net.EmbeddingNet inherits). A model here is an EmbeddingNet (its meta and
embedding_size read), named by nn.Module as the network imports this loop."""
from __future__ import annotations

from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F

from detection import load_crop
from runtime import batch_setting, check_tta
from utils import progress

AUTO_BATCH_MOST, AUTO_BATCH_SHARE = 256, 0.25


def activation_bytes(model: torch.nn.Module, device: torch.device | str = "cpu") -> int:
    """Bytes of every layer's output for one crop at the model's input size: an upper bound of
    the activations an inference pass holds per image (each is freed once the next layer used it)."""
    side = int(model.meta["input"]["size"])
    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        for t in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, 3, side, side, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


def batch_size_for(model: torch.nn.Module, setting: int | str, device: torch.device | str = "cpu") -> int:
    """embedding.batch_size resolved: a number as it is; 'auto' the largest power of two up to
    AUTO_BATCH_MOST whose activations (activation_bytes, plus the TTA mirror's) fit in a quarter
    of the memory free on the device now."""
    if (batch := batch_setting(setting)) is not None:
        return batch
    from utils import available_memory

    # One measuring pass per model and input size, not one per call (the search page embeds each upload).
    key = (int(model.meta["input"]["size"]), str(device))
    if getattr(model, "_activation_bytes", (None, 0))[0] != key:
        model._activation_bytes = (key, activation_bytes(model, device))
    per_image = 2 * max(1, model._activation_bytes[1])  # flip TTA holds a second pass
    fits = int(available_memory(device) * AUTO_BATCH_SHARE // per_image)
    return max(1, min(AUTO_BATCH_MOST, 1 << max(0, fits.bit_length() - 1)))


class CropDataset(torch.utils.data.Dataset):
    """Face crops (RGB arrays, or crop files read as they come) through a transform: decoding happens in the
    DataLoader's workers when it has some."""

    def __init__(self, crops: list, transform):
        self.crops, self.transform = crops, transform

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(image=load_crop(self.crops[i]))["image"]


def embed(model: torch.nn.Module, crops: list[np.ndarray | Path], batch_size: int = 64,
          device: torch.device | str | None = None, desc: str = "embedding", tta: str = "none",
          num_workers: int = 0, mirror: bool = False) -> np.ndarray:
    """Embed face crops (RGB arrays, or crop files read a batch at a time) with the model's
    own evaluation preprocessing: an (N, D) float32 array of unit vectors; the one path from crops to
    embeddings (pipeline.embedding, validation, calibration and distillation's targets all come here).
    tta='flip' averages the embeddings of each crop and its mirror image, then normalises again;
    mirror=True embeds the mirror images instead (distillation's second view).

    Decoding and transforms run in `num_workers` DataLoader workers; convolutions run
    channels-last (about 1.1–2× faster on this CPU, bench/RESULTS.md), and on CUDA under bf16
    (or fp16) autocast; the output is float32 either way.
    """
    from dataset import eval_transform

    check_tta(tta)
    device = torch.device(device) if device is not None else next(iter(model.parameters()), torch.empty(0)).device
    if not crops:
        return np.zeros((0, model.embedding_size), dtype=np.float32)
    loader = torch.utils.data.DataLoader(CropDataset(crops, eval_transform(model.meta["input"])), batch_size=batch_size,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    was_training = model.training
    model.eval()
    if not was_training:
        # Not while training (a resumed run must compute exactly as an uninterrupted one), and
        # outside inference mode (weights converted there would become inference tensors).
        model.to(memory_format=torch.channels_last)
    out = []
    with torch.inference_mode():
        for batch in progress(loader, desc=desc, unit="batch", disable=len(loader) < 5):
            batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            if mirror:  # the evaluation transform has no geometry: flipping the tensor = flipping the crop
                batch = batch.flip(-1)
            with torch.autocast(device.type, dtype=dtype, enabled=cuda):
                emb = model(batch).float()
                if tta == "flip":  # the evaluation transform has no geometry: flipping the tensor = flipping the crop
                    emb = F.normalize(emb + model(batch.flip(-1)).float(), dim=1)
            out.append(emb.cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


class EmbedsCrops:
    """runtime.FaceNetwork's embed_crops for a network in PyTorch (an nn.Module with meta and embedding_size): the
    embed loop over its own crops, here beside the loop so the photo path meets the network only to run it."""

    def embed_crops(self, crops: list, batch_size: int | str = "auto", tta: str = "none", *,
                    device: torch.device | str | None = None, desc: str = "embedding", num_workers: int = 0) -> np.ndarray:
        """Crops embedded in PyTorch (runtime.FaceNetwork.embed_crops; batch_size auto: batch_size_for's, on `device`,
        None: where the weights are)."""
        device = torch.device(device) if device is not None else next(iter(self.parameters()), torch.empty(0)).device
        batch = batch_size_for(self, batch_size, device)
        return embed(self, crops, batch, device, desc=desc, tta=tta, num_workers=num_workers)
