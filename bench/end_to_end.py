"""End to end (issue 9): photos/s from photo files to embeddings, facematch's crop + embed against
face_recognition's on the same photos, in the same run.

    .venv/bin/python bench/end_to_end.py                     # 200 photos, 3 runs (about 10 min on 2 busy cores)
    .venv/bin/python bench/end_to_end.py --sample 60 --runs 1 # a quick try

Photos: a seeded sample of --sample photos, half from ../shared/data/lfw_train and half from
../shared/data/celeba (a missing one is skipped with a message; with neither there is nothing to do).

facematch: `pipeline.embedding.embed_paths` (read, detect, align, crop, write the crop cache, embed, write the
embedding cache) with a model loaded from a checkpoint by `settings.load_for_inference`, as
`facematch evaluate` and request_send.py load theirs; the checkpoint is built beforehand with `build_model`
and `save_checkpoint` (not timed). Every run starts from an empty crop cache and an empty
embedding cache (so everything is computed), then runs again over them (warm caches).
- best: config/best.yaml as it is (its network, crop chain, test-time augmentation and runtime, read from it); the
  network's weights do not change its speed. best_torch: the same in PyTorch. best_whole_photo: the same with YuNet
  on the whole photo (crop.yunet_side=960), the line bench/choose_best.py's timing alone would have chosen.
- fused_before: config/best.yaml until the MobileFaceNets, a fusion of dlib's network (config/best_dlib.yaml's chain,
  the landmark network's points, dlib's 150-px chip) and HSE FaceRes on a loose 224-px square, flip TTA for both, in
  ONNX Runtime (exported by `deploy.exported` before the runs, not timed).
- best_dlib: config/best_dlib.yaml alone, in PyTorch.
face_recognition (dlib's own pipeline): `load_image_file`, `face_locations` (HOG, one upsampling, its
default), `face_encodings` (5-point chip, one jitter, its default) of the largest face, or of the
whole photo where HOG finds none (as bench/table.py scores it).

Each run times them one after another (the order rotates every run, so load from other jobs
hits them alike); photos/s are medians of --runs, ratios the medians of per-run ratios.

Writes the `end-to-end` section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from benchlib import git_rev, machine, threads_before_imports, write_section  # noqa: E402

threads_before_imports()

import cv2  # noqa: E402


from pipeline import embedding  # noqa: E402
from dataset import list_images  # noqa: E402
from detection import crop_paths, describe_chain  # noqa: E402
from network import FusedNet, fused_checkpoint, save_checkpoint  # noqa: E402
from settings import build_model, embed_settings, load_for_inference  # noqa: E402
from utils import get_logger, package_file  # noqa: E402
from settings import load_config

DATASETS = {"LFW": "../shared/data/lfw_train", "CelebA": "../shared/data/celeba"}  # relative to the repo root
MTCNN = ["crop.detector=mtcnn", "crop.align=similarity", "crop.fallback=[haar,center]", "crop.size=112"]
RECIPES = {  # name: (what the table says, config files, overrides); {best}: what config/best.yaml is, read from it
    "best": ("facematch, **config/best.yaml as it is**: {best}", [str(ROOT / "config" / "best.yaml")], []),
    "best_torch": ("facematch, config/best.yaml in PyTorch (model.runtime=torch)", [str(ROOT / "config" / "best.yaml")],
                   ["model.runtime=torch"]),
    "best_whole_photo": ("facematch, config/best.yaml with YuNet on the whole photo (crop.yunet_side=960): more "
                         "accurate on the validation people, and 5.6× in bench/choose_best.py's timing",
                         [str(ROOT / "config" / "best.yaml")], ["crop.yunet_side=960"]),
    "fused_before": ("facematch, config/best.yaml until the MobileFaceNets: dlib's network on its chip (the landmark "
                     "network's points, 150 px) fused with HSE FaceRes on a loose square (224 px), flip TTA for both, "
                     "ONNX Runtime (config/best_accurate.yaml)", [str(ROOT / "config" / "best_accurate.yaml")], []),
    "best_dlib": ("facematch, config/best_dlib.yaml: dlib's network alone on its chip, flip TTA, PyTorch",
                  [str(ROOT / "config" / "best_dlib.yaml")], []),
}
FR = "face_recognition: HOG + 5-point chip + dlib descriptor"


# ---------------------------------------------------------------- where the time goes

class Stopwatch:
    """Seconds spent inside pipeline.embedding's crop_paths and the embed loops the networks run (PyTorch's or ONNX
    Runtime's; wrapped, so nothing else changes)."""

    def __init__(self):
        from runtime import onnx_model
        from torchnet import embed_loop

        self.crop = self.embed = 0.0
        for module, name, stage in ((embedding, "crop_paths", "crop"), (embed_loop, "embed", "embed"),
                                    (onnx_model, "embed", "embed")):
            setattr(module, name, self.timed(getattr(module, name), stage))

    def timed(self, function, stage: str):
        """`function`, its seconds added to this stopwatch's `stage`."""
        def run(*a, **k):
            started = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                setattr(self, stage, getattr(self, stage) + time.perf_counter() - started)
        return run

    def reset(self) -> None:
        self.crop = self.embed = 0.0


