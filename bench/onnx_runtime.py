"""ONNX Runtime against PyTorch (issue 29): config/best.yaml's two networks (checkpoints/table/best_fused_lm_ft, the row
bench/covered_queries.py scores) exported at each precision (`facematch export`), each network's time per chip in each
runtime (the bare forward pass, and facematch's embedding path around it), the landmark network's, and each
precision's accuracy on the development competition's test people, clean and with the evaluation's covers.

    .venv/bin/python bench/onnx_runtime.py                      # speed (3 runs, one thread) and accuracy
    .venv/bin/python bench/onnx_runtime.py --runs 1 --accuracy fp32    # quicker

Exports go to outputs/onnx/best_fused_lm_ft_<precision>/ (made again when older than the checkpoint or deploy/); int8
is calibrated on chips of data/dev/train's people, never the test people. Accuracy: `facematch evaluate --covers` on the
export, its report kept in outputs/covers/onnx_<precision>.json while the export's files are the same (sha256); PyTorch's is
outputs/covers/best_fused_lm_ft.json (bench/covered_queries.py). Writes the section "onnx" of bench/RESULTS.md.
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
from benchlib import git_rev, machine, threads_before_imports, write_section  # noqa: E402

threads_before_imports()

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROW = "best_fused_lm_ft"
CKPT = ROOT / "checkpoints" / "table" / ROW / "best.pt"
DEV = ROOT / "data" / "dev"
EXPORTS = ROOT / "outputs" / "onnx"
COVERS_OUT = ROOT / "outputs" / "covers"
PRECISIONS = ("fp32", "int8", "fp16")
BATCH, CHIPS = 16, 64


def export_of(precision: str) -> Path:
    """The checkpoint's export at `precision`, made unless one newer than the checkpoint and deploy/'s code is kept."""
    from deploy import export_checkpoint

    out = EXPORTS / f"{ROW}_{precision}"
    newest = max(p.stat().st_mtime for p in [CKPT, *(ROOT / "deploy").glob("*.py"), ROOT / "backbones" / "tfjs_graph.py",
                                             ROOT / "backbones" / "dlib_resnet.py"])
    if not (out / "model.json").exists() or (out / "model.json").stat().st_mtime < newest:
        export_checkpoint(CKPT, out, precision, check=ROOT / "data" / "sample", calibrate=DEV / "train")
    return out


def med(values: list[float]) -> float:
    return statistics.median(values)


def timed(fn, runs: int) -> list[float]:
    """Seconds of each of `runs` calls of fn, after one call not timed (allocators, kernels chosen)."""
    return timed_pair(fn, None, runs)[0]


def timed_pair(first, second, runs: int) -> tuple[list[float], list[float]]:
    """Seconds of `runs` calls of each function, alternating (so the machine's drift hits both alike), after one call
    of each not timed."""
    out = ([], [])
    for fn in (first, second):
        if fn is not None:
            fn()
    for _ in range(runs):
        for fn, times in zip((first, second), out):
            if fn is not None:
                started = time.perf_counter()
                fn()
                times.append(time.perf_counter() - started)
    return out


def speed(runs: int, exports: dict[str, Path]) -> list[dict]:
    """Per network and runtime: ms a chip of the bare forward pass on CHIPS chips preprocessed in batches of BATCH, and of the
    embedding path (network.embed / runtime.embed over chip arrays: preprocessing, batching, the pass, the copy out)."""
    from detection import crop_paths, list_images
    from network import embed, model_from_checkpoint
    from runtime import batch_input, load_bundle
    from runtime import embed as onnx_embed

    model, _ = model_from_checkpoint(CKPT)
    loaded = {p: load_bundle(path, threads=1)[0] for p, path in exports.items()}
    photos = list_images(DEV / "test" / "gallery")[:CHIPS]
    rows = []
    for i, net in enumerate(model.members):
        crops, _ = crop_paths(photos, net.crop_settings(), None, desc=f"chips for {net.arch}")
        chips = [c for c in crops if c is not None]
        # The same chips in the same batches, preprocessed beforehand: what the bare pass runs
        batches = [batch_input(chips[j:j + BATCH], net.meta["input"]) for j in range(0, len(chips), BATCH)]
        net.to(memory_format=torch.channels_last)  # as network.embed runs it
        tensors = [torch.from_numpy(b).contiguous(memory_format=torch.channels_last) for b in batches]

        def torch_bare():
            with torch.inference_mode():
                for x in tensors:
                    net(x)

        bare, path = timed_pair(torch_bare, lambda: embed(net, chips, BATCH, "cpu"), runs)
        rows.append({"network": net.arch, "runtime": "PyTorch eager (channels-last), fp32",
                     "bare": [1000 * t / len(chips) for t in bare], "embed": [1000 * t / len(chips) for t in path]})
        for precision, exported in loaded.items():
            member = exported.members[i]
            bare, path = timed_pair(lambda: [member.run(b) for b in batches], lambda: onnx_embed(member, chips, BATCH),
                                    runs)
            rows.append({"network": net.arch, "runtime": f"ONNX Runtime, {precision}",
                         "bare": [1000 * t / len(chips) for t in bare], "embed": [1000 * t / len(chips) for t in path]})
            print(f"{net.arch} {precision}: bare {med(rows[-1]['bare']):.1f} ms, embed {med(rows[-1]['embed']):.1f} ms",
                  flush=True)
    return rows


def landmark_speed(runs: int) -> dict:
    """The landmark network on a crop and its mirror image: PyTorch eager against its ONNX Runtime session."""
    from detection import landmark_net

    net = landmark_net.load("shipped")
    pair = landmark_net.to_tensor(np.zeros((2, net.size, net.size, 3), np.uint8))

    def eager():
        with torch.inference_mode():
            net.module(pair)

    reps = 20
    return {"torch": [1000 * t / reps for t in timed(lambda: [eager() for _ in range(reps)], runs)],
            "onnx": [1000 * t / reps for t in timed(lambda: [net.session.run(None, {"input": pair.numpy()})
                                                            for _ in range(reps)], runs)]}


def graph_sha256(path: Path) -> str:
    """The sha256 of an ONNX file's graph alone (its metadata, which names files, left out): what embeds."""
    import hashlib

    import onnx

    return hashlib.sha256(onnx.load(str(path)).graph.SerializeToString()).hexdigest()


def accuracy(precision: str, export: Path) -> dict:
    """`facematch evaluate --covers` of the export on data/dev, kept while the export's networks are the same files
    (their graphs' sha256, noted beside the report: an export made again from the same code is the same)."""
    out = COVERS_OUT / f"onnx_{precision}.json"
    networks = [graph_sha256(export / n["file"]) for n in json.loads((export / "model.json").read_text())["networks"]]
    noted = out.with_suffix(".networks.json")
    if not out.exists() or not noted.exists() or json.loads(noted.read_text()) != networks:
        COVERS_OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "cli", "evaluate", "--checkpoint", str(export), "--competition", str(DEV),
                        "--covers", "--json", str(out), f"evaluate.figure={COVERS_OUT / f'onnx_{precision}' / 'grid.png'}",
                        "data.cache_dir=data/cache/crops", "model.threads=1"], cwd=ROOT, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        noted.write_text(json.dumps(networks))
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timing runs; medians are reported")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--accuracy", nargs="*", default=["fp32", "int8"], choices=PRECISIONS,
                        help="precisions scored on data/dev (fp16: slower than fp32 on this CPU, so by default not)")
    args = parser.parse_args(argv)
    if not CKPT.exists() or not (DEV / "ground_truth.json").exists():
        print(f"needs {CKPT.relative_to(ROOT)} (bench/table.py train {ROW}) and data/dev (bench/table.py prepare)")
        return 0
    torch.set_num_threads(1)
    started, load_start = time.time(), os.getloadavg()
    exports = {p: export_of(p) for p in args.precisions}
    checks = {p: json.loads((path / "model.json").read_text())["networks"] for p, path in exports.items()}
    rows = speed(args.runs, exports)
    marks = landmark_speed(args.runs)
    scored = {p: accuracy(p, exports[p]) for p in args.accuracy}
    reference_file = COVERS_OUT / f"{ROW}.json"
    reference = json.loads(reference_file.read_text()) if reference_file.exists() else None

    lines = [f"Command: `.venv/bin/python bench/onnx_runtime.py{f' --runs {args.runs}' if args.runs != 3 else ''}` "
             f"(commit {git_rev()}, {time.strftime('%Y-%m-%d')}; {machine()}; one thread for PyTorch and ONNX Runtime; "
             f"load average {load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
             f"{(time.time() - started) / 60:.0f} min). Networks: config/best.yaml's two (checkpoints/table/{ROW}), "
             f"exported with `facematch export --precision P` (int8: calibrated on {96} chips of data/dev/train's people, "
             "never the test people). Per chip, medians of the runs: the runtime's bare forward pass on preprocessed "
             f"batches of {BATCH} of {CHIPS} real chips, and facematch's embedding path over the same chips (preprocessing "
             "from the crop, batching, the pass; `network.embed` for PyTorch, `runtime.embed` for ONNX Runtime), the two "
             "timed alternately; ratio: the bare pass's time over the path's (1 = no overhead; target ≥ 0.9).", "",
             "| network | runtime | ms/chip, bare pass | ms/chip, embedding path | bare ÷ path | × PyTorch's path | "
             "agreement with PyTorch on data/sample's chips (least cosine) |", "|---|---|---|---|---|---|---|"]
    torch_path = {r["network"]: med(r["embed"]) for r in rows if r["runtime"].startswith("PyTorch")}
    for r in rows:
        precision = None if r["runtime"].startswith("PyTorch") else r["runtime"].rsplit(", ", 1)[-1]
        agree = next((n["check"] for n in checks.get(precision, []) if n["info"]["arch"] == r["network"]), None)
        lines.append(f"| {r['network']} | {r['runtime']} | {med(r['bare']):.1f} | {med(r['embed']):.1f} | "
                     f"{med(r['bare']) / med(r['embed']):.2f} | {torch_path[r['network']] / med(r['embed']):.2f}× | "
                     f"{'–' if agree is None else format(agree['min_cosine'], '.5f')} |")
    lines += ["", f"The landmark network (crop.landmarks: net; MobileNetV2 at 112 px on a crop and its mirror image): "
                  f"PyTorch eager {med(marks['torch']):.1f} ms a pair, ONNX Runtime {med(marks['onnx']):.1f} ms "
                  f"({med(marks['torch']) / med(marks['onnx']):.1f}×); the crop path runs it in ONNX Runtime since "
                  "issue 29.", ""]
    if scored:
        lines += ["Accuracy on data/dev's test people (410 queries, 1,730 gallery photos; `facematch evaluate --covers` "
                  "on the export; covered: the mean over the evaluation's eight kinds of covers); PyTorch: "
                  f"outputs/covers/{ROW}.json (bench/covered_queries.py, the same command on the checkpoint). "
                  "Target: within 0.005 of PyTorch, clean and covered.", "",
                  "| runtime | clean top-1 | covered top-1 (mean) | Δ clean | Δ covered | within 0.005? |",
                  "|---|---|---|---|---|---|"]
        if reference:
            lines.append(f"| PyTorch, fp32 | {reference['clean']['top1']:.3f} | {reference['covers_mean']['top1']:.3f} "
                         "| – | – | – |")
        for p, rep in scored.items():
            dc = rep["clean"]["top1"] - reference["clean"]["top1"] if reference else float("nan")
            dv = rep["covers_mean"]["top1"] - reference["covers_mean"]["top1"] if reference else float("nan")
            ok = abs(dc) <= 0.005 and abs(dv) <= 0.005
            dc, dv = round(dc, 3) + 0.0, round(dv, 3) + 0.0  # no "-0.000"
            lines.append(f"| ONNX Runtime, {p} | {rep['clean']['top1']:.3f} | {rep['covers_mean']['top1']:.3f} | "
                         f"{dc:+.3f} | {dv:+.3f} | {'yes' if ok else '**no**'} |")
    text = "\n".join(lines)
    print(text)
    write_section("onnx", "## ONNX Runtime against PyTorch: speed per chip and accuracy by precision\n\n"
                  + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
