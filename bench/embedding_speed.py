"""Embedding speed and memory (issue 9): facematch's `network.embed(model, crops)` against the
limit, a bare forward pass of the same architecture on ready tensors, for every backbone at
batch 1, 32 and 128, in the same run. ONNX Runtime's passes against its own bare pass, per precision, for
config/best.yaml's networks: bench/onnx_runtime.py (issue 29).

    .venv/bin/python bench/embedding_speed.py                    # native input sizes (224; dlib 150): slow on 2 cores
    .venv/bin/python bench/embedding_speed.py --size 112         # every CNN at 112 px (dlib_resnet stays at 150)
    .venv/bin/python bench/embedding_speed.py --size 64          # what bench/RESULTS.md shows: ~17 min on 2 busy cores
    .venv/bin/python bench/embedding_speed.py --quick --size 64  # batch 1 and 32, 2 runs, no torch.compile: ~6 min
    .venv/bin/python bench/embedding_speed.py --backbones dlib_resnet   # dlib's network alone, with dlib-bin beside it

What is compared, per (backbone, batch), in one fresh subprocess each:
- facematch: `embed(model, crops, batch_size)` of a `build_model` network (the config's pooling
  and head: GeM + linear + batch norm, 512-d, L2-normalised; random weights) on N random uint8
  crops held in memory (no disk), each already at the input size: the DataLoader, the model's
  albumentations eval transform per crop (resize, normalise, to tensor), channels-last, inference_mode.
- the limit ("bare forward"): the library's own model of the same architecture, its forward()
  called on batches made and normalised beforehand (float32, channels-last, as embed uses), under
  torch.inference_mode: `torchvision.models.<arch>(weights=None).eval()` for the ResNets, VGG16 and
  MobileNetV2, timm's `tf_efficientnet_lite0` (facematch's own trunk; torchvision has no Lite0) for
  efficientnet_lite0, each with its classifier replaced by nn.Identity (conv trunk + global average
  pooling): at small inputs a 1000-way classifier (VGG16's 25088×4096 above all) would cost the
  limit more than facematch's whole head, flattering facematch.
- dlib_resnet has no torchvision twin: its limit is the same backbones.dlib_resnet.DlibResNet module called on
  ready batches, and dlib-bin's own `compute_face_descriptor` on the same 150×150 chips is timed
  beside both (the C++ network facematch's module was read from). It runs at 150 px whatever --size says.

N is 8 crops at batch 1 (8 calls) and one batch otherwise. Each side is warmed up once (batch
≤ 8), then timed --runs times (fewer, never under 2, where that would pass --budget seconds),
the two sides alternating (which goes first swaps every run); photos/s (wall clock) are medians.
Ratios are medians of per-run ratios, by wall clock and by the process's CPU time: on cores shared
with other jobs the wall-clock ratio of two back-to-back passes swings by ±20 %, while the CPU
time (one thread, everything in-process: DataLoader without workers) counts the work done. Peak memory: VmHWM of the subprocess,
reset (/proc/self/clear_refs) after malloc_trim, minus VmRSS just before the call: what the call
itself allocates (activations, transformed crops, batches), the largest of the runs.

Side measurements: channels-last against the default contiguous layout (the bare forward of
resnet50 and mobilenet_v2 at batch 32), since embed() switches it on; and torch.compile (inductor)
of resnet18 at batch 32 against eager, in a subprocess given --compile-timeout seconds.

Writes the `embedding` section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from benchlib import git_rev, libc, machine, proc_status, threads_before_imports, write_section  # noqa: E402

threads_before_imports()

ARCHES = ["resnet18", "resnet34", "resnet50", "vgg16", "mobilenet_v2", "efficientnet_lite0", "dlib_resnet"]
LAYOUT_ARCHES, LAYOUT_BATCH = ["resnet50", "mobilenet_v2"], 32
COMPILE_ARCH, COMPILE_BATCH = "resnet18", 32
MIB = 2 ** 20


# ---------------------------------------------------------------- memory

LIBC = libc()


def _settle() -> int:
    """Give freed heap back to the system, reset VmHWM to the current RSS; returns that RSS."""
    if LIBC is not None and hasattr(LIBC, "malloc_trim"):
        LIBC.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return proc_status("VmRSS")


def measured(fn) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, peak bytes above the RSS before) of one call."""
    before = _settle()
    started, cpu = time.perf_counter(), time.process_time()
    fn()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return seconds, cpu, max(0, proc_status("VmHWM") - before)


