"""The two MobileFaceNets (issue 37): one 112-px ArcFace chip's descriptor, one thread, in each runtime: the
shipped file as its package runs it (fr_feature.onnx in ONNX Runtime; MobileFaceNet.tflite in LiteRT, whose input is
two chips, so its time is halved), tflite2onnx's conversion in ONNX Runtime, facematch's PyTorch module (eager,
channels-last as network.embed runs it) and facematch's re-export from PyTorch (`facematch export`'s file, as it is)
in ONNX Runtime. The median of --runs calls after two not timed, the runtimes alternating so the machine's drift hits
all alike; about 40 s here. Without LiteRT (requirements.txt has it) its row is
left out. Writes the section "mobilefacenet" of bench/RESULTS.md.

    OMP_NUM_THREADS=1 .venv/bin/python bench/mobilefacenet_speed.py [--runs 200]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from benchlib import git_rev, machine, threads_before_imports, write_section  # noqa: E402

threads_before_imports()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

CHIP = ROOT / "tests" / "fixtures" / "mobilefacenet" / "chips" / "sorkin.png"
NAMES = ("mobilefacenet512", "mobilefacenet192")


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runners(name: str, chip: np.ndarray, work: Path) -> dict:
    """Runtime name -> (a call that embeds the chip, chips it embeds)."""
    from backbones import mobilefacenet
    from deploy import export_checkpoint
    from network import save_checkpoint
    from runtime import batch_input, load_bundle
    from settings import build_model, load_config

    release, path = mobilefacenet.RELEASES[name], mobilefacenet.installed(name)
    x = ((chip.astype(np.float32) - release.mean) / release.std)[None]  # NHWC, as the package normalises
    out = {}
    if path.suffix == ".onnx":
        shipped = session(path)
        out["the shipped ONNX file, ONNX Runtime"] = (lambda: shipped.run(None, {"input": x.transpose(0, 3, 1, 2)}), 1)
    else:
        if find_spec("ai_edge_litert") is not None:
            from ai_edge_litert.interpreter import Interpreter

            lite = Interpreter(model_path=str(path), num_threads=1)
            lite.allocate_tensors()
            pair = np.ascontiguousarray(np.concatenate([x, x]))

            def litert():
                lite.set_tensor(lite.get_input_details()[0]["index"], pair)
                lite.invoke()
                return lite.get_tensor(lite.get_output_details()[0]["index"])

            out["the shipped TFLite file, LiteRT (2 chips a run)"] = (litert, 2)
        converted = mobilefacenet.onnx_model(path)
        import onnx

        onnx.save(converted, str(work / f"{name}_tflite2onnx.onnx"))
        plain = session(work / f"{name}_tflite2onnx.onnx")
        pair_nchw = np.ascontiguousarray(np.concatenate([x, x]).transpose(0, 3, 1, 2))
        out["tflite2onnx's conversion, ONNX Runtime (2 chips a run)"] = (
            lambda: plain.run(None, {"input": pair_nchw}), 2)
    cfg = load_config([f"config/{name}.yaml"], [f"data.cache_dir={work / 'cache'}"])
    model, _ = build_model(cfg)
    model.eval().to(memory_format=torch.channels_last)
    tensor = torch.from_numpy(batch_input([chip], model.meta["input"])).contiguous(memory_format=torch.channels_last)

    def pytorch():
        with torch.inference_mode():
            return model(tensor)

    out["facematch's PyTorch module (eager, channels-last)"] = (pytorch, 1)
    save_checkpoint(work / f"{name}.pt", {"model": model.state_dict(), "config": cfg, "meta": model.meta,
                                          "model_info": model.describe(), "epoch": 0})
    export_checkpoint(work / f"{name}.pt", work / name, check=ROOT / "tests" / "fixtures" / "people")
    member = load_bundle(work / name, threads=1)[0]
    batch = batch_input([chip], model.meta["input"])
    out["facematch's re-export from PyTorch, ONNX Runtime"] = (lambda: member.run(batch), 1)
    if path.suffix == ".tflite":  # the same batch as the shipped file's, to compare like with like
        pair_batch = np.concatenate([batch, batch])
        out["facematch's re-export from PyTorch, ONNX Runtime (2 chips a run)"] = (lambda: member.run(pair_batch), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    chip = cv2.cvtColor(cv2.imread(str(CHIP)), cv2.COLOR_BGR2RGB)
    lines = []
    with tempfile.TemporaryDirectory(prefix="mobilefacenet-speed-") as scratch:
        for name in NAMES:
            calls = runners(name, chip, Path(scratch))
            times = {label: [] for label in calls}
            for fn, _ in calls.values():
                fn(), fn()
            for _ in range(args.runs):
                for label, (fn, _) in calls.items():
                    started = time.perf_counter()
                    fn()
                    times[label].append(time.perf_counter() - started)
            for label, (_, chips) in calls.items():
                ms = 1000 * statistics.median(times[label]) / chips
                lines.append(f"| {name} | {label} | {ms:.1f} |")
                print(lines[-1], flush=True)
    write_section("mobilefacenet", "\n".join([
        "## The MobileFaceNets: one chip's descriptor in each runtime, one thread",
        "",
        f"`bench/mobilefacenet_speed.py --runs {args.runs}` (commit {git_rev()}; {machine()}): one 112-px ArcFace chip "
        "(tests/fixtures/mobilefacenet/chips/sorkin.png), the median over the runs, the runtimes alternating. A "
        "runtime whose input is two chips is timed on two and its time halved.",
        "",
        "| network | runtime | ms a chip |",
        "|---|---|---|",
        *lines,
    ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