# ---------------------------------------------------------------- the contenders

def facematch_model(name: str, folder: Path, threads: int = 1):
    """The recipe's network (a fusion: each member's, fused with the config's weights), saved as a checkpoint and
    loaded back as inference loads one (model.runtime=onnx: exported first, not timed, into a cache of this run's)."""
    _, files, overrides = RECIPES[name]
    overrides = [*overrides, f"model.threads={threads}"]
    cfg = load_config(files, overrides)
    path = folder / f"{name}.pt"
    if cfg["model"]["members"]:
        configs = [load_config([member]) for member in cfg["model"]["members"]]
        members = [build_model(c)[0] for c in configs]
        weights = cfg["model"]["member_weights"]
        model = FusedNet(members, [1.0] * len(members) if weights == "auto" else weights)
        save_checkpoint(path, fused_checkpoint(model, {**configs[0], "model": {**configs[0]["model"], **cfg["model"]}},
                                               [{k: c[k] for k in ("model", "input", "crop")} for c in configs]))
    else:
        model, _ = build_model(cfg)
        save_checkpoint(path, {"model": model.state_dict(), "config": cfg, "meta": model.meta,
                               "model_info": model.describe(), "epoch": 0})
    return load_for_inference(path, files, overrides)


def facematch_pass(paths, model, cfg, device, cache: Path, watch: Stopwatch) -> dict:
    from detection import FaceFinder
    cfg["data"]["cache_dir"] = str(cache / "crops")
    cfg["data"]["embedding_cache"] = str(cache / "embeddings.sqlite")
    watch.reset()
    started = time.perf_counter()
    out = embedding.embed_paths(paths, model, device, "bench", finder=FaceFinder(), **embed_settings(cfg))  # fresh
    seconds = time.perf_counter() - started
    return {"rate": len(paths) / seconds, "seconds": seconds, "crop": watch.crop, "embed": watch.embed,
            "embedded": out.embedded, "from_cache": out.from_cache, "kept": len(out.names)}


def load_face_recognition():
    """face_recognition imports face_recognition_models, which needs pkg_resources (gone from
    setuptools ≥ 81): give it the same files through a stand-in module (as bench/table.py does)."""
    models = types.ModuleType("face_recognition_models")
    for fn, f in (("pose_predictor_model_location", "shape_predictor_68_face_landmarks.dat"),
                  ("pose_predictor_five_point_model_location", "shape_predictor_5_face_landmarks.dat"),
                  ("face_recognition_model_location", "dlib_face_recognition_resnet_model_v1.dat"),
                  ("cnn_face_detector_model_location", "mmod_human_face_detector.dat")):
        # resolved now: once the stand-in is in sys.modules, find_spec (package_file) rejects it
        setattr(models, fn, lambda path=str(package_file("face_recognition_models", "models", f)): path)
    sys.modules["face_recognition_models"] = models
    try:
        import face_recognition  # reads the model paths once, at import
    finally:  # facematch's own package_file("face_recognition_models", ...) needs the real spec
        del sys.modules["face_recognition_models"]
    return face_recognition


def face_recognition_pass(fr, paths) -> dict:
    found, detect_s, encode_s = 0, 0.0, 0.0
    started = time.perf_counter()
    for p in paths:
        t0 = time.perf_counter()
        image = fr.load_image_file(p)
        boxes = fr.face_locations(image)
        t1 = time.perf_counter()
        if boxes:
            found += 1
            boxes = [max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))]
        else:
            boxes = [(0, image.shape[1], image.shape[0], 0)]
        fr.face_encodings(image, boxes)[0]
        encode_s += time.perf_counter() - t1
        detect_s += t1 - t0
    seconds = time.perf_counter() - started
    return {"rate": len(paths) / seconds, "seconds": seconds, "detect": detect_s, "encode": encode_s, "found": found}


# ---------------------------------------------------------------- main