# ---------------------------------------------------------------- the worker (one subprocess per measurement)

def runs_allowed(runs: int, spent: float, done: int, budget: float) -> int:
    """--runs, or fewer (never under 2) when the runs so far say the rest would pass --budget seconds."""
    if done == 0 or budget <= 0:
        return runs
    return max(min(runs, 2), min(runs, int(budget / (spent / done))))


def _setup(threads: int):
    import cv2
    import torch

    if LIBC is not None and hasattr(LIBC, "mallopt"):
        LIBC.mallopt(-3, 1 << 20)  # a fixed mmap threshold (M_MMAP_THRESHOLD): big buffers go back when freed
    if threads > 0:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    return torch


def facematch_model(arch: str, size: int | None):
    from settings import build_model
    from settings import load_config

    if arch == "dlib_resnet":
        cfg = load_config([str(ROOT / "config" / "dlib.yaml")], ["model.head=none"])
    else:
        cfg = load_config(overrides=[f"model.arch={arch}", "model.weights=none",
                                     f"input.size={size if size else 'auto'}"])
    model, _ = build_model(cfg)
    return model.eval()


def bare_model(arch: str):
    """The library's own model and forward, its classifier replaced by nn.Identity: conv trunk +
    global average pooling + flatten."""
    import torch
    import torch.nn as nn
    import torchvision

    if arch == "dlib_resnet":  # facematch's own module is the library here: dlib ships no PyTorch network
        from backbones.dlib_resnet import DlibResNet

        return DlibResNet().eval().to(memory_format=torch.channels_last)
    if arch == "efficientnet_lite0":
        import timm

        net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)  # keeps its global pool
    else:
        net = getattr(torchvision.models, arch)(weights=None)
        if arch.startswith("resnet"):
            net.fc = nn.Identity()
        elif arch == "mobilenet_v2":
            net.classifier = nn.Identity()
        elif arch == "vgg16":  # its avgpool is to 7×7 for the classifier: pool globally instead
            net.avgpool, net.classifier = nn.AdaptiveAvgPool2d(1), nn.Identity()
    return net.eval().to(memory_format=torch.channels_last)


def ready_batches(crops, inp: dict, batch: int, channels_last: bool = True) -> list:
    """The crops as the network sees them, normalised beforehand, cut into batches."""
    import numpy as np
    import torch

    x = np.stack(crops).astype(np.float32) / np.float32(inp.get("max_pixel_value", 255.0))
    x = (x - np.asarray(inp["mean"], np.float32)) / np.asarray(inp["std"], np.float32)
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [t[i:i + batch].contiguous(memory_format=fmt) for i in range(0, len(t), batch)]


def forward_all(net, batches) -> None:
    import torch

    with torch.inference_mode():
        for b in batches:
            net(b)


