"""Photos to crop arrays, through the content-keyed crop cache: every crop is stored under a key made of the file's
content and every setting that changes the crop, so a changed setting never reuses a stale crop, and written as soon
as it is made, so an interrupted run keeps its work. The cache lies behind the arrays: a crop made now is handed on
as it is, one made before is read back from its file."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from detection import landmark_net
from detection.chain import GUESS, Crop, chain_steps
from detection.crop_settings import MTCNN_STAGES, CropSettings
from detection.finder import FaceFinder
from detection.images import ImageReadError, read_image
from detection.report import CropReport
from utils import atomic_write, progress

CROP_VERSION = 2  # bump when the cropping code changes what a setting produces: old cache entries go stale
CROP_KEYS = ("detector", "fallback", "align", "margin", "size", "min_size", "min_confidence",
             "cascade", "scale_factor", "min_neighbors", "yunet_confidence", "mtcnn_thresholds",
             "guess_side", "subject", "yunet_low_confidence",
             "fill_dark_patches", "landmarks", "landmark_net", "yunet_side")  # every crop setting that changes a crop


def key_settings(settings: CropSettings) -> dict:
    """The settings a crop depends on. Keys added after crops were first cached are left out where
    they cannot change the crop (the step is not on the chain, or they hold what cropping did before
    they existed), so an existing cache stays valid."""
    params = {k: getattr(settings, k) for k in CROP_KEYS}
    steps = chain_steps(settings)
    if "yunet" not in steps or params["yunet_low_confidence"] >= params["yunet_confidence"]:
        del params["yunet_low_confidence"]
    if "yunet" not in steps or params["yunet_confidence"] == params["min_confidence"]:
        del params["yunet_confidence"]
    if "yunet" not in steps or params["yunet_side"] == 960:  # 960: what YuNet saw before the setting existed
        del params["yunet_side"]
    if "mtcnn" not in steps or tuple(params["mtcnn_thresholds"]) == MTCNN_STAGES:
        del params["mtcnn_thresholds"]
    if GUESS not in steps:
        del params["guess_side"]
    if params["subject"] == "largest":
        del params["subject"]
    if not params["fill_dark_patches"]:
        del params["fill_dark_patches"]
    if params["landmarks"] == "dlib" or settings.align == "none":  # dlib's own predictor, or no points used
        del params["landmarks"], params["landmark_net"]
    else:  # the network's content, not its path: a retrained network never reuses old crops
        params["landmark_net"] = landmark_net.file_sha256(settings.landmark_net)
    return params


def crop_key(data: bytes, settings: CropSettings) -> str:
    """Cache key: the file's content and every setting that changes the crop."""
    params = json.dumps({"version": CROP_VERSION, **key_settings(settings)}, sort_keys=True)
    return hashlib.sha1(data + b"\0" + params.encode()).hexdigest()


