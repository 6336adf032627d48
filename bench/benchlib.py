"""Shared by the bench scripts: the machine's description, writing a section of RESULTS.md, --threads
set before OpenMP loads, and this process's memory from /proc. Imports nothing heavy (no torch at
import time), so a script imports it first."""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    """One line naming the CPU, core count, memory and the torch build."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores{mem}, {gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=RESULTS.parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_section(name: str, markdown: str) -> None:
    """Replace the text between <!-- name:start --> and <!-- name:end --> in RESULTS.md (or append it)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks and results\n"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def threads_before_imports(default: int = 1) -> None:
    """--threads must reach OpenMP before torch (or yuface) loads libgomp, which reads
    OMP_NUM_THREADS once, when it loads: call this before those imports."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--threads", type=int, default=default)
    threads = early.parse_known_args()[0].threads
    if threads > 0:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def proc_status(field: str) -> int:
    """VmRSS / VmHWM of this process in bytes (0 where /proc is missing)."""
    try:
        return int(re.search(rf"{field}:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
    except (OSError, AttributeError):
        return 0


def libc():
    """The C library through ctypes (malloc_trim, mallopt), or None."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None