def worker_pair(spec: dict) -> dict:
    """facematch's embed against the bare forward, one (backbone, batch)."""
    torch = _setup(spec["threads"])
    import numpy as np

    from network import embed

    load = os.getloadavg()[0]
    arch, batch, runs = spec["arch"], spec["batch"], spec["runs"]
    model = facematch_model(arch, spec["size"])
    inp = model.meta["input"]
    size = int(inp["size"])
    n = spec["images"]
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    net = bare_model(arch)
    batches = ready_batches(crops, inp, batch)
    warm_batches = ready_batches(crops[:min(batch, 8)], inp, batch)
    sides = {"bare": lambda: forward_all(net, batches)}
    forward_all(net, warm_batches)
    if arch == "dlib_resnet":  # and dlib-bin, the C++ network it was read from, on the same chips
        import dlib

        from backbones import dlib_dat

        descriptor = dlib.face_recognition_model_v1(str(dlib_dat()))
        chip_batches = [crops[i:i + batch] for i in range(0, n, batch)]
        sides["dlibbin"] = lambda: [descriptor.compute_face_descriptor(chips) for chips in chip_batches]
        descriptor.compute_face_descriptor(crops[:min(batch, 8)])

    def ours() -> None:
        out = embed(model, crops, batch_size=batch, device="cpu")
        assert out.shape == (n, model.embedding_size)

    embed(model, crops[:min(batch, 8)], batch_size=batch, device="cpu")  # warm-up: allocator, oneDNN kernels
    sides["facematch"] = ours
    result = {"facematch": [], "bare": [], "ratio": [], "cpu_ratio": [], "mem_facematch": 0, "mem_bare": 0}
    if "dlibbin" in sides:
        result.update(dlibbin=[], dlibbin_ratio=[], dlibbin_cpu_ratio=[], mem_dlibbin=0)
    r, spent = 0, 0.0
    while r < runs_allowed(runs, spent, r, spec["budget"]):
        rates, cpus = {}, {}
        order = sorted(sides, reverse=r % 2 == 1)  # the sides alternate which goes first
        for side in order:
            seconds, cpus[side], peak = measured(sides[side])
            spent += seconds
            rates[side] = n / seconds
            result[side].append(rates[side])
            result[f"mem_{side}"] = max(result[f"mem_{side}"], peak)
        result["ratio"].append(rates["facematch"] / rates["bare"])
        result["cpu_ratio"].append(cpus["bare"] / cpus["facematch"])
        if "dlibbin" in sides:
            result["dlibbin_ratio"].append(rates["facematch"] / rates["dlibbin"])
            result["dlibbin_cpu_ratio"].append(cpus["dlibbin"] / cpus["facematch"])
        r += 1
    result.update(size=size, images=n, load=load, threads=torch.get_num_threads(),
                  rest_rss=proc_status("VmRSS"), params=sum(p.numel() for p in model.parameters()))
    return result


def worker_layout(spec: dict) -> dict:
    """The bare forward with contiguous (NCHW) against channels-last tensors and weights."""
    import copy

    torch = _setup(spec["threads"])
    import numpy as np

    load = os.getloadavg()[0]
    arch, batch = spec["arch"], spec["batch"]
    inp = facematch_model(arch, spec["size"]).meta["input"]
    size = int(inp["size"])
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    nets = {"channels_last": bare_model(arch)}
    nets["contiguous"] = copy.deepcopy(nets["channels_last"]).to(memory_format=torch.contiguous_format)
    data = {"channels_last": ready_batches(crops, inp, batch, True), "contiguous": ready_batches(crops, inp, batch, False)}
    for k in nets:
        forward_all(nets[k], ready_batches(crops[:8], inp, batch, k == "channels_last"))
    result = {"channels_last": [], "contiguous": [], "ratio": [], "cpu_ratio": []}
    r, spent = 0, 0.0
    while r < runs_allowed(spec["runs"], spent, r, spec["budget"]):
        rates, cpus = {}, {}
        for k in (("channels_last", "contiguous") if r % 2 == 0 else ("contiguous", "channels_last")):
            seconds, cpus[k], _ = measured(lambda: forward_all(nets[k], data[k]))
            spent += seconds
            rates[k] = batch / seconds
            result[k].append(rates[k])
        result["ratio"].append(rates["channels_last"] / rates["contiguous"])
        result["cpu_ratio"].append(cpus["contiguous"] / cpus["channels_last"])
        r += 1
    result.update(size=size, load=load)
    return result


def worker_compile(spec: dict) -> dict:
    """torch.compile (inductor, default mode) of the bare forward against eager, both channels-last."""
    torch = _setup(spec["threads"])
    import numpy as np

    load = os.getloadavg()[0]
    arch, batch = spec["arch"], spec["batch"]
    inp = facematch_model(arch, spec["size"]).meta["input"]
    size = int(inp["size"])
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    data = ready_batches(crops, inp, batch)
    eager = bare_model(arch)
    compiled = torch.compile(bare_model(arch))
    started = time.perf_counter()
    forward_all(compiled, data)  # compiles for this shape
    compile_s = time.perf_counter() - started
    forward_all(eager, ready_batches(crops[:8], inp, batch))
    result = {"eager": [], "compiled": [], "ratio": [], "cpu_ratio": [], "compile_s": compile_s}
    r, spent = 0, 0.0
    while r < runs_allowed(spec["runs"], spent, r, spec["budget"]):
        rates, cpus = {}, {}
        for k in (("compiled", "eager") if r % 2 == 0 else ("eager", "compiled")):
            seconds, cpus[k], _ = measured(lambda: forward_all(compiled if k == "compiled" else eager, data))
            spent += seconds
            rates[k] = batch / seconds
            result[k].append(rates[k])
        result["ratio"].append(rates["compiled"] / rates["eager"])
        result["cpu_ratio"].append(cpus["eager"] / cpus["compiled"])
        r += 1
    result.update(size=size, load=load)
    return result


