"""The same results before and after a change that must not change behaviour: one fixed small path run end to end
(train two tiny networks one epoch each with their seeds, fuse them, calibrate a checkpoint again, rank and write the
payload with `facematch submit --dry-run`, embed the test photos) and a digest of every number it makes.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python bench/same_results.py /tmp/before   # on the old commit
    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python bench/same_results.py /tmp/after    # on the new one
    diff /tmp/before/digests.txt /tmp/after/digests.txt                                 # nothing: bitwise the same

Writes OUT/digests.txt (one sha256 a result: weights, calibrations, logs, payloads, embeddings) and OUT/work/ (the
runs). The photos are tests/fixtures/people's; the queries are each person's first photo, the gallery the rest.
PYTHONPATH=. makes it run this tree's code, whatever the editable install points to (checked).
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEOPLE = ROOT / "tests" / "fixtures" / "people"
TINY = ["model.arch=resnet18", "model.weights=none", "model.embedding_size=16", "input.size=32", "crop.size=40",
        "device=cpu", "data.val_fraction=0.4", "train.epochs=1", "train.P=3", "train.K=2",
        "train.batches_per_epoch=3", "train.patience=0", "train.lr_backbone=0.001", "train.lr_head=0.001",
        "train.batch_size_eval=8", "embedding.batch_size=8"]


def digest(value) -> str:
    """sha256 of a value: arrays and tensors by their dtype, shape and bytes, the rest as sorted JSON."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        head = f"{value.dtype}{value.shape}".encode()
        return hashlib.sha256(head + np.ascontiguousarray(value).tobytes()).hexdigest()
    buf = io.StringIO()
    json.dump(value, buf, sort_keys=True, default=lambda v: digest(v))
    return hashlib.sha256(buf.getvalue().encode()).hexdigest()


def checkpoint_digests(name: str, path: Path) -> dict[str, str]:
    """What a checkpoint holds that a change must keep: weights, calibration, metrics, history (without seconds),
    a fusion's weights and rows."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    out = {f"{name}.model.{k}": digest(v) for k, v in sorted(ckpt["model"].items()) if isinstance(v, torch.Tensor)}
    out[f"{name}.calibration"] = digest(ckpt["meta"].get("calibration"))
    out[f"{name}.metrics"] = digest(ckpt.get("metrics"))
    out[f"{name}.history"] = digest([{k: v for k, v in row.items() if k != "seconds"}
                                     for row in ckpt.get("history") or []])
    out[f"{name}.fusion"] = digest(ckpt.get("fusion"))
    return out


def test_set(work: Path) -> Path:
    """query/: each person's first photo; gallery/: the rest (names made of the person and the file)."""
    test = work / "test"
    for person in sorted(PEOPLE.iterdir()):
        for i, photo in enumerate(sorted(person.iterdir())):
            dest = test / ("query" if i == 0 else "gallery") / f"{person.name}_{photo.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, dest)
    return test


def main(out: Path) -> int:
    import cli
    import numpy as np

    if Path(cli.__file__).resolve().parents[1] != ROOT:
        sys.exit(f"this runs {cli.__file__}, not {ROOT}'s code: run it with PYTHONPATH=. from {ROOT}")
    from pipeline.embedding import embed_folder
    from settings import embed_settings, load_for_inference

    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    test = test_set(work)
    caches = [f"data.train_dir={PEOPLE}", f"data.cache_dir={work / 'cache'}",
              f"data.embedding_cache={work / 'embeddings.sqlite'}"]
    runs = {}
    for name, seed in (("a", 0), ("b", 1)):
        runs[name] = work / name / "best.pt"
        assert cli.main(["train", *TINY, *caches, f"seed={seed}", f"train.out_dir={work / name}",
                         f"train.figure={work / name / 'curve.png'}"]) == 0
    runs["fused"] = work / "fused" / "best.pt"
    assert cli.main(["train", *TINY, *caches, f"model.members=[{runs['a']},{runs['b']}]",
                     f"train.out_dir={work / 'fused'}", f"train.figure={work / 'fused' / 'curve.png'}"]) == 0
    runs["calibrated"] = work / "calibrated.pt"
    shutil.copy(runs["a"], runs["calibrated"])
    assert cli.main(["train", "--calibrate", str(runs["calibrated"]), *caches]) == 0
    digests = {}
    for name, path in runs.items():
        digests.update(checkpoint_digests(name, path))
    for name in ("a", "fused"):
        payload = work / f"submission_{name}.json"
        assert cli.main(["submit", "--checkpoint", str(runs[name]), "--test", str(test), "--out", str(payload),
                         "--dry-run", *caches]) == 0
        digests[f"{name}.payload"] = hashlib.sha256(payload.read_bytes()).hexdigest()
        model, cfg, device = load_for_inference(str(runs[name]), [], [
            f"data.cache_dir={work / 'cache'}", f"data.embedding_cache={work / f'fresh_{name}.sqlite'}"])
        for folder in ("query", "gallery"):
            found = embed_folder(test / folder, model, device, **embed_settings(cfg))
            digests[f"{name}.{folder}.names"] = digest(found.names)
            digests[f"{name}.{folder}.embeddings"] = digest(np.asarray(found.embeddings))
    (out / "digests.txt").write_text("".join(f"{k} {v}\n" for k, v in digests.items()))
    print(f"{len(digests)} digests written to {out / 'digests.txt'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]).resolve()))