def _save_crop(path: Path, crop: Crop, source: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("facematch_crop", json.dumps({"path": crop.path, "faces": crop.faces,
                                                "aligned": crop.aligned, "source": source}))
    # compress_level 1: a third of the default's time (1.6 ms against 5 for a 150-px crop), 10% larger
    atomic_write(path, lambda tmp: Image.fromarray(crop.image).save(tmp, format="PNG", pnginfo=info,
                                                                   compress_level=1))


def _load_cached(path: Path) -> tuple[np.ndarray, dict] | None:
    """A cache file's crop and what made it; None where it is damaged."""
    try:
        with Image.open(path) as im:
            meta = json.loads(im.text.get("facematch_crop", "null"))
            image = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    return (image, meta) if isinstance(meta, dict) and "path" in meta else None


def crop_one(path: str | Path, settings: CropSettings, cache_dir: str | Path | None,
             finder: FaceFinder | None = None) -> tuple[np.ndarray | None, dict, bool]:
    """Crop one photo through the cache, by `finder` (None: one of its own): (the crop, or None when no face was
    found on the chain; its {'path', 'faces', 'aligned'}; whether it came from the cache).

    Raises ImageReadError naming the file when it cannot be read.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror})") from None
    cached = Path(cache_dir) / f"{crop_key(data, settings)}.png" if cache_dir is not None else None
    if cached is not None and cached.exists() and (found := _load_cached(cached)) is not None:
        return found[0], found[1], True
    crop = (finder or FaceFinder()).crop_face(read_image(path, data), settings)
    if crop is None:
        return None, {"path": None, "faces": 0, "aligned": False}, False
    meta = {"path": crop.path, "faces": crop.faces, "aligned": crop.aligned}
    if cached is not None:
        _save_crop(cached, crop, path.name)
    return crop.image, meta, False


class _CropJobs:
    """crop_one over a list of photos, by position, so worker processes can share it (_in_worker)."""

    def __init__(self, paths, settings, cache_dir, finder):
        self.paths, self.settings, self.cache_dir, self.finder = paths, settings, cache_dir, finder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return crop_one(self.paths[i], self.settings, self.cache_dir, self.finder)
        except ImageReadError as exc:
            return exc


_WORKER_JOBS: _CropJobs | None = None  # a worker process's copy of the jobs (_start_worker)


def _start_worker(jobs: _CropJobs) -> None:
    """A crop worker's start: its copy of the jobs (and of the finder, its detectors made in it), one thread for
    ONNX Runtime (and OpenCV: set before the fork, _results), as the workers together use the cores."""
    global _WORKER_JOBS
    _WORKER_JOBS = jobs
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:  # a landmark network's PyTorch (only ever imported where one is loaded)
        sys.modules["torch"].set_num_threads(1)


def _in_worker(i: int):
    return _WORKER_JOBS[i]


def _results(jobs: _CropJobs, workers: int, stack: contextlib.ExitStack):
    """crop_one's results in order: here, or in `workers` processes (a multiprocessing pool the stack closes)."""
    if not workers:
        return (jobs[i] for i in range(len(jobs)))
    import multiprocessing

    import cv2

    # OpenCV's threads set to one here, before the fork, not in each worker: a forked worker that resizes OpenCV's
    # thread pool waits forever on the locks it copied from this process (seen in the tests).
    stack.callback(cv2.setNumThreads, cv2.getNumThreads())
    cv2.setNumThreads(1)
    pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers, _start_worker, (jobs,)))
    return pool.imap(_in_worker, range(len(jobs)))


def crop_paths(paths: list[str | Path], settings: CropSettings, cache_dir: str | Path | None,
               desc: str = "cropping faces", workers: int = 0,
               finder: FaceFinder | None = None) -> tuple[list[np.ndarray | None], CropReport]:
    """Crop many photos (cached) by `finder` (None: one of its own), one crop array per input; None where the photo is
    left out (unreadable with settings.on_error 'skip', or no face on a chain without 'center'). Each crop is
    stored as soon as it is made, so an interrupted run keeps its work. With `workers`, reading,
    detection and alignment run in that many worker processes (each with its own copy of the finder), in order."""
    chain_steps(settings)  # bad names fail before any work
    report = CropReport(primary=settings.detector, subject=settings.subject)
    out: list[np.ndarray | None] = []
    jobs = _CropJobs(list(paths), settings, cache_dir, finder or FaceFinder())
    with contextlib.ExitStack() as stack:
        for path, result in progress(zip(paths, _results(jobs, workers, stack)), total=len(paths), desc=desc,
                                     unit="img", disable=len(paths) < 20):
            _tally(path, result, settings, report, out)
    return out, report


def _tally(path, result, settings: CropSettings, report: CropReport, out: list) -> None:
    """One photo's crop_one result into the report and `out`: its crop, or None where it failed or has no face."""
    try:
        if isinstance(result, ImageReadError):
            raise result
        item, meta, from_cache = result
    except ImageReadError as exc:
        if settings.on_error == "stop":
            raise
        warnings.warn(f"skipping {exc}", stacklevel=3)  # crop_paths's caller
        report.failed.append(str(path))
        out.append(None)
        return
    if item is None:
        report.no_face.append(str(path))
    else:
        report.add(meta["path"], str(path), meta["faces"], meta["aligned"], settings.align, from_cache)
    out.append(item)


def load_crop(item: Path | np.ndarray) -> np.ndarray:
    """A crop as an array: an array as it is, a crop file (a store's, a cache file) read."""
    if isinstance(item, np.ndarray):
        return item
    return np.asarray(Image.open(item).convert("RGB"))