WORKERS = {"pair": worker_pair, "layout": worker_layout, "compile": worker_compile}


def run_worker(spec: dict, timeout: float | None = None) -> dict:
    """One measurement in a fresh interpreter; {'error': ...} when it fails or runs out of time."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(spec["threads"]), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


# ---------------------------------------------------------------- the report

def runs_text(values: list[float], fmt: str = "{:.2f}") -> str:
    return " (" + ", ".join(fmt.format(v) for v in values) + ")" if len(values) > 1 else ""


def verdict(ratio: float) -> str:
    if ratio >= 0.9:
        return "yes"
    return "**no** (just under)" if round(ratio, 2) >= 0.9 else "**no**"


def pair_table(results: dict) -> str:
    rows = ["| backbone | input | batch | photos | facematch `embed`, photos/s | bare forward, photos/s | "
            "ratio, wall clock (runs) | **ratio, CPU time** (runs) | ≥ 0.9 | peak memory, `embed` | "
            "peak memory, bare | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (arch, batch), r in results.items():
        if "error" in r:
            rows.append(f"| {arch} | | {batch} | | not measured: {r['error']} | | | | | | | |")
            continue
        cpu = statistics.median(r["cpu_ratio"])
        limit = " (facematch's DlibResNet module)" if arch == "dlib_resnet" else ""
        rows.append(f"| {arch} | {r['size']} px | {batch} | {r['images']} | {statistics.median(r['facematch']):.1f} | "
                    f"{statistics.median(r['bare']):.1f}{limit} | {statistics.median(r['ratio']):.2f}{runs_text(r['ratio'])} | "
                    f"**{cpu:.2f}**{runs_text(r['cpu_ratio'])} | {verdict(cpu)} | "
                    f"{r['mem_facematch'] / MIB:.0f} MiB | {r['mem_bare'] / MIB:.0f} MiB | {r['load']:.1f} |")
    return "\n".join(rows)


def dlib_table(results: dict) -> str:
    """dlib_resnet's embed() against dlib-bin's compute_face_descriptor, from the same runs."""
    rows = ["| batch | facematch `embed`, photos/s | dlib-bin, photos/s | **facematch ÷ dlib-bin**, wall clock (runs) | "
            "CPU time (runs) | ≥ 10 | peak memory, dlib-bin | load |", "|---|---|---|---|---|---|---|---|"]
    for (arch, batch), r in results.items():
        if arch != "dlib_resnet" or "error" in r or "dlibbin" not in r:
            continue
        wall = statistics.median(r["dlibbin_ratio"])
        rows.append(f"| {batch} | {statistics.median(r['facematch']):.1f} | {statistics.median(r['dlibbin']):.1f} | "
                    f"**{wall:.1f}**{runs_text(r['dlibbin_ratio'], '{:.1f}')} | "
                    f"{statistics.median(r['dlibbin_cpu_ratio']):.1f}{runs_text(r['dlibbin_cpu_ratio'], '{:.1f}')} | "
                    f"{'yes' if wall >= 10 else '**no**'} | {r['mem_dlibbin'] / MIB:.0f} MiB | {r['load']:.1f} |")
    return "\n".join(rows) if len(rows) > 2 else "(dlib_resnet not measured)"


def side_table(results: dict, a: str, b: str, what: str) -> str:
    rows = [f"| backbone | input | batch | {a}, photos/s | {b}, photos/s | {what}, wall clock (runs) | "
            f"**{what}, CPU time** (runs) | load |", "|---|---|---|---|---|---|---|---|"]
    for (arch, batch), r in results.items():
        if "error" in r:
            rows.append(f"| {arch} | | {batch} | not measured: {r['error']} | | | | |")
            continue
        rows.append(f"| {arch} | {r['size']} px | {batch} | {statistics.median(r[a]):.1f} | {statistics.median(r[b]):.1f} | "
                    f"{statistics.median(r['ratio']):.2f}{runs_text(r['ratio'])} | "
                    f"**{statistics.median(r['cpu_ratio']):.2f}**{runs_text(r['cpu_ratio'])} | {r['load']:.1f} |")
    return "\n".join(rows)


def command_line(args) -> str:
    parts = [".venv/bin/python bench/embedding_speed.py"]
    if args.quick:
        parts.append("--quick")
    for key, default in {"size": None, "runs": None, "batches": None, "threads": 1, "compile_timeout": 300.0, "budget": 90.0,
                         "backbones": None}.items():
        value = getattr(args, key)
        if value != default:
            value = " ".join(map(str, value)) if isinstance(value, list) else value
            parts.append(f"--{key.replace('_', '-')} {value}")
    if args.no_compile:
        parts.append("--no-compile")
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=None,
                        help="input size of every CNN (default: each backbone's native size, 224); dlib_resnet keeps 150")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 32 128; --quick: 1 32)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per measurement (default 3; --quick: 2)")
    parser.add_argument("--quick", action="store_true", help="batch 1 and 32, 2 runs, no torch.compile check")
    parser.add_argument("--budget", type=float, default=90.0,
                        help="seconds of timed work per (backbone, batch): runs beyond it are dropped, never below 2 "
                             "(0: always --runs)")
    parser.add_argument("--backbones", nargs="+", default=None, choices=ARCHES, help="default: all")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/OpenMP and OpenCV threads, the same for both sides (0: the libraries' defaults, "
                             "one per core; on 2 cores shared with a training, 2 threads ran 2-9× slower than 1)")
    parser.add_argument("--compile-timeout", type=float, default=300.0, help="seconds allowed to the torch.compile check")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile check")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print("RESULT " + json.dumps(WORKERS[spec["mode"]](spec)), flush=True)
        return

    batches = args.batches or ([1, 32] if args.quick else [1, 32, 128])
    runs = args.runs or (2 if args.quick else 3)
    arches = args.backbones or ARCHES
    started, load_start = time.time(), os.getloadavg()
    common = {"size": args.size, "runs": runs, "threads": args.threads, "budget": args.budget}

    pairs = {}
    for arch in arches:
        for batch in batches:
            spec = dict(common, mode="pair", arch=arch, batch=batch, images=8 if batch == 1 else batch)
            pairs[(arch, batch)] = r = run_worker(spec)
            if "error" in r:
                print(f"{arch} batch {batch}: {r['error']}", flush=True)
            else:
                print(f"{arch} {r['size']} px batch {batch}: embed {statistics.median(r['facematch']):.1f}/s, "
                      f"bare {statistics.median(r['bare']):.1f}/s, ratio {statistics.median(r['ratio']):.2f} "
                      f"{[round(v, 2) for v in r['ratio']]}, CPU-time ratio {statistics.median(r['cpu_ratio']):.2f} "
                      f"{[round(v, 2) for v in r['cpu_ratio']]}, peak {r['mem_facematch'] / MIB:.0f} / "
                      f"{r['mem_bare'] / MIB:.0f} MiB, load {r['load']:.1f}", flush=True)
    layouts = {}
    for arch in LAYOUT_ARCHES:
        layouts[(arch, LAYOUT_BATCH)] = r = run_worker(dict(common, mode="layout", arch=arch, batch=LAYOUT_BATCH))
        print(f"layout {arch}: {r}", flush=True)
    compiled = {}
    if not (args.no_compile or args.quick):
        compiled[(COMPILE_ARCH, COMPILE_BATCH)] = r = run_worker(
            dict(common, mode="compile", arch=COMPILE_ARCH, batch=COMPILE_BATCH), timeout=args.compile_timeout)
        print(f"compile {COMPILE_ARCH}: {r}", flush=True)

    minutes, load_end = (time.time() - started) / 60, os.getloadavg()
    ok = [r for r in pairs.values() if "error" not in r]
    met = [f"{a} batch {b}" for (a, b), r in pairs.items() if "error" not in r and statistics.median(r["cpu_ratio"]) >= 0.9]
    missed = [f"{a} batch {b} ({statistics.median(r['cpu_ratio']):.2f}"
              f"{', just under' if round(statistics.median(r['cpu_ratio']), 2) >= 0.9 else ''})" for (a, b), r in pairs.items()
              if "error" not in r and statistics.median(r["cpu_ratio"]) < 0.9]
    sizes = ("every CNN at " + (f"{args.size} px (`--size {args.size}`; their native size, 224 px, is too slow for "
                                "2 shared cores)" if args.size else "its native size, 224 px") +
             ", dlib_resnet at its fixed 150 px")
    if compiled:
        c = compiled[(COMPILE_ARCH, COMPILE_BATCH)]
        compile_text = (f"**torch.compile** (inductor, default mode) of the bare {COMPILE_ARCH} forward at batch "
                        f"{COMPILE_BATCH}: " + (f"not measured: {c['error']} (compiling on 2 cores shared with a "
                                                f"training)." if "error" in c else
                                                f"compiling took {c['compile_s']:.0f} s (first call).\n\n"
                                                + side_table(compiled, "compiled", "eager", "compiled ÷ eager")))
    else:
        compile_text = f"torch.compile: not measured (`{'--quick' if args.quick else '--no-compile'}`)."
    # A run over some backbones writes its own section: the full table is never replaced by less.
    section = "embedding" if set(arches) == set(ARCHES) else "embedding-" + "-".join(arches)
    title = ("Embedding: photos/s and peak memory against a bare forward pass" if section == "embedding"
             else f"Embedding, {', '.join(arches)}: photos/s and peak memory against a bare forward pass"
             + (" and dlib-bin" if "dlib_resnet" in arches else ""))
    md = f"""## {title}

