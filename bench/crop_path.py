"""The crop path of config/best.yaml, profiled (issue 29): both members' crops of the same photos (read, detect, the
landmark network, align, PNG into the crop cache), as pipeline.embedding makes them, with issue 29's two cuts and
without them in the same run: the landmark network in ONNX Runtime instead of PyTorch eager, and a detector's run shared
by the two chains (they differ only in their fallbacks, so the second found nothing to reuse before), with the dark
patches filled only where a detector has to look. (The third cut, a crop just written read back from memory instead of
decoding its PNG, saves embedding's reads, outside this path: bench/end_to_end.py has it.)

    .venv/bin/python bench/crop_path.py                 # 100 photos, 3 runs, one thread
    .venv/bin/python bench/crop_path.py --sample 40 --runs 1

Photos: a seeded sample from ../shared/data/lfw_train and celeba (half each). Each run starts from an empty crop cache
and no remembered faces. The profile (cProfile, one more pass) names where the time goes. Writes the section
"crop-path" of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from benchlib import git_rev, machine, threads_before_imports, write_section  # noqa: E402

threads_before_imports()

import cv2  # noqa: E402
import torch  # noqa: E402

CKPT = ROOT / "checkpoints" / "table" / "best_fused_lm_ft" / "best.pt"
DATASETS = {"LFW": ROOT.parent / "shared" / "data" / "lfw_train", "CelebA": ROOT.parent / "shared" / "data" / "celeba"}
# what a line of the profile is counted under: (label, a piece of the function's file:line(name) key)
PARTS = [("read (decode the photo)", "images.py", "read_image"), ("YuNet", "detectors.py", "yunet"),
         ("MTCNN", "detectors.py", "mtcnn"), ("landmark network", "landmark_net.py", "predict"),
         ("dark patches filled", "occluders.py", "fill_dark_patches"), ("PNG into the crop cache", "cache.py", "_save_crop"),
         ("dlib's chip (warp)", "align.py", "dlib_align"), ("the photo's sha1 (cache key)", "cache.py", "crop_key")]


def photos(n: int, seed: int = 0) -> list[Path]:
    from detection import list_images

    found = {k: list_images(v, recursive=True) for k, v in DATASETS.items() if v.is_dir()}
    rng = random.Random(seed)
    return [p for files in found.values() for p in sorted(rng.sample(files, min(n // max(1, len(found)), len(files))))]


def crop_both(paths: list[Path], settings: list, cache: Path, finder) -> None:
    from detection import crop_paths

    for s in settings:
        crop_paths(paths, s, cache, desc="cropping", finder=finder)


def configure(cuts: bool, settings: list):
    """A face finder with issue 29's cuts on (cuts=True) or off: the landmark network's runtime, the shared detector
    runs."""
    from detection import FaceFinder, landmark_net

    finder = FaceFinder()
    for s in settings:
        if s.landmarks == "net":
            net = finder.models.get(("landmark_net", landmark_net.file_sha256(s.landmark_net)),
                                    lambda: landmark_net.load(s.landmark_net))
            net.session = net.session if cuts else None
    if not cuts:
        finder.detect_remembered = lambda view, settings, step, photo: finder.detect(view(), settings, step)
    return finder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    paths = photos(args.sample)
    if not paths or not CKPT.exists():
        print(f"needs ../shared/data (lfw_train, celeba) and {CKPT.relative_to(ROOT)}: nothing to bench")
        return 0
    from network import model_from_checkpoint

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    settings = [m.crop_settings() for m in model_from_checkpoint(CKPT)[0].members]
    work = Path(tempfile.mkdtemp(prefix="bench_crop_path_"))
    started, load = time.time(), os.getloadavg()
    try:
        crop_both(paths[:3], settings, work / "warm", configure(True, settings))
        times = {True: [], False: []}
        for r in range(args.runs):
            for cuts in ((True, False) if r % 2 == 0 else (False, True)):
                finder = configure(cuts, settings)
                cache = work / f"run{r}_{cuts}"
                t = time.perf_counter()
                crop_both(paths, settings, cache, finder)
                times[cuts].append(1000 * (time.perf_counter() - t) / len(paths))
                print(f"run {r + 1}, cuts {'on' if cuts else 'off'}: {times[cuts][-1]:.1f} ms a photo", flush=True)
        profiles = {}
        for cuts in (False, True):
            finder = configure(cuts, settings)
            profiler = cProfile.Profile()
            profiler.enable()
            crop_both(paths, settings, work / f"profile_{cuts}", finder)
            profiler.disable()
            stats = pstats.Stats(profiler).stats
            profiles[cuts] = {label: 1000 * sum(v[3] for k, v in stats.items() if k[0].endswith(f) and k[2] == fn)
                              / len(paths) for label, f, fn in PARTS}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    lines = [f"Command: `.venv/bin/python bench/crop_path.py{f' --sample {args.sample}' if args.sample != 100 else ''}"
             f"{f' --runs {args.runs}' if args.runs != 3 else ''}` (commit {git_rev()}, {time.strftime('%Y-%m-%d')}; "
             f"{machine()}; one thread; load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
             f"{(time.time() - started) / 60:.0f} min). {len(paths)} photos (half LFW, half CelebA), both crops of "
             "config/best.yaml (dlib's chip aligned by the landmark network, 150 px; FaceRes's loose square, 224 px) "
             "from an empty crop cache, medians of the runs (the order alternating).", "",
             "| crop path | ms a photo, both crops (runs) | ratio |", "|---|---|---|",
             f"| before issue 29: the landmark network in PyTorch eager, each chain runs its own detector | "
             f"{off:.1f} ({', '.join(f'{v:.1f}' for v in times[False])}) | 1 |",
             f"| **now**: the landmark network in ONNX Runtime, the detector's run shared | **{on:.1f}** "
             f"({', '.join(f'{v:.1f}' for v in times[True])}) | **{off / on:.2f}× faster** |", "",
             "Where the time goes (cProfile, cumulative ms a photo; the profiler's own cost included):", "",
             "| part | before | now |", "|---|---|---|"]
    lines += [f"| {label} | {profiles[False][label]:.1f} | {profiles[True][label]:.1f} |" for label, _, _ in PARTS]
    text = "\n".join(lines)
    print(text)
    write_section("crop-path", "## The crop path of config/best.yaml, profiled and cut\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
