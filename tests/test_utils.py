"""utils.py: a Python without facematch's packages says what to do (utils is the first thing every entry point
imports), not a traceback."""
from __future__ import annotations

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