Command: `{command_line(args)}` (commit {git_rev()}), {datetime.date.today().isoformat()}, {minutes:.0f} min in all.
Machine: {machine()}; {args.threads or 'the default number of'} thread{'s' if args.threads != 1 else ''} for torch and
OpenCV on both sides (load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end: a training shared
the 2 cores; the `load` column is the 1-minute load average when each row started). Sizes: {sizes}.

**facematch** is `network.embed(model, crops, batch_size)` of a `build_model` network (GeM + linear + batch-norm
head, 512-d, L2-normalised; random weights) on random uint8 crops held in memory, already at the input size:
DataLoader (no workers), the model's albumentations eval transform per crop, channels-last, inference_mode.
**bare forward** (the limit) is the library's own model of the same architecture, its forward() on batches made
and normalised beforehand (float32, channels-last), under inference_mode: `torchvision.models.<arch>(weights=None)`,
for efficientnet_lite0 timm's `tf_efficientnet_lite0` (facematch's own trunk: torchvision has no Lite0), each with
its classifier replaced by `nn.Identity` (conv trunk + global average pooling; at small inputs a 1000-way
classifier, VGG16's 25088×4096 above all, would slow the limit down more than facematch's whole head costs).
**dlib_resnet** has no torchvision twin: its limit is facematch's own `backbones.dlib_resnet.DlibResNet` (the network read
from dlib's .dat) called on the ready batches, and beside it dlib-bin's `compute_face_descriptor`, the C++ network
it was read from, on the same 150×150 chips, batch by batch (its table below).

