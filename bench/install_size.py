"""The two installs' size on disk and time to install (issue 39): the inference install (`pip install -e .` under
requirements.txt's pins, what `make venv-infer` runs), with pip's cache and without it (--no-cache-dir: CI's cold
cache), against the full install (`make venv`'s three pip commands), each in a new virtual environment in a temporary
folder, alternately, --runs times; medians. Writes its section of bench/RESULTS.md. Not run by CI (minutes, gigabytes).

    .venv/bin/python bench/install_size.py --runs 3          # about 15 minutes here, 7 GB of /tmp while it runs
    .venv/bin/python bench/install_size.py --runs 1 --no-full   # the inference install only; the full one's size from .venv
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from benchlib import git_rev, machine, write_section

ROOT = Path(__file__).resolve().parents[1]
PIP = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
INSTALLS = {  # name -> the pip commands after `python -m venv` (make venv-infer's, make venv's)
    "inference": [[*PIP, "-c", "requirements.txt", "-e", "."]],
    "inference, no pip cache": [[*PIP, "--no-cache-dir", "-c", "requirements.txt", "-e", "."]],
    "full": [[*PIP, "-r", "requirements.txt"], [*PIP, "--no-deps", "-r", "requirements-nodeps.txt"],
             [*PIP, "--no-deps", "-e", ".[train]"]],
}


def size_mb(path: Path) -> float:
    """Disk usage of a folder in MB (2^20 bytes), as `du -sm` counts it."""
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]) / 1024


def install(name: str, scratch: Path) -> tuple[float, float, bool]:
    """(seconds, MB, whether torch imports there) of one install from nothing into a new venv under `scratch`."""
    venv = scratch / name.replace(" ", "_").replace(",", "")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for command in INSTALLS[name]:
        subprocess.run([str(venv / "bin" / "python"), *command], cwd=ROOT, check=True)
    seconds = time.perf_counter() - started
    has_torch = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode == 0
    mb = size_mb(venv)
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    return seconds, mb, has_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-full", action="store_true", help="leave the full install out (its size: .venv's)")
    args = parser.parse_args()
    names = [n for n in INSTALLS if not (args.no_full and n == "full")]
    load = [os.getloadavg()[0]]
    found: dict[str, list[tuple[float, float, bool]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="facematch-install-") as scratch:
        for run in range(args.runs):
            for name in names:
                found[name].append(install(name, Path(scratch)))
                print(f"run {run + 1}: {name}: {found[name][-1][0]:.0f} s, {found[name][-1][1]:.0f} MB", flush=True)
    load.append(os.getloadavg()[0])
    rows = {n: (statistics.median(s for s, _, _ in r), statistics.median(m for _, m, _ in r), r[0][2])
            for n, r in found.items()}
    if "full" not in rows:
        rows["full (.venv as it is)"] = (float("nan"), size_mb(ROOT / ".venv"), True)
    ref_s, ref_mb = rows.get("full", rows.get("full (.venv as it is)"))[:2]
    lines = [f"| {n} | {s:.0f} s | {m:,.0f} MB | {'yes' if t else 'no'} | {s / ref_s:.2f} | {m / ref_mb:.3f} |"
             for n, (s, m, t) in rows.items()]
    busy = (" Another job kept the cores busy while it ran (load above): the times are those of a busy machine."
            if max(load) > 1.5 else "")
    write_section("install", f"""## The two installs: size on disk and time to install

Command: `.venv/bin/python bench/install_size.py --runs {args.runs}{' --no-full' if args.no_full else ''}` (commit
{git_rev()}, {date.today()}; {machine()}; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end). Each
install from nothing into a new virtual environment (Python's venv, with its pip and setuptools), alternately; medians
of the runs; size: `du` of the whole environment. inference: `pip install -c requirements.txt -e .` (make
venv-infer); no pip cache: the same with --no-cache-dir (a cold cache, as CI may have: every wheel downloaded); full:
make venv's three pip commands (requirements.txt, requirements-nodeps.txt, `-e .[train]`), with pip's cache. Targets:
the inference install ≤ 500 MB and ≤ 60 s.{busy}

| install | time | size on disk | torch importable | time ÷ full's | size ÷ full's |
|---|---|---|---|---|---|
""" + "\n".join(lines))


if __name__ == "__main__":
    main()