def sample_photos(n: int, seed: int) -> tuple[list[Path], dict[str, int]]:
    sets = {}
    for name, rel in DATASETS.items():
        folder = ROOT / rel
        if not folder.is_dir():
            print(f"skipping {name}: {folder} not found (expected identity folders <person>/<photo>)", flush=True)
            continue
        sets[name] = list_images(folder, recursive=True)
    if not sets:
        return [], {}
    rng = random.Random(seed)
    per_set = max(1, n // len(sets))
    picked = {s: sorted(rng.sample(found, min(per_set, len(found)))) for s, found in sets.items()}
    return [p for s in picked for p in picked[s]], {s: len(v) for s, v in picked.items()}


def med(values: list[float]) -> float:
    return statistics.median(values)


def cell(values: list[float], bold: bool = False, fmt: str = "{:.1f}") -> str:
    text = fmt.format(med(values))
    text = f"**{text}**" if bold else text
    return text + (" (" + ", ".join(fmt.format(v) for v in values) + ")" if len(values) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=200, help="photos (half from each data set)")
    parser.add_argument("--runs", type=int, default=3, help="timing runs; the median is reported")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/OpenMP and OpenCV threads (0: the libraries' defaults, one per core); dlib uses one")
    args = parser.parse_args()
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    get_logger().setLevel("WARNING")  # embed_paths' per-pass summaries
    started, load_start = time.time(), os.getloadavg()
    seed = int(load_config()["seed"])
    paths, counts = sample_photos(args.sample, seed)
    if not paths:
        print("no data set found: nothing to bench (looked for " + ", ".join(DATASETS.values()) + ")")
        return
    print(f"{len(paths)} photos: " + ", ".join(f"{n} {s}" for s, n in counts.items()), flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench_end_to_end_"))  # checkpoints and caches, removed at the end
    try:
        md = bench(args, paths, counts, work, started, load_start)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_section("end-to-end", md)
    print(md)


def bench(args, paths: list[Path], counts: dict[str, int], work: Path, started: float, load_start) -> str:
    """The timed runs and the section's markdown."""
    os.environ["XDG_CACHE_HOME"] = str(work / "xdg")  # model.runtime=onnx's exports, made afresh and removed
    models = {name: facematch_model(name, work, args.threads) for name in RECIPES}
    fr = load_face_recognition()
    watch = Stopwatch()
    # Warm-up, not timed: loads MTCNN's nets, dlib's shape predictor and descriptor, torch's kernels.
    for name, (model, cfg, device) in models.items():
        facematch_pass(paths[:3], model, cfg, device, work / f"warmup_{name}", watch)
    face_recognition_pass(fr, paths[:3])

    results = {n: {"cold": [], "warm": [], "crop": [], "embed": [], "ratio": [], "ratio_warm": []} for n in RECIPES}
    results["fr"] = {"rate": [], "detect": [], "encode": []}
    found = {}
    order = list(RECIPES) + ["fr"]
    for r in range(args.runs):
        done = {}
        for name in order[r % len(order):] + order[:r % len(order)]:
            if name == "fr":
                done[name] = out = face_recognition_pass(fr, paths)
                results["fr"]["rate"].append(out["rate"])
                results["fr"]["detect"].append(1000 * out["detect"] / len(paths))
                results["fr"]["encode"].append(1000 * out["encode"] / len(paths))
                found["fr"] = out["found"]
                print(f"run {r + 1} face_recognition: {out['rate']:.2f}/s", flush=True)
                continue
            model, cfg, device = models[name]
            cache = work / f"run{r}_{name}"
            cold = facematch_pass(paths, model, cfg, device, cache, watch)
            warm = facematch_pass(paths, model, cfg, device, cache, watch)
            if cold["embedded"] != cold["kept"] or warm["from_cache"] != warm["kept"]:
                print(f"warning: {name}: cold pass embedded {cold['embedded']} of {cold['kept']}, "
                      f"warm pass took {warm['from_cache']} from the cache", flush=True)
            done[name] = cold
            res = results[name]
            res["cold"].append(cold["rate"])
            res["warm"].append(warm["rate"])
            res["crop"].append(1000 * cold["crop"] / len(paths))
            res["embed"].append(1000 * cold["embed"] / len(paths))
            if r == 0:  # a fusion's faces: its first member's chain
                _, report = crop_paths(paths, model.crop_settings(), cfg["data"]["cache_dir"])
                found[name] = report
            print(f"run {r + 1} {name}: cold {cold['rate']:.2f}/s (crop {cold['crop']:.1f} s, embed "
                  f"{cold['embed']:.1f} s), warm {warm['rate']:.1f}/s", flush=True)
        for name in RECIPES:
            results[name]["ratio"].append(done[name]["rate"] / done["fr"]["rate"])
            results[name]["ratio_warm"].append(results[name]["warm"][-1] / done["fr"]["rate"])

    minutes, load_end = (time.time() - started) / 60, os.getloadavg()
    n = len(paths)
    fr_res = results["fr"]
    rows = ["| pipeline | photos/s, fresh caches (runs) | **÷ face_recognition** (runs) | faster? | "
            "ms/photo: detect + crop | ms/photo: embed | photos/s, warm caches | warm ÷ face_recognition |",
            "|---|---|---|---|---|---|---|---|"]
    best_model, best_cfg, _ = models["best"]
    crop = best_model.crop_settings()
    best = (f"{best_model.describe()['arch']} on {crop.size}-px crops (align {crop.align}; {describe_chain(crop)}"
            f"{f', YuNet on a copy of at most {crop.yunet_side} px' if crop.yunet_side < 960 else ''}), TTA "
            f"{best_cfg['embedding']['tta']}, {'ONNX Runtime' if best_cfg['model']['runtime'] == 'onnx' else 'PyTorch'}")
    for name, (what, _, _) in RECIPES.items():
        what = what.format(best=best)
        res = results[name]
        ratio = med(res["ratio"])
        rows.append(f"| {what} | {cell(res['cold'], fmt='{:.2f}')} | **{ratio:.2f}**"
                    f"{' (' + ', '.join(f'{v:.2f}' for v in res['ratio']) + ')' if len(res['ratio']) > 1 else ''} | "
                    f"{'yes' if ratio > 1 else '**no**'} | {med(res['crop']):.0f} | {med(res['embed']):.0f} | "
                    f"{cell(res['warm'])} | {med(res['ratio_warm']):.0f}× |")
    rows.append(f"| {FR} | {cell(fr_res['rate'], fmt='{:.2f}')} | 1 | – | {med(fr_res['detect']):.0f} (read + HOG) | "
                f"{med(fr_res['encode']):.0f} (landmarks + chip + descriptor) | – (no cache) | – |")
    table = "\n".join(rows)

    def faces(name: str) -> str:
        if name == "fr":
            return f"HOG found a face in {found['fr']} of {n}" + (" (the rest described whole)" if found["fr"] < n else "")
        rep = found[name]
        by = ", ".join(f"{len(v)} by {p}" for p, v in rep.by_path.items())
        return f"{by}" + (f", {len(rep.no_face)} no face" if rep.no_face else "") + \
            (f", {len(rep.failed)} unreadable" if rep.failed else "")

    md = f"""## End to end: crop + embed photos/s against face_recognition

Command: `.venv/bin/python bench/end_to_end.py{f' --sample {args.sample}' if args.sample != 200 else ''}{f' --runs {args.runs}' if args.runs != 3 else ''}{f' --threads {args.threads}' if args.threads != 1 else ''}` (commit {git_rev()}), {datetime.date.today().isoformat()}, {minutes:.0f} min in all.
Machine: {machine()}; {args.threads or 'the default number of'} thread{'s' if args.threads != 1 else ''} for torch and OpenCV,
dlib single-threaded (built without BLAS) (load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end).
Photos: a seeded sample of {n} ({', '.join(f'{c} {s}' for s, c in counts.items())}), read from disk.

facematch: `pipeline.embedding.embed_paths` with a model loaded by `load_for_inference` from a checkpoint made
beforehand, starting from an empty crop cache and an empty embedding cache (read, detect, align, crop,
PNG into the crop cache, embed, sqlite embedding cache), then again over the now warm caches.
face_recognition: `load_image_file` + `face_locations` (HOG) + `face_encodings` of the largest face per photo.
The pipelines run one after another in each of {args.runs} run{'s' if args.runs > 1 else ''} (the order rotating); photos/s are medians, ratios
medians of per-run ratios. Detect + crop / embed: time inside `crop_paths` / `embed` during the fresh-cache pass
(the rest is hashing photos, the model fingerprint and the embedding cache).
Targets: faster than face_recognition (issue 9); config/best.yaml's path at least 3× face_recognition's photos/s
(issue 17), at least 5× in ONNX Runtime (issues 29 and 37).

{table}

Faces found (first run): {'; '.join(f"{name} {faces(name)}" for name in RECIPES)}; face_recognition {faces('fr')}.
Every pass starts with no face remembered (a fresh detection.FaceFinder), so no recipe reuses another's detections.
Crops go into the cache as PNG at compression level 1 (since the speed work; level 6 before took 5 ms a crop).
"""
    return md


if __name__ == "__main__":
    main()