Photos: 8 calls at batch 1, one batch otherwise. One warm-up per side, then {runs} timed runs (fewer, never under
2, where more would pass {args.budget:.0f} s of timed work), the two sides alternating; photos/s (wall clock) are
medians. Ratios (facematch ÷ limit) are medians of per-run ratios (runs in brackets), by wall clock and by the
process's CPU time: with the cores shared, two back-to-back passes of the same work differ by up to ±20 % in wall
clock, while CPU time (one thread, all in-process) counts the work done, so the target is judged on it. Each
(backbone, batch) runs in a fresh subprocess; peak memory is its VmHWM during the call (reset after malloc_trim)
minus VmRSS just before it: what the call allocates, largest of the runs. Target: ratio ≥ 0.9.

{pair_table(pairs)}

Target ≥ 0.9 met in {len(met)} of {len(ok)} rows{': missed by ' + ', '.join(missed) if missed else ''}.

**dlib_resnet against dlib-bin** (issue 16: at least 10× dlib-bin's chips/s per core), same runs and chips:

{dlib_table(pairs)}

**Channels-last** against the default contiguous (NCHW) layout, bare forward at batch {LAYOUT_BATCH}, same run
(embed() converts the model and every batch to channels-last):

{side_table(layouts, "channels_last", "contiguous", "channels-last ÷ contiguous")}

{compile_text}
"""
    write_section(section, md)
    print(md)


if __name__ == "__main__":
    main()
