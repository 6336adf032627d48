"""The README and docs/ against bench/RESULTS.md: every figure typed into them is one the measurements hold, every
link into RESULTS.md finds its section."""
from __future__ import annotations

from conftest import ROOT


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
