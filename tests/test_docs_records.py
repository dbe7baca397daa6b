"""Every number in the tables of docs/PERFORMANCE.md and docs/RESULTS.md comes from a committed record.

A table is governed by the nearest line above it, within its section, that starts with `Record:` (the backticked
paths of one or more JSON records under benchmarks/results/) or with `Uncommitted` (a run whose raw output was
not kept, with its date). Each number of a recorded table, outside its first column, must be a value of its
records, rounded to the digits it is printed with: as it is, times 100 if printed as a percentage, or in a unit
a power of 1000 away (FLOP printed as GFLOP, seconds as ms).
"""

import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "PERFORMANCE.md", ROOT / "docs" / "RESULTS.md"]
RESULTS = ROOT / "benchmarks" / "results"
PROVENANCE = {"command", "commit", "versions", "device", "date"}
NUMBER = re.compile(r"(?<![\w.])[-\N{MINUS SIGN}]?\d[\d,]*(?:\.\d+)?%?")
DATE = re.compile(r"(?<!\d)20\d\d-\d\d-\d\d(?!\d)")


def tables(text: str) -> list[tuple[int, str, list[list[str]]]]:
    """(line number, governing marker line or '', data rows split into cells) of each markdown table."""
    found, marker, rows, start = [], "", [], 0
    for number, line in enumerate([*text.splitlines(), ""], start=1):
        if line.startswith("|"):
            if not rows:
                start = number
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if rows:
            found.append((start, marker, [r for r in rows[2:]]))  # after the header and its rule
            rows = []
        if line.startswith("#"):
            marker = ""  # a marker governs its own section only
        elif line.startswith(("Record:", "Records:", "Uncommitted")):
            marker = line
    return found


def numbers(cell: str) -> list[tuple[float, int, bool]]:
    """(value, decimals printed, printed as a percentage) of each number in a cell, code spans left out."""
    cell = re.sub(r"`[^`]*`", "", cell)
    found = []
    for token in NUMBER.findall(cell):
        percent = token.endswith("%")
        digits = token.rstrip("%").replace(",", "").replace("\N{MINUS SIGN}", "-")
        decimals = len(digits.partition(".")[2])
        found.append((float(digits), decimals, percent))
    return found


def leaves(value) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return [float(value)]
    return []


def recorded(printed: float, decimals: int, percent: bool, values: list[float]) -> bool:
    tolerance = 0.5 * 10**-decimals + 1e-9
    scales = (100,) if percent else (1, 1e3, 1e-3, 1e-6, 1e-9, 1e-12)
    return any(abs(abs(v * scale) - abs(printed)) <= tolerance for v in values for scale in scales)


def load_record(path: Path) -> dict:
    record = json.loads(path.read_text())
    missing = PROVENANCE - set(record)
    assert not missing, f"{path.relative_to(ROOT)}: no {sorted(missing)}"
    return record


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_record_says_where_it_came_from(path):
    record = load_record(path)
    assert DATE.search(record["date"]) and record["commit"] and record["command"].startswith("python ")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_table_number_is_in_a_committed_record(doc):
    problems = []
    for line, marker, rows in tables(doc.read_text()):
        where = f"{doc.name}:{line}"
        if marker.startswith("Uncommitted"):
            if not DATE.search(marker):
                problems.append(f"{where}: an uncommitted run must give its date")
            continue
        paths = re.findall(r"`(benchmarks/results/[^`]+\.json)`", marker)
        if not paths:
            problems.append(f"{where}: no `Record:` or `Uncommitted` line above the table")
            continue
        values = [x for p in paths for x in leaves(load_record(ROOT / p))]
        for row in rows:
            for cell in row[1:]:
                for printed, decimals, percent in numbers(cell):
                    if not recorded(printed, decimals, percent, values):
                        problems.append(f"{where}: {printed} ({cell!r}) is in none of {paths}")
    assert not problems, "\n".join(problems)


def test_the_reader_finds_tables_markers_and_numbers():
    text = "## A\nRecord: `benchmarks/results/x.json`\n\n| m | v |\n|---|---|\n"
    text += "| `cmx_b0` | 0.458 ± 0.039 [0.4, 1,079.2] |\n"
    text += "## B\n| m | v |\n|---|---|\n| a | 4.3% |\n"
    (first, marker, rows), (_, unmarked, other) = tables(text)
    assert first == 4 and marker.endswith("x.json`") and unmarked == "" and other == [["a", "4.3%"]]
    assert numbers(rows[0][1]) == [(0.458, 3, False), (0.039, 3, False), (0.4, 1, False), (1079.2, 1, False)]
    assert recorded(4.3, 1, True, [0.0431]) and not recorded(4.3, 1, False, [0.0431])
    assert recorded(51.4, 1, False, [51374686208.0]) and recorded(141.6, 1, False, [0.14159])
    assert recorded(0.458, 3, False, [0.45849]) and not recorded(0.458, 3, False, [0.4586])
