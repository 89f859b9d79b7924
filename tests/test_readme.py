"""Every number in the README's tables comes from a results file under benchmarks/results."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURED = re.compile(r"(?<![\w.])\d+\.\d{3}(?![\w.])")  # how the scripts print a measured value


def numeric_leaves(node) -> list[float]:
    if isinstance(node, bool):
        return []
    if isinstance(node, (int, float)):
        return [float(node)]
    if isinstance(node, dict):
        return [x for v in node.values() for x in numeric_leaves(v)]
    if isinstance(node, list):
        return [x for v in node for x in numeric_leaves(v)]
    return []


def readme_table_numbers() -> list[tuple[int, str]]:
    """(line number, "0.980") for every measured-looking number in a table cell after the
    first column of README.md."""
    out = []
    for i, line in enumerate((ROOT / "README.md").read_text().splitlines(), 1):
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        for cell in line.strip("|").split("|")[1:]:
            out += [(i, m) for m in MEASURED.findall(cell)]
    return out


def test_every_readme_table_number_is_in_a_results_file():
    values = set()
    for path in (ROOT / "benchmarks" / "results").glob("*.json"):
        values |= {round(x, 3) for x in numeric_leaves(json.loads(path.read_text()))}
    numbers = readme_table_numbers()
    assert len(numbers) > 50  # the tables are there (and the parser reads them)
    missing = [(line, text) for line, text in numbers if round(float(text), 3) not in values]
    assert not missing, f"README table numbers without a results file (line, value): {missing}"
