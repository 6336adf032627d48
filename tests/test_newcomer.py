"""A newcomer's first hour (issue 30): a Python without the packages says what to do, a taken port is refused
before anything is built."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize("command", [["train.py", "--help"], ["request_send.py", "--help"], ["-m", "cli", "split", "--help"]])
def test_a_python_without_the_packages_says_run_make_venv(command):
    # -S: no site-packages, as the system Python that has none of .venv's packages
    done = subprocess.run([sys.executable, "-S", *command], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "run `make venv` first" in done.stderr and ".venv/bin/facematch" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_taken_port_is_refused_before_the_store_is_opened(tmp_path, capsys):
    from cli import web

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert web.main(["--check-port", "--port", str(port)]) == 2
        assert web.main(["--store", str(tmp_path / "no_store"), "--port", str(port)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 2 and all(f"web.port={port}" in e and f"PORT={port + 1}" in e for e in errors)
    assert not (tmp_path / "no_store").exists()
    assert web.main(["--check-port", "--port", str(port)]) == 0  # freed: said free
    assert f"127.0.0.1:{port} is free" in capsys.readouterr().err


def test_every_number_in_the_readme_is_one_bench_results_holds():
    """A figure typed into the README by hand drifts from the measurement: each decimal number there must be one
    bench/RESULTS.md holds (as written, or rounded from its longer form)."""
    import re

    number = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
    results = (ROOT / "bench" / "RESULTS.md").read_text()
    held = set()
    for text in number.findall(results):
        value, places = float(text), len(text.split(".")[1])
        held |= {f"{value:.{d}f}" for d in range(1, places + 1)} | {text}
    readme = (ROOT / "README.md").read_text()
    readme = re.sub(r"Python \d+\.\d+", "Python", readme)  # a version, not a measurement
    missing = sorted({n for n in number.findall(readme) if n not in held})
    assert not missing, f"README numbers bench/RESULTS.md does not hold: {missing}"


def test_every_link_into_bench_results_finds_its_section():
    """A link to a section of bench/RESULTS.md that a rerun renamed lands a reader at the top of a long file."""
    import re

    results = (ROOT / "bench" / "RESULTS.md").read_text()
    anchors = {re.sub(r"[^\w\- ]", "", line[3:].strip().lower()).replace(" ", "-")
               for line in results.splitlines() if line.startswith("## ")}
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for anchor in re.findall(r"RESULTS\.md#([^)\s]+)", doc.read_text()):
            if anchor not in anchors:
                broken.append(f"{doc.name}: #{anchor}")
    assert not broken, f"links to no section of bench/RESULTS.md: {broken}"
